/*
 * fsm_testutil.h: helpers for the FSM engine tests (header-only, static): a database in a
 * temporary directory, a scripted test machine whose transitions record what they saw, and
 * one-line SQL probes for asserting rows.
 *
 * The scripted machine ("test"/<action>) has up to FT_MAX transitions t0..tN-1. Each
 * transition, per attempt: records the attempt, is_restart and cancel reason it saw; sleeps
 * or blocks on a gate if told to; registers a commit callback that inserts a row
 * dom(run, step, attempt) (the application's "domain write"); sets the response to "<step>";
 * and returns its scripted outcome (RETRY while attempt < fail_until). The finalizer records
 * the outcome and error it was given and inserts fin(run, outcome, error).
 *
 * Include after <cmocka.h> and its prerequisites.
 */
#pragma once

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm/fsm.h"
#include "store/db.h"
#include "testutil.h"
#include "util/timeutil.h"

#define FT_MAX      6
#define FT_MAX_RUNS 64

struct ft_step {
    int fail_until;           /* RETRY while attempt < fail_until */
    enum fsm_outcome outcome; /* returned after that (default OK) */
    char message[128];        /* message for RETRY / halts */
    int sleep_ms;             /* cancellable sleep each attempt */
    bool gate;                /* block until ft->gate_open (or cancel) */
    int fail_commit_until;    /* a second commit callback fails while attempt < this */
    bool no_domain_write;
    int fail_code; /* failing attempts return fsm_fail(fail_code, ...) instead of a plain RETRY */
    uint64_t progress; /* > 0: report progress "work" 0 -> progress/2 -> progress, then "next" 1 */
};

struct ft {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct ft_step step[FT_MAX];
    bool gate_open;
    /* what the transitions saw */
    int calls[FT_MAX];
    int last_attempt[FT_MAX];
    bool saw_restart[FT_MAX];
    enum fsm_cancel_reason saw_cancel[FT_MAX];
    int64_t saw_deadline[FT_MAX];
    char saw_response[FT_MAX][16]; /* the checkpointed response the transition started with */
    int sleep_rc[FT_MAX];
    /* concurrency of t0 (queue tests) */
    int in_flight, max_in_flight;
    char order[FT_MAX_RUNS][32]; /* resource ids in the order t0 first ran */
    int n_order;
    /* predecessor seen by t0 */
    int pred_rc;
    enum fsm_outcome pred_outcome;
    char pred_error[256];
    /* finalizer */
    int fin_calls;
    enum fsm_outcome fin_outcome;
    char fin_error[256];
    bool fin_fail_commit; /* the finalizer's commit callback fails while set */
};

static inline void ft_init(struct ft *t)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    t->pred_rc = 1;
}

