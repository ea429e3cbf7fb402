/*
 * unpack.c: the unpack machine: one run per chain id, turning a fetched layer blob into a
 * committed, inactive thin device that holds the chain's flattened file system.
 *
 *   check-unpacked  the layer is ready and its device is in the pool's metadata: hand off.
 *                   Ready in the database but gone from the pool (removed behind thinimg's
 *                   back): the record is repaired (pending, no device) and the chain is
 *                   unpacked again. A parent chain that is not ready aborts the run.
 *   create-device   under the operation guard, with the pool checked usable: a base layer gets
 *                   create_thin + mkfs.ext4; an upper layer gets create_snap of its parent's
 *                   committed, inactive device (no mkfs). The device is activated. Each attempt
 *                   takes a fresh device: one left by an interrupted earlier attempt is never
 *                   trusted (it stays recorded and gc reclaims it).
 *   apply-layer     mounts the device privately (nosuid,nodev) in a child process and applies
 *                   the layer with the archive module (whiteouts against the lower layers the
 *                   snapshot already holds), then syncs and unmounts. Applying a layer again
 *                   over a partial application converges to the same tree, so a resumed run
 *                   re-applies on the same device.
 *   verify          the device is still active and the pool is not out of space, read-only or
 *                   needs_check.
 *   commit          deactivates the device (it stays in the pool, inactive, ready to be
 *                   snapshotted) and records the layer ready with its device and counts.
 *
 * On any failure the finalizer records the layer `failed` (and its device `failed`): nothing
 * is unmounted, removed or deleted on that path.
 *
 * Started by unpack_start_image() (unpack.h), which builds the request: the blob's file comes
 * from the blob store (store/blobs.h) by the layer's digest.
 * Request (JSON): {"chain_id", "parent_chain"|null, "digest", "blob_path", "depth",
 *                  "device_bytes"|0}
 * Response (JSON): {"dev_id", "device_path", "entries", "bytes"}
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "archive/archive.h"
#include "dm/mount.h"
#include "dm/pool.h"
#include "dm/pool_life.h"
#include "dm/thin.h"
#include "guard/reslock.h"
#include "pipeline/imagedb.h"
#include "pipeline/machine.h"
#include "pipeline/unpack.h"
#include "pipeline/updates.h"
#include "store/blobs.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/metrics.h"

struct unpack_req {
    char chain_id[DIGEST_STR_LEN + 1];
    char parent_chain[DIGEST_STR_LEN + 1]; /* "" for a base layer */
    char digest[DIGEST_STR_LEN + 1];
    char blob_path[4096];
    int depth;
    uint64_t device_bytes; /* virtual size of a new base device (0: the pipeline default) */
};

struct unpack_resp {
    uint32_t dev_id;
    char device_path[256];
    int64_t entries, bytes;
};

static int req_parse(struct fsm_run *run, struct unpack_req *q)
{
    size_t len;
    const void *data = fsm_run_request(run, &len);
    json_error_t je;
    json_t *o = json_loadb(data, len, 0, &je);
    if (!o)
        return -EBADMSG;
    const char *chain = json_string_value(json_object_get(o, "chain_id"));
    const char *parent = json_string_value(json_object_get(o, "parent_chain"));
    const char *digest = json_string_value(json_object_get(o, "digest"));
    const char *blob = json_string_value(json_object_get(o, "blob_path"));
    int r = 0;
    if (!chain || !digest || !blob || !digest_valid(chain) || !digest_valid(digest) ||
        (parent && !digest_valid(parent)))
        r = -EBADMSG;
    else {
        snprintf(q->chain_id, sizeof(q->chain_id), "%s", chain);
        snprintf(q->parent_chain, sizeof(q->parent_chain), "%s", parent ? parent : "");
        snprintf(q->digest, sizeof(q->digest), "%s", digest);
        snprintf(q->blob_path, sizeof(q->blob_path), "%s", blob);
        q->depth = (int)json_integer_value(json_object_get(o, "depth"));
        q->device_bytes = (uint64_t)json_integer_value(json_object_get(o, "device_bytes"));
    }
    json_decref(o);
    return r;
}

