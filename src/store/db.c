/*
 * db.c: SQLite connection, migrations, statement cache and writer transactions. See db.h.
 *
 * The statement cache is a small linked list keyed by SQL text; the project has a few dozen
 * distinct statements, so a list scan is cheaper than hashing and keeps the code obvious.
 */
#include "store/db.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/log.h"
#include "util/timeutil.h"

struct stmt_cache {
    char *sql;
    sqlite3_stmt *st;
    struct stmt_cache *next;
};

struct db {
    sqlite3 *h;
    char *path;
    char *reserve_path;   /* NULL for a read-only connection */
    pthread_mutex_t lock; /* recursive */
    int tx_depth;
    bool tx_failed;
    struct stmt_cache *cache;
};

int db_rc_to_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return -EBUSY;
    case SQLITE_CONSTRAINT: return -EEXIST;
    case SQLITE_FULL: return -ENOSPC;
    case SQLITE_NOMEM: return -ENOMEM;
    case SQLITE_READONLY: return -EROFS;
    case SQLITE_CANTOPEN: return -ENOENT;
    case SQLITE_PERM:
    case SQLITE_AUTH: return -EACCES;
    case SQLITE_TOOBIG: return -E2BIG;
    case SQLITE_INTERRUPT: return -EINTR;
    default: return -EIO;
    }
}

sqlite3 *db_handle(struct db *db)
{
    return db->h;
}

const char *db_path(const struct db *db)
{
    return db->path;
}

const char *db_errmsg(struct db *db)
{
    return sqlite3_errmsg(db->h);
}

void db_lock(struct db *db)
{
    pthread_mutex_lock(&db->lock);
}

void db_unlock(struct db *db)
{
    pthread_mutex_unlock(&db->lock);
}

int db_exec(struct db *db, const char *sql)
{
    char *msg = NULL;
    db_lock(db);
    int rc = sqlite3_exec(db->h, sql, NULL, NULL, &msg);
    db_unlock(db);
    if (rc != SQLITE_OK) {
        log_error("sql failed", "error=%s sql=%.200s", msg ? msg : sqlite3_errstr(rc), sql);
        sqlite3_free(msg);
        return db_rc_to_errno(rc);
    }
    return 0;
}

/* The database and its companions hold everything thinimg knows (and once held URLs):
 * owner only, whatever the umask. SQLite gives the WAL and SHM files the mode of the database
 * file, so creating that one with DB_FILE_MODE is enough for new files; existing ones (made by
 * an older thinimg) are tightened. */
static int db_files_private(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, DB_FILE_MODE);
    if (fd < 0)
        return neg_errno();
    int r = fchmod(fd, DB_FILE_MODE) < 0 ? neg_errno() : 0;
    close(fd);
    static const char *const companions[] = {"-wal", "-shm", DB_RESERVE_SUFFIX};
    for (size_t i = 0; r == 0 && i < sizeof(companions) / sizeof(companions[0]); i++) {
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s%s", path, companions[i]) < 0)
            return -ENOMEM;
        if (chmod(p, DB_FILE_MODE) < 0 && errno != ENOENT)
            r = neg_errno();
    }
    return r;
}

/* Make the reserve file DB_RESERVE_BYTES long (blocks allocated), if there is room. */
static void reserve_fill(struct db *db)
{
    struct stat st;
    if (stat(db->reserve_path, &st) == 0 && (uint64_t)st.st_blocks * 512 >= DB_RESERVE_BYTES)
        return;
    int fd = open(db->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, DB_FILE_MODE);
    if (fd < 0)
        return;
    int r = posix_fallocate(fd, 0, (off_t)DB_RESERVE_BYTES);
    close(fd);
    if (r != 0) {
        unlink(db->reserve_path);
        log_warn("no room for the database's reserve; a full disk may keep a failure from "
                 "being recorded",
                 "path=%s bytes=%llu error=%s", db->reserve_path,
                 (unsigned long long)DB_RESERVE_BYTES, strerror(r));
    }
}

void db_release_reserve(struct db *db)
{
    if (db->reserve_path && unlink(db->reserve_path) == 0)
        log_warn("disk full: released the database's reserve to record what happened",
                 "path=%s bytes=%llu", db->reserve_path, (unsigned long long)DB_RESERVE_BYTES);
}

