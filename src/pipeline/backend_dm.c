/*
 * backend_dm.c: the dm-thin storage backend (backend.h): layers and activations as thin
 * devices of the pool named in the configuration.
 *
 *   layer       create-device: a base layer gets create_thin + mkfs.ext4, an upper layer
 *               create_snap of its parent's committed, inactive device (no mkfs); the device
 *               is activated. Each attempt takes a fresh device: one left by an interrupted
 *               earlier attempt is never trusted (it stays recorded and gc reclaims it).
 *               apply-layer: mounts the device privately (nosuid,nodev) in a child process and
 *               applies the layer (whiteouts against the lower layers the snapshot already
 *               holds), then syncs and unmounts; applying again over a partial application
 *               converges to the same tree. verify: the device is active and the pool is not
 *               out of space, read-only or needs_check. commit: the device is deactivated (it
 *               stays in the pool, inactive, ready to be snapshotted).
 *   activation  create_snap of the top layer's device, activated as
 *               /dev/mapper/<pool>-act-<name>; reactivated after a reboot or deactivate while
 *               the thin device is still in the pool (the VM's writes are kept).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "archive/archive.h"
#include "dm/mount.h"
#include "dm/pool.h"
#include "dm/pool_life.h"
#include "dm/thin.h"
#include "pipeline/backend.h"
#include "pipeline/machine.h"
#include "pipeline/updates.h"
#include "util/log.h"

/* How many "<name>.<n>" names to try when "<name>" is still held by a failed device that gc
 * has not removed yet. */
#define ACTIVATE_NAME_GENERATIONS 16

static bool id_in(const uint32_t *ids, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

/* Is dev_id in the pool's metadata? 1 yes, 0 no, a negative errno with e when unreadable. */
static int in_pool(struct pipeline *p, uint32_t dev_id, struct err *e)
{
    uint32_t *ids = NULL;
    size_t n = 0;
    int r = thin_pool_metadata_ids(p->cfg.pool_name, &ids, NULL, &n, e);
    if (r < 0)
        return r;
    bool present = id_in(ids, n, dev_id);
    free(ids);
    return present;
}

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

static void mark_failed(struct fsm_run *run, struct pipeline *p, uint32_t dev_id, const char *error)
{
    if (!dev_id)
        return;
    struct device_mark *m = device_mark_new(p->cfg.pool_name, dev_id, "failed", error ? error : "");
    m->only_if_ready = true;
    fsm_run_on_commit(run, device_mark_apply, m, device_mark_free);
}

/* ---- layers ------------------------------------------------------------------------------ */

static bool dm_layer_recorded(const struct layer_rec *l)
{
    return l->dev_id > 0;
}

static int dm_layer_check(struct pipeline *p, struct fsm_run *run, const char *chain_id,
                          const struct layer_rec *l, struct err *e)
{
    uint32_t dev_id = (uint32_t)l->dev_id;
    int r = in_pool(p, dev_id, e);
    if (r != 0)
        return r;
    log_warn("layer device missing from the pool; unpacking the layer again", "chain=%s dev_id=%u",
             chain_id, dev_id);
    struct layer_update *u = layer_update_new(chain_id);
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "pending");
    u->error = strdup("device removed from the pool behind thinimg's back; recreated");
    u->set_device = true; /* pool NULL, dev_id 0: no device */
    fsm_run_on_commit(run, layer_update_apply, u, layer_update_free);
    struct device_mark *m =
        device_mark_new(p->cfg.pool_name, dev_id, "deleted", "missing from the pool metadata");
    fsm_run_on_commit(run, device_mark_apply, m, device_mark_free);
    return 0;
}

static struct fsm_result dm_layer_prepare(struct fsm_run *run, struct pipeline *p,
                                          const struct backend_layer_req *q,
                                          struct backend_layer *s)
{
    struct err e = {0};
    struct fsm_result refused;
    /* Autoextend before each layer (dm/pool_life.h): a pool over its threshold grows now,
     * before the guard's health check would refuse it as too full. */
    struct pool_autoextend_result ax;
    if (pool_autoextend(p->db, p->cfg.pool_name, POOL_TRIGGER_LAYER, &ax, &e) < 0 && !ax.stuck)
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
    log_info("layer device created", "chain=%.19s dev_id=%u device=%s", q->chain_id, s->dev_id,
             s->device_path);
    return fsm_ok();
}

static void dm_layer_device(struct pipeline *p, const struct backend_layer *s, char *pool,
                            size_t pool_len, uint32_t *dev_id)
{
    snprintf(pool, pool_len, "%s", p->cfg.pool_name);
    *dev_id = s->dev_id;
}

