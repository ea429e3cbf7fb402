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
 * device id). */
json_t *view_image(struct db *db, const struct image_rec *r);
/* An activation. One recorded `active` whose dm device the kernel does not have (a reboot
 * before reassembly, a device removed behind thinimg's back) is shown as what the kernel has:
 * "device_present": false and "kernel_state": "gone"; "device_present" is absent when it cannot
 * be checked (not active, or no device-mapper here). */
json_t *view_activation(const struct activation_rec *a);

/* Bytes an image takes: `applied` the file bytes its layers wrote (what the layer devices
 * hold, shared with other images that use the same lower layers), `blobs` the size of its
 * layer blobs. Layers not applied yet count 0. */
int view_image_sizes(struct db *db, int64_t image_id, uint64_t *applied, uint64_t *blobs);
/* Bytes an active activation's thin device has mapped (the pool space it uses, its own writes
 * and the blocks shared with its image's layers): 0 with *bytes set, or a negative errno when it
 * is not active or the kernel cannot be asked. */
int view_activation_mapped(const struct activation_rec *a, uint64_t *bytes);

/* The kernel's side of an active activation: 1 its dm device exists, 0 it is gone, -1 not
 * known (not recorded active, no device path, or no device-mapper to ask). */
int view_activation_device_present(const struct activation_rec *a);
/* The state to show an operator: the recorded one, or for an active activation whose device is
 * gone "inactive (device gone; process-image or activate restores it)". */
const char *view_activation_state_label(const struct activation_rec *a, int present);

/* The result of a process-image run: run, outcome, elapsed_ms, image, ref, state, activation,
 * device_path, device_id and layers (index, location, digest, chain id, device id, state,
 * size), from the run's response and the database. What `process-image --json` prints. */
json_t *view_process_result(struct db *db, const struct fsm_run_record *rec, int64_t elapsed_ms);

/* The thin pool (docs/dm.md, "Status fields"); health: NULL when usable, else the refusal. */
struct pool_info;
json_t *view_pool(const struct pool_info *info, const struct err *health);

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
