/*
 * registry.c: the docker:// source (an OCI distribution registry) and the resolution of a
 * docker:// reference into an image. See registry.h for the reference syntax, the keys, the
 * protocol and the limits; the parsers (references, platforms, manifests) are
 * registry_manifest.c, the challenge, credentials and token cache registry_auth.c.
 *
 * Every request goes through reg_perform(): httpc (timeouts, retries, resume, bounded bodies)
 * plus the auth round: a 401 is answered once (a token, or Basic credentials) and the request
 * sent again; a second 401 is the answer.
 */
#include "source/registry.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/httpc.h"
#include "source/source_impl.h"
#include "util/buf.h"
#include "util/cleanup.h"
#include "util/hash.h"
#include "util/timeutil.h"

#define REGISTRY_ACCEPT_MANIFESTS                                                                  \
    "Accept: " MT_OCI_MANIFEST ", " MT_OCI_INDEX ", " MT_DOCKER_MANIFEST ", " MT_DOCKER_LIST

/* ---- the source ----------------------------------------------------------------------------- */

struct registry_src {
    struct registry_name name;
    struct httpc *http;
    char *origin; /* "https://host:port" */
    bool plain;   /* plain HTTP (--insecure-registry) */
    struct registry_platform platform;
    char *userpass; /* credentials, when any (loaded once, on the first challenge) */
    bool creds_loaded;
    char *auth;         /* the Authorization value in force ("Bearer ...", "Basic ...") */
    const char *accept; /* the Accept header line of the request being made, or NULL */
};

static void registry_free_impl(void *impl)
{
    struct registry_src *r = impl;
    registry_name_free(&r->name);
    httpc_free(r->http);
    free(r->origin);
    registry_secret_free(r->userpass);
    registry_secret_free(r->auth);
    free(r);
}

static int add_line(struct curl_slist **headers, const char *line)
{
    struct curl_slist *t = curl_slist_append(*headers, line);
    if (!t)
        return -ENOMEM;
    *headers = t;
    return 0;
}

static int add_auth_line(struct curl_slist **headers, const char *value)
{
    _cleanup_free_ char *line = NULL;
    if (asprintf(&line, "Authorization: %s", value) < 0)
        return -ENOMEM;
    int r = add_line(headers, line);
    explicit_bzero(line, strlen(line));
    return r;
}

/* httpc's per-attempt hook: Accept and the Authorization in force. libcurl keeps custom
 * Authorization headers to the host they were set for: a redirect elsewhere goes without. */
static int reg_sign(void *ud, const char *method, const char *url, const char *range,
                    struct curl_slist **headers, struct err *e)
{
    (void)method, (void)url, (void)range, (void)e;
    struct registry_src *r = ud;
    int rc = 0;
    if (r->accept)
        rc = add_line(headers, r->accept);
    if (rc == 0 && r->auth)
        rc = add_auth_line(headers, r->auth);
    return rc;
}

static int basic_value(const char *userpass, char **out)
{
    size_t n = strlen(userpass);
    _cleanup_free_ char *b64 = malloc(4 * ((n + 2) / 3) + 1);
    if (!b64)
        return -ENOMEM;
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)userpass, (int)n);
    int r = asprintf(out, "Basic %s", b64) < 0 ? -ENOMEM : 0;
    explicit_bzero(b64, strlen(b64));
    if (r < 0)
        *out = NULL;
    return r;
}

static int token_sign(void *ud, const char *method, const char *url, const char *range,
                      struct curl_slist **headers, struct err *e)
{
    (void)method, (void)url, (void)range, (void)e;
    const char *basic = ud;
    return basic ? add_auth_line(headers, basic) : 0;
}

static int load_credentials(struct registry_src *r, struct err *e)
{
    if (r->creds_loaded)
        return 0;
    r->creds_loaded = true;
    int k = registry_credentials(r->name.host, &r->userpass, e);
    return k < 0 ? k : 0;
}

static const char *no_credentials_hint(void)
{
    return "set THINIMG_REGISTRY_AUTH=USER:PASSWORD or log in with docker login "
           "(~/.docker/config.json)";
}

/* A short, printable summary of a registry error body ({"errors":[{"code","message"}]}). */
static void error_detail(const struct httpc_resp *resp, char *out, size_t cap)
{
    out[0] = '\0';
    json_t *root = resp->body.len ? json_loadb(resp->body.data, resp->body.len, 0, NULL) : NULL;
    json_t *first = json_array_get(json_object_get(root, "errors"), 0);
    const char *code = json_string_value(json_object_get(first, "code"));
    const char *msg = json_string_value(json_object_get(first, "message"));
    if (code)
        snprintf(out, cap, " [%.40s%s%.120s]", code, msg ? ": " : "", msg ? msg : "");
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    json_decref(root);
}