static struct fsm_result dm_layer_apply(struct fsm_run *run, struct pipeline *p,
                                        const struct backend_layer_req *q, struct backend_layer *s)
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

    struct mount_spec spec = {.device = s->device_path,
                              .mountpoint = p->cfg.mount_dir,
                              .fstype = "ext4",
                              .flags = MS_NOATIME};
    struct archive_stats st;
    r = backend_apply_mounted(run, p, q, &spec, NULL, &st, NULL, &e);
    if (r == -ECANCELED)
        /* Shutdown, cancel or attempt timeout: the child was killed and its namespace took the
         * mount with it; the next attempt applies the layer again on the same device. */
        return fsm_retry("apply layer %.19s interrupted: %s", q->chain_id, err_str(&e));
    if (r < 0) {
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
    s->entries = (int64_t)st.entries;
    s->bytes = (int64_t)st.bytes;
    log_info("layer applied", "chain=%.19s dev_id=%u entries=%lld bytes=%lld", q->chain_id,
             s->dev_id, (long long)s->entries, (long long)s->bytes);
    return fsm_ok();
}

static struct fsm_result dm_layer_verify(struct fsm_run *run, struct pipeline *p,
                                         const struct backend_layer_req *q, struct backend_layer *s)
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

static struct fsm_result dm_layer_commit(struct fsm_run *run, struct pipeline *p,
                                         const struct backend_layer_req *q, struct backend_layer *s)
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
    log_info("layer committed", "chain=%.19s dev_id=%u", q->chain_id, s->dev_id);
    return fsm_ok();
}

static void dm_layer_failed(struct fsm_run *run, struct pipeline *p, const struct backend_layer *s,
                            const char *error)
{
    mark_failed(run, p, s->dev_id, error);
}

/* ---- activations ------------------------------------------------------------------------- */

static bool dm_act_recorded(const struct activation_rec *a)
{
    return a->dev_id > 0;
}

static bool dm_act_up(struct pipeline *p, const struct activation_rec *a)
{
    struct thin_dev d;
    return a->dev_id > 0 && thin_get(p->db, p->cfg.pool_name, (uint32_t)a->dev_id, &d) == 0 &&
           dm_dev_exists(d.name) == 1;
}

static int dm_act_check(struct pipeline *p, struct fsm_run *run, const struct activation_rec *a,
                        struct err *e)
{
    const char *name = a->name;
    uint32_t dev_id = (uint32_t)a->dev_id;
    bool active = !strcmp(a->state, "active");
    if (active && dm_act_up(p, a))
        return 1;

    /* The dm device is gone (or deactivated): is the thin device still in the pool? */
    int r = in_pool(p, dev_id, e);
    if (r < 0)
        return r;
    if (r > 0) {
        if (active)
            log_warn("activation device missing; reactivating it", "activation=%s dev_id=%u", name,
                     dev_id);
        return 0;
    }
    log_warn("activation's thin device is gone from the pool; taking a new snapshot",
             "activation=%s dev_id=%u", name, dev_id);
    struct device_mark *m =
        device_mark_new(p->cfg.pool_name, dev_id, "deleted", "missing from the pool metadata");
    fsm_run_on_commit(run, device_mark_apply, m, device_mark_free);
    return err_set(e, -ENOENT, "thin device removed behind thinimg's back; recreated");
}

/* Does an activation or a layer record this device? */
static bool device_in_use(struct db *db, const char *pool, uint32_t id)
{
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "SELECT (SELECT count(*) FROM activations WHERE pool = ?1"
                                      " AND dev_id = ?2) + (SELECT count(*) FROM layers WHERE"
                                      " pool = ?1 AND dev_id = ?2)");
    bool used = true; /* on doubt: in use */
    if (st) {
        db_bind_text(st, 1, pool);
        db_bind_i64(st, 2, id);
        if (db_step(db, st) == 1)
            used = sqlite3_column_int(st, 0) > 0;
        db_done(st);
    }
    db_unlock(db);
    return used;
}

