/*
 * registry_auth.c: what the docker:// source needs to authenticate (registry.h): the
 * WWW-Authenticate challenge, credentials from the environment or a docker config.json, and
 * the process-wide cache of bearer tokens. No network here: registry.c asks for the tokens.
 *
 * Secrets (passwords, tokens) live in memory only, are wiped when freed, and never reach a
 * message: every error here names the host or the file, never the value.
 */
#include "source/registry.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/timeutil.h"

void registry_secret_free(char *s)
{
    if (!s)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* ---- WWW-Authenticate --------------------------------------------------------------------- */

void registry_challenge_free(struct registry_challenge *c)
{
    if (!c)
        return;
    free(c->realm);
    free(c->service);
    free(c->scope);
    *c = (struct registry_challenge){0};
}

/* One auth-param value at *p: a quoted string (with \-escapes) or a token. Advances *p. */
static char *param_value(const char **p)
{
    const char *s = *p;
    if (*s != '"') {
        size_t n = strcspn(s, ", \t");
        *p = s + n;
        return strndup(s, n);
    }
    s++;
    size_t cap = strlen(s) + 1, j = 0;
    char *v = malloc(cap);
    if (!v)
        return NULL;
    for (; *s && *s != '"'; s++) {
        if (*s == '\\' && s[1])
            s++;
        v[j++] = *s;
    }
    if (*s != '"') { /* unterminated */
        free(v);
        return NULL;
    }
    v[j] = '\0';
    *p = s + 1;
    return v;
}

int registry_challenge_parse(const char *h, struct registry_challenge *out)
{
    *out = (struct registry_challenge){0};
    if (!h)
        return -EBADMSG;
    while (isspace((unsigned char)*h))
        h++;
    size_t sl = strcspn(h, " \t");
    if (sl == 5 && !strncasecmp(h, "basic", 5))
        out->scheme = REGISTRY_AUTH_BASIC;
    else if (sl == 6 && !strncasecmp(h, "bearer", 6))
        out->scheme = REGISTRY_AUTH_BEARER;
    else
        return -EBADMSG;
    const char *p = h + sl;
    for (;;) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        size_t kl = strcspn(p, "= \t,");
        if (p[kl] != '=') /* another challenge ("Basic x, Bearer ...") or junk: stop here */
            break;
        const char *k = p;
        p += kl + 1;
        char *v = param_value(&p);
        if (!v) {
            registry_challenge_free(out);
            return -EBADMSG;
        }
        char **slot = kl == 5 && !strncasecmp(k, "realm", 5)     ? &out->realm
                      : kl == 7 && !strncasecmp(k, "service", 7) ? &out->service
                      : kl == 5 && !strncasecmp(k, "scope", 5)   ? &out->scope
                                                                 : NULL;
        if (slot && !*slot)
            *slot = v;
        else
            free(v);
    }
    if (out->scheme == REGISTRY_AUTH_BEARER &&
        (!out->realm ||
         (strncmp(out->realm, "https://", 8) && strncmp(out->realm, "http://", 7)))) {
        registry_challenge_free(out);
        return -EBADMSG;
    }
    return 0;
}

/* ---- credentials -------------------------------------------------------------------------- */

/* The host a config.json key names: "https://host/v1/" -> "host". */
static bool auth_key_is(const char *key, const char *host)
{
    const char *k = key;
    if (!strncmp(k, "https://", 8))
        k += 8;
    else if (!strncmp(k, "http://", 7))
        k += 7;
    size_t kl = strcspn(k, "/");
    if (kl == strlen(host) && !strncmp(k, host, kl))
        return true;
    /* Docker Hub is written many ways; docker login writes https://index.docker.io/v1/. */
    static const char *const hub[] = {"docker.io", "index.docker.io", REGISTRY_DOCKER_HUB_API};
    bool key_hub = false, host_hub = false;
    for (size_t i = 0; i < ARRAY_SIZE(hub); i++) {
        key_hub |= kl == strlen(hub[i]) && !strncmp(k, hub[i], kl);
        host_hub |= !strcmp(host, hub[i]);
    }
    return key_hub && host_hub;
}

/* "USER:PASSWORD" from base64; NULL when it does not decode to one. */
static char *decode_auth(const char *b64)
{
    size_t n = strlen(b64);
    if (n == 0 || n % 4 || n > REGISTRY_DOCKER_CONFIG_MAX)
        return NULL;
    char *out = malloc(n / 4 * 3 + 1);
    if (!out)
        return NULL;
    int k = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)b64, (int)n);
    if (k < 0) {
        free(out);
        return NULL;
    }
    for (size_t i = n; i > 0 && b64[i - 1] == '='; i--)
        k--; /* EVP_DecodeBlock counts the padding as bytes */
    out[k] = '\0';
    if ((size_t)k != strlen(out) || !strchr(out, ':')) {
        registry_secret_free(out);
        return NULL;
    }
    return out;
}