static int reg_status_error(const struct httpc_resp *resp, const char *what, struct err *e)
{
    long st = resp->status;
    char detail[200];
    error_detail(resp, detail, sizeof(detail));
    if (st == 404)
        return err_set(e, -ENOENT, "%s: not found (404)%s", what, detail);
    if (st == 401)
        return err_set(e, -EACCES, "%s: authentication failed (401)%s; check the credentials: %s",
                       what, detail, no_credentials_hint());
    if (st == 403)
        return err_set(e, -EACCES, "%s: access denied (403)%s", what, detail);
    if (st == 416)
        return err_set(e, -ERANGE, "%s: requested range not satisfiable (416)", what);
    if (httpc_status_retryable(st))
        return err_set(e, -EREMOTEIO, "%s: server error %ld (gave up after %u attempts)%s", what,
                       st, resp->attempts, detail);
    return err_set(e, -EPROTO, "%s: unexpected HTTP status %ld%s", what, st, detail);
}

/* Get a bearer token for the challenge (from the cache, or the realm). */
static int bearer_token(struct registry_src *r, const struct registry_challenge *c,
                        const char *what, struct err *e)
{
    _cleanup_free_ char *scope = NULL;
    if (c->scope)
        scope = strdup(c->scope);
    else if (asprintf(&scope, "repository:%s:pull", r->name.repo) < 0)
        scope = NULL;
    if (!scope)
        return -ENOMEM;
    char *tok = NULL;
    int k = registry_token_get(c->realm, c->service, scope, &tok);
    if (k < 0)
        return k;
    /* A cached token the registry just refused is not offered again. */
    if (k == 1 && r->auth && !strncmp(r->auth, "Bearer ", 7) && !strcmp(r->auth + 7, tok)) {
        registry_secret_free(tok);
        k = 0;
    }
    if (k == 0) {
        if (!strncmp(c->realm, "http://", 7) && !r->plain)
            return err_set(e, -EACCES,
                           "%s: the registry sends its token service over plain HTTP (%.200s); "
                           "refused for a registry reached over HTTPS",
                           what, c->realm);
        k = load_credentials(r, e);
        if (k < 0)
            return k;
        _cleanup_buf_ struct buf url = BUF_INIT;
        k = buf_printf(&url, "%s%s", c->realm, strchr(c->realm, '?') ? "&" : "?");
        if (k == 0 && c->service) {
            k = buf_puts(&url, "service=");
            if (k == 0)
                k = httpc_uri_encode(&url, c->service, false);
            if (k == 0)
                k = buf_puts(&url, "&");
        }
        if (k == 0)
            k = buf_puts(&url, "scope=");
        if (k == 0)
            k = httpc_uri_encode(&url, scope, false);
        if (k < 0)
            return k;
        char *basic = NULL;
        if (r->userpass && (k = basic_value(r->userpass, &basic)) < 0)
            return k;
        _cleanup_free_ char *twhat = NULL;
        if (asprintf(&twhat, "token service %.200s", c->realm) < 0) {
            registry_secret_free(basic);
            return -ENOMEM;
        }
        struct httpc_req req = {.method = "GET",
                                .url = url.data,
                                .what = twhat,
                                .small = true,
                                .max_body = REGISTRY_TOKEN_BODY_MAX,
                                .sign = token_sign,
                                .sign_ud = basic};
        struct httpc_resp resp;
        k = httpc_perform(r->http, &req, &resp, e);
        registry_secret_free(basic);
        if (k == 0 && (resp.status == 401 || resp.status == 403))
            k = err_set(e, -EACCES, "%s: the token service %.200s refused %s (%ld); %s", what,
                        c->realm, r->userpass ? "the credentials" : "anonymous access", resp.status,
                        no_credentials_hint());
        else if (k == 0 && resp.status != 200)
            k = reg_status_error(&resp, twhat, e);
        int64_t ttl = 0;
        if (k == 0)
            k = registry_token_parse(resp.body.data, resp.body.len, &tok, &ttl, e);
        httpc_resp_free(&resp);
        if (k < 0)
            return k;
        k = registry_token_put(c->realm, c->service, scope, tok, ttl);
        if (k < 0) {
            registry_secret_free(tok);
            return k;
        }
    }
    registry_secret_free(r->auth);
    r->auth = NULL;
    k = asprintf(&r->auth, "Bearer %s", tok) < 0 ? -ENOMEM : 0;
    if (k < 0)
        r->auth = NULL;
    registry_secret_free(tok);
    return k;
}

