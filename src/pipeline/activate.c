/*
 * activate.c: the activate machine: one run per activation name (unqueued, so one active run
 * per name), giving an image a named, writable thin snapshot of its top layer: the block
 * device a microVM boots from.
 *
 *   check-snapshot   the activation is recorded active and its dm device exists: hand off.
 *                    Recorded but its dm device is gone (reboot, `dmsetup remove` behind
 *                    thinimg's back) while the thin device is still in the pool: reactivate it
 *                    (the VM's writes are kept). Gone from the pool as well: the record is
 *                    repaired and a new snapshot is taken. An inactive activation (after
 *                    `thinimg deactivate`) is reactivated the same way.
 *   create-snapshot  under the operation guard, with the pool usable: create_snap of the top
 *                    layer's committed, inactive device, then activate it as
 *                    /dev/mapper/<pool>-act-<name>.
 *   register         the activation becomes active.
 *
 * Failure: the finalizer records the activation (and its device) failed; nothing is removed.
 *
 * Started by activate_start() (activate.h), which builds the request; process-image starts it
 * as its child, `thinimg activate` and the API on their own (pipeline_start_activate()).
 * Request (JSON): {"name", "image_id", "chain_id"}
 * Response (JSON): {"dev_id", "device_path", "reactivate"}
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dm/pool.h"
#include "dm/thin.h"
#include "pipeline/activate.h"
#include "pipeline/imagedb.h"
#include "pipeline/machine.h"
#include "pipeline/updates.h"
#include "util/cleanup.h"
#include "util/log.h"

/* How many "<name>.<n>" names to try when "<name>" is still held by a failed device that gc
 * has not removed yet. */
#define ACTIVATE_NAME_GENERATIONS 16

struct act_req {
    char name[80];
    int64_t image_id;
    char chain_id[DIGEST_STR_LEN + 1];
};

struct act_resp {
    uint32_t dev_id;
    char device_path[256];
    bool reactivate;
};

static int req_parse(struct fsm_run *run, struct act_req *q)
{
    size_t len;
    const void *data = fsm_run_request(run, &len);
    json_t *o = json_loadb(data, len, 0, NULL);
    if (!o)
        return -EBADMSG;
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *chain = json_string_value(json_object_get(o, "chain_id"));
    int r = 0;
    if (!name || !chain || !imagedb_name_valid(name) || !digest_valid(chain))
        r = -EBADMSG;
    else {
        snprintf(q->name, sizeof(q->name), "%s", name);
        snprintf(q->chain_id, sizeof(q->chain_id), "%s", chain);
        q->image_id = json_integer_value(json_object_get(o, "image_id"));
    }
    json_decref(o);
    return r;
}

static void resp_get(struct fsm_run *run, struct act_resp *s)
{
    memset(s, 0, sizeof(*s));
    size_t len;
    const void *data = fsm_run_response(run, &len);
    json_t *o = data && len ? json_loadb(data, len, 0, NULL) : NULL;
    if (!o)
        return;
    s->dev_id = (uint32_t)json_integer_value(json_object_get(o, "dev_id"));
    const char *path = json_string_value(json_object_get(o, "device_path"));
    snprintf(s->device_path, sizeof(s->device_path), "%s", path ? path : "");
    s->reactivate = json_is_true(json_object_get(o, "reactivate"));
    json_decref(o);
}

static void resp_set(struct fsm_run *run, const struct act_resp *s)
{
    json_t *o = json_pack("{s:I, s:s, s:b}", "dev_id", (json_int_t)s->dev_id, "device_path",
                          s->device_path, "reactivate", s->reactivate);
    char *txt = json_dumps(o, JSON_COMPACT);
    if (txt)
        fsm_run_set_response(run, txt, strlen(txt));
    free(txt);
    json_decref(o);
}

