/*
 * pool.c: the pool manager; see pool.h for the setup rules.
 */
#include "dm/pool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "dm/exec.h"
#include "dm/pool_life.h"
#include "store/stmt.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/parse.h"
#include "util/timeutil.h"

#define MIB (1ull << 20)

const char *pool_action_name(enum pool_action a)
{
    switch (a) {
    case POOL_ACTION_NONE:
        return "none";
    case POOL_ACTION_EXISTING:
        return "existing";
    case POOL_ACTION_ADOPTED:
        return "adopted";
    case POOL_ACTION_REASSEMBLED:
        return "reassembled";
    case POOL_ACTION_CREATED:
        return "created";
    }
    return "unknown";
}

uint64_t pool_metadata_bytes(uint64_t data_bytes, uint32_t block_sectors)
{
    uint64_t block_bytes =
        (uint64_t)(block_sectors ? block_sectors : POOL_DEFAULT_BLOCK_SECTORS) * DM_SECTOR_SIZE;
    uint64_t rule = POOL_META_PER_BLOCK * (data_bytes / block_bytes);
    if (rule < POOL_META_KERNEL_MIN)
        rule = POOL_META_KERNEL_MIN;
    uint64_t m = rule * POOL_META_HEADROOM;
    if (m < POOL_META_DEFAULT_MIN)
        m = POOL_META_DEFAULT_MIN;
    m = (m + MIB - 1) / MIB * MIB;
    return m > POOL_META_MAX ? POOL_META_MAX : m;
}

/* ---- database record -------------------------------------------------------------------- */

struct pool_row {
    char origin[16];
    char data_file[4096], metadata_file[4096];
    uint64_t data_bytes, metadata_bytes;
    uint32_t block_sectors;
    uint64_t low_water_blocks;
    char features[128];
};

static int row_read(sqlite3_stmt *st, void *ud)
{
    struct pool_row *r_out = ud;
    snprintf(r_out->origin, sizeof(r_out->origin), "%s", sqlite3_column_text(st, 0));
    snprintf(r_out->data_file, sizeof(r_out->data_file), "%s", sqlite3_column_text(st, 1));
    snprintf(r_out->metadata_file, sizeof(r_out->metadata_file), "%s", sqlite3_column_text(st, 2));
    r_out->data_bytes = (uint64_t)sqlite3_column_int64(st, 3);
    r_out->metadata_bytes = (uint64_t)sqlite3_column_int64(st, 4);
    r_out->block_sectors = (uint32_t)sqlite3_column_int64(st, 5);
    r_out->low_water_blocks = (uint64_t)sqlite3_column_int64(st, 6);
    snprintf(r_out->features, sizeof(r_out->features), "%s", sqlite3_column_text(st, 7));
    return 0;
}

