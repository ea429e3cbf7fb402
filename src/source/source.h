/*
 * source.h: where blobs come from. One interface over three kinds of source, so that the fetch
 * machine and the reference resolver never care which kind they talk to:
 *
 *   s3://bucket[/prefix]     S3 or an S3-compatible server: ListObjectsV2, HEAD, ranged GET,
 *                            AWS Signature V4 or anonymous (see s3.h for credentials/endpoints)
 *   dir:/path                a local folder laid out like a bucket (keys are relative paths)
 *   http://... https://...   plain HTTP(S): HEAD and GET (with Range where the server offers
 *                            it); no listing
 *   docker://HOST[:PORT]/REPO[:TAG|@DIGEST]
 *                            an OCI distribution registry (registry.h): manifests, blobs by
 *                            digest, the repository's tags as its listing
 *
 * A *source* is a root plus a base: the bucket and a key prefix, a directory, or a URL up to its
 * last '/'. A *key* is relative to the base. source_location() turns a key back into the full,
 * canonical location string ("s3://bucket/images/golang/3.tar"), which is what the database
 * stores (blob_sources.location) and what `thinimg` prints.
 *
 * Keys are untrusted (they come from listings and from the command line): every key passes
 * source_key_check() before use (no ".." or "." segment, no empty segment, no leading '/', no
 * control characters, at most SOURCE_KEY_MAX bytes). Keys of an http(s) source are URL text:
 * they are checked once more after percent-decoding ("%00", "%2e%2e" are refused). Location
 * roots are normalised: "dir:/a/b/../c" is "dir:/a/c", and an http(s) path has its dot
 * segments removed (RFC 3986); a ".." above the top is refused. A dir: source additionally opens
 * every key with openat2(RESOLVE_BENEATH), so neither ".." nor a symlink can leave its folder. Keys
 * never become local file names: blobs are stored under their digest.
 *
 * Threads: a struct source is used by one thread at a time (it reuses one connection). Open one
 * per thread; opening is cheap.
 *
 * Ownership: everything a function returns through an out-pointer is owned by the caller and
 * freed with the matching *_free(). Strings returned by accessors (source_root()) belong to the
 * source.
 *
 * Errors: 0 on success, a negative errno on failure, and the struct err says what failed, on
 * what, and what to do:
 *   -ENOENT   no such key / bucket / file            -EACCES  access denied (403)
 *   -ESTALE   If-Match failed: the object changed    -ERANGE  offset beyond the object
 *   -ETIMEDOUT the server stalled (after retries)    -EREMOTEIO server errors (after retries)
 *   -ECONNREFUSED/-EHOSTUNREACH network (after retries)
 *   -EILSEQ   invalid key                            -ENOTSUP operation not offered (listing
 *   -EPROTO   a response that makes no sense                   over plain HTTP)
 *   -ECANCELED the caller's cancel hook said stop    -EFBIG  over a limit
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* ---- limits and defaults (the one place; each with its reason) --------------------------- */

/* S3's own key limit is 1024 bytes of UTF-8; nothing legitimate is longer. */
#define SOURCE_KEY_MAX 1024
/* ETags are quoted hex MD5s ("...-N" for multipart): 64 bytes is generous. Longer is refused. */
#define SOURCE_ETAG_MAX 128
/* A listing bigger than this is not a bucket of images but a mistake (or hostile): stop.
 * Counts every key the server sends, accepted or skipped, so a server that sends only
 * invalid keys is stopped as soon as one that sends valid ones. */
#define SOURCE_LIST_MAX_KEYS 100000
/* Pages of one S3 listing: 100,000 keys are 100 full pages; a server that sends a few keys
 * per page (or none) forever is stopped here. */
#define SOURCE_LIST_MAX_PAGES 2000
/* Bytes of all the pages of one listing: 100 full pages of ~300 bytes per key are ~30 MiB. */
#define SOURCE_LIST_MAX_BYTES (256ULL * 1024 * 1024)
/* Wall time of one listing (all pages, retries included): a listing of 100,000 keys takes
 * seconds; a server that drips pages is cut here. */
