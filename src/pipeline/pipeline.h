/*
 * pipeline.h: the product: images from a source to active thin snapshots, as durable runs.
 *
 * Four machines run on one FSM manager and one database (docs/architecture.md, docs/pipeline.md):
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

#include "pipeline/loadloop.h"
#include "archive/limits.h"
#include "fsm/fsm.h"
#include "guard/guard.h"
#include "pipeline/activate.h"
#include "pipeline/gc.h"
#include "pipeline/outcome.h"
#include "pipeline/process.h"
#include "source/source.h"
#include "store/db.h"
#include "util/config.h"
#include "util/err.h"

/* The fetch and unpack queues: a limit > 0 pins that queue at it (the operator's choice); 0
 * leaves it to the load loop (loadloop.h), which starts at util/defaults.h and moves between 1
 * and the maximum (0: from the core count). */
struct pipeline_queues {
    int fetch_limit, unpack_limit;
    int fetch_max, unpack_max;
};

struct pipeline_opts {
    const struct config *cfg;            /* paths, pool name, default source (copied) */
    const struct source_options *source; /* endpoint, region, credentials (may be NULL) */
    const struct archive_policy *policy; /* NULL: archive_policy_default() */
    uint64_t device_bytes;               /* 0: PIPELINE_DEFAULT_DEVICE_BYTES */
    struct pipeline_queues queues;
    bool skip_health;                    /* tests only: no health checks in the guard */
    /* Commands that queue no work (activate): the queue sizing and pool watcher threads are
     * not started by pipeline_open(); pipeline_start_background() starts them (host_open()
     * does when it resumed unfinished runs). Spares such a command three threads, their
     * first samples and their stop (about 5% of an activate's instructions). */
    bool defer_background;
};

struct pipeline;

/* The pool's health check (usable: not ro, needs_check, failed, out of data space, over its
 * usage limits): a health_pool_fn whose ud is the pool name; the guard, `thinimg health` and
 * the daemon run it. A pool that is not set up (or no device-mapper driver) is skipped, not
 * failed: nothing can be refused on its account until it exists. */
void pipeline_pool_health(struct health_check *c, void *ud);

int pipeline_open(struct db *db, const struct pipeline_opts *o, struct pipeline **out,
                  struct err *e);
/* Start the queue sizing (loadloop.h) and the pool watcher (dm/pool_life.h) threads, once;
 * pipeline_open() does unless defer_background. 0, or an error in e. */
int pipeline_start_background(struct pipeline *p, struct err *e);
/* Resume every unfinished run of every machine (call once, after open). */
int pipeline_resume(struct pipeline *p);
void pipeline_shutdown(struct pipeline *p, uint32_t timeout_ms);
void pipeline_close(struct pipeline *p);
struct fsm_manager *pipeline_manager(struct pipeline *p);
struct guard *pipeline_guard(struct pipeline *p);
/* The fetch or unpack queue's limit, maximum, last change and signals (loadloop.h). */
void pipeline_queue_state(struct pipeline *p, enum loadloop_queue q, struct loadloop_state *out);

/* ---- life cycle after process-image (lifecycle.c) ----------------------------------------
 *
 * Short devicemapper removals an operator asks for, shared by the CLI and the daemon. Each one
 * runs under the operation guard (health checks first) and the pipeline's lifecycle lock (one
 * at a time), refuses while a device is open (-EBUSY: a VM uses it) or while an unfinished run
 * works on the same activation or image (-EBUSY, e names the run), and records the result.
 * cancel_fd: readable = stop waiting for the guard (-ECANCELED); -1 = none. Errors fill e with
 * what to do: -ENOENT (no such activation/image), -EINVAL (ambiguous image name), -EBUSY,
 * -EHOSTDOWN (unhealthy) and devicemapper errors. Nothing on an error path removes more than
 * was asked (fail dumb: a half-removed image leaves its remaining layers for gc). */

/* Take the activation's dm device down; its thin device and data stay. *was_active: it had
 * been active (false: it was inactive already, nothing done). */
int pipeline_deactivate(struct pipeline *p, const char *name, int cancel_fd, bool *was_active,
                        struct err *e);
/* Delete an activation: dm device, thin device (with the VM's writes), record. */
int pipeline_remove_activation(struct pipeline *p, const char *name, int cancel_fd, struct err *e);
struct pipeline_removed_image {
    char name[256];     /* the image's name */
    int layers_deleted; /* layer devices deleted */
    int layers_kept;    /* shared with other images (or kept after an error) */
};
/* Delete an image (name or ref) and the layer devices no other image uses, top down; refused
 * (-EBUSY) while it has activations. */
int pipeline_remove_image(struct pipeline *p, const char *image, int cancel_fd,
                          struct pipeline_removed_image *out, struct err *e);

/* ---- automatic gc (autogc.c) ----------------------------------------------------------------
 *
 * When the pool's data or metadata usage is at or above high_pct, remove images without
 * activations, least recently used first (pipeline_remove_image: shared layers stay), until
 * usage is below low_pct or no candidate is left. The daemon calls it only while no run is
 * active. Images busy with a run are skipped. high_pct 0: off. low_pct 0: high_pct - 10. */
struct pipeline_autogc_opts {
    int high_pct, low_pct;
};
struct pipeline_autogc_result {
    double pct_before, pct_after; /* the larger of data and metadata usage */
    int images_removed, layers_deleted;
};
int pipeline_auto_gc(struct pipeline *p, const struct pipeline_autogc_opts *o,
                     struct pipeline_autogc_result *res, struct err *e);

/* `thinimg gc` done by the process that runs the pipeline (the daemon's POST /v1/gc), between
 * devicemapper sections: under the lifecycle lock and the operation guard (health checks
 * first), with what unfinished runs may be using spared (gc.h: o->live_since_ms is set here).
 * apply false: a dry run, which an unhealthy host does not refuse (the devices are then not
 * examined, and the report says why). *have_report: out holds a report (to free), also when
 * gc_apply failed (its error in e and the return value); false with a negative errno (e):
 * refused (-EHOSTDOWN), cancelled (-ECANCELED) or the scan failed. */
int pipeline_gc(struct pipeline *p, struct gc_opts *o, bool apply, int cancel_fd,
                struct gc_report *out, bool *have_report, struct err *e);

/* Orphans collected while idle (the daemon, every pass of its idle loop): when no run is
 * unfinished and the operation guard lets it in (the host healthy), one scan and the removal
 * of one orphan (gc.h kinds, blobs included) that has been one for grace_ms at least: since its
 * timestamp when it has one (gc_item.since_ms), else since this process first saw it. Mounts
 * first, then devices, then files, then locks (gc's order). Each removal is logged and counted
 * (METRIC_GC_ORPHANS_REMOVED). The state is the caller's: zero it, set grace_ms, free it with
 * pipeline_orphan_gc_free(). */
struct pipeline_orphan_seen;
struct pipeline_orphan_gc {
    int64_t grace_ms;
    struct pipeline_orphan_seen *seen; /* first sightings, of the last scan's items */
    size_t n_seen;
    size_t waiting;      /* removable orphans after the last scan (within their grace or not) */
    int64_t next_due_ms; /* Unix ms when the next waiting orphan's grace ends (0: none) */
};
/* 1: one orphan removed; 0: nothing to remove now (runs work, or every orphan is within its
 * grace); a negative errno with e: refused by the guard (-EHOSTDOWN: e says why) or failed. */
int pipeline_collect_orphan(struct pipeline *p, struct pipeline_orphan_gc *st, struct err *e);
void pipeline_orphan_gc_free(struct pipeline_orphan_gc *st);
