/*
 * client.c: an admin API client over a Unix socket, with libcurl. See client.h.
 */
#include "daemon/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"
#include "guard/lock.h"
#include "source/curl_lib.h"
#include "util/buf.h"

struct api_client {
    CURL *curl;
    char *socket_path;
};

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    if (b->len + size * n > 64u * 1024 * 1024) /* no reply of ours is anywhere near this */
        return 0;
    return buf_append(b, data, size * n) == 0 ? size * n : 0;
}

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int api_client_open(const char *socket_path, struct api_client **out)
{
    int r = curl_lib_load(NULL); /* api_client_detect() loaded it and reported a failure */
    if (r < 0)
        return r;
    pthread_once(&g_curl_once, curl_init_once);
    struct api_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->curl = curl_easy_init();
    c->socket_path = strdup(socket_path);
    if (!c->curl || !c->socket_path) {
        api_client_free(c);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

void api_client_free(struct api_client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    free(c->socket_path);
    free(c);
}

const char *api_client_socket(const struct api_client *c)
{
    return c->socket_path;
}

int api_call(struct api_client *c, const char *method, const char *path, json_t *body,
             long timeout_ms, long *status, json_t **reply, struct err *e)
{
    *status = 0;
    if (reply)
        *reply = NULL;
    char url[8192];
    if (snprintf(url, sizeof(url), "http://localhost%s", path) >= (int)sizeof(url))
        return err_set(e, -ENAMETOOLONG, "request path too long");
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct buf resp = BUF_INIT;
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip */
    CURL *h = c->curl;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    if (text) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    CURLcode cc = curl_easy_perform(h);
    curl_slist_free_all(hdr);
    free(text);
    if (cc != CURLE_OK) {
        buf_free(&resp);
        int r = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED;
        return err_set(e, r, "the daemon's socket %s: %s", c->socket_path, curl_easy_strerror(cc));
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (reply && resp.len)
        *reply = json_loadb(resp.data, resp.len, 0, NULL);
    buf_free(&resp);
    return 0;
}

int api_reply_error(long status, const json_t *reply, struct err *e)
{
    const char *msg = json_string_value(json_object_get(reply, "error"));
    const char *reason = json_string_value(json_object_get(reply, "reason"));
    int r = api_errno_for_reason(reason);
    if (msg)
        return err_set(e, r, "%s", msg);
    return err_set(e, r, "the daemon answered HTTP %ld", status);
}

int api_client_detect(const struct config *cfg, struct api_client **out, struct err *e)
{
    *out = NULL;
    struct lock_holder h = {0};
    if (proc_lock_holder(cfg->lock_path, &h) < 0 || strcmp(h.command, "daemon") != 0)
        return 0;
    /* The client speaks through libcurl, loaded on first use (source/curl_lib.h): only a
     * command that finds a daemon to talk to loads it. */
    int r = curl_lib_load(e);
    if (r < 0) {
        err_prefix(e, "the thinimg daemon holds the state directory, but its client cannot start");
        return r;
    }
    struct api_client *c = NULL;
    r = api_client_open(cfg->socket_path, &c);
    if (r < 0)
        return err_set(e, r, "out of memory");
    long status = 0;
    struct err ce = {0};
    r = api_call(c, "GET", "/v1/version", NULL, API_CLIENT_PROBE_MS, &status, NULL, &ce);
    if (r == 0 && status == 200) {
        *out = c;
        return 1;
    }
    api_client_free(c);
    char who[256];
    lock_holder_describe(&h, who, sizeof(who));
    return err_set(e, -EBUSY,
                   "the state directory is held by the thinimg daemon (%s), but its socket %s "
                   "does not answer (%s); if it runs with another --socket, pass the same "
                   "--socket or THINIMG_SOCKET",
                   who, cfg->socket_path, r < 0 ? err_str(&ce) : "unexpected reply");
}

char *api_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *p = out;
    if (!out)
        return NULL;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~' || ch == ':') {
            *p++ = (char)ch;
        } else {
            *p++ = '%';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 15];
        }
    }
    *p = '\0';
    return out;
}
