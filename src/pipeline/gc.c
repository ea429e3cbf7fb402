/*
 * gc.c: reconcile and garbage collection. See gc.h.
 *
 * The scan joins four views of the world: the `devices` rows, the rows that use devices
 * (layers, activations), the pool's metadata (thin ids, through a metadata snapshot and
 * thin_ls) and the kernel's dm devices and mounts. The apply step changes the kernel only from
 * short-lived child processes, one operation each, so that a hung ioctl costs a timeout and a
 * stuck child, not a stuck gc: after a timeout gc stops touching devicemapper at all.
 */
#include "pipeline/gc.h"

#include "util/defaults.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dm/dm.h"
#include "dm/pool.h"
#include "dm/thin.h"
#include "fsm/fsm.h"
#include "guard/reslock.h"
#include "pipeline/backend.h"
#include "pipeline/updates.h"
#include "store/blobfile.h"
#include "store/blobs.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/timeutil.h"

const char *gc_kind_name(enum gc_kind k)
{
    static const char *const names[] = {"creating",     "failed",     "deleting",   "unreferenced",
                                        "unknown-id",   "unknown-dm", "mount",      "tmpfile",
                                        "download",     "lock",       "blob",       "missing",
                                        "active-layer", "dm-gone",    "overlay-dir"};
    return (unsigned)k < ARRAY_SIZE(names) ? names[k] : "?";
}

const char *gc_result_name(enum gc_result r)
{
    static const char *const names[] = {"pending", "done", "skipped", "error"};
    return (unsigned)r < ARRAY_SIZE(names) ? names[r] : "?";
}

void gc_report_free(struct gc_report *r)
{
    free(r->items);
    memset(r, 0, sizeof(*r));
}

static struct gc_item *add(struct gc_report *r, enum gc_kind k, const char *what)
{
    struct gc_item *v = realloc(r->items, (r->n + 1) * sizeof(*v));
    if (!v)
        return NULL;
    r->items = v;
    struct gc_item *it = &v[r->n++];
    memset(it, 0, sizeof(*it));
    it->kind = k;
    snprintf(it->what, sizeof(it->what), "%s", what);
    return it;
}

static bool id_in(const uint32_t *v, size_t n, uint32_t id, size_t *at)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == id) {
            if (at)
                *at = i;
            return true;
        }
    return false;
}

/* Device ids used by a layer or an activation that is not failed. */
static int used_ids(struct db *db, const char *pool, uint32_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "SELECT dev_id FROM layers WHERE pool = ?1 AND dev_id IS NOT"
                                      " NULL AND state != 'failed' UNION SELECT dev_id FROM"
                                      " activations WHERE pool = ?1 AND dev_id IS NOT NULL AND"
                                      " state != 'failed'");
    if (!st) {
        db_unlock(db);
        return -EIO;
    }
    db_bind_text(st, 1, pool);
    int r;
    while ((r = db_step(db, st)) == 1) {
        uint32_t *v = realloc(*out, (*n + 1) * sizeof(*v));
        if (!v) {
            r = -ENOMEM;
            break;
        }
        *out = v;
        v[(*n)++] = (uint32_t)sqlite3_column_int64(st, 0);
    }
    db_done(st);
    db_unlock(db);
    return r < 0 ? r : 0;
}

/* Mount points of a block device "major:minor" from /proc/self/mountinfo (first one). */
static bool mounted_at(const char *majmin, char *mp, size_t n)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return false;
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        char mm[32], point[2048];
        if (sscanf(line, "%*s %*s %31s %*s %2047s", mm, point) == 2 && !strcmp(mm, majmin)) {
            snprintf(mp, n, "%s", point);
            return true;
        }
    }
    return false;
}

static void dev_majmin(const char *name, char *out, size_t n, bool *exists, int *open_count)
{
    struct dm_dev_info info;
    out[0] = '\0';
    *exists = false;
    *open_count = 0;
    if (dm_dev_info(name, &info, NULL) == 0 && info.exists) {
        *exists = true;
        *open_count = info.open_count;
        snprintf(out, n, "%u:%u", info.major, info.minor);
    }
}

static bool under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && (path[n] == '/' || path[n] == '\0');
}

/* Made (recorded, written) at made_ms while runs work that started before: it may be one of
 * theirs (gc.h), so it stays, and the item says why. */
static bool spare_live(const struct gc_opts *o, int64_t made_ms, struct gc_item *it)
{
    if (!o->live_since_ms || made_ms < o->live_since_ms)
        return false;
    it->removable = false;
    snprintf(it->action, sizeof(it->action), "skip: made while %s; taken once they finished",
             o->live_note ? o->live_note : "runs work");
    return true;
}

static int64_t mtime_ms(const struct stat *sb)
{
    return (int64_t)sb->st_mtim.tv_sec * 1000 + sb->st_mtim.tv_nsec / 1000000;
}

