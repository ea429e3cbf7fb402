/*
 * fsm_db.c: every SQL statement of the FSM engine.
 *
 * The durable writes (fsmdb_*) are each ONE short transaction: BEGIN IMMEDIATE, the commit
 * callbacks of the step (the application's domain writes), one event row, one UPDATE of the
 * run row, COMMIT. Event sequence numbers come from the run row (next_seq) inside the same
 * transaction, so history order never depends on the wall clock. Nothing slow happens while a
 * transaction is open: the slow work is done by the transition before the checkpoint starts.
 *
 * The readers (fsm_db_*) only SELECT, so they work on a read-only connection in another
 * process while a daemon writes (WAL). They copy the rows out before calling back, so a
 * callback may itself query the database.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm/fsm_internal.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/timeutil.h"

/* ---- names <-> JSON ---------------------------------------------------------------------- */

char *fsm_names_to_json(const char *const *names, size_t n)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(a, json_string(names[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

int fsm_names_from_json(const char *json, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    json_t *a = json_loads(json ? json : "", 0, NULL);
    if (!a || !json_is_array(a)) {
        json_decref(a);
        return -EBADMSG;
    }
    size_t cnt = json_array_size(a);
    char **v = calloc(cnt ? cnt : 1, sizeof(char *));
    if (!v) {
        json_decref(a);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cnt; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s || !(v[i] = strdup(s))) {
            fsm_names_free(v, i);
            json_decref(a);
            return s ? -ENOMEM : -EBADMSG;
        }
    }
    json_decref(a);
    *names = v;
    *n = cnt;
    return 0;
}

void fsm_names_free(char **names, size_t n)
{
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---- writes ------------------------------------------------------------------------------ */

/* Appends the event numbered *ref->next_seq. The caller's UPDATE of the run row in the same
 * transaction stores next_seq + 1; ref->next_seq itself only advances once the write has
 * committed (see commit_ref). outcome < 0 stores NULL. */
static int append_event(struct db *db, const struct fsmdb_ref *ref, enum fsm_event_type type,
                        const char *state, const char *error, uint32_t attempt, size_t response_len,
                        int outcome)
{
    sqlite3_stmt *st = db_prepare(
        db, "INSERT INTO fsm_events(version, seq, type, state, error, attempt, response_len,"
            " outcome, ts_ms) VALUES(?,?,?,?,?,?,?,?,?)");
    if (!st)
        return -EIO;
    db_bind_text(st, 1, ref->version->s);
    db_bind_i64(st, 2, *ref->next_seq);
    db_bind_i64(st, 3, type);
    db_bind_text(st, 4, state);
    db_bind_text(st, 5, error && *error ? error : NULL);
    db_bind_i64(st, 6, attempt);
    db_bind_i64(st, 7, (int64_t)response_len);
    if (outcome >= 0)
        db_bind_i64(st, 8, outcome);
    db_bind_i64(st, 9, now_ms());
    int r = db_step(db, st);
    db_done(st);
    return r < 0 ? r : 0;
}

__thread bool fsm_in_commit_callback;

/* Runs the step's commit callbacks in order; the first failure stops them. */
static int run_callbacks(struct db *db, const struct fsm_commit_cb *cbs, size_t n, char *msg,
                         size_t msg_len)
{
    for (size_t i = 0; i < n; i++) {
        fsm_in_commit_callback = true;
        int r = cbs[i].fn(db, cbs[i].ud);
        fsm_in_commit_callback = false;
        if (r < 0) {
            if (msg)
                snprintf(msg, msg_len, "commit callback %zu failed: %s", i + 1, strerror(-r));
            return r;
        }
    }
    return 0;
}

static void set_msg(char *msg, size_t msg_len, const char *what, int r, struct db *db)
{
    if (msg && msg_len && !*msg)
        snprintf(msg, msg_len, "%s failed: %s (%s)", what, strerror(-r), db_errmsg(db));
}

/* Ends a write: rollback on r < 0, else commit; fills msg with what failed. When the write
 * appended an event (ref not NULL) and committed, the run's next_seq moves on. */
static int finish_tx(struct db *db, int r, const struct fsmdb_ref *ref, const char *what, char *msg,
                     size_t msg_len)
{
    if (r < 0) {
        set_msg(msg, msg_len, what, r, db);
        db_rollback(db);
        return r;
    }
    r = db_commit(db);
    if (r < 0)
        set_msg(msg, msg_len, what, r, db);
    else if (ref)
        (*ref->next_seq)++;
    return r;
}

static int exec_update(struct db *db, sqlite3_stmt *st)
{
    if (!st)
        return -EIO;
    int r = db_step(db, st);
    int changes = sqlite3_changes(db_handle(db));
    db_done(st);
    if (r < 0)
        return r;
    return changes == 1 ? 0 : -ENOENT;
}

int fsmdb_insert_run(struct db *db, const struct fsm_new_run *nr, struct fsm_id *existing,
                     int64_t *rowid)
{
    int r = db_begin(db);
    if (r < 0)
        return r;
    if (!nr->queue) {
        sqlite3_stmt *st = db_prepare(db, "SELECT version FROM fsm_runs WHERE type=? AND action=?"
                                          " AND resource_id=? AND status<3 AND queue IS NULL");
        if (!st) {
            db_rollback(db);
            return -EIO;
        }
        db_bind_text(st, 1, nr->type);
        db_bind_text(st, 2, nr->action);
        db_bind_text(st, 3, nr->resource_id);
        r = db_step(db, st);
        if (r == 1) {
            const char *s = (const char *)sqlite3_column_text(st, 0);
            if (existing && fsm_id_parse(s, existing) < 0)
                existing->s[0] = '\0';
            db_done(st);
            db_rollback(db);
            return -EEXIST;
        }
        db_done(st);
        if (r < 0) {
            db_rollback(db);
            return r;
        }
    }
    sqlite3_stmt *st = db_prepare(
        db, "INSERT INTO fsm_runs(version, type, action, resource_id, queue, parent, run_after,"
            " delay_until_ms, request, transitions, end_state, next_index, state, attempt,"
            " status, created_ms, next_seq) VALUES(?,?,?,?,?,?,?,?,?,?,?,0,?,0,1,?,2)");
    if (!st) {
        db_rollback(db);
        return -EIO;
    }
    db_bind_text(st, 1, nr->version->s);
    db_bind_text(st, 2, nr->type);
    db_bind_text(st, 3, nr->action);
    db_bind_text(st, 4, nr->resource_id);
    db_bind_text(st, 5, nr->queue);
    db_bind_text(st, 6, fsm_id_is_zero(nr->parent) ? NULL : nr->parent->s);
    db_bind_text(st, 7, fsm_id_is_zero(nr->run_after) ? NULL : nr->run_after->s);
    db_bind_i64(st, 8, nr->delay_until_ms);
    db_bind_blob(st, 9, nr->request_len ? nr->request : "", nr->request_len);
    db_bind_text(st, 10, nr->transitions_json);
    db_bind_text(st, 11, nr->end_state);
    db_bind_text(st, 12, nr->first_state);
    db_bind_i64(st, 13, nr->created_ms);
    r = db_step(db, st);
    db_done(st);
    int64_t seq = 1;
    struct fsmdb_ref ref = {nr->version, sqlite3_last_insert_rowid(db_handle(db)), &seq};
    if (r >= 0)
        r = append_event(db, &ref, FSM_EV_START, nr->first_state, NULL, 0, 0, -1);
    if (r < 0) {
        db_rollback(db);
        return r;
    }
    r = db_commit(db);
    if (r < 0)
        return r;
    *rowid = ref.rowid;
    return 0;
}

int fsmdb_mark_running(struct db *db, const struct fsmdb_ref *ref, const char *state,
                       uint32_t attempt, bool resumed)
{
    int r = db_begin(db);
    if (r < 0)
        return r;
    if (resumed)
        r = append_event(db, ref, FSM_EV_RESUME, state, NULL, attempt, 0, -1);
    if (r >= 0) {
        sqlite3_stmt *st =
            db_prepare(db, "UPDATE fsm_runs SET status=2, started_ms=COALESCE(started_ms, ?),"
                           " state=?, next_seq=? WHERE rowid=? AND status<3");
        if (st) {
            db_bind_i64(st, 1, now_ms());
            db_bind_text(st, 2, state);
            db_bind_i64(st, 3, *ref->next_seq + (resumed ? 1 : 0));
            db_bind_i64(st, 4, ref->rowid);
        }
        r = exec_update(db, st);
    }
    return finish_tx(db, r, resumed ? ref : NULL, "marking the run running", NULL, 0);
}

int fsmdb_mark_pending(struct db *db, const struct fsm_id *const *versions, size_t n)
{
    if (n == 0)
        return 0;
    int r = db_begin(db);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n && r >= 0; i++) {
        sqlite3_stmt *st =
            db_prepare(db, "UPDATE fsm_runs SET status=1 WHERE version=? AND status=2");
        if (!st) {
            r = -EIO;
            break;
        }
        db_bind_text(st, 1, versions[i]->s);
        r = db_step(db, st);
        db_done(st);
    }
    return finish_tx(db, r, NULL, "marking resumed runs pending", NULL, 0);
}

/* One value for the SET clause of a run-row UPDATE. */
struct col {
    bool is_text;
    int64_t i;
    const char *s;
};
#define COL_INT(x)  ((struct col){false, (int64_t)(x), NULL})
#define COL_TEXT(x) ((struct col){true, 0, (x)})

/* One step's durable write: the application's commit callbacks, one event, one UPDATE of the
 * run row (`set`, one `?` per col, plus next_seq and, when stored, the response). */
struct step_write {
    const char *what; /* for messages */
    enum fsm_event_type type;
    const char *state, *error;
    uint32_t attempt;
    int outcome; /* of the event; < 0 = none */
    const char *set;
    const struct col *cols;
    int n_cols;
    const void *response;
    size_t response_len;
    bool store_response;
};

static int write_step(struct db *db, const struct fsmdb_ref *ref, const struct fsm_commit_cb *cbs,
                      size_t n_cbs, const struct step_write *w, char *msg, size_t msg_len)
{
    if (msg && msg_len)
        msg[0] = '\0';
    int r = db_begin(db);
    if (r < 0) {
        set_msg(msg, msg_len, w->what, r, db);
        return r;
    }
    r = run_callbacks(db, cbs, n_cbs, msg, msg_len);
    if (r >= 0)
        r = append_event(db, ref, w->type, w->state, w->error, w->attempt,
                         w->store_response ? w->response_len : 0, w->outcome);
    if (r >= 0) {
        char sql[512];
        snprintf(sql, sizeof(sql), "UPDATE fsm_runs SET %s, next_seq=?%s WHERE rowid=?", w->set,
                 w->store_response ? ", response=?" : "");
        sqlite3_stmt *st = db_prepare(db, sql);
        if (st) {
            int idx = 1;
            for (int i = 0; i < w->n_cols; i++, idx++)
                if (w->cols[i].is_text)
                    db_bind_text(st, idx, w->cols[i].s);
                else
                    db_bind_i64(st, idx, w->cols[i].i);
            db_bind_i64(st, idx++, *ref->next_seq + 1);
            if (w->store_response)
                db_bind_blob(st, idx++, w->response_len ? w->response : "", w->response_len);
            db_bind_i64(st, idx, ref->rowid);
        }
        r = exec_update(db, st);
    }
    return finish_tx(db, r, ref, w->what, msg, msg_len);
}

int fsmdb_checkpoint(struct db *db, const struct fsmdb_ref *v, const struct fsm_commit_cb *cbs,
                     size_t n_cbs, const char *state, uint32_t attempt, uint32_t next_index,
                     const char *next_state, const void *response, size_t response_len,
                     bool store_response, char *msg, size_t msg_len)
{
    const struct col cols[] = {COL_INT(next_index), COL_TEXT(next_state)};
    const struct step_write w = {.what = "checkpoint",
                                 .type = FSM_EV_COMPLETE,
                                 .state = state,
                                 .attempt = attempt,
                                 .outcome = -1,
                                 .set = "next_index=?, state=?, attempt=0,"
                                        " error=CASE WHEN outcome IS NULL THEN '' ELSE error END",
                                 .cols = cols,
                                 .n_cols = 2,
                                 .response = response,
                                 .response_len = response_len,
                                 .store_response = store_response};
    return write_step(db, v, cbs, n_cbs, &w, msg, msg_len);
}

int fsmdb_record_error(struct db *db, const struct fsmdb_ref *v, const char *state,
                       uint32_t failed_attempt, const char *error, enum err_kind kind)
{
    const struct col cols[] = {COL_INT((int64_t)failed_attempt + 1), COL_TEXT(error ? error : ""),
                               COL_TEXT(err_kind_name(kind))};
    const struct step_write w = {
        .what = "recording an error",
        .type = FSM_EV_ERROR,
        .state = state,
        .error = error,
        .attempt = failed_attempt,
        .outcome = -1,
        .set = "attempt=?, error=CASE WHEN outcome IS NULL THEN ? ELSE error END,"
               " error_kind=CASE WHEN outcome IS NULL THEN ? ELSE error_kind END",
        .cols = cols,
        .n_cols = 3};
    return write_step(db, v, NULL, 0, &w, NULL, 0);
}

/* A run that ended well has no error kind (NULL), whatever the last failed attempt's was. */
static const char *outcome_kind_name(enum fsm_outcome o, enum err_kind kind)
{
    return fsm_outcome_success(o) ? NULL : err_kind_name(kind);
}

int fsmdb_halt(struct db *db, const struct fsmdb_ref *v, const struct fsm_commit_cb *cbs,
               size_t n_cbs, const char *state, uint32_t attempt, enum fsm_outcome outcome,
               const char *error, enum err_kind kind, const void *response, size_t response_len,
               bool store_response, char *msg, size_t msg_len)
{
    const struct col cols[] = {COL_INT(outcome), COL_TEXT(error ? error : ""),
                               COL_TEXT(outcome_kind_name(outcome, kind)), COL_TEXT(state),
                               COL_TEXT(state)};
    const struct step_write w = {.what = "halt",
                                 .type = FSM_EV_HALT,
                                 .state = state,
                                 .error = error,
                                 .attempt = attempt,
                                 .outcome = (int)outcome,
                                 .set = "outcome=?, error=?, error_kind=?, error_state=?, state=?",
                                 .cols = cols,
                                 .n_cols = 5,
                                 .response = response,
                                 .response_len = response_len,
                                 .store_response = store_response};
    return write_step(db, v, cbs, n_cbs, &w, msg, msg_len);
}

int fsmdb_finish(struct db *db, const struct fsmdb_ref *v, const struct fsm_commit_cb *cbs,
                 size_t n_cbs, const char *end_state, enum fsm_outcome outcome, const char *error,
                 enum err_kind kind, const char *error_state, const void *response,
                 size_t response_len, bool store_response, char *msg, size_t msg_len)
{
    const struct col cols[] = {COL_INT(outcome),        COL_TEXT(error ? error : ""),
                               COL_TEXT(outcome_kind_name(outcome, kind)), COL_TEXT(error_state),
                               COL_TEXT(end_state),     COL_INT(now_ms())};
    const struct step_write w = {
        .what = "finish",
        .type = FSM_EV_FINISH,
        .state = end_state,
        .error = error,
        .outcome = (int)outcome,
        .set = "status=3, outcome=?, error=?, error_kind=?, error_state=?, state=?, finished_ms=?",
        .cols = cols,
        .n_cols = 6,
        .response = response,
        .response_len = response_len,
        .store_response = store_response};
    return write_step(db, v, cbs, n_cbs, &w, msg, msg_len);
}

int fsmdb_cancel(struct db *db, const struct fsm_id *v, const char *cause)
{
    int r = db_begin(db);
    if (r < 0)
        return r;
    sqlite3_stmt *st = db_prepare(db, "UPDATE fsm_runs SET outcome=?, error=?,"
                                      " error_kind='interrupted' WHERE version=?"
                                      " AND status<3 AND outcome IS NULL");
    if (!st) {
        db_rollback(db);
        return -EIO;
    }
    db_bind_i64(st, 1, FSM_CANCELLED);
    db_bind_text(st, 2, cause ? cause : "");
    db_bind_text(st, 3, v->s);
    r = db_step(db, st);
    int changes = sqlite3_changes(db_handle(db));
    db_done(st);
    if (r < 0) {
        db_rollback(db);
        return r;
    }
    r = db_commit(db);
    return r < 0 ? r : changes;
}

/* ---- reads ------------------------------------------------------------------------------- */

#define RUN_COLS                                                                                   \
    "version, type, action, resource_id, queue, parent, run_after, delay_until_ms, request,"       \
    " response, transitions, end_state, next_index, state, attempt, status, outcome, error,"       \
    " error_state, created_ms, started_ms, finished_ms, rowid, next_seq, error_kind"

static bool tables_exist(struct db *db)
{
    sqlite3_stmt *st =
        db_prepare(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='fsm_runs'");
    if (!st)
        return false;
    int r = db_step(db, st);
    db_done(st);
    return r == 1;
}

static void col_id(sqlite3_stmt *st, int col, struct fsm_id *out)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    if (!s || fsm_id_parse(s, out) < 0)
        out->s[0] = '\0';
}

static void *col_blob(sqlite3_stmt *st, int col, size_t *len)
{
    const void *p = sqlite3_column_blob(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    *len = 0;
    if (!p || n == 0)
        return NULL;
    void *c = malloc(n);
    if (c) {
        memcpy(c, p, n);
        *len = n;
    }
    return c;
}

static char *col_str(sqlite3_stmt *st, int col, const char *dflt)
{
    char *s = db_col_strdup(st, col);
    if (!s && dflt)
        s = strdup(dflt);
    return s;
}

static int row_from_stmt(sqlite3_stmt *st, struct fsmdb_row *row)
{
    memset(row, 0, sizeof(*row));
    struct fsm_run_record *r = &row->rec;
    col_id(st, 0, &r->version);
    r->type = col_str(st, 1, "");
    r->action = col_str(st, 2, "");
    r->resource_id = col_str(st, 3, "");
    r->queue = col_str(st, 4, NULL);
    col_id(st, 5, &r->parent);
    col_id(st, 6, &r->run_after);
    r->delay_until_ms = sqlite3_column_int64(st, 7);
    r->request = col_blob(st, 8, &r->request_len);
    r->response = col_blob(st, 9, &r->response_len);
    int k = fsm_names_from_json((const char *)sqlite3_column_text(st, 10), &r->transitions,
                                &r->n_transitions);
    row->end_state = col_str(st, 11, "");
    r->next_index = (uint32_t)sqlite3_column_int64(st, 12);
    r->state = col_str(st, 13, "");
    r->attempt = (uint32_t)sqlite3_column_int64(st, 14);
    r->status = (enum fsm_run_status)sqlite3_column_int(st, 15);
    row->has_outcome = sqlite3_column_type(st, 16) != SQLITE_NULL;
    r->outcome = (enum fsm_outcome)sqlite3_column_int(st, 16);
    r->error = col_str(st, 17, "");
    r->error_state = col_str(st, 18, NULL);
    r->created_ms = sqlite3_column_int64(st, 19);
    r->started_ms = sqlite3_column_int64(st, 20);
    r->finished_ms = sqlite3_column_int64(st, 21);
    row->rowid = sqlite3_column_int64(st, 22);
    row->next_seq = sqlite3_column_int64(st, 23);
    r->error_kind = err_kind_parse((const char *)sqlite3_column_text(st, 24));
    if (k < 0)
        return k;
    if (!r->type || !r->action || !r->resource_id || !r->state || !r->error || !row->end_state)
        return -ENOMEM;
    return 0;
}

void fsm_run_record_free(struct fsm_run_record *r)
{
    if (!r)
        return;
    free(r->type);
    free(r->action);
    free(r->resource_id);
    free(r->queue);
    free(r->state);
    fsm_names_free(r->transitions, r->n_transitions);
    free(r->error);
    free(r->error_state);
    free(r->request);
    free(r->response);
    free(r->phase);
    memset(r, 0, sizeof(*r));
}

void fsmdb_row_free(struct fsmdb_row *row)
{
    if (!row)
        return;
    fsm_run_record_free(&row->rec);
    free(row->end_state);
    row->end_state = NULL;
}

/* Runs a SELECT of RUN_COLS into a malloc'd array of rows. bind(st, ud) binds parameters. */
static int select_rows(struct db *db, const char *sql, int (*bind)(sqlite3_stmt *, const void *),
                       const void *bind_ud, struct fsmdb_row **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    db_lock(db);
    if (!tables_exist(db)) {
        db_unlock(db);
        return 0;
    }
    sqlite3_stmt *st = db_prepare(db, sql);
    if (!st) {
        db_unlock(db);
        return -EIO;
    }
    int r = bind ? bind(st, bind_ud) : 0;
    struct fsmdb_row *rows = NULL;
    size_t n = 0, cap = 0;
    while (r >= 0 && (r = db_step(db, st)) == 1) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            struct fsmdb_row *p = realloc(rows, cap * sizeof(*rows));
            if (!p) {
                r = -ENOMEM;
                break;
            }
            rows = p;
        }
        r = row_from_stmt(st, &rows[n]);
        n++;
    }
    db_done(st);
    db_unlock(db);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            fsmdb_row_free(&rows[i]);
        free(rows);
        return r;
    }
    *out = rows;
    *n_out = n;
    return 0;
}

