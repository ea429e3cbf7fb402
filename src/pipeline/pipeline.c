/*
 * pipeline.c: opening and closing the pipeline: the manager, the guard (with the pool's health
 * check) and the registration of the machines. See pipeline.h. Each machine owns its start
 * function and its request format (fetch_glue.h, unpack.h, activate.h, process.h); the
 * helpers they share are machine.h. Nothing calls back into this file.
 */
#include "pipeline/pipeline.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dm/pool.h"
#include "dm/pool_life.h"
#include "pipeline/activate.h"
#include "pipeline/backend.h"
#include "pipeline/fetch.h"
#include "pipeline/fetch_glue.h"
#include "pipeline/machine.h"
#include "pipeline/process.h"
#include "pipeline/unpack.h"
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
        snprintf(c->detail, sizeof(c->detail),
                 "pool \"%s\" is not set up here (setup-pool or "
                 "process-image creates it)",
                 pool);
        return;
    }
    if (r == 0) {
        err_clear(&e);
        r = pool_check_usable(pool, &pi.status, NULL, &e);
    }
    c->level = r == 0 ? HEALTH_OK : HEALTH_FAIL;
    if (r == 0)
        snprintf(c->detail, sizeof(c->detail),
                 "pool \"%s\" usable (%s, data %.1f%%, metadata "
                 "%.1f%%)",
                 pool, pool_mode_name(pi.status.mode), pool_status_data_pct(&pi.status),
                 pool_status_meta_pct(&pi.status));
    else
        snprintf(c->detail, sizeof(c->detail), "%s", err_str(&e));
}

/* The guard's last health verdict, for the load loop: a failing check is trouble. */
static bool host_trouble(void *ud, char *why, size_t n)
{
    struct pipeline *p = ud;
    struct health_report rep;
    guard_last_report(p->guard, &rep);
    for (size_t i = 0; i < rep.n; i++)
        if (rep.checks[i].level == HEALTH_FAIL) {
            snprintf(why, n, "%s: %s", rep.checks[i].name, rep.checks[i].detail);
            return true;
        }
    return false;
}

/* The pool for the load loop: trouble when it would refuse new devices, when its free data
 * blocks are under the table's low-water mark (where dm-thin raises its event), or when its
 * metadata passed the kernel's low watermark. A pool that is not set up is no trouble. */
static bool pool_trouble(void *ud, char *why, size_t n)
{
    struct pipeline *p = ud;
    if (p->backend != &backend_dm_thin)
        return false; /* no pool (and no device-mapper calls from this thread) */
    struct pool_info pi;
    struct err e = {0};
    if (pool_get(NULL, p->cfg.pool_name, &pi, &e) < 0)
        return false;
    const struct pool_status *s = &pi.status;
    err_clear(&e);
    if (pool_check_usable(p->cfg.pool_name, s, NULL, &e) < 0) {
        snprintf(why, n, "%s", err_str(&e));
        return true;
    }
    if (pi.table.low_water_blocks && s->data_total - s->data_used < pi.table.low_water_blocks) {
        snprintf(why, n, "data %.1f%% used, past the low-water mark", pool_status_data_pct(s));
        return true;
    }
    if (s->has_low_watermark && s->meta_total - s->meta_used < s->meta_low_watermark) {
        snprintf(why, n, "metadata %.1f%% used, past its low watermark", pool_status_meta_pct(s));
        return true;
    }
    return false;
}

/* Where the load loop's foreign-I/O meter looks: the pool's data (the loop device's backing
 * file, or the device itself; 0 while the pool is not set up), or on the overlay backend the
 * state directory, under which the layers are written. */
static int pool_data(void *ud, char *path, size_t n)
{
    struct pipeline *p = ud;
    if (p->backend != &backend_dm_thin) {
        /* overlay: no pool; the layers are written under the state directory */
        snprintf(path, n, "%s", p->cfg.state_dir);
        return 1;
    }
    struct pool_info pi;
    struct err e = {0};
    if (pool_get(NULL, p->cfg.pool_name, &pi, &e) < 0 || !pi.active)
        return 0;
    const char *data = pi.data_file[0] ? pi.data_file : pi.data_dev;
    if (data[0] != '/')
        return -ENODEV;
    snprintf(path, n, "%s", data);
    return 1;
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
    r = backend_choose(db, p->cfg.backend, &p->backend, e);
    if (r < 0) {
        pipeline_close(p);
        return r;
    }

    /* The guard reports kernel log lines but does not consume them: a line that refused work
     * keeps refusing it until an operator has looked and run `thinimg health`, which moves the
     * cursor (a retry must not be what acknowledges a thin-pool error). guard_new copies the
     * path. */
    struct guard_opts go = {
        .concurrency = GUARD_DEFAULT_CONCURRENCY,
        .health = {.cursor_path = p->cfg.kmsg_cursor_path, .advance_cursor = false},
        .skip_health = o->skip_health};
    r = guard_new(&go, &p->guard);
    if (r < 0) {
        pipeline_close(p);
        return r;
    }
    guard_set_pool_check(p->guard, pipeline_pool_health, p->cfg.pool_name);

    const struct pipeline_queues *q = &o->queues;
    struct fsm_queue_cfg queues[] = {
        {"fetch", q->fetch_limit > 0 ? q->fetch_limit : DEFAULT_FETCH_QUEUE_LIMIT},
        {"unpack", q->unpack_limit > 0 ? q->unpack_limit : DEFAULT_UNPACK_QUEUE_LIMIT},
    };
    struct fsm_config fc = {.queues = queues,
                            .n_queues = 2,
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
    p->queue_max[LOADLOOP_FETCH] = q->fetch_max;
    p->queue_max[LOADLOOP_UNPACK] = q->unpack_max;
    p->queue_pinned[LOADLOOP_FETCH] = q->fetch_limit;
    p->queue_pinned[LOADLOOP_UNPACK] = q->unpack_limit;
    if (!o->defer_background && (r = pipeline_start_background(p, e)) < 0) {
        pipeline_close(p);
        return r;
    }
    *out = p;
    return 0;
}

int pipeline_start_background(struct pipeline *p, struct err *e)
{
    /* Each thread on its own: a second call after a failed watcher start retries the watcher. */
    int r = 0;
    if (p->load)
        goto watcher;
    struct loadloop_opts lo = {
        .mgr = p->mgr,
        .max = {p->queue_max[LOADLOOP_FETCH], p->queue_max[LOADLOOP_UNPACK]},
        .pinned = {p->queue_pinned[LOADLOOP_FETCH], p->queue_pinned[LOADLOOP_UNPACK]},
        .src = {.host_trouble = host_trouble,
                .pool_trouble = pool_trouble,
                .pool_data = pool_data,
                .ud = p,
                .store_dir = p->cfg.blob_dir}};
    r = loadloop_start(&lo, &p->load);
    if (r < 0)
        return err_set(e, r, "cannot start the queue sizing thread");
watcher:
    if (p->backend == &backend_dm_thin && !p->pool_watch &&
        (r = pool_watch_start(p->db, p->cfg.pool_name, 0, &p->pool_watch)) < 0)
        return err_set(e, r, "cannot start the pool autoextend watcher");
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
    pool_watch_stop(p->pool_watch);
    loadloop_stop(p->load);
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

void pipeline_queue_state(struct pipeline *p, enum loadloop_queue q, struct loadloop_state *out)
{
    if (p->load)
        loadloop_get(p->load, q, out);
    else
        memset(out, 0, sizeof(*out)); /* not started: a command that queues no work */
}
