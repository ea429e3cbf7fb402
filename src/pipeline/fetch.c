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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "pipeline/fetch_json.h"
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

/* The temp file of a location: named from a hash of the location, never from the key. */
static char *tmp_path_for(const struct fetch_context *c, const char *location)
{
    uint8_t h[SHA256_LEN];
    char hex[SHA256_HEX_LEN + 1];
    if (sha256_buf(location, strlen(location), h) < 0)
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

/* Straight from the receive buffer (SOURCE_RECV_BUFFER, 512 KiB) to the file: no copy of our
 * own, one hash update and one write(2) per chunk. */
static int sink(const void *data, size_t n, void *ud)
{
    struct sink_state *s = ud;
    uint64_t done = s->offset + s->written + n;
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
    return 0;
}

int fetch_stream_object(struct source *src, const char *key, uint64_t offset,
                        const struct source_expect *want, struct fetch_stream *st,
                        struct source_get_info *info, struct err *e)
{
    struct sink_state s = {
        .st = st, .offset = offset, .e = e, .last_progress = offset, .last_checkpoint = offset};
    int r = source_get_expect(src, key, offset, want, sink, &s, info, e);
    if (r == 0 && st->progress)
        st->progress(offset + s.written, info->size, st->progress_ud);
    return r;
}

/* The diff id of a stored layer (archive.h archive_diff_id): an uncompressed layer's is its
 * digest; a compressed one's is recorded (layer_diff_ids) once computed, else computed from
 * its file and recorded (a fact about the bytes, so it is written outside the checkpoint: a
 * lost write only means computing it again). 0 with out filled, else e says why. */
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
    if (r == 0 && blobs_exists(db, digest) == 1 && oci_diff_id_set(db, digest, out) < 0)
        log_warn("cannot record a diff id", "digest=%s", digest);
    return r;
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

struct dl_progress {
    struct fsm_run *run;
    struct db *db;
    const char *location, *etag, *tmp;
    uint64_t size;
    uint64_t counted; /* bytes already added to METRIC_FETCH_BYTES (starts at the offset) */
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

    _cleanup_free_ char *tmp = tmp_path_for(c, rq.location);
    if (!tmp || mkdir_p(c->tmp_dir, 0700) < 0)
        return fsm_retry("cannot prepare %s", c->tmp_dir);
    _cleanup_close_ int fd = open(tmp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return fsm_retry("cannot open %s: %m", tmp);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK ? fsm_retry("another fetch of this location is running")
                                    : fsm_retry("cannot lock %s: %m", tmp);

    /* Resume only what is on disk for sure, of the same version: that takes a strong ETag
     * (a weak one, or none, cannot prove the bytes are the same; start from byte 0). */
    struct blob_download dr;
    uint64_t offset = 0;
    bool strong = source_etag_is_strong(obj.etag);
    if (blobs_download_get(db, rq.location, &dr) == 1 && strong && dr.etag &&
        !strcmp(dr.etag, obj.etag) && dr.tmp_path && !strcmp(dr.tmp_path, tmp)) {
        struct stat st;
        if (fstat(fd, &st) == 0)
            offset = dr.bytes_done < (uint64_t)st.st_size ? dr.bytes_done : (uint64_t)st.st_size;
        if (offset > obj.size)
            offset = 0;
    }
    blob_download_free(&dr);
    struct sha256 h = {0};
    r = sha256_init(&h);
    if (r == 0 && ftruncate(fd, (off_t)offset) < 0)
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
    fsm_run_set_progress(run, "download", offset, obj.size);
    struct source_get_info info;
    int64_t t0 = mono_ms();
    /* The version HEAD described: its strong ETag and its size bound the transfer. */
    struct source_expect want = {
        .etag = strong ? obj.etag : NULL, .has_size = true, .size = obj.size};
    r = fetch_stream_object(s, key, offset, &want, &fs, &info, &e);
    uint64_t total = offset + info.bytes;
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
    if (r == -ESTALE) {
        /* Another version now: what we have is worthless. Start over next attempt. */
        if (ftruncate(fd, 0) == 0)
            blobs_download_put(db, rq.location, NULL, tmp, 0, 0);
        return fsm_retry("%s changed during the download; starting over", rq.location);
    }
    if (r == -ENOSPC || e.code == -ENOSPC)
        return out_of_space(db, rq.location, tmp, fd, obj.size, err_str(&e));
    if (r < 0)
        return source_failure(r, &e);
    char digest[DIGEST_STR_LEN + 1];
    digest_format(d, digest);
    /* A source that names the blob by its digest (a registry): the bytes must be that blob,
     * else nothing is stored and the partial file is not kept for a resume. */
    if (obj.digest && strcmp(obj.digest, digest) != 0) {
        unlink(tmp);
        blobs_download_delete(db, rq.location);
        return rejected("%s: the downloaded blob's digest is %s, not the %s it is named by; "
                        "nothing stored",
                        rq.location, digest, obj.digest);
    }

    /* Into the store, by digest. Identical bytes fetched before (under another key): keep the
     * existing file when it passes the integrity rule (store/blobfile.h), drop ours; a file
     * that fails it is quarantined and ours takes its place. */
    _cleanup_free_ char *final = blob_path(c, digest);
    struct blob_seal seal;
    char why[512];
    if (!final || mkdir_p_blobs(c) < 0)
        return fsm_retry("cannot prepare %s", c->blob_dir);
    int have = blobfile_verify(db, c->blob_dir, digest, total, final, &seal, why, sizeof(why));
    if (have < 0)
        return fsm_retry("cannot verify %s: %s", final, strerror(-have));
    if (have)
        unlink(tmp);
    else if (rename(tmp, final) < 0 || fsync_parent_dir(final) < 0)
        return fsm_retry("cannot store %s: %m", final);
    else if ((r = blobfile_seal_fd(fd, &seal)) < 0)
        return fsm_retry("cannot seal %s: %s", final, strerror(-r));
    log_info("blob downloaded",
             "location=%s digest=%s bytes=%" PRIu64 " resumed_at=%" PRIu64 " ms=%" PRId64
             " dedup=%s",
             rq.location, digest, total, offset, mono_ms() - t0, have ? "yes" : "no");

    _cleanup_json_ json_t *resp =
        json_pack("{s:s, s:s, s:I, s:s, s:b}", "location", rq.location, "digest", digest, "size",
                  (json_int_t)total, "path", final, "reused", 0);
    if (resp && obj.etag)
        json_object_set_new(resp, "etag", json_string(obj.etag));
    if (resp)
        json_object_set_new(resp, "seal", fetch_seal_json(&seal));
    if (!resp || fetch_response_store(run, resp) < 0)
        return fsm_retry("out of memory");
    return fsm_ok();
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

/* The diff id of a layer just scanned; false with *res (retry for I/O, else rejected: a
 * stream that does not decompress or goes past a limit) when it cannot be had. */
static bool validate_diff_id(struct fetch_context *c, struct db *db, const char *location,
                             const char *digest, enum blob_format f, const char *path,
                             char out[DIGEST_STR_LEN + 1], struct fsm_result *res)
{
    struct err e = {0};
    int r = layer_diff_id(c, db, digest, f, path, out, &e);
    if (r == 0)
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
    /* Detected and, for a layer, scanned in one pass over the blob. */
    enum blob_format fmt = BLOB_UNKNOWN;
    char why[256] = "";
    struct err e = {0};
    struct archive_stats stats = {0};
    archive_set_progress(on_scan_progress, run);
    int r = archive_scan_detect(path, &c->policy, &fmt, why, sizeof(why), &stats, &e);
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
        if (!validate_diff_id(c, run_db(run), location, digest, fmt, path, diff_id, &res) ||
            diff_id_mismatch(location, rq.diff_id, diff_id, &res))
            return res;
        json_array_append_new(layers,
                              fetch_layer_json(digest, diff_id, size, fmt, path, NULL, &seal));
        log_info("layer validated",
                 "location=%s digest=%s format=%s entries=%" PRIu64 " bytes=%" PRIu64, location,
                 digest, blob_format_name(fmt), stats.entries, stats.bytes);
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
            if (!validate_diff_id(c, run_db(run), location, ld, lf, lp, ldiff, &dr)) {
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
    struct fsm_machine_def def = {
        .type = FETCH_MACHINE_TYPE,
        .action = FETCH_MACHINE_ACTION,
        .transitions = transitions,
        .n_transitions = ARRAY_SIZE(transitions),
        .end_state = "done",
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
