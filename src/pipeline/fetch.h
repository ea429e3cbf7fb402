/*
 * fetch.h: the fetch machine: one durable FSM run per blob location, that brings the blob into
 * the local store (<state>/blobs/sha256/<hex>), proves it is an image layer (or an archive of
 * layers) and records it.
 *
 *   machine  type "fetch", action "fetch-blob", queue "fetch" (DEFAULT_FETCH_QUEUE_LIMIT)
 *   resource the blob's canonical location ("s3://bucket/images/golang/3.tar")
 *   request  JSON {"location", "etag" (optional), "size" (optional)}: fetch_request_build()
 *   response JSON: fetch_response_parse() gives a struct fetch_result (both: fetch_json.h)
 *
 *   check-exists  reality check: the location was fetched before with the same ETag, its
 *                 blob file is present and passes the integrity rule (store/blobfile.h: one
 *                 stat against the seal recorded when it was written, a hash when that
 *                 differs; a mismatch is quarantined and fetched again), and for an archive
 *                 its layer blobs too -> handoff, nothing to do.
 *   download      HEAD; an object whose identity (source.h) was recorded for a stored blob
 *                 that passes the integrity rule reuses it with no GET (a layer: handoff,
 *                 the record written in the checkpoint). Else stream to
 *                 <state>/tmp/fetch-<hash of location>.part while hashing; resume at the
 *                 byte (same boot: the file's length; after a reboot: the length recorded in
 *                 `downloads` after an fdatasync) with Range + If-Match <etag>, or start over
 *                 when the ETag changed; fsync; rename to blobs/sha256/<hex of the digest>
 *                 (never a name from the key: identical bytes under two keys are stored once,
 *                 the existing file kept only if it passes the integrity rule), read-only and
 *                 sealed. First the free space is checked (blob + FETCH_SPACE_MARGIN_BYTES); a
 *                 full disk (before or during the transfer) fails the run at once, "not enough
 *                 space: ...", with the partial file removed: never retried.
 *   validate      detect the format by content; a layer (tar, tar+gzip, tar+zstd) is scanned
 *                 against the archive policy without writing anything; a docker-archive or
 *                 OCI layout is split into its layer blobs (each stored by digest and
 *                 scanned). Anything else is rejected (kind "rejected"): "... is not an image
 *                 layer: ...".
 *   record        in the checkpoint transaction: blobs rows, the blob_identities row (the
 *                 object's identity -> the digest), the blob_sources row of the
 *                 location, and the end of the `downloads` row.
 *
 * A partial download is protected by an flock on its temp file, so two runs (threads or
 * processes) never write the same file; the loser retries later.
 *
 * Errors: failed runs end ABORT (permanent: not found, access denied, invalid key, rejected
 * content, too large, no space) or with the retry policy's on_exhausted outcome (network).
 * Each failure carries its kind (util/err.h) with the run: "rejected" for content that is not
 * acceptable (exit code EXIT_REJECTED), "unhealthy" for a full disk, the source's own kind for
 * the rest; callers read the kind, never the message.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive/archive.h"
#include "archive/limits.h"
#include "fsm/fsm.h"
#include "source/source.h"
#include "pipeline/fetch_credentials.h"
#include "pipeline/fetch_json.h"
#include "store/blobfile.h"
#include "util/hash.h"

#define FETCH_MACHINE_TYPE   "fetch"
#define FETCH_MACHINE_ACTION "fetch-blob"
#define FETCH_QUEUE          "fetch"
/* A download that does not fit: not retried (the disk stays full until someone acts). */
#define FETCH_NO_SPACE_PREFIX "not enough space: "

/* ---- limits and policies (the one place) ---------------------------------------------------
 * Blob size: the archive policy's max_blob_bytes (ARCHIVE_DEFAULT_MAX_BLOB_BYTES, 8 GiB), checked
 * against the listed size before a byte is read and again while streaming.
 *
 * download: 8 attempts, 1 s growing x2 up to 60 s (about 4 minutes of backoff), each attempt
 *   at most 2 hours (an 8 GiB blob at 10 MB/s takes 14 min; a stalled transfer is cut by the
 *   source's low-speed limit long before). Inside an attempt the source already retries
 *   transient errors and resumes; an attempt failing means the network stayed down.
 * check-exists, record: local work; 5 attempts, 100 ms x2 up to 2 s.
 * validate: 3 attempts (a scan fails the same way every time; retries only cover I/O
 *   errors), 30 min per attempt (the archive policy's own time limit is the real bound). */
#define FETCH_DOWNLOAD_ATTEMPTS       8
#define FETCH_DOWNLOAD_BACKOFF_MS     1000
#define FETCH_DOWNLOAD_BACKOFF_MAX_MS 60000
#define FETCH_DOWNLOAD_TIMEOUT_MS     (2 * 3600 * 1000)
#define FETCH_LOCAL_ATTEMPTS          5
#define FETCH_VALIDATE_ATTEMPTS       3
#define FETCH_VALIDATE_TIMEOUT_MS     (30 * 60 * 1000)
/* The `downloads` row records the bytes that are on disk for sure (after fdatasync) every this
 * many bytes: what a power loss or reboot can cost. A dead process costs nothing: in the same
 * boot the temp file's length is trusted (docs/sources.md, "Resume at the byte"). */
