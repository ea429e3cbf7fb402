/*
 * pool_backup.c: metadata backups of a live pool (thin_dump of a metadata snapshot), kept
 * like LVM's archives; see pool_life.h.
 *
 * File names are "meta-<Unix ms, 15 digits>.xml": they sort by time as strings, so the newest
 * is the greatest name and pruning needs no parsing beyond the number. A dump is written to a
 * ".tmp" name, fsync'd and renamed, so a backup file is always complete.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "dm/pool.h"
#include "dm/pool_life.h"
#include "dm/thin.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/timeutil.h"

#define BACKUP_PREFIX "meta-"
#define BACKUP_SUFFIX ".xml"
/* XML bytes per metadata byte in use, generously: a mapping line is ~80 bytes and a 4 KiB
 * btree leaf holds up to ~250 mappings of 16 bytes. */
#define POOL_BACKUP_XML_FACTOR 8

int pool_backup_dir(const char *state_dir, const char *pool, char *out, size_t n)
{
    if ((size_t)snprintf(out, n, "%s/%s/%s", state_dir, POOL_BACKUP_SUBDIR, pool) >= n)
        return -ENAMETOOLONG;
    return 0;
}

static bool backup_name(const char *name, int64_t *at_ms)
{
    size_t len = strlen(name), pl = strlen(BACKUP_PREFIX), sl = strlen(BACKUP_SUFFIX);
    if (len <= pl + sl || strncmp(name, BACKUP_PREFIX, pl) != 0 ||
        strcmp(name + len - sl, BACKUP_SUFFIX) != 0)
        return false;
    char *end = NULL;
    long long v = strtoll(name + pl, &end, 10);
    if (end != name + len - sl || v <= 0)
        return false;
    *at_ms = v;
    return true;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The pool's backup directory into dir (4096 bytes) and its backups' names, sorted oldest
 * first; *names malloc'd (free_names()). */
static int list_backups(const char *state_dir, const char *pool, char *dir, char ***names,
                        size_t *n)
{
    *names = NULL;
    *n = 0;
    int r = pool_backup_dir(state_dir, pool, dir, 4096);
    if (r < 0)
        return r;
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : neg_errno();
    struct dirent *de;
    char **v = NULL;
    size_t k = 0;
    while ((de = readdir(d))) {
        int64_t at;
        if (!backup_name(de->d_name, &at))
            continue;
        char **nv = realloc(v, (k + 1) * sizeof(*v));
        char *s = nv ? strdup(de->d_name) : NULL;
        if (nv)
            v = nv;
        if (!s) {
            free_names(v, k);
            return -ENOMEM;
        }
        v[k++] = s;
    }
    if (k > 1)
        qsort(v, k, sizeof(*v), name_cmp);
    *names = v;
    *n = k;
    return 0;
}

int pool_backup_latest(const char *state_dir, const char *pool, struct pool_backup *out)
{
    memset(out, 0, sizeof(*out));
    char dir[4096];
    char **names;
    size_t n;
    int r = list_backups(state_dir, pool, dir, &names, &n);
    if (r < 0)
        return r;
    if (n == 0)
        return -ENOENT;
    backup_name(names[n - 1], &out->at_ms);
    snprintf(out->path, sizeof(out->path), "%s/%s", dir, names[n - 1]);
    free_names(names, n);
    struct stat st;
    if (stat(out->path, &st) == 0)
        out->bytes = (uint64_t)st.st_size;
    return 0;
}

int pool_backup_prune(const char *state_dir, const char *pool, uint32_t keep)
{
    char dir[4096];
    char **names;
    size_t n;
    int r = list_backups(state_dir, pool, dir, &names, &n);
    if (r < 0)
        return r;
    int removed = 0;
    for (size_t i = 0; i + keep < n; i++) {
        char p[4400];
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        if (unlink(p) == 0)
            removed++;
        else
            log_warn("cannot remove an old metadata backup", "file=%s err=%s", p, strerror(errno));
    }
    free_names(names, n);
    return removed;
}

static void record_backup(struct db *db, const char *pool, bool ok, const char *detail)
{
    struct pool_event ev = {.ok = ok};
    snprintf(ev.kind, sizeof(ev.kind), "backup");
    snprintf(ev.detail, sizeof(ev.detail), "%s", detail);
    if (db && pool_event_add(db, pool, &ev) < 0)
        log_warn("cannot record a metadata backup event", "pool=%s", pool);
    metrics_counter_add("thinimg_pool_metadata_backups_total", 1, "result", ok ? "ok" : "error",
                        NULL);
}

int pool_backup_take(struct db *db, const char *pool, const char *state_dir,
                     struct pool_backup *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    char dir[4096];
    int r = pool_backup_dir(state_dir, pool, dir, sizeof(dir));
    if (r < 0)
        return err_set(e, r, "backup directory for pool \"%s\": path too long", pool);
    if ((r = mkdir_p(dir, 0700)) < 0)
        return err_set(e, r, "cannot create the metadata backup directory %s: %s", dir,
                       strerror(-r));
    struct pool_info info;
    if ((r = pool_get(NULL, pool, &info, e)) < 0)
        return r;
    /* Every write checks its room first: an XML dump is a few times the metadata in use. */
    struct statvfs sv;
    uint64_t need = info.status.meta_used * POOL_META_BLOCK_BYTES * POOL_BACKUP_XML_FACTOR;
    if (statvfs(dir, &sv) == 0 &&
        (uint64_t)sv.f_bavail * sv.f_frsize < need + POOL_GROW_RESERVE_MIN)
        return err_set(e, -ENOSPC,
                       "metadata backup of pool \"%s\": %s has %" PRIu64 " bytes free, a dump "
                       "needs about %" PRIu64 " plus a reserve of %" PRIu64 "; free space there",
                       pool, dir, (uint64_t)sv.f_bavail * sv.f_frsize, need,
                       (uint64_t)POOL_GROW_RESERVE_MIN);
    out->at_ms = now_ms();
    snprintf(out->path, sizeof(out->path), "%s/" BACKUP_PREFIX "%015" PRId64 BACKUP_SUFFIX, dir,
             out->at_ms);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", out->path);
    const char *args[] = {"thin_dump", "--metadata-snap", "-o", tmp, NULL};
    _cleanup_buf_ struct buf so = BUF_INIT, se = BUF_INIT;
    int64_t t0 = mono_ms();
    r = thin_metadata_snap_exec(pool, args, POOL_BACKUP_TIMEOUT_MS, &so, &se, e);
    if (r == 0) {
        _cleanup_close_ int fd = open(tmp, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fsync(fd) < 0 || fstat(fd, &st) < 0)
            r = err_set(e, neg_errno(), "cannot sync the metadata backup %s: %s", tmp,
                        strerror(errno));
        else
            out->bytes = (uint64_t)st.st_size;
    }
    if (r == 0 && rename(tmp, out->path) < 0)
        r = err_set(e, neg_errno(), "cannot rename %s to %s: %s", tmp, out->path, strerror(errno));
    if (r < 0) {
        unlink(tmp); /* our own partial file, not a device */
        record_backup(db, pool, false, err_str(e));
        return err_prefix(e, "metadata backup of pool \"%s\"", pool);
    }
    fsync_parent_dir(out->path);
    struct pool_settings s;
    uint32_t keep =
        db && pool_settings_get(db, pool, &s) == 0 ? s.backup_keep : POOL_BACKUP_DEFAULT_KEEP;
    int pruned = pool_backup_prune(state_dir, pool, keep);
    log_info("pool metadata backed up",
             "pool=%s file=%s bytes=%" PRIu64 " ms=%" PRId64 " pruned=%d transaction=%" PRIu64,
             pool, out->path, out->bytes, mono_ms() - t0, pruned > 0 ? pruned : 0,
             info.status.transaction_id);
    record_backup(db, pool, true, out->path);
    return 0;
}

int pool_backup_maybe(struct db *db, const char *pool, const char *state_dir, struct err *e)
{
    struct pool_settings s;
    int r = pool_settings_get(db, pool, &s);
    if (r < 0)
        return err_set(e, r, "cannot read the settings of pool \"%s\"", pool);
    struct pool_backup last;
    if (pool_backup_latest(state_dir, pool, &last) == 0 &&
        now_ms() - last.at_ms < s.backup_interval_s * 1000)
        return 0;
    struct pool_backup b;
    r = pool_backup_take(db, pool, state_dir, &b, e);
    return r < 0 ? r : 1;
}
