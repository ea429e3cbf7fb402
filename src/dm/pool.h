/*
 * pool.h: the pool manager: create, reassemble or adopt the thin pool, read its state, and
 * decide whether it is healthy enough for new devices.
 *
 * pool_setup() is idempotent and never destroys data:
 *
 *   - the pool device is active: used as is. If the database does not know it (a pool made by
 *     someone else, e.g. `dmsetup create pool --table "0 S thin-pool META DATA 128 32768"`),
 *     its table is read and recorded as `adopted`. A second setup is a no-op.
 *   - not active, backing files exist: *reassembled*: loop devices already bound to the files
 *     are reused (else new ones are bound) and the pool is created with the table recorded in
 *     the database (same block size, low-water mark and features). Files are never recreated.
 *   - not active, no files: *created*: the parameters are recorded first, then the files are
 *     preallocated (fallocate: no ENOSPC surprises from a sparse file later), bound to loop
 *     devices with direct I/O, and the pool created. The kernel formats empty metadata.
 *   - one file without the other, or an adopted pool that is gone: refused with what to do.
 *
 * After setup (and before any device creation, see pool_check_usable()) the pool's status is
 * read and a pool that is ro, needs_check, Fail/Error, out of data space or over the usage
 * limits is refused with an actionable message (docs/dm.md lists each one).
 *
 * Check at assembly: a pool reassembled from its files (after a reboot or an unclean stop:
 * nothing has the metadata open) gets `thin_check` on its metadata device before the table is
 * loaded, as LVM does at every pool activation. Damage refuses the assembly with the tool's
 * verdict and the repair command; nothing is loaded or changed. Metadata whose superblock is
 * all zeroes is fresh (the kernel formats it at load) and is not checked. Without thin_check
 * installed, thinimg says so once and goes on. The needs_check flag is left as it is at
 * assembly (the kernel then refuses writes, see pool_check_usable()); `thinimg pool check`
 * (pool_check_offline()) checks on demand and clears the flag when the metadata is sound.
 * Repair is an explicit command (`thinimg pool repair`, pool_life.h), never a side effect of
 * setup: it may lose devices.
 *
 * Grow (pool_grow()): online, under active thin devices. A loop-backed file is extended
 * (allocated first, then the size set, so a failed allocation leaves the file as it was),
 * the loop device told (LOOP_SET_CAPACITY), and the pool reloaded with the new length and
 * suspended/resumed: in-flight I/O is flushed and new I/O waits for the resume, openers keep
 * their devices. The kernel picks up a larger metadata device at that resume. A pool on block
 * devices grows when the operator grew the device: the new size is detected and loaded.
 *
 * Table: "<metadata dev> <data dev> <block sectors> <low water blocks> 1 error_if_no_space".
 * error_if_no_space makes a full pool fail writes at once instead of queueing them for 60 s
 * (the kernel's no_space_timeout), so a writer learns about a full pool in seconds, not
 * after a minute of hung I/O. Block zeroing stays on: a fresh device never exposes blocks of a
 * deleted one (activations are handed to VMs of other tenants).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dm/dm.h"
#include "dm/loop.h"
#include "dm/pool_status.h"
#include "store/db.h"
#include "util/err.h"

/* ---- sizing defaults (docs/dm.md, "Pool sizing") ---------------------------------------- */

/* Data file: enough for the work-sample images with layer sharing (about 1.5 GB unique). */
#define POOL_DEFAULT_DATA_BYTES (4ull << 30)
/* 64 KiB blocks: a 4 KiB ext4 metadata update in a snapshot copies one block, so small blocks
 * keep copy-on-write cheap for layer chains (kernel doc: "lots of snapshotting: 128"). */
#define POOL_DEFAULT_BLOCK_SECTORS 128u
#define POOL_BLOCK_SECTORS_MIN     128u /* kernel: 64 KiB .. 1 GiB, multiple of 64 KiB */
#define POOL_BLOCK_SECTORS_MAX     2097152u
/* Kernel rule for metadata: 48 * data_size / block_size bytes, at least 2 MiB. Snapshot
 * chains copy btree nodes on every shared write, so thinimg gives it 4x that, at least
 * POOL_META_DEFAULT_MIN, at most the kernel's limit (POOL_META_MAX, pool_status.h). */
