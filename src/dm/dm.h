/*
 * dm.h: the devicemapper layer: a thin, serialized wrapper around libdevmapper.
 *
 * Everything thinimg asks of device-mapper goes through these functions: create, reload,
 * suspend, resume and remove devices with one-target tables, send target messages
 * (create_thin, create_snap, delete, set_transaction_id, reserve/release_metadata_snap),
 * query status, table and info, and list devices. They talk to the kernel through
 * libdevmapper's dm_task_* calls, never by parsing `dmsetup` output, so errors arrive as errno
 * values (-EEXIST from a create_thin on a used id, -EBUSY from a remove of an open device).
 *
 * Serialization: libdevmapper is not thread-safe, so every call into it in this process holds
 * one process-wide mutex (dm_lock). Callers never take it themselves. The blocking wait for a
 * device's event (dm_dev_wait_event()) runs its ioctl outside it, or one waiting watcher would
 * stop every other call.
 *
 * udev: when DM_DISABLE_UDEV is set or no udev runs (/run/udev/control missing), udev
 * synchronisation is switched off (dm_udev_set_sync_support(0)) and libdevmapper creates and
 * removes the /dev/mapper nodes itself. With udev, operations wait for udev to finish with
 * the device (cookie + dm_udev_wait), so a node exists when a create returns.
 *
 * Safety ("fail dumb", docs/architecture.md): nothing here cleans up after a failure. A function
 * that fails returns the error and leaves the kernel state as it is; removing devices is a
 * separate, explicit call that only gc and the operator's explicit commands make.
 *
 * Names: device names must pass dm_name_valid(): 1..DM_NAME_MAX bytes of [A-Za-z0-9_.-],
 * not starting with '.' or '-'. thinimg's own devices are named "<pool>-<kind>-<suffix>"
 * (see dm_name_format() and docs/dm.md). Pool names may contain '-', so "starts with
 * <pool>-" is NOT how a pool's devices are recognised (pool "tp-b"'s devices start with
 * "tp-"): dm_name_match() recognises exactly the names dm_name_format() builds for a pool.
 *
 * Errors: 0 (or a count) on success, a negative errno on failure; where an operator may
 * need it, the struct err says what failed on which device and includes libdevmapper's last
 * message.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

/* Longest device name: the kernel's DM_NAME_LEN (128) includes the terminating NUL. */
#define DM_NAME_MAX 127
/* Longest table or status line we read back (a thin-pool table is well under 200 bytes). */
#define DM_PARAMS_MAX 4096
/* Sector size used in every dm table. */
#define DM_SECTOR_SIZE 512u

/* The name of the pool-relative kinds of devices (docs/dm.md, "Naming"). */
#define DM_KIND_LAYER      "layer"   /* "<pool>-layer-<id>": a committed layer of a chain */
#define DM_KIND_ACTIVATION "act"     /* "<pool>-act-<name>": an activation (writable snapshot) */
#define DM_KIND_TEST       "test"    /* "<pool>-test-<id>": devices made by tests and benchmarks */
#define DM_KIND_FOREIGN    "foreign" /* "<pool>-foreign-<id>": placeholder name of a collided id */

/* True when s is a valid device-mapper name for thinimg (see above). */
bool dm_name_valid(const char *s);

/* Writes "<pool>-<kind>-<suffix>" into out. kind is one of the DM_KIND_* above; the layer and
 * foreign kinds take a thin id as suffix (decimal, no leading zero), the others any suffix
 * that keeps the name valid. -EINVAL when a part is empty, the kind is unknown, the suffix
 * does not have its kind's shape or the result is not a valid name, -ENAMETOOLONG when it
 * does not fit DM_NAME_MAX or n. */
int dm_name_format(char *out, size_t n, const char *pool, const char *kind, const char *suffix);

/* Is name one that dm_name_format() builds for pool (some kind, some suffix of that kind's
 * shape)? Decided by building the name again from the parts it splits into, so the two
 * cannot drift apart. kind (optional) receives the DM_KIND_* constant. Pool "tp" matches
 * "tp-layer-7" and "tp-act-web", never "tp-b-layer-7" (pool "tp-b"'s), "tp-junk" or
 * "tp-layer-x". A pool whose own name is "<pool>-<kind>..." (say "tp-act") makes names that
 * also have pool "tp"'s shape; callers that act on a match tell these apart by the device's
 * table (a thin device names its pool; see gc). */