/* A thin device row: classify it. */
static void scan_device(struct gc_report *rep, const struct thin_dev *d, const uint32_t *used,
                        size_t nused, const uint32_t *pool_ids, const uint64_t *mapped,
                        size_t npool, const struct config *cfg, const struct gc_opts *o)
{
    size_t at = 0;
    bool in_pool = rep->pool_active && id_in(pool_ids, npool, d->id, &at);
    bool is_used = id_in(used, nused, d->id, NULL);
    char majmin[32];
    bool active;
    int open_count;
    dev_majmin(d->name, majmin, sizeof(majmin), &active, &open_count);

    enum gc_kind kind;
    const char *reason;
    if (!strcmp(d->state, "creating")) {
        kind = GC_CREATING;
        reason = "creation was interrupted (crash between allocation and confirmation)";
    } else if (!strcmp(d->state, "failed")) {
        kind = GC_FAILED;
        reason = d->error[0] ? d->error : "an operation on it failed";
    } else if (!strcmp(d->state, "deleting")) {
        kind = GC_DELETING;
        reason = "a deletion was interrupted";
    } else if (!strcmp(d->state, "ready") && !is_used) {
        kind = GC_UNREFERENCED;
        reason = "no layer or activation uses it (an interrupted or repeated create)";
    } else if (!strcmp(d->state, "ready") && rep->pool_active && !in_pool) {
        struct gc_item *it = add(rep, GC_MISSING, d->name);
        if (it) {
            it->dev_id = d->id;
            it->active = active;
            snprintf(it->reason, sizeof(it->reason),
                     "in use by thinimg but gone from the pool's metadata");
            snprintf(it->action, sizeof(it->action), "none: the next process-image recreates it");
        }
        return;
    } else {
        return; /* ready and used, or foreign/deleted */
    }
    struct gc_item *it = add(rep, kind, d->name);
    if (!it)
        return;
    it->dev_id = d->id;
    it->active = active;
    it->in_pool = in_pool;
    it->bytes = in_pool && mapped ? mapped[at] : 0;
    /* A state's own change time; a ready device nothing uses may have become unused later. */
    it->since_ms = kind == GC_UNREFERENCED ? 0 : d->updated_at_ms;
    snprintf(it->reason, sizeof(it->reason), "%s", reason);
    char mp[2048];
    if (active && majmin[0] && mounted_at(majmin, mp, sizeof(mp))) {
        if (under(mp, cfg->mount_dir)) {
            struct gc_item *m = add(rep, GC_MOUNT, mp);
            if (m) {
                snprintf(m->reason, sizeof(m->reason), "stale mount of %s", d->name);
                snprintf(m->action, sizeof(m->action), "unmount");
                m->removable = true;
            }
            it = &rep->items[rep->n - 2]; /* add() may have moved the array */
        } else {
            snprintf(it->action, sizeof(it->action), "skip: mounted on %s", mp);
            return;
        }
    }
    if (active && open_count > 0 && it->action[0] == '\0') {
        snprintf(it->action, sizeof(it->action), "skip: open (%d users)", open_count);
        return;
    }
    if (it->action[0] == '\0' && spare_live(o, d->created_at_ms, it))
        return;
    it->removable = true;
    snprintf(it->action, sizeof(it->action), "%s%s%s", active ? "remove dm device" : "",
             active && in_pool ? ", " : "",
             in_pool ? "delete from pool" : (active ? "" : "record deleted"));
}

static void scan_pool_unknown(struct gc_report *rep, struct db *db, const char *pool,
                              const uint32_t *pool_ids, const uint64_t *mapped, size_t npool,
                              const struct gc_opts *o)
{
    for (size_t i = 0; i < npool; i++) {
        struct thin_dev d;
        int r = thin_get(db, pool, pool_ids[i], &d);
        if (r == 0 && strcmp(d.state, "deleted") != 0)
            continue;
        char what[64];
        snprintf(what, sizeof(what), "%s thin id %u", pool, pool_ids[i]);
        struct gc_item *it = add(rep, GC_UNKNOWN_ID, what);
        if (!it)
            return;
        it->dev_id = pool_ids[i];
        it->in_pool = true;
        it->bytes = mapped ? mapped[i] : 0;
        snprintf(it->reason, sizeof(it->reason), "%s",
                 r == 0 ? "recorded deleted, but the pool still has it"
                        : "in the pool's metadata, unknown to the database");
        if (rep->pool_adopted && !o->include_foreign_ids) {
            snprintf(it->action, sizeof(it->action),
                     "skip: the pool was adopted (may be someone else's; --include-foreign)");
        } else {
            it->removable = true;
            snprintf(it->action, sizeof(it->action), "delete from pool");
        }
    }
}

/* Is the active device name pool's, by name and, for a thin device, by the pool its table
 * names? The name must be one thinimg builds for this pool (dm_name_match: pool "tp" does not
 * claim "tp-b-layer-7" of pool "tp-b", nor a "tp-junk" someone else made). A pool named
 * "tp-act" builds names of pool "tp"'s shape too; a thin device's table says which pool it
 * is in, and a device of another pool is never ours. */
static bool dm_device_of_pool(const char *name, const char *pool, const char *pool_majmin)
{
    if (!dm_name_match(name, pool, NULL))
        return false;
    struct dm_target_line t;
    if (dm_dev_table(name, &t, NULL) < 0 || strcmp(t.type, "thin") != 0)
        return true; /* no table (a create cut short) or not a thin target: the name decides */
    size_t n = strlen(pool_majmin);
    return n > 0 && strncmp(t.params, pool_majmin, n) == 0 && t.params[n] == ' ';
}

static void scan_dm_unknown(struct gc_report *rep, struct db *db, const char *pool)
{
    char **names = NULL;
    if (dm_dev_list(&names, NULL) < 0 || !names)
        return;
    char pool_majmin[32];
    bool pool_exists;
    int pool_open;
    dev_majmin(pool, pool_majmin, sizeof(pool_majmin), &pool_exists, &pool_open);
    for (char **p = names; *p; p++) {
        if (!dm_device_of_pool(*p, pool, pool_majmin))
            continue;
        struct thin_dev d;
        if (thin_find_by_name(db, *p, &d) == 0 && strcmp(d.state, "deleted") != 0)
            continue;
        bool exists;
        int open_count;
        char majmin[32];
        dev_majmin(*p, majmin, sizeof(majmin), &exists, &open_count);
        struct gc_item *it = add(rep, GC_UNKNOWN_DM, *p);
        if (!it)
            break;
        it->active = true;
        snprintf(it->reason, sizeof(it->reason),
                 "active dm device named like the pool's devices that the database does not know");
        if (open_count > 0) {
            snprintf(it->action, sizeof(it->action), "skip: open (%d users)", open_count);
        } else {
            it->removable = true;
            snprintf(it->action, sizeof(it->action), "remove dm device");
        }
    }
    dm_names_free(names);
}

