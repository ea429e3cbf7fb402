/*
 * pool_settings.c: the pool's lifecycle policy and its event history; see pool_life.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "dm/pool_life.h"
#include "store/stmt.h"
#include "util/timeutil.h"

static int settings_read(sqlite3_stmt *st, void *ud)
{
    struct pool_settings *s = ud;
    s->autoextend_threshold_pct = sqlite3_column_double(st, 0);
    s->autoextend_step_pct = sqlite3_column_double(st, 1);
    s->autoextend_step_bytes = (uint64_t)sqlite3_column_int64(st, 2);
    s->autoextend_max_bytes = (uint64_t)sqlite3_column_int64(st, 3);
    s->backup_keep = (uint32_t)sqlite3_column_int64(st, 4);
    s->backup_interval_s = sqlite3_column_int64(st, 5);
    return 0;
}

int pool_settings_get(struct db *db, const char *pool, struct pool_settings *s)
{
    memset(s, 0, sizeof(*s));
    s->backup_interval_s = -1;
    int r = db_query_one(db,
                         "SELECT autoextend_threshold_pct, autoextend_step_pct,"
                         " autoextend_step_bytes, autoextend_max_bytes, backup_keep,"
                         " backup_interval_s FROM pool_settings WHERE pool=?",
                         settings_read, s, DB_TEXT(pool));
    if (r < 0)
        return r;
    if (!s->backup_keep)
        s->backup_keep = POOL_BACKUP_DEFAULT_KEEP;
    if (s->backup_interval_s < 0)
        s->backup_interval_s = POOL_BACKUP_DEFAULT_INTERVAL_S;
    if (s->autoextend_threshold_pct > 0 && s->autoextend_step_pct <= 0 && !s->autoextend_step_bytes)
        s->autoextend_step_pct = POOL_AUTOEXTEND_DEFAULT_STEP_PCT;
    return 0;
}

int pool_settings_put(struct db *db, const char *pool, const struct pool_settings *s)
{
    /* REAL columns take doubles: bind them as text SQLite converts (stmt.h binds ints/text) */
    char thr[32], step[32];
    snprintf(thr, sizeof(thr), "%.4f", s->autoextend_threshold_pct);
    snprintf(step, sizeof(step), "%.4f", s->autoextend_step_pct);
    return db_run_tx(
        db,
        "INSERT INTO pool_settings(pool, autoextend_threshold_pct, autoextend_step_pct,"
        " autoextend_step_bytes, autoextend_max_bytes, backup_keep, backup_interval_s,"
        " updated_at_ms) VALUES(?, CAST(? AS REAL), CAST(? AS REAL), ?, ?, ?, ?, ?)"
        " ON CONFLICT(pool) DO UPDATE SET"
        " autoextend_threshold_pct=excluded.autoextend_threshold_pct,"
        " autoextend_step_pct=excluded.autoextend_step_pct,"
        " autoextend_step_bytes=excluded.autoextend_step_bytes,"
        " autoextend_max_bytes=excluded.autoextend_max_bytes, backup_keep=excluded.backup_keep,"
        " backup_interval_s=excluded.backup_interval_s, updated_at_ms=excluded.updated_at_ms",
        DB_TEXT(pool), DB_TEXT(thr), DB_TEXT(step), DB_INT(s->autoextend_step_bytes),
        DB_INT(s->autoextend_max_bytes), DB_INT(s->backup_keep), DB_INT(s->backup_interval_s),
        DB_INT(now_ms()));
}

int pool_event_add(struct db *db, const char *pool, const struct pool_event *ev)
{
    _cleanup_tx_ struct db_tx tx = {0};
    int r = db_tx_begin(&tx, db);
    if (r < 0)
        return r;
    r = db_run(db,
               "INSERT INTO pool_events(pool, at_ms, kind, ok, data_before, data_after,"
               " meta_before, meta_after, detail) VALUES(?,?,?,?,?,?,?,?,?)",
               DB_TEXT(pool), DB_INT(ev->at_ms ? ev->at_ms : now_ms()), DB_TEXT(ev->kind),
               DB_INT(ev->ok), DB_INT(ev->data_before), DB_INT(ev->data_after),
               DB_INT(ev->meta_before), DB_INT(ev->meta_after), DB_TEXT(ev->detail));
    if (r < 0)
        return r;
    r = db_run(db,
               "DELETE FROM pool_events WHERE pool=? AND id <= (SELECT id FROM pool_events"
               " WHERE pool=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
               DB_TEXT(pool), DB_TEXT(pool), DB_INT(POOL_EVENTS_KEEP));
    if (r < 0)
        return r;
    return db_tx_commit(&tx);
}

int pool_events_recent(struct db *db, const char *pool, const char *kind, struct pool_event *out,
                       size_t max, size_t *n)
{
    *n = 0;
    _cleanup_query_ struct db_query q = {0};
    int r = db_query(&q, db,
                     "SELECT at_ms, kind, ok, data_before, data_after, meta_before, meta_after,"
                     " detail FROM pool_events WHERE pool=? AND (? IS NULL OR kind=?)"
                     " ORDER BY id DESC LIMIT ?",
                     DB_TEXT(pool), DB_TEXT(kind), DB_TEXT(kind), DB_INT(max));
    while (r >= 0 && *n < max && (r = db_query_next(&q)) == 1) {
        struct pool_event *ev = &out[(*n)++];
        memset(ev, 0, sizeof(*ev));
        ev->at_ms = sqlite3_column_int64(q.st, 0);
        snprintf(ev->kind, sizeof(ev->kind), "%s", sqlite3_column_text(q.st, 1));
        ev->ok = sqlite3_column_int(q.st, 2) != 0;
        ev->data_before = (uint64_t)sqlite3_column_int64(q.st, 3);
        ev->data_after = (uint64_t)sqlite3_column_int64(q.st, 4);
        ev->meta_before = (uint64_t)sqlite3_column_int64(q.st, 5);
        ev->meta_after = (uint64_t)sqlite3_column_int64(q.st, 6);
        snprintf(ev->detail, sizeof(ev->detail), "%s", sqlite3_column_text(q.st, 7));
    }
    return r < 0 ? r : 0;
}