static struct fsm_result t_check_snapshot(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    struct act_req q;
    if (req_parse(run, &q) < 0)
        return fsm_abort("malformed activate request");
    struct layer_rec l = {0};
    if (imagedb_layer_get(p->db, q.chain_id, &l) < 0)
        return fsm_with_kind(fsm_abort("the image's top layer %.19s is not recorded; run "
                                       "process-image",
                                       q.chain_id),
                             ERR_KIND_NOT_FOUND);
    bool layer_ready = !strcmp(l.state, "ready") && l.dev_id > 0;
    layer_rec_free(&l);
    if (!layer_ready)
        return fsm_with_kind(fsm_abort("the image's top layer %.19s is not unpacked; run "
                                       "process-image",
                                       q.chain_id),
                             ERR_KIND_NOT_FOUND);

    struct activation_rec a = {0};
    int r = imagedb_activation_get(p->db, q.name, &a);
    if (r == -ENOENT)
        return fsm_ok(); /* new activation */
    if (r < 0)
        return fsm_retry("cannot read activation %s", q.name);
    if (a.image_id != q.image_id) {
        char other[128];
        snprintf(other, sizeof(other), "%s", a.image_name ? a.image_name : "?");
        activation_rec_free(&a);
        return fsm_with_kind(fsm_abort("activation name %s is taken by image %s; choose another "
                                       "--name",
                                       q.name, other),
                             ERR_KIND_BUSY);
    }
    uint32_t dev_id = (uint32_t)a.dev_id;
    bool usable = dev_id && (!strcmp(a.state, "active") || !strcmp(a.state, "inactive"));
    bool active = !strcmp(a.state, "active");
    activation_rec_free(&a);
    if (!usable)
        return fsm_ok(); /* creating or failed: a new snapshot */

    struct thin_dev d;
    if (thin_get(p->db, p->cfg.pool_name, dev_id, &d) == 0 && active && dm_dev_exists(d.name) == 1)
        return fsm_handoff("activation %s is active", q.name);

    /* The dm device is gone (or deactivated): is the thin device still in the pool? */
    uint32_t *ids = NULL;
    size_t n = 0;
    struct err e = {0};
    r = thin_pool_metadata_ids(p->cfg.pool_name, &ids, NULL, &n, &e);
    if (r < 0)
        return fsm_retry("cannot read the pool's device list: %s", err_str(&e));
    bool in_pool = false;
    for (size_t i = 0; i < n; i++)
        in_pool |= ids[i] == dev_id;
    free(ids);
    if (in_pool) {
        struct act_resp s = {.dev_id = dev_id, .reactivate = true};
        resp_set(run, &s);
        if (active)
            log_warn("activation device missing; reactivating it", "activation=%s dev_id=%u",
                     q.name, dev_id);
        return fsm_ok();
    }
    log_warn("activation's thin device is gone from the pool; taking a new snapshot",
             "activation=%s dev_id=%u", q.name, dev_id);
    struct device_mark *m =
        device_mark_new(p->cfg.pool_name, dev_id, "deleted", "missing from the pool metadata");
    fsm_run_on_commit(run, device_mark_apply, m, device_mark_free);
    struct activation_update *u = activation_update_new(q.name);
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "creating");
    u->error = strdup("thin device removed behind thinimg's back; recreated");
    u->set_device = true;
    fsm_run_on_commit(run, activation_update_apply, u, activation_update_free);
    return fsm_ok();
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

static struct fsm_result t_create_snapshot(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    struct act_req q;
    if (req_parse(run, &q) < 0)
        return fsm_abort("malformed activate request");
    struct act_resp s;
    resp_get(run, &s);
    struct err e = {0};
    struct fsm_result refused;
    if (!pipeline_guard_enter(p, run, "create-snapshot", &refused))
        return refused;
    int r = 0;
    if (!s.reactivate) {
        r = pool_ensure_usable(p->cfg.pool_name, NULL, &e);
        struct layer_rec l = {0};
        if (r == 0 && imagedb_layer_get(p->db, q.chain_id, &l) < 0)
            r = err_set(&e, -ENOENT, "top layer %.19s is not recorded", q.chain_id);
        uint32_t origin = (uint32_t)l.dev_id;
        layer_rec_free(&l);
        /* An earlier attempt of this transition may have taken the snapshot and died before
         * its checkpoint: the device is ours (same name, same origin, no activation uses it).
         * create_snap is atomic and nothing has written to it, so it is taken over. */
        char first[DM_NAME_MAX + 1];
        struct thin_dev held;
        if (r == 0 &&
            dm_name_format(first, sizeof(first), p->cfg.pool_name, DM_KIND_ACTIVATION, q.name) ==
                0 &&
            thin_find_by_name(p->db, first, &held) == 0 && !strcmp(held.state, "ready") &&
            held.origin_id == origin && !device_in_use(p->db, p->cfg.pool_name, held.id)) {
            s.dev_id = held.id;
            log_info("taking over the snapshot of an interrupted attempt",
                     "activation=%s "
                     "dev_id=%u",
                     q.name, held.id);
        }
        /* "<name>" may still be held by an older failed device that gc has not removed. */
        char suffix[96] = "";
        for (int gen = 1; r == 0 && !s.dev_id && !suffix[0]; gen++) {
            if (gen > ACTIVATE_NAME_GENERATIONS) {
                r = err_set(&e, -EEXIST,
                            "names %s .. %s.%d are all held by old devices; run "
                            "`thinimg gc --force`",
                            q.name, q.name, ACTIVATE_NAME_GENERATIONS);
                break;
            }
            char cand[96], dmname[DM_NAME_MAX + 1];
            if (gen == 1)
                snprintf(cand, sizeof(cand), "%s", q.name);
            else
                snprintf(cand, sizeof(cand), "%s.%d", q.name, gen);
            r = dm_name_format(dmname, sizeof(dmname), p->cfg.pool_name, DM_KIND_ACTIVATION, cand);
            if (r < 0) {
                err_set(&e, r, "activation name %s does not fit a device name", q.name);
                break;
            }
            struct thin_dev other;
            if (thin_find_by_name(p->db, dmname, &other) < 0 || !strcmp(other.state, "deleted"))
                snprintf(suffix, sizeof(suffix), "%s", cand);
        }
        if (r == 0 && !s.dev_id) {
            struct thin_spec spec = {.kind = THIN_KIND_ACTIVATION, .name_suffix = suffix};
            r = thin_snapshot(p->db, p->cfg.pool_name, origin, &spec, &s.dev_id, &e);
        }
    }
    if (r == 0)
        r = thin_activate(p->db, p->cfg.pool_name, s.dev_id, s.device_path, sizeof(s.device_path),
                          &e);
    guard_leave(p->guard);
    if (r < 0) /* a refusing pool (full, read-only, needs_check) is "unhealthy" by its errno */
        return fsm_with_kind(fsm_abort("activation %s: %s", q.name, err_str(&e)), err_kind_of(r));
    resp_set(run, &s);
    struct activation_update *u = activation_update_new(q.name);
    u->insert = true;
    u->image_id = q.image_id;
    snprintf(u->chain_id, sizeof(u->chain_id), "%s", q.chain_id);
    u->set_device = true;
    snprintf(u->pool, sizeof(u->pool), "%s", p->cfg.pool_name);
    u->dev_id = s.dev_id;
    snprintf(u->device_path, sizeof(u->device_path), "%s", s.device_path);
    fsm_run_on_commit(run, activation_update_apply, u, activation_update_free);
    log_info("activation device ready", "activation=%s dev_id=%u device=%s", q.name, s.dev_id,
             s.device_path);
    return fsm_ok();
}