static int count_run(const struct fsm_run_record *r, void *ud)
{
    (void)r;
    (*(int *)ud)++;
    return 0;
}

/* Is there an unfinished fetch run for this location? (Its partial download must stay.) */
static bool fetch_unfinished(struct db *db, const char *location)
{
    struct fsm_list_filter f = {.type = "fetch", .resource_id = location, .limit = 1};
    int n = 0;
    return fsm_db_list_runs(db, &f, count_run, &n) >= 0 && n > 0;
}

struct tmp_ctx {
    char **keep; /* tmp paths of live downloads */
    size_t n;
};

struct downloads_ctx {
    struct gc_report *rep;
    struct db *db;
    struct tmp_ctx *keep;
};

static int download_row(const char *loc, const char *tmp, void *ud)
{
    struct downloads_ctx *c = ud;
    struct stat sb;
    bool file = tmp && stat(tmp, &sb) == 0;
    bool live = loc && fetch_unfinished(c->db, loc);
    /* A live run's record is its own business, file or not: between moving the finished file
     * into the store and deleting the record in the same commit, the file is gone already. */
    if (live) {
        /* with the files beside it: TMP.ranges (a download in ranges) and TMP.done (a
         * finished download's digest, until its run ends: src/pipeline/fetch.c) */
        static const char *const beside[] = {"", ".ranges", ".done"};
        for (size_t i = 0; tmp && i < ARRAY_SIZE(beside); i++) {
            char **v = realloc(c->keep->keep, (c->keep->n + 1) * sizeof(char *));
            if (!v)
                break;
            c->keep->keep = v;
            if (asprintf(&v[c->keep->n], "%s%s", tmp, beside[i]) >= 0)
                c->keep->n++;
        }
        return 0;
    }
    struct gc_item *it = add(c->rep, GC_DOWNLOAD, loc ? loc : "?");
    if (!it)
        return 1;
    it->removable = true;
    it->bytes = file ? (uint64_t)sb.st_size : 0;
    it->since_ms = file ? mtime_ms(&sb) : 0;
    snprintf(it->reason, sizeof(it->reason), "%s",
             file ? "partial download no unfinished fetch run owns"
                  : "download record whose temp file is gone");
    snprintf(it->action, sizeof(it->action), "%s",
             file ? "delete file and record" : "delete record");
    snprintf(it->detail, sizeof(it->detail), "%s", tmp ? tmp : "");
    return 0;
}

static void scan_downloads(struct gc_report *rep, struct db *db, struct tmp_ctx *keep)
{
    struct downloads_ctx c = {rep, db, keep};
    blobs_download_list(db, download_row, &c);
}

static void scan_tmp(struct gc_report *rep, const struct config *cfg, const struct tmp_ctx *keep,
                     const struct gc_opts *o)
{
    _cleanup_closedir_ DIR *d = opendir(cfg->tmp_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", cfg->tmp_dir, de->d_name);
        bool kept = false;
        for (size_t i = 0; i < keep->n; i++)
            kept |= keep->keep[i] && !strcmp(keep->keep[i], path);
        /* files named in a downloads row are handled as downloads */
        for (size_t i = 0; i < rep->n; i++)
            kept |= rep->items[i].kind == GC_DOWNLOAD && !strcmp(rep->items[i].detail, path);
        if (kept)
            continue;
        struct stat sb;
        if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        struct gc_item *it = add(rep, GC_TMPFILE, path);
        if (!it)
            return;
        it->bytes = (uint64_t)sb.st_size;
        it->since_ms = mtime_ms(&sb);
        snprintf(it->reason, sizeof(it->reason), "temporary file no unfinished download owns");
        if (spare_live(o, it->since_ms, it))
            continue;
        it->removable = true;
        snprintf(it->action, sizeof(it->action), "delete file");
    }
}

static void lock_line(const char *line, void *ud)
{
    struct gc_report *rep = ud;
    struct gc_item *it = add(rep, GC_LOCK, line);
    if (it) {
        it->removable = true;
        snprintf(it->reason, sizeof(it->reason), "its owner process is gone");
        snprintf(it->action, sizeof(it->action), "delete lock");
    }
}

struct blobs_ctx {
    struct gc_report *rep;
    const struct config *cfg;
    const struct gc_opts *o;
};

static int unreferenced_blob(const char *digest, const char *path_col, uint64_t size, void *ud)
{
    struct blobs_ctx *c = ud;
    struct gc_item *it = add(c->rep, GC_BLOB, digest);
    if (!it)
        return 1;
    it->bytes = size;
    /* The file is named by the digest under the blob directory (store/blobfile.h); the path
     * column is not trusted to be absolute (rows from older versions). */
    _cleanup_free_ char *path = blobfile_path(c->cfg->blob_dir, it->what);
    snprintf(it->detail, sizeof(it->detail), "%s", path ? path : path_col);
    snprintf(it->reason, sizeof(it->reason), "no image uses this blob");
    it->removable = c->o->include_blobs && !c->o->live_since_ms;
    snprintf(it->action, sizeof(it->action), "%s",
             !c->o->include_blobs ? "keep (--blobs to delete)"
             : c->o->live_since_ms
                 ? "skip: runs work (one may be about to use it); collected when idle"
                 : "delete file and record");
    return 0;
}