#define POOL_META_KERNEL_MIN  (2ull << 20)
#define POOL_META_PER_BLOCK   48u
#define POOL_META_HEADROOM    4u
#define POOL_META_DEFAULT_MIN (16ull << 20)
/* Low-water mark: the kernel raises an event when free data blocks drop to it. As a
 * fraction of the pool (a fixed block count means nothing across pool sizes). With autoextend
 * on, the mark is the autoextend threshold instead (pool_low_water_blocks(), pool_life.h), so
 * the event wakes the watcher the moment the pool should grow: at creation, reassembly, every
 * growth and pool_apply_low_water(). An adopted pool keeps the mark its maker loaded until
 * thinimg loads its table (a growth, a reassembly). */
#define POOL_DEFAULT_LOW_WATER 0.10
/* Refuse new devices above these usages: a pool that fills while a layer is written leaves a
 * half-written device; stop early and let gc make room. */
#define POOL_DEFAULT_MAX_DATA_PCT 95.0
#define POOL_DEFAULT_MAX_META_PCT 90.0
#define POOL_FEATURES             "1 error_if_no_space"

/* Metadata bytes for a data size and block size by the rule above (multiple of 1 MiB). */
uint64_t pool_metadata_bytes(uint64_t data_bytes, uint32_t block_sectors);

struct pool_config {
    const char *name;          /* pool = dm device name (required, valid dm name) */
    const char *pool_dir;      /* default directory of the backing files */
    const char *data_file;     /* NULL: <pool_dir>/<name>-data.img */
    const char *metadata_file; /* NULL: <pool_dir>/<name>-meta.img */
    uint64_t data_bytes;       /* 0: recorded size, else POOL_DEFAULT_DATA_BYTES */
    uint64_t metadata_bytes;   /* 0: pool_metadata_bytes() */
    uint32_t block_sectors;    /* 0: POOL_DEFAULT_BLOCK_SECTORS */
    double low_water;          /* 0: POOL_DEFAULT_LOW_WATER; fraction of data blocks */
};

struct pool_limits {
    double max_data_pct; /* 0: POOL_DEFAULT_MAX_DATA_PCT */
    double max_meta_pct; /* 0: POOL_DEFAULT_MAX_META_PCT */
};

enum pool_action {
    POOL_ACTION_NONE = 0,    /* pool_get(): only read */
    POOL_ACTION_EXISTING,    /* already active and known: nothing done */
    POOL_ACTION_ADOPTED,     /* active, made by someone else: recorded */
    POOL_ACTION_REASSEMBLED, /* files existed: loops (re)bound, pool created with its table */
    POOL_ACTION_CREATED,     /* new files, new pool */
};
const char *pool_action_name(enum pool_action a);

/* What is known about a pool: kernel state plus the database record. */
struct pool_info {
    char name[DM_NAME_MAX + 1];
    enum pool_action action;
    bool active;
    bool recorded;   /* the database has a row for it */
    char origin[16]; /* "created" / "adopted" (recorded only) */
    struct pool_status status;
    struct pool_table table;
    uint64_t length_sectors;                   /* pool target length */
    char metadata_dev[128], data_dev[128];     /* /dev/loopN or other block device path */
    char metadata_file[4096], data_file[4096]; /* backing files when loop-backed, else "" */
    bool data_dio;                             /* direct I/O on the data loop device (setup only) */
};

/* Create, reassemble or adopt (see above), then check usability with default limits. info
 * gets the result even when the pool is refused as unhealthy (the error says why). */
int pool_setup(struct db *db, const struct pool_config *cfg, struct pool_info *info, struct err *e);

/* Read the pool's kernel state (and, with db, its record). -ENXIO when the pool is not
 * active (info->active false, record filled when db knows it). */
int pool_get(struct db *db, const char *name, struct pool_info *info, struct err *e);

/* 0 when new devices may be created in a pool with this status; otherwise the reason, with
 * what to do: -EUCLEAN (needs_check), -EHOSTDOWN (ro, Fail/Error), -ENOSPC (out of
 * data space or over a usage limit). */
int pool_check_usable(const char *name, const struct pool_status *s, const struct pool_limits *l,
                      struct err *e);

/* pool_get + pool_check_usable: what the pipeline calls before creating devices. */
int pool_ensure_usable(const char *name, const struct pool_limits *l, struct err *e);

/* ---- check (thin_check) ------------------------------------------------------------------ */

#define POOL_THIN_CHECK "thin_check"
/* thin_check reads every metadata block: about 1 s per 100 MiB on a slow disk, so the
 * kernel's largest metadata (16 GiB) takes minutes. Beyond this it is stuck. */
#define POOL_CHECK_TIMEOUT_MS (30 * 60 * 1000)
/* How many of thin_check's problem lines go into a refusal (the first ones name the damaged
 * structure; the full output is in the log). */