/* The request of q as JSON (malloc'd; NULL on ENOMEM). */
static char *req_build(const struct unpack_req *q)
{
    json_t *o = json_pack("{s:s, s:s?, s:s, s:s, s:i}", "chain_id", q->chain_id, "parent_chain",
                          q->parent_chain[0] ? q->parent_chain : NULL, "digest", q->digest,
                          "blob_path", q->blob_path, "depth", q->depth);
    if (o && q->device_bytes)
        json_object_set_new(o, "device_bytes", json_integer((json_int_t)q->device_bytes));
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return txt;
}

static void resp_get(struct fsm_run *run, struct unpack_resp *s)
{
    memset(s, 0, sizeof(*s));
    s->entries = s->bytes = -1;
    size_t len;
    const void *data = fsm_run_response(run, &len);
    if (!data || !len)
        return;
    json_t *o = json_loadb(data, len, 0, NULL);
    if (!o)
        return;
    s->dev_id = (uint32_t)json_integer_value(json_object_get(o, "dev_id"));
    const char *path = json_string_value(json_object_get(o, "device_path"));
    snprintf(s->device_path, sizeof(s->device_path), "%s", path ? path : "");
    json_t *en = json_object_get(o, "entries"), *by = json_object_get(o, "bytes");
    if (json_is_integer(en))
        s->entries = json_integer_value(en);
    if (json_is_integer(by))
        s->bytes = json_integer_value(by);
    json_decref(o);
}

static void resp_set(struct fsm_run *run, const struct unpack_resp *s)
{
    json_t *o =
        json_pack("{s:I, s:s, s:I, s:I}", "dev_id", (json_int_t)s->dev_id, "device_path",
                  s->device_path, "entries", (json_int_t)s->entries, "bytes", (json_int_t)s->bytes);
    char *txt = json_dumps(o, JSON_COMPACT);
    if (txt)
        fsm_run_set_response(run, txt, strlen(txt));
    free(txt);
    json_decref(o);
}