static void scan_blobs(struct gc_report *rep, struct db *db, const struct config *cfg,
                       const struct gc_opts *o)
{
    struct blobs_ctx c = {rep, cfg, o};
    blobs_list_unreferenced(db, unreferenced_blob, &c);
}

/* Is a mount point already in the report? */
static bool mount_listed(const struct gc_report *rep, const char *point)
{
    for (size_t i = 0; i < rep->n; i++)
        if (rep->items[i].kind == GC_MOUNT && !strcmp(rep->items[i].what, point))
            return true;
    return false;
}

/* Every mount under <state>/mnt is stale: thinimg mounts devices only inside the private
 * mount namespaces of its own children, which the kernel takes down with them. Listed
 * newest first, so that stacked mounts come off in order. */
static void scan_mounts(struct gc_report *rep, const struct config *cfg)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return;
    char line[4096];
    char(*points)[2048] = NULL, (*sources)[256] = NULL;
    size_t n = 0;
    while (fgets(line, sizeof(line), f)) {
        char point[2048], source[256] = "?";
        if (sscanf(line, "%*s %*s %*s %*s %2047s", point) != 1 || !under(point, cfg->mount_dir))
            continue;
        const char *sep = strstr(line, " - ");
        if (sep)
            sscanf(sep, " - %*s %255s", source);
        void *np = realloc(points, (n + 1) * sizeof(*points));
        void *ns = np ? realloc(sources, (n + 1) * sizeof(*sources)) : NULL;
        if (np)
            points = np;
        if (!ns)
            break;
        sources = ns;
        snprintf(points[n], sizeof(points[n]), "%s", point);
        snprintf(sources[n], sizeof(sources[n]), "%s", source);
        n++;
    }
    for (size_t i = n; i-- > 0;) {
        if (mount_listed(rep, points[i]))
            continue;
        struct gc_item *m = add(rep, GC_MOUNT, points[i]);
        if (!m)
            break;
        snprintf(m->reason, sizeof(m->reason),
                 "stale mount of %s under the state directory "
                 "(thinimg mounts only inside its own processes)",
                 sources[i]);
        snprintf(m->action, sizeof(m->action), "unmount");
        m->removable = true;
    }
    free(points);
    free(sources);
}

struct overlay_ctx {
    struct gc_report *rep;
    const struct gc_opts *o;
};

static void overlay_orphan(const char *path, const char *why, uint64_t bytes, int64_t mtime_ms,
                           bool mounted, void *ud)
{
    struct overlay_ctx *c = ud;
    struct gc_item *it = add(c->rep, GC_OVERLAY_DIR, path);
    if (!it)
        return;
    snprintf(it->reason, sizeof(it->reason), "%s", why);
    snprintf(it->action, sizeof(it->action), "%s", mounted ? "unmount, delete" : "delete");
    it->bytes = bytes;
    it->since_ms = mtime_ms;
    it->removable = true;
    spare_live(c->o, mtime_ms, it);
}

static void overlay_stale_mount(const char *path, const char *name, const char *state, void *ud)
{
    struct overlay_ctx *c = ud;
    struct gc_item *it = add(c->rep, GC_MOUNT, path);
    if (!it)
        return;
    snprintf(it->reason, sizeof(it->reason),
             "overlay mount of activation %s, whose record says %s (a deactivate interrupted, "
             "or mounted behind thinimg's back)",
             name, state);
    snprintf(it->action, sizeof(it->action), "unmount (the upper dir and its writes stay)");
    it->removable = true;
    /* A run may be mounting it now, before it records the activation active. */
    spare_live(c->o, now_ms(), it);
}

/* Committed layers whose device is active, and activations recorded active whose dm device
 * is gone. Both come from a change behind thinimg's back (or a reboot, for the second). */