static int row_get(struct db *db, const char *name, struct pool_row *r_out)
{
    memset(r_out, 0, sizeof(*r_out));
    int r = db_query_one(db,
                         "SELECT origin, COALESCE(data_file,''), COALESCE(metadata_file,''), "
                         "data_bytes, COALESCE(metadata_bytes,0), block_sectors, "
                         "low_water_blocks, features FROM pools WHERE name=?",
                         row_read, r_out, DB_TEXT(name));
    return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

static int row_put(struct db *db, const char *name, const struct pool_row *p)
{
    int64_t now = now_ms();
    return db_run_tx(
        db,
        "INSERT INTO pools(name, origin, data_file, metadata_file, data_bytes,"
        " metadata_bytes, block_sectors, low_water_blocks, features, created_at_ms,"
        " updated_at_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(name) DO UPDATE SET origin=excluded.origin,"
        " data_file=excluded.data_file, metadata_file=excluded.metadata_file,"
        " data_bytes=excluded.data_bytes, metadata_bytes=excluded.metadata_bytes,"
        " block_sectors=excluded.block_sectors, low_water_blocks=excluded.low_water_blocks,"
        " features=excluded.features, updated_at_ms=excluded.updated_at_ms",
        DB_TEXT(name), DB_TEXT(p->origin), DB_TEXT(p->data_file[0] ? p->data_file : NULL),
        DB_TEXT(p->metadata_file[0] ? p->metadata_file : NULL), DB_INT(p->data_bytes),
        p->metadata_bytes ? DB_INT(p->metadata_bytes) : DB_NULL(), DB_INT(p->block_sectors),
        DB_INT(p->low_water_blocks), DB_TEXT(p->features), DB_INT(now), DB_INT(now));
}

/* The low-water mark of a pool of `blocks` data blocks: with autoextend on, its threshold in
 * free blocks (pool_low_water_blocks()), so the kernel's event comes when autoextend should
 * grow; with autoextend off (or without a database), `otherwise`. */
static uint64_t low_water_for(struct db *db, const char *name, uint64_t blocks, uint64_t otherwise)
{
    struct pool_settings s;
    if (!db || pool_settings_get(db, name, &s) < 0 || s.autoextend_threshold_pct <= 0)
        return otherwise;
    return pool_low_water_blocks(s.autoextend_threshold_pct, blocks);
}

/* ---- kernel state ----------------------------------------------------------------------- */

static void dev_and_file(const char *majmin, char *dev, size_t dn, char *file, size_t fn)
{
    dev[0] = file[0] = '\0';
    /* A path as is; "major:minor" resolved to its node when sysfs knows it. */
    if (majmin[0] == '/' || block_dev_path(majmin, dev, dn) < 0)
        snprintf(dev, dn, "%s", majmin);
    if (loop_backing_file(dev, file, fn) < 0)
        file[0] = '\0';
}

int pool_get(struct db *db, const char *name, struct pool_info *info, struct err *e)
{
    memset(info, 0, sizeof(*info));
    if (!dm_name_valid(name))
        return err_set(e, -EINVAL, "invalid pool name \"%s\" (allowed: [A-Za-z0-9_.-])", name);
    snprintf(info->name, sizeof(info->name), "%s", name);
    int r = dm_available(e);
    if (r < 0)
        return r;
    if (db) {
        struct pool_row row;
        if (row_get(db, name, &row) == 0) {
            info->recorded = true;
            snprintf(info->origin, sizeof(info->origin), "%s", row.origin);
            snprintf(info->data_file, sizeof(info->data_file), "%s", row.data_file);
            snprintf(info->metadata_file, sizeof(info->metadata_file), "%s", row.metadata_file);
        }
    }
    struct dm_target_line t;
    r = dm_dev_table(name, &t, NULL);
    if (r == -ENXIO)
        return err_set(e, -ENXIO, "pool \"%s\" is not active; run `thinimg setup-pool`", name);
    if (r < 0)
        return err_set(e, r, "cannot read the table of pool \"%s\": %s", name, strerror(-r));
    if (strcmp(t.type, "thin-pool") != 0)
        return err_set(e, -EINVAL,
                       "device %s is a %s device, not a thin-pool; choose another "
                       "pool name (--pool)",
                       name, t.type);
    if (pool_table_parse(t.params, &info->table) < 0)
        return err_set(e, -EBADMSG, "cannot parse the table of pool \"%s\": %s", name, t.params);
    info->active = true;
    info->length_sectors = t.length;
    dev_and_file(info->table.metadata_dev, info->metadata_dev, sizeof(info->metadata_dev),
                 info->metadata_file, sizeof(info->metadata_file));
    dev_and_file(info->table.data_dev, info->data_dev, sizeof(info->data_dev), info->data_file,
                 sizeof(info->data_file));
    struct dm_target_line s;
    r = dm_dev_status(name, &s, e);
    if (r < 0)
        return r;
    if (pool_status_parse(s.params, &info->status) < 0)
        return err_set(e, -EBADMSG, "cannot parse the status of pool \"%s\": %s", name, s.params);
    return 0;
}

static int usable_space(const char *name, const struct pool_status *s, double max_data,
                        double max_meta, struct err *e);

int pool_check_usable(const char *name, const struct pool_status *s, const struct pool_limits *l,
                      struct err *e)
{
    double max_data = l && l->max_data_pct > 0 ? l->max_data_pct : POOL_DEFAULT_MAX_DATA_PCT;
    double max_meta = l && l->max_meta_pct > 0 ? l->max_meta_pct : POOL_DEFAULT_MAX_META_PCT;
    if (s->mode == POOL_MODE_FAIL || s->mode == POOL_MODE_ERROR)
        return err_set(e, -EHOSTDOWN,
                       "pool \"%s\" has failed (status \"%s\"): it errors all I/O. Stop thinimg, "
                       "check the kernel log (dmesg) for the cause, then deactivate the pool and "
                       "run `thinimg pool check` (thin_check) (see docs/dm.md, \"Fail\")",
                       name, pool_mode_name(s->mode));
    if (s->needs_check)
        return err_set(e, -EUCLEAN,
                       "pool \"%s\" needs_check: its metadata must be checked before it can be "
                       "written again. Stop thinimg, deactivate the pool's devices and the pool, "
                       "then run `thinimg pool check` (thin_check; it clears the flag when the "
                       "metadata is sound) and `thinimg setup-pool` (see docs/dm.md, "
                       "\"needs_check\")",
                       name);
    if (s->mode == POOL_MODE_RO) /* a pool that refuses (unhealthy), not a read-only state fs */
        return err_set(e, -EHOSTDOWN,
                       "pool \"%s\" is read-only (ro): its metadata cannot be changed (metadata "
                       "full, or loaded read_only). Check `thinimg status` for metadata usage; "
                       "if it is full, grow it online with `thinimg pool grow --metadata +SIZE`, "
                       "else reload the pool writable (see docs/dm.md, \"ro\")",
                       name);
    int r = usable_space(name, s, max_data, max_meta, e);
    if (r < 0) {
        char note[512];
        pool_autoextend_stuck_note(name, s, note, sizeof(note));
        if (note[0])
            err_prefix(e, "%s", note);
    }
    return r;
}

/* The space part of pool_check_usable(). */
static int usable_space(const char *name, const struct pool_status *s, double max_data,
                        double max_meta, struct err *e)
{
    if (s->mode == POOL_MODE_OUT_OF_DATA_SPACE)
        return err_set(e, -ENOSPC,
                       "pool \"%s\" is out of data space: writes to new blocks fail. Free space "
                       "with `thinimg gc --force` (deletes unused devices) or grow the pool with "
                       "`thinimg pool grow --data +SIZE` (see docs/dm.md, \"out_of_data_space\")",
                       name);
    if (pool_status_data_pct(s) > max_data)
        return err_set(e, -ENOSPC,
                       "pool \"%s\" data is %.1f%% used, over the limit of %.0f%%: free space "
                       "with `thinimg gc --force` or `thinimg pool grow --data +SIZE` (see "
                       "docs/dm.md, \"usage limits\")",
                       name, pool_status_data_pct(s), max_data);
    if (pool_status_meta_pct(s) > max_meta)
        return err_set(e, -ENOSPC,
                       "pool \"%s\" metadata is %.1f%% used, over the limit of %.0f%%: free "
                       "space with `thinimg gc --force` or `thinimg pool grow --metadata +SIZE` "
                       "(see docs/dm.md, \"usage limits\")",
                       name, pool_status_meta_pct(s), max_meta);
    return 0;
}

int pool_ensure_usable(const char *name, const struct pool_limits *l, struct err *e)
{
    struct pool_info info;
    int r = pool_get(NULL, name, &info, e);
    if (r < 0)
        return r;
    return pool_check_usable(name, &info.status, l, e);
}

static int check_before_assembly(struct db *db, const char *name, const char *meta_dev,
                                 const char *meta_file, struct err *e);

/* ---- setup ------------------------------------------------------------------------------ */

/* Preallocates path.tmp; the caller renames it into place once every file is complete, so a
 * failed preallocation (ENOSPC) never leaves a short file that would later look like pool
 * data. The partial temp file is our own scratch, not a device: removing it is not cleanup
 * of a failed device. */
static int preallocate_tmp(const char *path, uint64_t bytes, struct err *e)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    _cleanup_close_ int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(e, neg_errno(), "cannot create pool file %s: %s", tmp, strerror(errno));
    int r = posix_fallocate(fd, 0, (off_t)bytes);
    if (r == 0 && fsync(fd) < 0)
        r = errno;
    if (r != 0) {
        unlink(tmp);
        return err_set(e, -r,
                       "cannot preallocate %" PRIu64 " bytes for %s: %s (free space on "
                       "its file system?)",
                       bytes, path, strerror(r));
    }
    return 0;
}

