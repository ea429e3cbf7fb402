/*
 * backend.h: where the pipeline keeps layers and activations: the storage backend.
 *
 * The unpack and activate machines (unpack.c, activate.c) and the life-cycle removals
 * (lifecycle.c) own the runs, the locks, the guard's health checks, chain ids and the database
 * records; what a layer or an activation *is* on disk belongs to the backend behind them:
 *
 *   dm-thin (backend_dm.c)     a layer is a committed, inactive thin device of the pool, its
 *                              chain's flattened ext4 file system (a snapshot of its parent's);
 *                              an activation is a writable thin snapshot of the top layer,
 *                              active as /dev/mapper/<pool>-act-<name>.
 *
 * Each operation is one transition's storage work (the transition's name in brackets), with the
 * FSM's answers: ok, retry (transient), abort (with an error kind), handoff (nothing to do).
 * The machines call them in their order; a backend does only what its step names and records
 * what it made on the run (fsm_run_on_commit) so that a run resumed after kill -9 finds it.
 * Fail dumb holds for every backend: an error path removes nothing; gc does it later.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "fsm/fsm.h"
#include "pipeline/imagedb.h"
#include "store/db.h"
#include "util/config.h"
#include "util/err.h"

struct archive_stats;
struct buf;
struct mount_spec;
struct pipeline;

/* A layer's unpack request (the unpack machine's request). */
struct backend_layer_req {
    char chain_id[DIGEST_STR_LEN + 1];
    char parent_chain[DIGEST_STR_LEN + 1]; /* "" for a base layer */
    char digest[DIGEST_STR_LEN + 1];
    char blob_path[4096]; /* the verified blob to apply */
    int depth;
    uint64_t device_bytes; /* virtual size of a new base device (0: the pipeline default) */
};

/* What an unpack run holds of its layer between transitions (the unpack machine's response). */
struct backend_layer {
    uint32_t dev_id;       /* dm-thin: the layer's thin device (0: none yet) */
    char device_path[256]; /* dm-thin: its /dev/mapper path while active */
    int64_t entries, bytes;
};

/* An activation request (the activate machine's request). */
struct backend_act_req {
    char name[80];
    int64_t image_id;
    char chain_id[DIGEST_STR_LEN + 1]; /* the image's top layer */
    char mount_at[1024];               /* overlay: where to mount ("": the state directory's) */
};

/* What an activate run holds between transitions (the activate machine's response). */
struct backend_act {
    uint32_t dev_id;       /* dm-thin: the activation's thin device */
    char device_path[256]; /* what the user gets: the block device */
    bool reactivate;       /* the storage exists (after a reboot or deactivate): bring it up */
};

/* Disk usage of a directory tree, du-like: allocated bytes, each inode once. */
struct backend_du {
    uint64_t bytes, entries;
};

struct backend_ops {
    const char *name; /* "dm-thin" */

    /* ---- layers (the unpack machine) ---- */

    /* Whether a layer record names its storage (dm-thin: a device id): a ready layer without
     * it is not usable. */
    bool (*layer_recorded)(const struct layer_rec *l);
    /* [check-unpacked] of a layer recorded ready: 1 its storage is there (the run hands off);
     * 0 it is gone (the repair of the records is queued on run: the layer is unpacked again);
     * a negative errno with e when it cannot tell (the run retries). */
    int (*layer_check)(struct pipeline *p, struct fsm_run *run, const char *chain_id,
                       const struct layer_rec *l, struct err *e);
    /* [create-device] fresh storage for the layer, from its parent's when it has one; s gets
     * what was made. The caller records it (layer unpacking) when the result is ok. */
    struct fsm_result (*layer_prepare)(struct fsm_run *run, struct pipeline *p,
                                       const struct backend_layer_req *q, struct backend_layer *s);
    /* The record of the storage s holds (layer_update's device fields). */
    void (*layer_device)(struct pipeline *p, const struct backend_layer *s, char *pool,
                         size_t pool_len, uint32_t *dev_id);
    /* [apply-layer] apply q->blob_path (verified by the caller) onto the layer's storage with
     * the archive module; s->entries and s->bytes get the counts. */
    struct fsm_result (*layer_apply)(struct fsm_run *run, struct pipeline *p,
                                     const struct backend_layer_req *q, struct backend_layer *s);
    /* [verify] the written layer is trustworthy. */
    struct fsm_result (*layer_verify)(struct fsm_run *run, struct pipeline *p,
                                      const struct backend_layer_req *q, struct backend_layer *s);
    /* [commit] make the layer read-only, ready to share; the caller records it ready. */
    struct fsm_result (*layer_commit)(struct fsm_run *run, struct pipeline *p,
                                      const struct backend_layer_req *q, struct backend_layer *s);
    /* The run failed: record the layer's storage failed (bookkeeping, never a removal). */
    void (*layer_failed)(struct fsm_run *run, struct pipeline *p, const struct backend_layer *s,
                         const char *error);