static struct fsm_result dm_act_create(struct fsm_run *run, struct pipeline *p,
                                       const struct backend_act_req *q, struct backend_act *s)
{
    struct err e = {0};
    struct fsm_result refused;
    if (!pipeline_guard_enter(p, run, "create-snapshot", &refused))
        return refused;
    int r = 0;
    if (!s->reactivate) {
        r = pool_ensure_usable(p->cfg.pool_name, NULL, &e);
        struct layer_rec l = {0};
        if (r == 0 && imagedb_layer_get(p->db, q->chain_id, &l) < 0)
            r = err_set(&e, -ENOENT, "top layer %.19s is not recorded", q->chain_id);
        uint32_t origin = (uint32_t)l.dev_id;
        layer_rec_free(&l);
        /* An earlier attempt of this transition may have taken the snapshot and died before
         * its checkpoint: the device is ours (same name, same origin, no activation uses it).
         * create_snap is atomic and nothing has written to it, so it is taken over. */
        char first[DM_NAME_MAX + 1];
        struct thin_dev held;
        if (r == 0 &&
            dm_name_format(first, sizeof(first), p->cfg.pool_name, DM_KIND_ACTIVATION, q->name) ==
                0 &&
            thin_find_by_name(p->db, first, &held) == 0 && !strcmp(held.state, "ready") &&
            held.origin_id == origin && !device_in_use(p->db, p->cfg.pool_name, held.id)) {
            s->dev_id = held.id;
            log_info("taking over the snapshot of an interrupted attempt",
                     "activation=%s "
                     "dev_id=%u",
                     q->name, held.id);
        }
        /* "<name>" may still be held by an older failed device that gc has not removed. */
        char suffix[96] = "";
        for (int gen = 1; r == 0 && !s->dev_id && !suffix[0]; gen++) {
            if (gen > ACTIVATE_NAME_GENERATIONS) {
                r = err_set(&e, -EEXIST,
                            "names %s .. %s.%d are all held by old devices; run "
                            "`thinimg gc --force`",
                            q->name, q->name, ACTIVATE_NAME_GENERATIONS);
                break;
            }
            char cand[96], dmname[DM_NAME_MAX + 1];
            if (gen == 1)
                snprintf(cand, sizeof(cand), "%s", q->name);
            else
                snprintf(cand, sizeof(cand), "%s.%d", q->name, gen);
            r = dm_name_format(dmname, sizeof(dmname), p->cfg.pool_name, DM_KIND_ACTIVATION, cand);
            if (r < 0) {
                err_set(&e, r, "activation name %s does not fit a device name", q->name);
                break;
            }
            struct thin_dev other;
            if (thin_find_by_name(p->db, dmname, &other) < 0 || !strcmp(other.state, "deleted"))
                snprintf(suffix, sizeof(suffix), "%s", cand);
        }
        if (r == 0 && !s->dev_id) {
            struct thin_spec spec = {.kind = THIN_KIND_ACTIVATION, .name_suffix = suffix};
            r = thin_snapshot(p->db, p->cfg.pool_name, origin, &spec, &s->dev_id, &e);
        }
    }
    if (r == 0)
        r = thin_activate(p->db, p->cfg.pool_name, s->dev_id, s->device_path,
                          sizeof(s->device_path), &e);
    guard_leave(p->guard);
    if (r < 0) /* a refusing pool (full, read-only, needs_check) is "unhealthy" by its errno */
        return fsm_with_kind(fsm_abort("activation %s: %s", q->name, err_str(&e)), err_kind_of(r));
    log_info("activation device ready", "activation=%s dev_id=%u device=%s", q->name, s->dev_id,
             s->device_path);
    return fsm_ok();
}

static void dm_act_device(struct pipeline *p, const struct backend_act *s, char *pool,
                          size_t pool_len, uint32_t *dev_id)
{
    snprintf(pool, pool_len, "%s", p->cfg.pool_name);
    *dev_id = s->dev_id;
}

static void dm_act_failed(struct fsm_run *run, struct pipeline *p, const struct backend_act *s,
                          const char *error)
{
    if (!s->reactivate)
        mark_failed(run, p, s->dev_id, error);
}

/* ---- life cycle -------------------------------------------------------------------------- */

static int device_down(struct pipeline *p, uint32_t dev_id, bool remove, struct err *e)
{
    if (!dev_id)
        return 0;
    int r = thin_deactivate(p->db, p->cfg.pool_name, dev_id, e);
    if (r == 0 && remove)
        r = thin_delete(p->db, p->cfg.pool_name, dev_id, e);
    return r;
}

static int dm_act_down(struct pipeline *p, const struct activation_rec *a, bool remove,
                       struct err *e)
{
    return device_down(p, (uint32_t)a->dev_id, remove, e);
}

static int dm_layer_remove(struct pipeline *p, const struct layer_rec *l, struct err *e)
{
    return device_down(p, (uint32_t)l->dev_id, true, e);
}

/* The pool's metadata has the figures (dm/usage.h, views.h): no directory to measure. */
static int dm_layer_usage(const char *state_dir, const struct layer_rec *l, struct backend_du *u)
{
    (void)state_dir;
    (void)l;
    (void)u;
    return 0;
}

static int dm_act_usage(const char *state_dir, const struct activation_rec *a, struct backend_du *u)
{
    (void)state_dir;
    (void)a;
    (void)u;
    return 0;
}

const struct backend_ops backend_dm_thin = {
    .name = "dm-thin",
    .layer_recorded = dm_layer_recorded,
    .layer_check = dm_layer_check,
    .layer_prepare = dm_layer_prepare,
    .layer_device = dm_layer_device,
    .layer_apply = dm_layer_apply,
    .layer_verify = dm_layer_verify,
    .layer_commit = dm_layer_commit,
    .layer_failed = dm_layer_failed,
    .act_recorded = dm_act_recorded,
    .act_up = dm_act_up,
    .act_check = dm_act_check,
    .act_create = dm_act_create,
    .act_device = dm_act_device,
    .act_failed = dm_act_failed,
    .act_down = dm_act_down,
    .layer_remove = dm_layer_remove,
    .layer_usage = dm_layer_usage,
    .act_usage = dm_act_usage,
};
