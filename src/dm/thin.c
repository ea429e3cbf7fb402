/*
 * thin.c: thin device ids, creation, activation and deletion; see thin.h for the order of
 * operations that keeps the database and the pool consistent across crashes.
 */
#include "dm/thin.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "dm/exec.h"
#include "dm/loop.h"
#include "dm/pool_status.h"
#include "dm/thin_meta.h"
#include "store/stmt.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/timeutil.h"

void (*thin_test_hook_after_message)(uint32_t id);

/* thin_ls on a small pool answers in milliseconds; a metadata device that hangs must not. */
#define THIN_LS_TIMEOUT_MS 60000

const char *thin_kind_db_name(enum thin_kind k)
{
    switch (k) {
    case THIN_KIND_LAYER:
        return "layer";
    case THIN_KIND_ACTIVATION:
        return "activation";
    case THIN_KIND_TEST:
        return "test";
    }
    return "test";
}

const char *thin_kind_dm_name(enum thin_kind k)
{
    switch (k) {
    case THIN_KIND_LAYER:
        return DM_KIND_LAYER;
    case THIN_KIND_ACTIVATION:
        return DM_KIND_ACTIVATION;
    case THIN_KIND_TEST:
        return DM_KIND_TEST;
    }
    return DM_KIND_TEST;
}

static enum thin_kind kind_from_db(const char *s)
{
    if (s && !strcmp(s, "layer"))
        return THIN_KIND_LAYER;
    if (s && !strcmp(s, "activation"))
        return THIN_KIND_ACTIVATION;
    return THIN_KIND_TEST;
}

#define ROW_COLUMNS                                                                                \
    "dev_id, pool, name, kind, state, COALESCE(origin_id,0), size_bytes, COALESCE(error,''),"      \
    " created_at_ms, updated_at_ms"

static void row_read(sqlite3_stmt *st, struct thin_dev *d)
{
    memset(d, 0, sizeof(*d));
    d->id = (uint32_t)sqlite3_column_int64(st, 0);
    snprintf(d->pool, sizeof(d->pool), "%s", (const char *)sqlite3_column_text(st, 1));
    snprintf(d->name, sizeof(d->name), "%s", (const char *)sqlite3_column_text(st, 2));
    d->kind = kind_from_db((const char *)sqlite3_column_text(st, 3));
    snprintf(d->state, sizeof(d->state), "%s", (const char *)sqlite3_column_text(st, 4));
    d->origin_id = (uint32_t)sqlite3_column_int64(st, 5);
    d->size_bytes = (uint64_t)sqlite3_column_int64(st, 6);
    snprintf(d->error, sizeof(d->error), "%s", (const char *)sqlite3_column_text(st, 7));
    d->created_at_ms = sqlite3_column_int64(st, 8);
    d->updated_at_ms = sqlite3_column_int64(st, 9);
}

static int row_read_cb(sqlite3_stmt *st, void *ud)
{
    row_read(st, ud);
    return 0;
}