static void scan_active_state(struct gc_report *rep, struct db *db, const char *pool,
                              const uint32_t *pool_ids, size_t npool, const struct config *cfg)
{
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "SELECT 'layer', d.name, d.dev_id, NULL FROM layers l JOIN"
                                      " devices d ON d.pool = l.pool AND d.dev_id = l.dev_id"
                                      " WHERE l.pool = ?1 AND l.state = 'ready' UNION ALL"
                                      " SELECT 'activation', d.name, d.dev_id, a.name FROM"
                                      " activations a JOIN devices d ON d.pool = a.pool AND"
                                      " d.dev_id = a.dev_id WHERE a.pool = ?1 AND a.state ="
                                      " 'active'");
    if (!st) {
        db_unlock(db);
        return;
    }
    db_bind_text(st, 1, pool);
    struct row {
        bool layer;
        char name[DM_NAME_MAX + 1], act[128];
        uint32_t id;
    } *rows = NULL;
    size_t n = 0;
    while (db_step(db, st) == 1) {
        struct row *v = realloc(rows, (n + 1) * sizeof(*v));
        if (!v)
            break;
        rows = v;
        struct row *w = &rows[n++];
        w->layer = !strcmp((const char *)sqlite3_column_text(st, 0), "layer");
        snprintf(w->name, sizeof(w->name), "%s", sqlite3_column_text(st, 1));
        w->id = (uint32_t)sqlite3_column_int64(st, 2);
        const unsigned char *a = sqlite3_column_text(st, 3);
        snprintf(w->act, sizeof(w->act), "%s", a ? (const char *)a : "");
    }
    db_done(st);
    db_unlock(db);

    for (size_t i = 0; i < n; i++) {
        struct row *w = &rows[i];
        if (!id_in(pool_ids, npool, w->id, NULL))
            continue; /* `missing`, reported by scan_device */
        char majmin[32];
        bool active;
        int open_count;
        dev_majmin(w->name, majmin, sizeof(majmin), &active, &open_count);
        if (w->layer != active)
            continue; /* a layer device is reported when active, an activation when not */
        struct gc_item *it = add(rep, w->layer ? GC_ACTIVE_LAYER : GC_DM_GONE, w->name);
        if (!it)
            break;
        it->dev_id = w->id;
        it->active = active;
        it->in_pool = true;
        if (!w->layer) {
            snprintf(it->reason, sizeof(it->reason),
                     "activation %s is recorded active but its "
                     "dm device is gone (a reboot, or removed behind thinimg's back)",
                     w->act);
            snprintf(it->action, sizeof(it->action), "none: the next process-image reactivates it");
            continue;
        }
        snprintf(it->reason, sizeof(it->reason),
                 "a committed layer's device is active (committed "
                 "layers stay inactive: an active origin must be suspended to be snapshotted)");
        char mp[2048];
        bool mounted = majmin[0] && mounted_at(majmin, mp, sizeof(mp));
        bool ours = mounted && under(mp, cfg->mount_dir);
        if (mounted && !ours) {
            snprintf(it->action, sizeof(it->action), "skip: mounted on %s", mp);
        } else if (open_count > 0 && !ours) {
            snprintf(it->action, sizeof(it->action), "skip: open (%d users)", open_count);
        } else {
            it->removable = true; /* a stale mount of it under <state>/mnt comes off first */
            snprintf(it->action, sizeof(it->action),
                     "deactivate (remove the dm device; the thin device stays)");
        }
    }
    free(rows);
}

int gc_scan(struct db *db, const struct config *cfg, const struct gc_opts *o, struct gc_report *out,
            struct err *e)
{
    static const struct gc_opts dflt;
    if (!o)
        o = &dflt;
    memset(out, 0, sizeof(*out));
    /* A state directory on a backend without a pool (overlay) has no device to examine, and
     * nothing to say about a pool. */
    int r = db ? backend_recorded(db, out->backend, sizeof(out->backend)) : 0;
    if (r != 1)
        snprintf(out->backend, sizeof(out->backend), "%s", backend_dm_thin.name);
    bool pool_backend = !strcmp(out->backend, backend_dm_thin.name);
    const char *pool = cfg->pool_name;
    struct pool_info pi = {0};
    struct err pe = {0};
    r = pool_backend ? pool_get(db, pool, &pi, &pe) : -ENODEV;
    out->pool_active = r == 0 && pi.active;
    out->pool_adopted = pi.recorded ? !strcmp(pi.origin, "adopted") : out->pool_active;
    uint32_t *pool_ids = NULL;
    uint64_t *mapped = NULL;
    size_t npool = 0;
    if (out->pool_active && o->skip_devices) {
        out->pool_active = false;
        snprintf(out->pool_note, sizeof(out->pool_note), "devices were not examined: %s",
                 o->skip_devices);
    }
    if (out->pool_active) {
        r = thin_pool_metadata_ids(pool, &pool_ids, &mapped, &npool, &pe);
        if (r < 0) {
            out->pool_active = false;
            snprintf(out->pool_note, sizeof(out->pool_note),
                     "cannot read the pool's metadata (%s): devices were not examined",
                     err_str(&pe));
        }
    } else if (!out->pool_note[0] && pool_backend) {
        snprintf(out->pool_note, sizeof(out->pool_note),
                 "pool \"%s\" is not active (%s): devices were not examined; run `thinimg "
                 "setup-pool` first",
                 pool, pe.code ? err_str(&pe) : "not set up");
    }

    if (out->pool_active) {
        struct thin_dev *devs = NULL;
        size_t ndev = 0;
        uint32_t *used = NULL;
        size_t nused = 0;
        r = thin_list(db, pool, false, &devs, &ndev);
        if (r == 0)
            r = used_ids(db, pool, &used, &nused);
        if (r < 0) {
            free(devs);
            free(used);
            free(pool_ids);
            free(mapped);
            return err_set(e, r, "cannot read the device records: %s", strerror(-r));
        }
        for (size_t i = 0; i < ndev; i++)
            scan_device(out, &devs[i], used, nused, pool_ids, mapped, npool, cfg, o);
        scan_pool_unknown(out, db, pool, pool_ids, mapped, npool, o);
        scan_dm_unknown(out, db, pool);
        scan_active_state(out, db, pool, pool_ids, npool, cfg);
        free(devs);
        free(used);
    }
    free(pool_ids);
    free(mapped);
    if (!o->skip_devices)
        scan_mounts(out, cfg);
    struct overlay_ctx oc = {out, o};
    backend_overlay_orphans(db, cfg, overlay_orphan, &oc);
    if (!pool_backend)
        backend_overlay_stale_mounts(db, cfg, overlay_stale_mount, &oc);

    struct tmp_ctx keep = {0};
    scan_downloads(out, db, &keep);
    scan_tmp(out, cfg, &keep, o);
    for (size_t i = 0; i < keep.n; i++)
        free(keep.keep[i]);
    free(keep.keep);
    reslock_stale(db, false, lock_line, out);
    scan_blobs(out, db, cfg, o);
    return 0;
}

/* ---- apply ---------------------------------------------------------------------------------- */

enum child_op { OP_UMOUNT, OP_DM_REMOVE, OP_POOL_DELETE };

struct child_req {
    enum child_op op;
    const char *name; /* mount point, device or pool */
    uint32_t id;
};

