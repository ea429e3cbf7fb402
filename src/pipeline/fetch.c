/*
 * fetch.c: the fetch machine (check-exists -> download -> validate -> record). See fetch.h for
 * what each step does and why; the comments here are about how.
 *
 * The response is one JSON object that grows along the run: download adds the digest, size
 * and path, validate the format and the layers. Each transition re-reads it with
 * fsm_run_response() (the last checkpoint), so a resumed run continues from what was
 * committed, never from memory.
 */
#include "pipeline/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "pipeline/fetch_json.h"
#include "pipeline/fetch_ranges.h"
#include "store/blobfile.h"
#include "store/blobs.h"
#include "store/db.h"
#include "store/oci.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/redact.h"
#include "util/timeutil.h"

struct fetch_context {
    char *blob_dir;
    char *tmp_dir;
    char *region, *endpoint;
    struct source_options source;
    struct archive_policy policy;
};

void fetch_context_free(struct fetch_context *c)
{
    if (!c)
        return;
    free(c->blob_dir);
    free(c->tmp_dir);
    free(c->region);
    free(c->endpoint);
    free(c);
}

/* ---- helpers ------------------------------------------------------------------------------ */

#define _cleanup_object_ __attribute__((cleanup(source_object_free)))

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static struct db *run_db(struct fsm_run *run)
{
    return fsm_manager_db(fsm_run_manager(run));
}

/* blobs/sha256/<hex> for a digest. */
static char *blob_path(const struct fetch_context *c, const char *digest)
{
    return blobfile_path(c->blob_dir, digest);
}

/* The temp file of an object: named from a hash of its identity when it has one, so that
 * every location of the same bytes meets at one file (one download, one lock: docs/sources.md,
 * "One download at a time"), else of its location; never from the key. */
static char *tmp_path_for(const struct fetch_context *c, const char *name)
{
    uint8_t h[SHA256_LEN];
    char hex[SHA256_HEX_LEN + 1];
    if (sha256_buf(name, strlen(name), h) < 0)
        return NULL;
    hex_encode(h, SHA256_LEN, hex);
    char *p = NULL;
    if (asprintf(&p, "%s/fetch-%.32s.part", c->tmp_dir, hex) < 0)
        return NULL;
    return p;
}

/* Does path hold exactly the blob `digest` of `size` bytes? 1 yes, 0 no (missing, or
 * quarantined because its bytes do not match), negative on error. One stat when the file
 * still equals the seal recorded when it was written; a hash otherwise (store/blobfile.h). */
static int blob_file_ok(const struct fetch_context *c, struct db *db, const char *path,
                        const char *digest, uint64_t size, struct blob_seal *seal)
{
    return blobfile_verify(db, c->blob_dir, digest, size, path, seal, NULL, 0);
}

static bool cancel_hook(void *ud)
{
    return fsm_run_cancelled(ud) != FSM_CANCEL_NONE;
}

static struct source_options source_opts(const struct fetch_context *c, struct fsm_run *run)
{
    struct source_options o = c->source;
    o.cancelled = cancel_hook;
    o.cancel_ud = run;
    return o;
}

/* Permanent source errors abort the run; the rest are worth another attempt. */
static struct fsm_result source_failure(int r, const struct err *e)
{
    /* The kind decides: not found, access denied, an invalid or rejected key end the run.
     * Network trouble was already retried by the source (its budget: docs/sources.md), so a
     * transient failure that reaches here ends the run too, instead of starting that budget
     * over for every attempt of the transition. */
    struct fsm_result res = fsm_fail(r, "%s", err_str(e));
    if (res.kind == ERR_KIND_TRANSIENT)
        res.outcome = FSM_ABORT;
    return res;
}

/* The content is not acceptable (not a layer, unsafe, over a limit, a digest that does not
 * match): ends the run with kind "rejected" (exit 6, API 422). */
static struct fsm_result rejected(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static struct fsm_result rejected(const char *fmt, ...)
{
    struct fsm_result r = {.outcome = FSM_ABORT, .kind = ERR_KIND_REJECTED};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.message, sizeof(r.message), fmt, ap);
    va_end(ap);
    return r;
}

/* The state directory's file system is full: ends the run (the disk stays full until someone
 * acts) with kind "unhealthy", as a full pool does (exit 3, API 503). */
static struct fsm_result no_space(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static struct fsm_result no_space(const char *fmt, ...)
{
    struct fsm_result r = {.outcome = FSM_ABORT, .kind = ERR_KIND_UNHEALTHY};
    int n = snprintf(r.message, sizeof(r.message), "%s", FETCH_NO_SPACE_PREFIX);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.message + n, sizeof(r.message) - (size_t)n, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- the streaming core ------------------------------------------------------------------- */

struct sink_state {
    struct fetch_stream *st;
    uint64_t offset;  /* bytes in the file before this transfer */
    uint64_t written; /* bytes of this transfer in the file */
    uint64_t total;   /* expected object size (0 = unknown) */
    uint64_t last_progress, last_checkpoint;
    struct err *e;
};

/* Straight from the receive buffer to the file: no copy of our own, one hash update and one
 * write(2) per chunk (libcurl hands the body over in pieces of 16 KiB at most). */
static int sink(const void *data, size_t n, void *ud)
{
    struct sink_state *s = ud;
    uint64_t at = s->offset + s->written;
    bool stop = s->st->stop_at && at + n >= s->st->stop_at;
    if (stop)
        n = s->st->stop_at > at ? (size_t)(s->st->stop_at - at) : 0;
    uint64_t done = at + n;
    if (s->st->max_bytes && done > s->st->max_bytes)
        return err_set(s->e, -EFBIG, "the object is larger than the limit of %" PRIu64 " bytes",
                       s->st->max_bytes);
    if (s->st->hash && sha256_update(s->st->hash, data, n) < 0)
        return -EIO;
    int r = write_all(s->st->fd, data, n);
    if (r < 0)
        return err_set(s->e, r, "cannot write the download to disk: %s", strerror(-r));
    s->written += n;
    if (s->st->checkpoint && done - s->last_checkpoint >= FETCH_CHECKPOINT_BYTES) {
        if (fdatasync(s->st->fd) < 0)
            return err_set(s->e, neg_errno(), "fdatasync of the download: %m");
        s->last_checkpoint = done;
        s->st->checkpoint(done, s->st->checkpoint_ud);
    }
    if (s->st->progress && done - s->last_progress >= FETCH_PROGRESS_BYTES) {
        s->last_progress = done;
        s->st->progress(done, s->total, s->st->progress_ud);
    }
    if (s->st->written && (r = s->st->written(done, s->st->written_ud)) < 0)
        return r;
    if (stop) {
        s->st->stopped = true;
        return -ECANCELED; /* ends the GET; fetch_stream_object() sees `stopped` */
    }
    return 0;
}

int fetch_stream_object(struct source *src, const char *key, uint64_t offset,
                        const struct source_expect *want, struct fetch_stream *st,
                        struct source_get_info *info, struct err *e)
{
    struct sink_state s = {
        .st = st, .offset = offset, .e = e, .last_progress = offset, .last_checkpoint = offset};
    st->stopped = false;
    int r = source_get_expect(src, key, offset, want, sink, &s, info, e);
    if (r < 0 && st->stopped) {
        /* ended where the caller asked: every byte before stop_at is in the file */
        r = 0;
        if (e)
            *e = (struct err){0};
        info->bytes = info->bytes_received = s.written;
        info->size = want && want->has_size ? want->size : 0;
    }
    if (r == 0 && st->progress)
        st->progress(offset + s.written, info->size, st->progress_ud);
    return r;
}

/* Record a computed diff id of a stored blob (a fact about the bytes, so it is written outside
 * the checkpoint: a lost write only means computing it again). A blob not yet stored gets it
 * from the record step, with the blob's row. */
static void diff_id_record(struct db *db, const char *digest, const char *diff_id)
{
    if (blobs_exists(db, digest) == 1 && oci_diff_id_set(db, digest, diff_id) < 0)
        log_warn("cannot record a diff id", "digest=%s", digest);
}

/* The diff id of a stored layer (archive.h archive_diff_id): an uncompressed layer's is its
 * digest; a compressed one's is recorded (layer_diff_ids) once computed, else computed from
 * its file and recorded. 0 with out filled (1: computed now, by decompressing the layer),
 * else negative with e saying why. */
static int layer_diff_id(const struct fetch_context *c, struct db *db, const char *digest,
                         enum blob_format f, const char *path, char out[DIGEST_STR_LEN + 1],
                         struct err *e)
{
    if (f == BLOB_TAR) {
        snprintf(out, DIGEST_STR_LEN + 1, "%s", digest);
        return 0;
    }
    if (oci_diff_id_get(db, digest, out) == 1)
        return 0;
    int r = archive_diff_id(path, f, &c->policy, out, e);
    if (r < 0)
        return r;
    diff_id_record(db, digest, out);
    return 1;
}

/* A layer whose diff id is not the one its image config declares: the config lies about the
 * layer (or the layer is not the one the config was made for). Rejected, like a digest that
 * does not match. */
static bool diff_id_mismatch(const char *location, const char *want, const char *got,
                             struct fsm_result *res)
{
    if (!want || !strcmp(want, got))
        return false;
    *res = rejected("%s: the layer's uncompressed content hashes to %s, but its image config "
                    "declares the diff id %s (rootfs.diff_ids); the image is inconsistent: "
                    "refused",
                    location, got, want);
    return true;
}

/* ---- check-exists ------------------------------------------------------------------------ */

/* The layers of an archive blob fetched before: its members' blob_sources rows. Returns 1 when
 * every layer is present and verified, 0 when not, negative on error. */
static int archive_layers_known(struct fetch_context *c, struct db *db, const char *location,
                                const char *path, json_t *layers, char **repo_tag)
{
    struct archive_manifest m = {0};
    struct err e = {0};
    if (archive_manifest_read(path, &m, &e) < 0)
        return 0;
    int ok = 1;
    for (size_t i = 0; i < m.n_layers && ok == 1; i++) {
        _cleanup_free_ char *loc = NULL;
        if (asprintf(&loc, "%s#%s", location, m.layers[i].member) < 0) {
            ok = -ENOMEM;
            break;
        }
        struct blob_source k;
        int r = blobs_source_get(db, loc, &k);
        if (r <= 0) {
            ok = r;
            break;
        }
        _cleanup_free_ char *bp = blob_path(c, k.digest);
        struct blob_seal seal;
        r = bp ? blob_file_ok(c, db, bp, k.digest, k.blob_size, &seal) : -ENOMEM;
        enum blob_format lf = fetch_format_parse(k.media_type);
        char diff_id[DIGEST_STR_LEN + 1];
        if (r == 1 && layer_diff_id(c, db, k.digest, lf, bp, diff_id, &e) < 0)
            r = 0; /* cannot tell: validate it again */
        if (r == 1)
            json_array_append_new(layers, fetch_layer_json(k.digest, diff_id, k.blob_size, lf, bp,
                                                           m.layers[i].member, &seal));
        blob_source_free(&k);
        ok = r;
    }
    if (ok == 1 && m.repo_tag)
        *repo_tag = strdup(m.repo_tag);
    archive_manifest_free(&m);
    return ok;
}

static int touch_commit(struct db *db, void *ud)
{
    return blobs_touch(db, ud, now_ms());
}

static struct fsm_result check_exists(struct fsm_run *run, void *ud)
{
    struct fetch_context *c = ud;
    _cleanup_request_ struct fetch_request rq = {0};
    if (fetch_request_parse(run, &rq) < 0)
        return fsm_abort("invalid fetch request");
    struct db *db = run_db(run);
    struct blob_source k;
    int r = blobs_source_get(db, rq.location, &k);
    if (r < 0)
        return fsm_retry("cannot read the blobs table: %s", strerror(-r));
    if (r == 0)
        return fsm_ok();
    /* The ETag now: from the request (a fresh listing), else one HEAD. */
    _cleanup_free_ char *etag = dup_or_null(rq.etag);
    uint64_t size = rq.size;
    if (!etag) {
        struct source_options so = source_opts(c, run);
        _cleanup_source_ struct source *s = NULL;
        _cleanup_free_ char *key = NULL;
        struct source_object o = {0};
        struct err e = {0};
        _cleanup_free_ char *url = fetch_credentials_for_request(rq.location);
        if (url && source_open(url, &so, &s, &key, &e) == 0 && source_stat(s, key, &o, &e) == 0) {
            etag = dup_or_null(o.etag);
            size = o.size;
        }
        source_object_free(&o);
    }
    bool same = etag && k.etag && !strcmp(etag, k.etag) && (!size || size == k.size);
    int ok = 0;
    _cleanup_json_ json_t *resp = NULL;
    if (same) {
        _cleanup_free_ char *bp = blob_path(c, k.digest);
        struct blob_seal seal;
        ok = bp ? blob_file_ok(c, db, bp, k.digest, k.blob_size, &seal) : -ENOMEM;
        if (ok == 1) {
            enum blob_format f = fetch_format_parse(k.media_type);
            resp = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:b, s:[]}", "location", rq.location,
                             "etag", etag, "digest", k.digest, "size", (json_int_t)k.blob_size,
                             "path", bp, "format", blob_format_name(f), "reused", 1, "layers");
            json_t *layers = json_object_get(resp, "layers");
            json_object_set_new(resp, "seal", fetch_seal_json(&seal));
            json_object_set_new(resp, "bytes", fetch_bytes_json(0, 0, k.blob_size));
            char diff_id[DIGEST_STR_LEN + 1];
            struct err de = {0};
            if (blob_format_is_layer(f) &&
                layer_diff_id(c, db, k.digest, f, bp, diff_id, &de) < 0) {
                ok = 0; /* cannot tell: fetch and validate it again */
            } else if (blob_format_is_layer(f)) {
                struct fsm_result lie;
                if (diff_id_mismatch(rq.location, rq.diff_id, diff_id, &lie)) {
                    blob_source_free(&k);
                    return lie;
                }
                json_array_append_new(
                    layers, fetch_layer_json(k.digest, diff_id, k.blob_size, f, bp, NULL, &seal));
            } else if (rq.diff_id) {
                blob_source_free(&k);
                return rejected("%s: a %s, not the image layer its image config declares",
                                rq.location, blob_format_name(f));
            } else {
                char *tag = NULL;
                ok = archive_layers_known(c, db, rq.location, bp, layers, &tag);
                if (tag)
                    json_object_set_new(resp, "repo_tag", json_string(tag));
                free(tag);
            }
        }
    }
    struct fsm_result res = fsm_ok();
    if (ok == 1 && resp && fetch_response_store(run, resp) == 0) {
        char *d = strdup(k.digest);
        if (d && fsm_run_on_commit(run, touch_commit, d, free) == 0)
            res = fsm_handoff("already fetched: %s", k.digest);
        else
            free(d);
    } else if (ok < 0) {
        res = fsm_retry("cannot verify %s: %s", k.path, strerror(-ok));
    }
    log_info(ok == 1 ? "blob already fetched" : "blob to fetch", "location=%s known=%s",
             rq.location, same ? "same-etag" : "changed");
    blob_source_free(&k);
    return res;
}