static inline void ft_open_gate(struct ft *t)
{
    pthread_mutex_lock(&t->lock);
    t->gate_open = true;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

struct ft_row {
    char run[FSM_ID_LEN + 1];
    char step[16];
    uint32_t attempt;
};

static inline int ft_insert_dom(struct db *db, void *ud)
{
    struct ft_row *row = ud;
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO dom(run, step, attempt) VALUES(?,?,?)");
    if (!st)
        return -EIO;
    db_bind_text(st, 1, row->run);
    db_bind_text(st, 2, row->step);
    db_bind_i64(st, 3, row->attempt);
    int r = db_step(db, st);
    db_done(st);
    return r < 0 ? r : 0;
}

static inline int ft_fail_commit(struct db *db, void *ud)
{
    (void)db;
    (void)ud;
    return -EIO;
}

static inline struct fsm_result ft_transition(struct fsm_run *run, struct ft *t, int idx)
{
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    struct ft_step *s = &t->step[idx];
    pthread_mutex_lock(&t->lock);
    t->calls[idx]++;
    t->last_attempt[idx] = (int)info.attempt;
    t->saw_restart[idx] = info.is_restart;
    size_t rlen = 0;
    const char *resp = fsm_run_response(run, &rlen);
    snprintf(t->saw_response[idx], sizeof(t->saw_response[idx]), "%.*s", (int)rlen,
             resp ? resp : "");
    if (idx == 0) {
        t->in_flight++;
        if (t->in_flight > t->max_in_flight)
            t->max_in_flight = t->in_flight;
        if (info.attempt == 0 && t->n_order < FT_MAX_RUNS)
            snprintf(t->order[t->n_order++], sizeof(t->order[0]), "%s", info.resource_id);
        enum fsm_outcome po;
        const char *pe = NULL;
        t->pred_rc = fsm_run_predecessor(run, &po, &pe);
        if (t->pred_rc == 0) {
            t->pred_outcome = po;
            snprintf(t->pred_error, sizeof(t->pred_error), "%s", pe);
        }
    }
    pthread_mutex_unlock(&t->lock);

    if (s->progress) {
        fsm_run_set_progress(run, "work", 0, s->progress);
        fsm_run_set_progress(run, "work", s->progress / 2, s->progress);
        fsm_run_set_progress(run, "work", s->progress, s->progress);
        fsm_run_set_progress(run, "next", 1, 1);
    }
    int64_t deadline = fsm_run_deadline_ms(run);
    int sleep_rc = s->sleep_ms ? fsm_run_sleep_ms(run, (uint64_t)s->sleep_ms) : 0;
    pthread_mutex_lock(&t->lock);
    t->saw_deadline[idx] = deadline;
    if (s->sleep_ms)
        t->sleep_rc[idx] = sleep_rc;
    pthread_mutex_unlock(&t->lock);
    if (s->gate) {
        pthread_mutex_lock(&t->lock);
        while (!t->gate_open && fsm_run_cancelled(run) == FSM_CANCEL_NONE) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 5 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
        }
        pthread_mutex_unlock(&t->lock);
    }
    enum fsm_cancel_reason c = fsm_run_cancelled(run);
    pthread_mutex_lock(&t->lock);
    t->saw_cancel[idx] = c;
    if (idx == 0)
        t->in_flight--;
    pthread_mutex_unlock(&t->lock);
    if (c != FSM_CANCEL_NONE)
        return fsm_retry("interrupted (%d)", (int)c);

    char name[8];
    snprintf(name, sizeof(name), "t%d", idx);
    if ((int)info.attempt < s->fail_until && s->fail_code)
        return fsm_fail(s->fail_code, "%s failed on attempt %u",
                        s->message[0] ? s->message : name, info.attempt);
    if ((int)info.attempt < s->fail_until)
        return fsm_retry("%s failed on attempt %u", s->message[0] ? s->message : name,
                         info.attempt);
    if (!s->no_domain_write) {
        struct ft_row *row = calloc(1, sizeof(*row));
        snprintf(row->run, sizeof(row->run), "%s", info.version.s);
        snprintf(row->step, sizeof(row->step), "%s", name);
        row->attempt = info.attempt;
        fsm_run_on_commit(run, ft_insert_dom, row, free);
    }
    if ((int)info.attempt < s->fail_commit_until)
        fsm_run_on_commit(run, ft_fail_commit, NULL, NULL);
    fsm_run_set_response(run, name, strlen(name));
    switch (s->outcome) {
    case FSM_OK:
        return fsm_ok();
    case FSM_HANDOFF:
        return fsm_handoff("%s", s->message[0] ? s->message : "already done");
    case FSM_ABORT:
        return fsm_abort("%s", s->message[0] ? s->message : "aborted");
    case FSM_UNRECOVERABLE:
        return fsm_unrecoverable("%s", s->message[0] ? s->message : "unrecoverable");
    default:
        return fsm_retry("%s", s->message);
    }
}

#define FT_FN(i)                                                                                   \
    static inline struct fsm_result ft_t##i(struct fsm_run *run, void *ud)                         \
    {                                                                                              \
        return ft_transition(run, ud, i);                                                          \
    }
FT_FN(0)
FT_FN(1)
FT_FN(2)
FT_FN(3)
FT_FN(4)
FT_FN(5)

struct ft_fin_row {
    char run[FSM_ID_LEN + 1];
    int outcome;
    char error[256];
};

static inline int ft_insert_fin(struct db *db, void *ud)
{
    struct ft_fin_row *row = ud;
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO fin(run, outcome, error) VALUES(?,?,?)");
    if (!st)
        return -EIO;
    db_bind_text(st, 1, row->run);
    db_bind_i64(st, 2, row->outcome);
    db_bind_text(st, 3, row->error);
    int r = db_step(db, st);
    db_done(st);
    return r < 0 ? r : 0;
}

static inline void ft_finalizer(struct fsm_run *run, enum fsm_outcome outcome, const char *error,
                                void *ud)
{
    struct ft *t = ud;
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    pthread_mutex_lock(&t->lock);
    t->fin_calls++;
    t->fin_outcome = outcome;
    snprintf(t->fin_error, sizeof(t->fin_error), "%s", error);
    bool fail = t->fin_fail_commit;
    pthread_mutex_unlock(&t->lock);
    struct ft_fin_row *row = calloc(1, sizeof(*row));
    snprintf(row->run, sizeof(row->run), "%s", info.version.s);
    row->outcome = (int)outcome;
    snprintf(row->error, sizeof(row->error), "%s", error);
    fsm_run_on_commit(run, ft_insert_fin, row, free);
    if (fail)
        fsm_run_on_commit(run, ft_fail_commit, NULL, NULL);
}

static const fsm_transition_fn ft_fns[FT_MAX] = {ft_t0, ft_t1, ft_t2, ft_t3, ft_t4, ft_t5};
static const char *const ft_names[FT_MAX] = {"t0", "t1", "t2", "t3", "t4", "t5"};
static const fsm_finalizer_fn ft_fins[1] = {ft_finalizer};

