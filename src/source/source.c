/*
 * source.c: the kind-independent part of sources: parsing a location into (source, key),
 * key validation, the dispatch to s3.c / dir.c / http.c, and listing helpers. See source.h.
 */
#include "source/source.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/source_impl.h"
#include "util/cleanup.h"

const char *source_kind_name(enum source_kind k)
{
    switch (k) {
    case SOURCE_S3: return "s3";
    case SOURCE_DIR: return "dir";
    case SOURCE_HTTP: return "http";
    }
    return "unknown";
}

#define OPT_OR(field, dflt) (s->opt.field ? s->opt.field : (dflt))
uint32_t source_opt_connect_timeout_ms(const struct source *s)
{
    return OPT_OR(connect_timeout_ms, SOURCE_CONNECT_TIMEOUT_MS);
}
uint32_t source_opt_low_speed_time_s(const struct source *s)
{
    return OPT_OR(low_speed_time_s, SOURCE_LOW_SPEED_TIME_S);
}
uint32_t source_opt_request_timeout_ms(const struct source *s)
{
    return OPT_OR(request_timeout_ms, SOURCE_REQUEST_TIMEOUT_MS);
}
uint32_t source_opt_retry_attempts(const struct source *s)
{
    return OPT_OR(retry_attempts, SOURCE_RETRY_ATTEMPTS);
}
uint32_t source_opt_retry_initial_ms(const struct source *s)
{
    return OPT_OR(retry_initial_ms, SOURCE_RETRY_INITIAL_MS);
}
uint32_t source_opt_retry_max_ms(const struct source *s)
{
    return OPT_OR(retry_max_ms, SOURCE_RETRY_MAX_MS);
}
#undef OPT_OR

bool source_opt_cancelled(const struct source *s)
{
    return s->opt.cancelled && s->opt.cancelled(s->opt.cancel_ud);
}

bool source_is_location(const char *s)
{
    return !strncmp(s, "s3://", 5) || !strncmp(s, "dir:", 4) || !strncmp(s, "http://", 7) ||
           !strncmp(s, "https://", 8);
}

int source_key_check(const char *key, bool allow_prefix, struct err *e)
{
    size_t n = strlen(key);
    if (n == 0)
        return allow_prefix ? 0 : err_set(e, -EILSEQ, "empty key");
    if (n > SOURCE_KEY_MAX)
        return err_set(e, -EILSEQ, "key of %zu bytes is longer than the limit of %d", n,
                       SOURCE_KEY_MAX);
    if (key[0] == '/')
        return err_set(e, -EILSEQ, "key '%.64s' starts with '/'", key);
    if (!allow_prefix && key[n - 1] == '/')
        return err_set(e, -EILSEQ, "key '%.64s' names a prefix, not an object", key);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c == 0x7f)
            return err_set(e, -EILSEQ, "key contains a control character (0x%02x at byte %zu)",
                           c, i);
    }
    /* Segment rules: no "", "." or ".." segment (a trailing '/' of a prefix is not a segment). */
    const char *p = key;
    const char *end = key + n;
    while (p < end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t len = slash ? (size_t)(slash - p) : (size_t)(end - p);
        bool trailing = slash && slash + 1 == end;
        if (len == 0)
            return err_set(e, -EILSEQ, "key '%.64s' has an empty path segment ('//')", key);
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return err_set(e, -EILSEQ, "key '%.64s' has a '%.*s' segment (path traversal)", key,
                           (int)len, p);
        if (!slash || trailing)
            break;
        p = slash + 1;
    }
    return 0;
}

int source_open(const char *location, const struct source_options *o, struct source **out,
                char **key_out, struct err *e)
{
    _cleanup_free_ char *key = NULL;
    int r;
    struct source *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    if (o)
        s->opt = *o;
    s->opt_region = s->opt.region ? strdup(s->opt.region) : NULL;
    s->opt_endpoint = s->opt.endpoint ? strdup(s->opt.endpoint) : NULL;
    if ((s->opt.region && !s->opt_region) || (s->opt.endpoint && !s->opt_endpoint)) {
        source_free(s);
        return -ENOMEM;
    }
    s->opt.region = s->opt_region;
    s->opt.endpoint = s->opt_endpoint;

    if (!strncmp(location, "s3://", 5)) {
        s->kind = SOURCE_S3;
        r = source_s3_open(s, location + 5, &key, e);
    } else if (!strncmp(location, "dir:", 4)) {
        s->kind = SOURCE_DIR;
        r = source_dir_open(s, location + 4, &key, e);
    } else if (!strncmp(location, "http://", 7) || !strncmp(location, "https://", 8)) {
        s->kind = SOURCE_HTTP;
        r = source_http_open(s, location, &key, e);
    } else {
        r = err_set(e, -EINVAL,
                    "'%.128s' is not a location: use s3://bucket/key, dir:/path or "
                    "http(s)://host/path",
                    location);
    }
    if (r < 0) {
        source_free(s);
        return r;
    }
    if (key && (r = source_key_check(key, true, e)) < 0) {
        err_prefix(e, "%.256s", location);
        source_free(s);
        return r;
    }
    if (key_out)
        *key_out = key ? TAKE_PTR(key) : strdup("");
    *out = s;
    return 0;
}