    /* ---- activations (the activate machine) ---- */

    /* Whether an activation record names its storage (dm-thin: a device id). */
    bool (*act_recorded)(const struct activation_rec *a);
    /* Whether the activation is up now (dm-thin: its dm device exists): a query, no repair. */
    bool (*act_up)(struct pipeline *p, const struct activation_rec *a);
    /* [check-snapshot] of activation a, recorded active or inactive with its storage: 1 it is
     * up (the run hands off); 0 its storage is there but not up (it is brought up again,
     * s->reactivate); -ENOENT with e saying why: its storage is gone (the backend's own
     * records are repaired on run; the caller repairs the activation's and makes new storage);
     * another negative errno with e when it cannot tell (the run retries). */
    int (*act_check)(struct pipeline *p, struct fsm_run *run, const struct activation_rec *a,
                     struct err *e);
    /* [create-snapshot] new storage for the activation from the top layer (or, with
     * s->reactivate, the existing one) brought up; s->device_path is what the user gets. */
    struct fsm_result (*act_create)(struct fsm_run *run, struct pipeline *p,
                                    const struct backend_act_req *q, struct backend_act *s);
    /* The record of the activation's storage (activation_update's device fields). */
    void (*act_device)(struct pipeline *p, const struct backend_act *s, char *pool, size_t pool_len,
                       uint32_t *dev_id);
    /* The run failed: record storage it made failed (bookkeeping). */
    void (*act_failed)(struct fsm_run *run, struct pipeline *p, const struct backend_act *s,
                       const char *error);

    /* ---- life cycle (lifecycle.c), under the caller's operation guard ---- */

    /* Take activation a's storage down: deactivate; with remove, delete it with the writes
     * made to it. -EBUSY when it is in use (e says by what). */
    int (*act_down)(struct pipeline *p, const struct activation_rec *a, bool remove, struct err *e);
    /* Delete a layer's storage (l as recorded), which nothing uses any more. */
    int (*layer_remove)(struct pipeline *p, const struct layer_rec *l, struct err *e);

    /* ---- usage (the listings: list-images, list-snapshots, the API's views) ---- */

    /* The disk bytes of a layer's own storage (l as recorded) and of an activation's (its
     * writes), du-like, under state_dir: 1 with *u; 0 when the backend accounts for them
     * elsewhere (dm-thin: the pool's metadata, dm/usage.h); a negative errno when they cannot
     * be read. A query only (no pipeline needed). */
    int (*layer_usage)(const char *state_dir, const struct layer_rec *l, struct backend_du *u);
    int (*act_usage)(const char *state_dir, const struct activation_rec *a, struct backend_du *u);
};

/* The backend named name ("dm-thin", "overlay"); NULL when there is none of that name. */
const struct backend_ops *backend_by_name(const char *name);

/* The backend the state directory's database records (table storage_backend): 1 with its name
 * in out, 0 when none is recorded yet, or a negative errno. */