static void free_rows(struct fsmdb_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fsmdb_row_free(&rows[i]);
    free(rows);
}

int fsmdb_load_unfinished(struct db *db, struct fsmdb_row **rows, size_t *n)
{
    return select_rows(db, "SELECT " RUN_COLS " FROM fsm_runs WHERE status<3 ORDER BY version",
                       NULL, NULL, rows, n);
}

static int bind_version(sqlite3_stmt *st, const void *ud)
{
    return db_bind_text(st, 1, ((const struct fsm_id *)ud)->s);
}

int fsmdb_run_finished(struct db *db, const struct fsm_id *v)
{
    db_lock(db);
    if (!tables_exist(db)) {
        db_unlock(db);
        return -ENOENT;
    }
    sqlite3_stmt *st = db_prepare(db, "SELECT status FROM fsm_runs WHERE version=?");
    if (!st) {
        db_unlock(db);
        return -EIO;
    }
    db_bind_text(st, 1, v->s);
    int r = db_step(db, st);
    if (r == 1)
        r = sqlite3_column_int(st, 0) == FSM_RUN_FINISHED ? 1 : 0;
    else if (r == 0)
        r = -ENOENT;
    db_done(st);
    db_unlock(db);
    return r;
}

int fsm_db_get_run(struct db *db, const struct fsm_id *version, struct fsm_run_record *out)
{
    struct fsmdb_row *rows = NULL;
    size_t n = 0;
    memset(out, 0, sizeof(*out));
    if (fsm_id_is_zero(version))
        return -ENOENT;
    int r = select_rows(db, "SELECT " RUN_COLS " FROM fsm_runs WHERE version=?", bind_version,
                        version, &rows, &n);
    if (r < 0)
        return r;
    if (n == 0) {
        free(rows);
        return -ENOENT;
    }
    *out = rows[0].rec;
    memset(&rows[0].rec, 0, sizeof(rows[0].rec));
    free_rows(rows, n);
    return 0;
}