/* Answer a 401's challenge: set r->auth for the next attempt. */
static int reg_authenticate(struct registry_src *r, const struct httpc_resp *resp, const char *what,
                            struct err *e)
{
    struct registry_challenge c;
    if (registry_challenge_parse(resp->www_authenticate, &c) < 0)
        return err_set(e, -EACCES,
                       "%s: the registry asks for authentication (401) with a challenge "
                       "thinimg does not speak (%.80s)",
                       what, resp->www_authenticate[0] ? resp->www_authenticate : "none");
    int k;
    if (c.scheme == REGISTRY_AUTH_BASIC) {
        k = load_credentials(r, e);
        if (k == 0 && !r->userpass)
            k = err_set(e, -EACCES, "%s: the registry requires credentials (401); %s", what,
                        no_credentials_hint());
        if (k == 0) {
            registry_secret_free(r->auth);
            k = basic_value(r->userpass, &r->auth);
        }
    } else {
        k = bearer_token(r, &c, what, e);
    }
    registry_challenge_free(&c);
    return k;
}

/* One request with the auth round (see the top of this file). */
static int reg_perform(struct registry_src *r, struct httpc_req *req, const char *accept,
                       struct httpc_resp *resp, struct err *e)
{
    req->sign = reg_sign;
    req->sign_ud = r;
    r->accept = accept;
    int k = httpc_perform(r->http, req, resp, e);
    if (k == 0 && resp->status == 401) {
        k = reg_authenticate(r, resp, req->what, e);
        httpc_resp_free(resp);
        if (k == 0)
            k = httpc_perform(r->http, req, resp, e);
        else
            *resp = (struct httpc_resp){0};
    }
    r->accept = NULL;
    return k;
}

static char *api_url(const struct registry_src *r, const char *fmt, const char *arg)
{
    char *u = NULL;
    if (asprintf(&u, "%s/v2/%s/", r->origin, r->name.repo) < 0)
        return NULL;
    char *full = NULL;
    int k = asprintf(&full, "%s%s%s", u, fmt, arg ? arg : "");
    free(u);
    return k < 0 ? NULL : full;
}

/* Keys: "blobs/<digest>" or "manifests/<tag|digest>". */
static int key_parse(const char *key, bool *blob, const char **ref, struct err *e)
{
    if (!strncmp(key, "blobs/", 6) && digest_valid(key + 6)) {
        *blob = true;
        *ref = key + 6;
        return 0;
    }
    if (!strncmp(key, "manifests/", 10) && (digest_valid(key + 10) || registry_tag_ok(key + 10))) {
        *blob = false;
        *ref = key + 10;
        return 0;
    }
    return err_set(e, -ENOENT,
                   "'%.100s' is not a key of a registry (blobs/sha256:HEX or manifests/TAG)", key);
}

/* What stat and get start with: the key's kind and reference, and its location (messages). */
static char *registry_location(const struct source *s, const char *key);
static int key_open(const struct source *s, const char *key, bool *blob, const char **ref,
                    char **what, struct err *e)
{
    int k = key_parse(key, blob, ref, e);
    if (k < 0)
        return k;
    *what = registry_location(s, key);
    return *what ? 0 : -ENOMEM;
}

static char *registry_location(const struct source *s, const char *key)
{
    const struct registry_src *r = s->impl;
    char *out = NULL;
    int k;
    if (!*key)
        k = asprintf(&out, "docker://%s/%s", r->name.host, r->name.repo);
    else if (!strncmp(key, "manifests/", 10))
        k = asprintf(&out, "docker://%s/%s%s%s", r->name.host, r->name.repo,
                     digest_valid(key + 10) ? "@" : ":", key + 10);
    else
        k = asprintf(&out, "%s%s", s->root, key);
    return k < 0 ? NULL : out;
}

