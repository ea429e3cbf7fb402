/*
 * unpack.c: the unpack machine: one run per chain id, turning a fetched layer blob into a
 * committed, inactive thin device that holds the chain's flattened file system.
 *
 *   check-unpacked  the layer is ready and its storage is there (the backend says): hand off.
 *                   Ready in the database but gone (removed behind thinimg's back): the record
 *                   is repaired (pending, no device) and the chain is unpacked again. A parent
 *                   chain that is not ready aborts the run.
 *   create-device   fresh storage for the layer from its parent's (backend.h; dm-thin: a thin
 *                   device under the operation guard). Each attempt takes fresh storage: what
 *                   an interrupted earlier attempt left is never trusted (gc reclaims it).
 *   apply-layer     the blob is verified against its seal, then the backend applies it with
 *                   the archive module. Applying a layer again over a partial application
 *                   converges to the same tree, so a resumed run re-applies on the same storage.
 *   verify          the backend checks the written layer is trustworthy.
 *   commit          the backend makes the layer read-only (dm-thin: deactivates the device),
 *                   and the layer is recorded ready with its device and counts.
 *
 * On any failure the finalizer records the layer `failed` (and the backend its storage
 * `failed`): nothing is unmounted, removed or deleted on that path.
 *
 * Started by unpack_start_image() (unpack.h), which builds the request: the blob's file comes
 * from the blob store (store/blobs.h) by the layer's digest.
 * Request (JSON): {"chain_id", "parent_chain"|null, "digest", "blob_path", "depth",
 *                  "device_bytes"|0}
 * Response (JSON): {"dev_id", "device_path", "entries", "bytes"}
 * (struct backend_layer_req and struct backend_layer, backend.h)
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard/reslock.h"
#include "pipeline/backend.h"
#include "pipeline/imagedb.h"
#include "pipeline/machine.h"
#include "pipeline/unpack.h"
#include "pipeline/updates.h"
#include "store/blobs.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/metrics.h"

static int req_parse(struct fsm_run *run, struct backend_layer_req *q)
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
static char *req_build(const struct backend_layer_req *q)
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

static void resp_get(struct fsm_run *run, struct backend_layer *s)
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

static void resp_set(struct fsm_run *run, const struct backend_layer *s)
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
                                            const struct backend_layer_req *q,
                                            struct backend_layer *s);

static struct fsm_result unpack_step(struct fsm_run *run, struct pipeline *p, unpack_step_fn fn)
{
    struct backend_layer_req q;
    if (req_parse(run, &q) < 0)
        return fsm_abort("malformed unpack request");
    struct fsm_result stop;
    if (chain_relock(run, p, q.chain_id, &stop))
        return stop;
    struct backend_layer s;
    resp_get(run, &s);
    return fn(run, p, &q, &s);
}

/* ---- check-unpacked ---------------------------------------------------------------------- */

static struct fsm_result t_check_unpacked(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    struct backend_layer_req q;
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
    bool ready = !strcmp(l.state, "ready") && p->backend->layer_recorded(&l);

    if (q.parent_chain[0]) {
        struct layer_rec parent = {0};
        r = imagedb_layer_get(p->db, q.parent_chain, &parent);
        bool ok = r == 0 && !strcmp(parent.state, "ready") && p->backend->layer_recorded(&parent);
        char pstate[16], perr[768] = "";
        snprintf(pstate, sizeof(pstate), "%s", r == 0 ? parent.state : "missing");
        /* The parent's error is the image's: "parent failed" alone would hide the cause (and
         * the exit code that goes with it, e.g. 3 for an unhealthy host). */
        if (r == 0 && parent.error && *parent.error)
            snprintf(perr, sizeof(perr), " (%s)", parent.error);
        layer_rec_free(&parent);
        if (!ok && !ready) {
            layer_rec_free(&l);
            return fsm_with_kind(fsm_abort("parent layer %.19s is %s%s: it must be unpacked first",
                                           q.parent_chain, pstate, perr),
                                 fsm_run_predecessor_kind(run));
        }
    }
    if (!ready) {
        layer_rec_free(&l);
        return fsm_ok();
    }

    /* Recorded ready: is its storage really there? */
    err_clear(&e);
    r = p->backend->layer_check(p, run, q.chain_id, &l, &e);
    uint32_t dev_id = (uint32_t)l.dev_id;
    layer_rec_free(&l);
    if (r < 0)
        return fsm_retry("cannot check the storage of layer %.19s: %s", q.chain_id, err_str(&e));
    if (r > 0)
        return fsm_handoff("layer %.19s already unpacked on device %u", q.chain_id, dev_id);
    return fsm_ok();
}

