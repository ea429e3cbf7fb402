/*
 * pool_life.h: the pool's life after setup, as LVM thin does it for its pools (lvmthin(7)):
 * the operator's policy (pool_settings), what happened (pool_events: checks, growths,
 * backups, repairs), metadata backups, offline repair, and autoextend.
 *
 * Policy (`thinimg pool set`, table pool_settings). No row: autoextend off, backups with the
 * defaults below.
 *
 * Events (table pool_events): every check, growth, autoextend that could not grow, backup and
 * repair, with the sizes before and after where they apply; `thinimg status` shows the last
 * ones. Only the newest POOL_EVENTS_KEEP per pool are kept.
 *
 * Backups (pool_backup_*): `thin_dump --metadata-snap` of the live pool, under the pool's one
 * metadata snapshot (thin_metadata_snap_exec()), into <state>/pool-backups/<pool>/, newest
 * backup_keep kept (like LVM's archives). The pipeline takes one after a committed layer when
 * the last is older than backup_interval_s; `thinimg pool backup` takes one on demand. The
 * snapshot slot is shared with gc's thin_ls: callers hold the operation guard (the pipeline)
 * or the process lock (the CLI) while it runs.
 *
 * Repair (pool_repair(), `thinimg pool repair`, offline): two candidates, each in a fresh file
 * beside the metadata file: thin_repair of the damaged metadata (with the superblock fields
 * from the database when the superblock itself is gone), and thin_restore of the newest
 * backup. Each must pass thin_check. The one that keeps more of the database's ready devices
 * wins (thin_repair on a tie: it is newer than any backup); the operator may force either.
 * The damaged file is kept aside (<metadata>.damaged-<time>), the chosen one takes its place,
 * and ready devices the new metadata lacks become `failed` (gc removes their rows, the next
 * process-image recreates the layers). Nothing is changed when no candidate is usable.
 *
 * Autoextend (pool_autoextend()): when data or metadata usage is at or over the threshold,
 * grow by the step (pool_grow(): the backing file system keeps its reserve), never beyond the
 * cap (data) or POOL_META_MAX (metadata). With autoextend on, the pool's low-water mark is the
 * threshold in free data blocks (pool_low_water_blocks(); set at creation, reassembly, every
 * growth and `thinimg pool set`), so the kernel raises the pool's device-mapper event the
 * moment data usage reaches it. Called before each layer's device is created, and by a
 * watcher (pool_watch_start()) in any process that runs the pipeline (daemon and CLI): one
 * thread waits for the pool's events (DM_DEVICE_WAITEVENT) and wakes the checking thread at
 * once; the checking thread also polls every POOL_WATCH_POLL_MS (see there for why). A pool
 * that cannot grow any more (cap, no room) is logged and recorded once per episode, and the
 * refusals of pool_check_usable() in that process say so.
 */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "util/err.h"

/* ---- policy ----------------------------------------------------------------------------- */

/* Backups kept per pool: LVM keeps archives of the last 10 changes at least. */
#define POOL_BACKUP_DEFAULT_KEEP 10
#define POOL_BACKUP_KEEP_MAX     1000
/* A backup after a committed layer at most this often: a dump reads the whole metadata
 * (seconds for a large pool) under the one snapshot slot gc also needs. 0: every layer. */
#define POOL_BACKUP_DEFAULT_INTERVAL_S 300
/* Autoextend step when none is given: LVM's thin_pool_autoextend_percent default. */
#define POOL_AUTOEXTEND_DEFAULT_STEP_PCT 20.0
/* The smallest metadata step (the metadata file grows in whole MiB). */
#define POOL_AUTOEXTEND_META_STEP_MIN (1ull << 20)

struct pool_settings {
    double autoextend_threshold_pct; /* 0: autoextend off; else 1..99 */
    double autoextend_step_pct;      /* step as a percent of the current size, or */
    uint64_t autoextend_step_bytes;  /* as bytes of data (metadata grows the same fraction) */
    uint64_t autoextend_max_bytes;   /* data cap; 0: only the file system's room limits */
    uint32_t backup_keep;            /* backups kept; 0 in the table: the default */
    int64_t backup_interval_s;       /* seconds between backups after layers; -1: default */
};

/* The pool's policy, defaults filled in (no row: autoextend off). */
int pool_settings_get(struct db *db, const char *pool, struct pool_settings *s);
int pool_settings_put(struct db *db, const char *pool, const struct pool_settings *s);

/* ---- events ----------------------------------------------------------------------------- */

#define POOL_EVENTS_KEEP 200

struct pool_event {
    int64_t at_ms;
    char kind[24]; /* check, grow, autoextend-capped|-no-room|-error, backup, repair */
    bool ok;
    uint64_t data_before, data_after, meta_before, meta_after; /* bytes, 0 = n/a */
    char detail[512];
};