int db_open(const char *path, const struct db_options *opt, struct db **out, struct err *e)
{
    struct db_options o = {.readonly = false, .synchronous = DB_SYNC_FULL,
                           .busy_timeout_ms = DB_BUSY_TIMEOUT_MS};
    if (opt) {
        o = *opt;
        if (o.busy_timeout_ms <= 0)
            o.busy_timeout_ms = DB_BUSY_TIMEOUT_MS;
    }
    struct db *db = calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    db->path = strdup(path);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&db->lock, &a);
    pthread_mutexattr_destroy(&a);

    int flags = SQLITE_OPEN_FULLMUTEX | (o.readonly ? SQLITE_OPEN_READONLY
                                                    : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (!o.readonly) {
        int r = db_files_private(path);
        if (r < 0 || asprintf(&db->reserve_path, "%s%s", path, DB_RESERVE_SUFFIX) < 0) {
            r = r < 0 ? r : -ENOMEM;
            err_set(e, r, "cannot create database %s: %s", path, strerror(-r));
            db_close(db);
            return r;
        }
    }
    int rc = sqlite3_open_v2(path, &db->h, flags, NULL);
    if (rc != SQLITE_OK) {
        int r = err_set(e, db_rc_to_errno(rc), "cannot open database %s: %s", path,
                        db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
        db_close(db);
        return r;
    }
    sqlite3_extended_result_codes(db->h, 1);
    sqlite3_busy_timeout(db->h, o.busy_timeout_ms);

    char pragmas[256];
    static const char *const sync_names[] = {"OFF", "NORMAL", "FULL"};
    snprintf(pragmas, sizeof(pragmas),
             "%s PRAGMA foreign_keys=ON; PRAGMA synchronous=%s; PRAGMA temp_store=MEMORY;",
             o.readonly ? "" : "PRAGMA journal_mode=WAL;", sync_names[o.synchronous]);
    int r = db_exec(db, pragmas);
    if (r < 0) {
        err_set(e, r, "cannot configure database %s: %s", path, sqlite3_errmsg(db->h));
        db_close(db);
        return r;
    }
    if (db->reserve_path)
        reserve_fill(db);
    *out = db;
    return 0;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    struct stmt_cache *c = db->cache;
    while (c) {
        struct stmt_cache *next = c->next;
        sqlite3_finalize(c->st);
        free(c->sql);
        free(c);
        c = next;
    }
    if (db->h)
        sqlite3_close_v2(db->h);
    pthread_mutex_destroy(&db->lock);
    free(db->path);
    free(db->reserve_path);
    free(db);
}

sqlite3_stmt *db_prepare(struct db *db, const char *sql)
{
    db_lock(db);
    for (struct stmt_cache *c = db->cache; c; c = c->next)
        if (strcmp(c->sql, sql) == 0) {
            sqlite3_reset(c->st);
            sqlite3_clear_bindings(c->st);
            db_unlock(db);
            return c->st;
        }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        log_error("sql prepare failed", "error=%s sql=%.200s", sqlite3_errmsg(db->h), sql);
        db_unlock(db);
        return NULL;
    }
    struct stmt_cache *c = calloc(1, sizeof(*c));
    if (!c || !(c->sql = strdup(sql))) {
        free(c);
        sqlite3_finalize(st);
        db_unlock(db);
        return NULL;
    }
    c->st = st;
    c->next = db->cache;
    db->cache = c;
    db_unlock(db);
    return st;
}

void db_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

int db_step(struct db *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    log_error("sql step failed", "error=%s sql=%.200s", sqlite3_errmsg(db->h), sqlite3_sql(st));
    int r = db_rc_to_errno(rc);
    if (r == -ENOSPC)
        db_release_reserve(db); /* so that the failure itself can be recorded */
    return r;
}

int db_begin(struct db *db)
{
    db_lock(db);
    if (db->tx_depth++ > 0)
        return 0;
    db->tx_failed = false;
    int rc = sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        int r = db_rc_to_errno(rc);
        log_error("sql begin failed", "error=%s", sqlite3_errmsg(db->h));
        db->tx_depth--;
        db_unlock(db);
        return r;
    }
    return 0;
}

/* SQLite rolls a transaction back by itself after some errors (SQLITE_FULL, SQLITE_IOERR,
 * SQLITE_NOMEM during COMMIT or a statement): a ROLLBACK then fails with "cannot rollback - no
 * transaction is active" and hides the real error. Roll back only what is still open. */