static bool id_in(const uint32_t *ids, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

/* ---- the chain lock ---------------------------------------------------------------------- */

/*
 * The resource lock "chain:<id>" keeps two pieces of work on one chain apart across processes.
 * check-unpacked takes it. A run resumed in a new process (after kill -9 or a reboot) starts
 * at a later transition, while the row still names the dead process: that transition takes
 * the lock again (the dead owner's lock is broken; a live other owner means retry), so the
 * resumed run holds it while it works and the finalizer's release finds it. Without this the
 * dead process's lock stayed behind for gc, and the resumed run worked unlocked.
 */
static int chain_lock(struct pipeline *p, const char *chain_id, struct err *e)
{
    char res[128];
    snprintf(res, sizeof(res), "chain:%s", chain_id);
    return reslock_acquire(p->db, res, "unpack", e);
}

/* For the transitions after check-unpacked: retake the lock when this run was resumed. Returns
 * true with *res set when the transition must stop (lock busy or unreadable). */
static bool chain_relock(struct fsm_run *run, struct pipeline *p, const char *chain_id,
                         struct fsm_result *res)
{
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    if (!info.is_restart)
        return false;
    struct err e = {0};
    int r = chain_lock(p, chain_id, &e);
    if (r == 0)
        return false;
    *res = r == -EBUSY ? fsm_retry("%s", err_str(&e))
                       : fsm_retry("cannot lock chain %.19s: %s", chain_id, err_str(&e));
    return true;
}

/* Every transition after check-unpacked starts the same: the request, the lock (retaken when
 * resumed) and the response so far; then fn does the step's own work. */
typedef struct fsm_result (*unpack_step_fn)(struct fsm_run *run, struct pipeline *p,
                                            const struct unpack_req *q, struct unpack_resp *s);

static struct fsm_result unpack_step(struct fsm_run *run, struct pipeline *p, unpack_step_fn fn)
{
    struct unpack_req q;
    if (req_parse(run, &q) < 0)
        return fsm_abort("malformed unpack request");
    struct fsm_result stop;
    if (chain_relock(run, p, q.chain_id, &stop))
        return stop;
    struct unpack_resp s;
    resp_get(run, &s);
    return fn(run, p, &q, &s);
}

/* ---- check-unpacked ---------------------------------------------------------------------- */

static struct fsm_result t_check_unpacked(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    struct unpack_req q;
    if (req_parse(run, &q) < 0)
        return fsm_abort("malformed unpack request");

    struct err e = {0};
    int r = chain_lock(p, q.chain_id, &e);
    if (r == -EBUSY)
        return fsm_retry("%s", err_str(&e));
    if (r < 0)
        return fsm_retry("cannot lock chain %s: %s", q.chain_id, err_str(&e));

    struct layer_rec l = {0};
    r = imagedb_layer_get(p->db, q.chain_id, &l);
    if (r < 0)
        return fsm_abort("layer %s is not recorded (start it through process-image)", q.chain_id);
    bool ready = !strcmp(l.state, "ready") && l.dev_id > 0;
    uint32_t dev_id = (uint32_t)l.dev_id;
    layer_rec_free(&l);

    if (q.parent_chain[0]) {
        struct layer_rec parent = {0};
        r = imagedb_layer_get(p->db, q.parent_chain, &parent);
        bool ok = r == 0 && !strcmp(parent.state, "ready") && parent.dev_id > 0;
        char pstate[16], perr[768] = "";
        snprintf(pstate, sizeof(pstate), "%s", r == 0 ? parent.state : "missing");
        /* The parent's error is the image's: "parent failed" alone would hide the cause (and
         * the exit code that goes with it, e.g. 3 for an unhealthy host). */
        if (r == 0 && parent.error && *parent.error)
            snprintf(perr, sizeof(perr), " (%s)", parent.error);
        layer_rec_free(&parent);
        if (!ok && !ready)
            return fsm_with_kind(fsm_abort("parent layer %.19s is %s%s: it must be unpacked first",
                                           q.parent_chain, pstate, perr),
                                 fsm_run_predecessor_kind(run));
    }
    if (!ready)
        return fsm_ok();

    /* Recorded ready: is the device really in the pool? */
    uint32_t *ids = NULL;
    size_t n = 0;
    err_clear(&e);
    r = thin_pool_metadata_ids(p->cfg.pool_name, &ids, NULL, &n, &e);
    if (r < 0)
        return fsm_retry("cannot read the pool's device list: %s", err_str(&e));
    bool present = id_in(ids, n, dev_id);
    free(ids);
    if (present)
        return fsm_handoff("layer %.19s already unpacked on device %u", q.chain_id, dev_id);

    log_warn("layer device missing from the pool; unpacking the layer again", "chain=%s dev_id=%u",
             q.chain_id, dev_id);
    struct layer_update *u = layer_update_new(q.chain_id);
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "pending");
    u->error = strdup("device removed from the pool behind thinimg's back; recreated");
    u->set_device = true; /* pool NULL, dev_id 0: no device */
    fsm_run_on_commit(run, layer_update_apply, u, layer_update_free);
    struct device_mark *m =
        device_mark_new(p->cfg.pool_name, dev_id, "deleted", "missing from the pool metadata");
    fsm_run_on_commit(run, device_mark_apply, m, device_mark_free);
    return fsm_ok();
}

/* ---- create-device ----------------------------------------------------------------------- */

/*
 * A write into a thin device failed: was it the pool? A pool out of data space fails writes at
 * once (error_if_no_space), and the extractor only sees EIO from syncfs; the pool's status says
 * why, and what to do. Reading the status is a query, not a cleanup (fail dumb holds). Returns
 * true with the pool's refusal message in out when the pool is not usable (usage limits aside).
 */
static bool pool_trouble(struct pipeline *p, char *out, size_t n)
{
    struct pool_info pi;
    struct err e = {0};
    if (pool_get(NULL, p->cfg.pool_name, &pi, &e) < 0)
        return false;
    struct pool_limits nolimit = {.max_data_pct = 100.0, .max_meta_pct = 100.0};
    if (pool_check_usable(p->cfg.pool_name, &pi.status, &nolimit, &e) == 0)
        return false;
    snprintf(out, n, "%s", err_str(&e));
    return true;
}