static int install_tmp(const char *path, struct err *e)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (rename(tmp, path) < 0)
        return err_set(e, neg_errno(), "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    return fsync_parent_dir(path);
}

static int bind_loop(const char *file, char *dev, size_t n, bool *dio, struct err *e)
{
    int r = loop_find(file, dev, n);
    if (r < 0)
        return err_set(e, r, "cannot look for loop devices bound to %s: %s", file, strerror(-r));
    if (r > 0) {
        log_info("reusing loop device", "dev=%s file=%s", dev, file);
        if (dio)
            *dio = false;
        return 0;
    }
    return loop_attach(file, false, dev, n, dio, e);
}

static int file_size(const char *path, uint64_t *out)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return neg_errno();
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return -EINVAL;
    *out = (uint64_t)st.st_size;
    return 0;
}

int pool_setup(struct db *db, const struct pool_config *cfg, struct pool_info *info, struct err *e)
{
    memset(info, 0, sizeof(*info));
    const char *name = cfg->name;
    if (!dm_name_valid(name))
        return err_set(e, -EINVAL,
                       "invalid pool name \"%s\" (allowed: [A-Za-z0-9_.-], at most "
                       "%d bytes)",
                       name ? name : "", DM_NAME_MAX);
    int r = dm_available(e);
    if (r < 0)
        return r;
    struct pool_row row;
    r = row_get(db, name, &row);
    bool recorded = r == 0;
    if (r < 0 && r != -ENOENT)
        return err_set(e, r, "cannot read pool record: %s", db_errmsg(db));

    r = dm_dev_exists(name);
    if (r < 0)
        return err_set(e, r, "cannot query device %s: %s", name, strerror(-r));
    if (r > 0) {
        /* Active: use it as is; record it when it is someone else's. */
        r = pool_get(db, name, info, e);
        if (r < 0)
            return r;
        if (!recorded) {
            struct pool_row nr = {0};
            snprintf(nr.origin, sizeof(nr.origin), "adopted");
            snprintf(nr.data_file, sizeof(nr.data_file), "%s", info->data_file);
            snprintf(nr.metadata_file, sizeof(nr.metadata_file), "%s", info->metadata_file);
            nr.data_bytes = info->length_sectors * DM_SECTOR_SIZE;
            nr.block_sectors = (uint32_t)info->table.block_sectors;
            nr.low_water_blocks = info->table.low_water_blocks;
            int k = snprintf(nr.features, sizeof(nr.features), "%u", info->table.n_features);
            for (unsigned i = 0; i < info->table.n_features; i++)
                k += snprintf(nr.features + k, sizeof(nr.features) - (size_t)k, " %s",
                              info->table.features[i]);
            r = row_put(db, name, &nr);
            if (r < 0)
                return err_set(e, r, "cannot record adopted pool %s: %s", name, db_errmsg(db));
            info->recorded = true;
            snprintf(info->origin, sizeof(info->origin), "adopted");
            info->action = POOL_ACTION_ADOPTED;
            log_info("adopted existing pool", "pool=%s block_sectors=%" PRIu64 " features=%s", name,
                     info->table.block_sectors, nr.features);
            if (!pool_table_has_feature(&info->table, "error_if_no_space"))
                log_warn("adopted pool queues I/O when full (no error_if_no_space): writers may "
                         "hang up to 60 s when it fills",
                         "pool=%s", name);
        } else {
            info->action = POOL_ACTION_EXISTING;
        }
        return pool_check_usable(name, &info->status, NULL, e);
    }

    if (recorded && !strcmp(row.origin, "adopted") && !cfg->data_file && !cfg->metadata_file)
        return err_set(e, -ENOENT,
                       "pool \"%s\" was made by someone else (adopted) and is not active; "
                       "recreate it the way it was made, or pass --data-file and "
                       "--metadata-file to let thinimg reassemble it from its files",
                       name);

    /* Files: flag > record > default. */
    char data_file[4096], meta_file[4096];
    if (cfg->data_file)
        snprintf(data_file, sizeof(data_file), "%s", cfg->data_file);
    else if (recorded && row.data_file[0])
        snprintf(data_file, sizeof(data_file), "%s", row.data_file);
    else
        snprintf(data_file, sizeof(data_file), "%s/%s-data.img", cfg->pool_dir, name);
    if (cfg->metadata_file)
        snprintf(meta_file, sizeof(meta_file), "%s", cfg->metadata_file);
    else if (recorded && row.metadata_file[0])
        snprintf(meta_file, sizeof(meta_file), "%s", row.metadata_file);
    else
        snprintf(meta_file, sizeof(meta_file), "%s/%s-meta.img", cfg->pool_dir, name);

    uint64_t data_size = 0, meta_size = 0;
    bool have_data = file_size(data_file, &data_size) == 0;
    bool have_meta = file_size(meta_file, &meta_size) == 0;
    if (have_data != have_meta)
        return err_set(e, -EEXIST,
                       "pool \"%s\": %s exists but %s does not; refusing to create a pool over "
                       "existing data. Restore the missing file, or move the other one away to "
                       "start an empty pool",
                       name, have_data ? data_file : meta_file, have_data ? meta_file : data_file);

    if (!have_data && recorded) {
        int64_t live = 0;
        db_query_int(db,
                     "SELECT COUNT(*) FROM devices WHERE pool=? AND state NOT IN "
                     "('deleted','foreign')",
                     &live, DB_TEXT(name));
        if (live > 0)
            return err_set(e, -ENOENT,
                           "pool \"%s\": its files %s and %s are missing but the database "
                           "records %lld devices in it. If they live on a file system that is "
                           "not mounted, mount it and retry; thinimg does not start an empty "
                           "pool over recorded devices",
                           name, data_file, meta_file, (long long)live);
    }

    struct pool_row p = {0};
    snprintf(p.data_file, sizeof(p.data_file), "%s", data_file);
    snprintf(p.metadata_file, sizeof(p.metadata_file), "%s", meta_file);
    enum pool_action action;
    if (have_data) {
        /* Reassemble with the recorded table; without a record, with the given parameters
         * (the kernel refuses a block size that differs from what the metadata says). */
        action = POOL_ACTION_REASSEMBLED;
        snprintf(p.origin, sizeof(p.origin), "%s", recorded ? row.origin : "created");
        p.data_bytes = data_size;
        p.metadata_bytes = meta_size;
        p.block_sectors =
            recorded ? row.block_sectors
                     : (cfg->block_sectors ? cfg->block_sectors : POOL_DEFAULT_BLOCK_SECTORS);
        if (recorded) {
            p.low_water_blocks = row.low_water_blocks;
            snprintf(p.features, sizeof(p.features), "%s", row.features);
        }
    } else {
        action = POOL_ACTION_CREATED;
        snprintf(p.origin, sizeof(p.origin), "created");
        p.data_bytes = cfg->data_bytes ? cfg->data_bytes
                       : recorded      ? row.data_bytes
                                       : POOL_DEFAULT_DATA_BYTES;
        p.block_sectors = cfg->block_sectors ? cfg->block_sectors : POOL_DEFAULT_BLOCK_SECTORS;
        p.metadata_bytes = cfg->metadata_bytes ? cfg->metadata_bytes
                                               : pool_metadata_bytes(p.data_bytes, p.block_sectors);
    }
    if (p.block_sectors < POOL_BLOCK_SECTORS_MIN || p.block_sectors > POOL_BLOCK_SECTORS_MAX ||
        p.block_sectors % POOL_BLOCK_SECTORS_MIN)
        return err_set(e, -EINVAL,
                       "block size %u sectors is not a multiple of 64 KiB between "
                       "64 KiB and 1 GiB",
                       p.block_sectors);
    uint64_t block_bytes = (uint64_t)p.block_sectors * DM_SECTOR_SIZE;
    uint64_t blocks = p.data_bytes / block_bytes;
    if (blocks == 0)
        return err_set(e, -EINVAL,
                       "data size %" PRIu64 " is smaller than one block (%" PRIu64 " bytes)",
                       p.data_bytes, block_bytes);
    if (p.metadata_bytes < POOL_META_KERNEL_MIN && action == POOL_ACTION_CREATED)
        return err_set(e, -EINVAL,
                       "metadata size %" PRIu64 " is below the kernel's minimum of "
                       "2 MiB",
                       p.metadata_bytes);
    if (!p.features[0]) {
        double lw = cfg->low_water > 0 ? cfg->low_water : POOL_DEFAULT_LOW_WATER;
        if (lw >= 1.0)
            return err_set(e, -EINVAL, "low-water fraction %.3f must be below 1", lw);
        p.low_water_blocks = (uint64_t)ceil(lw * (double)blocks);
        snprintf(p.features, sizeof(p.features), "%s", POOL_FEATURES);
    }
    p.low_water_blocks = low_water_for(db, name, blocks, p.low_water_blocks);

    /* Record first: a crash after the files exist reassembles with these parameters. */
    r = row_put(db, name, &p);
    if (r < 0)
        return err_set(e, r, "cannot record pool %s: %s", name, db_errmsg(db));
    if (action == POOL_ACTION_CREATED) {
        char *dir = strdup(data_file);
        if (!dir)
            return -ENOMEM;
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            r = mkdir_p(dir, 0700);
        }
        free(dir);
        if (r < 0)
            return err_set(e, r, "cannot create the pool directory for %s: %s", data_file,
                           strerror(-r));
        if ((r = preallocate_tmp(meta_file, p.metadata_bytes, e)) < 0)
            return r;
        if ((r = preallocate_tmp(data_file, p.data_bytes, e)) < 0) {
            char tmp[4200];
            snprintf(tmp, sizeof(tmp), "%s.tmp", meta_file);
            unlink(tmp);
            return r;
        }
        if ((r = install_tmp(meta_file, e)) < 0 || (r = install_tmp(data_file, e)) < 0)
            return r;
        log_info("pool files created",
                 "pool=%s data=%s data_bytes=%" PRIu64 " metadata=%s metadata_bytes=%" PRIu64, name,
                 data_file, p.data_bytes, meta_file, p.metadata_bytes);
    }
    char meta_dev[LOOP_PATH_MAX], data_dev[LOOP_PATH_MAX];
    bool dio = false;
    if ((r = bind_loop(meta_file, meta_dev, sizeof(meta_dev), NULL, e)) < 0 ||
        (r = bind_loop(data_file, data_dev, sizeof(data_dev), &dio, e)) < 0)
        return r;
    /* Nothing holds the metadata now: check it before the kernel trusts it (LVM does the
     * same at every pool activation). */
    if (action == POOL_ACTION_REASSEMBLED &&
        (r = check_before_assembly(db, name, meta_dev, meta_file, e)) < 0)
        return r;
    char params[512];
    snprintf(params, sizeof(params), "%s %s %u %" PRIu64 " %s", meta_dev, data_dev, p.block_sectors,
             p.low_water_blocks, p.features);
    uint64_t length = blocks * p.block_sectors;
    r = dm_dev_create(name, length, "thin-pool", params, false, e);
    if (r < 0)
        return err_prefix(e, "pool \"%s\" (%s)", name, params);
    log_info(action == POOL_ACTION_CREATED ? "pool created" : "pool reassembled",
             "pool=%s table=%s sectors=%" PRIu64, name, params, length);
    r = pool_get(db, name, info, e);
    if (r < 0)
        return r;
    info->action = action;
    info->data_dio = dio;
    return pool_check_usable(name, &info->status, NULL, e);
}