/* A manifest or config, whole in memory (bounded by max). *what_out: for messages. */
static int fetch_small(struct registry_src *r, bool blob, const char *ref, size_t max,
                       const char *what, struct httpc_resp *resp, struct err *e)
{
    _cleanup_free_ char *url = api_url(r, blob ? "blobs/" : "manifests/", ref);
    if (!url)
        return -ENOMEM;
    struct httpc_req req = {.method = "GET",
                            .url = url,
                            .what = what,
                            .small = true,
                            .max_body = max,
                            .immutable = blob};
    struct err he = {0};
    int k = reg_perform(r, &req, blob ? NULL : REGISTRY_ACCEPT_MANIFESTS, resp, &he);
    if (k < 0)
        httpc_resp_free(resp);
    if (k == -EFBIG)
        return err_set(e, -EFBIG, "%s: larger than the limit of %zu bytes; refused", what, max);
    if (k < 0) {
        *e = he;
        return k;
    }
    if (resp->status != 200) {
        k = reg_status_error(resp, what, e);
        httpc_resp_free(resp);
        return k;
    }
    return 0;
}

/* The digest of a body; -EBADMSG when it is not `want` (when given). */
static int body_digest(const struct httpc_resp *resp, const char *want, const char *what,
                       char out[DIGEST_STR_LEN + 1], struct err *e)
{
    uint8_t d[SHA256_LEN];
    int k = sha256_buf(resp->body.data ? resp->body.data : "", resp->body.len, d);
    if (k < 0)
        return k;
    digest_format(d, out);
    if (want && strcmp(want, out))
        return err_set(e, -EBADMSG,
                       "%s: the content's digest is %s, not the %s it was asked by; refused", what,
                       out, want);
    if (!want && resp->content_digest[0] && strcmp(resp->content_digest, out))
        return err_set(e, -EBADMSG,
                       "%s: the content's digest is %s, but the registry says %.80s "
                       "(Docker-Content-Digest); refused",
                       what, out, resp->content_digest);
    return 0;
}

static int registry_stat(struct source *s, const char *key, struct source_object *out,
                         struct err *e)
{
    struct registry_src *r = s->impl;
    bool blob;
    const char *ref;
    _cleanup_free_ char *what = NULL;
    int k = key_open(s, key, &blob, &ref, &what, e);
    if (k < 0)
        return k;
    char digest[DIGEST_STR_LEN + 1];
    struct httpc_resp resp;
    if (blob) {
        _cleanup_free_ char *url = api_url(r, "blobs/", ref);
        if (!url)
            return -ENOMEM;
        struct httpc_req req = httpc_req_object_head(url, what);
        req.immutable = true; /* a blob's digest names its bytes */
        k = reg_perform(r, &req, NULL, &resp, e);
        if (k == 0 && resp.status != 200)
            k = reg_status_error(&resp, what, e);
        if (k == 0 && resp.content_digest[0] && strcmp(resp.content_digest, ref))
            k = err_set(e, -EBADMSG, "%s: the registry says its digest is %.80s; refused", what,
                        resp.content_digest);
        if (k == 0)
            k = httpc_resp_object(&resp, key, what, out, e);
        snprintf(digest, sizeof(digest), "%s", ref);
    } else {
        k = fetch_small(r, false, ref, REGISTRY_MANIFEST_MAX, what, &resp, e);
        if (k < 0)
            return k;
        k = body_digest(&resp, digest_valid(ref) ? ref : NULL, what, digest, e);
        if (k == 0) {
            out->key = strdup(key);
            out->size = resp.body.len;
            if (!out->key)
                k = -ENOMEM;
        }
    }
    httpc_resp_free(&resp);
    if (k < 0)
        return k;
    /* Content-addressed: the digest is the strong validator (registry.h). */
    free(out->etag);
    out->digest = strdup(digest);
    if (asprintf(&out->etag, "\"%s\"", digest) < 0)
        out->etag = NULL;
    return out->etag && out->digest ? 0 : -ENOMEM;
}

static int registry_get(struct source *s, const char *key, uint64_t offset,
                        const struct source_expect *x, source_sink_fn sink, void *ud,
                        struct source_get_info *info, struct err *e)
{
    struct registry_src *r = s->impl;
    bool blob;
    const char *ref;
    _cleanup_free_ char *what = NULL;
    int k = key_open(s, key, &blob, &ref, &what, e);
    if (k < 0)
        return k;
    struct httpc_resp resp;
    if (!blob) { /* a manifest: small, whole, checked, then handed over */
        k = fetch_small(r, false, ref, REGISTRY_MANIFEST_MAX, what, &resp, e);
        char digest[DIGEST_STR_LEN + 1];
        if (k == 0)
            k = body_digest(&resp, digest_valid(ref) ? ref : NULL, what, digest, e);
        if (k == 0 && offset > resp.body.len)
            k = err_set(e, -ERANGE, "%s: offset beyond the manifest", what);
        if (k == 0 && resp.body.len > offset)
            k = sink(resp.body.data + offset, resp.body.len - offset, ud);
        if (k == 0) {
            info->size = resp.body.len;
            info->bytes = info->bytes_received = resp.body.len - offset;
            info->attempts = resp.attempts;
            snprintf(info->etag, sizeof(info->etag), "\"%s\"", digest);
        }
        httpc_resp_free(&resp);
        return k;
    }
    _cleanup_free_ char *url = api_url(r, "blobs/", ref);
    if (!url)
        return -ENOMEM;
    /* a blob's digest names its bytes: immutable, so no If-Match is sent (httpc.h) */
    struct httpc_req req = httpc_req_object_get(url, what, offset, x, sink, ud);
    req.immutable = true;
    k = reg_perform(r, &req, NULL, &resp, e);
    if (k == 0 && !httpc_resp_get_info(&resp, offset, info))
        k = reg_status_error(&resp, what, e);
    if (k == 0)
        snprintf(info->etag, sizeof(info->etag), "\"%s\"", ref);
    httpc_resp_free(&resp);
    return k;
}