/* Record one (at_ms 0: now); older events beyond POOL_EVENTS_KEEP are dropped. */
int pool_event_add(struct db *db, const char *pool, const struct pool_event *ev);
/* Newest first, at most max, of kind (NULL: any). *n: how many were filled. */
int pool_events_recent(struct db *db, const char *pool, const char *kind, struct pool_event *out,
                       size_t max, size_t *n);

/* ---- backups ---------------------------------------------------------------------------- */

#define POOL_BACKUP_SUBDIR "pool-backups"
/* thin_dump of a large pool's metadata takes seconds; minutes means it is stuck. */
#define POOL_BACKUP_TIMEOUT_MS (10 * 60 * 1000)

/* <state_dir>/pool-backups/<pool> */
int pool_backup_dir(const char *state_dir, const char *pool, char *out, size_t n);

struct pool_backup {
    char path[4096];
    int64_t at_ms;
    uint64_t bytes;
};

/* Take a backup of the active pool now, then keep the newest `keep` (settings). Records a
 * `backup` event either way. */
int pool_backup_take(struct db *db, const char *pool, const char *state_dir,
                     struct pool_backup *out, struct err *e);
/* Take one when the last is older than the pool's backup interval. 1 taken, 0 not due. */
int pool_backup_maybe(struct db *db, const char *pool, const char *state_dir, struct err *e);
/* The newest backup file. -ENOENT when there is none. */
int pool_backup_latest(const char *state_dir, const char *pool, struct pool_backup *out);
/* Remove all but the newest keep backups; returns how many were removed. */
int pool_backup_prune(const char *state_dir, const char *pool, uint32_t keep);

/* ---- repair ----------------------------------------------------------------------------- */

#define POOL_REPAIR_TOOL  "thin_repair"
#define POOL_RESTORE_TOOL "thin_restore"
#define POOL_LS_TOOL      "thin_ls"
/* thin_repair reads every block and writes a new tree: like thin_check, minutes at most. */
#define POOL_REPAIR_TIMEOUT_MS (30 * 60 * 1000)

enum pool_repair_source {
    POOL_REPAIR_AUTO = 0, /* whichever keeps more of the database's devices */
    POOL_REPAIR_FROM_METADATA,
    POOL_REPAIR_FROM_BACKUP,
};

/* One way to get sound metadata back. */
struct pool_repair_candidate {
    bool tried;
    bool usable;       /* produced, passed thin_check, listable */
    size_t missing;    /* ready devices of the database it lacks */
    char note[512];    /* why it is not usable */
    char source[4096]; /* metadata file/device or backup file */
    uint32_t *ids;     /* thin ids it holds (usable only; freed by pool_repair_result_free) */
    size_t n_ids;
};

struct pool_repair_result {
    struct pool_repair_candidate repair, backup;
    const char *used;        /* "thin_repair" or "backup" */
    char damaged_kept[4096]; /* where the damaged metadata was moved */
    uint32_t *lost;          /* ids the database had ready that the new metadata lacks */
    char (*lost_names)[128]; /* their dm names */
    size_t n_lost;
};
void pool_repair_result_free(struct pool_repair_result *r);

/* Offline only (-EBUSY when the pool is active: nothing is stopped). -ENOENT: no such pool or
 * metadata file; -ENOPKG: thin_repair/thin_check missing; -EUCLEAN: no candidate is usable
 * (nothing changed, res says why). On success the pool is ready to be reassembled
 * (pool_setup()). */
int pool_repair(struct db *db, const char *pool, const char *state_dir, enum pool_repair_source src,
                struct pool_repair_result *res, struct err *e);

/* ---- autoextend ------------------------------------------------------------------------- */

/* The watcher's fallback poll. Data usage crossing the threshold is signalled by the kernel at
 * once (the low-water event), so the poll only catches what no event announces: metadata
 * usage crossing the threshold (the kernel signals only its own fixed metadata low watermark,
 * far later), an event missed while a growth ran, a pool whose table someone else loaded with
 * another low-water mark, and kernels or sandboxes where the wait fails. Metadata fills slowly
 * (about 48 bytes per newly mapped data block: ~80 KB/s for 100 MiB/s of new data), so a
 * threshold's margin of a few MiB lasts tens of seconds; one status read every 5 s is enough
 * and costs nothing. THINIMG_POOL_POLL_MS overrides it (tests that prove the event path set it
 * long; an operator may shorten it), within POOL_WATCH_POLL_MIN_MS..POOL_WATCH_POLL_MAX_MS. */
#define POOL_WATCH_POLL_MS     5000
#define POOL_WATCH_POLL_MIN_MS 100
#define POOL_WATCH_POLL_MAX_MS (24 * 3600 * 1000)
#define POOL_WATCH_POLL_ENV    "THINIMG_POOL_POLL_MS"
/* The event thread waits this long before it asks again for a pool that is not active (or
 * whose wait failed), so a missing pool costs one ioctl a second. */