/* A docker config.json's top object (*root, json_decref it). */
static int config_load(const char *json, size_t len, json_t **root, struct err *e)
{
    json_error_t je;
    *root = json_loadb(json, len, 0, &je);
    if (*root && json_is_object(*root))
        return 0;
    json_decref(*root);
    *root = NULL;
    return err_set(e, -EBADMSG, "not a JSON object (line %d: %s)", je.line, je.text);
}

int registry_docker_config_auth(const char *json, size_t len, const char *host, char **userpass,
                                struct err *e)
{
    *userpass = NULL;
    json_t *root = NULL;
    int k = config_load(json, len, &root, e);
    if (k < 0)
        return k;
    json_t *auths = json_object_get(root, "auths");
    int r = 0;
    const char *key;
    json_t *v;
    json_object_foreach(auths, key, v)
    {
        if (!auth_key_is(key, host) || !json_is_object(v))
            continue;
        const char *a = json_string_value(json_object_get(v, "auth"));
        const char *u = json_string_value(json_object_get(v, "username"));
        const char *pw = json_string_value(json_object_get(v, "password"));
        if (a && *a) {
            *userpass = decode_auth(a);
            r = *userpass ? 1
                          : err_set(e, -EBADMSG,
                                    "the auth of \"%.100s\" is not base64 of USER:PASSWORD", key);
        } else if (u && pw) {
            r = asprintf(userpass, "%s:%s", u, pw) < 0 ? -ENOMEM : 1;
            if (r < 0)
                *userpass = NULL;
        }
        if (r != 0)
            break;
    }
    json_decref(root);
    return r;
}

int registry_docker_config_helper(const char *json, size_t len, const char *host, char **helper,
                                  struct err *e)
{
    *helper = NULL;
    json_t *root = NULL;
    int k = config_load(json, len, &root, e);
    if (k < 0)
        return k;
    const char *name = NULL, *key;
    json_t *v;
    json_object_foreach(json_object_get(root, "credHelpers"), key, v)
    {
        if (auth_key_is(key, host) && json_is_string(v)) {
            name = json_string_value(v);
            break;
        }
    }
    if (!name)
        name = json_string_value(json_object_get(root, "credsStore"));
    int r = 0;
    /* The name becomes part of a program name looked up in PATH: no '/' and nothing odd. */
    size_t n = name ? strlen(name) : 0;
    if (n &&
        (n > REGISTRY_CRED_HELPER_NAME_MAX || name[0] == '.' || name[0] == '-' ||
         strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != n))
        r = err_set(e, -EINVAL, "the credential helper name \"%.64s\" is not valid", name);
    else if (n)
        r = (*helper = strdup(name)) ? 1 : -ENOMEM;
    json_decref(root);
    return r;
}

/* What a helper is asked for: the registry's server URL as docker names it (Docker Hub's is
 * its v1 index address). */
static const char *helper_server(const char *host)
{
    return !strcmp(host, REGISTRY_DOCKER_HUB) ? "https://index.docker.io/v1/" : host;
}

/* Read the helper's stdout until EOF, the size limit or the deadline. */
static int helper_read(int fd, char *buf, size_t cap, size_t *len, int64_t deadline)
{
    *len = 0;
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {fd, POLLIN, 0};
        int k = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (k < 0 && errno != EINTR)
            return neg_errno();
        if (k <= 0)
            continue;
        if (*len == cap)
            return -EFBIG;
        ssize_t n = read(fd, buf + *len, cap - *len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return neg_errno();
        if (n == 0)
            return 0;
        *len += (size_t)n;
    }
}

/* Run `docker-credential-NAME get` with the server on its stdin; its stdout into buf. The
 * exit status (0..255), or a negative errno (-ENOENT: not installed, -ETIMEDOUT: killed). */