static int bind_filter(sqlite3_stmt *st, const void *ud)
{
    const struct fsm_list_filter *f = ud;
    int idx = 1;
    if (f->type)
        db_bind_text(st, idx++, f->type);
    if (f->resource_id)
        db_bind_text(st, idx++, f->resource_id);
    if (f->parent)
        db_bind_text(st, idx++, f->parent->s);
    if (f->after)
        db_bind_text(st, idx++, f->after->s);
    if (f->limit)
        db_bind_i64(st, idx++, (int64_t)f->limit);
    return 0;
}

int fsmdb_list(struct db *db, const struct fsm_list_filter *f, struct fsmdb_row **rows, size_t *n)
{
    static const struct fsm_list_filter none = {0};
    if (!f)
        f = &none;
    char sql[640];
    snprintf(sql, sizeof(sql),
             "SELECT " RUN_COLS " FROM fsm_runs WHERE 1%s%s%s%s%s ORDER BY version %s%s",
             f->include_finished ? "" : " AND status<3", f->type ? " AND type=?" : "",
             f->resource_id ? " AND resource_id=?" : "", f->parent ? " AND parent=?" : "",
             !f->after              ? ""
             : f->include_finished ? " AND version<?"
                                   : " AND version>?",
             f->include_finished ? "DESC" : "ASC", f->limit ? " LIMIT ?" : "");
    return select_rows(db, sql, bind_filter, f, rows, n);
}

