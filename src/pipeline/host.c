/*
 * host.c: opening and closing the host, in one order for every entry point. See host.h.
 */
#include "pipeline/host.h"

#include <errno.h>
#include <string.h>

#include "pipeline/backend.h"
#include "store/schema.h"
#include "util/cleanup.h"
#include "util/defaults.h"
#include "util/log.h"

int host_db_open(const struct config *cfg, struct db **out, struct err *e)
{
    struct db *db = NULL;
    int r = db_open(cfg->db_path, NULL, &db, e);
    if (r < 0)
        return r;
    if ((r = fsm_db_migrate(db, e)) < 0 || (r = store_migrate(db, e)) < 0) {
        db_close(db);
        return r;
    }
    *out = db;
    return 0;
}

int host_pool(struct db *db, const struct config *cfg, bool setup, struct pool_info *pi,
              struct err *e)
{
    if (!setup)
        return pool_get(db, cfg->pool_name, pi, e);
    struct pool_config pc = {.name = cfg->pool_name, .pool_dir = cfg->pool_dir};
    return pool_setup(db, &pc, pi, e);
}

/* The fetch machine alone, on a fetch queue of its own, for `thinimg fetch`. */
static int open_fetch_only(const struct host_opts *o, struct host *h, struct err *e)
{
    const struct pipeline_opts *po = &o->pipeline;
    struct fsm_queue_cfg queues[] = {
        {FETCH_QUEUE,
         po->queues.fetch_limit > 0 ? po->queues.fetch_limit : DEFAULT_FETCH_QUEUE_LIMIT}};
    struct fsm_config fc = {.queues = queues,
                            .n_queues = ARRAY_SIZE(queues),
                            .history_retention_days = DEFAULT_HISTORY_RETENTION_DAYS,
                            .history_retention_runs = DEFAULT_HISTORY_RETENTION_RUNS};
    struct fetch_config cfg = {.blob_dir = o->cfg->blob_dir,
                               .tmp_dir = o->cfg->tmp_dir,
                               .policy = po->policy ? *po->policy : archive_policy_default()};
    if (po->source)
        cfg.source = *po->source;
    int r = fsm_manager_open(h->db, &fc, &h->mgr, e);
    if (r < 0)
        return r;
    r = fetch_register(h->mgr, &cfg, &h->fetch, &h->fetch_ctx);
    return r < 0 ? err_set(e, r, "cannot register the fetch machine") : 0;
}

static int open_machines(const struct host_opts *o, struct host *h, struct err *e)
{
    if (o->fetch_only)
        return open_fetch_only(o, h, e);
    struct pipeline_opts po = o->pipeline;
    po.cfg = o->cfg;
    int r = pipeline_open(h->db, &po, &h->p, e);
    if (r == 0)
        h->mgr = pipeline_manager(h->p);
    return r;
}

static int open_steps(const struct host_opts *o, struct host *h, struct err *e)
{
    int r = config_ensure_dirs(o->cfg, e);
    if (r < 0)
        return r;
    r = proc_lock_acquire(o->cfg->lock_path, o->holder, o->wait_lock ? -1 : 0, &h->lock, NULL, e);
    if (r < 0)
        return r;
    if ((r = host_db_open(o->cfg, &h->db, e)) < 0)
        return r;
    if (o->check_integrity && (r = db_check_integrity(h->db, e)) < 0)
        return r;
    /* The state directory's backend is chosen (and recorded) before anything is made for it:
     * an overlay state directory has no pool. */
    const struct backend_ops *backend = NULL;
    if (!o->fetch_only && (r = backend_choose(h->db, o->cfg->backend, &backend, e)) < 0)
        return r;
    if (o->opened && (r = o->opened(h, o->ud, e)) < 0)
        return r;
    if (o->pool == HOST_POOL_SETUP && backend == &backend_dm_thin) {
        struct pool_info pi;
        if ((r = host_pool(h->db, o->cfg, true, &pi, e)) < 0)
            return r;
        if (pi.action == POOL_ACTION_CREATED || pi.action == POOL_ACTION_REASSEMBLED ||
            pi.action == POOL_ACTION_ADOPTED)
            log_info("thin pool ready", "pool=%s action=%s", o->cfg->pool_name,
                     pool_action_name(pi.action));
    }
    if ((r = open_machines(o, h, e)) < 0)
        return r;
    if (o->before_resume)
        o->before_resume(h, o->ud);
    if (o->no_resume)
        return 0;
    r = fsm_manager_resume(h->mgr);
    if (r < 0)
        return err_set(e, r, "cannot resume unfinished runs");
    h->resumed = r;
    /* Resumed runs may be fetches and unpacks: their queues are sized, their pool watched. */
    if (r > 0 && h->p && (r = pipeline_start_background(h->p, e)) < 0)
        return r;
    return 0;
}

int host_open(const struct host_opts *o, struct host *h, struct err *e)
{
    memset(h, 0, sizeof(*h));
    h->lock.fd = -1;
    int r = open_steps(o, h, e);
    if (r < 0)
        host_close(h, HOST_OPEN_FAILED_SHUTDOWN_MS);
    return r < 0 ? r : 0;
}

void host_close(struct host *h, uint32_t shutdown_ms)
{
    if (h->mgr) {
        fsm_manager_shutdown(h->mgr, shutdown_ms);
        /* Nobody is told about what closing does (the caller's observer may be gone). */
        fsm_manager_set_observer(h->mgr, NULL, NULL);
    }
    if (h->p)
        pipeline_close(h->p);
    else if (h->mgr)
        fsm_manager_close(h->mgr);
    fetch_context_free(h->fetch_ctx);
    db_close(h->db);
    proc_lock_release(&h->lock);
    memset(h, 0, sizeof(*h));
    h->lock.fd = -1;
}
