/*
 * s3.c: the s3:// source: ListObjectsV2 with pagination, HEAD, ranged GET with If-Match,
 * SigV4 or anonymous, AWS (virtual-hosted) or a custom endpoint (path-style). Errors become
 * messages that say what to do. See s3.h and source.h.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "source/httpc.h"
#include "source/s3.h"
#include "source/s3_xml.h"
#include "source/source_impl.h"
#include "util/buf.h"
#include "util/cleanup.h"
#include "util/defaults.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/redact.h"
#include "util/timeutil.h"

/* Bucket names: S3's rules are 3..63 of [a-z0-9.-]; S3-compatible servers and legacy buckets
 * also use upper case and '_', which are harmless in a URL path. */
#define S3_BUCKET_MIN 3
#define S3_BUCKET_MAX 63

struct s3 {
    char *bucket;
    char *region;
    char *host;     /* Host header value */
    char *url_base; /* scheme://host[:port][/path] up to (not including) the key's '/' */
    bool custom_endpoint;
    char *scope; /* the server that computes ETags: "aws" or the endpoint's scheme://host:port */
    struct s3_creds creds;
    struct httpc *http;
};

static void s3_free_impl(void *impl)
{
    struct s3 *s3 = impl;
    free(s3->bucket);
    free(s3->region);
    free(s3->host);
    free(s3->url_base);
    free(s3->scope);
    s3_creds_free(&s3->creds);
    httpc_free(s3->http);
    free(s3);
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int bucket_check(const char *b, struct err *e)
{
    size_t n = strlen(b);
    if (n < S3_BUCKET_MIN || n > S3_BUCKET_MAX)
        return err_set(e, -EINVAL, "bucket name '%.80s' must have %d to %d characters", b,
                       S3_BUCKET_MIN, S3_BUCKET_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!isalnum(c) && c != '.' && c != '-' && c != '_')
            return err_set(e, -EINVAL,
                           "bucket name '%.80s' may only contain letters, digits, '.', '-' and "
                           "'_'",
                           b);
    }
    return 0;
}

/* ---- signing ----------------------------------------------------------------------------- */

/* The canonical URI and query of a URL we built: path after the authority, query after '?'. */
static int sign_hook(void *ud, const char *method, const char *url, const char *range,
                     struct curl_slist **headers, struct err *e)
{
    (void)range;
    struct s3 *s3 = ud;
    if (!s3->creds.access_key)
        return 0; /* anonymous */
    const char *p = strstr(url, "://");
    p = p ? strchr(p + 3, '/') : NULL;
    if (!p)
        return err_set(e, -EINVAL, "cannot sign URL %s", url);
    const char *q = strchr(p, '?');
    _cleanup_free_ char *path = q ? strndup(p, (size_t)(q - p)) : strdup(p);
    if (!path)
        return -ENOMEM;

    char amz_date[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);

    struct s3_sign_header h[4];
    size_t n = 0;
    h[n++] = (struct s3_sign_header){"host", s3->host};
    h[n++] = (struct s3_sign_header){"x-amz-content-sha256", S3_EMPTY_PAYLOAD_SHA256};
    h[n++] = (struct s3_sign_header){"x-amz-date", amz_date};
    if (s3->creds.session_token)
        h[n++] = (struct s3_sign_header){"x-amz-security-token", s3->creds.session_token};
    char auth[1024];
    int r = s3_sigv4_authorization(&s3->creds, s3->region, method, path, q ? q + 1 : "", h, n,
                                   S3_EMPTY_PAYLOAD_SHA256, amz_date, auth, sizeof(auth));
    if (r < 0)
        return err_set(e, r, "cannot sign the request for %s", url);
    char line[2048];
    const char *lines[4];
    size_t nl = 0;
    char l_auth[1100], l_sha[128], l_date[64];
    snprintf(l_auth, sizeof(l_auth), "Authorization: %s", auth);
    snprintf(l_sha, sizeof(l_sha), "x-amz-content-sha256: %s", S3_EMPTY_PAYLOAD_SHA256);
    snprintf(l_date, sizeof(l_date), "x-amz-date: %s", amz_date);
    lines[nl++] = l_auth;
    lines[nl++] = l_sha;
    lines[nl++] = l_date;
    if (s3->creds.session_token) {
        snprintf(line, sizeof(line), "x-amz-security-token: %s", s3->creds.session_token);
        lines[nl++] = line;
    }
    for (size_t i = 0; i < nl; i++) {
        struct curl_slist *t = curl_slist_append(*headers, lines[i]);
        if (!t)
            return -ENOMEM;
        *headers = t;
    }
    return 0;
}