/* The next page of a Link header (`<URL>; rel="next"`), on the registry's own origin; NULL
 * when there is none. -EPROTO for a link elsewhere. */
static int next_page(const struct registry_src *r, const char *link, char **out, struct err *e)
{
    *out = NULL;
    const char *lt = strchr(link, '<');
    const char *gt = lt ? strchr(lt, '>') : NULL;
    if (!lt || !gt || !strstr(gt, "rel=\"next\""))
        return 0;
    size_t n = (size_t)(gt - lt - 1);
    if (lt[1] == '/') {
        if (asprintf(out, "%s%.*s", r->origin, (int)n, lt + 1) < 0)
            *out = NULL;
    } else if (n > strlen(r->origin) && !strncmp(lt + 1, r->origin, strlen(r->origin)) &&
               lt[1 + strlen(r->origin)] == '/') {
        *out = strndup(lt + 1, n);
    } else {
        return err_set(e, -EPROTO, "the next page of tags is on another server (%.*s); refused",
                       (int)(n < 200 ? n : 200), lt + 1);
    }
    return *out ? 0 : -ENOMEM;
}

static int registry_list(struct source *s, const char *prefix, struct source_listing *out,
                         struct err *e)
{
    struct registry_src *r = s->impl;
    if (*prefix)
        return err_set(e, -ENOTSUP,
                       "a registry lists the tags of a repository: name the repository "
                       "(docker://%s/%s)",
                       r->name.host, r->name.repo);
    _cleanup_free_ char *root = source_location(s, "");
    char n[32];
    snprintf(n, sizeof(n), "%d", REGISTRY_TAGS_PAGE);
    char *url = api_url(r, "tags/list?n=", n);
    if (!root || !url) {
        free(url);
        return -ENOMEM;
    }
    int64_t deadline = mono_ms() + source_opt_list_timeout_ms(s);
    uint64_t bytes = 0;
    int k = 0;
    for (unsigned page = 0; url && k == 0; page++) {
        if (page >= SOURCE_LIST_MAX_PAGES || mono_ms() > deadline) {
            k = err_set(e, -EFBIG, "%s: the tag listing goes past %s; stopped", root,
                        page >= SOURCE_LIST_MAX_PAGES ? "the page limit" : "the time limit");
            break;
        }
        struct httpc_req req = {.method = "GET",
                                .url = url,
                                .what = root,
                                .small = true,
                                .max_body = SOURCE_LIST_BODY_MAX};
        struct httpc_resp resp;
        k = reg_perform(r, &req, NULL, &resp, e);
        if (k == 0 && resp.status != 200)
            k = reg_status_error(&resp, root, e);
        bytes += resp.body.len;
        if (k == 0 && bytes > SOURCE_LIST_MAX_BYTES)
            k = err_set(e, -EFBIG, "%s: the tag listing is larger than %llu bytes; stopped", root,
                        (unsigned long long)SOURCE_LIST_MAX_BYTES);
        json_t *j = k == 0 ? json_loadb(resp.body.data, resp.body.len, 0, NULL) : NULL;
        json_t *tags = json_object_get(j, "tags");
        if (k == 0 && !json_is_object(j))
            k = err_set(e, -EPROTO, "%s: the tag listing is not a JSON object", root);
        for (size_t i = 0; k == 0 && i < json_array_size(tags); i++) {
            const char *t = json_string_value(json_array_get(tags, i));
            if (source_listing_see(out) < 0) {
                k = err_set(e, -EFBIG, "%s: more than %d tags; stopped", root,
                            SOURCE_LIST_MAX_KEYS);
                break;
            }
            if (!t || !registry_tag_ok(t)) {
                k = source_listing_skip(out, "'%.64s' is not a tag", t ? t : "(not a string)");
                continue;
            }
            char *key = NULL;
            if (asprintf(&key, "manifests/%s", t) < 0)
                k = -ENOMEM;
            else if ((k = source_listing_add(out, key, 0, NULL, 0)) < 0)
                free(key);
        }
        json_decref(j);
        char *next = NULL;
        if (k == 0)
            k = next_page(r, resp.link, &next, e);
        if (k == 0 && next && !strcmp(next, url)) {
            k = err_set(e, -EPROTO, "%s: the next page of tags is the same page; stopped", root);
        }
        httpc_resp_free(&resp);
        free(url);
        url = next;
    }
    free(url);
    return k;
}