static int helper_run(const char *prog, const char *server, char *buf, size_t cap, size_t *len)
{
    /* stdin is a socket, not a pipe: a helper that exits without reading it must not kill us
     * with SIGPIPE (send's MSG_NOSIGNAL). */
    int in[2], out[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) < 0)
        return neg_errno();
    if (pipe2(out, O_CLOEXEC) < 0) {
        int r = neg_errno();
        close(in[0]);
        close(in[1]);
        return r;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    /* stdin the server name, stdout to us, stderr nowhere (a helper may print what it was
     * given); its own process group, so a timeout kills whatever it started. */
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    char *argv[] = {(char *)prog, (char *)"get", NULL};
    extern char **environ;
    pid_t pid;
    int r = posix_spawnp(&pid, prog, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(in[0]);
    close(out[1]);
    if (r != 0) {
        close(in[1]);
        close(out[0]);
        return -r;
    }
    /* The server name is far smaller than a socket's buffer: one send, then EOF. A helper that
     * exits early fails the send: its exit status says what happened. */
    (void)!send(in[1], server, strlen(server), MSG_NOSIGNAL);
    shutdown(in[1], SHUT_WR);
    close(in[1]);
    r = helper_read(out[0], buf, cap, len, mono_ms() + REGISTRY_CRED_HELPER_TIMEOUT_MS);
    close(out[0]);
    if (r < 0)
        kill(-pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (r < 0)
        return r;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127 && *len == 0)
        return -ENOENT; /* posix_spawnp found nothing to run */
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

int registry_cred_helper_get(const char *helper, const char *host, char **userpass, struct err *e)
{
    *userpass = NULL;
    _cleanup_free_ char *prog = NULL;
    if (asprintf(&prog, "docker-credential-%s", helper) < 0)
        return -ENOMEM;
    _cleanup_free_ char *buf = malloc(REGISTRY_CRED_HELPER_OUTPUT_MAX + 1);
    if (!buf)
        return -ENOMEM;
    size_t len = 0;
    int st = helper_run(prog, helper_server(host), buf, REGISTRY_CRED_HELPER_OUTPUT_MAX, &len);
    buf[len] = '\0';
    int r;
    if (st == -ENOENT)
        r = err_set(e, -EACCES,
                    "the docker config names the credential helper \"%s\" for %s, but %s is not "
                    "in PATH; install it, or set THINIMG_REGISTRY_AUTH=USER:PASSWORD",
                    helper, host, prog);
    else if (st == -ETIMEDOUT)
        r = err_set(e, -EACCES, "%s get (for %s) did not answer within %d ms (killed)", prog, host,
                    REGISTRY_CRED_HELPER_TIMEOUT_MS);
    else if (st == -EFBIG)
        r = err_set(e, -EACCES, "%s get (for %s) wrote more than %d bytes; refused", prog, host,
                    REGISTRY_CRED_HELPER_OUTPUT_MAX);
    else if (st < 0)
        r = err_set(e, -EACCES, "cannot run %s: %s", prog, strerror(-st));
    else if (st != 0 && strstr(buf, "credentials not found"))
        r = 0; /* the helper's own words for "none for this server" */
    else if (st != 0)
        r = err_set(e, -EACCES, "%s get (for %s) failed with exit status %d", prog, host, st);
    else
        r = 1;
    if (r == 1) {
        json_t *j = json_loadb(buf, len, 0, NULL);
        const char *u = json_string_value(json_object_get(j, "Username"));
        const char *pw = json_string_value(json_object_get(j, "Secret"));
        if (!u || !pw || !*pw)
            r = err_set(e, -EACCES, "%s get (for %s) did not answer with Username and Secret", prog,
                        host);
        else if (!strcmp(u, "<token>"))
            r = err_set(e, -EACCES,
                        "%s gives an identity token for %s (an OAuth refresh token), which "
                        "thinimg does not exchange; set THINIMG_REGISTRY_AUTH=USER:PASSWORD",
                        prog, host);
        else if (asprintf(userpass, "%s:%s", u, pw) < 0)
            r = -ENOMEM, *userpass = NULL;
        if (j) { /* wipe the secret from jansson's copy too */
            json_t *sv = json_object_get(j, "Secret");
            if (json_is_string(sv))
                explicit_bzero((char *)json_string_value(sv), json_string_length(sv));
        }
        json_decref(j);
    }
    explicit_bzero(buf, len);
    return r;
}

int registry_credentials(const char *host, char **userpass, struct err *e)
{
    *userpass = NULL;
    const char *env = getenv("THINIMG_REGISTRY_AUTH");
    if (env && *env) {
        if (!strchr(env, ':'))
            return err_set(e, -EINVAL, "THINIMG_REGISTRY_AUTH must be USER:PASSWORD");
        *userpass = strdup(env);
        return *userpass ? 1 : -ENOMEM;
    }
    _cleanup_free_ char *path = NULL;
    const char *dir = getenv("DOCKER_CONFIG");
    const char *home = getenv("HOME");
    if (dir && *dir)
        path = path_join(dir, "config.json");
    else if (home && *home && asprintf(&path, "%s/.docker/config.json", home) < 0)
        path = NULL;
    if (!path)
        return 0;
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (!f)
        return 0; /* no config: anonymous */
    _cleanup_free_ char *buf = malloc(REGISTRY_DOCKER_CONFIG_MAX + 1);
    if (!buf)
        return -ENOMEM;
    size_t n = fread(buf, 1, REGISTRY_DOCKER_CONFIG_MAX + 1, f);
    if (n > REGISTRY_DOCKER_CONFIG_MAX)
        return err_set(e, -EFBIG, "%s is larger than %d bytes; not read", path,
                       REGISTRY_DOCKER_CONFIG_MAX);
    /* A credential helper for the host (credHelpers), else the store for all (credsStore),
     * as docker does; a helper with nothing for this server leaves the `auths` entry. */
    _cleanup_free_ char *helper = NULL;
    int r = registry_docker_config_helper(buf, n, host, &helper, e);
    if (r == 1)
        r = registry_cred_helper_get(helper, host, userpass, e);
    if (r == 0)
        r = registry_docker_config_auth(buf, n, host, userpass, e);
    explicit_bzero(buf, n);
    if (r < 0 && !helper)
        err_prefix(e, "%s", path);
    return r;
}

/* ---- tokens ------------------------------------------------------------------------------- */

struct token {
    char *realm, *service, *scope, *value;
    int64_t expires_ms; /* monotonic */
    struct token *next;
};

static pthread_mutex_t g_tokens_lock = PTHREAD_MUTEX_INITIALIZER;
static struct token *g_tokens;

static void token_free(struct token *t)
{
    free(t->realm);
    free(t->service);
    free(t->scope);
    registry_secret_free(t->value);
    free(t);
}

static bool streq_null(const char *a, const char *b)
{
    return a && b ? !strcmp(a, b) : a == b;
}

/* The token for the key, removing expired ones on the way. Under the lock. */
static struct token *token_find(const char *realm, const char *service, const char *scope)
{
    int64_t now = mono_ms();
    for (struct token **pp = &g_tokens; *pp;) {
        struct token *t = *pp;
        if (t->expires_ms <= now) {
            *pp = t->next;
            token_free(t);
            continue;
        }
        if (streq_null(t->realm, realm) && streq_null(t->service, service) &&
            streq_null(t->scope, scope))
            return t;
        pp = &t->next;
    }
    return NULL;
}

int registry_token_get(const char *realm, const char *service, const char *scope, char **token)
{
    *token = NULL;
    pthread_mutex_lock(&g_tokens_lock);
    struct token *t = token_find(realm, service, scope);
    int r = 0;
    if (t) {
        *token = strdup(t->value);
        r = *token ? 1 : -ENOMEM;
    }
    pthread_mutex_unlock(&g_tokens_lock);
    return r;
}

int registry_token_put(const char *realm, const char *service, const char *scope, const char *token,
                       int64_t expires_in_s)
{
    int64_t life = expires_in_s - REGISTRY_TOKEN_EXPIRY_MARGIN_S;
    if (life <= 0)
        return 0; /* too short to reuse: used once, not cached */
    struct token *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->realm = realm ? strdup(realm) : NULL;
    t->service = service ? strdup(service) : NULL;
    t->scope = scope ? strdup(scope) : NULL;
    t->value = strdup(token);
    t->expires_ms = mono_ms() + life * 1000;
    if ((realm && !t->realm) || (service && !t->service) || (scope && !t->scope) || !t->value) {
        token_free(t);
        return -ENOMEM;
    }
    pthread_mutex_lock(&g_tokens_lock);
    struct token *old = token_find(realm, service, scope);
    if (old) { /* replace in place */
        registry_secret_free(old->value);
        old->value = TAKE_PTR(t->value);
        old->expires_ms = t->expires_ms;
        token_free(t);
    } else {
        t->next = g_tokens;
        g_tokens = t;
    }
    pthread_mutex_unlock(&g_tokens_lock);
    return 0;
}

void registry_token_forget(void)
{
    pthread_mutex_lock(&g_tokens_lock);
    while (g_tokens) {
        struct token *n = g_tokens->next;
        token_free(g_tokens);
        g_tokens = n;
    }
    pthread_mutex_unlock(&g_tokens_lock);
}

int registry_token_parse(const void *body, size_t len, char **token, int64_t *expires_in_s,
                         struct err *e)
{
    *token = NULL;
    *expires_in_s = REGISTRY_TOKEN_DEFAULT_TTL_S;
    json_t *root = json_loadb(body, len, 0, NULL);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return err_set(e, -EBADMSG, "the token response is not a JSON object");
    }
    const char *t = json_string_value(json_object_get(root, "token"));
    if (!t || !*t)
        t = json_string_value(json_object_get(root, "access_token"));
    json_t *ex = json_object_get(root, "expires_in");
    if (json_is_integer(ex) && json_integer_value(ex) > 0)
        *expires_in_s = json_integer_value(ex);
    int r = 0;
    /* The token goes into a header line: visible ASCII only (no CR/LF to inject headers). */
    bool clean = t && *t;
    for (const char *p = t; clean && *p; p++)
        clean = *p > 0x20 && *p < 0x7f;
    if (!clean)
        r = err_set(e, -EBADMSG, "the token response has no usable token");
    else if (!(*token = strdup(t)))
        r = -ENOMEM;
    json_decref(root);
    return r;
}