/* Run one kernel operation in a child; 0, its negative errno, or -ETIMEDOUT. */
static int run_in_child(const struct child_req *q, int timeout_ms, char *msg, size_t msgn)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return neg_errno();
    pid_t pid = dm_fork(); /* the daemon's other threads may be inside libdevmapper */
    if (pid < 0) {
        int r = neg_errno();
        close(p[0]);
        close(p[1]);
        return r;
    }
    if (pid == 0) {
        close(p[0]);
        struct {
            int r;
            char msg[400];
        } res = {0};
        struct err e = {0};
        switch (q->op) {
        case OP_UMOUNT:
            res.r = umount2(q->name, UMOUNT_NOFOLLOW) < 0 ? neg_errno() : 0;
            if (res.r < 0)
                snprintf(res.msg, sizeof(res.msg), "umount %s: %s", q->name, strerror(-res.r));
            break;
        case OP_DM_REMOVE:
            res.r = dm_dev_remove(q->name, true, &e);
            if (res.r == -ENXIO)
                res.r = 0;
            snprintf(res.msg, sizeof(res.msg), "%s", res.r ? err_str(&e) : "");
            break;
        case OP_POOL_DELETE: {
            char m[32];
            snprintf(m, sizeof(m), "delete %u", q->id);
            res.r = dm_dev_message(q->name, m, NULL, &e);
            if (res.r == -ENODATA)
                res.r = 0;
            snprintf(res.msg, sizeof(res.msg), "%s", res.r ? err_str(&e) : "");
            break;
        }
        }
        ssize_t w = write(p[1], &res, sizeof(res));
        _exit(w == (ssize_t)sizeof(res) ? 0 : 1);
    }
    close(p[1]);
    struct pollfd pfd = {p[0], POLLIN, 0};
    int pr;
    do
        pr = poll(&pfd, 1, timeout_ms);
    while (pr < 0 && errno == EINTR);
    struct {
        int r;
        char msg[400];
    } res = {-EIO, "child died"};
    if (pr == 0) {
        kill(pid, SIGKILL); /* may not die while in D state: it is left behind, not waited for */
        close(p[0]);
        waitpid(pid, NULL, WNOHANG);
        snprintf(msg, msgn, "timed out after %dms (the kernel may be stuck on it)", timeout_ms);
        return -ETIMEDOUT;
    }
    ssize_t n = read(p[0], &res, sizeof(res));
    close(p[0]);
    waitpid(pid, NULL, 0);
    if (n != (ssize_t)sizeof(res))
        res.r = -EIO;
    snprintf(msg, msgn, "%s", res.msg);
    return res.r;
}

static void mark(struct db *db, const char *pool, uint32_t id, const char *state)
{
    struct device_mark *m = device_mark_new(pool, id, state, NULL);
    if (m) {
        device_mark_apply(db, m);
        device_mark_free(m);
    }
}

static int apply_device(struct db *db, const char *pool, struct gc_item *it, int timeout_ms)
{
    char msg[512] = "";
    int r = 0;
    if (it->active) {
        struct child_req q = {OP_DM_REMOVE, it->what, 0};
        r = run_in_child(&q, timeout_ms, msg, sizeof(msg));
        if (r == -EBUSY) {
            it->result = GC_SKIPPED;
            snprintf(it->detail, sizeof(it->detail), "in use: %s", msg);
            return 0;
        }
        if (r < 0) {
            it->result = GC_ERROR;
            snprintf(it->detail, sizeof(it->detail), "remove: %s", msg);
            return r;
        }
    }
    if (it->kind == GC_UNKNOWN_DM || it->kind == GC_ACTIVE_LAYER) {
        it->result = GC_DONE;
        snprintf(it->detail, sizeof(it->detail), "%s",
                 it->kind == GC_ACTIVE_LAYER ? "deactivated (the thin device stays)"
                                             : "dm device removed");
        return 0;
    }
    if (it->in_pool) {
        if (it->kind != GC_UNKNOWN_ID)
            mark(db, pool, it->dev_id, "deleting");
        struct child_req q = {OP_POOL_DELETE, pool, it->dev_id};
        r = run_in_child(&q, timeout_ms, msg, sizeof(msg));
        if (r < 0) {
            it->result = GC_ERROR;
            snprintf(it->detail, sizeof(it->detail), "delete: %s", msg);
            return r;
        }
    }
    if (it->kind != GC_UNKNOWN_ID)
        mark(db, pool, it->dev_id, "deleted");
    it->result = GC_DONE;
    snprintf(it->detail, sizeof(it->detail), "%s%s", it->active ? "removed, " : "",
             it->in_pool ? "deleted from the pool" : "recorded deleted");
    return 0;
}

/* The record first, then the file: a record that cannot be deleted (a database locked by
 * another process) keeps its file, and the item says why, never "deleted". */
static int apply_file(struct db *db, struct gc_item *it)
{
    char path[sizeof(it->detail)];
    snprintf(path, sizeof(path), "%s", it->kind == GC_TMPFILE ? it->what : it->detail);
    int r = it->kind == GC_DOWNLOAD ? blobs_download_delete(db, it->what)
            : it->kind == GC_BLOB   ? blobs_delete(db, it->what)
                                    : 0;
    if (r < 0) {
        it->result = GC_ERROR;
        snprintf(it->detail, sizeof(it->detail), "kept: cannot delete its record: %s",
                 strerror(-r));
        return r;
    }
    bool gone = false; /* the file was not there: say so, never "deleted" */
    if (path[0] && unlink(path) < 0) {
        if (errno != ENOENT) {
            r = neg_errno();
            it->result = GC_ERROR;
            snprintf(it->detail, sizeof(it->detail), "unlink %s: %s", path, strerror(-r));
            return r;
        }
        gone = true;
    }
    it->result = GC_DONE;
    if (gone)
        snprintf(it->detail, sizeof(it->detail), "record deleted; the file %.200s was already gone",
                 path);
    else
        snprintf(it->detail, sizeof(it->detail), "deleted");
    return 0;
}