static struct fsm_result create_device(struct fsm_run *run, struct pipeline *p,
                                       const struct unpack_req *q, struct unpack_resp *s)
{
    /* Each attempt takes a fresh device (see above): nothing of an earlier one is reused. */
    *s = (struct unpack_resp){.entries = -1, .bytes = -1};
    struct err e = {0};
    struct fsm_result refused;
    /* Autoextend before each layer (dm/pool_life.h): a pool over its threshold grows now,
     * before the guard's health check would refuse it as too full. */
    struct pool_autoextend_result ax;
    if (pool_autoextend(p->db, p->cfg.pool_name, &ax, &e) < 0 && !ax.stuck)
        log_warn("pool autoextend before a layer failed", "error=\"%s\"", err_str(&e));
    err_clear(&e);
    if (!pipeline_guard_enter(p, run, "create-device", &refused))
        return refused;
    int r = 0;
    r = pool_ensure_usable(p->cfg.pool_name, NULL, &e);
    if (r < 0) {
        guard_leave(p->guard);
        return fsm_with_kind(fsm_abort("%s", err_str(&e)), err_kind_of(r));
    }

    struct thin_spec spec = {.kind = THIN_KIND_LAYER,
                             .size_bytes = q->device_bytes ? q->device_bytes : p->device_bytes};
    if (!q->parent_chain[0]) {
        r = thin_create(p->db, p->cfg.pool_name, &spec, &s->dev_id, &e);
    } else {
        struct layer_rec parent = {0};
        r = imagedb_layer_get(p->db, q->parent_chain, &parent);
        uint32_t origin = r == 0 ? (uint32_t)parent.dev_id : 0;
        layer_rec_free(&parent);
        if (!origin) {
            guard_leave(p->guard);
            return fsm_abort("parent layer %.19s has no device", q->parent_chain);
        }
        spec.size_bytes = 0; /* the origin's size */
        r = thin_snapshot(p->db, p->cfg.pool_name, origin, &spec, &s->dev_id, &e);
    }
    if (r == 0)
        r = thin_activate(p->db, p->cfg.pool_name, s->dev_id, s->device_path,
                          sizeof(s->device_path), &e);
    if (r == 0 && !q->parent_chain[0]) {
        fsm_run_set_progress(run, "mkfs", 0, 0);
        r = dm_mkfs_ext4(s->device_path, "thinimg", &e);
        if (r < 0) {
            struct device_mark *m =
                device_mark_new(p->cfg.pool_name, s->dev_id, "failed", err_str(&e));
            device_mark_apply(p->db, m); /* a record, not a cleanup: the device stays */
            device_mark_free(m);
        }
    }
    guard_leave(p->guard);
    if (r < 0) {
        /* Fail dumb: the device (if any) stays as it is, recorded; gc removes it later. */
        if (r == -ENOSPC || r == -EUCLEAN || r == -EROFS || r == -EHOSTDOWN)
            return fsm_with_kind(fsm_abort("%s", err_str(&e)), ERR_KIND_UNHEALTHY);
        char cause[512];
        if (s->dev_id && pool_trouble(p, cause, sizeof(cause)))
            return fsm_with_kind(fsm_abort("create device for layer %.19s failed: %s (the "
                                           "error: %s)",
                                           q->chain_id, cause, err_str(&e)),
                                 ERR_KIND_UNHEALTHY);
        return fsm_with_kind(
            fsm_abort("create device for layer %.19s: %s", q->chain_id, err_str(&e)),
            err_kind_of(r));
    }
    resp_set(run, s);
    struct layer_update *u = layer_update_new(q->chain_id);
    u->set_device = true;
    snprintf(u->pool, sizeof(u->pool), "%s", p->cfg.pool_name);
    u->dev_id = s->dev_id;
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "unpacking");
    fsm_run_on_commit(run, layer_update_apply, u, layer_update_free);
    log_info("layer device created", "chain=%.19s dev_id=%u device=%s", q->chain_id, s->dev_id,
             s->device_path);
    return fsm_ok();
}

static struct fsm_result t_create_device(struct fsm_run *run, void *ud)
{
    return unpack_step(run, ud, create_device);
}

/* ---- apply-layer ------------------------------------------------------------------------- */

struct apply_args {
    const char *blob;
    const struct archive_policy *policy;
};

/* In the mount child: the archive reader's progress (bytes of the blob read) goes to the
 * parent through the mount runner's shared page. */
