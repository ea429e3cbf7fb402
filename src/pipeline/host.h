/*
 * host.h: opening the host, the one way every entry point that works on the state directory
 * starts: the commands that run the pipeline (run_cmd.c), `thinimg fetch` and the daemon.
 *
 * host_open() does, in this order, and undoes in reverse on failure and in host_close():
 *   1. the state directory's layout (config_ensure_dirs: once)
 *   2. the process lock STATE/thinimg.lock, refused at once or waited for (wait_lock)
 *   3. the database, migrated (the engine's tables, then the store's): host_db_open()
 *   4. opened(): the caller's step that must fail fast, before the slow ones (the daemon
 *      binds its sockets here, so a socket in use is reported before any pool work)
 *   5. the thin pool: set up (create, reassemble or adopt; refused when unusable) with
 *      HOST_POOL_SETUP; left alone with HOST_POOL_LEAVE
 *   6. the machines: the whole pipeline, or (fetch_only) the fetch machine alone on its queue
 *   7. before_resume(): the caller hooks itself up (signal handlers, an observer)
 *   8. unfinished runs resume, unless no_resume (with fetch_only: only fetches)
 *
 * Every path comes from struct config (util/config.h), computed once.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "dm/pool.h"
#include "fsm/fsm.h"
#include "guard/lock.h"
#include "pipeline/fetch.h"
#include "pipeline/pipeline.h"
#include "store/db.h"
#include "util/config.h"
#include "util/err.h"

enum host_pool {
    HOST_POOL_SETUP, /* create, reassemble or adopt the pool; fail when it is not usable */
    HOST_POOL_LEAVE, /* do not touch it (short commands, fetch, the daemon that retries it) */
};

struct host;

struct host_opts {
    const struct config *cfg;
    const char *holder; /* written into the lock file: the command, or "daemon" */
    bool wait_lock;     /* wait for the process lock instead of refusing at once */
    enum host_pool pool;
    bool fetch_only; /* `thinimg fetch`: the fetch machine alone; no pool, no guard */
    bool no_resume;  /* short commands (deactivate, remove) leave other runs alone */
    bool check_integrity; /* read every page of the database before anything (the daemon) */
    /* The pipeline's options; cfg is taken from above. With fetch_only, source and
     * queues.fetch_limit apply. */
    struct pipeline_opts pipeline;
    int (*opened)(struct host *h, void *ud, struct err *e); /* step 4; may be NULL */
    void (*before_resume)(struct host *h, void *ud);        /* step 7; may be NULL */
    void *ud;
};

struct host {
    struct proc_lock lock;
    struct db *db;
    struct pipeline *p;              /* NULL with fetch_only */
    struct fsm_manager *mgr;         /* the pipeline's manager, or fetch_only's own */
    struct fsm_machine *fetch;       /* fetch_only: the fetch machine */
    struct fetch_context *fetch_ctx; /* fetch_only: its configuration */
    int resumed;                     /* how many runs host_open() resumed */
};

/* How long host_open()'s failure path gives transitions it resumed to stop. */
#define HOST_OPEN_FAILED_SHUTDOWN_MS 10000

/* Open the host (see above). On failure everything taken is released and h is empty. */
int host_open(const struct host_opts *o, struct host *h, struct err *e);
/* Shut the machines down (running transitions get shutdown_ms to stop; interrupted runs stay
 * resumable), close the database, release the lock. Safe on an empty or failed host. */
void host_close(struct host *h, uint32_t shutdown_ms);

/* Open the database at cfg->db_path and run every migration (the directory must exist). */
int host_db_open(const struct config *cfg, struct db **out, struct err *e);
/* The pool named in cfg: set up (create, reassemble or adopt) when setup, else only read. */
int host_pool(struct db *db, const struct config *cfg, bool setup, struct pool_info *pi,
              struct err *e);