/* What an applied gc did, for the daemon's /metrics (util/metrics.h, METRIC_GC_*). */
static void gc_record_metrics(const struct gc_report *rep, const char *mode, int r)
{
    double freed = 0;
    for (size_t i = 0; i < rep->n; i++) {
        if (rep->items[i].result != GC_DONE)
            continue;
        metrics_counter_add(METRIC_GC_REMOVED, 1, "kind", gc_kind_name(rep->items[i].kind), NULL);
        freed += (double)rep->items[i].bytes;
    }
    metrics_counter_add(METRIC_GC_FREED_BYTES, freed, NULL);
    metrics_counter_add(METRIC_GC_RUNS, 1, "mode", mode ? mode : "force", "result",
                        r < 0 ? "failed" : "ok", NULL);
    metrics_gauge_set(METRIC_GC_LAST_RUN, (double)now_ms() / 1000.0, NULL);
}

int gc_apply(struct db *db, const struct config *cfg, const struct gc_opts *o,
             struct gc_report *rep, struct err *e)
{
    static const struct gc_opts dflt;
    if (!o)
        o = &dflt;
    int timeout = o->op_timeout_ms > 0 ? o->op_timeout_ms : GC_OP_TIMEOUT_MS;
    int first_error = 0;
    bool stuck = false;
    char msg[512];

    /* 1. stale mounts */
    for (size_t i = 0; i < rep->n; i++) {
        struct gc_item *it = &rep->items[i];
        if (it->kind != GC_MOUNT || !it->removable)
            continue;
        struct child_req q = {OP_UMOUNT, it->what, 0};
        int r = run_in_child(&q, timeout, msg, sizeof(msg));
        it->result = r == 0 ? GC_DONE : GC_ERROR;
        snprintf(it->detail, sizeof(it->detail), "%s", r == 0 ? "unmounted" : msg);
        if (r < 0 && !first_error)
            first_error = r;
        if (r == -ETIMEDOUT)
            stuck = true;
    }
    /* 2. and 3. dm devices, then the pool (per device: remove, then delete) */
    for (size_t i = 0; i < rep->n && !stuck; i++) {
        struct gc_item *it = &rep->items[i];
        bool dev = it->kind == GC_CREATING || it->kind == GC_FAILED || it->kind == GC_DELETING ||
                   it->kind == GC_UNREFERENCED || it->kind == GC_UNKNOWN_ID ||
                   it->kind == GC_UNKNOWN_DM || it->kind == GC_ACTIVE_LAYER;
        if (!dev || !it->removable || !rep->pool_active)
            continue;
        int r = apply_device(db, cfg->pool_name, it, timeout);
        if (r < 0 && !first_error)
            first_error = err_set(e, r, "%s: %s", it->what, it->detail);
        if (r == -ETIMEDOUT)
            stuck = true;
    }
    if (stuck)
        for (size_t i = 0; i < rep->n; i++)
            if (rep->items[i].removable && rep->items[i].result == GC_PENDING &&
                (rep->items[i].kind <= GC_MOUNT || rep->items[i].kind == GC_ACTIVE_LAYER)) {
                rep->items[i].result = GC_SKIPPED;
                snprintf(rep->items[i].detail, sizeof(rep->items[i].detail),
                         "not attempted: an earlier kernel operation timed out");
            }
    /* 4. files, records, locks */
    for (size_t i = 0; i < rep->n; i++) {
        struct gc_item *it = &rep->items[i];
        if (!it->removable || it->result != GC_PENDING)
            continue;
        if (it->kind == GC_OVERLAY_DIR) {
            struct err de = {0};
            int r = backend_overlay_remove_dir(it->what, &de);
            it->result = r == 0 ? GC_DONE : GC_ERROR;
            snprintf(it->detail, sizeof(it->detail), "%s", r == 0 ? "deleted" : err_str(&de));
            if (r < 0 && !first_error)
                first_error = err_set(e, r, "%s: %s", it->what, it->detail);
            continue;
        }
        if (it->kind != GC_TMPFILE && it->kind != GC_DOWNLOAD && it->kind != GC_BLOB)
            continue;
        int r = apply_file(db, it);
        if (r < 0 && !first_error)
            first_error = err_set(e, r, "%s: %s", it->what, it->detail);
    }
    bool any_lock = false;
    for (size_t i = 0; i < rep->n; i++)
        if (rep->items[i].kind == GC_LOCK && rep->items[i].removable) {
            any_lock = true;
            rep->items[i].result = GC_DONE;
            snprintf(rep->items[i].detail, sizeof(rep->items[i].detail), "deleted");
        }
    if (any_lock)
        reslock_stale(db, true, NULL, NULL);
    /* 5. history */
    if (o->history_days > 0) {
        int n = fsm_db_prune(db, now_ms() - (int64_t)o->history_days * 86400000LL,
                             DEFAULT_HISTORY_RETENTION_RUNS);
        rep->pruned_runs = n > 0 ? n : 0;
    }
    int r = first_error;
    if (stuck)
        r = err_set(e, -ETIMEDOUT,
                    "a kernel operation timed out; gc stopped touching devicemapper. Check "
                    "`thinimg health` and dmesg before running gc again");
    gc_record_metrics(rep, o->metrics_mode, r);
    return r;
}