static void rollback_if_open(struct db *db)
{
    if (!sqlite3_get_autocommit(db->h))
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

int db_commit(struct db *db)
{
    int r = 0;
    if (db->tx_depth <= 0) {
        log_error("db_commit outside a transaction");
        return -EINVAL;
    }
    if (--db->tx_depth == 0) {
        if (db->tx_failed) {
            rollback_if_open(db);
            r = -ECANCELED;
        } else {
            int rc = sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
            if (rc != SQLITE_OK) {
                r = db_rc_to_errno(rc);
                log_error("sql commit failed", "error=%s", sqlite3_errmsg(db->h));
                if (r == -ENOSPC)
                    db_release_reserve(db);
                rollback_if_open(db);
            }
        }
    }
    db_unlock(db);
    return r;
}

int db_step_commit(struct db *db, sqlite3_stmt *st)
{
    int r = st ? db_step(db, st) : -EIO;
    if (st)
        db_done(st);
    if (r < 0) {
        db_rollback(db);
        return r;
    }
    return db_commit(db);
}

void db_rollback(struct db *db)
{
    if (db->tx_depth <= 0)
        return;
    if (--db->tx_depth == 0)
        rollback_if_open(db);
    else
        db->tx_failed = true;
    db_unlock(db);
}

bool db_in_tx(struct db *db)
{
    return db->tx_depth > 0;
}

int db_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    int rc = s ? sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, idx);
    return db_rc_to_errno(rc);
}

int db_bind_blob(sqlite3_stmt *st, int idx, const void *p, size_t n)
{
    int rc = p ? sqlite3_bind_blob64(st, idx, p, n, SQLITE_TRANSIENT) : sqlite3_bind_null(st, idx);
    return db_rc_to_errno(rc);
}

int db_bind_i64(sqlite3_stmt *st, int idx, int64_t v)
{
    return db_rc_to_errno(sqlite3_bind_int64(st, idx, v));
}

char *db_col_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s ? strdup((const char *)s) : NULL;
}

static const char migrations_table[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations("
    " component TEXT NOT NULL, version INTEGER NOT NULL, description TEXT NOT NULL,"
    " applied_at_ms INTEGER NOT NULL, PRIMARY KEY(component, version))";

int db_schema_version(struct db *db, const char *component, int *out)
{
    *out = 0;
    db_lock(db);
    int r = db_exec(db, migrations_table);
    if (r < 0) {
        db_unlock(db);
        return r;
    }
    sqlite3_stmt *st =
        db_prepare(db, "SELECT COALESCE(MAX(version),0) FROM schema_migrations WHERE component=?");
    if (!st) {
        db_unlock(db);
        return -EIO;
    }
    db_bind_text(st, 1, component);
    r = db_step(db, st);
    if (r == 1) {
        *out = sqlite3_column_int(st, 0);
        r = 0;
    }
    db_done(st);
    db_unlock(db);
    return r;
}

int db_migrate(struct db *db, const char *component, const struct db_migration *m, size_t n,
               struct err *e)
{
    int have = 0;
    int r = db_schema_version(db, component, &have);
    if (r < 0)
        return err_set(e, r, "cannot read schema version of %s: %s", db->path, db_errmsg(db));
    if (n > 0 && have > m[n - 1].version)
        return err_set(e, -EPROTO,
                       "database %s has %s schema version %d, newer than this thinimg knows (%d);"
                       " upgrade thinimg",
                       db->path, component, have, m[n - 1].version);
    for (size_t i = 0; i < n; i++) {
        if (m[i].version <= have)
            continue;
        r = db_begin(db);
        if (r < 0)
            return err_set(e, r, "cannot start migration: %s", db_errmsg(db));
        char *msg = NULL;
        int rc = sqlite3_exec(db->h, m[i].sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            r = err_set(e, db_rc_to_errno(rc), "migration %s v%d (%s) failed: %s", component,
                        m[i].version, m[i].description, msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            db_rollback(db);
            return r;
        }
        sqlite3_stmt *st = db_prepare(db, "INSERT INTO schema_migrations(component, version,"
                                          " description, applied_at_ms) VALUES(?,?,?,?)");
        if (!st) {
            db_rollback(db);
            return err_set(e, -EIO, "cannot record migration: %s", db_errmsg(db));
        }
        db_bind_text(st, 1, component);
        db_bind_i64(st, 2, m[i].version);
        db_bind_text(st, 3, m[i].description);
        db_bind_i64(st, 4, now_ms());
        r = db_step(db, st);
        db_done(st);
        if (r < 0) {
            db_rollback(db);
            return err_set(e, r, "cannot record migration: %s", db_errmsg(db));
        }
        r = db_commit(db);
        if (r < 0)
            return err_set(e, r, "cannot commit migration %s v%d: %s", component, m[i].version,
                           db_errmsg(db));
        log_debug("migration applied", "component=%s version=%d", component, m[i].version);
    }
    return 0;
}
