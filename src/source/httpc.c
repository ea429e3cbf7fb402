/*
 * httpc.c: the libcurl engine under the s3 and http sources: timeouts, retries with backoff,
 * streaming GET with resume and ETag checks. See httpc.h for the contract.
 */
#include "source/httpc.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "source/curl_lib.h"
#include "source/source_impl.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/timeutil.h"
#include "util/version.h"

/* A transfer that keeps making progress may fail more often than the retry budget (each
 * failure after progress resets the count), but never more than this many times in all: a
 * server that cuts every response after one byte must not keep us forever. */
#define HTTPC_MAX_ATTEMPTS_FACTOR 10
/* Backoff sleeps wake this often to check the cancel hook. */
#define HTTPC_SLEEP_SLICE_MS 50
/* At most this many redirects for http(s) sources (never for S3: a redirect there means the
 * wrong region and is reported). */
#define HTTPC_MAX_REDIRECTS 5

struct httpc {
    CURL *curl;
    const struct source *src;
    bool follow;
    unsigned int seed; /* jitter */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int httpc_new(const struct source *s, bool follow_redirects, struct httpc **out)
{
    int r = curl_lib_load(NULL); /* source_open() loaded it and reported a failure */
    if (r < 0)
        return r;
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return -EIO;
    struct httpc *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->curl = curl_easy_init();
    if (!h->curl) {
        free(h);
        return -ENOMEM;
    }
    h->src = s;
    h->follow = follow_redirects;
    h->seed = (unsigned int)(mono_ms() ^ (int64_t)(uintptr_t)h);
    *out = h;
    return 0;
}

void httpc_free(struct httpc *h)
{
    if (!h)
        return;
    curl_easy_cleanup(h->curl);
    free(h);
}

void httpc_resp_free(struct httpc_resp *r)
{
    if (r)
        buf_free(&r->body);
}

struct httpc_req httpc_req_object_head(const char *url, const char *what)
{
    return (struct httpc_req){.method = "HEAD",
                              .url = url,
                              .what = what,
                              .small = true,
                              .max_body = SOURCE_ERROR_BODY_MAX};
}

struct httpc_req httpc_req_object_get(const char *url, const char *what, uint64_t offset,
                                      const struct source_expect *x, source_sink_fn sink, void *ud)
{
    return (struct httpc_req){.method = "GET",
                              .url = url,
                              .what = what,
                              .offset = offset,
                              .if_match = x->etag,
                              .has_size = x->has_size,
                              .size = x->size,
                              .end = x->end,
                              .sink = sink,
                              .sink_ud = ud,
                              .max_body = SOURCE_ERROR_BODY_MAX};
}

int httpc_resp_object(const struct httpc_resp *resp, const char *key, const char *what,
                      struct source_object *out, struct err *e)
{
    if (!resp->has_length)
        return err_set(e, -EPROTO, "%s: the server does not tell the size (no Content-Length)",
                       what);
    out->key = strdup(key);
    out->size = resp->content_length;
    out->etag = resp->etag[0] ? strdup(resp->etag) : NULL;
    out->mtime_ms = resp->last_modified_ms;
    if (!out->key || (resp->etag[0] && !out->etag))
        return -ENOMEM;
    return 0;
}

bool httpc_resp_get_info(const struct httpc_resp *resp, uint64_t offset,
                         struct source_get_info *info)
{
    info->bytes = resp->delivered;
    info->bytes_received = resp->received;
    info->attempts = resp->attempts;
    info->range_ignored = resp->range_ignored;
    snprintf(info->etag, sizeof(info->etag), "%s", resp->etag);
    if (resp->status == 416 && resp->has_total && resp->total == offset) {
        info->size = offset; /* nothing left to read */
        return true;
    }
    if (resp->status == 200 || resp->status == 206) {
        info->size = resp->has_total ? resp->total : offset + resp->delivered;
        return true;
    }
    return false;
}

bool httpc_status_retryable(long status)
{
    return status == 429 || (status >= 500 && status <= 599);
}

int httpc_uri_encode(struct buf *b, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        int r;
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/'))
            r = buf_append(b, p, 1);
        else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            r = buf_append(b, esc, 3);
        }
        if (r < 0)
            return r;
    }
    if (!b->data) /* "" still yields a valid string */
        return buf_append(b, "", 0);
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int httpc_uri_decode(const char *s, char **out)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (!d)
        return -ENOMEM;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 1 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) { /* %00 would cut the string */
                free(d);
                return -EILSEQ;
            }
            d[j++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            /* S3's encoding-type=url writes a space as '+' (form encoding). */
            d[j++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    d[j] = '\0';
    *out = d;
    return 0;
}

/* ---- one transfer ------------------------------------------------------------------------ */

struct xfer {
    struct httpc *h;
    const struct httpc_req *req;
    struct httpc_resp *resp;
    char *expected_etag;  /* buffer of SOURCE_ETAG_MAX + 1; "" = none yet (strong only) */
    int64_t *expected_lm; /* Last-Modified (ms) first seen, used when there is no strong ETag;
                             0 = none */
    bool validated;       /* this attempt was sent with a validator to compare against */
    uint64_t want_offset; /* first byte asked for in this attempt */
    uint64_t skip;        /* bytes to drop (server ignored Range) */
    uint64_t progress;    /* bytes delivered in this attempt */
    bool started;         /* status checks done for this response */
    bool deliver;         /* 2xx GET into the sink */
    int fail;             /* our own reason to abort the transfer */
    char fail_msg[256];
};

static void trim(const char **v, size_t *n)
{
    while (*n && isspace((unsigned char)**v)) {
        (*v)++;
        (*n)--;
    }
    while (*n && isspace((unsigned char)(*v)[*n - 1]))
        (*n)--;
}

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    struct httpc_resp *r = x->resp;
    size_t n = size * nmemb;
    if (n >= 5 && !strncmp(data, "HTTP/", 5)) {
        /* A new response (after a redirect or 100-continue): forget the previous headers. */
        r->etag[0] = '\0';
        r->has_length = r->has_range = r->has_total = false;
        r->content_type[0] = '\0';
        r->bucket_region[0] = '\0';
        r->www_authenticate[0] = r->link[0] = r->content_digest[0] = '\0';
        r->last_modified_ms = 0;
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (!colon)
        return n;
    size_t klen = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vlen = n - klen - 1;
    trim(&v, &vlen);
#define IS(name) (klen == sizeof(name) - 1 && !strncasecmp(data, name, klen))
    if (IS("etag")) {
        if (vlen > SOURCE_ETAG_MAX) {
            /* Not an ETag we can trust to compare; treat as absent. */
            r->etag[0] = '\0';
        } else {
            copy_value(r->etag, sizeof(r->etag), v, vlen);
            for (char *p = r->etag; *p; p++)
                if ((unsigned char)*p < 0x20)
                    *p = '?';
        }
    } else if (IS("content-length")) {
        r->has_length = parse_u64(v, vlen, &r->content_length);
    } else if (IS("content-range")) {
        /* "bytes START-END/TOTAL", or "bytes *" + "/TOTAL" on a 416 */
        if (vlen > 6 && !strncasecmp(v, "bytes ", 6)) {
            const char *p = v + 6, *end = v + vlen;
            const char *slash = memchr(p, '/', (size_t)(end - p));
            if (slash) {
                uint64_t total;
                if (parse_u64(slash + 1, (size_t)(end - slash - 1), &total)) {
                    r->range_total = total;
                    const char *dash = memchr(p, '-', (size_t)(slash - p));
                    uint64_t start = 0;
                    uint64_t last = 0;
                    r->has_range = dash && parse_u64(p, (size_t)(dash - p), &start) &&
                                   parse_u64(dash + 1, (size_t)(slash - dash - 1), &last);
                    r->range_start = start;
                    r->range_last = last;
                    r->has_total = true;
                    r->total = total;
                }
            }
        }
    } else if (IS("content-type")) {
        copy_value(r->content_type, sizeof(r->content_type), v, vlen);
    } else if (IS("www-authenticate")) {
        copy_value(r->www_authenticate, sizeof(r->www_authenticate), v, vlen);
    } else if (IS("link")) {
        copy_value(r->link, sizeof(r->link), v, vlen);
    } else if (IS("docker-content-digest")) {
        copy_value(r->content_digest, sizeof(r->content_digest), v, vlen);
    } else if (IS("x-amz-bucket-region")) {
        copy_value(r->bucket_region, sizeof(r->bucket_region), v, vlen);
    } else if (IS("last-modified")) {
        char tmp[64];
        copy_value(tmp, sizeof(tmp), v, vlen);
        time_t t = curl_getdate(tmp, NULL);
        if (t > 0)
            r->last_modified_ms = (int64_t)t * 1000;
    }
#undef IS
    return n;
}

static void xfer_fail(struct xfer *x, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void xfer_fail(struct xfer *x, int code, const char *fmt, ...)
{
    x->fail = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->fail_msg, sizeof(x->fail_msg), fmt, ap);
    va_end(ap);
}

/* Checks on the first body byte (or at the end for an empty body) of a response. Returns
 * false when the transfer must stop (x->fail set). */
static bool xfer_start(struct xfer *x)
{
    struct httpc_resp *r = x->resp;
    x->started = true;
    long status = 0;
    curl_easy_getinfo(x->h->curl, CURLINFO_RESPONSE_CODE, &status);
    r->status = status;
    bool is_get = !strcmp(x->req->method, "GET");
    x->deliver = is_get && status >= 200 && status <= 299 && x->req->sink;
    if (status < 200 || status > 299)
        return true;
    if (!r->has_range && r->has_length && status == 200) {
        r->has_total = true;
        r->total = r->content_length;
    }
    if (!is_get)
        return true;
    /* One version of the object only: every response's validator must be the expected one:
     * the strong ETag, else the Last-Modified. A weak ETag (W/"...") is no validator.
     * Content-addressed bytes need none (httpc.h: immutable). */
    if (x->req->immutable) {
        /* nothing to compare */
    } else if (x->expected_etag[0]) {
        if (!r->etag[0] || strcmp(r->etag, x->expected_etag) != 0) {
            xfer_fail(x, -ESTALE, "the object changed: ETag %s, expected %s",
                      r->etag[0] ? r->etag : "(none)", x->expected_etag);
            return false;
        }
    } else if (*x->expected_lm) {
        /* Once the version is pinned by Last-Modified, it stays the validator (an ETag that
         * appears later proves nothing about the bytes already delivered). */
        if (r->last_modified_ms != *x->expected_lm) {
            xfer_fail(x, -ESTALE,
                      "the object changed: Last-Modified differs from the first "
                      "response's (the server gives no strong ETag)");
            return false;
        }
    } else if (source_etag_is_strong(r->etag)) {
        /* First response (without a validator no attempt follows one that delivered). */
        strcpy(x->expected_etag, r->etag);
    } else {
        *x->expected_lm = r->last_modified_ms;
    }
    if (x->req->has_size && r->has_total && r->total != x->req->size) {
        xfer_fail(x, -ESTALE,
                  "the object changed: the server announces %" PRIu64 " bytes, expected %" PRIu64,
                  r->total, x->req->size);
        return false;
    }
    if (status == 206) {
        if (!r->has_range || r->range_start != x->want_offset ||
            (x->req->end && r->range_last + 1 != x->req->end)) {
            xfer_fail(x, -EPROTO,
                      "the server answered a request for bytes %" PRIu64
                      "- with a different range (Content-Range %" PRIu64 "-%" PRIu64 ")",
                      x->want_offset, r->range_start, r->range_last);
            return false;
        }
    } else if (x->req->end) {
        /* A part of the object was asked for (parallel ranges) and the whole came. */
        xfer_fail(x, -ENOTSUP,
                  "the server ignores Range (%ld to a request for bytes %" PRIu64 "-%" PRIu64 ")",
                  status, x->want_offset, x->req->end - 1);
        return false;
    } else if (x->want_offset > 0) {
        /* Range ignored: the whole object comes. Drop what we already have, but only when the
         * validator proves it is the same version as those bytes. */
        if (!x->validated && !x->req->immutable) {
            xfer_fail(x, -ESTALE,
                      "the server ignored Range (200 to a request for bytes %" PRIu64
                      "-) and gives no validator proving the same version; starting over",
                      x->want_offset);
            return false;
        }
        x->skip = x->want_offset;
        r->range_ignored = true;
    }
    return true;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    struct httpc_resp *r = x->resp;
    size_t n = size * nmemb;
    if (!x->started && !xfer_start(x))
        return CURL_WRITEFUNC_ERROR;
    if (!x->deliver) {
        size_t room = x->req->max_body > r->body.len ? x->req->max_body - r->body.len : 0;
        size_t take = n < room ? n : room;
        if (take < n)
            r->body_truncated = true;
        if (take && buf_append(&r->body, data, take) < 0) {
            xfer_fail(x, -ENOMEM, "out of memory");
            return CURL_WRITEFUNC_ERROR;
        }
        if (r->status >= 200 && r->status <= 299 && take < n) {
            xfer_fail(x, -EFBIG, "response body larger than %zu bytes", x->req->max_body);
            return CURL_WRITEFUNC_ERROR;
        }
        return n;
    }
    r->received += n;
    const char *p = data;
    size_t m = n;
    if (x->skip) {
        size_t s = x->skip < m ? (size_t)x->skip : m;
        x->skip -= s;
        p += s;
        m -= s;
    }
    if (m) {
        /* Never more than the object: the size the caller knows, else the one announced. */
        uint64_t end = x->req->offset + r->delivered + m;
        bool bounded = x->req->has_size || r->has_total;
        uint64_t limit = x->req->end ? x->req->end : x->req->has_size ? x->req->size : r->total;
        bounded = bounded || x->req->end;
        if (bounded && end > limit) {
            xfer_fail(x, -EFBIG,
                      "the server sent more than the object's %" PRIu64 " bytes "
                      "(announced by %s); the rest is refused",
                      limit, x->req->has_size ? "the listing or HEAD" : "the response");
            return CURL_WRITEFUNC_ERROR;
        }
        int rc = x->req->sink(p, m, x->req->sink_ud);
        if (rc < 0) {
            xfer_fail(x, rc, "%s", "");
            return CURL_WRITEFUNC_ERROR;
        }
        r->delivered += m;
        x->progress += m;
    }
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    struct xfer *x = ud;
    return source_opt_cancelled(x->h->src) ? 1 : 0;
}

/* Transport errors: the errno to report, and whether another attempt may help. */
static int curl_errno(CURLcode rc, bool *retry)
{
    *retry = true;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return -ECONNRESET;
    default:
        break;
    }
    *retry = false;
    switch (rc) {
    case CURLE_ABORTED_BY_CALLBACK:
        return -ECANCELED;
    case CURLE_URL_MALFORMAT:
        return -EINVAL;
    case CURLE_UNSUPPORTED_PROTOCOL:
        return -EPROTONOSUPPORT;
    case CURLE_TOO_MANY_REDIRECTS:
        return -ELOOP;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        return -EPROTO;
    default:
        return -EIO;
    }
}

