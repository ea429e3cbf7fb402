/*
 * stmt.c: prepare/bind/step/finish and transactions with rollback on error. See stmt.h.
 */
#include "store/stmt.h"

#include <errno.h>
#include <string.h>

int db_bind_args(sqlite3_stmt *st, const struct db_arg *args, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int idx = (int)i + 1, r = 0;
        switch (args[i].type) {
        case DB_ARG_TEXT:
            r = db_bind_text(st, idx, args[i].text);
            break;
        case DB_ARG_INT:
            r = db_bind_i64(st, idx, args[i].i);
            break;
        case DB_ARG_NULL:
            r = db_rc_to_errno(sqlite3_bind_null(st, idx));
            break;
        }
        if (r < 0)
            return r;
    }
    return 0;
}

int db_run_args(struct db *db, const char *sql, const struct db_arg *args, size_t n)
{
    _cleanup_query_ struct db_query q = {0};
    int r = db_query_args(&q, db, sql, args, n);
    if (r < 0)
        return r;
    r = db_query_next(&q);
    return r < 0 ? r : sqlite3_changes(db_handle(db));
}

int db_run_tx_args(struct db *db, const char *sql, const struct db_arg *args, size_t n)
{
    _cleanup_tx_ struct db_tx tx = {0};
    int r = db_tx_begin(&tx, db);
    if (r == 0)
        r = db_run_args(db, sql, args, n);
    return r < 0 ? r : db_tx_commit(&tx);
}

int db_query_args(struct db_query *q, struct db *db, const char *sql, const struct db_arg *args,
                  size_t n)
{
    *q = (struct db_query){.db = db};
    db_lock(db);
    q->st = db_prepare(db, sql);
    if (!q->st) {
        db_unlock(db);
        q->db = NULL;
        return -EIO;
    }
    return db_bind_args(q->st, args, n);
}

int db_query_next(struct db_query *q)
{
    return q->st ? db_step(q->db, q->st) : -EIO;
}

void db_query_end(struct db_query *q)
{
    if (q->st)
        db_done(q->st);
    if (q->db)
        db_unlock(q->db);
    *q = (struct db_query){0};
}

int db_query_one_args(struct db *db, const char *sql, const struct db_arg *args, size_t n,
                      int (*fn)(sqlite3_stmt *st, void *ud), void *ud)
{
    _cleanup_query_ struct db_query q = {0};
    int r = db_query_args(&q, db, sql, args, n);
    if (r >= 0)
        r = db_query_next(&q);
    if (r == 1 && fn) {
        int k = fn(q.st, ud);
        if (k < 0)
            return k;
    }
    return r;
}

static int read_int(sqlite3_stmt *st, void *ud)
{
    *(int64_t *)ud = sqlite3_column_int64(st, 0);
    return 0;
}

int db_query_int_args(struct db *db, const char *sql, const struct db_arg *args, size_t n,
                      int64_t *out)
{
    return db_query_one_args(db, sql, args, n, read_int, out);
}

int db_tx_begin(struct db_tx *tx, struct db *db)
{
    *tx = (struct db_tx){.db = db};
    int r = db_begin(db);
    tx->open = r == 0;
    return r;
}

int db_tx_commit(struct db_tx *tx)
{
    if (!tx->open)
        return -EINVAL;
    tx->open = false;
    return db_commit(tx->db);
}

void db_tx_end(struct db_tx *tx)
{
    if (tx->open)
        db_rollback(tx->db);
    tx->open = false;
}