static const struct source_ops registry_ops = {
    .list = registry_list,
    .stat = registry_stat,
    .get = registry_get,
    .free_impl = registry_free_impl,
    .location = registry_location,
};

/* Is host in the comma-separated list (an entry without a port matches every port)? */
static bool host_listed(const char *list, const char *host)
{
    size_t hn = strcspn(host, ":");
    for (const char *p = list; p && *p;) {
        size_t n = strcspn(p, ",");
        while (n && p[n - 1] == ' ')
            n--;
        while (n && *p == ' ')
            p++, n--;
        if ((n == strlen(host) && !strncmp(p, host, n)) ||
            (!memchr(p, ':', n) && n == hn && !strncmp(p, host, n)))
            return true;
        p += strcspn(p, ",");
        if (*p)
            p++;
    }
    return false;
}

int source_registry_open(struct source *s, const char *rest, char **key_out, struct err *e)
{
    struct registry_src *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    s->impl = r;
    s->ops = &registry_ops;
    int k = registry_name_parse(rest, &r->name, e);
    if (k < 0)
        return k;
    const char *pf = s->opt.platform ? s->opt.platform : getenv("THINIMG_PLATFORM");
    if (pf && *pf) {
        if ((k = registry_platform_parse(pf, &r->platform, e)) < 0)
            return k;
    } else {
        registry_platform_host(&r->platform);
    }
    const char *insecure =
        s->opt.insecure_registry ? s->opt.insecure_registry : getenv("THINIMG_INSECURE_REGISTRY");
    r->plain = host_listed(insecure, r->name.host) || host_listed(insecure, r->name.api_host);
    if (asprintf(&r->origin, "%s://%s", r->plain ? "http" : "https", r->name.api_host) < 0 ||
        asprintf(&s->root, "docker://%s/%s/", r->name.host, r->name.repo) < 0) {
        s->root = NULL;
        return -ENOMEM;
    }
    if (r->name.blob)
        k = asprintf(key_out, "blobs/%s", r->name.digest);
    else if (r->name.digest || r->name.tag)
        k = asprintf(key_out, "manifests/%s", r->name.digest ? r->name.digest : r->name.tag);
    else
        k = (*key_out = strdup("")) ? 0 : -1;
    if (k < 0) {
        *key_out = NULL;
        return -ENOMEM;
    }
    return httpc_new(s, true, &r->http);
}

/* ---- resolution ------------------------------------------------------------------------------ */

static bool foreign_allowed(void)
{
    const char *v = getenv("THINIMG_REGISTRY_ALLOW_FOREIGN_LAYERS");
    return v && !strcmp(v, "1");
}

/* GET /v2/: is there a registry (version 2 API) at all? 200 and 401 say yes. */
static int ping(struct registry_src *r, struct err *e)
{
    _cleanup_free_ char *url = NULL;
    _cleanup_free_ char *what = NULL;
    if (asprintf(&url, "%s/v2/", r->origin) < 0 || asprintf(&what, "%s/v2/", r->origin) < 0)
        return -ENOMEM;
    struct httpc_req req = {.method = "GET",
                            .url = url,
                            .what = what,
                            .small = true,
                            .max_body = SOURCE_ERROR_BODY_MAX};
    struct httpc_resp resp;
    int k = httpc_perform(r->http, &req, &resp, e);
    if (k == 0 && resp.status != 200 && resp.status != 401)
        k = resp.status == 404 ? err_set(e, -ENOENT,
                                         "%s answered 404: %s is not an OCI distribution "
                                         "registry (no /v2/ API)",
                                         what, r->name.host)
                               : reg_status_error(&resp, what, e);
    httpc_resp_free(&resp);
    return k;
}