static int sleep_backoff(struct httpc *h, uint32_t ms)
{
    int64_t end = mono_ms() + ms;
    for (;;) {
        if (source_opt_cancelled(h->src))
            return -ECANCELED;
        int64_t left = end - mono_ms();
        if (left <= 0)
            return 0;
        sleep_ms(left < HTTPC_SLEEP_SLICE_MS ? left : HTTPC_SLEEP_SLICE_MS);
    }
}

static uint32_t jittered(struct httpc *h, uint32_t ms)
{
    double f = 1.0 + SOURCE_RETRY_JITTER * (2.0 * rand_r(&h->seed) / (double)RAND_MAX - 1.0);
    double v = ms * f;
    return v < 1 ? 1 : (uint32_t)v;
}

static void curl_slist_freep(struct curl_slist **l)
{
    if (*l)
        curl_slist_free_all(*l);
}

static int add_header(struct curl_slist **l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int add_header(struct curl_slist **l, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        return -E2BIG;
    struct curl_slist *t = curl_slist_append(*l, line);
    if (!t)
        return -ENOMEM;
    *l = t;
    return 0;
}

/* Set the options of one attempt. */
static int setup(struct httpc *h, struct xfer *x, struct curl_slist **hdrs, char *errbuf,
                 struct err *e)
{
    const struct httpc_req *req = x->req;
    CURL *c = h->curl;
    const struct source *s = h->src;
    bool is_head = !strcmp(req->method, "HEAD");
    char range[64] = "";
    if (!is_head && req->end)
        snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, x->want_offset, req->end - 1);
    else if (!is_head && x->want_offset > 0)
        snprintf(range, sizeof(range), "bytes=%" PRIu64 "-", x->want_offset);
    int r;
    if (range[0] && (r = add_header(hdrs, "Range: %s", range)) < 0)
        return r;
    x->validated = !is_head && (x->expected_etag[0] || *x->expected_lm);
    if (x->expected_etag[0] && !is_head &&
        (r = add_header(hdrs, "If-Match: %s", x->expected_etag)) < 0)
        return r;
    if (!x->expected_etag[0] && *x->expected_lm && range[0]) {
        char date[64];
        time_t t = (time_t)(*x->expected_lm / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if ((r = add_header(hdrs, "If-Unmodified-Since: %s", date)) < 0)
            return r;
    }
    if (req->sign && (r = req->sign(req->sign_ud, req->method, req->url, range, hdrs, e)) < 0)
        return r;

    curl_easy_reset(c);
    errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "thinimg/" THINIMG_VERSION);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
    if (is_head)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, h->follow ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, (long)HTTPC_MAX_REDIRECTS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)source_opt_connect_timeout_ms(s));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, (long)SOURCE_LOW_SPEED_BYTES);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)source_opt_low_speed_time_s(s));
    if (req->small)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)source_opt_request_timeout_ms(s));
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, (long)SOURCE_RECV_BUFFER);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
    return 0;
}