#define SOURCE_LIST_TIMEOUT_MS (10 * 60 * 1000)
/* Skipped keys are reported as ONE warning (count + the first few reasons), so a listing of
 * 100,000 bad keys costs no more memory or log than one. */
#define SOURCE_LIST_SKIP_EXAMPLES 3
/* S3's maximum page size for ListObjectsV2. */
#define SOURCE_LIST_PAGE_KEYS 1000
/* dir: listing depth; deeper trees are skipped with a warning (hostile symlink-free recursion
 * still costs time). */
#define SOURCE_DIR_MAX_DEPTH 16
/* Error bodies (XML) are kept up to this size for the message; the rest is dropped. */
#define SOURCE_ERROR_BODY_MAX (64 * 1024)
/* Listing pages are XML of ~300 bytes per key: 1000 keys fit well under 4 MiB. */
#define SOURCE_LIST_BODY_MAX (4 * 1024 * 1024)

/* Network timeouts. Connecting to S3 takes milliseconds; 10 s means the host is unreachable.
 * A transfer slower than 1 KiB/s for 30 s is stalled (a healthy S3 GET never is), so it is cut
 * and retried from where it stopped. A whole listing page must arrive within 60 s. */
#define SOURCE_CONNECT_TIMEOUT_MS 10000
#define SOURCE_LOW_SPEED_BYTES    1024
#define SOURCE_LOW_SPEED_TIME_S   30
#define SOURCE_REQUEST_TIMEOUT_MS 60000 /* for small requests (list, HEAD); not for GET bodies */

/* Retries of one request (timeouts, connection errors, 5xx, 429, SlowDown): 6 attempts with
 * exponential backoff 250 ms x2 up to 8 s, +-30% jitter (about 16 s in all). A failure after
 * the body made progress does not count: the transfer resumes where it stopped. The fetch
 * machine retries whole downloads on top of this. */
#define SOURCE_RETRY_ATTEMPTS   6
#define SOURCE_RETRY_INITIAL_MS 250
#define SOURCE_RETRY_MAX_MS     8000
#define SOURCE_RETRY_JITTER     0.3
/* A failed attempt counts as progress (and resets the retry count) only when it delivered at
 * least this much: a server that trickles a few bytes per connection must not keep a transfer
 * alive forever (it still ends after SOURCE_RETRY_ATTEMPTS such attempts). */
#define SOURCE_RESUME_MIN_PROGRESS (1024 * 1024)

/* Receive buffer for GET bodies: large enough that the per-call overhead (hashing, write(2))
 * is amortised; curl's default 16 KiB costs measurable throughput on fast links. */
#define SOURCE_RECV_BUFFER (512 * 1024)

/* Parallel ranged GETs (the fetch machine, docs/sources.md "Parallel ranges"): an object of
 * at least SOURCE_STREAM_MIN_BYTES is fetched as up to SOURCE_DOWNLOAD_STREAMS concurrent
 * ranges written into one preallocated file, as s5cmd and the AWS CLI do: real S3 limits each
 * connection's throughput, not the client's. Below the threshold one GET costs less than
 * the extra requests. At most SOURCE_DOWNLOAD_STREAMS_MAX streams: more only adds requests. */