#define POOL_WATCH_EVENT_RETRY_MS 1000
/* Stopping the watcher interrupts the event thread's blocking wait with this signal (the
 * handler does nothing and is installed without SA_RESTART, so the ioctl returns EINTR), sent
 * to that thread alone, again every POOL_WATCH_STOP_RESEND_MS until it has left (a signal that
 * lands just before the thread enters the wait is not lost: the next one interrupts it). Every
 * other thread blocks it (pool_watch_claim_signal()). */
#define POOL_WATCH_WAKE_SIGNAL    SIGUSR2
#define POOL_WATCH_STOP_RESEND_MS 10

/* What made autoextend check the pool: the layer about to be written, the watcher's poll, or
 * the pool's device-mapper event (low water, metadata low water, a mode or table change). */
enum pool_autoextend_trigger {
    POOL_TRIGGER_LAYER = 0,
    POOL_TRIGGER_POLL,
    POOL_TRIGGER_EVENT,
};

struct pool_autoextend_result {
    bool enabled;
    bool grown;
    bool stuck; /* over the threshold and cannot grow: cap, no room, an error (note says) */
    uint64_t data_before, data_after, meta_before, meta_after;
    char note[512];
    /* The trigger as logged: "layer", "poll", or for an event what the status shows:
     * "low-water event" (data at the low-water mark), "metadata low-water event", "pool
     * event" (anything else: a table or mode change). */
    char trigger[32];
};

/* The growth a policy asks for: new totals (0: no growth on that side). Pure. capped_*: over
 * the threshold but already at the cap. */
struct pool_autoextend_plan {
    uint64_t data_target, meta_target;
    bool data_over, meta_over;
    bool data_capped, meta_capped;
};
void pool_autoextend_plan(const struct pool_settings *s, uint64_t data_bytes, double data_pct,
                          uint64_t meta_bytes, double meta_pct, uint64_t block_bytes,
                          struct pool_autoextend_plan *out);

/* The low-water mark (data blocks) that makes the kernel signal exactly when data usage
 * reaches threshold_pct of a pool of `blocks`: the kernel raises its event when free blocks
 * are at or below the mark, and pool_autoextend_plan() grows when used * 100 / blocks is at
 * or over the threshold, so the mark is blocks minus the fewest used blocks that pass that
 * test. 0 for an empty pool or a threshold outside (0, 100): the kernel then still signals
 * when the pool runs out of space (a mode change). Pure. */
uint64_t pool_low_water_blocks(double threshold_pct, uint64_t blocks);

/* Check the pool once and grow it when the policy says so. 0 (nothing to do, or grown),
 * -ENOSPC when it is over the threshold and cannot grow (e says why: the cap or the file
 * system), other negative errnos when reading or growing failed (res->stuck: a growth that
 * failed, logged once per episode). A pool that is not active, or autoextend off: 0. */
int pool_autoextend(struct db *db, const char *pool, enum pool_autoextend_trigger trigger,
                    struct pool_autoextend_result *res, struct err *e);

/* Why autoextend cannot grow the pool with status st: its cap (from the policy this process's
 * last check read: a pool that filled between two checks is still said to be capped), or the
 * last check's reason (no room, an error); "" when it can grow or autoextend is not watched
 * here. pool_check_usable() puts it before its out-of-space refusals. */
struct pool_status;
void pool_autoextend_stuck_note(const char *pool, const struct pool_status *st, char *out,
                                size_t n);
/* The note's parts, for pool_autoextend(): the refusal's words when the plan is capped ("" when
 * it is not); remember the policy of the pool autoextend watches; set the last check's reason
 * (or clear it with ""): true when it changed (a new episode is logged and recorded once). */
void pool_autoextend_cap_note(const char *pool, const struct pool_settings *s,
                              const struct pool_autoextend_plan *plan, const struct pool_status *st,
                              char *out, size_t n);
void pool_autoextend_note_policy(const char *pool, const struct pool_settings *s,
                                 uint64_t block_bytes);
bool pool_autoextend_note_set(const char *pool, const char *text);

struct pool_watch;
/* The watcher: a thread that runs pool_autoextend() on each of the pool's device-mapper
 * events and every poll_ms (0: POOL_WATCH_POLL_MS or THINIMG_POOL_POLL_MS), and a thread
 * that waits for those events. The db must outlive it. pool_watch_stop() returns promptly
 * (the wait is interrupted, see POOL_WATCH_WAKE_SIGNAL). */
int pool_watch_start(struct db *db, const char *pool, int poll_ms, struct pool_watch **out);
void pool_watch_stop(struct pool_watch *w);
/* Block POOL_WATCH_WAKE_SIGNAL in the calling thread, and so in every thread it starts after:
 * a program calls it first thing in main(). The watcher's waiting thread unblocks it only
 * around its wait, so the signal (the watcher's own, or one sent to the process from outside)
 * can only interrupt that wait: never another thread's system call (the handler is installed
 * without SA_RESTART), and it never takes the signal's default action (termination). */
void pool_watch_claim_signal(void);