int thin_get(struct db *db, const char *pool, uint32_t id, struct thin_dev *out)
{
    int r = db_query_one(db, "SELECT " ROW_COLUMNS " FROM devices WHERE pool=? AND dev_id=?",
                         row_read_cb, out, DB_TEXT(pool), DB_INT(id));
    return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int thin_find_by_name(struct db *db, const char *name, struct thin_dev *out)
{
    int r =
        db_query_one(db, "SELECT " ROW_COLUMNS " FROM devices WHERE name=? AND state!='deleted'",
                     row_read_cb, out, DB_TEXT(name));
    return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

int thin_list(struct db *db, const char *pool, bool all, struct thin_dev **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    _cleanup_query_ struct db_query q = {0};
    int r = db_query(&q, db,
                     all ? "SELECT " ROW_COLUMNS " FROM devices WHERE pool=? ORDER BY dev_id"
                         : "SELECT " ROW_COLUMNS
                           " FROM devices WHERE pool=? AND state!='deleted' ORDER BY dev_id",
                     DB_TEXT(pool));
    _cleanup_free_ struct thin_dev *v = NULL;
    size_t k = 0;
    while (r >= 0 && (r = db_query_next(&q)) == 1) {
        struct thin_dev *nv = realloc(v, (k + 1) * sizeof(*v));
        if (!nv)
            return -ENOMEM;
        v = nv;
        row_read(q.st, &v[k++]);
    }
    if (r < 0)
        return r;
    *out = TAKE_PTR(v);
    *n = k;
    return 0;
}

/* One UPDATE in a transaction of its own. */
static int set_state(struct db *db, const char *pool, uint32_t id, const char *state,
                     const char *error)
{
    return db_run_tx(db,
                     "UPDATE devices SET state=?, error=?, updated_at_ms=? WHERE pool=? AND "
                     "dev_id=?",
                     DB_TEXT(state), DB_TEXT(error), DB_INT(now_ms()), DB_TEXT(pool), DB_INT(id));
}

/* Marks a device failed with the error text; logs when even that fails (the caller returns
 * the original error either way). */
static void mark_failed(struct db *db, const char *pool, uint32_t id, const struct err *e, int r)
{
    const char *msg = e && e->code ? err_str(e) : strerror(-r);
    int k = set_state(db, pool, id, "failed", msg);
    if (k < 0)
        log_error("cannot record device as failed", "pool=%s dev_id=%u error=%s", pool, id,
                  strerror(-k));
    else
        log_warn("device failed", "pool=%s dev_id=%u error=%s", pool, id, msg);
}

/*
 * Allocates the next id and commits its row in state `creating` (see thin.h). The row's name
 * is formatted from the id when the spec has no suffix.
 */
static int read_deleted(sqlite3_stmt *st, void *ud)
{
    *(bool *)ud = !strcmp((const char *)sqlite3_column_text(st, 0), "deleted");
    return 0;
}

static int alloc_row(struct db *db, const char *pool, const struct thin_spec *spec,
                     uint32_t origin_id, uint64_t size, uint32_t *id_out, char *name, size_t name_n,
                     struct err *e)
{
    _cleanup_tx_ struct db_tx tx = {0};
    int r = db_tx_begin(&tx, db);
    if (r < 0)
        return err_set(e, r, "cannot start a transaction: %s", db_errmsg(db));
    int64_t next = 1;
    r = db_query_int(db, "SELECT next_id FROM device_id_seq WHERE pool=?", &next, DB_TEXT(pool));
    if (r < 0)
        return err_set(e, r, "cannot read the id sequence: %s", db_errmsg(db));
    /* Find the first id from `next` on whose row is absent or deleted (wrapping once). */
    int64_t id = 0;
    for (int64_t tries = 0; tries <= (int64_t)THIN_ID_MAX; tries++, next++) {
        if (next > THIN_ID_MAX)
            next = 1;
        bool deleted = false;
        r = db_query_one(db, "SELECT state FROM devices WHERE pool=? AND dev_id=?", read_deleted,
                         &deleted, DB_TEXT(pool), DB_INT(next));
        if (r < 0)
            return err_set(e, r, "cannot read devices: %s", db_errmsg(db));
        if (r == 0 || deleted) {
            id = next;
            break;
        }
    }
    if (id == 0)
        return err_set(e, -ENOSPC, "pool \"%s\": all %u thin ids are in use; run `thinimg gc`",
                       pool, THIN_ID_MAX);
    char idbuf[16];
    snprintf(idbuf, sizeof(idbuf), "%" PRId64, id);
    r = dm_name_format(name, name_n, pool, thin_kind_dm_name(spec->kind),
                       spec->name_suffix ? spec->name_suffix : idbuf);
    if (r < 0)
        return err_set(e, r,
                       "invalid device name for pool \"%s\" and \"%s\" (allowed: "
                       "[A-Za-z0-9_.-], at most %d bytes in all)",
                       pool, spec->name_suffix ? spec->name_suffix : idbuf, DM_NAME_MAX);
    int64_t now = now_ms();
    /* A reused id (after wrap-around) replaces its `deleted` row; nothing else is replaced
     * (INSERT OR REPLACE would also evict a live row holding the same name). */
    r = db_run(db, "DELETE FROM devices WHERE pool=? AND dev_id=? AND state='deleted'",
               DB_TEXT(pool), DB_INT(id));
    if (r < 0)
        return err_set(e, r, "cannot reuse id %" PRId64 ": %s", id, db_errmsg(db));
    r = db_run(db,
               "INSERT INTO devices(pool, dev_id, name, kind, state, origin_id, size_bytes, "
               "error, created_at_ms, updated_at_ms) VALUES(?,?,?,?,'creating',?,?,NULL,?,?)",
               DB_TEXT(pool), DB_INT(id), DB_TEXT(name), DB_TEXT(thin_kind_db_name(spec->kind)),
               origin_id ? DB_INT(origin_id) : DB_NULL(), DB_INT(size), DB_INT(now), DB_INT(now));
    if (r == -EEXIST)
        return err_set(e, r,
                       "a device named %s already exists in the database (see "
                       "`thinimg status`)",
                       name);
    if (r < 0)
        return err_set(e, r, "cannot record device %s: %s", name, db_errmsg(db));
    r = db_run(db,
               "INSERT INTO device_id_seq(pool, next_id) VALUES(?,?) ON CONFLICT(pool) DO "
               "UPDATE SET next_id=excluded.next_id",
               DB_TEXT(pool), DB_INT(id + 1));
    if (r < 0)
        return err_set(e, r, "cannot advance the id sequence: %s", db_errmsg(db));
    r = db_tx_commit(&tx);
    if (r < 0)
        return err_set(e, r, "cannot commit device %s: %s", name, db_errmsg(db));
    *id_out = (uint32_t)id;
    return 0;
}

/* A collision: the row keeps the id forever under a placeholder name. */
static int mark_foreign(struct db *db, const char *pool, uint32_t id)
{
    char idbuf[16], name[DM_NAME_MAX + 1];
    snprintf(idbuf, sizeof(idbuf), "%u", id);
    int r = dm_name_format(name, sizeof(name), pool, DM_KIND_FOREIGN, idbuf);
    if (r < 0)
        return r;
    return db_run_tx(db,
                     "UPDATE devices SET state='foreign', name=?, error=?, updated_at_ms=? WHERE "
                     "pool=? AND dev_id=?",
                     DB_TEXT(name),
                     DB_TEXT("the pool already had this id (collision with a device thinimg "
                             "did not create); the id is never used"),
                     DB_INT(now_ms()), DB_TEXT(pool), DB_INT(id));
}

static int create_common(struct db *db, const char *pool, uint32_t origin_id,
                         const struct thin_spec *spec, uint64_t size, uint32_t *id_out,
                         struct err *e)
{
    if (!dm_name_valid(pool))
        return err_set(e, -EINVAL, "invalid pool name \"%s\"", pool);
    if (size == 0 || size % DM_SECTOR_SIZE)
        return err_set(e, -EINVAL, "device size %" PRIu64 " is not a positive multiple of 512",
                       size);
    for (int attempt = 0; attempt < THIN_COLLISION_MAX; attempt++) {
        uint32_t id = 0;
        char name[DM_NAME_MAX + 1];
        int r = alloc_row(db, pool, spec, origin_id, size, &id, name, sizeof(name), e);
        if (r < 0)
            return r;
        char msg[64];
        if (origin_id)
            snprintf(msg, sizeof(msg), "create_snap %u %u", id, origin_id);
        else
            snprintf(msg, sizeof(msg), "create_thin %u", id);
        struct err me = {0};
        r = dm_dev_message(pool, msg, NULL, &me);
        if (r == -EEXIST) {
            log_warn("thin id collision: the pool already has this id", "pool=%s dev_id=%u", pool,
                     id);
            int k = mark_foreign(db, pool, id);
            if (k < 0)
                return err_set(e, k, "cannot record collided id %u: %s", id, strerror(-k));
            continue;
        }
        if (r < 0) {
            err_set(e, r, "pool \"%s\": %s", pool, err_str(&me));
            mark_failed(db, pool, id, e, r);
            return r;
        }
        if (thin_test_hook_after_message)
            thin_test_hook_after_message(id);
        r = set_state(db, pool, id, "ready", NULL);
        if (r < 0)
            return err_set(e, r,
                           "device %u was created in pool \"%s\" but cannot be recorded "
                           "as ready: %s",
                           id, pool, db_errmsg(db));
        log_info("thin device created", "pool=%s dev_id=%u name=%s origin=%u size=%" PRIu64, pool,
                 id, name, origin_id, size);
        *id_out = id;
        return 0;
    }
    return err_set(e, -EEXIST,
                   "pool \"%s\": %d thin ids in a row were already in use by devices thinimg "
                   "did not create; inspect the pool (thin_ls) and `thinimg gc`",
                   pool, THIN_COLLISION_MAX);
}

int thin_create(struct db *db, const char *pool, const struct thin_spec *spec, uint32_t *id,
                struct err *e)
{
    return create_common(db, pool, 0, spec, spec->size_bytes, id, e);
}

/* The row of device id, for an operation on it: 0, or -ENOENT ("no device <id><missing>") or
 * a database error, with e set. verb (e.g. "snapshot"): the device must also be ready, else
 * -EINVAL ("... not ready: cannot <verb> it"); NULL: any state will do. */
static int dev_for(struct db *db, const char *pool, uint32_t id, const char *missing,
                   const char *verb, struct thin_dev *d, struct err *e)
{
    int r = thin_get(db, pool, id, d);
    if (r == -ENOENT)
        return err_set(e, r, "pool \"%s\": no device %u%s", pool, id, missing);
    if (r < 0)
        return err_set(e, r, "cannot read device %u: %s", id, strerror(-r));
    if (verb && strcmp(d->state, "ready") != 0)
        return err_set(e, -EINVAL, "device %s (id %u) is %s, not ready: cannot %s it", d->name, id,
                       d->state, verb);
    return 0;
}

int thin_snapshot(struct db *db, const char *pool, uint32_t origin_id, const struct thin_spec *spec,
                  uint32_t *id, struct err *e)
{
    struct thin_dev o;
    int r = dev_for(db, pool, origin_id, " to snapshot", "snapshot", &o, e);
    if (r < 0)
        return r;
    r = dm_dev_exists(o.name);
    if (r < 0)
        return err_set(e, r, "cannot query device %s: %s", o.name, strerror(-r));
    if (r > 0)
        return err_set(e, -EBUSY,
                       "origin %s (id %u) is active; deactivate it before taking a "
                       "snapshot",
                       o.name, origin_id);
    return create_common(db, pool, origin_id, spec,
                         spec->size_bytes ? spec->size_bytes : o.size_bytes, id, e);
}

static int thin_table_params(char *out, size_t n, const char *pool, uint32_t id)
{
    char pool_path[DM_NAME_MAX + 32];
    int r = dm_dev_path(pool_path, sizeof(pool_path), pool);
    if (r < 0)
        return r;
    return (size_t)snprintf(out, n, "%s %u", pool_path, id) >= n ? -ENAMETOOLONG : 0;
}

int thin_activate(struct db *db, const char *pool, uint32_t id, char *path, size_t n, struct err *e)
{
    struct thin_dev d;
    int r = dev_for(db, pool, id, "", "activate", &d, e);
    if (r < 0)
        return r;
    char params[DM_NAME_MAX + 64];
    r = thin_table_params(params, sizeof(params), pool, id);
    if (r < 0)
        return err_set(e, r, "invalid pool name \"%s\"", pool);
    if (path && (r = dm_dev_path(path, n, d.name)) < 0)
        return err_set(e, r, "device name %s too long", d.name);
    uint64_t sectors = d.size_bytes / DM_SECTOR_SIZE;
    struct dm_target_line t;
    r = dm_dev_table(d.name, &t, NULL);
    if (r == 0) {
        /* Already active: fine if it is this device (same pool dev number or path). */
        char want_tail[32];
        snprintf(want_tail, sizeof(want_tail), " %u", id);
        size_t lt = strlen(t.params), lw = strlen(want_tail);
        if (!strcmp(t.type, "thin") && t.length == sectors && lt > lw &&
            !strcmp(t.params + lt - lw, want_tail))
            return 0;
        return err_set(e, -EEXIST, "a device named %s is active with another table (%s %s)", d.name,
                       t.type, t.params);
    }
    r = dm_dev_create(d.name, sectors, "thin", params, false, e);
    if (r < 0) {
        mark_failed(db, pool, id, e, r);
        return r;
    }
    log_info("thin device activated", "pool=%s dev_id=%u name=%s", pool, id, d.name);
    return 0;
}

int thin_deactivate(struct db *db, const char *pool, uint32_t id, struct err *e)
{
    struct thin_dev d;
    int r = dev_for(db, pool, id, "", NULL, &d, e);
    if (r < 0)
        return r;
    r = dm_dev_exists(d.name);
    if (r <= 0)
        return r < 0 ? err_set(e, r, "cannot query device %s", d.name) : 0;
    struct dm_dev_info info;
    r = dm_dev_info(d.name, &info, e);
    if (r < 0)
        return r;
    if (info.open_count > 0)
        return err_set(e, -EBUSY,
                       "device %s is open (%d users: mounted or in use); unmount it "
                       "or stop its user first",
                       d.name, info.open_count);
    r = dm_dev_remove(d.name, true, e);
    if (r == -ENXIO)
        return 0;
    if (r == 0)
        log_info("thin device deactivated", "pool=%s dev_id=%u name=%s", pool, id, d.name);
    return r;
}

int thin_delete(struct db *db, const char *pool, uint32_t id, struct err *e)
{
    struct thin_dev d;
    int r = thin_get(db, pool, id, &d);
    bool known = r == 0;
    if (r < 0 && r != -ENOENT)
        return err_set(e, r, "cannot read device %u: %s", id, strerror(-r));
    if (known) {
        r = dm_dev_exists(d.name);
        if (r < 0)
            return err_set(e, r, "cannot query device %s", d.name);
        if (r > 0)
            return err_set(e, -EBUSY,
                           "device %s (id %u) is active; deactivate it before "
                           "deleting",
                           d.name, id);
        r = set_state(db, pool, id, "deleting", NULL);
        if (r < 0)
            return err_set(e, r, "cannot record device %u as deleting: %s", id, db_errmsg(db));
    }
    char msg[32];
    snprintf(msg, sizeof(msg), "delete %u", id);
    struct err me = {0};
    r = dm_dev_message(pool, msg, NULL, &me);
    if (r == -ENODATA)
        r = 0; /* not in the pool: nothing to delete */
    if (r < 0)
        return err_set(e, r, "pool \"%s\": %s", pool, err_str(&me));
    if (known) {
        r = set_state(db, pool, id, "deleted", NULL);
        if (r < 0)
            return err_set(e, r, "device %u deleted from the pool but not recorded: %s", id,
                           db_errmsg(db));
    }
    log_info("thin device deleted", "pool=%s dev_id=%u", pool, id);
    return 0;
}

/* How often a reader waiting for the metadata snapshot lock tries again. */
#define SNAP_LOCK_POLL_MS 20

/* An exclusive flock on the metadata device meta, waited for up to timeout_ms: *fd holds it. */
static int snap_lock(const char *meta, const char *pool, int timeout_ms, int *fd, struct err *e)
{
    *fd = open(meta, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return err_set(e, -errno, "cannot open the metadata device %s of pool %s: %s", meta, pool,
                       strerror(errno));
    int64_t deadline = mono_ms() + timeout_ms;
    while (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK && errno != EINTR)
            return err_set(e, -errno, "cannot lock the metadata device %s of pool %s: %s", meta,
                           pool, strerror(errno));
        if (mono_ms() >= deadline)
            return err_set(e, -EBUSY,
                           "another reader held the metadata snapshot of pool %s for more than "
                           "%d ms; try again",
                           pool, timeout_ms);
        usleep(SNAP_LOCK_POLL_MS * 1000);
    }
    return 0;
}

/* Calls fn(meta, ud, e) while the pool holds a metadata snapshot (see
 * thin_metadata_snap_exec): meta is the metadata device's path. fn's return is returned. */
static int with_metadata_snap(const char *pool, int timeout_ms,
                              int (*fn)(const char *meta, void *ud, struct err *e), void *ud,
                              struct err *e)
{
    struct dm_target_line t;
    int r = dm_dev_table(pool, &t, e);
    if (r < 0)
        return r;
    if (strcmp(t.type, "thin-pool") != 0)
        return err_set(e, -EINVAL, "%s is a %s device, not a thin-pool", pool, t.type);
    struct pool_table pt;
    if (pool_table_parse(t.params, &pt) < 0)
        return err_set(e, -EBADMSG, "cannot parse the table of pool %s: %s", pool, t.params);
    char meta[128];
    r = pt.metadata_dev[0] == '/' ? (snprintf(meta, sizeof(meta), "%s", pt.metadata_dev), 0)
                                  : block_dev_path(pt.metadata_dev, meta, sizeof(meta));
    if (r < 0)
        return err_set(e, r, "cannot find the metadata device %s of pool %s", pt.metadata_dev,
                       pool);
    /* The pool has one snapshot slot: readers in this and other processes take turns, by a
     * lock on the metadata device (the file every reader opens anyway), so none releases the
     * snapshot another is still reading. */
    _cleanup_close_ int lock_fd = -1;
    r = snap_lock(meta, pool, timeout_ms, &lock_fd, e);
    if (r < 0)
        return r;
    struct err me = {0};
    r = dm_dev_message(pool, "reserve_metadata_snap", NULL, &me);
    if (r == -EBUSY) {
        /* A snapshot is held while no reader holds the lock: one that died left it (kill -9
         * between reserve and release), or a reader that does not take turns. Reading it
         * would answer from the pool as it was then (a layer made since would look deleted),
         * so take a fresh one. */
        log_warn("a metadata snapshot was left reserved; taking a fresh one",
                 "pool=%s hint=\"readers outside thinimg take turns by flock(2) on %s\"", pool,
                 meta);
        struct err re = {0};
        r = dm_dev_message(pool, "release_metadata_snap", NULL, &re);
        if (r == 0)
            r = dm_dev_message(pool, "reserve_metadata_snap", NULL, &me);
        else
            me = re;
    }
    bool reserved = r == 0;
    if (r < 0)
        return err_set(e, r, "pool \"%s\": %s", pool, err_str(&me));
    int rc = fn(meta, ud, e);
    if (reserved) {
        struct err re = {0};
        int k = dm_dev_message(pool, "release_metadata_snap", NULL, &re);
        if (k < 0)
            log_warn("cannot release the metadata snapshot", "pool=%s error=%s", pool,
                     err_str(&re));
    }
    return rc;
}

struct snap_exec {
    const char *pool;
    const char *const *args;
    int timeout_ms;
    struct buf *out, *errout;
};

static int snap_exec_fn(const char *meta, void *ud, struct err *e)
{
    struct snap_exec *x = ud;
    size_t nargs = 0;
    while (x->args[nargs])
        nargs++;
    if (nargs == 0 || nargs > THIN_SNAP_EXEC_MAX_ARGS)
        return err_set(e, -EINVAL, "metadata snapshot command: %zu arguments (1 to %d)", nargs,
                       THIN_SNAP_EXEC_MAX_ARGS);
    char *argv[THIN_SNAP_EXEC_MAX_ARGS + 2];
    for (size_t i = 0; i < nargs; i++)
        argv[i] = (char *)x->args[i];
    argv[nargs] = (char *)meta;
    argv[nargs + 1] = NULL;
    int rc = dm_exec(argv, x->timeout_ms, x->out, x->errout, e);
    if (rc < 0)
        return rc;
    if (rc != 0)
        return err_set(e, -EIO, "%s on %s (pool %s) failed with status %d: %s", x->args[0], meta,
                       x->pool, rc, x->errout->data ? x->errout->data : "");
    return 0;
}

int thin_metadata_snap_exec(const char *pool, const char *const args[], int timeout_ms,
                            struct buf *out, struct buf *errout, struct err *e)
{
    struct snap_exec x = {
        .pool = pool, .args = args, .timeout_ms = timeout_ms, .out = out, .errout = errout};
    return with_metadata_snap(pool, timeout_ms, snap_exec_fn, &x, e);
}

unsigned long thin_metadata_reads_in_process;

struct snap_ids {
    uint32_t *ids;
    size_t n;
    bool refused; /* the reader (not the pool or its snapshot) failed: thin_ls may still read it */
};

static int snap_ids_fn(const char *meta, void *ud, struct err *e)
{
    struct snap_ids *x = ud;
    _cleanup_close_ int fd = open(meta, O_RDONLY | O_DIRECT | O_CLOEXEC);
    x->refused = true;
    if (fd < 0)
        return err_set(e, -errno, "cannot open the metadata device %s: %s", meta, strerror(errno));
    struct err re = {0};
    int r = thin_meta_read_ids(fd, true, &x->ids, &x->n, &re);
    if (r < 0)
        return err_set(e, r, "metadata device %s: %s", meta, err_str(&re));
    x->refused = false;
    return 0;
}

int thin_pool_metadata_ids(const char *pool, uint32_t **ids, uint64_t **mapped_bytes, size_t *n,
                           struct err *e)
{
    *ids = NULL;
    if (mapped_bytes)
        *mapped_bytes = NULL;
    *n = 0;
    if (!mapped_bytes) {
        /* Ids only: the device details tree, read here (dm/thin_meta.h); a metadata device
         * this reader refuses is left to thin_ls below. */
        struct snap_ids x = {0};
        struct err me = {0};
        int r = with_metadata_snap(pool, THIN_LS_TIMEOUT_MS, snap_ids_fn, &x, &me);
        if (r == 0) {
            thin_metadata_reads_in_process++;
            *ids = x.ids;
            *n = x.n;
            return 0;
        }
        free(x.ids);
        if (!x.refused) /* the pool or its snapshot failed: thin_ls would fail the same way */
            return err_set(e, r, "%s", err_str(&me));
        log_warn("cannot read the pool's metadata in-process: asking thin_ls", "pool=%s error=%s",
                 pool, err_str(&me));
    }
    static const char *const args[] = {"thin_ls", "--metadata-snap",  "--no-headers",
                                       "-o",      "DEV,MAPPED_BYTES", NULL};
    _cleanup_buf_ struct buf out = BUF_INIT, errout = BUF_INIT;
    int r = thin_metadata_snap_exec(pool, args, THIN_LS_TIMEOUT_MS, &out, &errout, e);
    if (r < 0)
        return r;
    uint32_t *v = NULL;
    uint64_t *mb = NULL;
    size_t k = 0;
    char *save = NULL;
    for (char *line = strtok_r(out.data ? out.data : (char[]){""}, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned long long id = 0, bytes = 0;
        if (sscanf(line, "%llu %llu", &id, &bytes) < 1 || id > THIN_ID_MAX)
            continue;
        uint32_t *nv = realloc(v, (k + 1) * sizeof(*v));
        uint64_t *nb = nv ? realloc(mb, (k + 1) * sizeof(*mb)) : NULL;
        if (nv)
            v = nv;
        if (nb)
            mb = nb;
        if (!nv || !nb) {
            free(v);
            free(mb);
            return -ENOMEM;
        }
        v[k] = (uint32_t)id;
        mb[k] = bytes;
        k++;
    }
    /* thin_ls lists in id order already; sort ids (and keep bytes paired) to be sure. */
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            uint32_t tv = v[j];
            v[j] = v[j - 1];
            v[j - 1] = tv;
            uint64_t tb = mb[j];
            mb[j] = mb[j - 1];
            mb[j - 1] = tb;
        }
    *ids = v;
    if (mapped_bytes)
        *mapped_bytes = mb;
    else
        free(mb);
    *n = k;
    return 0;
}

/* Whether every block of the device at dev reads as zeros until it is written: a dm thin
 * device whose pool zeroes newly provisioned blocks (its table lacks skip_block_zeroing;
 * thinimg never sets it, docs/dm.md "Pool sizing"). An unprovisioned block reads as zeros and
 * a block provisioned by a partial write is zeroed first, so mkfs need not write zeros. Anything
 * not known for sure (not a thin device, its pool not found, a pool adopted with
 * skip_block_zeroing) is false, and mkfs then zeroes the inode tables and journal itself. */
static bool dev_reads_zeros(const char *dev)
{
    static const char mapper[] = "/dev/mapper/";
    if (strncmp(dev, mapper, sizeof(mapper) - 1) != 0)
        return false;
    struct err e = {0};
    struct dm_target_line t;
    unsigned maj, min;
    if (dm_dev_table(dev + sizeof(mapper) - 1, &t, &e) < 0 || strcmp(t.type, "thin") != 0 ||
        sscanf(t.params, "%u:%u", &maj, &min) != 2)
        return false;
    char path[64];
    snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/dm/name", maj, min);
    _cleanup_buf_ struct buf name = BUF_INIT;
    if (read_file(path, DM_NAME_MAX + 2, &name) < 0 || !name.data)
        return false;
    name.data[strcspn(name.data, "\n")] = '\0';
    struct pool_table pt;
    if (dm_dev_table(name.data, &t, &e) < 0 || strcmp(t.type, "thin-pool") != 0 ||
        pool_table_parse(t.params, &pt) < 0)
        return false;
    return !pool_table_has_feature(&pt, "skip_block_zeroing");
}

int dm_mkfs_ext4(const char *dev, const char *label, struct err *e)
{
    char journal[32];
    snprintf(journal, sizeof(journal), "size=%d", MKFS_JOURNAL_MIB);
    bool zeros = dev_reads_zeros(dev);
    char *argv[] = {"mkfs.ext4",
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-J",
                    journal,
                    "-E",
                    zeros ? MKFS_EXTENDED_PREZEROED : MKFS_EXTENDED_ZEROING,
                    "-L",
                    (char *)(label && *label ? label : "thinimg"),
                    (char *)dev,
                    NULL};
    _cleanup_buf_ struct buf errout = BUF_INIT;
    int64_t t0 = mono_ms();
    int rc = dm_exec(argv, MKFS_TIMEOUT_MS, NULL, &errout, e);
    if (rc < 0)
        return rc;
    if (rc != 0)
        return err_set(e, -EIO, "mkfs.ext4 on %s failed (status %d): %s", dev, rc,
                       errout.data ? errout.data : "");
    log_info("file system created", "dev=%s fs=ext4 prezeroed=%s ms=%lld", dev,
             zeros ? "yes" : "no", (long long)(mono_ms() - t0));
    return 0;
}