int httpc_perform(struct httpc *h, const struct httpc_req *req, struct httpc_resp *resp,
                  struct err *e)
{
    *resp = (struct httpc_resp){0};
    char expected[SOURCE_ETAG_MAX + 1] = "";
    int64_t expected_lm = 0;
    if (req->if_match && source_etag_is_strong(req->if_match) && !req->immutable) {
        if (strlen(req->if_match) > SOURCE_ETAG_MAX)
            return err_set(e, -EINVAL, "%s: If-Match value too long", req->what);
        strcpy(expected, req->if_match);
    }
    const uint32_t max_fail = source_opt_retry_attempts(h->src);
    const uint32_t max_total = max_fail * HTTPC_MAX_ATTEMPTS_FACTOR;
    uint32_t failures = 0;
    uint32_t backoff = source_opt_retry_initial_ms(h->src);
    const uint32_t backoff_max = source_opt_retry_max_ms(h->src);

    for (;;) {
        struct xfer x = {.h = h,
                         .req = req,
                         .resp = resp,
                         .expected_etag = expected,
                         .expected_lm = &expected_lm,
                         .want_offset = req->offset + resp->delivered};
        _cleanup_(curl_slist_freep) struct curl_slist *hdrs = NULL;
        char errbuf[CURL_ERROR_SIZE];
        resp->attempts++;
        resp->status = 0;
        buf_reset(&resp->body);
        resp->body_truncated = false;
        int r = setup(h, &x, &hdrs, errbuf, e);
        if (r < 0)
            return r;
        CURLcode rc = curl_easy_perform(h->curl);
        long status = 0;
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);

