/*
 * source.c: the kind-independent part of sources: key validation, the calls that go to a
 * source's kind through its ops, options, listing helpers and identities. See source.h; the
 * kinds (s3.c, dir.c, http.c, registry.c) use the helpers, open.c picks the kind.
 */
#include "source/source.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/source_impl.h"
#include "util/buf.h"
#include "util/cleanup.h"

static int listing_skip_summary(const struct source *s, const char *prefix,
                                struct source_listing *l);

const char *source_kind_name(enum source_kind k)
{
    switch (k) {
    case SOURCE_S3:
        return "s3";
    case SOURCE_DIR:
        return "dir";
    case SOURCE_HTTP:
        return "http";
    case SOURCE_REGISTRY:
        return "registry";
    }
    return "unknown";
}

/* An option set by the caller wins; else THINIMG_SOURCE_<NAME> from the environment (a
 * positive decimal number; anything else is ignored); else the default. */
static uint32_t opt_or_env(uint32_t v, const char *env, uint32_t dflt)
{
    if (v)
        return v;
    const char *s = getenv(env);
    if (s && *s) {
        char *end = NULL;
        unsigned long x = strtoul(s, &end, 10);
        if (*end == '\0' && x > 0 && x <= UINT32_MAX)
            return (uint32_t)x;
    }
    return dflt;
}

#define OPT_OR(field, env, dflt) opt_or_env(s->opt.field, "THINIMG_SOURCE_" env, (dflt))
uint32_t source_opt_connect_timeout_ms(const struct source *s)
{
    return OPT_OR(connect_timeout_ms, "CONNECT_TIMEOUT_MS", SOURCE_CONNECT_TIMEOUT_MS);
}
uint32_t source_opt_low_speed_time_s(const struct source *s)
{
    return OPT_OR(low_speed_time_s, "LOW_SPEED_TIME_S", SOURCE_LOW_SPEED_TIME_S);
}
uint32_t source_opt_request_timeout_ms(const struct source *s)
{
    return OPT_OR(request_timeout_ms, "REQUEST_TIMEOUT_MS", SOURCE_REQUEST_TIMEOUT_MS);
}
uint32_t source_download_streams(const struct source *s, uint64_t size)
{
    uint32_t n = OPT_OR(download_streams, "DOWNLOAD_STREAMS", SOURCE_DOWNLOAD_STREAMS);
    uint32_t min = OPT_OR(stream_min_bytes, "STREAM_MIN_BYTES", SOURCE_STREAM_MIN_BYTES);
    if (s->kind != SOURCE_S3 && s->kind != SOURCE_HTTP)
        return 1;
    if (n > SOURCE_DOWNLOAD_STREAMS_MAX)
        n = SOURCE_DOWNLOAD_STREAMS_MAX;
    return size >= min && size >= n ? n : 1;
}
uint32_t source_stream_probe_ms(const struct source *s)
{
    (void)s;
    return opt_or_env(0, "THINIMG_SOURCE_STREAM_PROBE_MS", SOURCE_STREAM_PROBE_MS);
}
uint32_t source_stream_split_rate(const struct source *s)
{
    (void)s;
    return opt_or_env(0, "THINIMG_SOURCE_STREAM_SPLIT_RATE", SOURCE_STREAM_SPLIT_RATE);
}
uint32_t source_opt_retry_attempts(const struct source *s)
{
    return OPT_OR(retry_attempts, "RETRY_ATTEMPTS", SOURCE_RETRY_ATTEMPTS);
}
uint32_t source_opt_retry_initial_ms(const struct source *s)
{
    return OPT_OR(retry_initial_ms, "RETRY_INITIAL_MS", SOURCE_RETRY_INITIAL_MS);
}
uint32_t source_opt_retry_max_ms(const struct source *s)
{
    return OPT_OR(retry_max_ms, "RETRY_MAX_MS", SOURCE_RETRY_MAX_MS);
}
uint32_t source_opt_list_timeout_ms(const struct source *s)
{
    return OPT_OR(list_timeout_ms, "LIST_TIMEOUT_MS", SOURCE_LIST_TIMEOUT_MS);
}
#undef OPT_OR

