/*
 * lifecycle.c: what happens to activations and images after process-image: deactivate (the dm
 * device goes, the data stays), remove an activation (dm device and thin device), remove an
 * image (and the layer devices no other image uses). See pipeline.h, "life cycle".
 *
 * These are short devicemapper operations an operator asks for, not durable runs: each one is
 * a remove or a delete of a device that is not in use, recorded right after it happened; an
 * interrupted one is simply asked again. They run under the operation guard (serialized with
 * every other devicemapper section, health checked) and under the pipeline's lifecycle lock,
 * so two removals never race each other on the same rows. They refuse while an unfinished run
 * works on what they would remove: a removal under a running activation or unpack would leave
 * that run working on a device that is gone.
 *
 * The remaining race: a run started after the check (an activate request arriving while the
 * removal waits for the guard) is not excluded; its idempotency check finds the record gone
 * and it either recreates what it needs or fails, and gc collects what is left.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/backend.h"
#include "pipeline/imagedb.h"
#include "pipeline/machine.h"
#include "pipeline/pipeline.h"
#include "util/log.h"

/* ---- unfinished runs that would be disturbed ------------------------------------------------- */

struct busy_ctx {
    int64_t image_id;     /* match runs whose request or response names this image */
    const char *chain_id; /* or this chain id (unpack runs) */
    struct fsm_id found;
};

static int64_t json_image_id(const void *p, size_t n)
{
    if (!p || !n)
        return 0;
    json_t *o = json_loadb(p, n, 0, NULL);
    int64_t id = o ? (int64_t)json_integer_value(json_object_get(o, "image_id")) : 0;
    json_decref(o);
    return id;
}

static int busy_image_run(const struct fsm_run_record *r, void *ud)
{
    struct busy_ctx *c = ud;
    if (json_image_id(r->request, r->request_len) == c->image_id ||
        json_image_id(r->response, r->response_len) == c->image_id) {
        c->found = r->version;
        return 1;
    }
    return 0;
}

/* An unfinished process or activate run working on image_id: 0 with *run, or -ENOENT. */
static int image_run(struct pipeline *p, int64_t image_id, struct fsm_id *run)
{
    static const char *const types[] = {"process", "activate"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct busy_ctx c = {.image_id = image_id};
        struct fsm_list_filter f = {.type = types[i]};
        int r = fsm_db_list_runs(p->db, &f, busy_image_run, &c);
        if (r < 0)
            return r;
        if (!fsm_id_is_zero(&c.found)) {
            *run = c.found;
            return 0;
        }
    }
    return -ENOENT;
}

static int busy_err(struct err *e, const char *what, const char *name, const struct fsm_id *run)
{
    return err_set(e, -EBUSY,
                   "%s %s is being worked on by run %s, which has not finished; try again when "
                   "it has (thinimg runs show %s)",
                   what, name, run->s, run->s);
}

/* ---- deactivate ------------------------------------------------------------------------------ */

/* Under the guard, take the activation's storage down (and with remove, delete it), or with
 * layer set, delete that layer's storage: the backend's work (backend.h). */
static int storage_down(struct pipeline *p, const char *what, const char *name,
                        const struct activation_rec *a, const struct layer_rec *layer, bool remove,
                        int cancel_fd, struct err *e)
{
    int r = guard_enter(p->guard, what, cancel_fd, e);
    if (r < 0)
        return r;
    struct err de = {0};
    r = layer ? p->backend->layer_remove(p, layer, &de) : p->backend->act_down(p, a, remove, &de);
    guard_leave(p->guard);
    if (r == -EBUSY)
        return err_set(e, r, "%s is in use: %s", name, err_str(&de));
    if (r < 0)
        return err_set(e, r, "%s", err_str(&de));
    return 0;
}

/* The activation `name`, with no unfinished run working on it: 0 with the lifecycle lock held
 * and its record in *a (activation_rec_free() it); else a negative errno with e (lock not held,
 * nothing to free). */
static int activation_locked(struct pipeline *p, const char *name, struct activation_rec *a,
                             struct err *e)
{
    if (!name || !imagedb_name_valid(name))
        return err_set(e, -EINVAL, "invalid activation name '%s' (1-64 of [A-Za-z0-9_.-])",
                       name ? name : "");
    pthread_mutex_lock(&p->lifecycle_lock);
    int r = imagedb_activation_get(p->db, name, a);
    if (r < 0) {
        pthread_mutex_unlock(&p->lifecycle_lock);
        return r == -ENOENT ? err_set(e, r, "no activation '%s' (see list-snapshots)", name)
                            : err_set(e, r, "cannot read activation %s", name);
    }
    struct fsm_id run;
    if (pipeline_find_run(p, "activate", name, NULL, true, &run) == 0) {
        pthread_mutex_unlock(&p->lifecycle_lock);
        activation_rec_free(a);
        return busy_err(e, "activation", name, &run);
    }
    return 0;
}