int backend_recorded(struct db *db, char *out, size_t n);

/* The state directory's backend for the pipeline: the recorded one; when none is recorded, the
 * one asked for (NULL: dm-thin), recorded now (by the first process: a concurrent first use
 * reads the winner's choice). -EINVAL with e saying what to do for an unknown name or one that
 * differs from the recorded choice: a state directory never mixes backends. */
int backend_choose(struct db *db, const char *asked, const struct backend_ops **out, struct err *e);

/* Runs in the mount child after a successful apply, on the mounted tree at mountpoint (no
 * database, no logger: dm/mount.h). */
typedef int (*backend_after_apply_fn)(const char *mountpoint, const struct archive_stats *st,
                                      struct err *e);

/* The most bytes of opaque directory paths the mount child hands back (each path with its NUL;
 * bounded by the mount runner's result limit, dm/mount.h). A layer with more opaque markers
 * than fit keeps the kernel's whiteouts for the rest: the same merged view. */
#define BACKEND_OPAQUE_LIST_MAX ((size_t)4 << 20)

/* Apply q->blob_path with the archive module onto the file system spec mounts (dm/mount.h),
 * privately in a child process, then after (NULL: nothing), with the run's progress ("apply")
 * and cancellation (-ECANCELED: the child was killed, the mount went with its namespace). 0
 * with st filled, or a negative errno with e. The caller fills spec's device, mount point,
 * type, flags and options. opaque (NULL: not asked; else initialized, e.g. BUF_INIT) gets
 * the path of every opaque directory the layer cleared (archive_apply_opaque()), each ending
 * in a NUL. */
int backend_apply_mounted(struct fsm_run *run, struct pipeline *p,
                          const struct backend_layer_req *q, struct mount_spec *spec,
                          backend_after_apply_fn after, struct archive_stats *st,
                          struct buf *opaque, struct err *e);

/* The device-mapper thin-provisioning backend (backend_dm.c). */
extern const struct backend_ops backend_dm_thin;
/* The OverlayFS backend (backend_overlay.c): layers as directories, activations as mounts. */
extern const struct backend_ops backend_overlay;

/* What the overlay backend holds on disk, du-like (allocated bytes, each inode once): every
 * layer directory's diff and every activation's upper, found on disk (so what no record names
 * is listed too). *out is malloc'd (free() it); a state directory with none: 0 and *n 0. */
struct backend_usage {
    const char *kind; /* "layer" (name: the chain id's hash) or "activation" (its name) */
    char name[256];
    char path[4096]; /* the diff or upper directory */
    uint64_t bytes, entries;
    bool missing; /* the directory could not be read */
};
int backend_overlay_usage(const struct config *cfg, struct backend_usage **out, size_t *n);

/* The overlay backend's orphans, for gc: every STATE/overlay/layers/<hex> no layer record
 * names and every STATE/overlay/act/<name> no activation record names (fn gets its path, why,
 * du of its diff or upper, its mtime in Unix ms, and whether its merged dir is mounted). What
 * the database cannot answer for is kept. */
typedef void (*backend_orphan_fn)(const char *path, const char *why, uint64_t bytes,
                                  int64_t mtime_ms, bool mounted, void *ud);
int backend_overlay_orphans(struct db *db, const struct config *cfg, backend_orphan_fn fn,
                            void *ud);
/* Remove such a directory: its merged dir unmounted first when mounted, then the tree. */
int backend_overlay_remove_dir(const char *path, struct err *e);
/* Stale mounts, for gc: every activation recorded other than active whose mount point (its
 * record's) holds an overlay mount of its own upper dir (fn gets the mount point, the
 * activation's name and its state). An overlay there that is not of its upper dir is not
 * thinimg's: not listed. */
typedef void (*backend_mount_fn)(const char *path, const char *name, const char *state, void *ud);
int backend_overlay_stale_mounts(struct db *db, const struct config *cfg, backend_mount_fn fn,
                                 void *ud);