bool source_opt_cancelled(const struct source *s)
{
    return s->opt.cancelled && s->opt.cancelled(s->opt.cancel_ud);
}

bool source_is_location(const char *s)
{
    return !strncmp(s, "s3://", 5) || !strncmp(s, "dir:", 4) || !strncmp(s, "http://", 7) ||
           !strncmp(s, "https://", 8) || !strncmp(s, "docker://", 9);
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
            return err_set(e, -EILSEQ, "key contains a control character (0x%02x at byte %zu)", c,
                           i);
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

/* A key of an http(s) source is URL text: the server decodes it, so the decoded form must pass
 * the key rules too ("2.tar%00.evil" would be "2.tar" to many servers, "%2e%2e" is ".."). */
static int http_key_check(const char *key, bool allow_prefix, struct err *e)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(key);
    _cleanup_free_ char *d = malloc(n + 1);
    if (!d)
        return -ENOMEM;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (key[i] != '%') {
            d[j++] = key[i];
            continue;
        }
        const char *hi = i + 1 < n ? strchr(hex, tolower((unsigned char)key[i + 1])) : NULL;
        const char *lo = i + 2 < n ? strchr(hex, tolower((unsigned char)key[i + 2])) : NULL;
        if (!hi || !lo || !*hi || !*lo)
            return err_set(e, -EILSEQ, "key '%.64s' has a malformed %%-escape at byte %zu", key, i);
        unsigned char c = (unsigned char)((hi - hex) << 4 | (lo - hex));
        if (c < 0x20 || c == 0x7f)
            return err_set(e, -EILSEQ,
                           "key contains an escaped control character (%%%02X at byte %zu)", c, i);
        d[j++] = c == '/' ? '_' : (char)c; /* an escaped '/' is not a segment separator */
        i += 2;
    }
    d[j] = '\0';
    int r = source_key_check(d, allow_prefix, e);
    if (r < 0)
        err_prefix(e, "after %%-decoding");
    return r;
}

int source_key_check_for(const struct source *s, const char *key, bool allow_prefix,
                         struct err *e)
{
    int r = source_key_check(key, allow_prefix, e);
    if (r == 0 && s->kind == SOURCE_HTTP)
        r = http_key_check(key, allow_prefix, e);
    return r;
}

bool source_etag_is_strong(const char *etag)
{
    return etag && *etag && strncmp(etag, "W/", 2) != 0;
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
    if (s->ops && s->ops->location)
        return s->ops->location(s, key ? key : "");
    char *p = NULL;
    if (asprintf(&p, "%s%s", s->root, key ? key : "") < 0)
        return NULL;
    return p;
}

const char *source_key_name(const struct source *s, const char *key)
{
    static const char manifests[] = "manifests/";
    if (source_kind(s) == SOURCE_REGISTRY && !strncmp(key, manifests, sizeof(manifests) - 1))
        return key + sizeof(manifests) - 1;
    return key;
}

int source_list(struct source *s, const char *prefix, struct source_listing *out, struct err *e)
{
    *out = (struct source_listing){0};
    if (!prefix)
        prefix = "";
    int r = source_key_check_for(s, prefix, true, e);
    if (r < 0)
        return r;
    if (!s->ops->list)
        return err_set(e, -ENOTSUP,
                       "%s: a %s source cannot be listed; name an object (a full URL) instead",
                       s->root, source_kind_name(s->kind));
    r = s->ops->list(s, prefix, out, e);
    if (r == 0)
        r = listing_skip_summary(s, prefix, out);
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
    int r = source_key_check_for(s, key, false, e);
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
    struct source_expect x = {.etag = if_match};
    return source_get_expect(s, key, offset, &x, sink, ud, info, e);
}

