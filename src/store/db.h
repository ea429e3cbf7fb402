/*
 * db.h: the one SQLite database (generic layer: no knowledge of images or runs).
 *
 * Every module keeps its state in the same database file, so that one transaction can
 * checkpoint an FSM transition together with the domain rows it produced. This layer gives:
 *
 *  - db_open(): WAL, foreign_keys=ON, busy_timeout, an explicit `synchronous` setting, set on
 *    the connection it opens (one connection per struct db, so the settings always apply).
 *  - db_migrate(): versioned migrations per component, recorded in `schema_migrations`
 *    (component, version, description, applied_at_ms); each one in its own transaction.
 *  - a statement cache: db_prepare() compiles once per SQL text and hands back the same
 *    sqlite3_stmt, reset, on later calls.
 *  - writers: db_begin() takes the connection lock and runs BEGIN IMMEDIATE (so a writer never
 *    upgrades a read lock and dies on SQLITE_BUSY half-way); db_commit()/db_rollback() end the
 *    transaction and release the lock.
 *
 * Threads: a struct db is one connection shared by the threads of a process. It is guarded by
 * a recursive mutex: hold it with db_lock()/db_unlock() around reads, or be inside
 * db_begin()..db_commit(), whenever you use a statement from db_prepare(). Transactions nest
 * by counting: an inner db_begin() inside an open transaction only counts, and only the
 * outermost db_commit() commits. A rollback anywhere rolls back the whole transaction.
 *
 * Files: the database, its WAL and SHM are created owner-only (DB_FILE_MODE) whatever the
 * umask. Next to them lies a reserve file (<db>-reserve, DB_RESERVE_BYTES): when the disk
 * fills up, SQLite cannot even record that something failed; the first SQLITE_FULL (or a
 * caller that hit ENOSPC itself: db_release_reserve()) deletes the reserve so that the failure
 * can be written, and the next db_open() makes it again when there is room.
 *
 * Errors: functions return 0 or a negative errno (SQLITE_BUSY -> -EBUSY, CONSTRAINT -> -EEXIST,
 * FULL -> -ENOSPC, NOMEM -> -ENOMEM, READONLY -> -EROFS, CANTOPEN -> -ENOENT, CORRUPT and
 * NOTADB -> -ENOTRECOVERABLE (kind "corrupt"), else -EIO) and log the SQLite message.
 * db_errmsg() gives the last message on this connection. Three failures need the operator and
 * are described for them wherever they happen (db_last_failure()): a write lock that another
 * process held past the busy timeout ("database is busy: PATH is write-locked by pid N (its
 * command line)", the holder read from /proc/locks), a corrupt file ("database is corrupt:
 * PATH: SQLite's reason; restore it from a backup or move it away"; db_open() probes the schema
 * and every table's first page, db_check_integrity() every page, and any statement that meets
 * a damaged page says so), and a database on a read-only file
 * system. A write that queues behind another thread of this process that already waited the
 * whole busy timeout in vain does not wait a second time.
 *
 * Read-only connections to a database on a read-only file system open it immutable when it
 * has no write-ahead log to replay (SQLite could not create its -shm there).
 */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

struct db;

enum db_sync { DB_SYNC_OFF = 0, DB_SYNC_NORMAL = 1, DB_SYNC_FULL = 2 };

struct db_options {
    bool readonly;            /* open read-only; no migrations are run */
    enum db_sync synchronous; /* default DB_SYNC_FULL: a committed checkpoint survives power loss */
    int busy_timeout_ms;      /* default DB_BUSY_TIMEOUT_MS */
};

/* Another process (the CLI next to the daemon) may hold the write lock for a short checkpoint.
 * THINIMG_DB_BUSY_TIMEOUT_MS (1 .. DB_BUSY_TIMEOUT_MAX_MS) overrides it. */
#define DB_BUSY_TIMEOUT_MS     10000
#define DB_BUSY_TIMEOUT_MAX_MS (10 * 60 * 1000)
/* Owner only: the database holds locations, errors and everything else thinimg knows. */
#define DB_FILE_MODE 0600
/* What recording a failure needs on a full disk: a few WAL frames (page size 4 KiB) for the
 * run's error, event and outcome rows, and a WAL index; 2 MiB covers several such writes. */