#define POOL_CHECK_VERDICT_LINES 4
/* The metadata superblock is the first block (POOL_META_BLOCK_BYTES, pool_status.h; all
 * zeroes: fresh, never formatted). */

struct pool_check {
    bool ran;          /* false: thin_check is not installed */
    bool passed;       /* exit status 0 */
    bool fresh;        /* superblock all zeroes: not checked, the kernel formats it */
    int status;        /* thin_check's exit status */
    char device[4096]; /* what was checked */
    char verdict[1024];
};

/* thin_check's verdict from its output: the problem lines (thin_check 0.9 indents them under
 * "examining ..." progress lines on stderr), at most POOL_CHECK_VERDICT_LINES, joined with
 * "; "; without any, the first non-progress lines of stderr, then stdout; empty when there is
 * nothing. */
void pool_check_verdict(const char *out, const char *errout, char *verdict, size_t n);

/* Run thin_check on dev (a metadata device or file); with clear_needs_check it also clears
 * the needs_check flag when the metadata passes. 0 with c filled whatever the verdict;
 * negative errno when it could not be run at all (a missing tool is c->ran false, not an
 * error). */
int pool_metadata_check(const char *dev, bool clear_needs_check, struct pool_check *c,
                        struct err *e);

/* What offline work on a pool's metadata (check, repair) needs from its record. */
struct pool_offline {
    char metadata_file[4096];
    uint64_t data_bytes;
    uint32_t block_sectors;
};
/* The record of an offline pool with a metadata file that exists. -EBUSY when the pool is
 * active (nothing is stopped; the message names tool and the command to run again), -ENOENT
 * for an unknown pool, no recorded metadata file (adopted on block devices) or a missing one. */
int pool_offline_get(struct db *db, const char *name, const char *tool, const char *cmd,
                     struct pool_offline *out, struct err *e);

/* `thinimg pool check`: the pool must be offline (-EBUSY when it is active: nothing is
 * stopped). Checks the recorded metadata file (through its loop device when one is bound)
 * and clears needs_check when it passes. -EUCLEAN with the verdict and the repair command
 * when it fails, -ENOPKG without thin_check, -ENOENT for an unknown pool or a missing file. */
int pool_check_offline(struct db *db, const char *name, struct pool_check *c, struct err *e);

/* ---- grow --------------------------------------------------------------------------------- */

/* Growing a backing file leaves at least this much free on its file system: the state
 * directory (database, blobs) often shares it, and a full file system stops everything. */
#define POOL_GROW_RESERVE_MIN (256ull << 20)
#define POOL_GROW_RESERVE_PCT 1.0

/* A size argument: "SIZE" (the new total) or "+SIZE" (that much more); K, M, G, T suffixes. */
struct pool_size_arg {
    bool set;
    bool relative;
    uint64_t bytes;
};
/* 0, or -EINVAL for an empty, zero or malformed size. */
int pool_size_arg_parse(const char *s, struct pool_size_arg *out);
/* The new total for a current size: relative adds (saturating), else the given size. */
uint64_t pool_size_arg_target(const struct pool_size_arg *a, uint64_t current);

struct pool_grow_request {
    struct pool_size_arg data, metadata; /* neither set: pick up devices grown by the operator */
    const char *reason;                  /* recorded with the growth; NULL: "pool grow" */
};

struct pool_grow_result {
    uint64_t data_before, data_after;           /* bytes the pool maps (table length) */
    uint64_t meta_before, meta_after;           /* bytes of the metadata device */
    uint64_t low_water_before, low_water_after; /* blocks */
    bool reloaded;                              /* false: nothing to grow */
};

/* Grow an active pool (see the top of this file). -ENXIO when it is not active, -EINVAL for
 * a smaller size, metadata beyond POOL_META_MAX or --data on a block device, -ENOSPC when the
 * backing file system lacks the room plus the reserve, -EUCLEAN/-EHOSTDOWN for a pool the
 * kernel will not grow (needs_check, Fail). The new sizes are recorded in the pools table, and
 * the growth in the pool's events (pool_life.h). */
int pool_grow(struct db *db, const char *name, const struct pool_grow_request *rq,
              struct pool_grow_result *res, struct err *e);

/* Load the low-water mark the pool's autoextend threshold asks for into the active pool (same
 * length, suspend/resume like a growth) and record it: `thinimg pool set` calls it so a new
 * policy is signalled at once. 1 loaded, 0 nothing to change (autoextend off: the mark stays as
 * it is), -ENXIO when the pool is not active (the next assembly loads it). before, after:
 * the marks in blocks. */
int pool_apply_low_water(struct db *db, const char *name, uint64_t *before, uint64_t *after,
                         struct err *e);