void source_free(struct source *s)
{
    if (!s)
        return;
    if (s->ops && s->ops->free_impl && s->impl)
        s->ops->free_impl(s->impl);
    free(s->root);
    free(s->opt_region);
    free(s->opt_endpoint);
    free(s);
}

enum source_kind source_kind(const struct source *s)
{
    return s->kind;
}

const char *source_root(const struct source *s)
{
    return s->root;
}

bool source_can_list(const struct source *s)
{
    return s->ops && s->ops->list;
}

char *source_location(const struct source *s, const char *key)
{
    char *p = NULL;
    if (asprintf(&p, "%s%s", s->root, key ? key : "") < 0)
        return NULL;
    return p;
}

int source_list(struct source *s, const char *prefix, struct source_listing *out, struct err *e)
{
    *out = (struct source_listing){0};
    if (!prefix)
        prefix = "";
    int r = source_key_check(prefix, true, e);
    if (r < 0)
        return r;
    if (!s->ops->list)
        return err_set(e, -ENOTSUP,
                       "%s: a %s source cannot be listed; name an object (a full URL) instead",
                       s->root, source_kind_name(s->kind));
    r = s->ops->list(s, prefix, out, e);
    if (r < 0) {
        source_listing_free(out);
        return r;
    }
    source_listing_sort(out);
    return 0;
}

int source_stat(struct source *s, const char *key, struct source_object *out, struct err *e)
{
    *out = (struct source_object){0};
    int r = source_key_check(key, false, e);
    if (r < 0)
        return r;
    r = s->ops->stat(s, key, out, e);
    if (r < 0)
        source_object_free(out);
    return r;
}

int source_get(struct source *s, const char *key, uint64_t offset, const char *if_match,
               source_sink_fn sink, void *ud, struct source_get_info *info, struct err *e)
{
    struct source_get_info local;
    if (!info)
        info = &local;
    *info = (struct source_get_info){0};
    int r = source_key_check(key, false, e);
    if (r < 0)
        return r;
    if (if_match && !*if_match)
        if_match = NULL;
    struct err ge = {0};
    r = s->ops->get(s, key, offset, if_match, sink, ud, info, &ge);
    if (r == -ERANGE && offset > 0) {
        /* Servers answer a range starting at the end with 416: if the object is exactly
         * `offset` bytes (and still the expected version), there is simply nothing left. */
        struct source_object o = {0};
        if (s->ops->stat(s, key, &o, NULL) == 0 && o.size == offset &&
            (!if_match || (o.etag && !strcmp(o.etag, if_match)))) {
            info->size = o.size;
            snprintf(info->etag, sizeof(info->etag), "%s", o.etag ? o.etag : "");
            source_object_free(&o);
            return 0;
        }
        source_object_free(&o);
    }
    if (r < 0 && e && ge.code)
        *e = ge;
    else if (r < 0)
        err_errno(e, r, key);
    return r;
}

void source_object_free(struct source_object *o)
{
    if (!o)
        return;
    free(o->key);
    free(o->etag);
    *o = (struct source_object){0};
}

void source_listing_free(struct source_listing *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        source_object_free(&l->items[i]);
    free(l->items);
    for (size_t i = 0; i < l->n_warnings; i++)
        free(l->warnings[i]);
    free(l->warnings);
    *l = (struct source_listing){0};
}

int source_listing_add(struct source_listing *l, char *key, uint64_t size, char *etag,
                       int64_t mtime_ms)
{
    if (l->n >= SOURCE_LIST_MAX_KEYS)
        return -EFBIG;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct source_object *p = realloc(l->items, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = (struct source_object){.key = key, .size = size, .etag = etag,
                                               .mtime_ms = mtime_ms};
    return 0;
}

int source_listing_warn(struct source_listing *l, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -ENOMEM;
    char **p = realloc(l->warnings, (l->n_warnings + 1) * sizeof(*p));
    if (!p) {
        free(msg);
        return -ENOMEM;
    }
    l->warnings = p;
    l->warnings[l->n_warnings++] = msg;
    return 0;
}

static int object_cmp(const void *a, const void *b)
{
    return strcmp(((const struct source_object *)a)->key, ((const struct source_object *)b)->key);
}

void source_listing_sort(struct source_listing *l)
{
    if (l->n > 1)
        qsort(l->items, l->n, sizeof(l->items[0]), object_cmp);
}
