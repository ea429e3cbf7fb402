/*
 * thin.h: thin devices in a pool: database-allocated ids, create/snapshot messages,
 * activation, deactivation, deletion, and what the pool's metadata holds.
 *
 * Ids (24-bit, 1..THIN_ID_MAX) are allocated by the database (`devices`, `device_id_seq`).
 * The order of every creation is fixed and is what makes a crash harmless:
 *
 *   1. allocate: one transaction inserts the row in state `creating` and advances the
 *      sequence; it is committed BEFORE the pool hears about the id;
 *   2. message:  create_thin <id> (or create_snap <id> <origin>) to the pool;
 *   3. confirm:  the row becomes `ready`.
 *
 * A crash between 1 and 3 leaves a `creating` row: the id is never handed out again (the
 * sequence moved on) and reconcile/gc decide, by looking into the pool, whether the device
 * exists. A message that fails marks the row `failed` (error text kept) and returns the
 * error; nothing is deleted on that path (fail dumb). A message answered with EEXIST means
 * the pool already has that id although the database never handed it out (a collision with a
 * device made by someone else): the row becomes `foreign` (kept forever, so the id is never
 * tried again) and the next id is allocated, up to THIN_COLLISION_MAX times.
 *
 * Ids go back into use only after gc deleted the device from the pool (state `deleted`), and
 * only once the sequence has wrapped around 2^24.
 *
 * Names: a device's dm name is stored with its row ("<pool>-layer-<id>", "<pool>-act-<name>",
 * see dm.h) and is unique among rows that are not deleted.
 *
 * Snapshots are only taken of inactive origins (the pipeline deactivates a layer when it
 * commits it); snapshotting an active origin needs suspend/resume around the message and is
 * refused with -EBUSY.
 *
 * Locking: callers serialize devicemapper-heavy sections with the operation guard; these
 * functions only rely on the dm mutex and on SQLite transactions.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dm/dm.h"
#include "dm/exec.h"
#include "store/db.h"
#include "util/err.h"

#define THIN_ID_MAX 16777215u /* 2^24 - 1: the kernel's thin id is 24 bits */
/* Collisions come from foreign devices in an adopted pool; more than this many in a row means
 * the sequence is badly out of step with the pool: stop and let the operator look. */
#define THIN_COLLISION_MAX 64

enum thin_kind { THIN_KIND_LAYER = 0, THIN_KIND_ACTIVATION, THIN_KIND_TEST };

/* The database row of a device. */
struct thin_dev {
    uint32_t id;
    char pool[DM_NAME_MAX + 1];
    char name[DM_NAME_MAX + 1];
    enum thin_kind kind;
    char state[16];
    uint32_t origin_id; /* 0: created with create_thin */
    uint64_t size_bytes;
    char error[256];
    int64_t created_at_ms, updated_at_ms;
};

/* What to create. name_suffix: the part after "<pool>-<kind>-"; NULL means the id. */
struct thin_spec {
    enum thin_kind kind;
    const char *name_suffix;
    uint64_t size_bytes; /* virtual size; multiple of 512 */
};

const char *thin_kind_db_name(enum thin_kind k); /* "layer", "activation", "test" */
const char *thin_kind_dm_name(enum thin_kind k); /* DM_KIND_* */

/* New empty thin device (create_thin). On success *id is its id and its row is `ready`. The
 * device is not active: call thin_activate() to get a block device. */
int thin_create(struct db *db, const char *pool, const struct thin_spec *spec, uint32_t *id,
                struct err *e);
/* New snapshot of an inactive origin (create_snap). The snapshot's size defaults to the
 * origin's when spec->size_bytes is 0. */
int thin_snapshot(struct db *db, const char *pool, uint32_t origin_id, const struct thin_spec *spec,
                  uint32_t *id, struct err *e);

/* Activate: create the dm device <row name> with table "0 <size> thin <pool dev> <id>".
 * Already active with that table: 0. Active with another table: -EEXIST. On failure the
 * row becomes `failed`. path (optional) receives "/dev/mapper/<name>". */
int thin_activate(struct db *db, const char *pool, uint32_t id, char *path, size_t n,
                  struct err *e);