/* ---- download ----------------------------------------------------------------------------- */

/*
 * The scan of a compressed layer, while it downloads. Validating a .tar.gz after the download
 * decompresses it in full (most of a fetch's time on a fast network); a thread that follows
 * the temp file as it grows does the same walk (archive_scan_follow) while the bytes arrive,
 * and from the same decompression the layer's diff id (validate takes it instead of
 * decompressing the layer again, archive_diff_id). It hashes every byte it read, and its
 * answer (scan and diff id) is kept only when that digest is the
 * downloaded blob's: whatever the download did (resumed, rewritten, written out of order),
 * the scan is then of exactly the stored bytes. Any other outcome (a rejection, an error, a
 * plain tar, a different digest) keeps nothing: the validate step scans the blob itself,
 * with the same rules and the same messages.
 */
enum follow_state { FOLLOW_RUNNING, FOLLOW_COMPLETE, FOLLOW_FAILED };

struct follower {
    pthread_t thread;
    bool started;
    int fd;
    pthread_mutex_t lock;
    enum follow_state state;
    bool grace_used; /* COMPLETE: one more look at the file, then no more waiting */
    struct archive_follow f;
    struct sha256 hash;
    struct archive_policy policy;
    /* the answer, read after the join */
    int r;
    enum blob_format fmt;
    char diff_id[DIGEST_STR_LEN + 1]; /* of a gzip/zstd layer: decompressed once for both */
    struct archive_stats st;
    struct err e;
};

static bool follower_more(void *ud)
{
    struct follower *fl = ud;
    pthread_mutex_lock(&fl->lock);
    enum follow_state s = fl->state;
    bool again = s == FOLLOW_RUNNING || (s == FOLLOW_COMPLETE && !fl->grace_used);
    if (s == FOLLOW_COMPLETE)
        fl->grace_used = true;
    pthread_mutex_unlock(&fl->lock);
    if (s == FOLLOW_RUNNING) {
        struct timespec ts = {.tv_nsec = FETCH_FOLLOW_POLL_NS};
        nanosleep(&ts, NULL);
    }
    return again;
}

static void *follower_main(void *ud)
{
    struct follower *fl = ud;
    fl->r =
        archive_scan_follow(fl->fd, &fl->f, &fl->policy, &fl->fmt, fl->diff_id, &fl->st, &fl->e);
    return NULL;
}

/* Start following tmp (size bytes when complete). Nothing is started when the thread or the
 * file cannot be had: the validate step scans as before. */
static void follower_start(struct follower *fl, const char *tmp, uint64_t size,
                           const struct archive_policy *policy)
{
    *fl = (struct follower){.fd = -1, .r = -EAGAIN};
    fl->policy = *policy;
    fl->f = (struct archive_follow){
        .more = follower_more, .ud = fl, .size = size, .hash = &fl->hash, .compressed_only = true};
    if (size == 0 || sha256_init(&fl->hash) < 0)
        return;
    fl->fd = open(tmp, O_RDONLY | O_CLOEXEC);
    pthread_mutex_init(&fl->lock, NULL);
    if (fl->fd >= 0 && pthread_create(&fl->thread, NULL, follower_main, fl) == 0) {
        fl->started = true;
        return;
    }
    pthread_mutex_destroy(&fl->lock);
    sha256_free(&fl->hash);
    if (fl->fd >= 0)
        close(fl->fd);
    fl->fd = -1;
}

/* The download ended (ok: every byte is in the file): wait for the follower. Returns true
 * when its scan passed and was of the blob whose digest is d. */
static bool follower_finish(struct follower *fl, bool ok, const uint8_t *d)
{
    if (!fl->started)
        return false;
    pthread_mutex_lock(&fl->lock);
    fl->state = ok ? FOLLOW_COMPLETE : FOLLOW_FAILED;
    pthread_mutex_unlock(&fl->lock);
    pthread_join(fl->thread, NULL);
    pthread_mutex_destroy(&fl->lock);
    close(fl->fd);
    fl->started = false;
    uint8_t h[SHA256_LEN];
    if (fl->r < 0 || sha256_final(&fl->hash, h) < 0) {
        if (fl->r < 0)
            sha256_free(&fl->hash);
        return false;
    }
    return ok && d && memcmp(h, d, SHA256_LEN) == 0 && blob_format_is_layer(fl->fmt);
}

struct dl_progress {
    struct fsm_run *run;
    struct db *db;
    const char *location, *etag, *tmp;
    uint64_t size;
    uint64_t counted;       /* bytes already added to METRIC_FETCH_BYTES (starts at the offset) */
    uint64_t ranges_synced; /* split into ranges: the bytes of all ranges last made durable */
};

static void on_progress(uint64_t done, uint64_t total, void *ud)
{
    struct dl_progress *p = ud;
    fsm_run_set_progress(p->run, "download", done, total);
    if (done > p->counted) {
        metrics_counter_add(METRIC_FETCH_BYTES, (double)(done - p->counted), NULL);
        p->counted = done;
    }
}

static void on_checkpoint(uint64_t durable, void *ud)
{
    struct dl_progress *p = ud;
    int r = blobs_download_put(p->db, p->location, p->etag, p->tmp, durable, p->size);
    if (r < 0)
        log_warn("cannot record download progress", "location=%s error=%s", p->location,
                 strerror(-r));
}

/* Where a download of the same version resumes (the caller checked the ETag): at the byte.
 * In the boot that wrote the temp file every byte write(2) put in it is in the file, even
 * after the writer died (kill -9, a crash, Ctrl-C: the page cache belongs to the kernel), so
 * its length is the offset; the caller fdatasyncs it before recording it. After a reboot only
 * the length last fdatasync'ed and recorded (bytes_done) is trusted: the rest may not have
 * reached the disk. */
static uint64_t resume_offset(int fd, const struct blob_download *dr, uint64_t size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    uint64_t on_disk = (uint64_t)st.st_size;
    char boot[BOOT_ID_MAX];
    bool same_boot =
        dr->boot_id && boot_id_read(boot, sizeof(boot)) == 0 && !strcmp(boot, dr->boot_id);
    uint64_t offset = same_boot || dr->bytes_done > on_disk ? on_disk : dr->bytes_done;
    return offset > size ? 0 : offset;
}

/* Hash the first n bytes of fd into h. */
static int hash_prefix(int fd, uint64_t n, struct sha256 *h)
{
    _cleanup_free_ char *b = malloc(FETCH_READ_BUFFER);
    if (!b)
        return -ENOMEM;
    uint64_t pos = 0;
    while (pos < n) {
        size_t want = n - pos < FETCH_READ_BUFFER ? (size_t)(n - pos) : FETCH_READ_BUFFER;
        ssize_t k = pread(fd, b, want, (off_t)pos);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? neg_errno() : -EIO;
        int r = sha256_update(h, b, (size_t)k);
        if (r < 0)
            return r;
        pos += (uint64_t)k;
    }
    return 0;
}

/* blobs/sha256, owner only. */
static int mkdir_p_blobs(const struct fetch_context *c)
{
    _cleanup_free_ char *shadir = path_join(c->blob_dir, BLOBFILE_SUBDIR);
    return shadir ? mkdir_p(shadir, 0700) : -ENOMEM;
}

/* Is there room in the temp directory for `need` more bytes of location (plus
 * FETCH_SPACE_MARGIN_BYTES)? A full disk is not a transient error: no attempt is made, and the
 * run fails at once saying what is full and what to do. */
static bool space_for_download(const struct fetch_context *c, struct db *db, const char *location,
                               const char *tmp, uint64_t offset, uint64_t need,
                               struct fsm_result *res)
{
    struct statvfs vfs;
    if (statvfs(c->tmp_dir, &vfs) < 0)
        return true; /* cannot tell: the write itself will say */
    uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    if (avail >= need + FETCH_SPACE_MARGIN_BYTES)
        return true;
    char n[32], m[32], a[32];
    format_bytes(need, n, sizeof(n));
    format_bytes(FETCH_SPACE_MARGIN_BYTES, m, sizeof(m));
    format_bytes(avail, a, sizeof(a));
    char kept[96] = "";
    if (offset) /* what is there resumes once there is room */
        snprintf(kept, sizeof(kept), "; the %" PRIu64 " bytes already fetched are kept for it",
                 offset);
    else {
        unlink(tmp);
        blobs_download_delete(db, location);
    }
    *res = no_space("the file system of %s has %s free; %s needs %s "
                    "(the blob) + %s (margin for the database); free "
                    "space there or use a --state-dir on a larger file "
                    "system, then fetch again%s",
                    c->tmp_dir, a, location, n, m, kept);
    return false;
}

/* The disk filled up while writing the download: remove the partial file (it cannot be
 * finished until there is room, and it is what fills the disk), forget its resume hint, and
 * give the database room to record the failure (store/db.h: the reserve). */