static void child_progress(uint64_t done, uint64_t total, void *ud)
{
    (void)ud;
    mount_child_progress(done, total);
}

/* In the parent, while the child applies: what the progress display and the API show. */
static void apply_progress(uint64_t done, uint64_t total, void *ud)
{
    fsm_run_set_progress(ud, "apply", done, total);
}

/* Runs in the mount child: no database, no logger (see dm/mount.h). */
static int apply_in_child(int root_fd, void *ud, struct buf *out, struct err *e)
{
    struct apply_args *a = ud;
    archive_set_progress(child_progress, NULL);
    struct archive_stats st = {0};
    int r = archive_apply(root_fd, a->blob, a->policy, &st, e);
    if (r < 0)
        return r;
    return buf_append(out, &st, sizeof(st));
}

static struct fsm_result apply_layer(struct fsm_run *run, struct pipeline *p,
                                     const struct unpack_req *q, struct unpack_resp *s)
{
    if (!s->dev_id)
        return fsm_abort("no device recorded for layer %.19s", q->chain_id);
    struct err e = {0};

    /* After a reboot the device is inactive again: activate it (idempotent when active). */
    struct fsm_result refused;
    if (!pipeline_guard_enter(p, run, "activate-layer-device", &refused))
        return refused;
    int r = 0;
    r = thin_activate(p->db, p->cfg.pool_name, s->dev_id, s->device_path, sizeof(s->device_path),
                      &e);
    guard_leave(p->guard);
    if (r < 0)
        return fsm_with_kind(fsm_abort("activate device %u: %s", s->dev_id, err_str(&e)),
                             err_kind_of(r));

    /* Only bytes that were hashed and matched, and cannot have changed since, are applied
     * (store/blobfile.h): one stat while the file equals its seal, a hash when it differs. */
    char why[512];
    r = blobs_verify(p->db, p->cfg.blob_dir, q->digest, q->blob_path, why, sizeof(why));
    if (r < 0)
        return fsm_retry("cannot verify blob %s before applying it: %s", q->digest, strerror(-r));
    if (r == 0)
        return fsm_abort("blob %s cannot be applied: %s (quarantined); run the command again: "
                         "the blob is fetched again",
                         q->digest, why);

    struct apply_args a = {.blob = q->blob_path, .policy = &p->policy};
    struct mount_spec spec = {.device = s->device_path,
                              .mountpoint = p->cfg.mount_dir,
                              .fstype = "ext4",
                              .flags = MS_NOATIME,
                              .cancel_fd = fsm_run_cancel_fd(run),
                              .progress = apply_progress,
                              .progress_ud = run};
    struct buf out = BUF_INIT;
    fsm_run_set_progress(run, "apply", 0, 0);
    r = mount_run(&spec, apply_in_child, &a, &out, &e);
    if (r == -ECANCELED) {
        /* Shutdown, cancel or attempt timeout: the child was killed and its namespace took the
         * mount with it; the next attempt applies the layer again on the same device. */
        buf_free(&out);
        return fsm_retry("apply layer %.19s interrupted: %s", q->chain_id, err_str(&e));
    }
    if (r < 0) {
        buf_free(&out);
        char cause[512];
        if (pool_trouble(p, cause, sizeof(cause)))
            return fsm_with_kind(fsm_abort("apply layer %.19s onto device %u failed: %s (the "
                                           "write error: %s)",
                                           q->chain_id, s->dev_id, cause, err_str(&e)),
                                 ERR_KIND_UNHEALTHY);
        return fsm_with_kind(
            fsm_abort("apply layer %.19s onto device %u: %s", q->chain_id, s->dev_id, err_str(&e)),
            err_kind_of(r));
    }
    struct archive_stats st = {0};
    if (out.len == sizeof(st))
        memcpy(&st, out.data, sizeof(st));
    buf_free(&out);
    s->entries = (int64_t)st.entries;
    s->bytes = (int64_t)st.bytes;
    resp_set(run, s);
    metrics_counter_add(METRIC_APPLY_BYTES, (double)st.bytes, NULL);
    metrics_counter_add(METRIC_APPLY_ENTRIES, (double)st.entries, NULL);
    log_info("layer applied", "chain=%.19s dev_id=%u entries=%lld bytes=%lld", q->chain_id,
             s->dev_id, (long long)s->entries, (long long)s->bytes);
    return fsm_ok();
}

