/*
 * s3harness.c: runs tests/s3/harness.js and talks to its control endpoints. See s3harness.h.
 */
#include "s3harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "util/cleanup.h"
#include "util/hash.h"

int s3h_start(struct s3h *h, const char *bucket, const char *seed_dir)
{
    memset(h, 0, sizeof(*h));
    h->pid = -1;
    h->stdin_fd = -1;
    h->dir = tu_mkdtemp("s3h");
    if (!h->dir)
        return -1;
    char script[4096], data[4096], seed[4096];
    snprintf(script, sizeof(script), "%s/tests/s3/harness.js", tu_source_dir());
    snprintf(data, sizeof(data), "%s/data", h->dir);
    if (seed_dir)
        snprintf(seed, sizeof(seed), "%s=%s", bucket, seed_dir);
    char modules[4200];
    snprintf(modules, sizeof(modules), "%s/tests/s3/node_modules/s3rver", tu_source_dir());
    if (access(modules, F_OK) != 0) {
        fprintf(stderr,
                "s3harness: %s is missing: run scripts/install-deps.sh (npm ci in "
                "tests/s3)\n",
                modules);
        return -1;
    }
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        char *argv[12];
        int k = 0;
        argv[k++] = "node";
        argv[k++] = script;
        argv[k++] = "--dir";
        argv[k++] = data;
        argv[k++] = "--bucket";
        argv[k++] = (char *)bucket;
        if (seed_dir) {
            argv[k++] = "--seed";
            argv[k++] = seed;
        }
        argv[k] = NULL;
        execvp("node", argv);
        fprintf(stderr, "s3harness: exec node: %s\n", strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    h->pid = pid;
    h->stdin_fd = in[1];
    char line[256];
    size_t n = 0;
    /* Seeding thousands of keys takes a few seconds; allow a minute. */
    while (n < sizeof(line) - 1) {
        struct pollfd p = {out[0], POLLIN, 0};
        int pr = poll(&p, 1, 60000);
        if (pr <= 0)
            break;
        ssize_t k = read(out[0], line + n, 1);
        if (k <= 0)
            break;
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    close(out[0]);
    if (sscanf(line, "{\"s3\":%d,\"proxy\":%d}", &h->s3_port, &h->proxy_port) != 2) {
        fprintf(stderr, "s3harness: the harness did not start (got '%s')\n", line);
        s3h_stop(h);
        return -1;
    }
    snprintf(h->s3_url, sizeof(h->s3_url), "http://127.0.0.1:%d", h->s3_port);
    snprintf(h->proxy_url, sizeof(h->proxy_url), "http://127.0.0.1:%d", h->proxy_port);
    return 0;
}

void s3h_anonymous_env(void)
{
    static const char *const vars[] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                       "AWS_SESSION_TOKEN", "AWS_PROFILE",
                                       "AWS_ENDPOINT_URL",  "AWS_ENDPOINT_URL_S3"};
    for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
        unsetenv(vars[i]);
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
}

void s3h_stop(struct s3h *h)
{
    if (h->stdin_fd >= 0)
        close(h->stdin_fd);
    h->stdin_fd = -1;
    if (h->pid > 0) {
        kill(h->pid, SIGTERM);
        int st;
        waitpid(h->pid, &st, 0);
    }
    h->pid = -1;
    if (h->dir) {
        tu_rmrf(h->dir);
        free(h->dir);
        h->dir = NULL;
    }
}

static size_t collect(char *p, size_t sz, size_t n, void *ud)
{
    FILE *f = ud;
    return fwrite(p, sz, n, f);
}

static int request(const char *method, const char *url, const void *body, size_t len, char **out)
{
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    char *buf = NULL;
    size_t blen = 0;
    FILE *mem = open_memstream(&buf, &blen);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    fclose(mem);
    if (out)
        *out = buf;
    else
        free(buf);
    if (rc != CURLE_OK || status != 200) {
        fprintf(stderr, "s3harness: %s %s: curl %d status %ld\n", method, url, rc, status);
        return -1;
    }
    return 0;
}

int s3h_fault(struct s3h *h, const char *rule_json)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/__ctl/fault", h->proxy_url);
    return request("POST", url, rule_json, strlen(rule_json), NULL);
}

int s3h_reset(struct s3h *h)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/__ctl/reset", h->proxy_url);
    return request("POST", url, "", 0, NULL);
}

json_t *s3h_log(struct s3h *h)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/__ctl/log", h->proxy_url);
    char *body = NULL;
    if (request("GET", url, NULL, 0, &body) < 0) {
        free(body);
        return NULL;
    }
    json_t *j = json_loads(body, 0, NULL);
    free(body);
    return j;
}

int s3h_put(struct s3h *h, const char *bucket, const char *key, const void *data, size_t n)
{
    char url[2048];
    snprintf(url, sizeof(url), "%s/%s/%s", h->s3_url, bucket, key);
    return request("PUT", url, data, n, NULL);
}

extern char **environ;

pid_t s3h_spawn_fetch(struct s3h *h, const char *state_dir, const char *ref)
{
    char sd[4096], ep[128];
    snprintf(sd, sizeof(sd), "--state-dir=%s", state_dir);
    snprintf(ep, sizeof(ep), "AWS_ENDPOINT_URL=%s", h->proxy_url);
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof(*env));
    if (!env)
        return -1;
    for (size_t i = 0, k = 0; i < n; i++)
        if (strncmp(environ[i], "AWS_ENDPOINT_URL=", 17) != 0)
            env[k++] = environ[i];
    for (n = 0; env[n];)
        n++;
    env[n] = ep;
    char *argv[] = {(char *)tu_thinimg(), sd, "-q", "fetch", (char *)ref, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    int r = posix_spawn(&pid, argv[0], &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    return r == 0 ? pid : -1;
}

uint64_t s3h_part_size(const char *state_dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/tmp", state_dir);
    DIR *d = opendir(p);
    uint64_t n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        struct stat st;
        char f[8192];
        snprintf(f, sizeof(f), "%s/%s", p, de->d_name);
        size_t len = strlen(de->d_name);
        bool part = len > 5 && !strcmp(de->d_name + len - 5, ".part"); /* not .part.ranges */
        if (part && stat(f, &st) == 0)
            n = (uint64_t)st.st_size;
    }
    if (d)
        closedir(d);
    return n;
}

char *s3h_digest_of(const char *path)
{
    uint8_t h[SHA256_LEN];
    if (sha256_file(path, h, NULL) < 0)
        return NULL;
    char *d = malloc(DIGEST_STR_LEN + 1);
    if (d)
        digest_format(h, d);
    return d;
}