int pipeline_deactivate(struct pipeline *p, const char *name, int cancel_fd, bool *was_active,
                        struct err *e)
{
    struct activation_rec a = {0};
    *was_active = false;
    int r = activation_locked(p, name, &a, e);
    if (r < 0)
        return r;
    *was_active = !strcmp(a.state, "active");
    if (p->backend->act_recorded(&a))
        r = storage_down(p, "deactivate", name, &a, NULL, false, cancel_fd, e);
    if (r == 0 && (r = imagedb_activation_set_state(p->db, name, "inactive", NULL)) < 0)
        err_set(e, r, "cannot record activation %s inactive: %s", name, strerror(-r));
    pthread_mutex_unlock(&p->lifecycle_lock);
    if (r == 0)
        log_info("activation deactivated", "activation=%s dev_id=%u was_active=%s", name,
                 (uint32_t)a.dev_id, *was_active ? "yes" : "no");
    activation_rec_free(&a);
    return r;
}

int pipeline_remove_activation(struct pipeline *p, const char *name, int cancel_fd, struct err *e)
{
    struct activation_rec a = {0};
    int r = activation_locked(p, name, &a, e);
    if (r < 0)
        return r;
    if (p->backend->act_recorded(&a))
        r = storage_down(p, "remove-activation", name, &a, NULL, true, cancel_fd, e);
    if (r == 0 && (r = imagedb_activation_delete(p->db, name)) < 0)
        err_set(e, r, "cannot delete the record of activation %s: %s", name, strerror(-r));
    pthread_mutex_unlock(&p->lifecycle_lock);
    if (r == 0)
        log_info("activation removed", "activation=%s dev_id=%u", name, (uint32_t)a.dev_id);
    activation_rec_free(&a);
    return r;
}

/* ---- remove an image ------------------------------------------------------------------------- */

static int remove_image_locked(struct pipeline *p, const char *image, int cancel_fd,
                               struct pipeline_removed_image *out, struct err *e)
{
    struct image_rec img = {0};
    int r = pipeline_image_lookup(p, image, "see list-images", &img, e);
    if (r < 0)
        return r;
    int64_t id = img.id;
    snprintf(out->name, sizeof(out->name), "%s", img.name);
    image_rec_free(&img);
    struct fsm_id run;
    if (image_run(p, id, &run) == 0)
        return busy_err(e, "image", out->name, &run);
    struct image_layer_rec *v = NULL;
    size_t n = 0;
    r = imagedb_image_layers(p->db, id, &v, &n);
    if (r < 0)
        return err_set(e, r, "cannot read the layers of image %s", out->name);
    for (size_t i = 0; i < n; i++)
        if (v[i].chain_id && pipeline_find_run(p, "unpack", v[i].chain_id, NULL, true, &run) == 0) {
            imagedb_image_layers_free(v, n);
            return busy_err(e, "a layer of image", out->name, &run);
        }
    r = imagedb_image_delete(p->db, id);
    if (r == -ENOTEMPTY) {
        imagedb_image_layers_free(v, n);
        return err_set(e, -EBUSY,
                       "image %s still has activations; remove them first (list-snapshots --all "
                       "--image %s)",
                       out->name, out->name);
    }
    if (r < 0) {
        imagedb_image_layers_free(v, n);
        return err_set(e, r, "cannot delete the record of image %s: %s%s", out->name, strerror(-r),
                       r == -EBUSY ? " (the database is locked by another process; try again "
                                     "when it is done)"
                                   : "");
    }
    /* Top down: a layer goes when nothing (image, child layer, activation) uses it. */
    for (size_t i = n; i-- > 0;) {
        if (!v[i].chain_id)
            continue;
        int users = 1;
        if (imagedb_layer_users(p->db, v[i].chain_id, &users) < 0 || users > 0)
            break; /* shared from here down */
        struct layer_rec l = {0};
        if (imagedb_layer_get(p->db, v[i].chain_id, &l) < 0)
            continue;
        if (p->backend->layer_recorded(&l)) {
            char what[64];
            snprintf(what, sizeof(what), "layer device %u", (uint32_t)l.dev_id);
            r = storage_down(p, "remove-layer", what, NULL, &l, true, cancel_fd, e);
        }
        layer_rec_free(&l);
        if (r < 0) {
            err_prefix(e, "image %s removed, but not all of its layer devices", out->name);
            break;
        }
        imagedb_layer_delete(p->db, v[i].chain_id);
        out->layers_deleted++;
    }
    out->layers_kept = (int)n - out->layers_deleted;
    imagedb_image_layers_free(v, n);
    if (r == 0)
        log_info("image removed", "image=%s layers_deleted=%d layers_kept=%d", out->name,
                 out->layers_deleted, out->layers_kept);
    return r < 0 ? r : 0;
}

int pipeline_remove_image(struct pipeline *p, const char *image, int cancel_fd,
                          struct pipeline_removed_image *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    if (!image || !*image)
        return err_set(e, -EINVAL, "no image name given");
    pthread_mutex_lock(&p->lifecycle_lock);
    int r = remove_image_locked(p, image, cancel_fd, out, e);
    pthread_mutex_unlock(&p->lifecycle_lock);
    return r;
}