static struct fsm_result out_of_space(struct db *db, const char *location, const char *tmp, int fd,
                                      uint64_t size, const char *cause)
{
    struct stat st;
    uint64_t written = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    unlink(tmp);
    db_release_reserve(db);
    blobs_download_delete(db, location);
    char w[32], t[32];
    format_bytes(written, w, sizeof(w));
    format_bytes(size, t, sizeof(t));
    log_error("download stopped: no space left",
              "location=%s written=%" PRIu64 " size=%" PRIu64 " partial_file=removed", location,
              written, size);
    return no_space("no space left on the file system of %s after %s "
                    "of %s of %s (%s); the partial file was removed; "
                    "free space or use a --state-dir on a larger file "
                    "system, then fetch again",
                    tmp, w, t, location, cause);
}

static void result_freep(void *p);
static int record_commit(struct db *db, void *ud);

/* Identity reuse (docs/sources.md): the object HEAD described has the identity of a blob
 * stored before (another location, the same bytes: the families' shared layers), and that
 * blob passes the integrity rule. Then no GET: the response names the stored blob. A layer
 * was validated when it was stored (its media type says so), so the run ends here with the
 * record step's writes in the checkpoint; an archive goes on to validate, which splits it
 * again from the local file. Returns true with *res set when the blob is reused. */
static bool reuse_by_identity(struct fetch_context *c, struct fsm_run *run, struct db *db,
                              const char *location, const char *tmp,
                              const struct source_object *obj, struct fsm_result *res)
{
    struct blob_source k;
    if (!obj->identity || blobs_identity_get(db, obj->identity, &k) != 1)
        return false;
    /* A digest the source states (a registry blob) is never overridden by an identity. */
    bool ok = k.size == obj->size && k.blob_size == obj->size &&
              (!obj->digest || !strcmp(obj->digest, k.digest));
    _cleanup_free_ char *bp = ok ? blob_path(c, k.digest) : NULL;
    struct blob_seal seal;
    ok = bp && blob_file_ok(c, db, bp, k.digest, k.blob_size, &seal) == 1;
    enum blob_format f = fetch_format_parse(k.media_type);
    _cleanup_json_ json_t *resp =
        ok ? json_pack("{s:s, s:s, s:I, s:s, s:b, s:s}", "location", location, "digest", k.digest,
                       "size", (json_int_t)k.blob_size, "path", bp, "reused", 1, "identity",
                       obj->identity)
           : NULL;
    if (resp) {
        if (obj->etag)
            json_object_set_new(resp, "etag", json_string(obj->etag));
        json_object_set_new(resp, "seal", fetch_seal_json(&seal));
        json_object_set_new(resp, "bytes", fetch_bytes_json(0, 0, k.blob_size));
    }
    /* Its diff id, as a download's validate gives it (recorded, or computed once now): chain
     * ids are made of diff ids. One that cannot be had: download it as if unknown. */
    char diff_id[DIGEST_STR_LEN + 1];
    struct err de = {0};
    if (resp && blob_format_is_layer(f) &&
        layer_diff_id(c, db, k.digest, f, bp, diff_id, &de) < 0) {
        json_decref(resp);
        resp = NULL;
    }
    if (resp && blob_format_is_layer(f)) {
        json_object_set_new(resp, "format", json_string(blob_format_name(f)));
        json_object_set_new(
            resp, "layers",
            json_pack("[o]", fetch_layer_json(k.digest, diff_id, k.blob_size, f, bp, NULL, &seal)));
    }
    ok = resp && fetch_response_store(run, resp) == 0;
    struct fetch_result *fr = NULL;
    if (ok && blob_format_is_layer(f)) {
        /* The record step's writes, from this response (fsm_run_response() is still the
         * last checkpoint's). */
        _cleanup_free_ char *data = json_dumps(resp, JSON_COMPACT);
        struct err e = {0};
        fr = data ? calloc(1, sizeof(*fr)) : NULL;
        ok = fr && fetch_response_parse(data, strlen(data), fr, &e) == 0;
        if (!ok)
            free(fr);
        else if (fsm_run_on_commit(run, record_commit, fr, result_freep) < 0) {
            result_freep(fr);
            ok = false;
        }
    }
    log_info(ok ? "blob reused by identity" : "identity known, blob not usable",
             "location=%s identity=%s digest=%s", location, obj->identity, k.digest);
    if (ok) {
        /* A partial download of it is not needed any more (unless a run still writes it). */
        int tfd = open(tmp, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (tfd >= 0 && flock(tfd, LOCK_EX | LOCK_NB) == 0)
            unlink(tmp);
        if (tfd >= 0)
            close(tfd);
        *res = fr ? fsm_handoff("reused %s (same identity as a stored blob)", k.digest) : fsm_ok();
    }
    blob_source_free(&k);
    return ok;
}

/* ---- resume hints by temp file (a temp file is named by identity: see "one download at a
 * time" below; the hints are keyed by location) --------------------------------------------- */

struct tmp_rows {
    const char *tmp;
    char *locs[SOURCE_DOWNLOAD_STREAMS_MAX]; /* a few at most: one per run that started it */
    size_t n;
};

static int tmp_row(const char *loc, const char *tmp_path, void *ud)
{
    struct tmp_rows *t = ud;
    if (loc && tmp_path && !strcmp(tmp_path, t->tmp) && t->n < ARRAY_SIZE(t->locs))
        t->locs[t->n++] = strdup(loc);
    return 0;
}

static void tmp_rows_free(struct tmp_rows *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->locs[i]);
    t->n = 0;
}

/* The resume hint of temp file tmp: location's row when it names tmp, else the row of another
 * location that does (a run of another location of the same identity started these bytes).
 * 1 found (*out filled, blob_download_free() it), 0 none, negative on error. */
static int download_row_for_tmp(struct db *db, const char *location, const char *tmp,
                                struct blob_download *out)
{
    *out = (struct blob_download){0};
    int r = blobs_download_get(db, location, out);
    if (r != 0 && (r < 0 || (out->tmp_path && !strcmp(out->tmp_path, tmp))))
        return r;
    blob_download_free(out);
    struct tmp_rows t = {.tmp = tmp};
    r = blobs_download_list(db, tmp_row, &t);
    for (size_t i = 0; r >= 0 && i < t.n; i++) {
        r = blobs_download_get(db, t.locs[i], out);
        if (r == 1 && out->tmp_path && !strcmp(out->tmp_path, tmp))
            break;
        if (r == 1)
            blob_download_free(out);
        r = 0;
    }
    tmp_rows_free(&t);
    return r;
}

/* The bytes of tmp are stored (or taken from the store): the resume hints of other locations
 * that name it point at nothing now. (location's own is deleted by the record step.) */
static void download_rows_forget(struct db *db, const char *location, const char *tmp)
{
    struct tmp_rows t = {.tmp = tmp};
    blobs_download_list(db, tmp_row, &t);
    for (size_t i = 0; i < t.n; i++)
        if (strcmp(t.locs[i], location) != 0 && blobs_download_delete(db, t.locs[i]) < 0)
            log_warn("cannot delete a download record", "location=%s", t.locs[i]);
    tmp_rows_free(&t);
}

/* The marker a finished download leaves beside its temp file (TMP.done, the blob's digest),
 * written before the file leaves its path (renamed into the store, or dropped as a copy of a
 * stored blob) and removed when the run ends (fetch_end), once its record step has recorded
 * the identity: a run of the same identity that locks the temp file in between takes the blob
 * instead of downloading it again. */
static char *done_marker_path(const char *tmp)
{
    char *p = NULL;
    return asprintf(&p, "%s.done", tmp) < 0 ? NULL : p;
}

static void done_marker_write(const char *tmp, const char *digest)
{
    _cleanup_free_ char *p = done_marker_path(tmp);
    _cleanup_close_ int fd =
        p ? open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600) : -1;
    size_t n = strlen(digest);
    if (fd < 0 || write(fd, digest, n) != (ssize_t)n)
        log_warn("cannot mark a finished download", "tmp=%s error=%m", tmp);
}

/* The digest the marker of tmp names: true with out filled. */
static bool done_marker_read(const char *tmp, char out[DIGEST_STR_LEN + 1])
{
    _cleanup_free_ char *p = done_marker_path(tmp);
    _cleanup_close_ int fd = p ? open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
    ssize_t n = fd >= 0 ? read(fd, out, DIGEST_STR_LEN) : -1;
    if (n != DIGEST_STR_LEN)
        return false;
    out[n] = '\0';
    return digest_valid(out);
}

static void done_marker_remove(const char *tmp)
{
    _cleanup_free_ char *p = done_marker_path(tmp);
    if (p)
        unlink(p);
}

/* A download whose bytes are all in the temp file and hashed: check them against the digest
 * the source states, if any, and move the file into the store by digest. */
struct dl_done {
    const char *location;
    const struct source_object *obj;
    int fd;
    const char *tmp;
    uint8_t sha[SHA256_LEN];
    uint64_t received, resumed; /* the response's bytes.downloaded and bytes.resumed */
    int64_t t0;
    /* The layer scan done while downloading, of these very bytes (NULL: none): validate
     * uses it. */
    const struct follower *scan;
    /* NULL, or the digest of the blob another run downloaded for this object
     * (adopt_finished): tmp is NULL and sha unused, nothing was fetched. */
    const char *adopted;
};

static struct fsm_result finish_download(struct fetch_context *c, struct fsm_run *run,
                                         struct db *db, const struct dl_done *dd)
{
    const struct source_object *o = dd->obj;
    uint64_t total = o->size;
    char digest[DIGEST_STR_LEN + 1];
    if (dd->adopted)
        snprintf(digest, sizeof(digest), "%s", dd->adopted);
    else
        digest_format(dd->sha, digest);
    /* A source that names the blob by its digest (a registry): the bytes must be that blob,
     * else nothing is stored and the partial file is not kept for a resume. */
    if (o->digest && strcmp(o->digest, digest) != 0) {
        if (dd->tmp)
            unlink(dd->tmp);
        blobs_download_delete(db, dd->location);
        return rejected("%s: the downloaded blob's digest is %s, not the %s it is named by; "
                        "nothing stored",
                        dd->location, digest, o->digest);
    }

    /* Into the store, by digest. Identical bytes fetched before (under another key): keep the
     * existing file when it passes the integrity rule (store/blobfile.h), drop ours; a file
     * that fails it is quarantined and ours takes its place. */
    _cleanup_free_ char *final = blob_path(c, digest);
    struct blob_seal seal;
    char why[512];
    int r;
    if (!final || mkdir_p_blobs(c) < 0)
        return fsm_retry("cannot prepare %s", c->blob_dir);
    int have = blobfile_verify(db, c->blob_dir, digest, total, final, &seal, why, sizeof(why));
    if (have < 0)
        return fsm_retry("cannot verify %s: %s", final, strerror(-have));
    if (dd->adopted && !have)
        return fsm_retry("the blob another run downloaded for %s is not in the store (%s); "
                         "downloading it",
                         dd->location, why);
    /* Before the temp file leaves its path: a run that opens the path next finds the marker. */
    if (dd->tmp)
        done_marker_write(dd->tmp, digest);
    if (have && dd->tmp)
        unlink(dd->tmp);
    else if (!have && (rename(dd->tmp, final) < 0 || fsync_parent_dir(final) < 0))
        return fsm_retry("cannot store %s: %m", final);
    else if (!have && (r = blobfile_seal_fd(dd->fd, &seal)) < 0)
        return fsm_retry("cannot seal %s: %s", final, strerror(-r));
    if (dd->tmp)
        download_rows_forget(db, dd->location, dd->tmp);
    log_info("blob downloaded",
             "location=%s digest=%s bytes=%" PRIu64 " resumed=%" PRIu64 " ms=%" PRId64 " dedup=%s",
             dd->location, digest, total, dd->resumed, mono_ms() - dd->t0, have ? "yes" : "no");