static struct fsm_result t_apply_layer(struct fsm_run *run, void *ud)
{
    return unpack_step(run, ud, apply_layer);
}

/* ---- verify ------------------------------------------------------------------------------ */

static struct fsm_result verify(struct fsm_run *run, struct pipeline *p, const struct unpack_req *q,
                                struct unpack_resp *s)
{
    (void)run;
    struct err e = {0};
    struct thin_dev d;
    if (thin_get(p->db, p->cfg.pool_name, s->dev_id, &d) < 0)
        return fsm_abort("device %u of layer %.19s is not recorded", s->dev_id, q->chain_id);
    int ex = dm_dev_exists(d.name);
    if (ex <= 0)
        return fsm_abort("device %s vanished while the layer was applied", d.name);
    struct pool_info pi;
    int r = pool_get(NULL, p->cfg.pool_name, &pi, &e);
    if (r < 0)
        return fsm_retry("cannot read pool status: %s", err_str(&e));
    /* Usage limits do not matter here (the layer is written); failure modes do. */
    struct pool_limits nolimit = {.max_data_pct = 100.0, .max_meta_pct = 100.0};
    err_clear(&e);
    r = pool_check_usable(p->cfg.pool_name, &pi.status, &nolimit, &e);
    if (r < 0)
        return fsm_abort("layer %.19s is not trustworthy: %s", q->chain_id, err_str(&e));
    return fsm_ok();
}

static struct fsm_result t_verify(struct fsm_run *run, void *ud)
{
    return unpack_step(run, ud, verify);
}

/* ---- commit ------------------------------------------------------------------------------ */

static struct fsm_result commit(struct fsm_run *run, struct pipeline *p, const struct unpack_req *q,
                                struct unpack_resp *s)
{
    struct err e = {0};
    struct fsm_result refused;
    if (!pipeline_guard_enter(p, run, "commit-layer", &refused))
        return refused;
    int r = 0;
    r = thin_deactivate(p->db, p->cfg.pool_name, s->dev_id, &e);
    /* A metadata backup when one is due (dm/pool_life.h), still under the guard: the pool's
     * one metadata snapshot is shared with gc's thin_ls. A failed backup never fails a layer. */
    struct err be = {0};
    if (r == 0 && pool_backup_maybe(p->db, p->cfg.pool_name, p->cfg.state_dir, &be) < 0)
        log_warn("pool metadata backup failed", "error=\"%s\"", err_str(&be));
    guard_leave(p->guard);
    if (r == -EBUSY)
        return fsm_retry("device %u is still busy: %s", s->dev_id, err_str(&e));
    if (r < 0)
        return fsm_retry("deactivate device %u: %s", s->dev_id, err_str(&e));
    struct layer_update *u = layer_update_new(q->chain_id);
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "ready");
    u->set_stats = true;
    u->entries = s->entries;
    u->bytes = s->bytes;
    fsm_run_on_commit(run, layer_update_apply, u, layer_update_free);
    log_info("layer committed", "chain=%.19s dev_id=%u", q->chain_id, s->dev_id);
    return fsm_ok();
}

static struct fsm_result t_commit(struct fsm_run *run, void *ud)
{
    return unpack_step(run, ud, commit);
}

/* ---- starting the runs of an image ------------------------------------------------------- */