#define SOURCE_DOWNLOAD_STREAMS     4
#define SOURCE_DOWNLOAD_STREAMS_MAX 16
#define SOURCE_STREAM_MIN_BYTES     (64U << 20)
/* The other streams are opened only when they can help: a download starts with one
 * connection, and its rate over its first SOURCE_STREAM_PROBE_MS (from the first byte) decides.
 * At or above SOURCE_STREAM_SPLIT_RATE bytes/s (128 MiB/s: above what real S3 gives one
 * connection, ~90 MB/s, and what a 1 GbE link carries) one connection is as fast as the link
 * or the machine, and more streams only add requests, preallocation and a second read of the
 * file for the hash (loopback, fast LANs); below it the rest is split into ranges. 100 ms:
 * the probe's time is paid by every split download (bench/fetch-streams.sh shaped, medians of
 * 4: 5.83 s with 250 ms, 5.57 s with 100 ms), while loopback already shows 300-400 MB/s after
 * 100 ms even on a loaded machine; on a long path TCP may still be opening its window, which reads
 * as slow and splits: the streams help there too. */
#define SOURCE_STREAM_PROBE_MS   100
#define SOURCE_STREAM_SPLIT_RATE (128U << 20)

/* ---- types ------------------------------------------------------------------------------ */

enum source_kind { SOURCE_S3 = 1, SOURCE_DIR, SOURCE_HTTP, SOURCE_REGISTRY };
const char *source_kind_name(enum source_kind k); /* "s3", "dir", "http", "registry" */

/* Options for opening a source. Every field may be zero/NULL (= the default or environment). */
struct source_options {
    const char *region;   /* S3 region: --region > AWS_REGION > AWS_DEFAULT_REGION > default */
    const char *endpoint; /* S3 endpoint URL: --endpoint > AWS_ENDPOINT_URL_S3 >
                             AWS_ENDPOINT_URL > AWS (virtual-hosted style) */
    bool anonymous;       /* never sign, even when credentials are configured */
    /* Registry sources (registry.h): the platform chosen from an image index, OS/ARCH[/VARIANT]
     * (--platform > THINIMG_PLATFORM > the host's), and the registries spoken to over plain
     * HTTP, HOST[:PORT] separated by commas (--insecure-registry > THINIMG_INSECURE_REGISTRY;
     * every other registry is HTTPS with the certificate verified). */
    const char *platform;
    const char *insecure_registry;
    /* Overrides of the limits above (0 = the environment variable THINIMG_SOURCE_<NAME> in
     * upper case, e.g. THINIMG_SOURCE_LOW_SPEED_TIME_S, else the default). Tests shorten
     * them. */
    uint32_t connect_timeout_ms;
    uint32_t low_speed_time_s;
    uint32_t request_timeout_ms;
    uint32_t retry_attempts;
    uint32_t retry_initial_ms;
    uint32_t retry_max_ms;
    uint32_t list_timeout_ms;
    /* Parallel ranges (above): streams per object (1 = one GET; --download-streams, else
     * THINIMG_SOURCE_DOWNLOAD_STREAMS) and the size from which they are used
     * (THINIMG_SOURCE_STREAM_MIN_BYTES); 0 = the environment, else the default. */
    uint32_t download_streams;
    uint32_t stream_min_bytes;
    /* Cooperative cancel: checked during transfers and backoff sleeps; true = stop with
     * -ECANCELED. */
    bool (*cancelled)(void *ud);
    void *cancel_ud;
};

/* One object: key relative to the source base. */
struct source_object {
    char *key;
    uint64_t size;
    char *etag;       /* as the server sends it (quotes included), NULL when it sends none */
    int64_t mtime_ms; /* 0 when unknown */
    char *digest;     /* "sha256:<hex>" the bytes must have when the source names objects by
                         their digest (a registry blob), else NULL: the caller verifies it */
    /* What names this version of the object as its source reports it, filled by
     * source_stat() (never by a listing): two objects with the same identity have the same
     * bytes, wherever they are (another key, another folder), so a blob fetched under one
     * location is reused for another without a GET (docs/sources.md, "Identity reuse").
     * Text, one of
     *   "s3 SCOPE md5 ETAG SIZE" / "s3 SCOPE multipart ETAG SIZE"   (ETAG "...-N")
     *   "http ORIGIN ETAG SIZE"                    (a strong ETag only)
     *   "dir DEV INO SIZE MTIME_NS"
     * SCOPE is the server that computed the ETag ("aws", or the endpoint's scheme://host:port)
     * and ORIGIN the http(s) origin: an ETag means something only to the server that made it.
     * NULL when the source gives nothing strong enough (no or a weak ETag, a registry, whose
     * blobs are named by their digest). */
    char *identity;
};
void source_object_free(struct source_object *o);