static struct fsm_result t_register(struct fsm_run *run, void *ud)
{
    (void)ud;
    struct act_req q;
    if (req_parse(run, &q) < 0)
        return fsm_abort("malformed activate request");
    struct activation_update *u = activation_update_new(q.name);
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "active");
    fsm_run_on_commit(run, activation_update_apply, u, activation_update_free);
    return fsm_ok();
}

static void fin_activate(struct fsm_run *run, enum fsm_outcome outcome, const char *error, void *ud)
{
    struct pipeline *p = ud;
    if (fsm_outcome_success(outcome))
        return;
    struct act_req q;
    if (req_parse(run, &q) < 0)
        return;
    struct act_resp s;
    resp_get(run, &s);
    struct activation_rec a = {0};
    if (imagedb_activation_get(p->db, q.name, &a) == 0) {
        bool ours = a.image_id == q.image_id;
        activation_rec_free(&a);
        if (ours) {
            struct activation_update *u = activation_update_new(q.name);
            u->set_state = true;
            snprintf(u->state, sizeof(u->state), "failed");
            u->error = strdup(error && *error ? error : fsm_outcome_name(outcome));
            fsm_run_on_commit(run, activation_update_apply, u, activation_update_free);
        }
    }
    if (s.dev_id && !s.reactivate) {
        struct device_mark *m =
            device_mark_new(p->cfg.pool_name, s.dev_id, "failed", error ? error : "");
        m->only_if_ready = true;
        fsm_run_on_commit(run, device_mark_apply, m, device_mark_free);
    }
}

int pipeline_register_activate(struct pipeline *p, struct err *e)
{
    static const struct fsm_transition_def t[] = {
        {"check-snapshot", t_check_snapshot, &machine_policy_quick},
        {"create-snapshot", t_create_snapshot, &machine_policy_quick},
        {"register", t_register, &machine_policy_quick},
    };
    return machine_register(p, "activate", "activate", "activate", t, ARRAY_SIZE(t), fin_activate,
                            &p->m_activate, e);
}

/* ---- starting ------------------------------------------------------------------------------ */

int activate_start(struct pipeline *p, const char *name, int64_t image_id, const char *chain_id,
                   const struct fsm_id *parent, struct fsm_id *run)
{
    json_t *req = json_pack("{s:s, s:I, s:s}", "name", name, "image_id", (json_int_t)image_id,
                            "chain_id", chain_id);
    _cleanup_free_ char *txt = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!txt)
        return -ENOMEM;
    struct fsm_start_opts so = {.parent = parent};
    return fsm_start(p->mgr, p->m_activate, name, txt, strlen(txt), parent ? &so : NULL, run);
}

int pipeline_start_activate(struct pipeline *p, const char *image, const char *name,
                            struct fsm_id *run, struct err *e)
{
    struct image_rec img = {0};
    int r = pipeline_image_lookup(p, image, "see list-images; process-image makes one", &img, e);
    if (r < 0)
        return r;
    if (strcmp(img.state, "ready") != 0 || !img.top_chain) {
        r = err_set(e, -EAGAIN, "image %s is %s, not ready; run `thinimg process-image %s`",
                    img.name, img.state, img.ref);
        image_rec_free(&img);
        return r;
    }
    char def[80];
    if (!name) {
        imagedb_default_activation_name(img.name, def, sizeof(def));
        name = def;
    }
    if (!imagedb_name_valid(name)) {
        image_rec_free(&img);
        return err_set(e, -EINVAL, "invalid activation name '%s' (use 1-64 of [A-Za-z0-9_.-])",
                       name);
    }
    r = activate_start(p, name, img.id, img.top_chain, NULL, run);
    image_rec_free(&img);
    if (r == -EEXIST)
        return 0;
    return r < 0 ? err_set(e, r, "cannot start the activation") : 0;
}