/* A copy of a response body (the manifest or config an image_ref keeps). */
static int keep_body(const struct httpc_resp *resp, void **out, size_t *len)
{
    free(*out);
    *len = resp->body.len;
    *out = malloc(*len ? *len : 1);
    if (!*out)
        return -ENOMEM;
    if (*len)
        memcpy(*out, resp->body.data, *len);
    return 0;
}

/* The image's manifest: ref's, or the one for the platform when ref names an index. Its body
 * goes to out->manifest. */
static int resolve_manifest(struct source *s, const char *ref, struct registry_manifest *m,
                            char digest[DIGEST_STR_LEN + 1], char *platform, size_t pcap,
                            struct image_ref *out, struct err *e)
{
    struct registry_src *r = s->impl;
    _cleanup_free_ char *key = NULL;
    if (asprintf(&key, "manifests/%s", ref) < 0)
        return -ENOMEM;
    _cleanup_free_ char *what = source_location(s, key);
    if (!what)
        return -ENOMEM;
    struct httpc_resp resp;
    int k = fetch_small(r, false, ref, REGISTRY_MANIFEST_MAX, what, &resp, e);
    if (k < 0)
        return k;
    k = body_digest(&resp, digest_valid(ref) ? ref : NULL, what, digest, e);
    if (k == 0)
        k = registry_manifest_parse(resp.body.data, resp.body.len, resp.content_type, m, e);
    if (k == 0 && !m->is_index)
        k = keep_body(&resp, &out->manifest, &out->manifest_len);
    httpc_resp_free(&resp);
    if (k < 0)
        return err_prefix(e, "%s", what);
    if (!m->is_index)
        return 0;

    size_t i;
    k = registry_platform_select(m, &r->platform, &i, e);
    if (k < 0)
        return err_prefix(e, "%s", what);
    registry_platform_format(&m->entries[i].platform, platform, pcap);
    char want[DIGEST_STR_LEN + 1];
    snprintf(want, sizeof(want), "%s", m->entries[i].digest);
    uint64_t want_size = m->entries[i].size;
    registry_manifest_free(m);
    free(what);
    what = NULL;
    if (asprintf(&what, "docker://%s/%s@%s (%s)", r->name.host, r->name.repo, want, platform) < 0) {
        what = NULL;
        return -ENOMEM;
    }
    if (want_size > REGISTRY_MANIFEST_MAX)
        return err_set(e, -EFBIG, "%s: the index says %" PRIu64 " bytes, over the limit of %d",
                       what, want_size, REGISTRY_MANIFEST_MAX);
    k = fetch_small(r, false, want, REGISTRY_MANIFEST_MAX, what, &resp, e);
    if (k < 0)
        return k;
    k = body_digest(&resp, want, what, digest, e);
    if (k == 0 && resp.body.len != want_size)
        k = err_set(e, -EBADMSG, "%s: %zu bytes, the index says %" PRIu64, what, resp.body.len,
                    want_size);
    if (k == 0)
        k = registry_manifest_parse(resp.body.data, resp.body.len, resp.content_type, m, e);
    if (k == 0 && m->is_index)
        k = err_set(e, -ENOTSUP, "an index inside an index; not supported");
    if (k == 0)
        k = keep_body(&resp, &out->manifest, &out->manifest_len);
    httpc_resp_free(&resp);
    return k < 0 ? err_prefix(e, "%s", what) : 0;
}

static int resolve_config(struct source *s, const struct registry_manifest *m,
                          struct image_ref *out, struct err *e)
{
    struct registry_src *r = s->impl;
    if (m->config.size > REGISTRY_CONFIG_MAX)
        return err_set(e, -EFBIG, "the image config is %" PRIu64 " bytes, over the limit of %d",
                       m->config.size, REGISTRY_CONFIG_MAX);
    _cleanup_free_ char *key = NULL;
    if (asprintf(&key, "blobs/%s", m->config.digest) < 0)
        return -ENOMEM;
    _cleanup_free_ char *what = source_location(s, key);
    if (!what)
        return -ENOMEM;
    struct httpc_resp resp;
    int k = fetch_small(r, true, m->config.digest, REGISTRY_CONFIG_MAX, what, &resp, e);
    if (k < 0)
        return k;
    char d[DIGEST_STR_LEN + 1];
    k = body_digest(&resp, m->config.digest, what, d, e);
    if (k == 0)
        k = registry_config_diff_ids(resp.body.data, resp.body.len, &out->diff_ids,
                                     &out->n_diff_ids, e);
    if (k == 0)
        k = registry_config_summary(resp.body.data, resp.body.len, &out->run_config, e);
    if (k == 0)
        k = keep_body(&resp, &out->config, &out->config_len);
    httpc_resp_free(&resp);
    if (k == 0 && out->n_diff_ids != m->n_entries)
        k = err_set(e, -EBADMSG, "the image config lists %zu diff ids for %zu layers",
                    out->n_diff_ids, m->n_entries);
    if (k < 0)
        return err_prefix(e, "%s", what);
    out->config_digest = strdup(m->config.digest);
    return out->config_digest ? 0 : -ENOMEM;
}