    _cleanup_json_ json_t *resp =
        json_pack("{s:s, s:s, s:I, s:s, s:b}", "location", dd->location, "digest", digest, "size",
                  (json_int_t)total, "path", final, "reused", dd->adopted != NULL);
    if (resp && o->etag)
        json_object_set_new(resp, "etag", json_string(o->etag));
    if (resp && o->identity)
        json_object_set_new(resp, "identity", json_string(o->identity));
    if (resp) {
        json_object_set_new(resp, "seal", fetch_seal_json(&seal));
        json_object_set_new(resp, "bytes",
                            fetch_bytes_json(dd->received, dd->resumed, dd->adopted ? total : 0));
    }
    if (resp && dd->scan) {
        json_t *scan =
            json_pack("{s:s, s:I, s:I}", "format", blob_format_name(dd->scan->fmt), "entries",
                      (json_int_t)dd->scan->st.entries, "bytes", (json_int_t)dd->scan->st.bytes);
        if (scan && dd->scan->diff_id[0])
            json_object_set_new(scan, "diff_id", json_string(dd->scan->diff_id));
        json_object_set_new(resp, "scanned", scan);
    }
    if (!resp || fetch_response_store(run, resp) < 0)
        return fsm_retry("out of memory");
    return fsm_ok();
}

/* ---- parallel ranges ---------------------------------------------------------------------
 * docs/sources.md, "Parallel ranges". A download starts as one GET. When that connection's
 * rate over its first source_stream_probe_ms() is below source_stream_split_rate() (real S3
 * limits each connection; loopback and fast LANs do not), the rest of the object is split:
 * the first GET goes on up to the end of its share (stop_at) and source_download_streams() - 1
 * ranged GETs, each with its own thread and connection, fetch the other shares with pwrite
 * into the same file, preallocated from there to the object's size. Beside it, TMP.ranges
 * (fetch_ranges.h) holds the object's version (size, ETag, boot) and each range's start, end
 * and two counts of its bytes in the file: `done`, written after the bytes themselves (in the
 * same boot both are in the page cache whatever happened to the process), and `synced`, written
 * after an fdatasync of the file every FETCH_RANGE_CHECKPOINT_BYTES (ranges_checkpoint) and when
 * the transfer stops. A download resumed in the same boot resumes every range at `done`, after
 * a reboot at `synced` (download_parallel); another version starts over. The first GET
 * hashes its bytes as they arrive, in order; the ranges after it are hashed in order from the
 * file (a read of the page cache) as they land, by the run's thread once the first GET ended.
 * A server that ignores Range (a 200 to a ranged GET) has the first GET go on to the end. */

struct range_job {
    const char *url;
    struct source_options so;
    const struct source_object *obj;
    struct fsm_run *run;
    const bool *abandon; /* the download no longer needs this range: stop */
    int fd, idx_fd;
    uint32_t i;
    uint64_t start, end, done; /* done: bytes of [start, end) in the file (atomic) */
    uint64_t synced;           /* of them, on disk for sure (when TMP.ranges was written) */
    uint64_t received;
    bool finished; /* the GET ended, r says how (atomic) */
    int r;
    struct err e;
    pthread_t th;
};

static char *ranges_path(const char *tmp)
{
    char *p = NULL;
    return asprintf(&p, "%s.ranges", tmp) < 0 ? NULL : p;
}

/* Where range i's `field` is in TMP.ranges. */
static off_t range_slot(uint32_t i, size_t field)
{
    return (off_t)(sizeof(struct fetch_ranges_head) + i * sizeof(struct fetch_range_rec) + field);
}

/* Record that range j has `done` bytes in the file (after they were written). */
static int range_note(struct range_job *j, uint64_t done)
{
    __atomic_store_n(&j->done, done, __ATOMIC_RELEASE);
    off_t slot = range_slot(j->i, offsetof(struct fetch_range_rec, done));
    if (pwrite(j->idx_fd, &done, sizeof(done), slot) != (ssize_t)sizeof(done))
        return err_set(&j->e, -EIO, "cannot record the progress of range %u: %m", j->i);
    return 0;
}

static int range_sink(const void *data, size_t n, void *ud)
{
    struct range_job *j = ud;
    uint64_t at = j->start + j->done;
    if (at + n > j->end)
        return err_set(&j->e, -EFBIG, "range %u: more bytes than the range", j->i);
    for (size_t w = 0; w < n;) {
        ssize_t k = pwrite(j->fd, (const char *)data + w, n - w, (off_t)(at + w));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return err_set(&j->e, neg_errno(), "cannot write the download to disk: %m");
        w += (size_t)k;
    }
    /* after the bytes, their count (read by the hasher, and in TMP.ranges) */
    return range_note(j, j->done + n);
}

static bool range_cancelled(void *ud)
{
    const struct range_job *j = ud;
    return __atomic_load_n(j->abandon, __ATOMIC_ACQUIRE) ||
           fsm_run_cancelled(j->run) != FSM_CANCEL_NONE;
}

static void *range_thread(void *ud)
{
    struct range_job *j = ud;
    _cleanup_source_ struct source *s = NULL;
    _cleanup_free_ char *key = NULL;
    j->so.cancelled = range_cancelled;
    j->so.cancel_ud = j;
    j->r = source_open(j->url, &j->so, &s, &key, &j->e);
    if (j->r == 0 && j->start + j->done < j->end) {
        struct source_expect want = {
            .etag = j->obj->etag, .has_size = true, .size = j->obj->size, .end = j->end};
        struct source_get_info info = {0};
        j->r = source_get_expect(s, key, j->start + j->done, &want, range_sink, j, &info, &j->e);
        j->received = info.bytes_received;
    }
    __atomic_store_n(&j->finished, true, __ATOMIC_RELEASE);
    return NULL;
}

/* Start range j's thread (a failure to start is the range's error). */
static void range_start(struct range_job *j)
{
    int r = -pthread_create(&j->th, NULL, range_thread, j);
    if (r < 0) {
        j->r = err_set(&j->e, r, "cannot start a download thread: %s", strerror(-r));
        __atomic_store_n(&j->finished, true, __ATOMIC_RELEASE);
        j->th = 0;
    }
}

/* Make the ranges' bytes durable: fdatasync the temp file, then record each range's count
 * as it was before that sync as its `synced` and fdatasync TMP.ranges (the order is the
 * promise: a `synced` on disk never counts a byte that was not). One sync of the file covers
 * every range. A failure costs only what a reboot would then lose: logged, not fatal.
 * *synced_sum: the bytes of all ranges now durable. */
static void ranges_checkpoint(struct range_job *jobs, uint32_t n, uint64_t *synced_sum)
{
    uint64_t done[SOURCE_DOWNLOAD_STREAMS_MAX], sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += done[i] = __atomic_load_n(&jobs[i].done, __ATOMIC_ACQUIRE);
    int fd = jobs[0].fd, ifd = jobs[0].idx_fd;
    bool ok = fdatasync(fd) == 0;
    for (uint32_t i = 0; ok && i < n; i++)
        ok = pwrite(ifd, &done[i], sizeof(done[i]),
                    range_slot(i, offsetof(struct fetch_range_rec, synced))) ==
             (ssize_t)sizeof(done[i]);
    ok = ok && fdatasync(ifd) == 0;
    if (!ok) {
        log_warn("cannot make the ranges' progress durable", "error=%m");
        return;
    }
    *synced_sum = sum;
}

/* The bytes of all ranges in the file, as download progress; a checkpoint every
 * FETCH_RANGE_CHECKPOINT_BYTES of them. */
static void ranges_progress(struct range_job *jobs, uint32_t n, uint64_t size,
                            struct dl_progress *pr, uint64_t *reported)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += __atomic_load_n(&jobs[i].done, __ATOMIC_ACQUIRE);
    if (sum - pr->ranges_synced >= FETCH_RANGE_CHECKPOINT_BYTES && sum < size)
        ranges_checkpoint(jobs, n, &pr->ranges_synced);
    if (sum - *reported >= FETCH_PROGRESS_BYTES || (sum == size && sum != *reported)) {
        *reported = sum;
        on_progress(sum, size, pr);
    }
}

/* Hash the ranges in order from byte `pos` to the object's end into h while they arrive (each
 * byte once it is written: a read of the page cache), reporting the download's progress.
 * -EAGAIN when the range it waits for ended without its bytes (its job says why). */
static int hash_ranges(struct range_job *jobs, uint32_t n, int fd, uint64_t size, uint64_t pos,
                       struct sha256 *h, struct dl_progress *pr)
{
    _cleanup_free_ char *b = malloc(FETCH_READ_BUFFER);
    if (!b)
        return -ENOMEM;
    uint32_t k = 0;
    uint64_t reported = 0;
    while (pos < size) {
        while (k + 1 < n && pos >= jobs[k].end)
            k++;
        const struct range_job *j = &jobs[k];
        /* finished first: a range that ended has all its bytes counted in done */
        bool ended = __atomic_load_n(&j->finished, __ATOMIC_ACQUIRE);
        uint64_t avail = j->start + __atomic_load_n(&j->done, __ATOMIC_ACQUIRE);
        ranges_progress(jobs, n, size, pr, &reported);
        if (avail <= pos) {
            if (ended)
                return -EAGAIN;
            sleep_ms(FETCH_RANGE_HASH_WAIT_MS);
            continue;
        }
        size_t want = avail - pos < FETCH_READ_BUFFER ? (size_t)(avail - pos) : FETCH_READ_BUFFER;
        ssize_t got = pread(fd, b, want, (off_t)pos);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return got < 0 ? neg_errno() : -EIO;
        int r = sha256_update(h, b, (size_t)got);
        if (r < 0)
            return r;
        pos += (uint64_t)got;
    }
    ranges_progress(jobs, n, size, pr, &reported);
    return 0;
}

/* The head TMP.ranges has for obj written in boot (compared bytewise: padding zeroed). */
static void ranges_head_of(const struct source_object *obj, uint32_t n, const char *boot,
                           struct fetch_ranges_head *head)
{
    memset(head, 0, sizeof(*head));
    memcpy(head->magic, FETCH_RANGES_MAGIC, sizeof(head->magic));
    head->size = obj->size;
    head->n = n;
    snprintf(head->etag, sizeof(head->etag), "%s", obj->etag);
    snprintf(head->boot, sizeof(head->boot), "%s", boot);
}

/* Write TMP.ranges (open as ifd) for jobs[0..n) of obj, stamped with this boot, and make it
 * durable: the counts it holds are then each range's `done` and `synced`. */
static int ranges_write(int ifd, const char *idx, const struct source_object *obj,
                        struct range_job *jobs, uint32_t n, struct err *e)
{
    char boot[BOOT_ID_MAX] = "";
    boot_id_read(boot, sizeof(boot));
    struct fetch_ranges_head head;
    ranges_head_of(obj, n, boot, &head);
    struct fetch_range_rec recs[SOURCE_DOWNLOAD_STREAMS_MAX];
    for (uint32_t i = 0; i < n; i++) {
        recs[i] =
            (struct fetch_range_rec){jobs[i].start, jobs[i].end, jobs[i].done, jobs[i].synced};
        jobs[i].idx_fd = ifd;
        jobs[i].i = i;
    }
    if (pwrite(ifd, &head, sizeof(head), 0) != (ssize_t)sizeof(head) ||
        pwrite(ifd, recs, n * sizeof(recs[0]), sizeof(head)) != (ssize_t)(n * sizeof(recs[0])) ||
        fdatasync(ifd) < 0)
        return err_set(e, -EIO, "cannot write %s: %m", idx);
    return 0;
}

/* Create TMP.ranges for jobs[0..n) of obj (a new layout; the caller made the bytes it counts
 * as synced durable). Returns its fd. */