int fsm_db_list_runs(struct db *db, const struct fsm_list_filter *f, fsm_run_cb cb, void *ud)
{
    struct fsmdb_row *rows = NULL;
    size_t n = 0;
    int r = fsmdb_list(db, f, &rows, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n && r == 0; i++)
        r = cb(&rows[i].rec, ud);
    free_rows(rows, n);
    return r;
}

int fsm_db_list_events(struct db *db, const struct fsm_id *version, fsm_event_cb cb, void *ud)
{
    struct ev {
        struct fsm_event_record rec;
        char *state, *error;
    } *evs = NULL;
    size_t n = 0, cap = 0;
    db_lock(db);
    if (!tables_exist(db)) {
        db_unlock(db);
        return -ENOENT;
    }
    sqlite3_stmt *st = db_prepare(db, "SELECT seq, type, state, error, attempt, ts_ms,"
                                      " response_len, outcome FROM fsm_events WHERE version=?"
                                      " ORDER BY seq");
    if (!st) {
        db_unlock(db);
        return -EIO;
    }
    db_bind_text(st, 1, version->s);
    int r;
    while ((r = db_step(db, st)) == 1) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            struct ev *p = realloc(evs, cap * sizeof(*evs));
            if (!p) {
                r = -ENOMEM;
                break;
            }
            evs = p;
        }
        struct ev *e = &evs[n++];
        memset(e, 0, sizeof(*e));
        e->rec.seq = sqlite3_column_int64(st, 0);
        e->rec.type = (enum fsm_event_type)sqlite3_column_int(st, 1);
        e->state = db_col_strdup(st, 2);
        e->error = db_col_strdup(st, 3);
        e->rec.attempt = (uint32_t)sqlite3_column_int64(st, 4);
        e->rec.ts_ms = sqlite3_column_int64(st, 5);
        e->rec.response_len = (size_t)sqlite3_column_int64(st, 6);
        e->rec.has_outcome = sqlite3_column_type(st, 7) != SQLITE_NULL;
        e->rec.outcome = (enum fsm_outcome)sqlite3_column_int(st, 7);
    }
    db_done(st);
    if (r == 0 && n == 0) {
        /* No events: tell an unknown run from one without history. */
        sqlite3_stmt *q = db_prepare(db, "SELECT 1 FROM fsm_runs WHERE version=?");
        if (!q)
            r = -EIO;
        else {
            db_bind_text(q, 1, version->s);
            r = db_step(db, q) == 1 ? 0 : -ENOENT;
            db_done(q);
        }
    }
    db_unlock(db);
    for (size_t i = 0; i < n; i++) {
        evs[i].rec.state = evs[i].state;
        evs[i].rec.error = evs[i].error;
        if (r == 0)
            r = cb(&evs[i].rec, ud);
    }
    for (size_t i = 0; i < n; i++) {
        free(evs[i].state);
        free(evs[i].error);
    }
    free(evs);
    return r;
}