/* ---- check (thin_check) ------------------------------------------------------------------ */

/* thin_check's progress lines ("examining superblock", "checking space map counts"). */
static bool progress_line(const char *l, size_t len)
{
    return (len >= 9 && !strncmp(l, "examining", 9)) || (len >= 8 && !strncmp(l, "checking", 8));
}

/* Append up to `room` lines of text to verdict (joined with "; "): problem lines only
 * (indented) when indented, else any non-progress line. Returns how many were added. */
static int verdict_lines(const char *text, bool indented, int room, char *verdict, size_t n)
{
    int added = 0;
    for (const char *l = text ? text : ""; *l && added < room;) {
        size_t len = strcspn(l, "\n");
        bool ind = l[0] == ' ' || l[0] == '\t';
        const char *t = l;
        size_t tl = len;
        while (tl && (*t == ' ' || *t == '\t'))
            t++, tl--;
        if (tl && (indented ? ind : !progress_line(t, tl))) {
            size_t used = strlen(verdict);
            snprintf(verdict + used, n - used, "%s%.*s", used ? "; " : "", (int)tl, t);
            added++;
        }
        l += len + (l[len] == '\n');
    }
    return added;
}

void pool_check_verdict(const char *out, const char *errout, char *verdict, size_t n)
{
    if (!n)
        return;
    verdict[0] = '\0';
    if (verdict_lines(errout, true, POOL_CHECK_VERDICT_LINES, verdict, n) > 0)
        return;
    int k = verdict_lines(errout, false, POOL_CHECK_VERDICT_LINES, verdict, n);
    verdict_lines(out, false, POOL_CHECK_VERDICT_LINES - k, verdict, n);
}

