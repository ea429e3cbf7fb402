/*
 * http.c: the http(s):// source: HEAD for size and ETag, GET with Range where the server
 * offers it (and a skipped prefix where it does not), If-Match. No listing: plain HTTP has
 * no standard way to list, so refs over HTTP name objects (or N.tar keys whose siblings are
 * found by HEAD). See source.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/httpc.h"
#include "source/source_impl.h"
#include "util/buf.h"
#include "util/cleanup.h"
#include "util/redact.h"

struct http_src {
    struct httpc *http;
};

static void http_free_impl(void *impl)
{
    struct http_src *h = impl;
    httpc_free(h->http);
    free(h);
}

/* The key is appended to the root as it is (it is already URL text: the operator typed it, or
 * it is "N.tar"); spaces and other bytes that cannot appear in a URL are escaped. */
static char *key_url(struct source *s, const char *key)
{
    struct buf b = BUF_INIT;
    if (buf_puts(&b, s->root) < 0)
        goto fail;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        int r = *p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '<' || *p == '>' || *p == '\\'
                    ? buf_printf(&b, "%%%02X", *p)
                    : buf_append(&b, p, 1);
        if (r < 0)
            goto fail;
    }
    return buf_steal(&b);
fail:
    buf_free(&b);
    return NULL;
}

static int status_error(const struct httpc_resp *resp, const char *what, struct err *e)
{
    long st = resp->status;
    if (st == 404 || st == 410)
        return err_set(e, -ENOENT, "%s: not found (%ld)", what, st);
    if (st == 401 || st == 403)
        return err_set(e, -EACCES,
                       "%s: access denied (%ld): the server refuses the request; "
                       "check the URL (for a private S3 bucket use s3:// with credentials)",
                       what, st);
    if (st == 412)
        return err_set(e, -ESTALE,
                       "%s: the object changed (412: its ETag is no longer the one "
                       "the download started with)",
                       what);
    if (st == 416)
        return err_set(e, -ERANGE, "%s: requested range not satisfiable (416)", what);
    if (httpc_status_retryable(st))
        return err_set(e, -EREMOTEIO, "%s: server error %ld (gave up after %u attempts)", what, st,
                       resp->attempts);
    return err_set(e, -EPROTO, "%s: unexpected HTTP status %ld", what, st);
}

static int http_stat(struct source *s, const char *key, struct source_object *out, struct err *e)
{
    struct http_src *h = s->impl;
    _cleanup_free_ char *url = key_url(s, key);
    if (!url)
        return -ENOMEM;
    struct httpc_req req = httpc_req_object_head(url, url);
    struct httpc_resp resp;
    int r = httpc_perform(h->http, &req, &resp, e);
    if (r == 0 && resp.status != 200)
        r = status_error(&resp, url, e);
    if (r == 0)
        r = httpc_resp_object(&resp, key, url, out, e);
    if (r == 0) {
        /* An ETag means something to its origin only: scheme://host[:port] of the root,
         * without credentials (the identity is stored in the database). */
        _cleanup_free_ char *root = url_strip_userinfo(s->root);
        const char *host = root ? strstr(root, "://") : NULL;
        size_t n = host ? (size_t)(host + 3 - root) + strcspn(host + 3, "/") : 0;
        _cleanup_free_ char *origin = root ? strndup(root, n) : NULL;
        r = origin ? source_identity_http(out, "http", origin) : -ENOMEM;
    }
    httpc_resp_free(&resp);
    return r;
}

static int http_get(struct source *s, const char *key, uint64_t offset,
                    const struct source_expect *x, source_sink_fn sink, void *ud,
                    struct source_get_info *info, struct err *e)
{
    struct http_src *h = s->impl;
    _cleanup_free_ char *url = key_url(s, key);
    if (!url)
        return -ENOMEM;
    struct httpc_req req = httpc_req_object_get(url, url, offset, x, sink, ud);
    struct httpc_resp resp;
    int r = httpc_perform(h->http, &req, &resp, e);
    if (r == 0 && !httpc_resp_get_info(&resp, offset, info))
        r = status_error(&resp, url, e);
    httpc_resp_free(&resp);
    return r;
}

