/*
 * views.h: the JSON shapes of thinimg's objects (runs, events, images, activations, health
 * reports), in one place for every place that prints them: the CLI's --json output, the
 * daemon's admin API, and the clients that read the API back (the CLI forwarding to a daemon,
 * the monitor). One shape per object means `thinimg runs --json` and `GET /v1/runs` agree
 * field for field; docs/daemon.md lists the fields.
 *
 * Ownership: every view_* function returns a new reference (json_decref it); records passed
 * in are only read. view_run_parse() fills a record that owns its strings (free it with
 * fsm_run_record_free()).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "dm/dm.h"
#include "fsm/fsm.h"
#include "guard/health.h"
#include "pipeline/imagedb.h"
#include "store/db.h"

/* A short human label for a run's resource: the last two path components of a location,
 * "chain 1a2b3c4d5e6f" for a chain id, the name otherwise (progress lines, the monitor). */
void view_run_label(const char *type, const char *resource, char *out, size_t n);

/* A run. full: with its request and response (embedded as JSON when they are JSON, as a
 * string when text, null otherwise). Live fields (phase, progress_done, progress_total) are
 * present when the record came from a manager (fsm_list_active). */
json_t *view_run(const struct fsm_run_record *r, bool full);
/* The inverse, for clients: version, type, action, resource_id, queue, state, status,
 * attempt, outcome, error, times and the live fields. -EBADMSG when it is not a run. */
int view_run_parse(const json_t *o, struct fsm_run_record *out);
/* fsm_outcome / fsm_run_status from their names; -EINVAL for unknown names. */
int view_outcome_parse(const char *s, enum fsm_outcome *out);

json_t *view_event(const struct fsm_event_record *ev);

/* An image with its layers (from db: index, location, digest, chain id, size, layer state,
 * device id, and each layer device's mapped, exclusive and shared bytes), the image's exclusive
 * and shared bytes (view_image_bytes). */
json_t *view_image(struct db *db, const struct image_rec *r);
/* An activation. One recorded `active` whose dm device the kernel does not have (a reboot
 * before reassembly, a device removed behind thinimg's back) is shown as what the kernel has:
 * "device_present": false and "kernel_state": "gone"; "device_present" is absent when it cannot
 * be checked (not active, or no device-mapper here). With its device's exclusive and shared
 * bytes (view_activation_bytes), for any activation whose thin device is in the pool. */
json_t *view_activation(struct db *db, const struct activation_rec *a);

/* Bytes an image takes: `applied` the file bytes its layers wrote (what the layer devices
 * hold, shared with other images that use the same lower layers), `blobs` the size of its
 * layer blobs. Layers not applied yet count 0. */
int view_image_sizes(struct db *db, int64_t image_id, uint64_t *applied, uint64_t *blobs);
/* Bytes an active activation's thin device has mapped (the pool space it uses, its own writes
 * and the blocks shared with its image's layers): 0 with *bytes set, or a negative errno when it
 * is not active or the kernel cannot be asked. */
int view_activation_mapped(const struct activation_rec *a, uint64_t *bytes);

/* Exclusive and shared bytes (dm/usage.h: per thin device, from the pool's metadata through
 * thin_ls, kept until the pool changes). For a device (a layer, an activation) they are the
 * device's own. For an image, whose file system is a chain of layer devices (each a snapshot
 * of the one below):
 *   exclusive  the bytes only this image's layers hold: blocks mapped by one device of the
 *              pool, that device being a layer no other image uses. Removing the image (and,
 *              first, its activations) frees at least this much;
 *   shared     of the bytes its top layer device maps (the whole file system of the image),
 *              those at least one other device maps too: its activations, other images built
 *              on the same layers, and its own lower layer devices (thin_ls counts sharing per
 *              device, so a block two layers of the same image hold is shared too).
 * The two do not add up to the image's footprint; docs/cli.md says so too.
 * known false: no figures, why says why (the pool is not active, thin_ls is not installed,
 * the device is not applied yet ...). */
struct view_bytes {
    bool known;
    bool disk; /* the backend measured its directories (overlay): mapped is their du */
    uint64_t mapped, exclusive, shared; /* mapped: devices only (0 for an image) */
    char why[512];
};
/* The CLI keeps the figures across processes in this file (<state-dir>/THIN_USAGE_CACHE_FILE);
 * NULL (the default, the daemon) keeps them in memory only. */
