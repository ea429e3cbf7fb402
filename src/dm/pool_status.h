/*
 * pool_status.h: parsers for the status lines of the `thin-pool` and `thin` targets, and for
 * the `thin-pool` table line.
 *
 * The formats are the kernel's (Documentation/admin-guide/device-mapper/thin-provisioning.rst,
 * drivers/md/dm-thin.c pool_status/thin_status):
 *
 *   thin-pool status: <transaction id> <used metadata blocks>/<total metadata blocks>
 *                     <used data blocks>/<total data blocks> <held metadata root>|-
 *                     ro|rw|out_of_data_space [no_]discard_passdown|ignore_discard
 *                     error_if_no_space|queue_if_no_space needs_check|-
 *                     <metadata low watermark>
 *                     or the single word "Fail" (pool failed, no I/O at all)
 *                     or "Error" (the kernel could not read its own metadata)
 *   thin status:      <nr mapped sectors> <highest mapped sector>|-   or "-" (device being
 *                     deleted) or "Fail" / "Error"
 *   thin-pool table:  <metadata dev> <data dev> <data block size (sectors)> <low water mark
 *                     (blocks)> [<#features> <feature>...]
 *
 * Older kernels omit trailing fields (the metadata low watermark, needs_check); those parse
 * with the field marked absent. Unknown trailing words are ignored (future kernels). Anything
 * else malformed is -EBADMSG. The parsers never allocate and accept any bytes (fuzzed:
 * fuzz/fuzz_pool_status.c).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Metadata geometry, in the units the status counts: 4 KiB metadata blocks, and the most
 * metadata the kernel uses (it ignores what is past about 16 GiB; this stays below that). The
 * pool manager sizes and grows metadata with these, autoextend plans with them. */
#define POOL_META_BLOCK_BYTES 4096u
#define POOL_META_MAX         ((16ull << 30) - (256ull << 20))

enum pool_mode {
    POOL_MODE_RW = 0,
    POOL_MODE_RO,                /* metadata read-only: no new devices, no provisioning */
    POOL_MODE_OUT_OF_DATA_SPACE, /* data full: writes to unprovisioned blocks fail or queue */
    POOL_MODE_FAIL,              /* "Fail": the pool errors all I/O */
    POOL_MODE_ERROR,             /* "Error": status could not be read from the metadata */
};

enum pool_discard { POOL_DISCARD_PASSDOWN = 0, POOL_DISCARD_NO_PASSDOWN, POOL_DISCARD_IGNORE };

struct pool_status {
    enum pool_mode mode;
    uint64_t transaction_id;
    uint64_t meta_used, meta_total; /* metadata blocks (4 KiB each) */
    uint64_t data_used, data_total; /* data blocks (pool block size each) */
    bool has_held_root;
    uint64_t held_root; /* metadata snapshot root block, when has_held_root */
    enum pool_discard discard;
    bool error_if_no_space; /* false: queue_if_no_space */
    bool needs_check;
    bool has_low_watermark;
    uint64_t meta_low_watermark; /* metadata blocks */
};

/* Parse a thin-pool status line. For "Fail"/"Error" only mode is set. 0 or -EBADMSG. */
int pool_status_parse(const char *line, struct pool_status *out);

/* Names for printing: "rw", "ro", "out_of_data_space", "Fail", "Error". */
const char *pool_mode_name(enum pool_mode m);
const char *pool_discard_name(enum pool_discard d);

/* Usage in percent (0..100) of the data and metadata space; 0 when total is 0. */
double pool_status_data_pct(const struct pool_status *s);
double pool_status_meta_pct(const struct pool_status *s);

struct thin_status {
    bool failed;   /* "Fail" or "Error" */
    bool deleting; /* "-": the thin device is being deleted / has no pool device */
    uint64_t mapped_sectors;
    bool has_highest;
    uint64_t highest_sector;
};

int thin_status_parse(const char *line, struct thin_status *out);

#define POOL_TABLE_DEV_MAX      64
#define POOL_TABLE_FEATURES_MAX 8

struct pool_table {
    char metadata_dev[POOL_TABLE_DEV_MAX]; /* "major:minor" or a path, as in the table */
    char data_dev[POOL_TABLE_DEV_MAX];
    uint64_t block_sectors;
    uint64_t low_water_blocks;
    unsigned n_features;
    char features[POOL_TABLE_FEATURES_MAX][32];
};

/* Parse a thin-pool table line (without start/length/type). 0 or -EBADMSG. */
int pool_table_parse(const char *line, struct pool_table *out);
/* Whether the table has the feature word (e.g. "error_if_no_space"). */
bool pool_table_has_feature(const struct pool_table *t, const char *feature);