/* A listing: objects sorted by key (bytewise), plus warnings (one line for all the keys
 * skipped as invalid, truncation). */
struct source_listing {
    struct source_object *items;
    size_t n, cap;
    char **warnings;
    size_t n_warnings;
    /* bookkeeping of the kinds (source_impl.h): keys seen, skipped, the first reasons */
    size_t n_seen, n_skipped;
    char *skip_examples[SOURCE_LIST_SKIP_EXAMPLES];
};
void source_listing_free(struct source_listing *l);

/* What a GET did. */
struct source_get_info {
    uint64_t size;                  /* the object's total size */
    uint64_t bytes;                 /* bytes delivered to the sink by this call */
    uint64_t bytes_received;        /* bytes received from the network (>= bytes if the
                                       server ignored Range and a prefix was skipped) */
    char etag[SOURCE_ETAG_MAX + 1]; /* "" when the server sent none */
    uint32_t attempts;              /* requests made (1 = no retry) */
    bool range_ignored;             /* the server sent the whole object for a ranged request */
};

/* Receives body bytes in order. Returns 0 to continue or a negative errno to stop the transfer
 * (returned by source_get()). */
typedef int (*source_sink_fn)(const void *data, size_t n, void *ud);

/* What the caller knows of the version it wants (from a HEAD or a listing). */
struct source_expect {
    const char *etag; /* If-Match: a strong ETag; NULL, "" or a weak one (W/"...") = none */
    bool has_size;
    uint64_t size; /* the object's size: a body that goes beyond it is an error (-EFBIG) */
    /* 0, or deliver only bytes [offset, end) (a range of a parallel download; s3, http and
     * dir): a server that answers with the whole object is -ENOTSUP (it ignores Range), one
     * that answers with another range -EPROTO. */
    uint64_t end;
};

struct source;

/* ---- life cycle ------------------------------------------------------------------------- */

/* Open the source a location belongs to and return the key it names inside it (may be "" or
 * end in '/', a prefix). Location forms: see the top of this file. A dir: location that names
 * a file opens its parent directory (the key is the file name); one that names a directory
 * opens it (key ""). s3://bucket/k opens the bucket (key "k"). http(s)://h/p/x opens
 * http(s)://h/p/ (key "x"). *key_out may be NULL. */
int source_open(const char *location, const struct source_options *o, struct source **out,
                char **key_out, struct err *e);
void source_free(struct source *s);
static inline void source_freep(struct source **s)
{
    if (*s)
        source_free(*s);
}
#define _cleanup_source_ __attribute__((cleanup(source_freep)))

enum source_kind source_kind(const struct source *s);
/* The canonical location of the base: "s3://bucket/prefix/", "dir:/abs/path/",
 * "https://host/p/". Always ends in '/'. */
const char *source_root(const struct source *s);
/* Full canonical location of key (malloc'd; NULL on ENOMEM). */
char *source_location(const struct source *s, const char *key);
/* What a listing shows for key: a registry's tag for its "manifests/TAG" key, the key itself
 * for every other key and kind (a pointer into key). */
const char *source_key_name(const struct source *s, const char *key);
/* The parallel ranges of an object of `size` bytes (above): how many streams to fetch it
 * with, 1 when it is below the threshold or the kind does not take ranges of several GETs
 * (registry, dir). */
uint32_t source_download_streams(const struct source *s, uint64_t size);
/* The probe window (THINIMG_SOURCE_STREAM_PROBE_MS) and the rate below which the download is
 * split (THINIMG_SOURCE_STREAM_SPLIT_RATE, bytes/s) of the streams policy above. */