/* ---- errors ------------------------------------------------------------------------------ */

static int status_error(struct s3 *s3, const struct httpc_resp *resp, const char *what,
                        struct err *e)
{
    struct s3_error x = {0};
    if (resp->body.len)
        s3_xml_parse_error(resp->body.data, resp->body.len, &x);
    char code[160] = "";
    if (x.code[0])
        snprintf(code, sizeof(code), " %s", x.code);
    long st = resp->status;
    bool anon = !s3->creds.access_key;

    if (st == 404 || !strcmp(x.code, "NoSuchKey") || !strcmp(x.code, "NoSuchBucket")) {
        if (!strcmp(x.code, "NoSuchBucket"))
            return err_set(e, -ENOENT,
                           "s3://%s: no such bucket (404 NoSuchBucket); check the "
                           "bucket name%s",
                           s3->bucket, s3->custom_endpoint ? " and the endpoint" : "");
        return err_set(e, -ENOENT, "%s: not found (404%s)", what, code);
    }
    const char *region = x.region[0] ? x.region : resp->bucket_region;
    if (st == 301 || st == 307 || !strcmp(x.code, "PermanentRedirect") ||
        !strcmp(x.code, "AuthorizationHeaderMalformed") ||
        !strcmp(x.code, "IllegalLocationConstraintException")) {
        if (region[0])
            return err_set(e, -EINVAL,
                           "%s: the bucket is in region %s, not %s; use --region %s "
                           "(or AWS_REGION=%s)",
                           what, region, s3->region, region, region);
        return err_set(e, -EINVAL,
                       "%s: the server redirects (%ld%s): the bucket is in another "
                       "region; set --region",
                       what, st, code);
    }
    if (st == 403 || st == 401) {
        if (!strcmp(x.code, "InvalidAccessKeyId"))
            return err_set(e, -EACCES,
                           "%s: access denied (%ld InvalidAccessKeyId): the access "
                           "key from %s does not exist; check AWS_ACCESS_KEY_ID or the profile",
                           what, st, s3->creds.origin);
        if (!strcmp(x.code, "SignatureDoesNotMatch"))
            return err_set(e, -EACCES,
                           "%s: access denied (%ld SignatureDoesNotMatch): the secret "
                           "key from %s is wrong",
                           what, st, s3->creds.origin);
        if (!strcmp(x.code, "ExpiredToken") || !strcmp(x.code, "TokenRefreshRequired"))
            return err_set(e, -EACCES,
                           "%s: access denied (%ld%s): the session token has "
                           "expired; refresh AWS_SESSION_TOKEN",
                           what, st, code);
        if (!strcmp(x.code, "RequestTimeTooSkewed"))
            return err_set(e, -EACCES,
                           "%s: access denied (%ld RequestTimeTooSkewed): this "
                           "host's clock is off; fix the time (NTP)",
                           what, st);
        if (anon)
            return err_set(e, -EACCES,
                           "%s: access denied (%ld%s): the bucket is not public and "
                           "no credentials are set; set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
                           what, st, code);
        return err_set(e, -EACCES,
                       "%s: access denied (%ld%s): the credentials from %s may not "
                       "read it; check the bucket policy, the key and --region",
                       what, st, code, s3->creds.origin);
    }
    if (st == 412)
        return err_set(e, -ESTALE,
                       "%s: the object changed (412 PreconditionFailed: its ETag is "
                       "no longer the one the download started with)",
                       what);
    if (st == 416)
        return err_set(e, -ERANGE, "%s: requested range not satisfiable (416)", what);
    if (httpc_status_retryable(st))
        return err_set(e, -EREMOTEIO, "%s: server error %ld%s%s%s (gave up after %u attempts)",
                       what, st, code, x.message[0] ? ": " : "", x.message, resp->attempts);
    return err_set(e, -EPROTO, "%s: unexpected HTTP status %ld%s%s%s", what, st, code,
                   x.message[0] ? ": " : "", x.message);
}

/* ---- requests ---------------------------------------------------------------------------- */

