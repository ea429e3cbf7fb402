/*
 * activate.c: the activate machine: one run per activation name (unqueued, so one active run
 * per name), giving an image a named, writable copy of its top layer on the storage backend
 * (backend.h; dm-thin: a thin snapshot, the block device a microVM boots from).
 *
 *   check-snapshot   the activation is recorded active and the backend says it is up: hand
 *                    off. Recorded but not up (reboot, `dmsetup remove` behind thinimg's back,
 *                    `thinimg deactivate`) while its storage is still there: bring it up again
 *                    (the VM's writes are kept). Its storage gone as well: the record is
 *                    repaired and new storage is made.
 *   create-snapshot  the backend makes the activation's storage from the top layer's (dm-thin:
 *                    create_snap under the operation guard, with the pool usable, activated as
 *                    /dev/mapper/<pool>-act-<name>), or brings the existing one up.
 *   register         the activation becomes active.
 *
 * Failure: the finalizer records the activation (and the backend its storage) failed; nothing
 * is removed.
 *
 * Started by activate_start() (activate.h), which builds the request; process-image starts it
 * as its child, `thinimg activate` and the API on their own (pipeline_start_activate()).
 * Request (JSON): {"name", "image_id", "chain_id"}
 * Response (JSON): {"dev_id", "device_path", "reactivate"}
 * (struct backend_act_req and struct backend_act, backend.h)
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/activate.h"
#include "pipeline/backend.h"
#include "pipeline/imagedb.h"
#include "pipeline/machine.h"
#include "pipeline/updates.h"
#include "util/cleanup.h"
#include "util/log.h"

static int req_parse(struct fsm_run *run, struct backend_act_req *q)
{
    size_t len;
    const void *data = fsm_run_request(run, &len);
    json_t *o = json_loadb(data, len, 0, NULL);
    if (!o)
        return -EBADMSG;
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *chain = json_string_value(json_object_get(o, "chain_id"));
    const char *mount_at = json_string_value(json_object_get(o, "mount_at"));
    memset(q, 0, sizeof(*q));
    int r = 0;
    if (!name || !chain || !imagedb_name_valid(name) || !digest_valid(chain) ||
        (mount_at && (mount_at[0] != '/' || strlen(mount_at) >= sizeof(q->mount_at))))
        r = -EBADMSG;
    else {
        snprintf(q->mount_at, sizeof(q->mount_at), "%s", mount_at ? mount_at : "");
        snprintf(q->name, sizeof(q->name), "%s", name);
        snprintf(q->chain_id, sizeof(q->chain_id), "%s", chain);
        q->image_id = json_integer_value(json_object_get(o, "image_id"));
    }
    json_decref(o);
    return r;
}

static void resp_get(struct fsm_run *run, struct backend_act *s)
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

static void resp_set(struct fsm_run *run, const struct backend_act *s)
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
    struct backend_act_req q;
    if (req_parse(run, &q) < 0)
        return fsm_abort("malformed activate request");
    struct layer_rec l = {0};
    if (imagedb_layer_get(p->db, q.chain_id, &l) < 0)
        return fsm_with_kind(fsm_abort("the image's top layer %.19s is not recorded; run "
                                       "process-image",
                                       q.chain_id),
                             ERR_KIND_NOT_FOUND);
    bool layer_ready = !strcmp(l.state, "ready") && p->backend->layer_recorded(&l);
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
    bool usable = p->backend->act_recorded(&a) &&
                  (!strcmp(a.state, "active") || !strcmp(a.state, "inactive"));
    if (!usable) {
        activation_rec_free(&a);
        return fsm_ok(); /* creating or failed: a new snapshot */
    }
    struct backend_act s = {.dev_id = (uint32_t)a.dev_id, .reactivate = true};
    snprintf(s.device_path, sizeof(s.device_path), "%s", a.device_path ? a.device_path : "");
    struct err e = {0};
    r = p->backend->act_check(p, run, &a, &e);
    activation_rec_free(&a);
    if (r > 0)
        return fsm_handoff("activation %s is active", q.name);
    if (r == 0) {
        resp_set(run, &s);
        return fsm_ok();
    }
    if (r != -ENOENT)
        return fsm_retry("cannot check the storage of activation %s: %s", q.name, err_str(&e));
    struct activation_update *u = activation_update_new(q.name);
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "creating");
    u->error = strdup(err_str(&e));
    u->set_device = true;
    fsm_run_on_commit(run, activation_update_apply, u, activation_update_free);
    return fsm_ok();
}

