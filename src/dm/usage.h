/*
 * usage.h: how much of the pool each thin device holds alone and how much it shares with other
 * devices, read from the pool's metadata and cached until the pool changes.
 *
 * Per device, in thin_ls's terms (bytes are data blocks times the pool's block size):
 *   mapped     the blocks the device maps;
 *   exclusive  of those, the blocks no other device of the pool maps: its data alone, which
 *              deleting the device frees;
 *   shared     the blocks at least one other device maps too (a snapshot and its origin share
 *              every block neither has written since the snapshot).
 * mapped = exclusive + shared. What these mean for an image (its chain of layer devices) and an
 * activation is the views' business (daemon/views.h, docs/cli.md).
 *
 * Cost: `thin_ls --metadata-snap -o DEV,MAPPED_BYTES,EXCLUSIVE_BYTES,SHARED_BYTES` walks every
 * mapping of every device in a metadata snapshot of the pool (thin_metadata_snap_exec): its time
 * grows with the pool's mapped blocks (milliseconds on a small pool, seconds with millions of
 * mapped blocks) and it holds the pool's single metadata snapshot while it runs. So the figures
 * are kept, in memory and (when the caller names one) in a cache file, with the fingerprint
 * of the pool they were read from:
 *   - the thin-pool's status: transaction id and used data blocks (a write that provisions a
 *     block, a copy-on-write of a shared block and a discard that frees a block all move the
 *     used data blocks). Not the used metadata blocks: reading the figures reserves and
 *     releases a metadata snapshot, which moves them, so every reading would look like a
 *     change;
 *   - thinimg's device rows of the pool: how many and their last change (a snapshot taken or a
 *     device deleted changes sharing without moving the used blocks).
 * A listing whose fingerprint matches uses the kept figures and runs no thin_ls. What the
 * fingerprint cannot see (a discard of a block another device still maps, devices made by
 * another tool) is bounded in age: figures older than THIN_USAGE_MAX_AGE_MS are read again.
 * A long-lived process (the daemon, asked by a monitor every second while VMs write) runs
 * thin_ls at most once per thin_usage_min_run_ms (THIN_USAGE_MIN_RUN_MS) and answers with the
 * last figures in between, even when the pool changed: their read_ms says how old they are.
 * Each CLI listing is a process of its own and reads a changed pool at once.
 *
 * Never fails a listing: when the figures cannot be read (no device-mapper, the pool not
 * active, not root, thin_ls not installed, output that does not parse) the usage is not ok,
 * says why, and thin_usage_find() finds nothing.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "util/buf.h"
#include "util/err.h"

/* Figures kept this long at most, whatever the fingerprint says (see above). */
#define THIN_USAGE_MAX_AGE_MS (10 * 60 * 1000)
/* One process runs thin_ls at most this often (see above); tests lower it. */
#define THIN_USAGE_MIN_RUN_MS 10000
extern int64_t thin_usage_min_run_ms;
/* Within one listing (one call per row), the fingerprint is read again at most this often. */
#define THIN_USAGE_RECHECK_MS 1000
/* thin_ls on a small pool answers in milliseconds; a metadata device that hangs must not hold
 * a listing longer than this. */
#define THIN_USAGE_TIMEOUT_MS 60000
/* The cache file's name in the state directory. */
#define THIN_USAGE_CACHE_FILE "pool-usage.cache"

struct thin_usage_dev {
    uint32_t id;
    uint64_t mapped, exclusive, shared; /* bytes */
};

/* What identifies the pool's state the figures were read from (see above). */
struct thin_usage_key {
    uint64_t transaction_id, data_used;
    int64_t rows, rows_changed_ms; /* -1: no database */
};

struct thin_usage {
    bool ok;                     /* false: no figures; why says why */
    char why[512];               /* "" when ok */
    bool cached;                 /* the figures were kept: thin_ls did not run for them */
    int64_t read_ms;             /* wall clock when thin_ls read them */
    struct thin_usage_dev *devs; /* sorted by id */
    size_t n;
};

/* Parses `thin_ls --no-headers -o DEV,MAPPED_BYTES,EXCLUSIVE_BYTES,SHARED_BYTES` output: one
 * line per device, four decimal numbers, each line ending in a newline. Strict, because a
 * figure read from the wrong column is worse than none: a line with another number of fields,
 * a field that is not a number or does not fit 64 bits, an id out of the thin id range or seen
 * twice, exclusive + shared != mapped, or a last line without its newline (cut output) is
 * -EBADMSG with e naming the line. Empty output is no devices. *out malloc'd, sorted by id. */
int thin_usage_parse(const char *text, size_t len, struct thin_usage_dev **out, size_t *n,
                     struct err *e);

/* The figures of pool's devices, kept or read now (see above). db (may be NULL) gives the
 * device rows of the fingerprint; cache_file (may be NULL: memory only, e.g. a daemon) keeps
 * them across processes (the CLI: <state-dir>/THIN_USAGE_CACHE_FILE; written atomically, a
 * file that does not read back is ignored). Thread-safe: one reader of the pool at a time.
 * Free out with thin_usage_free(). */
void thin_usage_get(struct db *db, const char *pool, const char *cache_file,
                    struct thin_usage *out);
/* One device's figures, without copying the rest (a listing asks once per row): 1 with *d
 * set; 0 the pool's metadata has no such device; -ENODATA no figures (why says why in both
 * cases). */
int thin_usage_dev_get(struct db *db, const char *pool, const char *cache_file, uint32_t id,
                       struct thin_usage_dev *d, char *why, size_t why_n);
const struct thin_usage_dev *thin_usage_find(const struct thin_usage *u, uint32_t id);
void thin_usage_free(struct thin_usage *u);

/* Test seams. thin_usage_runs counts the times the figures were read from the pool (thin_ls
 * ran) in this process. thin_usage_test_source, when set, replaces the kernel: key gives the
 * fingerprint, run the thin_ls output. thin_usage_forget() drops the figures kept in memory. */
struct thin_usage_source {
    int (*key)(struct db *db, const char *pool, struct thin_usage_key *k, struct err *e);
    int (*run)(const char *pool, struct buf *out, struct err *e);
};
extern const struct thin_usage_source *thin_usage_test_source;
extern unsigned long thin_usage_runs;
void thin_usage_forget(void);