static int ranges_create(const char *idx, const struct source_object *obj, struct range_job *jobs,
                         uint32_t n, struct err *e)
{
    int ifd = open(idx, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (ifd < 0)
        return err_set(e, neg_errno(), "cannot create %s: %m", idx);
    int r = ranges_write(ifd, idx, obj, jobs, n, e);
    if (r == 0 && fsync_parent_dir(idx) < 0)
        r = err_set(e, neg_errno(), "cannot sync the directory of %s: %m", idx);
    if (r < 0) {
        close(ifd);
        unlink(idx);
        return r;
    }
    return ifd;
}

/* TMP.ranges of this version: its ranges into jobs (contiguous, in order, covering the
 * object), each at its `done` when the file was written in this boot, else (a reboot since) at
 * its `synced`, and then rewritten as this boot's. Returns the number of ranges, 0 when there
 * is none to resume (missing, another version, not a layout, a file not of the object's
 * length), with *ifd open for the progress. */
static uint32_t ranges_load(const char *idx, const struct source_object *obj, int fd,
                            struct range_job *jobs, int *ifd)
{
    *ifd = open(idx, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (*ifd < 0)
        return 0;
    struct fetch_ranges_head want, have;
    memset(&have, 0, sizeof(have));
    bool ok = pread(*ifd, &have, sizeof(have), 0) == (ssize_t)sizeof(have);
    char boot[BOOT_ID_MAX] = "";
    boot_id_read(boot, sizeof(boot));
    bool same_boot = ok && !strncmp(have.boot, boot, sizeof(have.boot));
    ranges_head_of(obj, have.n, have.boot, &want);
    struct fetch_range_rec recs[SOURCE_DOWNLOAD_STREAMS_MAX];
    struct stat st;
    ok = ok && have.n >= 1 && have.n <= SOURCE_DOWNLOAD_STREAMS_MAX &&
         !memcmp(&have, &want, sizeof(have)) &&
         pread(*ifd, recs, have.n * sizeof(recs[0]), sizeof(have)) ==
             (ssize_t)(have.n * sizeof(recs[0])) &&
         fstat(fd, &st) == 0 && (uint64_t)st.st_size == obj->size;
    for (uint32_t i = 0; ok && i < have.n; i++) {
        uint64_t from = i ? recs[i - 1].end : 0;
        ok = recs[i].start == from && recs[i].end >= recs[i].start &&
             recs[i].synced <= recs[i].end - recs[i].start &&
             recs[i].done <= recs[i].end - recs[i].start;
        jobs[i].start = recs[i].start;
        jobs[i].end = recs[i].end;
        jobs[i].synced = recs[i].synced;
        /* `done` may lag `synced` on disk (it is the later write of the two) */
        jobs[i].done = same_boot && recs[i].done > recs[i].synced ? recs[i].done : recs[i].synced;
    }
    struct err e = {0};
    if (ok && recs[have.n - 1].end == obj->size &&
        (same_boot || ranges_write(*ifd, idx, obj, jobs, have.n, &e) == 0)) {
        for (uint32_t i = 0; i < have.n; i++) {
            jobs[i].idx_fd = *ifd;
            jobs[i].i = i;
        }
        return have.n;
    }
    if (e.code)
        log_warn("cannot resume the ranges", "error=%s", err_str(&e));
    close(*ifd);
    *ifd = -1;
    return 0;
}

/* The first GET of a download and its split (see above). */
struct split {
    struct fetch_context *c;
    struct fsm_run *run;
    struct db *db;
    const char *location, *url, *tmp, *idx;
    const struct source_object *obj;
    int fd;
    uint32_t streams; /* connections at most (1: never split) */
    uint32_t probe_ms;
    uint64_t split_rate; /* bytes/s */
    int64_t t_first;     /* mono ms of the first chunk (0: none yet) */
    uint64_t at_first;
    bool decided;
    struct fetch_stream *fs;
    struct follower *fl;
    struct dl_progress *pr;
    /* after the split: jobs[0] is the first GET (no thread), jobs[1..n) the other ranges */
    uint32_t n;
    int idx_fd;
    bool abandon; /* the other ranges are not needed any more (atomic) */
    bool unsplit; /* a range was refused (Range ignored): the first GET goes on to the end */
    uint64_t reported;
    struct range_job jobs[SOURCE_DOWNLOAD_STREAMS_MAX];
};

static void range_job_init(struct range_job *j, struct fetch_context *c, struct fsm_run *run,
                           const char *url, const struct source_object *obj, int fd,
                           const bool *abandon)
{
    j->url = url;
    j->so = source_opts(c, run);
    j->obj = obj;
    j->run = run;
    j->fd = fd;
    j->abandon = abandon;
}

/* Split the rest of the object after byte `at` (in the file, hashed) into sp->streams ranges:
 * the first GET keeps the first share. Nothing changes when it cannot be prepared: the first
 * GET goes on alone. */
static void split_start(struct split *sp, uint64_t at, uint64_t rate)
{
    uint32_t n = sp->streams;
    uint64_t size = sp->obj->size, part = (size - at) / n;
    struct err e = {0};
    for (uint32_t i = 0; i < n; i++) {
        struct range_job *j = &sp->jobs[i];
        range_job_init(j, sp->c, sp->run, sp->url, sp->obj, sp->fd, &sp->abandon);
        j->start = i ? at + i * part : 0;
        j->end = i + 1 == n ? size : at + (i + 1) * part;
        j->done = j->synced = i ? 0 : at;
    }
    /* The follower reads a prefix file; the file is about to stop being one. */
    follower_finish(sp->fl, false, NULL);
    /* Only the length fdatasync'ed before now (bytes_done) stays a prefix after a reboot. */
    int r = blobs_download_not_prefix(sp->db, sp->location);
    if (r == 0 && (r = -posix_fallocate(sp->fd, (off_t)at, (off_t)(size - at))) == -EOPNOTSUPP)
        r = ftruncate(sp->fd, (off_t)size) < 0 ? neg_errno() : 0;
    /* The first range's bytes so far and the file's new length, durable before TMP.ranges
     * counts them as synced. */
    if (r == 0 && fdatasync(sp->fd) < 0)
        r = neg_errno();
    if (r == 0)
        r = sp->idx_fd = ranges_create(sp->idx, sp->obj, sp->jobs, n, &e);
    if (r < 0) {
        if (ftruncate(sp->fd, (off_t)at) < 0)
            log_warn("cannot cut the download back", "location=%s error=%m", sp->location);
        log_warn("cannot split the download into ranges; one GET goes on", "location=%s error=%s",
                 sp->location, e.code ? err_str(&e) : strerror(-r));
        return;
    }
    log_info("downloading in ranges",
             "location=%s size=%" PRIu64 " streams=%u at=%" PRIu64 " first_rate_bps=%" PRIu64,
             sp->location, size, n, at, rate);
    sp->fs->checkpoint = NULL; /* TMP.ranges says what is in the file from now on */
    sp->fs->progress = NULL;   /* the sum of the ranges, by split_written() */
    sp->fs->stop_at = sp->jobs[0].end;
    sp->pr->ranges_synced = at;
    sp->n = n;
    for (uint32_t i = 1; i < n; i++)
        range_start(&sp->jobs[i]);
}

/* fetch_stream.written of the first GET: probe its rate, split, and then keep its range's
 * count (and the download's progress) up to date. */
static int split_written(uint64_t done, void *ud)
{
    struct split *sp = ud;
    if (sp->n) {
        int r = range_note(&sp->jobs[0], done);
        if (r < 0)
            return r;
        for (uint32_t i = 1; i < sp->n && !sp->unsplit; i++)
            if (__atomic_load_n(&sp->jobs[i].finished, __ATOMIC_ACQUIRE) &&
                sp->jobs[i].r == -ENOTSUP) {
                /* the server ignores Range: this GET fetches the rest itself */
                log_info("the server ignores Range: one GET", "location=%s", sp->location);
                sp->unsplit = true;
                sp->fs->stop_at = 0;
                __atomic_store_n(&sp->abandon, true, __ATOMIC_RELEASE);
            }
        ranges_progress(sp->jobs, sp->n, sp->obj->size, sp->pr, &sp->reported);
        return 0;
    }
    if (sp->decided || sp->streams < 2)
        return 0;
    int64_t now = mono_ms();
    if (!sp->t_first) {
        sp->t_first = now;
        sp->at_first = done;
        return 0;
    }
    if (now - sp->t_first < (int64_t)sp->probe_ms)
        return 0;
    sp->decided = true;
    uint64_t rate = (done - sp->at_first) * 1000 / (uint64_t)(now - sp->t_first);
    if (rate >= sp->split_rate || sp->obj->size - done < sp->streams * FETCH_RANGE_MIN_BYTES) {
        log_debug("one connection is enough", "location=%s rate_bps=%" PRIu64, sp->location, rate);
        return 0;
    }
    split_start(sp, done, rate);
    return 0;
}

/* The first GET of a split download ended with r: wait for the other ranges, hashing them
 * in order into h. Returns 0 when every byte is in the file and hashed; 1 when the first GET
 * stopped at its share and a range was refused (the server ignores Range: the caller goes on
 * with one GET from jobs[0].end); else the error (the ranges stay for the next attempt). */
static int split_finish(struct split *sp, int r, struct sha256 *h, uint64_t *received,
                        struct err *e)
{
    __atomic_store_n(&sp->jobs[0].finished, true, __ATOMIC_RELEASE);
    if (r < 0 || sp->unsplit)
        __atomic_store_n(&sp->abandon, true, __ATOMIC_RELEASE);
    int hr = 0;
    if (r == 0 && !sp->unsplit)
        hr = hash_ranges(sp->jobs, sp->n, sp->fd, sp->obj->size, sp->jobs[0].end, h, sp->pr);
    bool refused = false;
    for (uint32_t i = 1; i < sp->n; i++) {
        if (sp->jobs[i].th)
            pthread_join(sp->jobs[i].th, NULL);
        *received += sp->jobs[i].received;
        refused = refused || sp->jobs[i].r == -ENOTSUP;
        if (r == 0 && !sp->unsplit && sp->jobs[i].r < 0 && sp->jobs[i].r != -ENOTSUP) {
            r = sp->jobs[i].r;
            *e = sp->jobs[i].e;
        }
    }
    /* Stopped (cut, cancelled, Ctrl-C): what arrived stays, durable now (as one GET's does). */
    if (r < 0 && r != -ESTALE && !sp->unsplit)
        ranges_checkpoint(sp->jobs, sp->n, &sp->pr->ranges_synced);
    close(sp->idx_fd);
    sp->idx_fd = -1;
    if (r == 0 && !sp->unsplit && refused) {
        unlink(sp->idx);
        return 1;
    }
    if (r == 0 && hr < 0 && !sp->unsplit)
        r = err_set(e, hr == -EAGAIN ? -EIO : hr, "cannot hash %s: %s", sp->tmp,
                    hr == -EAGAIN ? "a range ended early" : strerror(-hr));
    if (r == 0 || r == -ESTALE)
        unlink(sp->idx);
    return r;
}

/* A parallel download of this version left in this boot (TMP.ranges): every range resumes at
 * its byte, each on its own connection, hashed in order from the file's start. True with *res
 * when it decided the attempt; false when there is nothing to resume, or the server now
 * ignores Range (one GET fetches it from the start). */
static bool download_parallel(struct fetch_context *c, struct fsm_run *run, struct db *db,
                              const char *location, const char *url,
                              const struct source_object *obj, int fd, const char *tmp,
                              const char *idx, struct fsm_result *res)
{
    struct range_job jobs[SOURCE_DOWNLOAD_STREAMS_MAX] = {0};
    bool abandon = false;
    int ifd;
    uint32_t n = ranges_load(idx, obj, fd, jobs, &ifd);
    if (!n)
        return false;
    /* (no space check: the file was preallocated when it was split) */
    struct dl_progress pr = {.run = run, .location = location, .size = obj->size};
    struct dl_done dd = {.location = location, .obj = obj, .fd = fd, .tmp = tmp, .t0 = mono_ms()};
    for (uint32_t i = 0; i < n; i++) {
        range_job_init(&jobs[i], c, run, url, obj, fd, &abandon);
        dd.resumed += jobs[i].done;
        pr.ranges_synced += jobs[i].synced;
    }
    pr.counted = dd.resumed;
    log_info("resuming download in ranges", "location=%s size=%" PRIu64 " streams=%u", location,
             obj->size, n);
    fsm_run_set_progress(run, "download", dd.resumed, obj->size);
    for (uint32_t i = 0; i < n; i++)
        range_start(&jobs[i]);
    struct sha256 h = {0};
    int r = sha256_init(&h);
    int hr = r == 0 ? hash_ranges(jobs, n, fd, obj->size, 0, &h, &pr) : r;
    if (hr < 0)
        __atomic_store_n(&abandon, true, __ATOMIC_RELEASE);
    struct err e = {0};
    r = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (jobs[i].th)
            pthread_join(jobs[i].th, NULL);
        dd.received += jobs[i].received;
        /* the first failure says why; a server ignoring Range wins (it decides what next) */
        if (jobs[i].r < 0 && (r == 0 || jobs[i].r == -ENOTSUP)) {
            r = jobs[i].r;
            e = jobs[i].e;
        }
    }
    /* Stopped (cut, cancelled, Ctrl-C): what arrived stays, durable now. */
    if (r < 0 && r != -ENOTSUP && r != -ESTALE)
        ranges_checkpoint(jobs, n, &pr.ranges_synced);
    close(ifd);
    if (r == 0 && hr < 0)
        r = err_set(&e, hr == -EAGAIN ? -EIO : hr, "cannot hash %s: %s", tmp,
                    hr == -EAGAIN ? "a range ended early" : strerror(-hr));
    if (r == 0)
        r = sha256_final(&h, dd.sha);
    else
        sha256_free(&h);
    if (r == 0 && fdatasync(fd) < 0)
        r = err_set(&e, neg_errno(), "cannot sync %s: %m", tmp);
    if (r == 0 || r == -ENOTSUP || r == -ESTALE)
        unlink(idx);
    if (r == -ENOTSUP) {
        log_info("the server ignores Range: one GET", "location=%s", location);
        if (ftruncate(fd, 0) < 0) {
            *res = fsm_retry("cannot empty %s: %m", tmp);
            return true;
        }
        return false;
    }
    if (r == -ESTALE) {
        if (ftruncate(fd, 0) == 0)
            blobs_download_put(db, location, NULL, tmp, 0, 0);
        *res = fsm_retry("%s changed during the download; starting over", location);
        return true;
    }
    if (r == -ENOSPC || e.code == -ENOSPC) {
        *res = out_of_space(db, location, tmp, fd, obj->size, err_str(&e));
        return true;
    }
    *res = r < 0 ? source_failure(r, &e) : finish_download(c, run, db, &dd);
    return true;
}

/* ---- one download at a time ----------------------------------------------------------------
 * The temp file is named from the object's identity (tmp_path_for), and the run that
 * downloads into it holds an flock on it: two runs that want the same bytes (two locations of
 * one identity, the families' shared layers processed at once) meet at one file. The second
 * waits for the lock (download_lock); when it gets it, the file is either
 *  - still at its path: the first run stopped (killed, cancelled, failed): the second resumes
 *    its bytes as its own (the resume hint is found by the temp file, download_row_for_tmp);
 *  - moved into the store (renamed to its digest) or dropped there as a duplicate: the first
 *    run finished; the second hashes the file it holds open (a local read) and, when the store
 *    has that blob, takes it without a GET (adopt_finished).
 * The kernel drops the lock of a dead process: nothing stale is left to break. */

/* Remove path and its TMP.ranges (the caller holds its lock). */
static void tmp_remove_locked(const char *path)
{
    _cleanup_free_ char *idx = ranges_path(path);
    unlink(path);
    if (idx)
        unlink(idx);
}

/* Remove path and its TMP.ranges when no run holds it. */
static void tmp_remove_unused(const char *path)
{
    _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
        tmp_remove_locked(path);
}

/* location's partial download of an older version (another identity, so another temp file)
 * is worth nothing now: removed, unless a run still writes it. Its row is replaced when this
 * download records its own. */
static void drop_older_version(struct db *db, const char *location, const char *tmp)
{
    struct blob_download dr;
    if (blobs_download_get(db, location, &dr) == 1 && dr.tmp_path && strcmp(dr.tmp_path, tmp))
        tmp_remove_unused(dr.tmp_path);
    blob_download_free(&dr);
}

/* Does fd still have path's inode? */
static bool fd_is_path(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* The run that held tmp before us finished when its marker names a digest: take that blob
 * (after the integrity rule: hashed unless sealed) and end the download without a GET. False
 * when there is no marker, or its blob is not usable (then the marker goes, and this run
 * downloads). */
static bool adopt_finished(struct fetch_context *c, struct fsm_run *run, struct db *db,
                           const char *location, const char *tmp, const struct source_object *obj,
                           int fd, struct fsm_result *res)
{
    char digest[DIGEST_STR_LEN + 1];
    if (!done_marker_read(tmp, digest))
        return false;
    struct dl_done dd = {
        .location = location, .obj = obj, .fd = fd, .t0 = mono_ms(), .adopted = digest};
    log_info("another run downloaded the same object: taking its blob", "location=%s digest=%s",
             location, digest);
    *res = finish_download(c, run, db, &dd);
    if (res->outcome == FSM_OK)
        return true;
    done_marker_remove(tmp);
    return false;
}

/* Open and lock tmp (*fd) for this download, waiting while another run holds it. False with
 * *res set when the run ends here: the other run's blob was taken, or the wait was cancelled,
 * or the file cannot be had. */
static bool download_lock(struct fetch_context *c, struct fsm_run *run, struct db *db,
                          const char *location, const struct source_object *obj, const char *tmp,
                          int *fd, struct fsm_result *res)
{
    bool waited = false;
    for (;;) {
        *fd = open(tmp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (*fd < 0) {
            *res = fsm_retry("cannot open %s: %m", tmp);
            return false;
        }
        while (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
            if (errno != EWOULDBLOCK && errno != EINTR) {
                *res = fsm_retry("cannot lock %s: %m", tmp);
                return false;
            }
            if (!waited)
                log_info("waiting for another run's download of the same object",
                         "location=%s tmp=%s", location, tmp);
            waited = true;
            if (fsm_run_sleep_ms(run, FETCH_WAIT_POLL_MS) < 0) {
                *res = fsm_retry("cancelled while waiting for another download of %s", location);
                return false;
            }
        }
        if (adopt_finished(c, run, db, location, tmp, obj, *fd, res)) {
            /* a file at the path now is one this open made: nothing of the object */
            if (fd_is_path(*fd, tmp))
                tmp_remove_locked(tmp);
            return false;
        }
        /* The file we locked is the one at tmp: ours to write (else the run that held it
         * moved or removed it: open the path again). Either way the run that held it may have
         * recorded the identity since (its marker is gone then): reuse it. */
        bool mine = fd_is_path(*fd, tmp);
        if (reuse_by_identity(c, run, db, location, tmp, obj, res)) {
            if (mine)
                tmp_remove_locked(tmp);
            return false;
        }
        if (mine)
            return true;
        close(*fd);
        *fd = -1;
    }
}

static struct fsm_result download(struct fsm_run *run, void *ud)
{
    struct fetch_context *c = ud;
    _cleanup_request_ struct fetch_request rq = {0};
    if (fetch_request_parse(run, &rq) < 0)
        return fsm_abort("invalid fetch request");
    struct db *db = run_db(run);
    struct err e = {0};
    struct source_options so = source_opts(c, run);
    _cleanup_source_ struct source *s = NULL;
    _cleanup_free_ char *key = NULL;
    _cleanup_free_ char *url = fetch_credentials_for_request(rq.location);
    if (!url)
        return fsm_retry("out of memory");
    int r = source_open(url, &so, &s, &key, &e);
    if (r < 0)
        return source_failure(r, &e);
    /* The version we fetch: its size and ETag now. */
    _cleanup_object_ struct source_object obj = {0};
    r = source_stat(s, key, &obj, &e);
    if (r < 0)
        return source_failure(r, &e);
    if (c->policy.max_blob_bytes && obj.size > c->policy.max_blob_bytes)
        return rejected("%s: %" PRIu64 " bytes, larger than the limit of "
                        "%" PRIu64 " bytes",
                        rq.location, obj.size, c->policy.max_blob_bytes);

    _cleanup_free_ char *tmp = tmp_path_for(c, obj.identity ? obj.identity : rq.location);
    if (!tmp || mkdir_p(c->tmp_dir, 0700) < 0)
        return fsm_retry("cannot prepare %s", c->tmp_dir);
    struct fsm_result reused;
    if (reuse_by_identity(c, run, db, rq.location, tmp, &obj, &reused))
        return reused;
    drop_older_version(db, rq.location, tmp);
    /* One download of these bytes at a time: another run holding the temp file is fetching
     * them; wait for it, then take its blob or go on from its bytes. */
    _cleanup_close_ int fd = -1;
    struct fsm_result locked;
    if (!download_lock(c, run, db, rq.location, &obj, tmp, &fd, &locked))
        return locked;

    /* Large objects: parallel ranges (a strong ETag keeps them one version). A parallel
     * download of this version left in this boot resumes every range at its byte. */
    bool strong = source_etag_is_strong(obj.etag);
    uint32_t streams = strong ? source_download_streams(s, obj.size) : 1;
    _cleanup_free_ char *idx = ranges_path(tmp);
    if (!idx)
        return fsm_retry("out of memory");
    struct fsm_result pres;
    if (streams > 1 && download_parallel(c, run, db, rq.location, url, &obj, fd, tmp, idx, &pres))
        return pres;
    /* A temp file laid out in ranges (another version, another boot) is not a prefix: one
     * GET starts it over. */
    bool was_ranges = unlink(idx) == 0;

    /* Resume only what is on disk for sure, of the same version: that takes a strong ETag
     * (a weak one, or none, cannot prove the bytes are the same; start from byte 0). */
    struct blob_download dr;
    uint64_t offset = 0;
    if (download_row_for_tmp(db, rq.location, tmp, &dr) == 1 && strong && !was_ranges && dr.etag &&
        !strcmp(dr.etag, obj.etag))
        offset = resume_offset(fd, &dr, obj.size);
    blob_download_free(&dr);
    struct sha256 h = {0};
    r = sha256_init(&h);
    if (r == 0 && ftruncate(fd, (off_t)offset) < 0)
        r = neg_errno();
    /* What is kept is made durable before it is recorded as such. */
    if (r == 0 && offset && fdatasync(fd) < 0)
        r = neg_errno();
    if (r == 0 && offset)
        r = hash_prefix(fd, offset, &h);
    if (r == 0 && lseek(fd, (off_t)offset, SEEK_SET) < 0)
        r = neg_errno();
    if (r == 0)
        r = blobs_download_put(db, rq.location, obj.etag, tmp, offset, obj.size);
    if (r < 0) {
        sha256_free(&h);
        if (r == -ENOSPC) /* the database's write: a full disk, not a transient error */
            return out_of_space(db, rq.location, tmp, fd, obj.size, "recording the download");
        return fsm_retry("cannot prepare the download in %s: %s", tmp, strerror(-r));
    }
    if (offset)
        log_info("resuming download", "location=%s offset=%" PRIu64 " size=%" PRIu64, rq.location,
                 offset, obj.size);

    struct fsm_result no_room;
    if (!space_for_download(c, db, rq.location, tmp, offset,
                            obj.size > offset ? obj.size - offset : 0, &no_room)) {
        sha256_free(&h);
        return no_room;
    }

    struct follower fl;
    follower_start(&fl, tmp, obj.size, &c->policy);
    struct dl_progress pr = {.run = run,
                             .db = db,
                             .location = rq.location,
                             .etag = obj.etag,
                             .tmp = tmp,
                             .size = obj.size,
                             .counted = offset};
    struct fetch_stream fs = {.fd = fd,
                              .hash = &h,
                              .max_bytes = c->policy.max_blob_bytes,
                              .progress = on_progress,
                              .progress_ud = &pr,
                              .checkpoint = on_checkpoint,
                              .checkpoint_ud = &pr};
    /* The first GET: split into ranges when its connection proves slow (above). */
    struct split sp = {.c = c,
                       .run = run,
                       .db = db,
                       .location = rq.location,
                       .url = url,
                       .tmp = tmp,
                       .idx = idx,
                       .obj = &obj,
                       .fd = fd,
                       .streams =
                           obj.size >= offset + streams * FETCH_RANGE_MIN_BYTES ? streams : 1,
                       .probe_ms = source_stream_probe_ms(s),
                       .split_rate = source_stream_split_rate(s),
                       .fs = &fs,
                       .fl = &fl,
                       .pr = &pr,
                       .idx_fd = -1};
    fs.written = split_written;
    fs.written_ud = &sp;
    fsm_run_set_progress(run, "download", offset, obj.size);
    struct source_get_info info = {0};
    int64_t t0 = mono_ms();
    /* The version HEAD described: its strong ETag and its size bound the transfer. */
    struct source_expect want = {
        .etag = strong ? obj.etag : NULL, .has_size = true, .size = obj.size};
    uint64_t received = 0, total;
    for (uint64_t from = offset;;) {
        r = fetch_stream_object(s, key, from, &want, &fs, &info, &e);
        received += info.bytes_received;
        total = from + info.bytes;
        if (!sp.n)
            break;
        r = split_finish(&sp, r, &h, &received, &e);
        total = r == 0 ? obj.size : sp.jobs[0].start + sp.jobs[0].done;
        if (r != 1)
            break;
        /* The server ignores Range, and the first GET stopped at its share: the rest with
         * one GET from there, as a prefix again. */
        from = sp.jobs[0].end;
        sp = (struct split){.streams = 1, .idx_fd = -1};
        fs.stop_at = 0;
        fs.checkpoint = on_checkpoint;
        fs.progress = on_progress;
        r = ftruncate(fd, (off_t)from) < 0 || lseek(fd, (off_t)from, SEEK_SET) < 0 ||
                    fdatasync(fd) < 0
                ? neg_errno()
                : blobs_download_put(db, rq.location, obj.etag, tmp, from, obj.size);
        if (r < 0) {
            err_set(&e, r, "cannot go on with one GET in %s: %s", tmp, strerror(-r));
            break;
        }
    }
    bool split = sp.n > 0;
    if (r == 0 && (total != obj.size || (info.size && info.size != obj.size)))
        r = err_set(&e, -ECONNRESET, "%s: got %" PRIu64 " bytes, expected %" PRIu64, rq.location,
                    total, obj.size);
    uint8_t d[SHA256_LEN];
    if (r < 0) {
        sha256_free(&h);
    } else {
        r = sha256_final(&h, d);
        if (r == 0 && fsync(fd) < 0)
            r = err_set(&e, neg_errno(), "cannot sync %s: %m", tmp);
    }
    bool scanned = follower_finish(&fl, r == 0, d);
    if (r == -ESTALE) {
        /* Another version now: what we have is worthless. Start over next attempt. */
        unlink(idx);
        if (ftruncate(fd, 0) == 0)
            blobs_download_put(db, rq.location, NULL, tmp, 0, 0);
        return fsm_retry("%s changed during the download; starting over", rq.location);
    }
    if (r == -ENOSPC || e.code == -ENOSPC)
        return out_of_space(db, rq.location, tmp, fd, obj.size, err_str(&e));
    if (r < 0) {
        /* Cut, cancelled (Ctrl-C, SIGTERM, runs cancel), stalled: what arrived stays, made
         * durable now, so that even a reboot before the next attempt keeps it (a split
         * download: TMP.ranges says what is in the file, in this boot). */
        if (!split && info.bytes && fdatasync(fd) == 0)
            on_checkpoint(total, &pr);
        return source_failure(r, &e);
    }
    struct dl_done done = {.location = rq.location,
                           .obj = &obj,
                           .fd = fd,
                           .tmp = tmp,
                           .received = received,
                           .resumed = offset,
                           .t0 = t0,
                           .scan = scanned ? &fl : NULL};
    memcpy(done.sha, d, sizeof(d));
    return finish_download(c, run, db, &done);
}

/* ---- validate ----------------------------------------------------------------------------- */

static void on_scan_progress(uint64_t done, uint64_t total, void *ud)
{
    fsm_run_set_progress(ud, "validate", done, total);
}

/* Copy one member of an archive into the store; returns its digest, path and seal. */
static struct fsm_result split_member(struct fetch_context *c, struct db *db, const char *archive,
                                      const struct archive_layer_ref *l, char *digest,
                                      char **path_out, uint64_t *size_out, struct blob_seal *seal)
{
    _cleanup_free_ char *tmpl = NULL;
    if (asprintf(&tmpl, "%s/split-XXXXXX", c->tmp_dir) < 0)
        return fsm_retry("out of memory");
    _cleanup_close_ int fd = mkostemp(tmpl, O_CLOEXEC);
    if (fd < 0)
        return fsm_retry("cannot create a temp file in %s: %m", c->tmp_dir);
    struct err e = {0};
    int r = archive_member_copy(archive, l->member, fd, c->policy.max_blob_bytes, &e);
    if (r == 0 && fsync(fd) < 0)
        r = neg_errno();
    uint8_t h[SHA256_LEN];
    uint64_t size = 0;
    if (r == 0)
        r = sha256_file(tmpl, h, &size);
    if (r < 0) {
        unlink(tmpl);
        if (r == -ENOSPC) {
            db_release_reserve(db);
            return no_space("no space left in %s to split layer %s out "
                            "of its archive; free space or use a --state-dir on a larger file "
                            "system, then fetch again",
                            c->tmp_dir, l->member);
        }
        if (r == -EIO || r == -ENOMEM)
            return fsm_retry("layer %s: %s", l->member, err_str(&e));
        return rejected("layer %s: %s", l->member, e.code ? err_str(&e) : strerror(-r));
    }
    digest_format(h, digest);
    if (l->digest && strcmp(l->digest, digest) != 0) {
        unlink(tmpl);
        return rejected("layer %s: its content hashes to %s, but the "
                        "manifest declares %s",
                        l->member, digest, l->digest);
    }
    char *final = blob_path(c, digest);
    if (!final || mkdir_p_blobs(c) < 0) {
        unlink(tmpl);
        free(final);
        return fsm_retry("cannot prepare %s", c->blob_dir);
    }
    /* The same layer stored before: used only if it passes the integrity rule. */
    int have = blobfile_verify(db, c->blob_dir, digest, size, final, seal, NULL, 0);
    if (have == 1)
        unlink(tmpl);
    else if (have < 0 || rename(tmpl, final) < 0 || fsync_parent_dir(final) < 0 ||
             (r = blobfile_seal_fd(fd, seal)) < 0) {
        int err = have < 0 ? -have : r < 0 ? -r : errno;
        unlink(tmpl);
        struct fsm_result res = fsm_retry("cannot store %s: %s", final, strerror(err));
        free(final);
        return res;
    }
    *path_out = final;
    *size_out = size;
    return fsm_ok();
}

/* How validate had a layer's diff id (its log line's diff_id field). */
enum diff_id_how {
    DIFF_ID_KNOWN,       /* the digest (a plain tar) or recorded before */
    DIFF_ID_FOLLOWED,    /* decompressed while downloading, with the scan */
    DIFF_ID_DECOMPRESSED /* decompressed now */
};

static const char *diff_id_how_name(enum diff_id_how h)
{
    return h == DIFF_ID_FOLLOWED       ? "while-downloading"
           : h == DIFF_ID_DECOMPRESSED ? "decompressed"
                                       : "known";
}

/* The diff id of a layer just scanned: followed (NULL: none) is the one the download's scan
 * computed from the same bytes (archive_scan_follow), else layer_diff_id(). false with *res
 * (retry for I/O, else rejected: a stream that does not decompress or goes past a limit) when
 * it cannot be had. */
static bool validate_diff_id(struct fetch_context *c, struct db *db, const char *location,
                             const char *digest, enum blob_format f, const char *path,
                             const char *followed, char out[DIGEST_STR_LEN + 1],
                             enum diff_id_how *how, struct fsm_result *res)
{
    if (followed) {
        snprintf(out, DIGEST_STR_LEN + 1, "%s", followed);
        diff_id_record(db, digest, out);
        *how = DIFF_ID_FOLLOWED;
        return true;
    }
    struct err e = {0};
    int r = layer_diff_id(c, db, digest, f, path, out, &e);
    *how = r == 1 ? DIFF_ID_DECOMPRESSED : DIFF_ID_KNOWN;
    if (r >= 0)
        return true;
    *res = r == -EIO || r == -ENOMEM ? fsm_retry("diff id of %s: %s", location, err_str(&e))
                                     : rejected("%s: %s", location, err_str(&e));
    return false;
}

static struct fsm_result validate_blob(struct fsm_run *run, void *ud)
{
    struct fetch_context *c = ud;
    _cleanup_json_ json_t *resp = fetch_response_load(run);
    const char *path = json_string_value(json_object_get(resp, "path"));
    const char *digest = json_string_value(json_object_get(resp, "digest"));
    const char *location = json_string_value(json_object_get(resp, "location"));
    uint64_t size = (uint64_t)json_integer_value(json_object_get(resp, "size"));
    if (!path || !digest || !location)
        return fsm_abort("validate: the download left no blob in the response");
    /* The file must still be what the download hashed (store/blobfile.h). */
    struct blob_seal seal;
    struct stat fst;
    if (!fetch_seal_parse(json_object_get(resp, "seal"), size, &seal))
        return fsm_abort("validate: the download recorded no seal of %s; fetch again", path);
    if (stat(path, &fst) < 0 || !blobfile_seal_matches(&fst, &seal)) {
        blobfile_quarantine(run_db(run), c->blob_dir, digest, path,
                            "changed on disk between download and validate");
        return fsm_abort("validate: %s changed on disk after it was downloaded (quarantined); "
                         "fetch again",
                         path);
    }
    /* Detected and, for a layer, scanned in one pass over the blob; a compressed layer
     * scanned while it downloaded (the download's "scanned", of the same sealed bytes) needs
     * only its first block checked as archive_scan_detect() does. */
    enum blob_format fmt = BLOB_UNKNOWN;
    char why[256] = "";
    struct err e = {0};
    struct archive_stats stats = {0};
    int r;
    bool prescanned = false;
    json_t *pre = json_object_get(resp, "scanned");
    enum blob_format pre_fmt =
        fetch_format_parse(json_string_value(json_object_get(pre, "format")));
    const char *pre_diff_id = json_string_value(json_object_get(pre, "diff_id"));
    if (blob_format_is_layer(pre_fmt) && archive_detect_head(path, &fmt, why, sizeof(why)) == 0 &&
        fmt == pre_fmt) {
        stats.entries = (uint64_t)json_integer_value(json_object_get(pre, "entries"));
        stats.bytes = (uint64_t)json_integer_value(json_object_get(pre, "bytes"));
        prescanned = true;
        r = 0;
        if (pre_diff_id && (fmt == BLOB_TAR || !digest_valid(pre_diff_id)))
            pre_diff_id = NULL;
    } else {
        archive_set_progress(on_scan_progress, run);
        r = archive_scan_detect(path, &c->policy, &fmt, why, sizeof(why), &stats, &e);
    }
    if (r < 0 && fmt == BLOB_UNKNOWN) {
        archive_set_progress(NULL, NULL);
        return r == -ENOENT ? fsm_abort("validate: %s vanished", path)
                            : fsm_retry("cannot read %s: %s", path, strerror(-r));
    }
    if (fmt == BLOB_UNKNOWN) {
        archive_set_progress(NULL, NULL);
        return rejected("%s is not an image layer: %s", location, why[0] ? why : "unknown format");
    }
    json_object_set_new(resp, "format", json_string(blob_format_name(fmt)));
    json_t *layers = json_array();
    json_object_set_new(resp, "layers", layers);
    if (blob_format_is_layer(fmt)) {
        archive_set_progress(NULL, NULL);
        if (r == -EIO || r == -ENOMEM)
            return fsm_retry("scanning %s: %s", location, err_str(&e));
        if (r < 0)
            return rejected("%s: %s", location, err_str(&e));
        _cleanup_request_ struct fetch_request rq = {0};
        char diff_id[DIGEST_STR_LEN + 1];
        struct fsm_result res;
        if (fetch_request_parse(run, &rq) < 0)
            return fsm_abort("invalid fetch request");
        enum diff_id_how how;
        if (!validate_diff_id(c, run_db(run), location, digest, fmt, path,
                              prescanned ? pre_diff_id : NULL, diff_id, &how, &res) ||
            diff_id_mismatch(location, rq.diff_id, diff_id, &res))
            return res;
        json_array_append_new(layers,
                              fetch_layer_json(digest, diff_id, size, fmt, path, NULL, &seal));
        log_info("layer validated",
                 "location=%s digest=%s format=%s entries=%" PRIu64 " bytes=%" PRIu64
                 " scanned=%s diff_id_from=%s",
                 location, digest, blob_format_name(fmt), stats.entries, stats.bytes,
                 prescanned ? "while-downloading" : "now", diff_id_how_name(how));
    } else {
        _cleanup_request_ struct fetch_request rq = {0};
        if (fetch_request_parse(run, &rq) == 0 && rq.diff_id) {
            archive_set_progress(NULL, NULL);
            return rejected("%s: a %s, not the image layer its image config declares", location,
                            blob_format_name(fmt));
        }
        struct archive_manifest m = {0};
        r = archive_manifest_read(path, &m, &e);
        if (r < 0 || m.n_layers == 0) {
            archive_set_progress(NULL, NULL);
            archive_manifest_free(&m);
            if (r == -EIO || r == -ENOMEM)
                return fsm_retry("reading the manifest of %s: %s", location, err_str(&e));
            return rejected("%s: %s", location,
                            r < 0 ? err_str(&e) : "the manifest lists no layers");
        }
        if (m.repo_tag)
            json_object_set_new(resp, "repo_tag", json_string(m.repo_tag));
        for (size_t i = 0; i < m.n_layers; i++) {
            char ld[DIGEST_STR_LEN + 1];
            _cleanup_free_ char *lp = NULL;
            uint64_t lsize = 0;
            struct blob_seal lseal;
            struct fsm_result sr =
                split_member(c, run_db(run), path, &m.layers[i], ld, &lp, &lsize, &lseal);
            if (sr.outcome != FSM_OK) {
                archive_set_progress(NULL, NULL);
                archive_manifest_free(&m);
                return sr;
            }
            enum blob_format lf = BLOB_UNKNOWN;
            r = archive_scan_detect(lp, &c->policy, &lf, why, sizeof(why), &stats, &e);
            if (r < 0 && lf == BLOB_UNKNOWN) {
                archive_set_progress(NULL, NULL);
                archive_manifest_free(&m);
                return fsm_retry("cannot read %s: %s", lp, strerror(-r));
            }
            if (!blob_format_is_layer(lf)) {
                archive_set_progress(NULL, NULL);
                struct fsm_result res = rejected("%s: member %s is not "
                                                 "an image layer: %s",
                                                 location, m.layers[i].member, why);
                archive_manifest_free(&m);
                return res;
            }
            if (r < 0) {
                archive_set_progress(NULL, NULL);
                struct fsm_result res =
                    r == -EIO || r == -ENOMEM
                        ? fsm_retry("scanning %s: %s", m.layers[i].member, err_str(&e))
                        : rejected("%s: layer %s: %s", location, m.layers[i].member, err_str(&e));
                archive_manifest_free(&m);
                return res;
            }
            char ldiff[DIGEST_STR_LEN + 1];
            struct fsm_result dr;
            enum diff_id_how how;
            if (!validate_diff_id(c, run_db(run), location, ld, lf, lp, NULL, ldiff, &how, &dr)) {
                archive_set_progress(NULL, NULL);
                archive_manifest_free(&m);
                return dr;
            }
            json_array_append_new(
                layers, fetch_layer_json(ld, ldiff, lsize, lf, lp, m.layers[i].member, &lseal));
        }
        log_info("archive validated", "location=%s digest=%s format=%s layers=%zu", location,
                 digest, blob_format_name(fmt), m.n_layers);
        archive_manifest_free(&m);
        archive_set_progress(NULL, NULL);
    }
    if (fetch_response_store(run, resp) < 0)
        return fsm_retry("out of memory");
    return fsm_ok();
}

/* A rejected blob is not kept: its file goes unless the store already knew that digest (from
 * another location), and the resume hint of the location goes too. Nothing was recorded. */
static void discard_rejected(struct db *db, const char *location, const char *digest,
                             const char *path)
{
    /* cannot tell (an error): keep it, gc will decide */
    bool known = blobs_exists(db, digest) != 0;
    if (!known && unlink(path) == 0)
        log_info("rejected blob removed", "location=%s digest=%s", location, digest);
    blobs_download_delete(db, location);
}

static struct fsm_result validate(struct fsm_run *run, void *ud)
{
    struct fsm_result res = validate_blob(run, ud);
    if (res.outcome == FSM_ABORT && res.kind == ERR_KIND_REJECTED) {
        _cleanup_json_ json_t *resp = fetch_response_load(run);
        const char *path = json_string_value(json_object_get(resp, "path"));
        const char *digest = json_string_value(json_object_get(resp, "digest"));
        const char *location = json_string_value(json_object_get(resp, "location"));
        if (path && digest && location)
            discard_rejected(run_db(run), location, digest, path);
    }
    return res;
}

/* ---- record ------------------------------------------------------------------------------- */

static int record_commit(struct db *db, void *ud)
{
    struct fetch_result *fr = ud;
    int64_t now = now_ms();
    int r = blobs_record(db, fr->digest, fr->size, blob_format_name(fr->format),
                         fr->sealed ? &fr->seal : NULL, now);
    if (r == 0)
        r = blobs_source_record(db, fr->location, fr->etag, fr->size, fr->digest, now);
    /* Verified bytes: from now on the same identity, anywhere, is this blob. */
    if (r == 0 && fr->identity)
        r = blobs_identity_record(db, fr->identity, fr->size, fr->digest, fr->location, now);
    for (size_t i = 0; r == 0 && i < fr->n_layers; i++) {
        const struct fetch_layer *l = &fr->layers[i];
        if (!l->member)
            continue;
        r = blobs_record(db, l->digest, l->size, blob_format_name(l->format),
                         l->sealed ? &l->seal : NULL, now);
        _cleanup_free_ char *loc = NULL;
        if (r == 0 && asprintf(&loc, "%s#%s", fr->location, l->member) < 0)
            r = -ENOMEM;
        if (r == 0)
            r = blobs_source_record(db, loc, fr->etag, l->size, l->digest, now);
    }
    for (size_t i = 0; r == 0 && i < fr->n_layers; i++)
        if (fr->layers[i].diff_id[0])
            r = oci_diff_id_set(db, fr->layers[i].digest, fr->layers[i].diff_id);
    if (r == 0)
        r = blobs_download_delete(db, fr->location);
    return r;
}

static void result_freep(void *p)
{
    fetch_result_free(p);
    free(p);
}

static struct fsm_result record(struct fsm_run *run, void *ud)
{
    (void)ud;
    size_t len = 0;
    const void *data = fsm_run_response(run, &len);
    struct fetch_result *fr = calloc(1, sizeof(*fr));
    if (!fr)
        return fsm_retry("out of memory");
    struct err e = {0};
    int r = fetch_response_parse(data, len, fr, &e);
    if (r < 0) {
        free(fr);
        return fsm_abort("record: %s", err_str(&e));
    }
    if (fr->n_layers == 0) {
        result_freep(fr);
        return fsm_abort("record: validation listed no layers");
    }
    r = fsm_run_on_commit(run, record_commit, fr, result_freep);
    if (r < 0) {
        result_freep(fr);
        return fsm_retry("cannot register the record: %s", strerror(-r));
    }
    return fsm_ok();
}

/* ---- registration ------------------------------------------------------------------------- */

static const struct fsm_retry_policy local_policy = {
    .max_attempts = FETCH_LOCAL_ATTEMPTS,
    .initial_backoff_ms = 100,
    .max_backoff_ms = 2000,
    .multiplier = 2.0,
    .jitter = 0.3,
    .attempt_timeout_ms = 0,
    .on_exhausted = FSM_ABORT,
};

static const struct fsm_retry_policy download_policy = {
    .max_attempts = FETCH_DOWNLOAD_ATTEMPTS,
    .initial_backoff_ms = FETCH_DOWNLOAD_BACKOFF_MS,
    .max_backoff_ms = FETCH_DOWNLOAD_BACKOFF_MAX_MS,
    .multiplier = 2.0,
    .jitter = 0.3,
    .attempt_timeout_ms = FETCH_DOWNLOAD_TIMEOUT_MS,
    .on_exhausted = FSM_ABORT,
};

static const struct fsm_retry_policy validate_policy = {
    .max_attempts = FETCH_VALIDATE_ATTEMPTS,
    .initial_backoff_ms = 500,
    .max_backoff_ms = 5000,
    .multiplier = 2.0,
    .jitter = 0.3,
    .attempt_timeout_ms = FETCH_VALIDATE_TIMEOUT_MS,
    .on_exhausted = FSM_ABORT,
};

/* The steps that talk to the source: their messages (stored with the run) may quote the URL
 * the source was given, credentials included. */
static struct fsm_result t_check_exists(struct fsm_run *run, void *ud)
{
    struct fsm_result res = check_exists(run, ud);
    text_strip_userinfo(res.message);
    return res;
}

static struct fsm_result t_download(struct fsm_run *run, void *ud)
{
    struct fsm_result res = download(run, ud);
    text_strip_userinfo(res.message);
    return res;
}

/* The end step, whatever the outcome: the marker of the download this run finished
 * (done_marker_write) goes, its record step having recorded the identity (or the run failed,
 * and the next run downloads). */
static void fetch_end(struct fsm_run *run, enum fsm_outcome outcome, const char *error, void *ud)
{
    (void)outcome;
    (void)error;
    size_t len = 0;
    const void *data = fsm_run_response(run, &len);
    _cleanup_json_ json_t *j = data ? json_loadb(data, len, 0, NULL) : NULL;
    /* the temp file's name: the identity, else the location (tmp_path_for) */
    const char *name = json_string_value(json_object_get(j, "identity"));
    _cleanup_request_ struct fetch_request rq = {0};
    if (!name && fetch_request_parse(run, &rq) == 0)
        name = rq.location;
    _cleanup_free_ char *tmp = name ? tmp_path_for(ud, name) : NULL;
    if (tmp)
        done_marker_remove(tmp);
}

int fetch_register(struct fsm_manager *m, const struct fetch_config *cfg,
                   struct fsm_machine **machine, struct fetch_context **ctx)
{
    struct fetch_context *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->blob_dir = strdup(cfg->blob_dir);
    c->tmp_dir = strdup(cfg->tmp_dir);
    c->source = cfg->source;
    c->region = dup_or_null(cfg->source.region);
    c->endpoint = dup_or_null(cfg->source.endpoint);
    c->source.region = c->region;
    c->source.endpoint = c->endpoint;
    c->source.cancelled = NULL;
    c->source.cancel_ud = NULL;
    c->policy = cfg->policy;
    if (!c->blob_dir || !c->tmp_dir || (cfg->source.region && !c->region) ||
        (cfg->source.endpoint && !c->endpoint)) {
        fetch_context_free(c);
        return -ENOMEM;
    }
    static const struct fsm_transition_def transitions[] = {
        {"check-exists", t_check_exists, &local_policy},
        {"download", t_download, &download_policy},
        {"validate", validate, &validate_policy},
        {"record", record, &local_policy},
    };
    static const fsm_finalizer_fn finalizers[] = {fetch_end};
    struct fsm_machine_def def = {
        .type = FETCH_MACHINE_TYPE,
        .action = FETCH_MACHINE_ACTION,
        .transitions = transitions,
        .n_transitions = ARRAY_SIZE(transitions),
        .end_state = "done",
        .finalizers = finalizers,
        .n_finalizers = ARRAY_SIZE(finalizers),
        .ud = c,
    };
    int r = fsm_register(m, &def, machine);
    if (r < 0) {
        fetch_context_free(c);
        return r;
    }
    *ctx = c;
    return 0;
}