        int err = 0;
        bool retry = false;
        char why[320];
        if (rc == CURLE_OK && !x.started)
            xfer_start(&x); /* empty body: run the same checks */
        if (x.fail) {
            if (x.fail_msg[0])
                return err_set(e, x.fail, "%s: %s", req->what, x.fail_msg);
            return x.fail; /* the sink's own error; it filled e if it wanted to */
        }
        if (rc == CURLE_OK) {
            resp->status = status;
            if (httpc_status_retryable(status)) {
                retry = true;
                err = -EREMOTEIO;
                snprintf(why, sizeof(why), "HTTP %ld", status);
            } else if (x.deliver && (req->end || resp->has_total) &&
                       req->offset + resp->delivered < (req->end ? req->end : resp->total)) {
                retry = true;
                err = -ECONNRESET;
                snprintf(why, sizeof(why), "short body (%" PRIu64 " of %" PRIu64 " bytes)",
                         req->offset + resp->delivered, req->end ? req->end : resp->total);
            } else {
                return 0;
            }
        } else {
            err = curl_errno(rc, &retry);
            snprintf(why, sizeof(why), "%s%s%s", curl_easy_strerror(rc), errbuf[0] ? ": " : "",
                     errbuf);
            if (!retry)
                return err_set(e, err, "%s: %s", req->what, why);
        }
        if (resp->delivered > 0 && !expected[0] && !expected_lm && !req->immutable)
            return err_set(e, -ESTALE,
                           "%s: %s after %" PRIu64 " bytes, and the server gives "
                           "no strong validator (ETag or Last-Modified) to resume safely; "
                           "starting over",
                           req->what, why, req->offset + resp->delivered);
        if (x.progress >= SOURCE_RESUME_MIN_PROGRESS) {
            failures = 0;
            backoff = source_opt_retry_initial_ms(h->src);
        }
        failures++;
        if (failures >= max_fail || resp->attempts >= max_total) {
            if (rc == CURLE_OK && httpc_status_retryable(status))
                return 0; /* the caller reports the status with its context */
            bool unreachable = err == -ECONNREFUSED || err == -EHOSTUNREACH;
            const char *hint =
                unreachable && h->src->kind == SOURCE_S3
                    ? "; is the server up and the address right? For S3 the address is "
                      "--endpoint or AWS_ENDPOINT_URL_S3"
                : (unreachable || rc == CURLE_SSL_CONNECT_ERROR) && h->src->kind == SOURCE_REGISTRY
                    ? "; is the server up and the address right? A registry on plain HTTP "
                      "needs --insecure-registry HOST[:PORT]"
                : unreachable ? "; is the server up and the address right?"
                              : "";
            return err_set(e, err, "%s: %s (gave up after %u attempts%s)", req->what, why,
                           resp->attempts, hint);
        }
        /* One line for the operator per request, not one per attempt: the first retry says
         * what failed; the others are for -v. */
        log_write(resp->attempts <= 1 ? LOG_LVL_WARN : LOG_LVL_DEBUG, "request failed, retrying",
                  "location=%s error=%s attempt=%u delay_ms=%u resume_at=%" PRIu64
                  " max_attempts=%u",
                  req->what, why, resp->attempts, backoff, req->offset + resp->delivered, max_fail);
        r = sleep_backoff(h, jittered(h, backoff));
        if (r < 0)
            return err_set(e, r, "%s: cancelled", req->what);
        backoff = backoff * 2 > backoff_max ? backoff_max : backoff * 2;
    }
}