/* True when the first metadata block is all zeroes (never formatted). */
static int superblock_zero(const char *dev, bool *zero)
{
    _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    unsigned char b[POOL_META_BLOCK_BYTES];
    ssize_t got = pread(fd, b, sizeof(b), 0);
    if (got < 0)
        return neg_errno();
    *zero = true;
    for (ssize_t i = 0; i < got; i++)
        if (b[i]) {
            *zero = false;
            break;
        }
    return 0;
}

int pool_metadata_check(const char *dev, bool clear_needs_check, struct pool_check *c,
                        struct err *e)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->device, sizeof(c->device), "%s", dev);
    bool zero = false;
    int r = superblock_zero(dev, &zero);
    if (r < 0)
        return err_set(e, r, "cannot read the metadata superblock of %s: %s", dev, strerror(-r));
    if (zero) {
        c->fresh = c->passed = true;
        return 0;
    }
    char *argv[] = {POOL_THIN_CHECK, (char *)dev, NULL, NULL};
    if (clear_needs_check) {
        argv[1] = "--clear-needs-check-flag";
        argv[2] = (char *)dev;
    }
    _cleanup_buf_ struct buf out = BUF_INIT, errout = BUF_INIT;
    int64_t t0 = mono_ms();
    r = dm_exec(argv, POOL_CHECK_TIMEOUT_MS, &out, &errout, e);
    if (r < 0)
        return err_prefix(e, "%s %s", POOL_THIN_CHECK, dev);
    /* exec failed in the child (dm_exec's own words): the tool is not installed */
    if (r == 127 && errout.data && strstr(errout.data, "cannot run " POOL_THIN_CHECK))
        return 0;
    c->ran = true;
    c->status = r;
    c->passed = r == 0;
    pool_check_verdict(out.data, errout.data, c->verdict, sizeof(c->verdict));
    log_info("thin_check done", "dev=%s status=%d ms=%" PRId64 " verdict=\"%s\"", dev, r,
             mono_ms() - t0, c->verdict);
    if (!c->passed)
        log_warn("thin_check output", "dev=%s stdout=\"%s\" stderr=\"%s\"", dev,
                 out.data ? out.data : "", errout.data ? errout.data : "");
    return 0;
}

/* The refusal for metadata thin_check found damaged. */
static int check_failed(const char *name, const struct pool_check *c, struct err *e)
{
    return err_set(e, -EUCLEAN,
                   "pool \"%s\": thin_check found its metadata damaged (%s, exit %d): %s. "
                   "Nothing was loaded. Run `thinimg pool repair`: it repairs the metadata (or "
                   "restores the newest backup), keeps the damaged file aside and reports what "
                   "was lost (see docs/dm.md, \"Damaged metadata\")",
                   name, c->device, c->status, c->verdict[0] ? c->verdict : "no details");
}

/* A missing thin_check is said once per process, not at every assembly. */
static void warn_no_thin_check(void)
{
    static bool said;
    if (!said)
        log_warn("thin_check not found: pool metadata is not checked before assembly; "
                 "install thin-provisioning-tools",
                 "tool=%s", POOL_THIN_CHECK);
    said = true;
}

/* A check that ran goes into the pool's events (`status` shows the last one). */
static void record_check(struct db *db, const char *name, const struct pool_check *c,
                         const char *when)
{
    if (!db || !c->ran)
        return;
    struct pool_event ev = {.ok = c->passed};
    snprintf(ev.kind, sizeof(ev.kind), "check");
    snprintf(ev.detail, sizeof(ev.detail), "%s: thin_check %s exit %d%s%s", when, c->device,
             c->status, c->verdict[0] ? ": " : "", c->verdict);
    if (pool_event_add(db, name, &ev) < 0)
        log_warn("cannot record a pool check", "pool=%s", name);
}

/* Check before assembly: 0 to go on (passed, fresh, or no tool), else the refusal. */
static int check_before_assembly(struct db *db, const char *name, const char *meta_dev,
                                 const char *meta_file, struct err *e)
{
    struct pool_check c;
    int r = pool_metadata_check(meta_dev, false, &c, e);
    if (r < 0)
        return r;
    record_check(db, name, &c, "at assembly");
    int64_t live = 0;
    if (c.fresh && db &&
        db_query_int(db,
                     "SELECT COUNT(*) FROM devices WHERE pool=? AND state IN ('ready','creating')",
                     &live, DB_TEXT(name)) == 1 &&
        live > 0) /* blank metadata under recorded devices: wiped, not a create cut short */
        return err_set(e, -EUCLEAN,
                       "pool \"%s\": its metadata %s is blank (all zeroes) but the database "
                       "records %lld devices in it; loading it would start an empty pool. "
                       "Nothing was loaded. Run `thinimg pool repair` (it restores the newest "
                       "metadata backup) (see docs/dm.md, \"Damaged metadata\")",
                       name, meta_file, (long long)live);
    if (!c.ran && !c.fresh) {
        warn_no_thin_check();
        return 0;
    }
    if (!c.passed)
        return check_failed(name, &c, e);
    return 0;
}