/* Fast retries for tests: 1 ms backoff, no jitter, 5 attempts. */
static const struct fsm_retry_policy ft_fast = {.max_attempts = 5,
                                                .initial_backoff_ms = 1,
                                                .max_backoff_ms = 4,
                                                .multiplier = 2.0,
                                                .jitter = 0,
                                                .attempt_timeout_ms = 0,
                                                .on_exhausted = FSM_ABORT};

/* Registers "test"/action with n transitions, all with `policy` (NULL = ft_fast). */
static inline struct fsm_machine *ft_register(struct fsm_manager *m, struct ft *t,
                                              const char *action, size_t n,
                                              const struct fsm_retry_policy *policy)
{
    struct fsm_transition_def defs[FT_MAX];
    for (size_t i = 0; i < n; i++)
        defs[i] = (struct fsm_transition_def){ft_names[i], ft_fns[i], policy ? policy : &ft_fast};
    struct fsm_machine_def def = {.type = "test",
                                  .action = action,
                                  .transitions = defs,
                                  .n_transitions = n,
                                  .end_state = "done",
                                  .finalizers = ft_fins,
                                  .n_finalizers = 1,
                                  .ud = t};
    struct fsm_machine *x = NULL;
    int r = fsm_register(m, &def, &x);
    if (r < 0) {
        fprintf(stderr, "fsm_register: %s\n", strerror(-r));
        abort();
    }
    return x;
}

/* ---- database --------------------------------------------------------------------------- */

static inline struct db *ft_open_db(const char *dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/fsm.db", dir);
    struct db *db = NULL;
    struct err e = {0};
    if (db_open(path, NULL, &db, &e) < 0) {
        fprintf(stderr, "db_open: %s\n", e.msg);
        abort();
    }
    if (db_exec(db, "CREATE TABLE IF NOT EXISTS dom(run TEXT, step TEXT, attempt INTEGER);"
                    "CREATE TABLE IF NOT EXISTS fin(run TEXT, outcome INTEGER, error TEXT)") < 0)
        abort();
    return db;
}

/* A test's fixture: a fresh directory named after prefix with ft_open_db()'s database in it;
 * ft_env_close() removes both. */
static inline int ft_env_open(const char *prefix, char **dir, struct db **db)
{
    *dir = tu_mkdtemp(prefix);
    if (!*dir)
        return -1;
    *db = ft_open_db(*dir);
    return 0;
}

static inline void ft_env_close(char **dir, struct db **db)
{
    db_close(*db);
    *db = NULL;
    tu_rmrf(*dir);
    free(*dir);
    *dir = NULL;
}

static inline struct fsm_manager *ft_open_manager(struct db *db, const struct fsm_queue_cfg *q,
                                                  size_t nq)
{
    struct fsm_config cfg = {.queues = q, .n_queues = nq};
    struct fsm_manager *m = NULL;
    struct err e = {0};
    if (fsm_manager_open(db, &cfg, &m, &e) < 0) {
        fprintf(stderr, "fsm_manager_open: %s\n", e.msg);
        abort();
    }
    return m;
}

/* SELECT of one integer, printf-formatted; -999999 when there is no row. */
static inline int64_t ft_q(struct db *db, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int64_t ft_q(struct db *db, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    db_lock(db);
    sqlite3_stmt *st = NULL;
    int64_t v = -999999;
    if (sqlite3_prepare_v2(db_handle(db), sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_type(st, 0) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 0);
    else if (!st)
        fprintf(stderr, "ft_q: %s: %s\n", sql, sqlite3_errmsg(db_handle(db)));
    sqlite3_finalize(st);
    db_unlock(db);
    return v;
}

/* SELECT of one text value (malloc'd; NULL when none). */
static inline char *ft_qs(struct db *db, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline char *ft_qs(struct db *db, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    db_lock(db);
    sqlite3_stmt *st = NULL;
    char *v = NULL;
    if (sqlite3_prepare_v2(db_handle(db), sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    db_unlock(db);
    return v;
}

/* Event types of a run in seq order as a string, e.g. "start,complete,complete,finish". */
static inline char *ft_events(struct db *db, const struct fsm_id *v)
{
    return ft_qs(db,
                 "SELECT group_concat(CASE type WHEN 1 THEN 'start' WHEN 2 THEN 'error' WHEN 3"
                 " THEN 'complete' WHEN 4 THEN 'halt' WHEN 5 THEN 'finish' WHEN 6 THEN 'resume'"
                 " END, ',') FROM (SELECT type FROM fsm_events WHERE version='%s' ORDER BY seq)",
                 v->s);
}

/* Polls cond() every ms until it holds or timeout_ms passes. */
static inline bool ft_eventually(bool (*cond)(void *), void *ud, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    while (mono_ms() < end) {
        if (cond(ud))
            return true;
        sleep_ms(2);
    }
    return cond(ud);
}