/* Remove the dm device of id (not the thin device: its data stays in the pool). Not active: 0.
 * Open (mounted) devices give -EBUSY; the row is unchanged. */
int thin_deactivate(struct db *db, const char *pool, uint32_t id, struct err *e);
/* gc and explicit removal only: delete the thin device from the pool. The device must be
 * inactive (-EBUSY otherwise). Row: deleting (committed), message "delete <id>", deleted. An
 * id the pool does not have (ENODATA) counts as deleted. */
int thin_delete(struct db *db, const char *pool, uint32_t id, struct err *e);

/* Look a row up by id or by dm name. -ENOENT when there is none. */
int thin_get(struct db *db, const char *pool, uint32_t id, struct thin_dev *out);
int thin_find_by_name(struct db *db, const char *name, struct thin_dev *out);
/* Every row of the pool (deleted ones too when all), ordered by id; *out malloc'd. */
int thin_list(struct db *db, const char *pool, bool all, struct thin_dev **out, size_t *n);

/* Runs args (a thin-provisioning-tools command reading a metadata snapshot, e.g. thin_ls
 * --metadata-snap or thin_dump --metadata-snap; the metadata device's path is appended as its
 * last argument) while the pool holds a metadata snapshot: reserve_metadata_snap, the command,
 * release_metadata_snap. The pool has one snapshot slot; when it is already held (EBUSY) that
 * snapshot is read and left alone. Non-zero exit -> -EIO with the tool's stderr. */
#define THIN_SNAP_EXEC_MAX_ARGS 14
int thin_metadata_snap_exec(const char *pool, const char *const args[], int timeout_ms,
                            struct buf *out, struct buf *errout, struct err *e);

/* The thin ids the pool's metadata holds (active or not), read from a metadata snapshot
 * (reserve_metadata_snap, the read, release_metadata_snap). *ids malloc'd, sorted. Without
 * mapped_bytes the ids are read in this process (dm/thin_meta.h: a few blocks, no process;
 * thin_ls when that reader refuses the metadata); mapped_bytes (optional, same order) gets
 * each device's mapped bytes from `thin_ls --metadata-snap`. */
int thin_pool_metadata_ids(const char *pool, uint32_t **ids, uint64_t **mapped_bytes, size_t *n,
                           struct err *e);
/* How many thin_pool_metadata_ids() calls this process answered without thin_ls (the tests
 * check the fast path is the one taken). */
extern unsigned long thin_metadata_reads_in_process;

/* Test hook: when set, called right after a create message succeeded and before the row is
 * confirmed (crash-injection tests call _exit() in it). NULL in production. */
extern void (*thin_test_hook_after_message)(uint32_t id);

/* mkfs.ext4 on a block device, with the options thinimg uses for layer devices (docs/dm.md):
 * -E nodiscard (discard is slow and useless on a fresh thin device), -m 0 (no root reserve in
 * an image), a small journal, and no zeroing where the device reads as zeros already:
 *   - a thin device of a pool that zeroes new blocks (no skip_block_zeroing): every block
 *     mkfs does not write reads as zeros, so assume_storage_prezeroed=1 (e2fsprogs >= 1.47)
 *     skips zeroing the inode tables and the journal and marks the groups ITABLE_ZEROED: the
 *     file system is complete when mkfs returns (no ext4lazyinit thread writes into a base
 *     layer after it was snapshotted) and costs a few MiB of pool instead of ~140 MiB;
 *   - anything else (a pool adopted with skip_block_zeroing, a device that is not a thin
 *     device): lazy_itable_init=0,lazy_journal_init=0, mkfs writes the zeros itself. */
#define MKFS_TIMEOUT_MS         (10 * 60 * 1000) /* a 4 GiB device under emulation stays well below */
#define MKFS_JOURNAL_MIB        8 /* small: every snapshot copies what the journal touched */
#define MKFS_EXTENDED_PREZEROED "nodiscard,assume_storage_prezeroed=1"
#define MKFS_EXTENDED_ZEROING   "nodiscard,lazy_itable_init=0,lazy_journal_init=0"
int dm_mkfs_ext4(const char *dev, const char *label, struct err *e);