int unpack_start_image(struct pipeline *p, int64_t image_id, const struct fsm_id *parent,
                       uint64_t device_bytes, struct fsm_id *top, struct err *e)
{
    memset(top, 0, sizeof(*top));
    struct image_layer_rec *v = NULL;
    size_t n = 0;
    int r = imagedb_image_layers(p->db, image_id, &v, &n);
    if (r < 0)
        return err_set(e, r, "cannot read the image's layers");
    struct fsm_id prev = {0};
    for (size_t i = 0; i < n && r >= 0; i++) {
        struct layer_rec l = {0};
        if (!v[i].chain_id || imagedb_layer_get(p->db, v[i].chain_id, &l) < 0) {
            r = err_set(e, -ENOENT, "layer %zu of the image has no chain id yet", i + 1);
            break;
        }
        layer_rec_free(&l);
        struct fsm_id run = {0};
        /* Another image may be unpacking the same chain right now: join its run. */
        if (pipeline_find_run(p, "unpack", v[i].chain_id, NULL, true, &run) == 0) {
            prev = run;
            *top = run;
            continue;
        }
        /* Ready layers still get a run: its first step verifies the device is in the pool
         * (and recreates it when it is not), without any devicemapper writes. The blob's file
         * is the store's (empty when the store has no row: apply-layer then refuses it). */
        struct unpack_req q = {.depth = (int)(i + 1), .device_bytes = device_bytes};
        snprintf(q.chain_id, sizeof(q.chain_id), "%s", v[i].chain_id);
        snprintf(q.parent_chain, sizeof(q.parent_chain), "%s", i > 0 ? v[i - 1].chain_id : "");
        snprintf(q.digest, sizeof(q.digest), "%s", v[i].digest ? v[i].digest : "");
        _cleanup_free_ char *blob = NULL;
        if (blobs_stored_path(p->db, p->cfg.blob_dir, q.digest, &blob) == 0 &&
            strlen(blob) < sizeof(q.blob_path))
            snprintf(q.blob_path, sizeof(q.blob_path), "%s", blob);
        _cleanup_free_ char *txt = req_build(&q);
        if (!txt) {
            r = -ENOMEM;
            break;
        }
        struct fsm_start_opts so = {
            .queue = "unpack", .run_after = fsm_id_is_zero(&prev) ? NULL : &prev, .parent = parent};
        r = fsm_start(p->mgr, p->m_unpack, v[i].chain_id, txt, strlen(txt), &so, &run);
        if (r < 0) {
            err_set(e, r, "cannot start the unpack of layer %zu", i + 1);
            break;
        }
        prev = run;
        *top = run;
    }
    imagedb_image_layers_free(v, n);
    return r < 0 ? r : 0;
}

/* ---- end --------------------------------------------------------------------------------- */

static void fin_unpack(struct fsm_run *run, enum fsm_outcome outcome, const char *error, void *ud)
{
    struct pipeline *p = ud;
    struct unpack_req q;
    if (req_parse(run, &q) < 0)
        return;
    if (!fsm_outcome_success(outcome)) {
        struct layer_update *u = layer_update_new(q.chain_id);
        u->set_state = true;
        snprintf(u->state, sizeof(u->state), "failed");
        u->error = strdup(error && *error ? error : fsm_outcome_name(outcome));
        u->only_if_not_ready = true;
        fsm_run_on_commit(run, layer_update_apply, u, layer_update_free);
        struct unpack_resp s;
        resp_get(run, &s);
        if (s.dev_id) {
            struct device_mark *m =
                device_mark_new(p->cfg.pool_name, s.dev_id, "failed", error ? error : "");
            m->only_if_ready = true;
            fsm_run_on_commit(run, device_mark_apply, m, device_mark_free);
        }
    }
    char res[128];
    snprintf(res, sizeof(res), "chain:%s", q.chain_id);
    reslock_release(p->db, res);
}

/* A chain lock held by a live process: keep trying for a while (it is unpacking the same chain
 * in another process and will finish). */
static const struct fsm_retry_policy policy_lock = {.max_attempts = 120,
                                                    .initial_backoff_ms = 500,
                                                    .max_backoff_ms = 5000,
                                                    .multiplier = 1.5,
                                                    .jitter = 0.3,
                                                    .attempt_timeout_ms = 0,
                                                    .on_exhausted = FSM_ABORT};

int pipeline_register_unpack(struct pipeline *p, struct err *e)
{
    static const struct fsm_transition_def t[] = {
        {"check-unpacked", t_check_unpacked, &policy_lock},
        {"create-device", t_create_device, &machine_policy_quick},
        {"apply-layer", t_apply_layer, &machine_policy_quick},
        {"verify", t_verify, &machine_policy_quick},
        {"commit", t_commit, &machine_policy_quick},
    };
    return machine_register(p, "unpack", "unpack", "unpack-layer", t, ARRAY_SIZE(t), fin_unpack,
                            &p->m_unpack, e);
}