static struct fsm_result t_create_snapshot(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    struct backend_act_req q;
    if (req_parse(run, &q) < 0)
        return fsm_abort("malformed activate request");
    struct backend_act s;
    resp_get(run, &s);
    struct fsm_result res = p->backend->act_create(run, p, &q, &s);
    if (res.outcome != FSM_OK)
        return res;
    resp_set(run, &s);
    struct activation_update *u = activation_update_new(q.name);
    u->insert = true;
    u->image_id = q.image_id;
    snprintf(u->chain_id, sizeof(u->chain_id), "%s", q.chain_id);
    u->set_device = true;
    p->backend->act_device(p, &s, u->pool, sizeof(u->pool), &u->dev_id);
    snprintf(u->device_path, sizeof(u->device_path), "%s", s.device_path);
    fsm_run_on_commit(run, activation_update_apply, u, activation_update_free);
    return fsm_ok();
}

static struct fsm_result t_register(struct fsm_run *run, void *ud)
{
    (void)ud;
    struct backend_act_req q;
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
    struct backend_act_req q;
    if (req_parse(run, &q) < 0)
        return;
    struct backend_act s;
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
    p->backend->act_failed(run, p, &s, error);
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

static int start_run(struct pipeline *p, const char *name, int64_t image_id, const char *chain_id,
                     const char *mount_at, const struct fsm_id *parent, struct fsm_id *run)
{
    json_t *req = json_pack("{s:s, s:I, s:s}", "name", name, "image_id", (json_int_t)image_id,
                            "chain_id", chain_id);
    if (req && mount_at)
        json_object_set_new(req, "mount_at", json_string(mount_at));
    _cleanup_free_ char *txt = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!txt)
        return -ENOMEM;
    struct fsm_start_opts so = {.parent = parent};
    return fsm_start(p->mgr, p->m_activate, name, txt, strlen(txt), parent ? &so : NULL, run);
}

int activate_start(struct pipeline *p, const char *name, int64_t image_id, const char *chain_id,
                   const struct fsm_id *parent, struct fsm_id *run)
{
    return start_run(p, name, image_id, chain_id, NULL, parent, run);
}

int pipeline_start_activate(struct pipeline *p, const char *image, const char *name,
                            struct fsm_id *run, struct err *e)
{
    return pipeline_start_activate_at(p, image, name, NULL, run, e);
}

int pipeline_start_activate_at(struct pipeline *p, const char *image, const char *name,
                               const char *mount_at, struct fsm_id *run, struct err *e)
{
    if (mount_at && p->backend != &backend_overlay)
        return err_set(e, -EINVAL,
                       "--mount-at is for the overlay backend; this state "
                       "directory uses %s, whose activation is a block device",
                       p->backend->name);
    if (mount_at && mount_at[0] != '/')
        return err_set(e, -EINVAL, "--mount-at needs an absolute directory, not '%s'", mount_at);
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
    r = start_run(p, name, img.id, img.top_chain, mount_at, NULL, run);
    image_rec_free(&img);
    if (r == -EEXIST)
        return 0;
    return r < 0 ? err_set(e, r, "cannot start the activation") : 0;
}

/* ---- mounting again after a reboot --------------------------------------------------------- */

struct remount_ctx {
    struct pipeline *p;
    struct activation_rec *v; /* the activations recorded active that are not up */
    size_t n;
};

static int remount_collect(const struct activation_rec *a, void *ud)
{
    struct remount_ctx *c = ud;
    if (!c->p->backend->act_recorded(a) || c->p->backend->act_up(c->p, a))
        return 0;
    struct activation_rec *v = realloc(c->v, (c->n + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    c->v = v;
    c->v[c->n++] = (struct activation_rec){
        .name = strdup(a->name), .image_id = a->image_id, .chain_id = strdup(a->chain_id)};
    return 0;
}

int pipeline_remount(struct pipeline *p, int *started)
{
    *started = 0;
    if (p->backend != &backend_overlay)
        return 0; /* dm-thin: the next process-image or activate reactivates (docs/pipeline.md) */
    struct remount_ctx c = {.p = p};
    int r = imagedb_activation_list(p->db, 0, true, NULL, remount_collect, &c);
    for (size_t i = 0; i < c.n; i++) {
        struct fsm_id run;
        int sr = c.v[i].name && c.v[i].chain_id
                     ? activate_start(p, c.v[i].name, c.v[i].image_id, c.v[i].chain_id, NULL, &run)
                     : -ENOMEM;
        if (sr == 0 || sr == -EEXIST) {
            (*started)++;
            log_info("activation not mounted; mounting it again", "activation=%s", c.v[i].name);
        } else if (r == 0) {
            r = sr;
        }
        activation_rec_free(&c.v[i]);
    }
    free(c.v);
    return r;
}
