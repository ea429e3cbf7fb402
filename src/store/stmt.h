/*
 * stmt.h: the SQLite statement dance in one place (prepare, bind, step, finish; begin, commit,
 * roll back on error), over the connection and the statement cache of db.h.
 *
 * Arguments are bound in order (1, 2, ...) from a list built with DB_TEXT(), DB_INT() and
 * DB_NULL(), so a call reads like the SQL it runs:
 *
 *     r = db_run(db, "UPDATE devices SET state=? WHERE pool=? AND dev_id=?",
 *                DB_TEXT(state), DB_TEXT(pool), DB_INT(id));
 *
 * Reads hold the connection lock while the rows are read (db.h, "Threads"):
 *
 *     _cleanup_query_ struct db_query q = {0};
 *     int r = db_query(&q, db, "SELECT name FROM devices WHERE pool=?", DB_TEXT(pool));
 *     while (r >= 0 && (r = db_query_next(&q)) == 1)
 *         use(sqlite3_column_text(q.st, 0));
 *
 * Writes that belong together run in one transaction that rolls back unless committed:
 *
 *     _cleanup_tx_ struct db_tx tx = {0};
 *     if ((r = db_tx_begin(&tx, db)) < 0) return r;
 *     if ((r = db_run(db, ...)) < 0) return r;     (rolled back on the way out)
 *     return db_tx_commit(&tx);
 *
 * Errors are negative errnos as in db.h; a statement that cannot be prepared is -EIO (its
 * SQLite message is logged by db_prepare()).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

enum db_arg_type { DB_ARG_NULL, DB_ARG_TEXT, DB_ARG_INT };

struct db_arg {
    enum db_arg_type type;
    const char *text; /* DB_ARG_TEXT: NULL binds SQL NULL */
    int64_t i;
};

#define DB_TEXT(s) ((struct db_arg){.type = DB_ARG_TEXT, .text = (s)})
#define DB_INT(v)  ((struct db_arg){.type = DB_ARG_INT, .i = (int64_t)(v)})
#define DB_NULL()  ((struct db_arg){.type = DB_ARG_NULL})

#define DB_ARGS_(...)  ((const struct db_arg[]){__VA_ARGS__})
#define DB_NARGS_(...) (sizeof(DB_ARGS_(__VA_ARGS__)) / sizeof(struct db_arg))

/* Bind args to st's parameters 1..n. */
int db_bind_args(sqlite3_stmt *st, const struct db_arg *args, size_t n);

/* Run one statement that returns no rows (under the connection lock): the number of rows it
 * changed, or a negative errno. */
int db_run_args(struct db *db, const char *sql, const struct db_arg *args, size_t n);
#define db_run(db, sql, ...) db_run_args(db, sql, DB_ARGS_(__VA_ARGS__), DB_NARGS_(__VA_ARGS__))

/* db_run() in a write transaction of its own (BEGIN IMMEDIATE .. COMMIT, rolled back on error;
 * part of the open transaction when there is one): 0 or a negative errno. */
int db_run_tx_args(struct db *db, const char *sql, const struct db_arg *args, size_t n);
#define db_run_tx(db, sql, ...)                                                                    \
    db_run_tx_args(db, sql, DB_ARGS_(__VA_ARGS__), DB_NARGS_(__VA_ARGS__))

/* A read: the connection lock is held from db_query() to db_query_end(). */
struct db_query {
    struct db *db;
    sqlite3_stmt *st;
};
int db_query_args(struct db_query *q, struct db *db, const char *sql, const struct db_arg *args,
                  size_t n);
#define db_query(q, db, sql, ...)                                                                  \
    db_query_args(q, db, sql, DB_ARGS_(__VA_ARGS__), DB_NARGS_(__VA_ARGS__))
/* 1 = a row in q->st, 0 = no more rows, negative errno = error. */
int db_query_next(struct db_query *q);
/* Release the statement and the lock (idempotent; q zeroed). */
void db_query_end(struct db_query *q);
#define _cleanup_query_ __attribute__((cleanup(db_query_end)))

/* One row of a query: 1 with the row read by fn (which may return a negative errno), 0 when
 * there is none, negative on error. */
int db_query_one_args(struct db *db, const char *sql, const struct db_arg *args, size_t n,
                      int (*fn)(sqlite3_stmt *st, void *ud), void *ud);
#define db_query_one(db, sql, fn, ud, ...)                                                         \
    db_query_one_args(db, sql, DB_ARGS_(__VA_ARGS__), DB_NARGS_(__VA_ARGS__), fn, ud)

/* The first column of the first row as an integer: 1 with *out set, 0 when there is no row
 * (*out unchanged), negative on error. */
int db_query_int_args(struct db *db, const char *sql, const struct db_arg *args, size_t n,
                      int64_t *out);
#define db_query_int(db, sql, out, ...)                                                            \
    db_query_int_args(db, sql, DB_ARGS_(__VA_ARGS__), DB_NARGS_(__VA_ARGS__), out)

/* A write transaction (db_begin()) that db_tx_end() rolls back unless db_tx_commit() ran. */
struct db_tx {
    struct db *db;
    bool open;
};
int db_tx_begin(struct db_tx *tx, struct db *db);
int db_tx_commit(struct db_tx *tx);
void db_tx_end(struct db_tx *tx);
#define _cleanup_tx_ __attribute__((cleanup(db_tx_end)))
