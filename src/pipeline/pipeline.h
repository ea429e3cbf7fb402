/*
 * pipeline.h: the product: images from a source to active thin snapshots, as durable runs.
 *
 * Four machines run on one FSM manager and one database (see DESIGN.md "Pipeline"):
 *
 *   process-image/process   one per image ref (unqueued: one active run per ref). The parent:
 *                           check-active -> resolve -> fetch -> unpack -> activate.
 *   fetch/fetch-blob        one per blob location, queue "fetch" (fetch.h).
 *   unpack/unpack-layer     one per chain id, queue "unpack"; waits for its parent chain's run
 *                           (run-after): check-unpacked -> create-device -> apply-layer ->
 *                           verify -> commit.
 *   activate/activate       one per activation name (unqueued):
 *                           check-snapshot -> create-snapshot -> register.
 *
 * Every machine starts with an idempotency check that verifies recorded state against reality
 * (blob file and digest, device in the pool's metadata, dm device active) and hands off when
 * the work is done, repairing the record when reality differs (a device removed behind
 * thinimg's back is recreated).
 *
 * Safety: devicemapper-heavy sections run under the operation guard (health checks first);
 * nothing cleans up devicemapper state on an error path: a failed device is recorded `failed`
 * and the run aborts; `thinimg gc` removes it later.
 *
 * Ownership: struct pipeline owns the manager, the guard and copies of the options; the
 * database stays the caller's and must outlive it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "archive/limits.h"
#include "fsm/fsm.h"
#include "guard/guard.h"
#include "source/source.h"
#include "store/db.h"
#include "util/config.h"
#include "util/err.h"

/* Virtual size of a base layer's thin device (snapshots inherit it). Thin devices cost only
 * what is written, so this is the largest flattened image thinimg can hold, not pool space. */
#define PIPELINE_DEFAULT_DEVICE_BYTES (8ull << 30)

/* A wait loop wakes this often to notice cancellation and shutdown. */
#define PIPELINE_WAIT_SLICE_MS 200

struct pipeline_opts {
    const struct config *cfg;             /* paths, pool name, default source (copied) */
    const struct source_options *source;  /* endpoint, region, credentials (may be NULL) */
    const struct archive_policy *policy;  /* NULL: archive_policy_default() */
    uint64_t device_bytes;                /* 0: PIPELINE_DEFAULT_DEVICE_BYTES */
    int fetch_limit, unpack_limit;        /* 0: util/defaults.h */
    bool skip_health;                     /* tests only: no health checks in the guard */
};

struct pipeline;

/* The pool's health check (usable: not ro, needs_check, failed, full): a health_pool_fn
 * whose ud is the pool name. A pool that is not set up is skipped, not failed. */
void pipeline_pool_health(struct health_check *c, void *ud);

int pipeline_open(struct db *db, const struct pipeline_opts *o, struct pipeline **out,
                  struct err *e);
/* Resume every unfinished run of every machine (call once, after open). */
int pipeline_resume(struct pipeline *p);
void pipeline_shutdown(struct pipeline *p, uint32_t timeout_ms);
void pipeline_close(struct pipeline *p);
struct fsm_manager *pipeline_manager(struct pipeline *p);
struct guard *pipeline_guard(struct pipeline *p);

/* Start (or join the active run of) process-image for ref. activation: the activation's name,
 * NULL for the image's default name. device_bytes: virtual size of new base layer devices, 0 for
 * the pipeline's default; it is recorded with the run, so a resumed run uses the same. */
int pipeline_start_process(struct pipeline *p, const char *ref, const char *activation,
                           uint64_t device_bytes, struct fsm_id *run, struct err *e);
/* Start (or join) an activation of an already processed image. */
int pipeline_start_activate(struct pipeline *p, const char *image, const char *name,
                            struct fsm_id *run, struct err *e);
