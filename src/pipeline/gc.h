/*
 * gc.h: reconcile (what the database says against what the kernel and the pool have) and the
 * garbage collector that removes orphans, safely and only when asked.
 *
 * Fail dumb (safety rule 1, docs/architecture.md) means error paths leave devices, mounts and files
 * behind, recorded. This module finds every one of them precisely and, with force, removes
 * them in the safe order: unmount -> remove the dm device -> delete the thin device from the
 * pool -> record it. Each kernel operation runs in a child process with a timeout, so a device
 * stuck in the kernel stops gc with a clear message instead of hanging it; what is mounted or
 * open (a VM uses it) is skipped, never forced.
 *
 * Orphans (enum gc_kind):
 *   creating     a device row left in `creating` (crash between allocation and confirmation)
 *   failed       a device recorded failed (an operation on it failed)
 *   deleting     a deletion that was interrupted
 *   unreferenced a ready device no layer or activation uses (an interrupted create-device)
 *   unknown-id   a thin id in the pool's metadata the database does not know (only deleted in a
 *                pool thinimg created: an adopted pool may hold someone else's devices)
 *   unknown-dm   an active dm device named "<pool>-..." the database does not know
 *   mount        a stale mount of one of our devices under <state>/mnt
 *   tmpfile      a file in <state>/tmp no unfinished download owns
 *   download     a `downloads` row whose temp file is gone
 *   lock         a resource lock whose owner process is dead
 *   blob         a blob no image uses (removed only with include_blobs)
 *   active-layer a committed layer's device left active (committed layers stay inactive: an
 *                active origin must be suspended to be snapshotted); gc deactivates it (the
 *                thin device stays in the pool)
 *   overlay-dir  (overlay backend, docs/overlay.md) a layer directory no layer record names,
 *                or an activation directory no activation record names; its mount is taken
 *                down first
 * Any mount under <state>/mnt is stale (thinimg mounts devices only inside private mount
 * namespaces of its own processes): `mount`, unmounted first. On the overlay backend, so is
 * an activation's overlay mount (its upper dir thinimg's) while its record says inactive or
 * failed: `mount` too (the upper dir and its writes stay).
 * Reported but never removed by gc: `missing` (a device the database uses that the pool no
 * longer has: the next process-image recreates it), `dm-gone` (an activation recorded active
 * whose dm device is gone, after a reboot or a `dmsetup remove`: the next process-image
 * reactivates it) and `foreign` ids (collisions).
 *
 * Nothing is ever deleted implicitly: gc_scan() only reports; gc_apply() acts when the caller
 * says so: `thinimg gc --force` under the process lock, the daemon (POST /v1/gc, and its idle
 * collection of orphans past a grace period, pipeline.h) under its operation guard.
 *
 * Next to working runs (the daemon's gc, or --ignore-lock), gc_opts.live_since_ms spares what
 * those runs may be using: device rows recorded and temp files written since the oldest
 * unfinished run was created (a create-device between its dm message and its checkpoint has
 * a device no layer names yet), and every unreferenced blob (a run may be about to name it).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <stdint.h>

#include "store/db.h"
#include "util/config.h"
#include "util/err.h"

/* A kernel operation (umount, dm remove, pool delete) that takes longer than this is stuck:
 * gc reports it and stops touching devicemapper. */
#define GC_OP_TIMEOUT_MS 30000
/* History kept longer than a century is "keep forever" already: a larger number is a typo. */
#define GC_HISTORY_DAYS_MAX 36500

enum gc_kind {
    GC_CREATING = 0,
    GC_FAILED,
    GC_DELETING,
    GC_UNREFERENCED,
    GC_UNKNOWN_ID,
    GC_UNKNOWN_DM,
    GC_MOUNT,
    GC_TMPFILE,
    GC_DOWNLOAD,
    GC_LOCK,
    GC_BLOB,
    GC_MISSING, /* reported only */
    GC_ACTIVE_LAYER,
    GC_DM_GONE, /* reported only */
    GC_OVERLAY_DIR,
    GC_KIND_COUNT
};
const char *gc_kind_name(enum gc_kind k);

enum gc_result { GC_PENDING = 0, GC_DONE, GC_SKIPPED, GC_ERROR };
const char *gc_result_name(enum gc_result r);

struct gc_item {
    enum gc_kind kind;
    char what[512];   /* device name, path, lock or blob */
    uint32_t dev_id;  /* 0 when not a thin device */
    bool active;      /* a dm device exists */
    bool in_pool;     /* the pool's metadata has the id */
    bool removable;   /* gc_apply would act on it (given the options) */
    char reason[256]; /* why it is an orphan */
    char action[128]; /* what gc does / would do */
    enum gc_result result;
    char detail[512]; /* the outcome of gc_apply, or why it was skipped */
    uint64_t bytes;   /* space it holds when known (files; mapped bytes of thin devices) */
    int64_t since_ms; /* when it became what it is, when known (Unix ms: a temp file's
                       * mtime, a device row's last change); 0 = unknown */
};

struct gc_report {
    struct gc_item *items;
    size_t n;
    char backend[16];  /* the state directory's ("dm-thin", "overlay": no pool, no note) */
    bool pool_active;  /* false: the pool could not be inspected (devices not examined) */
    bool pool_adopted; /* made by someone else: unknown ids are not deleted */
    char pool_note[256];
    int pruned_runs; /* finished runs whose history was pruned (apply) */
};
void gc_report_free(struct gc_report *r);

struct gc_opts {
    bool include_blobs;       /* also remove blobs no image uses */
    bool include_foreign_ids; /* delete unknown ids even in an adopted pool */
    uint32_t history_days;    /* prune finished runs older than this (0 = keep) */
    int op_timeout_ms;        /* 0: GC_OP_TIMEOUT_MS */
    const char *skip_devices; /* non-NULL: do not examine the pool and devices, say why */
    int64_t live_since_ms;    /* > 0: runs work (gc_live_runs); spare what they may use */
    const char *live_note;    /* which runs, for the items spared ("2 runs work, ...") */
    const char *metrics_mode; /* gc_apply's runs counter label: NULL "force", "auto" */
};

/* The unfinished runs in the database: their number (>= 0, or a negative errno), the creation
 * time of the oldest in *since_ms (0 when none) and a note naming it, for gc_opts. */
int gc_live_runs(struct db *db, int64_t *since_ms, char *note, size_t n);

/* Reconcile: find every orphan (read-only apart from the pool's metadata snapshot). */
int gc_scan(struct db *db, const struct config *cfg, const struct gc_opts *o, struct gc_report *out,
            struct err *e);
/* Remove what the report marks removable, in the safe order; fills each item's result.
 * Returns 0 when every removable item was handled (done or skipped), a negative errno when an
 * operation failed or timed out (the report says which; gc stops at a timeout). */
int gc_apply(struct db *db, const struct config *cfg, const struct gc_opts *o, struct gc_report *r,
             struct err *e);

/* The report as `thinimg gc --json` prints it (also POST /v1/gc's reply): {mode, pool_examined,
 * summary, orphans: [{kind, what, reason, action, removable, active, in_pool, bytes,
 * device_id?, result?, detail?}], backend, note?, pruned_runs?}. A new reference. */
json_t *gc_report_json(const struct gc_report *r, bool applied);
/* Back from that JSON (what the CLI prints from a daemon's reply). *applied: mode "force". */
int gc_report_from_json(const json_t *o, struct gc_report *out, bool *applied);

/* Counts by kind, for logs: "2 failed, 1 unknown-id". */
void gc_report_summary(const struct gc_report *r, char *out, size_t n);
