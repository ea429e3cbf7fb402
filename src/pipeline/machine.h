/*
 * machine.h: what the pipeline's machines share (the pipeline folder only).
 *
 * The struct pipeline is the `ud` of every machine; its fields are set once by
 * pipeline_open() and read-only afterwards, so machines on different threads may read them
 * without locking. The database, the guard and the manager are thread-safe on their own.
 *
 * The dependencies run one way: pipeline.c opens the pipeline and registers the machines
 * (fetch_glue.h, unpack.h, activate.h, process.h); the process-image machine starts the
 * others through their own start functions; every machine uses the helpers below, which know
 * no machine. Nothing here or in a machine calls back into pipeline.c.
 */
#pragma once

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "archive/limits.h"
#include "fsm/fsm.h"
#include "guard/guard.h"
#include "pipeline/imagedb.h"
#include "pipeline/loadloop.h"
#include "source/source.h"
#include "store/db.h"
#include "util/config.h"
#include "util/err.h"

/* jansson's own cleanup (json_auto_t), for the machines' requests and responses. */
#ifndef _cleanup_json_
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#endif

/* A wait loop wakes this often to notice cancellation and shutdown. */
#define PIPELINE_WAIT_SLICE_MS 200

struct backend_ops;

struct pipeline {
    struct db *db;
    struct fsm_manager *mgr;
    struct guard *guard;
    struct config cfg;
    struct source_options source;
    struct archive_policy policy;
    uint64_t device_bytes;
    struct fsm_machine *m_fetch, *m_unpack, *m_activate, *m_process;
    struct fetch_context *fetch_ctx;   /* owned; freed after the manager is closed */
    pthread_mutex_t lifecycle_lock;    /* one deactivate/remove at a time (lifecycle.c) */
    int queue_max[LOADLOOP_N];         /* per queue, for the queue sizing */
    int queue_pinned[LOADLOOP_N];
    struct loadloop *load;             /* sizes the queues to the host's load; NULL until
                                        * pipeline_start_background() */
    struct pool_watch *pool_watch;     /* autoextend of the pool (dm/pool_life.h); likewise */
    const struct backend_ops *backend; /* where layers and activations live (backend.h) */
};

/* The retry policy of a short local step (database, device-mapper calls under the guard): a
 * few attempts within seconds, then the run aborts. */
extern const struct fsm_retry_policy machine_policy_quick;

/* Register one of the pipeline's machines on its manager (before resume): its transitions,
 * its finalizer (called when a run ends), p as every callback's ud, end state "done". On
 * failure e says "cannot register the <name> machine". */
int machine_register(struct pipeline *p, const char *name, const char *type, const char *action,
                     const struct fsm_transition_def *t, size_t n, fsm_finalizer_fn fin,
                     struct fsm_machine **out, struct err *e);

/* Enter the operation guard for a devicemapper section of a transition. false with *refused
 * set when the guard said no: RETRY when the run was cancelled or shut down while waiting,
 * ABORT with the health report otherwise (retrying in a few seconds would not heal the host). */
bool pipeline_guard_enter(struct pipeline *p, struct fsm_run *run, const char *what,
                          struct fsm_result *refused);

/* An image by name or ref, for an operation on it: 0 with *out (image_rec_free() it), or
 * -EINVAL (an ambiguous name) / -ENOENT / a database error, with e saying so and, for a missing
 * image, what to do (`what_to_do`, e.g. "see list-images"). */
int pipeline_image_lookup(struct pipeline *p, const char *image, const char *what_to_do,
                          struct image_rec *out, struct err *e);

/* Wait for a child run while honouring the waiter's cancellation. Returns 0 with the outcome,
 * the kind of its error (may be NULL) and the error, or -ECANCELED when run was cancelled/shut
 * down first. A parent that fails because its child did passes the child's kind on. */
int pipeline_wait_child(struct fsm_run *run, const struct fsm_id *child, enum fsm_outcome *outcome,
                        enum err_kind *kind, char **error);

/* The newest run of type with resource_id (optionally a child of parent, optionally only
 * unfinished ones). 0 and *out set, or -ENOENT. */
int pipeline_find_run(struct pipeline *p, const char *type, const char *resource_id,
                      const struct fsm_id *parent, bool unfinished, struct fsm_id *out);