int pool_offline_get(struct db *db, const char *name, const char *tool, const char *cmd,
                     struct pool_offline *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    if (!dm_name_valid(name))
        return err_set(e, -EINVAL, "invalid pool name \"%s\" (allowed: [A-Za-z0-9_.-])", name);
    /* Without device-mapper nothing can be active: the work is on the files alone. */
    if (dm_dev_exists(name) > 0)
        return err_set(e, -EBUSY,
                       "pool \"%s\" is active: %s needs its metadata offline, and thinimg stops "
                       "nothing by itself. Stop thinimg, remove the pool's devices and the pool "
                       "(dmsetup remove), then run `thinimg %s` again",
                       name, tool, cmd);
    struct pool_row row;
    int r = row_get(db, name, &row);
    if (r == -ENOENT)
        return err_set(e, -ENOENT, "no pool \"%s\" is recorded; run `thinimg setup-pool`", name);
    if (r < 0)
        return err_set(e, r, "cannot read pool record: %s", db_errmsg(db));
    if (!row.metadata_file[0])
        return err_set(e, -ENOENT,
                       "pool \"%s\" has no recorded metadata file (adopted on block devices): "
                       "run %s on its metadata device yourself",
                       name, tool);
    if (access(row.metadata_file, F_OK) < 0)
        return err_set(e, -ENOENT, "pool \"%s\": its metadata file %s is missing: %s", name,
                       row.metadata_file, strerror(errno));
    snprintf(out->metadata_file, sizeof(out->metadata_file), "%s", row.metadata_file);
    out->data_bytes = row.data_bytes;
    out->block_sectors = row.block_sectors;
    return 0;
}

int pool_check_offline(struct db *db, const char *name, struct pool_check *c, struct err *e)
{
    memset(c, 0, sizeof(*c));
    struct pool_offline row;
    int r = pool_offline_get(db, name, POOL_THIN_CHECK, "pool check", &row, e);
    if (r < 0)
        return r;
    char dev[LOOP_PATH_MAX];
    r = loop_find(row.metadata_file, dev, sizeof(dev));
    const char *target = r > 0 ? dev : row.metadata_file;
    r = pool_metadata_check(target, true, c, e);
    if (r < 0)
        return r;
    record_check(db, name, c, "pool check");
    if (!c->ran && !c->fresh)
        return err_set(e, -ENOPKG,
                       "%s is not installed: cannot check pool \"%s\"; install "
                       "thin-provisioning-tools",
                       POOL_THIN_CHECK, name);
    if (!c->passed)
        return check_failed(name, c, e);
    return 0;
}

/* ---- grow --------------------------------------------------------------------------------- */

int pool_size_arg_parse(const char *s, struct pool_size_arg *out)
{
    memset(out, 0, sizeof(*out));
    if (!s)
        return -EINVAL;
    bool rel = s[0] == '+';
    uint64_t v = 0;
    if (parse_size(s + rel, &v) < 0 || v == 0 || s[rel] == '+' || s[rel] == '-')
        return -EINVAL;
    out->set = true;
    out->relative = rel;
    out->bytes = v;
    return 0;
}

uint64_t pool_size_arg_target(const struct pool_size_arg *a, uint64_t current)
{
    if (!a->set)
        return current;
    if (!a->relative)
        return a->bytes;
    return current > UINT64_MAX - a->bytes ? UINT64_MAX : current + a->bytes;
}

static uint64_t round_up(uint64_t v, uint64_t unit)
{
    return v > UINT64_MAX - unit ? v / unit * unit : (v + unit - 1) / unit * unit;
}

/* The free space growing files on one file system must leave (see POOL_GROW_RESERVE_*). */
static int fs_room(const char *path, uint64_t *avail, uint64_t *reserve, dev_t *dev)
{
    struct statvfs sv;
    struct stat st;
    if (statvfs(path, &sv) < 0 || stat(path, &st) < 0)
        return neg_errno();
    *avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    uint64_t pct =
        (uint64_t)((double)sv.f_blocks * (double)sv.f_frsize * POOL_GROW_RESERVE_PCT / 100.0);
    *reserve = pct > POOL_GROW_RESERVE_MIN ? pct : POOL_GROW_RESERVE_MIN;
    *dev = st.st_dev;
    return 0;
}

/* Extend path to bytes: allocate the new range first without changing the size, then set
 * the size, so a failed allocation (ENOSPC) leaves the file exactly as it was. */
static int extend_file(const char *path, uint64_t bytes, struct err *e)
{
    _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, neg_errno(), "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return err_set(e, neg_errno(), "cannot stat %s: %s", path, strerror(errno));
    uint64_t old = (uint64_t)st.st_size;
    if (bytes <= old)
        return 0;
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)old, (off_t)(bytes - old)) < 0) {
        int r = neg_errno();
        if (ftruncate(fd, (off_t)old) < 0) /* frees what was allocated past the end */
            log_warn("cannot free a partial allocation", "file=%s err=%s", path, strerror(errno));
        return err_set(e, r, "cannot allocate %" PRIu64 " more bytes for %s: %s", bytes - old, path,
                       strerror(-r));
    }
    if (ftruncate(fd, (off_t)bytes) < 0 || fsync(fd) < 0)
        return err_set(e, neg_errno(), "cannot extend %s to %" PRIu64 " bytes: %s", path, bytes,
                       strerror(errno));
    log_info("pool file extended", "file=%s from=%" PRIu64 " to=%" PRIu64, path, old, bytes);
    return 0;
}