static int layers_from(struct source *s, const struct registry_manifest *m, struct image_ref *out,
                       struct err *e)
{
    bool allow = foreign_allowed();
    out->layers = calloc(m->n_entries, sizeof(*out->layers));
    if (!out->layers)
        return -ENOMEM;
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct registry_descriptor *d = &m->entries[i];
        if (d->foreign && !allow)
            return err_set(e, -ENOTSUP,
                           "layer %zu (%s) is a foreign (non-distributable) layer; refused. Set "
                           "THINIMG_REGISTRY_ALLOW_FOREIGN_LAYERS=1 to fetch it from the "
                           "registry by its digest (its urls are never followed)",
                           i, d->digest);
        struct ref_layer *l = &out->layers[i];
        out->n_layers++;
        if (asprintf(&l->key, "blobs/%s", d->digest) < 0 ||
            asprintf(&l->etag, "\"%s\"", d->digest) < 0) {
            l->key = l->etag = NULL;
            return -ENOMEM;
        }
        l->location = source_location(s, l->key);
        l->size = d->size;
        l->digest = strdup(d->digest);
        l->media_type = strdup(d->media_type);
        if (!l->location || !l->digest || !l->media_type)
            return -ENOMEM;
    }
    return 0;
}

int registry_resolve(struct source *s, const char *key, struct image_ref *out, struct err *e)
{
    struct registry_src *r = s->impl;
    const char *short_repo = strrchr(r->name.repo, '/');
    short_repo = short_repo ? short_repo + 1 : r->name.repo;
    int k;
    if (!strncmp(key, "blobs/", 6)) { /* one blob, named by its digest */
        struct source_object o = {0};
        k = source_stat(s, key, &o, e);
        if (k < 0)
            return k;
        out->kind = REF_BLOB;
        out->layers = calloc(1, sizeof(*out->layers));
        if (out->layers) {
            struct ref_layer *l = &out->layers[0];
            out->n_layers = 1;
            l->key = strdup(key);
            l->location = source_location(s, key);
            l->size = o.size;
            l->etag = TAKE_PTR(o.etag);
            l->digest = TAKE_PTR(o.digest);
        }
        source_object_free(&o);
        if (!out->layers || !out->layers[0].key || !out->layers[0].location ||
            !(out->canonical = strdup(out->layers[0].location)) ||
            asprintf(&out->name, "%s@%.19s", short_repo, key + 6) < 0)
            return -ENOMEM;
        return 0;
    }
    k = ping(r, e);
    if (k < 0)
        return k;
    const char *ref = *key ? key + strlen("manifests/") : REGISTRY_DEFAULT_TAG;
    struct registry_manifest m = {0};
    char digest[DIGEST_STR_LEN + 1];
    char platform[3 * REGISTRY_PLATFORM_PART_MAX] = "";
    k = resolve_manifest(s, ref, &m, digest, platform, sizeof(platform), out, e);
    if (k == 0 && !(out->manifest_media_type = strdup(m.media_type)))
        k = -ENOMEM;
    if (k == 0)
        k = resolve_config(s, &m, out, e);
    if (k == 0)
        k = layers_from(s, &m, out, e);
    registry_manifest_free(&m);
    if (k < 0)
        return k;
    out->kind = REF_REGISTRY;
    out->manifest_digest = strdup(digest);
    out->platform = platform[0] ? strdup(platform) : NULL;
    if (asprintf(&out->canonical, "docker://%s/%s@%s", r->name.host, r->name.repo, digest) < 0)
        out->canonical = NULL;
    if (digest_valid(ref)) {
        if (asprintf(&out->name, "%s@%.19s", short_repo, ref) < 0)
            out->name = NULL;
    } else if (asprintf(&out->name, "%s:%s", short_repo, ref) < 0) {
        out->name = NULL;
    }
    if (!out->manifest_digest || (platform[0] && !out->platform) || !out->canonical || !out->name)
        return -ENOMEM;
    return 0;
}
