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
#include <unistd.h>

#include "store/stmt.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"
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

int pool_check_usable(const char *name, const struct pool_status *s, const struct pool_limits *l,
                      struct err *e)
{
    double max_data = l && l->max_data_pct > 0 ? l->max_data_pct : POOL_DEFAULT_MAX_DATA_PCT;
    double max_meta = l && l->max_meta_pct > 0 ? l->max_meta_pct : POOL_DEFAULT_MAX_META_PCT;
    if (s->mode == POOL_MODE_FAIL || s->mode == POOL_MODE_ERROR)
        return err_set(e, -EHOSTDOWN,
                       "pool \"%s\" has failed (status \"%s\"): it errors all I/O. Stop thinimg, "
                       "check the kernel log (dmesg) for the cause, then deactivate the pool and "
                       "run: thin_check <metadata device> (see docs/dm.md, \"Fail\")",
                       name, pool_mode_name(s->mode));
    if (s->needs_check)
        return err_set(e, -EUCLEAN,
                       "pool \"%s\" needs_check: its metadata must be checked before it can be "
                       "written again. Stop thinimg, deactivate the pool's devices and the pool, "
                       "then run: thin_check <metadata device>, and thin_repair if it reports "
                       "damage (see docs/dm.md, \"needs_check\")",
                       name);
    if (s->mode == POOL_MODE_RO) /* a pool that refuses (unhealthy), not a read-only state fs */
        return err_set(e, -EHOSTDOWN,
                       "pool \"%s\" is read-only (ro): its metadata cannot be changed (metadata "
                       "full, or loaded read_only). Check `thinimg status` for metadata usage; "
                       "if it is full, stop thinimg and grow the metadata device, else reload "
                       "the pool writable (see docs/dm.md, \"ro\")",
                       name);
    if (s->mode == POOL_MODE_OUT_OF_DATA_SPACE)
        return err_set(e, -ENOSPC,
                       "pool \"%s\" is out of data space: writes to new blocks fail. Free space "
                       "with `thinimg gc --force` (deletes unused devices) or grow the data "
                       "device (see docs/dm.md, \"out_of_data_space\")",
                       name);
    if (pool_status_data_pct(s) > max_data)
        return err_set(e, -ENOSPC,
                       "pool \"%s\" data is %.1f%% used, over the limit of %.0f%%: free space "
                       "with `thinimg gc --force` or grow the pool (see docs/dm.md, \"usage "
                       "limits\")",
                       name, pool_status_data_pct(s), max_data);
    if (pool_status_meta_pct(s) > max_meta)
        return err_set(e, -ENOSPC,
                       "pool \"%s\" metadata is %.1f%% used, over the limit of %.0f%%: free "
                       "space with `thinimg gc --force` or grow the metadata device (see "
                       "docs/dm.md, \"usage limits\")",
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