static const struct source_ops http_ops = {
    .list = NULL,
    .stat = http_stat,
    .get = http_get,
    .free_impl = http_free_impl,
};

/* A "." or ".." path segment, also spelled with %2e (RFC 3986 section 6.2.2.2). 1 or 2, or 0. */
static int dot_segment(const char *seg, size_t len)
{
    size_t dots = 0;
    for (size_t i = 0; i < len; dots++) {
        if (seg[i] == '.')
            i++;
        else if (len - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' &&
                 (seg[i + 2] == 'e' || seg[i + 2] == 'E'))
            i += 3;
        else
            return 0;
        if (dots >= 2)
            return 0;
    }
    return (int)dots;
}

/* RFC 3986 remove_dot_segments on the path of a URL (path starts with '/', ends before the
 * query): "/a/b/../c" is "/a/c", "/a/./b" is "/a/b". Returns a new URL, or NULL with *escape
 * set when a ".." goes above "/". */
static char *remove_dot_segments(const char *url, const char *path, const char *path_end,
                                 bool *escape)
{
    *escape = false;
    struct buf b = BUF_INIT;
    if (buf_append(&b, url, (size_t)(path - url)) < 0)
        goto fail;
    size_t base = b.len;
    const char *p = path;
    while (p < path_end) {
        const char *seg = p + 1; /* after the '/' */
        const char *next = memchr(seg, '/', (size_t)(path_end - seg));
        size_t len = next ? (size_t)(next - seg) : (size_t)(path_end - seg);
        int dots = dot_segment(seg, len);
        if (dots == 2) {
            if (b.len == base) {
                *escape = true;
                goto fail;
            }
            while (b.len > base && b.data[b.len - 1] != '/')
                b.len--;
            b.len--; /* the '/' before the dropped segment */
        }
        if (dots && !next) {
            if (buf_puts(&b, "/") < 0) /* "/a/.." names the folder "/": keep the slash */
                goto fail;
        } else if (!dots && (buf_puts(&b, "/") < 0 || buf_append(&b, seg, len) < 0)) {
            goto fail;
        }
        p = next ? next : path_end;
    }
    if (buf_puts(&b, path_end) < 0)
        goto fail;
    return buf_steal(&b);
fail:
    buf_free(&b);
    return NULL;
}

int source_http_open(struct source *s, const char *url, char **key_out, struct err *e)
{
    struct http_src *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    s->impl = h;
    s->ops = &http_ops;
    if (strchr(url, '#'))
        return err_set(e, -EINVAL, "%.200s: a URL fragment ('#') is not allowed", url);
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return err_set(e, -EINVAL, "%.200s: the URL contains a space or control character",
                           url);
    const char *auth = strstr(url, "://") + 3;
    const char *q = strchr(auth, '?');
    const char *path = strchr(auth, '/');
    if (path && q && path > q)
        path = NULL;
    if (path == auth || (q == auth))
        return err_set(e, -EINVAL, "%.200s: the URL has no host", url);
    /* One object, one location string: the path without dot segments. */
    _cleanup_free_ char *norm = NULL;
    if (path) {
        bool escape;
        norm = remove_dot_segments(url, path, q ? q : url + strlen(url), &escape);
        if (!norm && escape)
            return err_set(e, -EINVAL, "%.200s: '..' in the path goes above '/'", url);
        if (!norm)
            return -ENOMEM;
        url = norm;
        auth = strstr(url, "://") + 3;
        q = strchr(auth, '?');
        path = strchr(auth, '/');
    }
    if (!path) {
        /* "https://host" or "https://host?x": the root is "https://host/". */
        size_t hl = q ? (size_t)(q - url) : strlen(url);
        if (asprintf(&s->root, "%.*s/", (int)hl, url) < 0) {
            s->root = NULL;
            return -ENOMEM;
        }
        *key_out = strdup(q ? q : "");
    } else {
        const char *end = q ? q : url + strlen(url);
        const char *last = path;
        for (const char *p = path; p < end; p++)
            if (*p == '/')
                last = p;
        s->root = strndup(url, (size_t)(last - url) + 1);
        *key_out = strdup(last + 1);
    }
    if (!s->root || !*key_out)
        return -ENOMEM;
    return httpc_new(s, true, &h->http);
}