int source_get_expect(struct source *s, const char *key, uint64_t offset,
                      const struct source_expect *want, source_sink_fn sink, void *ud,
                      struct source_get_info *info, struct err *e)
{
    struct source_get_info local;
    if (!info)
        info = &local;
    *info = (struct source_get_info){0};
    int r = source_key_check_for(s, key, false, e);
    if (r < 0)
        return r;
    struct source_expect x = want ? *want : (struct source_expect){0};
    if (!source_etag_is_strong(x.etag))
        x.etag = NULL; /* a weak ETag proves nothing about the bytes */
    const char *if_match = x.etag;
    if (x.has_size && offset > x.size)
        return err_set(e, -ERANGE,
                       "%s%s: offset %" PRIu64 " is beyond the object's %" PRIu64 " bytes", s->root,
                       key, offset, x.size);
    struct err ge = {0};
    r = s->ops->get(s, key, offset, &x, sink, ud, info, &ge);
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
    free(o->digest);
    free(o->identity);
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
    for (size_t i = 0; i < SOURCE_LIST_SKIP_EXAMPLES; i++)
        free(l->skip_examples[i]);
    *l = (struct source_listing){0};
}

int source_listing_see(struct source_listing *l)
{
    if (l->n_seen >= SOURCE_LIST_MAX_KEYS)
        return -EFBIG;
    l->n_seen++;
    return 0;
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
    l->items[l->n++] =
        (struct source_object){.key = key, .size = size, .etag = etag, .mtime_ms = mtime_ms};
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

int source_listing_skip(struct source_listing *l, const char *fmt, ...)
{
    size_t i = l->n_skipped++;
    if (i >= SOURCE_LIST_SKIP_EXAMPLES)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&l->skip_examples[i], fmt, ap);
    va_end(ap);
    if (n < 0) {
        l->skip_examples[i] = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* The one warning for every key skipped: how many, and the first reasons. */
static int listing_skip_summary(const struct source *s, const char *prefix,
                                struct source_listing *l)
{
    if (!l->n_skipped)
        return 0;
    struct buf b = BUF_INIT;
    int r = buf_printf(&b, "%s%s: skipped %zu key%s (", s->root, prefix, l->n_skipped,
                       l->n_skipped == 1 ? "" : "s");
    for (size_t i = 0; r == 0 && i < SOURCE_LIST_SKIP_EXAMPLES && l->skip_examples[i]; i++)
        r = buf_printf(&b, "%s%s", i ? "; " : "", l->skip_examples[i]);
    if (r == 0 && l->n_skipped > SOURCE_LIST_SKIP_EXAMPLES)
        r = buf_printf(&b, "; and %zu more", l->n_skipped - SOURCE_LIST_SKIP_EXAMPLES);
    if (r == 0)
        r = buf_puts(&b, ")");
    if (r == 0)
        r = source_listing_warn(l, "%s", b.data);
    buf_free(&b);
    return r;
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

/* ---- identities ---------------------------------------------------------------------------- */

int source_identity_http(struct source_object *o, const char *kind, const char *scope)
{
    if (!source_etag_is_strong(o->etag) || strpbrk(o->etag, " \t\r\n"))
        return 0;
    const char *form = "";
    if (!strcmp(kind, "s3")) /* S3: a multipart ETag ("...-N") is not the MD5 of the bytes */
        form = strchr(o->etag, '-') ? "multipart " : "md5 ";
    if (asprintf(&o->identity, "%s %s %s%s %" PRIu64, kind, scope, form, o->etag, o->size) < 0) {
        o->identity = NULL;
        return -ENOMEM;
    }
    return 0;
}

void source_identity_kind(const char *identity, char *out, size_t cap)
{
    size_t n = identity ? strcspn(identity, " ") : 0;
    if (!identity || !identity[n] || n >= cap)
        n = 0;
    memcpy(out, identity ? identity : "", n);
    out[n] = 0;
}

unsigned source_max_layers(void)
{
    const char *v = getenv("THINIMG_SOURCE_MAX_LAYERS");
    if (v && *v) {
        char *end = NULL;
        errno = 0;
        unsigned long x = strtoul(v, &end, 10);
        if (errno == 0 && *end == '\0' && x > 0)
            return x < SOURCE_MAX_LAYERS_CEILING ? (unsigned)x : SOURCE_MAX_LAYERS_CEILING;
    }
    return SOURCE_MAX_LAYERS;
}