uint32_t source_stream_probe_ms(const struct source *s);
uint32_t source_stream_split_rate(const struct source *s);

/* True when the kind can list (s3, dir, registry: its tags). */
bool source_can_list(const struct source *s);

/* ---- operations ------------------------------------------------------------------------- */

/* Every object whose key starts with prefix ("" = all), sorted by key. Keys that fail
 * source_key_check() are skipped and reported in out->warnings. -ENOTSUP for http. */
int source_list(struct source *s, const char *prefix, struct source_listing *out, struct err *e);

/* Size and ETag of one object. -ENOENT when it does not exist. */
int source_stat(struct source *s, const char *key, struct source_object *out, struct err *e);

/* Stream the object from byte `offset` to its end into sink. With if_match (an ETag as
 * returned by stat/list/get), the transfer fails with -ESTALE when the object is no longer
 * that version (checked by the server where it supports If-Match, and always against the
 * ETag of every response). Transient failures are retried; a failure after progress resumes
 * at the next byte with Range + If-Match on the ETag first seen, so the bytes delivered are
 * always one version of the object. offset == size delivers nothing and succeeds.
 * info may be NULL. */
int source_get(struct source *s, const char *key, uint64_t offset, const char *if_match,
               source_sink_fn sink, void *ud, struct source_get_info *info, struct err *e);
/* The same with what the caller knows of the object: its ETag (If-Match) and its size. With a
 * size, the transfer stops with -EFBIG as soon as the server sends more than the object's
 * size (a body that never ends, a Content-Length that disagrees), and a response that
 * announces another size is -ESTALE (another version).
 *
 * Resuming inside one call (after a cut) needs a strong validator: the strong ETag given or
 * first seen (If-Match), else the Last-Modified first seen (If-Unmodified-Since, and every
 * response's Last-Modified compared). Without one, a cut after progress is -ESTALE: the
 * bytes delivered cannot be proven to be one version, so the caller starts over. A server
 * that answers a ranged request with the whole object (200) has its prefix skipped only when
 * the validator proves the same version; otherwise -ESTALE too. */
int source_get_expect(struct source *s, const char *key, uint64_t offset,
                      const struct source_expect *x, source_sink_fn sink, void *ud,
                      struct source_get_info *info, struct err *e);
/* True for a strong ETag: present, non-empty and not weak (W/"..."). Only a strong ETag
 * proves two responses carry the same bytes. */
bool source_etag_is_strong(const char *etag);
/* The identity kind of an identity string ("s3", "http", "dir"), copied into out (at most
 * cap - 1 bytes); "" for NULL or a malformed one. */
void source_identity_kind(const char *identity, char *out, size_t cap);

/* ---- keys and locations ----------------------------------------------------------------- */

/* 0 when key is acceptable (see the top of this file), else -EILSEQ with the reason in e.
 * allow_prefix accepts "" and a trailing '/'. */
int source_key_check(const char *key, bool allow_prefix, struct err *e);

/* True when the string looks like a full location (has a known scheme), false for a key
 * relative to the default source. */
bool source_is_location(const char *s);

/* The deepest image we accept by default. OCI images rarely exceed 127 layers (overlay's old
 * limit); each layer here is one thin device, one ext4 and one unpack run. 256 leaves room.
 * THINIMG_SOURCE_MAX_LAYERS raises it (a larger value is clamped to the ceiling: 4096 layers
 * are 4096 thin devices and runs for one image, far past anything built in practice). */
#define SOURCE_MAX_LAYERS         256
#define SOURCE_MAX_LAYERS_CEILING 4096

/* The layer limit in force: THINIMG_SOURCE_MAX_LAYERS (a positive decimal, clamped to
 * SOURCE_MAX_LAYERS_CEILING; anything else is ignored), else SOURCE_MAX_LAYERS. */
unsigned source_max_layers(void);