/* The finished_ms below which a finished run goes: the later of the age cutoff and the
 * finished_ms of the keep_runs-th newest finished run. 0 = nothing to prune. */
static int prune_cutoff(struct db *db, int64_t cutoff_ms, uint32_t keep_runs, int64_t *out)
{
    *out = cutoff_ms > 0 ? cutoff_ms : 0;
    if (keep_runs == 0)
        return 0;
    sqlite3_stmt *st = db_prepare(db, "SELECT finished_ms FROM fsm_runs WHERE status=3"
                                      " ORDER BY finished_ms DESC LIMIT 1 OFFSET ?");
    if (!st)
        return -EIO;
    db_bind_i64(st, 1, (int64_t)keep_runs - 1);
    int r = db_step(db, st);
    if (r == 1) {
        /* Runs that finished in the same millisecond as the last one kept stay too. */
        int64_t oldest_kept = sqlite3_column_int64(st, 0);
        if (oldest_kept > *out)
            *out = oldest_kept;
        r = 0;
    }
    db_done(st);
    return r < 0 ? r : 0;
}

int fsm_db_prune_count(struct db *db, int64_t cutoff_ms, uint32_t keep_runs)
{
    db_lock(db);
    int64_t cut = 0;
    int r = prune_cutoff(db, cutoff_ms, keep_runs, &cut);
    sqlite3_stmt *st = r < 0 || cut == 0 ? NULL
                                         : db_prepare(db, "SELECT count(*) FROM fsm_runs WHERE"
                                                          " status=3 AND finished_ms<?");
    if (st) {
        db_bind_i64(st, 1, cut);
        r = db_step(db, st) == 1 ? sqlite3_column_int(st, 0) : -EIO;
        db_done(st);
    }
    db_unlock(db);
    return r;
}

