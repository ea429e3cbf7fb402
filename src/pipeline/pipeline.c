/*
 * pipeline.c: opening the pipeline (manager, guard, machines), starting and joining runs, and
 * the helpers the machines share (waiting for children, chaining unpack runs). See pipeline.h.
 */
#include "pipeline/pipeline.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dm/pool.h"
#include "pipeline/fetch.h"
#include "pipeline/imagedb.h"
#include "pipeline/pipeline_internal.h"
#include "util/cleanup.h"
#include "util/defaults.h"
#include "util/log.h"

void pipeline_pool_health(struct health_check *c, void *ud)
{
    const char *pool = ud;
    struct pool_info pi;
    struct err e = {0};
    int r = pool_get(NULL, pool, &pi, &e);
    if (r == -ENXIO || r == -ENODEV) {
        c->level = HEALTH_SKIP;
        snprintf(c->detail, sizeof(c->detail), "pool \"%s\" is not set up here (setup-pool or "
                 "process-image creates it)", pool);
        return;
    }
    if (r == 0) {
        err_clear(&e);
        r = pool_check_usable(pool, &pi.status, NULL, &e);
    }
    c->level = r == 0 ? HEALTH_OK : HEALTH_FAIL;
    if (r == 0)
        snprintf(c->detail, sizeof(c->detail), "pool \"%s\" usable (%s, data %.1f%%, metadata "
                 "%.1f%%)", pool, pool_mode_name(pi.status.mode), pool_status_data_pct(&pi.status),
                 pool_status_meta_pct(&pi.status));
    else
        snprintf(c->detail, sizeof(c->detail), "%s", err_str(&e));
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int config_copy(struct config *dst, const struct config *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->state_dir = dup_or_null(src->state_dir);
    dst->db_path = dup_or_null(src->db_path);
    dst->blob_dir = dup_or_null(src->blob_dir);
    dst->tmp_dir = dup_or_null(src->tmp_dir);
    dst->mount_dir = dup_or_null(src->mount_dir);
    dst->pool_dir = dup_or_null(src->pool_dir);
    dst->lock_path = dup_or_null(src->lock_path);
    dst->socket_path = dup_or_null(src->socket_path);
    dst->pool_name = dup_or_null(src->pool_name);
    dst->source = dup_or_null(src->source);
    return dst->state_dir && dst->pool_name && dst->mount_dir ? 0 : -ENOMEM;
}

int pipeline_open(struct db *db, const struct pipeline_opts *o, struct pipeline **out,
                  struct err *e)
{
    struct pipeline *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->db = db;
    pthread_mutex_init(&p->lifecycle_lock, NULL);
    int r = config_copy(&p->cfg, o->cfg);
    if (r < 0) {
        pipeline_close(p);
        return r;
    }
    if (o->source)
        p->source = *o->source;
    p->policy = o->policy ? *o->policy : archive_policy_default();
    p->device_bytes = o->device_bytes ? o->device_bytes : PIPELINE_DEFAULT_DEVICE_BYTES;

    /* The guard reports kernel log lines but does not consume them: a line that refused work
     * keeps refusing it until an operator has looked and run `thinimg health`, which moves the
     * cursor (a retry must not be what acknowledges a thin-pool error). guard_new copies the
     * path. */
    char cursor[4096];
    snprintf(cursor, sizeof(cursor), "%s/kmsg.cursor", p->cfg.state_dir);
    struct guard_opts go = {.concurrency = GUARD_DEFAULT_CONCURRENCY,
                            .health = {.cursor_path = cursor, .advance_cursor = false},
                            .skip_health = o->skip_health};
    r = guard_new(&go, &p->guard);
    if (r < 0) {
        pipeline_close(p);
        return r;
    }
    guard_set_pool_check(p->guard, pipeline_pool_health, p->cfg.pool_name);

    struct fsm_queue_cfg queues[] = {
        {"fetch", o->fetch_limit > 0 ? o->fetch_limit : DEFAULT_FETCH_QUEUE_LIMIT},
        {"unpack", o->unpack_limit > 0 ? o->unpack_limit : DEFAULT_UNPACK_QUEUE_LIMIT},
    };
    struct fsm_config fc = {.queues = queues, .n_queues = 2,
                            .history_retention_days = DEFAULT_HISTORY_RETENTION_DAYS,
                            .history_retention_runs = DEFAULT_HISTORY_RETENTION_RUNS};
    r = fsm_manager_open(db, &fc, &p->mgr, e);
    if (r < 0) {
        pipeline_close(p);
        return r;
    }
    if ((r = pipeline_register_fetch(p, e)) < 0 || (r = pipeline_register_unpack(p, e)) < 0 ||
        (r = pipeline_register_activate(p, e)) < 0 || (r = pipeline_register_process(p, e)) < 0) {
        pipeline_close(p);
        return r;
    }
    *out = p;
    return 0;
}

int pipeline_resume(struct pipeline *p)
{
    return fsm_manager_resume(p->mgr);
}

void pipeline_shutdown(struct pipeline *p, uint32_t timeout_ms)
{
    if (p && p->mgr)
        fsm_manager_shutdown(p->mgr, timeout_ms);
}

void pipeline_close(struct pipeline *p)
{
    if (!p)
        return;
    if (p->mgr)
        fsm_manager_close(p->mgr);
    fetch_context_free(p->fetch_ctx);
    guard_free(p->guard);
    config_free(&p->cfg);
    pthread_mutex_destroy(&p->lifecycle_lock);
    free(p);
}

struct fsm_manager *pipeline_manager(struct pipeline *p)
{
    return p->mgr;
}

struct guard *pipeline_guard(struct pipeline *p)
{
    return p->guard;
}

bool pipeline_guard_enter(struct pipeline *p, struct fsm_run *run, const char *what,
                          struct fsm_result *refused)
{
    struct err e = {0};
    int r = guard_enter(p->guard, what, fsm_run_cancel_fd(run), &e);
    if (r == 0)
        return true;
    /* Refused (an unhealthy host or pool): the run ends with the reason, as that kind; the
     * operator acts and runs it again. */
    *refused = r == -ECANCELED ? fsm_retry("cancelled while waiting for the operation guard")
                               : fsm_with_kind(fsm_abort("%s", err_str(&e)), err_kind_of(r));
    return false;
}

int pipeline_wait_child(struct fsm_run *run, const struct fsm_id *child, enum fsm_outcome *outcome,
                        enum err_kind *kind, char **error)
{
    struct fsm_manager *m = fsm_run_manager(run);
    for (;;) {
        if (fsm_run_cancelled(run) != FSM_CANCEL_NONE)
            return -ECANCELED;
        int r = fsm_wait_kind(m, child, PIPELINE_WAIT_SLICE_MS, outcome, kind, error);
        if (r != -ETIMEDOUT)
            return r;
    }
}

int pipeline_image_lookup(struct pipeline *p, const char *image, const char *what_to_do,
                          struct image_rec *out, struct err *e)
{
    int r = imagedb_image_find(p->db, image, out);
    if (r == -EEXIST)
        return err_set(e, -EINVAL, "image name '%s' is ambiguous; give its ref (list-images)",
                       image);
    if (r == -ENOENT)
        return err_set(e, r, "no image '%s' (%s)", image, what_to_do);
    if (r < 0)
        return err_set(e, r, "cannot read image %s: %s", image, strerror(-r));
    return 0;
}

/* ---- finding runs ------------------------------------------------------------------------- */

struct find_ctx {
    struct fsm_id found;
    bool want_unfinished;
};

static int find_first(const struct fsm_run_record *r, void *ud)
{
    struct find_ctx *c = ud;
    if (c->want_unfinished && r->status == FSM_RUN_FINISHED)
        return 0;
    c->found = r->version;
    return 1;
}

/* The newest run of type with resource_id (optionally a child of parent, optionally only
 * unfinished ones). 0 and *out set, or -ENOENT. */
int pipeline_find_run(struct pipeline *p, const char *type, const char *resource_id,
                      const struct fsm_id *parent, bool unfinished, struct fsm_id *out)
{
    struct fsm_list_filter f = {.include_finished = !unfinished, .type = type,
                                .resource_id = resource_id, .parent = parent};
    struct find_ctx c = {.want_unfinished = unfinished};
    int r = fsm_db_list_runs(p->db, &f, find_first, &c);
    if (r < 0)
        return r;
    if (fsm_id_is_zero(&c.found))
        return -ENOENT;
    *out = c.found;
    return 0;
}

/* ---- unpack chains ------------------------------------------------------------------------ */

int pipeline_start_unpacks(struct pipeline *p, int64_t image_id, const struct fsm_id *parent,
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
        bool ready = !strcmp(l.state, "ready");
        layer_rec_free(&l);
        struct fsm_id run = {0};
        /* Another image may be unpacking the same chain right now: join its run. */
        if (pipeline_find_run(p, "unpack", v[i].chain_id, NULL, true, &run) == 0) {
            prev = run;
            *top = run;
            continue;
        }
        /* Ready layers still get a run: its first step verifies the device is in the pool
         * (and recreates it when it is not), without any devicemapper writes. */
        json_t *req = json_pack("{s:s, s:s?, s:s, s:s, s:i}", "chain_id", v[i].chain_id,
                                "parent_chain", i > 0 ? v[i - 1].chain_id : NULL, "digest",
                                v[i].digest, "blob_path", "", "depth", (int)(i + 1));
        char blob[4096];
        r = pipeline_blob_path(p, v[i].digest, blob, sizeof(blob));
        if (r == 0)
            json_object_set_new(req, "blob_path", json_string(blob));
        if (device_bytes)
            json_object_set_new(req, "device_bytes", json_integer((json_int_t)device_bytes));
        int64_t entries = -1;
        if (pipeline_blob_entries(p, v[i].digest, &entries) == 0 && entries >= 0)
            json_object_set_new(req, "expected_entries", json_integer(entries));
        char *txt = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        if (!txt) {
            r = -ENOMEM;
            break;
        }
        struct fsm_start_opts so = {.queue = "unpack",
                                    .run_after = fsm_id_is_zero(&prev) ? NULL : &prev,
                                    .parent = parent};
        r = fsm_start(p->mgr, p->m_unpack, v[i].chain_id, txt, strlen(txt), &so, &run);
        free(txt);
        if (r < 0) {
            err_set(e, r, "cannot start the unpack of layer %zu", i + 1);
            break;
        }
        (void)ready;
        prev = run;
        *top = run;
    }
    imagedb_image_layers_free(v, n);
    return r < 0 ? r : 0;
}

/* ---- what a run's outcome means ----------------------------------------------------------- */

int pipeline_run_errno(enum fsm_outcome outcome, enum err_kind kind)
{
    if (fsm_outcome_success(outcome))
        return 0;
    if (outcome == FSM_CANCELLED)
        return -ECANCELED;
    return err_kind_errno(kind);
}