#define FETCH_CHECKPOINT_BYTES (64ULL << 20)
/* A download split into ranges makes its ranges' bytes durable (one fdatasync of the file,
 * then TMP.ranges) every this many bytes of all ranges together: what a reboot can cost it.
 * Smaller than one GET's checkpoint because after a reboot the ranges have nothing else (no
 * prefix to fall back on), and the split is used on slow links (below
 * SOURCE_STREAM_SPLIT_RATE), where one fdatasync per 16 MiB costs little. */
#define FETCH_RANGE_CHECKPOINT_BYTES (16ULL << 20)
/* A download whose temp file another run holds (the same object, by identity or location, is
 * being downloaded) waits for it: it looks again this often (one flock), and then takes the
 * finished blob or, when the other run stopped, resumes its bytes. */
#define FETCH_WAIT_POLL_MS 100
/* Free space a download needs beyond its own bytes, checked (statvfs of the temp directory)
 * before the first byte is written: the record step's database writes (a few pages of WAL),
 * the run's events, and the file system's own metadata for the new file, with room to spare
 * for the other runs of the same process. A docker-archive also needs its layers' size again
 * when validate splits it; that write fails cleanly (not enough space) if it does not fit. */
#define FETCH_SPACE_MARGIN_BYTES (8ULL << 20)
/* Parallel ranges: the hasher follows the ranges in order and, when the next byte has not
 * arrived yet, looks again this much later (a 1 MiB read takes about as long). */
#define FETCH_RANGE_HASH_WAIT_MS 1
/* A download is split into ranges only when each range gets at least this much: below it
 * the extra requests cost more than they bring. */
#define FETCH_RANGE_MIN_BYTES (1ULL << 20)
/* Read buffer for re-hashing the part of a download already on disk before resuming. */
#define FETCH_READ_BUFFER (1U << 20)
/* A compressed layer is scanned while it downloads (the validate step's walk, on a thread
 * that follows the file as it grows): when it catches up with the download it looks again
 * after this long. 1 ms: a few hundred wake-ups for a download of seconds, and the scan is
 * never more than a moment behind the last byte. */
#define FETCH_FOLLOW_POLL_NS (1000L * 1000L)

/* What the machine needs; copied by fetch_register(). Paths are <state>/blobs, <state>/tmp
 * (same file system, so the final rename is atomic). */
struct fetch_config {
    const char *blob_dir;
    const char *tmp_dir;
    struct source_options source; /* region, endpoint, anonymous, timeouts */
    struct archive_policy policy; /* scan limits; max_blob_bytes bounds downloads */
};

/* Register the machine on m (before fsm_manager_resume()). The config is copied into *ctx,
 * which the transitions use: free it with fetch_context_free() after fsm_manager_close(). */
struct fetch_context;
int fetch_register(struct fsm_manager *m, const struct fetch_config *cfg,
                   struct fsm_machine **machine, struct fetch_context **ctx);
void fetch_context_free(struct fetch_context *c);

/* ---- the streaming core (also used by the benchmark) -------------------------------------- */

struct fetch_stream {
    int fd;              /* where the bytes go (appended at the current offset) */
    struct sha256 *hash; /* updated with every byte, may be NULL */
    uint64_t max_bytes;  /* stop with -EFBIG beyond offset + bytes > max (0 = none) */
    /* optional progress callback, called at most every FETCH_PROGRESS_BYTES */
    void (*progress)(uint64_t done, uint64_t total, void *ud);
    void *progress_ud;
    /* optional: called every FETCH_CHECKPOINT_BYTES after an fdatasync, with the byte count
     * that is durable */
    void (*checkpoint)(uint64_t durable, void *ud);
    void *checkpoint_ud;
    /* optional: called after every chunk is written and hashed, with the bytes in the file
     * from the object's start; a negative errno stops the transfer with that error. It may
     * set stop_at. */
    int (*written)(uint64_t done, void *ud);
    void *written_ud;
    /* 0, or the byte where the transfer ends: the bytes from there on are neither written
     * nor hashed, the GET is closed and fetch_stream_object() returns 0 with `stopped` set
     * (the first GET of a download split into ranges ends where the next range starts). */
    uint64_t stop_at;
    bool stopped;
};
#define FETCH_PROGRESS_BYTES (4ULL << 20)

/* GET key from offset into st->fd (buffered, hashed); returns 0 and fills info. The caller
 * fsyncs. */
int fetch_stream_object(struct source *s, const char *key, uint64_t offset,
                        const struct source_expect *want, struct fetch_stream *st,
                        struct source_get_info *info, struct err *e);