static char *object_url(struct s3 *s3, const char *key)
{
    struct buf b = BUF_INIT;
    if (buf_printf(&b, "%s/", s3->url_base) < 0 || httpc_uri_encode(&b, key, true) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

static int s3_stat(struct source *s, const char *key, struct source_object *out, struct err *e)
{
    struct s3 *s3 = s->impl;
    _cleanup_free_ char *url = object_url(s3, key);
    _cleanup_free_ char *what = source_location(s, key);
    if (!url || !what)
        return -ENOMEM;
    struct httpc_req req = httpc_req_object_head(url, what);
    req.sign = sign_hook;
    req.sign_ud = s3;
    struct httpc_resp resp;
    int r = httpc_perform(s3->http, &req, &resp, e);
    if (r == 0 && resp.status != 200)
        r = status_error(s3, &resp, what, e);
    if (r == 0)
        r = httpc_resp_object(&resp, key, what, out, e);
    if (r == 0)
        r = source_identity_http(out, "s3", s3->scope);
    httpc_resp_free(&resp);
    return r;
}

static int s3_get(struct source *s, const char *key, uint64_t offset, const struct source_expect *x,
                  source_sink_fn sink, void *ud, struct source_get_info *info, struct err *e)
{
    struct s3 *s3 = s->impl;
    _cleanup_free_ char *url = object_url(s3, key);
    _cleanup_free_ char *what = source_location(s, key);
    if (!url || !what)
        return -ENOMEM;
    struct httpc_req req = httpc_req_object_get(url, what, offset, x, sink, ud);
    req.sign = sign_hook;
    req.sign_ud = s3;
    struct httpc_resp resp;
    int r = httpc_perform(s3->http, &req, &resp, e);
    if (r == 0 && !httpc_resp_get_info(&resp, offset, info))
        r = status_error(s3, &resp, what, e);
    httpc_resp_free(&resp);
    return r;
}

/* Continuation tokens seen in one listing, as truncated SHA-256 digests: any repeat (a cycle
 * of any period) is detected in bounded memory (SOURCE_LIST_MAX_PAGES entries). */
#define S3_TOKEN_ID_LEN 16
struct token_set {
    uint8_t (*ids)[S3_TOKEN_ID_LEN];
    size_t n;
};

/* 1 when the token was seen before, 0 when it is new (and is now remembered). */
static int token_seen(struct token_set *t, const char *token)
{
    uint8_t d[SHA256_LEN];
    int r = sha256_buf(token, strlen(token), d);
    if (r < 0)
        return r;
    for (size_t i = 0; i < t->n; i++)
        if (!memcmp(t->ids[i], d, S3_TOKEN_ID_LEN))
            return 1;
    void *p = realloc(t->ids, (t->n + 1) * sizeof(*t->ids));
    if (!p)
        return -ENOMEM;
    t->ids = p;
    memcpy(t->ids[t->n++], d, S3_TOKEN_ID_LEN);
    return 0;
}

/* Copy of a key for a message: at most 64 bytes, anything unprintable as '?'. */
static void printable_key(const char *k, char out[static 65])
{
    size_t i = 0;
    for (; k[i] && i < 64; i++)
        out[i] = (unsigned char)k[i] < 0x20 || (unsigned char)k[i] >= 0x7f ? '?' : k[i];
    out[i] = '\0';
}

/* One page's entries into the listing: every key counted (the cap is on keys seen), invalid
 * ones skipped into the summary. */
static int add_page(const char *prefix, const char *what, struct s3_list_page *pg,
                    struct source_listing *out, struct err *e)
{
    int r = 0;
    for (size_t i = 0; i < pg->n && r == 0; i++) {
        struct s3_list_entry *en = &pg->entries[i];
        if (source_listing_see(out) < 0)
            return err_set(e, -EFBIG, "%s: more than %d keys; name a narrower prefix", what,
                           SOURCE_LIST_MAX_KEYS);
        char shown[65];
        printable_key(en->key, shown);
        if (en->invalid) {
            r = source_listing_skip(out, "%s: '%s'", en->invalid, shown);
            continue;
        }
        if (strncmp(en->key, prefix, strlen(prefix)) != 0) {
            r = source_listing_skip(out, "key outside the prefix: '%s'", shown);
            continue;
        }
        size_t kl = strlen(en->key);
        if (kl && en->key[kl - 1] == '/' && en->size == 0)
            continue; /* a "folder" placeholder object */
        struct err ke = {0};
        if (source_key_check(en->key, false, &ke) < 0) {
            r = source_listing_skip(out, "%s", ke.msg);
            continue;
        }
        if (en->etag && strlen(en->etag) > SOURCE_ETAG_MAX) {
            free(en->etag);
            en->etag = NULL;
        }
        r = source_listing_add(out, en->key, en->size, en->etag, en->mtime_ms);
        if (r == 0)
            en->key = en->etag = NULL;
    }
    return r;
}

/* Bounds of one listing (see source.h): pages, bytes, wall time, a token seen before; keys
 * are bounded in add_page(). Every page also checks the caller's cancel hook. */
static int list_bounds(struct source *s, const char *what, unsigned page, uint64_t bytes,
                       int64_t t0, struct err *e)
{
    if (source_opt_cancelled(s))
        return err_set(e, -ECANCELED, "%s: listing cancelled", what);
    if (page >= SOURCE_LIST_MAX_PAGES)
        return err_set(e, -EFBIG,
                       "%s: the listing has more than %d pages; the server does "
                       "not end it (or name a narrower prefix)",
                       what, SOURCE_LIST_MAX_PAGES);
    if (bytes > SOURCE_LIST_MAX_BYTES)
        return err_set(e, -EFBIG,
                       "%s: the listing is larger than %llu MiB; the server does "
                       "not end it (or name a narrower prefix)",
                       what, SOURCE_LIST_MAX_BYTES >> 20);
    uint32_t limit = source_opt_list_timeout_ms(s);
    if (mono_ms() - t0 > (int64_t)limit)
        return err_set(e, -ETIMEDOUT,
                       "%s: the listing took longer than %u s; the server is "
                       "too slow or does not end it",
                       what, limit / 1000);
    return 0;
}

static int s3_list(struct source *s, const char *prefix, struct source_listing *out, struct err *e)
{
    struct s3 *s3 = s->impl;
    _cleanup_free_ char *token = NULL;
    _cleanup_free_ char *what = source_location(s, prefix);
    if (!what)
        return -ENOMEM;
    struct token_set seen = {0};
    uint64_t bytes = 0;
    int64_t t0 = mono_ms();
    int r = 0;
    for (unsigned page = 0;; page++) {
        r = list_bounds(s, what, page, bytes, t0, e);
        if (r < 0)
            break;
        /* Query parameters in canonical (sorted) order, so the URL is its own canonical
         * query. */
        _cleanup_buf_ struct buf url = BUF_INIT;
        r = buf_printf(&url, "%s/?", s3->url_base);
        if (r == 0 && token) {
            r = buf_puts(&url, "continuation-token=");
            if (r == 0)
                r = httpc_uri_encode(&url, token, false);
            if (r == 0)
                r = buf_puts(&url, "&");
        }
        if (r == 0)
            r = buf_printf(
                &url, "encoding-type=url&list-type=2&max-keys=%d&prefix=", SOURCE_LIST_PAGE_KEYS);
        if (r == 0)
            r = httpc_uri_encode(&url, prefix, false);
        if (r < 0)
            break;
        struct httpc_req req = {.method = "GET",
                                .url = url.data,
                                .what = what,
                                .small = true,
                                .max_body = SOURCE_LIST_BODY_MAX,
                                .sign = sign_hook,
                                .sign_ud = s3};
        struct httpc_resp resp;
        r = httpc_perform(s3->http, &req, &resp, e);
        if (r == 0 && resp.status != 200)
            r = status_error(s3, &resp, what, e);
        bytes += resp.body.len;
        struct s3_list_page pg = {0};
        if (r == 0) {
            r = s3_xml_parse_list(resp.body.data ? resp.body.data : "", resp.body.len, &pg, e);
            if (r < 0)
                err_prefix(e, "%s", what);
        }
        httpc_resp_free(&resp);
        if (r == 0)
            r = add_page(prefix, what, &pg, out, e);
        bool more = pg.truncated;
        if (r == 0 && more) {
            int seen_before = token_seen(&seen, pg.next_token);
            if (seen_before > 0)
                r = err_set(e, -EPROTO,
                            "%s: the server sends a continuation token it sent "
                            "before (the listing would never end)",
                            what);
            else
                r = seen_before;
            free(token);
            token = TAKE_PTR(pg.next_token);
        }
        s3_list_page_free(&pg);
        if (r < 0)
            break;
        log_debug("listed page", "location=%s page=%u keys=%zu", what, page, out->n);
        if (!more)
            break;
    }
    free(seen.ids);
    return r;
}

static const struct source_ops s3_ops = {
    .list = s3_list,
    .stat = s3_stat,
    .get = s3_get,
    .free_impl = s3_free_impl,
};

/* Split "scheme://host[:port][/path]" into the authority and the path (no trailing '/'). */
static int parse_endpoint(const char *ep, char **scheme_host, char **host, char **path,
                          struct err *e)
{
    const char *p = strstr(ep, "://");
    if (!p || (strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8)))
        return err_set(e, -EINVAL, "endpoint '%.200s' must start with http:// or https://", ep);
    const char *h = p + 3;
    const char *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    if (hl == 0)
        return err_set(e, -EINVAL, "endpoint '%.200s' has no host", ep);
    *scheme_host = strndup(ep, (size_t)(h - ep) + hl);
    *host = strndup(h, hl);
    const char *pp = slash ? slash : "";
    size_t pl = strlen(pp);
    while (pl && pp[pl - 1] == '/')
        pl--;
    *path = strndup(pp, pl);
    if (!*scheme_host || !*host || !*path)
        return -ENOMEM;
    return 0;
}

int source_s3_open(struct source *s, const char *rest, char **key_out, struct err *e)
{
    struct s3 *s3 = calloc(1, sizeof(*s3));
    if (!s3)
        return -ENOMEM;
    s->impl = s3;
    s->ops = &s3_ops;
    const char *slash = strchr(rest, '/');
    s3->bucket = slash ? strndup(rest, (size_t)(slash - rest)) : strdup(rest);
    *key_out = strdup(slash ? slash + 1 : "");
    if (!s3->bucket || !*key_out)
        return -ENOMEM;
    int r = bucket_check(s3->bucket, e);
    if (r < 0)
        return err_prefix(e, "s3://%.200s", rest);

    const char *region = s->opt.region;
    if (!region)
        region = env_nonempty("AWS_REGION");
    if (!region)
        region = env_nonempty("AWS_DEFAULT_REGION");
    if (!region)
        region = DEFAULT_S3_REGION;
    for (const char *c = region; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-')
            return err_set(e, -EINVAL, "region '%.64s' is not a region name", region);
    s3->region = strdup(region);

    const char *ep = s->opt.endpoint;
    if (!ep)
        ep = env_nonempty("AWS_ENDPOINT_URL_S3");
    if (!ep)
        ep = env_nonempty("AWS_ENDPOINT_URL");
    if (ep) {
        _cleanup_free_ char *sh = NULL, *path = NULL;
        r = parse_endpoint(ep, &sh, &s3->host, &path, e);
        if (r < 0)
            return r;
        s3->custom_endpoint = true;
        s3->scope = url_strip_userinfo(sh); /* stored with identities: no credentials */
        if (asprintf(&s3->url_base, "%s%s/%s", sh, path, s3->bucket) < 0)
            s3->url_base = NULL;
    } else {
        bool dotted = strchr(s3->bucket, '.') != NULL;
        if (dotted) {
            if (asprintf(&s3->host, "s3.%s.amazonaws.com", s3->region) < 0)
                s3->host = NULL;
            else if (asprintf(&s3->url_base, "https://%s/%s", s3->host, s3->bucket) < 0)
                s3->url_base = NULL;
        } else {
            if (asprintf(&s3->host, "%s.s3.%s.amazonaws.com", s3->bucket, s3->region) < 0)
                s3->host = NULL;
            else if (asprintf(&s3->url_base, "https://%s", s3->host) < 0)
                s3->url_base = NULL;
        }
    }
    if (!ep) /* every AWS region computes ETags the same way */
        s3->scope = strdup("aws");
    if (!s3->region || !s3->host || !s3->url_base || !s3->scope)
        return -ENOMEM;
    if (asprintf(&s->root, "s3://%s/", s3->bucket) < 0) {
        s->root = NULL;
        return -ENOMEM;
    }
    if (!s->opt.anonymous && (r = s3_creds_load(&s3->creds, e)) < 0)
        return r;
    if (s->opt.anonymous)
        snprintf(s3->creds.origin, sizeof(s3->creds.origin), "none (anonymous)");
    r = httpc_new(s, false, &s3->http);
    if (r < 0)
        return r;
    log_debug("s3 source", "bucket=%s region=%s endpoint=%s credentials=%s", s3->bucket, s3->region,
              s3->url_base, s3->creds.origin);
    return 0;
}
