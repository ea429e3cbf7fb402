/*
 * httpc.h: the HTTP engine under the s3 and http sources (libcurl). Private to src/source/.
 *
 * One struct httpc wraps one curl easy handle (so connections are reused between requests of
 * the same source) and does what both kinds need:
 *  - timeouts: connect timeout, a low-speed limit (a stalled server is cut), a total timeout
 *    for small requests;
 *  - retries with exponential backoff and jitter on transport errors (timeouts, refused or
 *    reset connections, short bodies), 5xx and 429;
 *  - streaming GET into a sink with resume: a transfer that fails after making progress
 *    continues at the next byte with Range and a strong validator: If-Match on the strong
 *    ETag given or first seen, else If-Unmodified-Since on the first Last-Modified; every
 *    response's validator is compared with the expected one (servers that ignore the
 *    condition cannot slip a different version in). Without a validator a cut after progress
 *    is -ESTALE (the caller starts over): bytes of two versions are never joined;
 *  - ranged requests on servers that ignore Range (200 instead of 206): the prefix is skipped
 *    when the validator proves the same version, else -ESTALE;
 *  - bounded bodies: never more than the object's size (known by the caller, or announced by
 *    the response) is delivered: more is -EFBIG.
 *
 * A request is signed (S3) by a hook called before every attempt, since the signature
 * carries the time.
 *
 * httpc_perform() returns 0 when an HTTP response was received, whatever its status (a 4xx,
 * or a 5xx/429 that stayed after the last retry): the caller turns statuses into errors with
 * its own context. It returns a negative errno for what has no status: transport failures
 * after the last retry (-ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -ECONNRESET), -ESTALE (the
 * ETag changed), -EPROTO (nonsense such as a wrong Content-Range), -ECANCELED, or the sink's
 * own error.
 */
#pragma once

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "source/source.h"
#include "util/buf.h"

struct httpc;

int httpc_new(const struct source *s, bool follow_redirects, struct httpc **out);
void httpc_free(struct httpc *h);

/* Called before each attempt to add headers (e.g. the SigV4 Authorization). range is the
 * Range header value that will be sent ("" for none). */
typedef int (*httpc_sign_fn)(void *ud, const char *method, const char *url, const char *range,
                             struct curl_slist **headers, struct err *e);

struct httpc_req {
    const char *method; /* "GET" or "HEAD" */
    const char *url;
    const char *what;     /* the location, for messages */
    uint64_t offset;      /* GET from this byte (sends Range when > 0) */
    uint64_t end;         /* 0, or GET bytes [offset, end) only: Range bytes=offset-(end-1),
                             answered by exactly that 206 (a 200 is -ENOTSUP: the server
                             ignores Range; another range -EPROTO) */
    const char *if_match; /* a strong ETag, or NULL */
    bool has_size;        /* the object's size is known (HEAD, listing): a GET body stops */
    uint64_t size;        /* with -EFBIG past it, and another announced size is -ESTALE */
    source_sink_fn sink;  /* 2xx body; NULL = buffer it in resp->body up to max_body */
    void *sink_ud;
    size_t max_body; /* for buffered bodies (2xx without sink, and every error body) */
    bool small;      /* apply the total request timeout */
    httpc_sign_fn sign;
    void *sign_ud;
    /* Content-addressed (a registry blob named by its digest): the bytes cannot change, and
     * the caller verifies their digest, so a transfer resumes (and a 200 to a ranged request
     * has its prefix skipped) without a validator; If-Match is never sent and the ETags of the
     * responses are not compared (a redirect to blob storage brings that store's ETag). */
    bool immutable;
};

/* Header values kept for the registry source: longer ones are cut (and so fail to parse). */
#define HTTPC_HEADER_VALUE_MAX 2048

struct httpc_resp {
    long status;
    char etag[SOURCE_ETAG_MAX + 1]; /* "" when absent */
    bool has_length;
    uint64_t content_length;
    bool has_range; /* Content-Range present */
    uint64_t range_start, range_total;
    uint64_t range_last; /* the last byte of the Content-Range */
    bool has_total;      /* object size known (length of a 200, or range total) */
    uint64_t total;
    int64_t last_modified_ms;
    char bucket_region[64]; /* x-amz-bucket-region */
    char content_type[128];
    char www_authenticate[HTTPC_HEADER_VALUE_MAX]; /* the auth challenge of a 401 */
    char link[HTTPC_HEADER_VALUE_MAX];             /* Link (pagination of a registry's tags) */
    char content_digest[128];                      /* Docker-Content-Digest */
    struct buf body;                               /* buffered body (see max_body) */
    bool body_truncated;
    /* GET accounting */
    uint64_t delivered; /* bytes handed to the sink */
    uint64_t received;  /* body bytes received (all attempts) */
    uint32_t attempts;
    bool range_ignored;
};

void httpc_resp_free(struct httpc_resp *r);

int httpc_perform(struct httpc *h, const struct httpc_req *req, struct httpc_resp *resp,
                  struct err *e);

/* The requests of a kind's stat and get ops on one object at url (what: its location, for
 * messages), whose answers httpc_resp_object() and httpc_resp_get_info() read: a HEAD (small,
 * an error body kept for the message), and a GET from offset with the checks x asks for
 * (If-Match on its ETag, the size, the end of a range) and its body to sink. The kind adds
 * what is its own (a signing hook). */
struct httpc_req httpc_req_object_head(const char *url, const char *what);
struct httpc_req httpc_req_object_get(const char *url, const char *what, uint64_t offset,
                                      const struct source_expect *x, source_sink_fn sink, void *ud);

/* After a HEAD that answered 200: the object (key copied). -EPROTO without Content-Length. */
int httpc_resp_object(const struct httpc_resp *resp, const char *key, const char *what,
                      struct source_object *out, struct err *e);
/* After a GET: fill info; true when the status means success (200, 206, or a 416 that says
 * the offset is exactly the end). */
bool httpc_resp_get_info(const struct httpc_resp *resp, uint64_t offset,
                         struct source_get_info *info);

/* True for statuses worth retrying: 5xx, 429 (and S3's 503 SlowDown). */
bool httpc_status_retryable(long status);

/* RFC 3986 percent-encoding as SigV4 wants it: unreserved A-Z a-z 0-9 - _ . ~ kept, and '/'
 * kept when keep_slash. Appends to b. */
int httpc_uri_encode(struct buf *b, const char *s, bool keep_slash);
/* Decode %XX sequences (for encoding-type=url listings). -EILSEQ on a malformed escape and
 * on %00 (a NUL would cut the decoded string: "2.tar%00.evil" must not become "2.tar"). */
int httpc_uri_decode(const char *s, char **out);