/* ---- create-device ----------------------------------------------------------------------- */

static struct fsm_result create_device(struct fsm_run *run, struct pipeline *p,
                                       const struct backend_layer_req *q, struct backend_layer *s)
{
    /* Each attempt takes fresh storage (see above): nothing of an earlier one is reused. */
    *s = (struct backend_layer){.entries = -1, .bytes = -1};
    struct fsm_result res = p->backend->layer_prepare(run, p, q, s);
    if (res.outcome != FSM_OK)
        return res;
    resp_set(run, s);
    struct layer_update *u = layer_update_new(q->chain_id);
    u->set_device = true;
    p->backend->layer_device(p, s, u->pool, sizeof(u->pool), &u->dev_id);
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "unpacking");
    fsm_run_on_commit(run, layer_update_apply, u, layer_update_free);
    return fsm_ok();
}

static struct fsm_result t_create_device(struct fsm_run *run, void *ud)
{
    return unpack_step(run, ud, create_device);
}

/* ---- apply-layer ------------------------------------------------------------------------- */

static struct fsm_result apply_layer(struct fsm_run *run, struct pipeline *p,
                                     const struct backend_layer_req *q, struct backend_layer *s)
{
    /* Only bytes that were hashed and matched, and cannot have changed since, are applied
     * (store/blobfile.h): one stat while the file equals its seal, a hash when it differs. */
    char why[512];
    int r = blobs_verify(p->db, p->cfg.blob_dir, q->digest, q->blob_path, why, sizeof(why));
    if (r < 0)
        return fsm_retry("cannot verify blob %s before applying it: %s", q->digest, strerror(-r));
    if (r == 0)
        return fsm_abort("blob %s cannot be applied: %s (quarantined); run the command again: "
                         "the blob is fetched again",
                         q->digest, why);
    struct fsm_result res = p->backend->layer_apply(run, p, q, s);
    if (res.outcome != FSM_OK)
        return res;
    resp_set(run, s);
    metrics_counter_add(METRIC_APPLY_BYTES, (double)s->bytes, NULL);
    metrics_counter_add(METRIC_APPLY_ENTRIES, (double)s->entries, NULL);
    return fsm_ok();
}

static struct fsm_result t_apply_layer(struct fsm_run *run, void *ud)
{
    return unpack_step(run, ud, apply_layer);
}

/* ---- verify ------------------------------------------------------------------------------ */

static struct fsm_result verify(struct fsm_run *run, struct pipeline *p,
                                const struct backend_layer_req *q, struct backend_layer *s)
{
    return p->backend->layer_verify(run, p, q, s);
}

static struct fsm_result t_verify(struct fsm_run *run, void *ud)
{
    return unpack_step(run, ud, verify);
}

/* ---- commit ------------------------------------------------------------------------------ */

static struct fsm_result commit(struct fsm_run *run, struct pipeline *p,
                                const struct backend_layer_req *q, struct backend_layer *s)
{
    struct fsm_result res = p->backend->layer_commit(run, p, q, s);
    if (res.outcome != FSM_OK)
        return res;
    struct layer_update *u = layer_update_new(q->chain_id);
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "ready");
    u->set_stats = true;
    u->entries = s->entries;
    u->bytes = s->bytes;
    fsm_run_on_commit(run, layer_update_apply, u, layer_update_free);
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
        struct backend_layer_req q = {.depth = (int)(i + 1), .device_bytes = device_bytes};
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
    struct backend_layer_req q;
    if (req_parse(run, &q) < 0)
        return;
    if (!fsm_outcome_success(outcome)) {
        struct layer_update *u = layer_update_new(q.chain_id);
        u->set_state = true;
        snprintf(u->state, sizeof(u->state), "failed");
        u->error = strdup(error && *error ? error : fsm_outcome_name(outcome));
        u->only_if_not_ready = true;
        fsm_run_on_commit(run, layer_update_apply, u, layer_update_free);
        struct backend_layer s;
        resp_get(run, &s);
        p->backend->layer_failed(run, p, &s, error);
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