#define DB_RESERVE_BYTES  (2ULL << 20)
#define DB_RESERVE_SUFFIX "-reserve"

struct db_migration {
    int version;             /* 1, 2, 3, ... in order */
    const char *description; /* one line, stored with the row */
    const char *sql;         /* may contain several statements */
};

int db_open(const char *path, const struct db_options *opt, struct db **out, struct err *e);
/* Read every page once (PRAGMA quick_check; about 1.5 ms per MB): 0, or "database is corrupt:
 * ..." (-ENOTRECOVERABLE). The daemon runs it at start; a command's open probes far less. */
int db_check_integrity(struct db *db, struct err *e);
void db_close(struct db *db);
static inline void db_closep(struct db **db)
{
    if (*db)
        db_close(*db);
}
#define _cleanup_db_ __attribute__((cleanup(db_closep)))

sqlite3 *db_handle(struct db *db);
const char *db_path(const struct db *db);
const char *db_errmsg(struct db *db);

/* Apply the migrations of `component` that are newer than what the database records. */
int db_migrate(struct db *db, const char *component, const struct db_migration *m, size_t n,
               struct err *e);
/* Highest applied version of component (0 when none). */
int db_schema_version(struct db *db, const char *component, int *out);

void db_lock(struct db *db);
void db_unlock(struct db *db);

int db_begin(struct db *db);
int db_commit(struct db *db);
void db_rollback(struct db *db);
bool db_in_tx(struct db *db);

/* Delete the reserve file (see "Files" above) so the next writes find room; logged once.
 * Call it when a write of your own failed with ENOSPC and the failure must be recorded. */
void db_release_reserve(struct db *db);

/* Cached prepared statement, already reset and unbound. NULL on error (logged). The caller
 * holds the connection lock until it is done with it, then calls db_done(). */
sqlite3_stmt *db_prepare(struct db *db, const char *sql);
void db_done(sqlite3_stmt *st);
static inline void db_donep(sqlite3_stmt **st)
{
    if (*st)
        db_done(*st);
}
#define _cleanup_stmt_ __attribute__((cleanup(db_donep)))

/* Finish a one-statement write transaction: call db_begin(), st = db_prepare() and bind it,
 * then this steps st, releases it and commits (or rolls back on error; st NULL: -EIO). */
int db_step_commit(struct db *db, sqlite3_stmt *st);

/* Run SQL without results (may be several statements). */
int db_exec(struct db *db, const char *sql);

/* sqlite3_step() mapped to: 1 = a row, 0 = done, negative errno = error. */
int db_step(struct db *db, sqlite3_stmt *st);

/* Map an SQLite result code to a negative errno. */
int db_rc_to_errno(int rc);

/* The last failure in this process that the operator must act on (busy past the timeout,
 * corrupt, read-only file system; see "Errors" above), whatever the code that hit it did with
 * its errno: its code, with the sentence describing it in e; 0 when there was none. The CLI
 * prints it for an error that reaches it with that code and no message of its own. */
int db_last_failure(struct err *e);
/* The same for the failures this thread met since db_thread_failure_reset() (a daemon's job
 * thread: another thread's failure is another request's). */
int db_thread_failure(struct err *e);
void db_thread_failure_reset(void);
/* What to tell the operator about an error (code, with e's words when e is set): when db (from
 * db_last_failure() or db_thread_failure()) is that failure, its description, then e's own
 * words in parentheses unless they already are the description; otherwise e's words. */
void db_failure_explain(const struct err *db, int code, const struct err *e, char *out, size_t n);

/* Bind helpers: NULL text binds SQL NULL. Indexes are 1-based, as in SQLite. */
int db_bind_text(sqlite3_stmt *st, int idx, const char *s);
int db_bind_blob(sqlite3_stmt *st, int idx, const void *p, size_t n);
int db_bind_i64(sqlite3_stmt *st, int idx, int64_t v);

/* Column helpers: a newly allocated copy (NULL for SQL NULL or ENOMEM). */
char *db_col_strdup(sqlite3_stmt *st, int col);