bool dm_name_match(const char *name, const char *pool, const char **kind);

/* Is device-mapper usable here (control node present, driver answers)? 0 or negative errno
 * (-ENODEV when the kernel has no device-mapper), with a message in e. */
int dm_available(struct err *e);

/* Information about one device (DM_DEVICE_INFO). */
struct dm_dev_info {
    bool exists;
    bool suspended;
    bool live_table;
    bool read_only;
    int32_t open_count;
    uint32_t major, minor;
    int32_t target_count;
    uint32_t event_nr; /* the device's event counter (see dm_dev_wait_event()) */
};

/* Fills info; a device that does not exist is not an error (info->exists == false). */
int dm_dev_info(const char *name, struct dm_dev_info *info, struct err *e);
/* 1 if the device exists, 0 if not, negative errno on failure. */
int dm_dev_exists(const char *name);

/* Block until the device's event counter differs from *event_nr (DM_DEVICE_WAITEVENT), then
 * set *event_nr to the new value. The kernel counts an event when a target raises one (a
 * thin-pool: data or metadata low water, a mode change) and when a table is swapped or the
 * device removed. The wait runs outside the lock of the other calls (as dmeventd's waiting
 * threads do: only building and reading the task is serialized), so it blocks nobody else.
 * -EINTR when a signal whose handler was installed without SA_RESTART interrupted it (how a
 * waiting thread is stopped), -ENXIO when the device does not exist. */
int dm_dev_wait_event(const char *name, uint32_t *event_nr, struct err *e);

/* One table line: start and length in sectors, target type and its parameters. */
struct dm_target_line {
    uint64_t start;
    uint64_t length;
    char type[32];
    char params[DM_PARAMS_MAX];
};

/* Create a device with a one-target table and activate it (create + load + resume). When
 * read_only is set, the device is read-only. The /dev/mapper node exists on return.
 * -EEXIST when a device of that name exists. */
int dm_dev_create(const char *name, uint64_t length_sectors, const char *type, const char *params,
                  bool read_only, struct err *e);
/* Load a new one-target table into an active device and switch to it: reload, suspend
 * (flushing in-flight I/O; new I/O waits), resume. Openers keep the device throughout. When the
 * suspend fails the new table is dropped; when the resume fails the device stays suspended
 * and the error says so. */
int dm_dev_reload(const char *name, uint64_t length_sectors, const char *type, const char *params,
                  struct err *e);
/* Remove the device (it must not be open). With retry, libdevmapper retries a few times
 * while the device is busy (a closing opener). -ENXIO when it does not exist. */
int dm_dev_remove(const char *name, bool retry, struct err *e);
/* fork(2) while no thread is inside libdevmapper (the dm lock held across the fork), for a
 * child that makes devicemapper calls itself: a child forked while another thread held the
 * lock would wait for it forever. Same returns as fork. (A thread in dm_dev_wait_event()'s
 * ioctl holds no lock: the child does not miss it.) */
pid_t dm_fork(void);

/* Send a message to sector 0 of a target (e.g. "create_thin 7" to a thin-pool). If response
 * is not NULL, *response gets the target's reply (malloc'd, may be empty). The kernel's errno
 * comes back as is: -EEXIST for create_thin/create_snap of an id the pool has, -ENODATA for
 * delete of an id it does not have, -EINVAL for a malformed message. */
int dm_dev_message(const char *name, const char *message, char **response, struct err *e);

/* The first target's status line (DM_DEVICE_STATUS) or table line (DM_DEVICE_TABLE). -ENXIO
 * when the device does not exist, -ENODATA when it has no table. */
int dm_dev_status(const char *name, struct dm_target_line *out, struct err *e);
int dm_dev_table(const char *name, struct dm_target_line *out, struct err *e);

/* All device-mapper devices: a NULL-terminated array of malloc'd names (free with
 * dm_names_free). Returns the count. */
int dm_dev_list(char ***names, struct err *e);
void dm_names_free(char **names);

/* "/dev/mapper/<name>" into out. */
int dm_dev_path(char *out, size_t n, const char *name);