void view_usage_cache_file(const char *path);
/*
 * A backend that keeps layers and activations as directories (overlay, docs/overlay.md) has
 * no pool: the same figures are its directories' disk usage, du-like (allocated bytes, each
 * inode once; backend.h's layer_usage and act_usage), under the state directory set here (the
 * CLI's listings and the daemon set it; NULL: not measured, the figures show as unknown):
 *   a layer        exclusive = mapped = du of its diff directory, shared 0 (no other
 *                  directory holds its blocks);
 *   an activation  exclusive = mapped = du of its upper directory (its writes), shared 0;
 *   an image       exclusive = du of its layers no other image uses, shared = du of those
 *                  another image uses too (their sum: its layers' footprint).
 * view_bytes.disk says so ("disk_bytes" instead of "mapped_bytes" in JSON). A committed
 * layer's diff is walked once per process (it never changes), an upper on every call: O(files
 * below it) lstat calls.
 */
void view_state_dir(const char *dir);
/* The state directory's backend as its database records it (dm-thin when none is yet). */
struct backend_ops;
const struct backend_ops *view_backend(struct db *db);
void view_device_bytes(struct db *db, const char *pool, int64_t dev_id, struct view_bytes *out);
void view_activation_bytes(struct db *db, const struct activation_rec *a, struct view_bytes *out);
/* A layer's figures (l as recorded): its device's, or its directory's (overlay); false when it
 * has none to show (a dm-thin layer with no device yet). */
bool view_layer_bytes(struct db *db, const struct layer_rec *l, struct view_bytes *out);
void view_image_bytes(struct db *db, int64_t image_id, struct view_bytes *out);
/* Sets "exclusive_bytes" and "shared_bytes" in o (null when not known, with "bytes_note"
 * saying why). */
void view_bytes_json(json_t *o, const struct view_bytes *b);

/* The kernel's side of an active activation: 1 its dm device exists, 0 it is gone, -1 not
 * known (not recorded active, no device path, or no device-mapper to ask). */
int view_activation_device_present(const struct activation_rec *a);
/* The same for any backend: overlay says whether the activation's mount is up. */
int view_activation_present(struct db *db, const struct activation_rec *a);
/* The state to show an operator: the recorded one, or for an active activation whose device is
 * gone "inactive (device gone; process-image or activate restores it)". */
const char *view_activation_state_label(const struct activation_rec *a, int present);

/* The result of a process-image run: run, outcome, elapsed_ms, image, ref, state, activation,
 * device_path, device_id and layers (index, location, digest, chain id, device id, state,
 * size), from the run's response and the database. What `process-image --json` prints. */
json_t *view_process_result(struct db *db, const struct fsm_run_record *rec, int64_t elapsed_ms);

/* The thin pool (docs/dm.md, "Status fields"), with "backend": "dm-thin"; health: NULL when
 * usable, else the refusal. */
struct pool_info;
json_t *view_pool(const struct pool_info *info, const struct err *health);
/* An overlay state directory has no pool: what `status --json` and GET /v1/pool give instead,
 * {"backend": "overlay", "pool": null, "disk_bytes", "storage": [{kind, name, path, bytes,
 * entries, missing, mounted}]} (backend_overlay_usage(): du of every layer diff and activation
 * upper on disk). NULL when the directories cannot be listed (out of memory). */
struct backend_usage;
struct config;
json_t *view_overlay_status(struct db *db, const struct config *cfg);
/* For an activation's upper: "yes" its mount is up, "no" recorded but not mounted, "-" no
 * record names it (an orphan directory: gc's business); "-" for a layer. */
const char *view_overlay_mounted(struct db *db, const struct backend_usage *u);

/* One thin device of a pool, the database's record joined with the kernel's device list:
 * known (a row; id, origin, kind, state and size from it) or not (a device active under the
 * pool's name prefix that the database does not know: state "unknown", what gc calls an
 * orphan). */
struct view_device {
    char name[DM_NAME_MAX + 1];
    char kind[16], state[16]; /* "-" and "unknown" for an unknown device */
    uint32_t id, origin_id;   /* 0: none (an unknown device, no origin) */
    uint64_t size_bytes;
    bool known, active;
};
/* The pool's devices: the rows first (in thin_list order), then the unknown active ones. db
 * may be NULL (no database yet: only unknown devices); without device-mapper nothing is
 * active. *out malloc'd (free it), *n lines. */
int view_devices(struct db *db, const char *pool, struct view_device **out, size_t *n);
/* {"name", "kind", "state", "active", "id"|null, "origin_id"|null[, "size_bytes"]}. */
json_t *view_device(const struct view_device *d);

/* A health report: {"healthy", "overall", "checks": [{"name", "level", "detail",
 * "duration_ms"}]}. */
json_t *view_health(const struct health_report *rep);