void gc_report_summary(const struct gc_report *r, char *out, size_t n)
{
    int counts[GC_KIND_COUNT] = {0};
    for (size_t i = 0; i < r->n; i++)
        counts[r->items[i].kind]++;
    out[0] = '\0';
    size_t k = 0;
    for (int i = 0; i < GC_KIND_COUNT; i++)
        if (counts[i] && k < n)
            k += (size_t)snprintf(out + k, n - k, "%s%d %s", k ? ", " : "", counts[i],
                                  gc_kind_name((enum gc_kind)i));
    if (!k)
        snprintf(out, n, "nothing");
}

/* ---- runs at work ---------------------------------------------------------------------------- */

struct live_ctx {
    int n;
    int64_t since_ms;
    char oldest[96];
};

static int live_run(const struct fsm_run_record *r, void *ud)
{
    struct live_ctx *c = ud;
    c->n++;
    if (!c->since_ms || r->created_ms < c->since_ms) {
        c->since_ms = r->created_ms > 0 ? r->created_ms : 1;
        snprintf(c->oldest, sizeof(c->oldest), "%s run %s", r->type, r->version.s);
    }
    return 0;
}

int gc_live_runs(struct db *db, int64_t *since_ms, char *note, size_t n)
{
    struct fsm_list_filter f = {0}; /* unfinished runs only */
    struct live_ctx c = {0};
    *since_ms = 0;
    if (n)
        note[0] = '\0';
    int r = fsm_db_list_runs(db, &f, live_run, &c);
    if (r < 0)
        return r;
    *since_ms = c.since_ms;
    if (c.n && n)
        snprintf(note, n, "%d run%s work%s (the oldest: %s)", c.n, c.n == 1 ? "" : "s",
                 c.n == 1 ? "s" : "", c.oldest);
    return c.n;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

json_t *gc_report_json(const struct gc_report *r, bool applied)
{
    json_t *items = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const struct gc_item *it = &r->items[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:I}", "kind",
                              gc_kind_name(it->kind), "what", it->what, "reason", it->reason,
                              "action", it->action, "removable", it->removable, "active",
                              it->active, "in_pool", it->in_pool, "bytes", (json_int_t)it->bytes);
        if (it->dev_id)
            json_object_set_new(o, "device_id", json_integer(it->dev_id));
        if (applied && it->removable) {
            json_object_set_new(o, "result", json_string(gc_result_name(it->result)));
            json_object_set_new(o, "detail", json_string(it->detail));
        }
        json_array_append_new(items, o);
    }
    char summary[256];
    gc_report_summary(r, summary, sizeof(summary));
    json_t *o = json_pack("{s:s, s:s, s:b, s:s, s:o}", "mode", applied ? "force" : "dry-run",
                          "backend", r->backend[0] ? r->backend : backend_dm_thin.name,
                          "pool_examined", r->pool_active, "summary", summary, "orphans", items);
    if (r->pool_note[0])
        json_object_set_new(o, "note", json_string(r->pool_note));
    if (applied)
        json_object_set_new(o, "pruned_runs", json_integer(r->pruned_runs));
    return o;
}

static void copy_str(char *dst, size_t n, const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    snprintf(dst, n, "%s", v ? v : "");
}

static int name_index(const char *name, const char *(*fn)(int), int count)
{
    for (int i = 0; name && i < count; i++)
        if (!strcmp(fn(i), name))
            return i;
    return -1;
}

static const char *kind_at(int i)
{
    return gc_kind_name((enum gc_kind)i);
}

static const char *result_at(int i)
{
    return gc_result_name((enum gc_result)i);
}

int gc_report_from_json(const json_t *o, struct gc_report *out, bool *applied)
{
    memset(out, 0, sizeof(*out));
    const json_t *items = json_object_get(o, "orphans");
    const char *mode = json_string_value(json_object_get(o, "mode"));
    if (!json_is_array(items) || !mode)
        return -EBADMSG;
    *applied = !strcmp(mode, "force");
    out->pool_active = json_is_true(json_object_get(o, "pool_examined"));
    copy_str(out->pool_note, sizeof(out->pool_note), o, "note");
    copy_str(out->backend, sizeof(out->backend), o, "backend");
    out->pruned_runs = (int)json_integer_value(json_object_get(o, "pruned_runs"));
    size_t i;
    const json_t *j;
    json_array_foreach(items, i, j)
    {
        int k = name_index(json_string_value(json_object_get(j, "kind")), kind_at, GC_KIND_COUNT);
        if (k < 0)
            continue; /* a kind this client does not know: newer daemon */
        struct gc_item *it = add(out, (enum gc_kind)k, "");
        if (!it) {
            gc_report_free(out);
            return -ENOMEM;
        }
        copy_str(it->what, sizeof(it->what), j, "what");
        copy_str(it->reason, sizeof(it->reason), j, "reason");
        copy_str(it->action, sizeof(it->action), j, "action");
        copy_str(it->detail, sizeof(it->detail), j, "detail");
        it->removable = json_is_true(json_object_get(j, "removable"));
        it->active = json_is_true(json_object_get(j, "active"));
        it->in_pool = json_is_true(json_object_get(j, "in_pool"));
        it->bytes = (uint64_t)json_integer_value(json_object_get(j, "bytes"));
        it->dev_id = (uint32_t)json_integer_value(json_object_get(j, "device_id"));
        int res =
            name_index(json_string_value(json_object_get(j, "result")), result_at, GC_ERROR + 1);
        it->result = res < 0 ? GC_PENDING : (enum gc_result)res;
    }
    return 0;
}