/* One batch: the FSM_PRUNE_BATCH oldest runs below cut, events first. Returns runs deleted. */
static int prune_batch(struct db *db, int64_t cut)
{
    static const char *const sql[] = {
        "DELETE FROM fsm_events WHERE version IN (SELECT version FROM fsm_runs WHERE status=3"
        " AND finished_ms<?1 ORDER BY finished_ms LIMIT ?2)",
        "DELETE FROM fsm_runs WHERE version IN (SELECT version FROM fsm_runs WHERE status=3"
        " AND finished_ms<?1 ORDER BY finished_ms LIMIT ?2)",
    };
    int r = db_begin(db);
    if (r < 0)
        return r;
    int deleted = 0;
    for (size_t i = 0; i < 2 && r >= 0; i++) {
        sqlite3_stmt *st = db_prepare(db, sql[i]);
        if (!st) {
            r = -EIO;
            break;
        }
        db_bind_i64(st, 1, cut);
        db_bind_i64(st, 2, FSM_PRUNE_BATCH);
        r = db_step(db, st);
        deleted = sqlite3_changes(db_handle(db));
        db_done(st);
    }
    if (r < 0) {
        db_rollback(db);
        return r;
    }
    r = db_commit(db);
    return r < 0 ? r : deleted;
}

/* 1 when a finished run below cut exists: every command prunes at start, and most find
 * nothing; this one read (on the finished-runs index) spares them the write transaction and
 * the two DELETE statements' preparation. */
static int prune_due(struct db *db, int64_t cut)
{
    sqlite3_stmt *st =
        db_prepare(db, "SELECT 1 FROM fsm_runs WHERE status=3 AND finished_ms<? LIMIT 1");
    if (!st)
        return -EIO;
    db_bind_i64(st, 1, cut);
    int r = db_step(db, st);
    db_done(st);
    return r;
}

int fsm_db_prune(struct db *db, int64_t cutoff_ms, uint32_t keep_runs)
{
    db_lock(db);
    int64_t cut = 0;
    int r = prune_cutoff(db, cutoff_ms, keep_runs, &cut);
    if (r == 0 && cut != 0)
        r = prune_due(db, cut);
    db_unlock(db);
    if (r <= 0)
        return r;
    int total = 0;
    for (;;) {
        r = prune_batch(db, cut);
        if (r < 0)
            return r;
        total += r;
        if (r < FSM_PRUNE_BATCH)
            return total;
    }
}