/* One backing device of the pool and what growing it takes. */
struct grow_side {
    const char *what; /* "data" / "metadata" */
    const char *dev;  /* /dev/loopN or a block device */
    const char *file; /* backing file, or "" */
    uint64_t dev_bytes, file_bytes, target;
};

static int grow_side_init(struct grow_side *g, const char *what, const char *dev, const char *file,
                          struct err *e)
{
    g->what = what;
    g->dev = dev;
    g->file = file;
    int r = dev_size_bytes(dev, &g->dev_bytes);
    if (r < 0)
        return err_set(e, r, "cannot read the size of the %s device %s: %s", what, dev,
                       strerror(-r));
    g->file_bytes = 0;
    if (file[0] && (r = dev_size_bytes(file, &g->file_bytes)) < 0)
        return err_set(e, r, "cannot read the size of %s: %s", file, strerror(-r));
    return 0;
}

/* Validate the requested target of one side; current: the size the pool uses now. */
static int grow_side_target(const char *name, struct grow_side *g, const struct pool_size_arg *a,
                            uint64_t current, uint64_t unit, struct err *e)
{
    if (!a->set) {
        g->target = 0; /* only what the device already has */
        return 0;
    }
    if (!g->file[0])
        return err_set(e, -EINVAL,
                       "pool \"%s\": the %s device %s is not a loop-backed file; grow the device "
                       "itself, then run `thinimg pool grow` without --%s to load its new size",
                       name, g->what, g->dev, g->what);
    g->target = round_up(pool_size_arg_target(a, current), unit);
    if (g->target < current)
        return err_set(e, -EINVAL,
                       "pool \"%s\": %s size %" PRIu64 " is smaller than the current %" PRIu64
                       " bytes; pools do not shrink",
                       name, g->what, g->target, current);
    return 0;
}

/* Metadata blocks the kernel uses of a device of that size (it ignores what is past about
 * 16 GiB; POOL_META_MAX stays below that). */
static uint64_t meta_blocks(uint64_t dev_bytes)
{
    return (dev_bytes < POOL_META_MAX ? dev_bytes : POOL_META_MAX) / POOL_META_BLOCK_BYTES;
}

/* Record the grown pool (an adopted pool without a row has nothing to update). */
static int record_sizes(struct db *db, const char *name, uint64_t data_bytes, uint64_t meta_bytes,
                        uint64_t low_water)
{
    return db_run_tx(db,
                     "UPDATE pools SET data_bytes=?, metadata_bytes=?, low_water_blocks=?,"
                     " updated_at_ms=? WHERE name=?",
                     DB_INT(data_bytes), DB_INT(meta_bytes), DB_INT(low_water), DB_INT(now_ms()),
                     DB_TEXT(name));
}

/* Load the pool's table again with a new length and low-water mark, the rest as it is loaded
 * ("<meta> <data> <block> <low water> <features...>"), and switch to it (suspend/resume). */
static int reload_table(const char *name, uint64_t length, uint64_t low_water, struct err *e)
{
    struct dm_target_line t;
    int r = dm_dev_table(name, &t, e);
    if (r < 0)
        return r;
    char meta_tok[128], data_tok[128], block_tok[32], lw_tok[32];
    int off = 0;
    if (sscanf(t.params, "%127s %127s %31s %31s %n", meta_tok, data_tok, block_tok, lw_tok, &off) !=
        4)
        return err_set(e, -EBADMSG, "cannot parse the table of pool \"%s\": %s", name, t.params);
    char params[DM_PARAMS_MAX];
    snprintf(params, sizeof(params), "%s %s %s %" PRIu64 " %s", meta_tok, data_tok, block_tok,
             low_water, t.params + off);
    if ((r = dm_dev_reload(name, length, "thin-pool", params, e)) < 0)
        return err_prefix(e, "pool \"%s\": loading %" PRIu64 " sectors", name, length);
    return 0;
}

int pool_apply_low_water(struct db *db, const char *name, uint64_t *before, uint64_t *after,
                         struct err *e)
{
    struct pool_info info;
    int r = pool_get(db, name, &info, e);
    if (r < 0)
        return r;
    uint64_t blocks = info.length_sectors / info.table.block_sectors;
    *before = info.table.low_water_blocks;
    *after = low_water_for(db, name, blocks, info.table.low_water_blocks);
    if (*after == *before)
        return 0;
    if (info.status.mode == POOL_MODE_FAIL || info.status.mode == POOL_MODE_ERROR)
        return err_set(e, -EHOSTDOWN,
                       "pool \"%s\" has failed (status \"%s\"): its table is left as it is", name,
                       pool_mode_name(info.status.mode));
    if ((r = reload_table(name, info.length_sectors, *after, e)) < 0)
        return r;
    log_info("pool low-water mark set from the autoextend threshold",
             "pool=%s low_water_blocks=%" PRIu64 "->%" PRIu64 " data_blocks=%" PRIu64, name,
             *before, *after, blocks);
    if ((r = db_run_tx(db, "UPDATE pools SET low_water_blocks=?, updated_at_ms=? WHERE name=?",
                       DB_INT(*after), DB_INT(now_ms()), DB_TEXT(name))) < 0)
        return err_set(e, r, "pool \"%s\": the low-water mark was loaded but not recorded: %s",
                       name, db_errmsg(db));
    return 1;
}

int pool_grow(struct db *db, const char *name, const struct pool_grow_request *rq,
              struct pool_grow_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    struct pool_info info;
    int r = pool_get(db, name, &info, e);
    if (r < 0)
        return r;
    const struct pool_status *s = &info.status;
    if (s->mode == POOL_MODE_FAIL || s->mode == POOL_MODE_ERROR)
        return err_set(e, -EHOSTDOWN,
                       "pool \"%s\" has failed (status \"%s\"): it cannot be grown; see "
                       "docs/dm.md, \"Fail\"",
                       name, pool_mode_name(s->mode));
    if (s->needs_check) /* the kernel refuses to grow a pool until it is checked */
        return err_set(e, -EUCLEAN,
                       "pool \"%s\" needs_check: the kernel grows it only after its metadata is "
                       "checked; take it offline and run `thinimg pool check` (see docs/dm.md, "
                       "\"needs_check\")",
                       name);
    uint64_t block_bytes = info.table.block_sectors * DM_SECTOR_SIZE;
    struct grow_side d, m;
    if ((r = grow_side_init(&d, "data", info.data_dev, info.data_file, e)) < 0 ||
        (r = grow_side_init(&m, "metadata", info.metadata_dev, info.metadata_file, e)) < 0)
        return r;
    res->data_before = info.length_sectors * DM_SECTOR_SIZE;
    res->meta_before = m.dev_bytes;
    res->low_water_before = res->low_water_after = info.table.low_water_blocks;
    if ((r = grow_side_target(name, &d, &rq->data, res->data_before, block_bytes, e)) < 0 ||
        (r = grow_side_target(name, &m, &rq->metadata, res->meta_before, MIB, e)) < 0)
        return r;
    if (m.target > POOL_META_MAX)
        return err_set(e, -EINVAL,
                       "pool \"%s\": metadata size %" PRIu64 " is beyond the %" PRIu64
                       " bytes the kernel uses (it ignores metadata past about 16 GiB)",
                       name, m.target, (uint64_t)POOL_META_MAX);

    /* Room on the backing file systems, both files counted when they share one. */
    uint64_t need_d = d.target > d.file_bytes ? d.target - d.file_bytes : 0;
    uint64_t need_m = m.target > m.file_bytes ? m.target - m.file_bytes : 0;
    struct grow_side *sides[2] = {&d, &m};
    uint64_t needs[2] = {need_d, need_m};
    dev_t fsdev[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        if (!needs[i])
            continue;
        uint64_t avail, reserve;
        if ((r = fs_room(sides[i]->file, &avail, &reserve, &fsdev[i])) < 0)
            return err_set(e, r, "cannot read free space for %s: %s", sides[i]->file, strerror(-r));
        uint64_t need = needs[i] + (i == 1 && needs[0] && fsdev[0] == fsdev[1] ? needs[0] : 0);
        if (avail < need || avail - need < reserve)
            return err_set(e, -ENOSPC,
                           "pool \"%s\": growing %s by %" PRIu64 " bytes needs %" PRIu64
                           " bytes free on its file system plus a reserve of %" PRIu64
                           " (%.0f%%, at least %" PRIu64 " MiB), and %" PRIu64
                           " are free; free space there or grow by less",
                           name, sides[i]->file, needs[i], need, reserve, POOL_GROW_RESERVE_PCT,
                           (uint64_t)(POOL_GROW_RESERVE_MIN / MIB), avail);
    }
    /* Extend the files, then let the loop devices see them (also a file someone else
     * extended: the loop device keeps its old size until told). */
    for (int i = 0; i < 2; i++) {
        if (!sides[i]->file[0] || strncmp(sides[i]->dev, "/dev/loop", 9) != 0)
            continue;
        if (needs[i] && (r = extend_file(sides[i]->file, sides[i]->target, e)) < 0)
            return r;
        if ((r = loop_refresh_size(sides[i]->dev, &sides[i]->dev_bytes, e)) < 0)
            return r;
    }
    /* The pool maps whole blocks of what the data device now has. */
    uint64_t new_blocks = d.dev_bytes / block_bytes;
    uint64_t old_blocks = info.length_sectors / info.table.block_sectors;
    if (new_blocks < old_blocks)
        new_blocks = old_blocks; /* never shrink, whatever the device says */
    res->data_after = new_blocks * block_bytes;
    res->meta_after = m.dev_bytes;
    if (new_blocks == old_blocks && meta_blocks(m.dev_bytes) <= s->meta_total)
        return 0; /* nothing new to load */

    /* With autoextend on, the low-water mark is its threshold of the new size; else it stays
     * the same fraction of the pool. */
    uint64_t scaled = old_blocks ? (uint64_t)ceil((double)info.table.low_water_blocks *
                                                  (double)new_blocks / (double)old_blocks)
                                 : info.table.low_water_blocks;
    res->low_water_after = low_water_for(db, name, new_blocks, scaled);
    uint64_t length = new_blocks * info.table.block_sectors;
    if ((r = reload_table(name, length, res->low_water_after, e)) < 0)
        return r;
    res->reloaded = true;
    log_info("pool grown",
             "pool=%s data_bytes=%" PRIu64 "->%" PRIu64 " metadata_bytes=%" PRIu64 "->%" PRIu64
             " low_water=%" PRIu64,
             name, res->data_before, res->data_after, res->meta_before, res->meta_after,
             res->low_water_after);
    /* What the kernel says it has now. */
    struct pool_info after;
    if ((r = pool_get(NULL, name, &after, e)) < 0)
        return r;
    if (after.status.data_total != new_blocks)
        return err_set(e, -EIO,
                       "pool \"%s\" was reloaded with %" PRIu64 " data blocks but reports %" PRIu64
                       "; see the kernel log (dmesg)",
                       name, new_blocks, after.status.data_total);
    if (after.status.meta_total < meta_blocks(m.dev_bytes))
        return err_set(e, -EIO,
                       "pool \"%s\" did not take the larger metadata device (%" PRIu64
                       " blocks of 4 KiB); see the kernel log (dmesg)",
                       name, after.status.meta_total);
    if (db && (r = record_sizes(db, name, d.file[0] ? d.dev_bytes : res->data_after, m.dev_bytes,
                                res->low_water_after)) < 0)
        return err_set(e, r, "pool \"%s\" was grown but its record was not updated: %s", name,
                       db_errmsg(db));
    struct pool_event ev = {.ok = true,
                            .data_before = res->data_before,
                            .data_after = res->data_after,
                            .meta_before = res->meta_before,
                            .meta_after = res->meta_after};
    snprintf(ev.kind, sizeof(ev.kind), "grow");
    snprintf(ev.detail, sizeof(ev.detail), "%s", rq->reason ? rq->reason : "pool grow");
    if (db && pool_event_add(db, name, &ev) < 0)
        log_warn("cannot record the growth in the pool's events", "pool=%s", name);
    return 0;
}
