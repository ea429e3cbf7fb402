/*
 * test_fsm.c: the FSM engine's per-run behaviour, asserted on the database rows (fsm_runs,
 * fsm_events, the application's dom/fin rows written by commit callbacks) and on what the
 * transitions observed: ids, registration, the happy path, retries, exhaustion, abort /
 * unrecoverable / handoff, per-attempt timeout, a failing commit callback, wait after a
 * restart, the observer, introspection and log context, prune.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <unistd.h>

#include "fsm_testutil.h"
#include "util/log.h"

static char *dir;
static struct db *db;

static int setup(void **state)
{
    (void)state;
    return ft_env_open("fsm", &dir, &db);
}

static int teardown(void **state)
{
    (void)state;
    ft_env_close(&dir, &db);
    return 0;
}

/* ---- ids --------------------------------------------------------------------------------- */

static void test_ids(void **state)
{
    (void)state;
    struct fsm_id prev, id;
    assert_int_equal(fsm_id_new(&prev), 0);
    assert_int_equal(strlen(prev.s), FSM_ID_LEN);
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(fsm_id_new(&id), 0);
        assert_true(strcmp(prev.s, id.s) < 0); /* strictly increasing within the process */
        prev = id;
    }
    /* The timestamp part is now: the first 10 characters encode the ms. */
    struct fsm_id parsed;
    assert_int_equal(fsm_id_parse(id.s, &parsed), 0);
    assert_string_equal(parsed.s, id.s);
    char lower[FSM_ID_LEN + 1];
    for (int i = 0; i <= FSM_ID_LEN; i++)
        lower[i] = (char)((id.s[i] >= 'A' && id.s[i] <= 'Z') ? id.s[i] - 'A' + 'a' : id.s[i]);
    assert_int_equal(fsm_id_parse(lower, &parsed), 0);
    assert_string_equal(parsed.s, id.s); /* canonical upper case */
    assert_int_equal(fsm_id_parse("01ARZ3NDEKTSV4RRFFQ69G5FAV", &parsed), 0);
    assert_int_equal(fsm_id_parse("01ARZ3NDEKTSV4RRFFQ69G5FA", &parsed), -EINVAL);  /* short */
    assert_int_equal(fsm_id_parse("01ARZ3NDEKTSV4RRFFQ69G5FAU", &parsed), -EINVAL); /* U */
    assert_int_equal(fsm_id_parse("81ARZ3NDEKTSV4RRFFQ69G5FAV", &parsed), -EINVAL); /* >128b */
    assert_int_equal(fsm_id_parse("01ARZ3NDEKTSV4RRFFQ69G5FA!", &parsed), -EINVAL);
    assert_int_equal(fsm_id_parse(NULL, &parsed), -EINVAL);
    struct fsm_id zero = {{0}};
    assert_true(fsm_id_is_zero(&zero));
    assert_false(fsm_id_is_zero(&id));
    /* ULID time: decode the 48-bit ms and compare with the clock. */
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    uint64_t ms = 0;
    for (int i = 0; i < 10; i++)
        ms = ms * 32 + (uint64_t)(strchr(alphabet, id.s[i]) - alphabet);
    assert_true(llabs((long long)ms - (long long)now_ms()) < 60000);
}

static void test_outcome_names(void **state)
{
    (void)state;
    assert_string_equal(fsm_outcome_name(FSM_OK), "ok");
    assert_string_equal(fsm_outcome_name(FSM_UNRECOVERABLE), "unrecoverable");
    assert_string_equal(fsm_outcome_name(FSM_CANCELLED), "cancelled");
    assert_true(fsm_outcome_success(FSM_HANDOFF));
    assert_false(fsm_outcome_success(FSM_ABORT));
    struct fsm_result r = fsm_abort("disk %d", 7);
    assert_int_equal(r.outcome, FSM_ABORT);
    assert_string_equal(r.message, "disk 7");
    assert_string_equal(fsm_event_type_name(FSM_EV_HALT), "halt");
    assert_string_equal(fsm_run_status_name(FSM_RUN_PENDING), "pending");
}

/* ---- registration ------------------------------------------------------------------------ */

static struct fsm_result noop(struct fsm_run *run, void *ud)
{
    (void)run;
    (void)ud;
    return fsm_ok();
}

static int count_machines(const struct fsm_machine_def *def, void *ud)
{
    int *n = ud;
    (*n)++;
    assert_string_equal(def->type, "copy");
    assert_string_equal(def->transitions[0].name, "first-step");
    assert_string_equal(def->end_state, "end");
    assert_int_equal(def->transitions[0].policy->max_attempts, 10); /* default resolved */
    return 0;
}

static void test_register(void **state)
{
    (void)state;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    char type[16] = "copy", action[16] = "act", name[16] = "first-step", end[8] = "end";
    struct fsm_transition_def t[2] = {{name, noop, NULL}, {"second", noop, NULL}};
    struct fsm_machine_def def = {
        .type = type, .action = action, .transitions = t, .n_transitions = 2, .end_state = end};
    struct fsm_machine *x = NULL;
    assert_int_equal(fsm_register(m, &def, &x), 0);
    assert_non_null(x);
    /* The definition was copied: scribbling over the caller's strings changes nothing. */
    strcpy(type, "XXXX");
    strcpy(name, "XXXX");
    strcpy(end, "XXX");
    int n = 0;
    assert_int_equal(fsm_list_machines(m, count_machines, &n), 0);
    assert_int_equal(n, 1);
    strcpy(type, "copy");
    strcpy(end, "end");
    strcpy(name, "first-step");
    assert_int_equal(fsm_register(m, &def, NULL), -EEXIST);
    /* Invalid definitions. */
    struct fsm_transition_def dup[2] = {{"a", noop, NULL}, {"a", noop, NULL}};
    struct fsm_machine_def bad = {
        .type = "x", .action = "y", .transitions = dup, .n_transitions = 2, .end_state = "end"};
    assert_int_equal(fsm_register(m, &bad, NULL), -EINVAL);
    struct fsm_transition_def upper[1] = {{"Bad_Name", noop, NULL}};
    bad.transitions = upper;
    bad.n_transitions = 1;
    assert_int_equal(fsm_register(m, &bad, NULL), -EINVAL);
    struct fsm_transition_def clash[1] = {{"end", noop, NULL}};
    bad.transitions = clash;
    assert_int_equal(fsm_register(m, &bad, NULL), -EINVAL);
    struct fsm_retry_policy p = FSM_RETRY_DEFAULT;
    p.on_exhausted = FSM_OK;
    struct fsm_transition_def badp[1] = {{"a", noop, &p}};
    bad.transitions = badp;
    assert_int_equal(fsm_register(m, &bad, NULL), -EINVAL);
    bad.n_transitions = 0;
    assert_int_equal(fsm_register(m, &bad, NULL), -EINVAL);
    fsm_manager_close(m);
}

/* ---- one run ----------------------------------------------------------------------------- */

static void test_happy_path(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "happy", 3, NULL);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "res-1", "req", 3, NULL, &v), 0);
    /* START is committed before fsm_start returns. */
    assert_int_equal(ft_q(db,
                          "SELECT count(*) FROM fsm_events WHERE version='%s' AND seq=1"
                          " AND type=1",
                          v.s),
                     1);
    enum fsm_outcome o = FSM_RETRY;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, &err), 0);
    assert_int_equal(o, FSM_OK);
    assert_string_equal(err, "");
    free(err);

    assert_int_equal(ft_q(db, "SELECT status FROM fsm_runs WHERE version='%s'", v.s), 3);
    assert_int_equal(ft_q(db, "SELECT outcome FROM fsm_runs WHERE version='%s'", v.s), FSM_OK);
    assert_int_equal(ft_q(db, "SELECT next_index FROM fsm_runs WHERE version='%s'", v.s), 3);
    assert_int_equal(ft_q(db,
                          "SELECT finished_ms >= started_ms AND started_ms >= created_ms"
                          " FROM fsm_runs WHERE version='%s'",
                          v.s),
                     1);
    char *s = ft_qs(db, "SELECT state FROM fsm_runs WHERE version='%s'", v.s);
    assert_string_equal(s, "done");
    free(s);
    s = ft_qs(db, "SELECT CAST(response AS TEXT) FROM fsm_runs WHERE version='%s'", v.s);
    assert_string_equal(s, "t2"); /* the last transition's response */
    free(s);
    s = ft_qs(db, "SELECT CAST(request AS TEXT) FROM fsm_runs WHERE version='%s'", v.s);
    assert_string_equal(s, "req");
    free(s);
    s = ft_events(db, &v);
    assert_string_equal(s, "start,complete,complete,complete,finish");
    free(s);
    s = ft_qs(db,
              "SELECT group_concat(state, ',') FROM (SELECT state FROM fsm_events WHERE"
              " version='%s' ORDER BY seq)",
              v.s);
    assert_string_equal(s, "t0,t0,t1,t2,done");
    free(s);
    /* Each transition's domain write exactly once, and the finalizer's. */
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s'", v.s), 3);
    assert_int_equal(ft_q(db, "SELECT count(DISTINCT step) FROM dom WHERE run='%s'", v.s), 3);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fin WHERE run='%s' AND outcome=0", v.s), 1);
    assert_int_equal(t.fin_calls, 1);
    assert_int_equal(t.calls[0] + t.calls[1] + t.calls[2], 3);
    assert_false(t.saw_restart[0]);

    /* The public readers agree. */
    struct fsm_run_record rec;
    assert_int_equal(fsm_db_get_run(db, &v, &rec), 0);
    assert_int_equal(rec.status, FSM_RUN_FINISHED);
    assert_int_equal(rec.n_transitions, 3);
    assert_string_equal(rec.transitions[1], "t1");
    assert_string_equal(rec.resource_id, "res-1");
    assert_null(rec.queue);
    assert_int_equal(rec.response_len, 2);
    fsm_run_record_free(&rec);
    fsm_manager_close(m);
}

static void test_retry_then_success(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[1].fail_until = 2;
    snprintf(t.step[1].message, sizeof(t.step[1].message), "flaky");
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "retry", 3, NULL);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    enum fsm_outcome o;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, NULL), 0);
    assert_int_equal(o, FSM_OK);
    assert_int_equal(t.calls[1], 3);
    assert_int_equal(t.last_attempt[1], 2);
    char *s = ft_events(db, &v);
    assert_string_equal(s, "start,complete,error,error,complete,complete,finish");
    free(s);
    /* ERROR events carry the failed attempt and its message; COMPLETE the winning attempt. */
    assert_int_equal(ft_q(db,
                          "SELECT group_concat(attempt) FROM fsm_events WHERE version='%s'"
                          " AND type=2 AND state='t1' AND error LIKE 'flaky failed on"
                          " attempt %%'",
                          v.s) != -999999,
                     1);
    s = ft_qs(db,
              "SELECT group_concat(attempt, ',') FROM (SELECT attempt FROM fsm_events WHERE"
              " version='%s' AND type=2 ORDER BY seq)",
              v.s);
    assert_string_equal(s, "0,1");
    free(s);
    assert_int_equal(ft_q(db,
                          "SELECT attempt FROM fsm_events WHERE version='%s' AND type=3"
                          " AND state='t1'",
                          v.s),
                     2);
    assert_int_equal(ft_q(db, "SELECT attempt FROM dom WHERE run='%s' AND step='t1'", v.s), 2);
    assert_int_equal(ft_q(db, "SELECT attempt FROM fsm_runs WHERE version='%s'", v.s), 0);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s'", v.s), 3);
    fsm_manager_close(m);
}

/* Milliseconds between the ERROR events of a run (the attempts), in order. */
static int error_gaps(struct db *d, const struct fsm_id *v, int64_t *gaps, int max)
{
    int64_t prev = 0;
    int n = 0;
    for (int seq = 1; seq < 64 && n < max; seq++) {
        int64_t ts = ft_q(d,
                          "SELECT ts_ms FROM fsm_events WHERE version='%s' AND seq=%d AND"
                          " type IN (2, 3)",
                          v->s, seq);
        if (ts == -999999)
            continue;
        if (prev)
            gaps[n++] = ts - prev;
        prev = ts;
    }
    return n;
}

static void test_backoff_curve(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].fail_until = 4;
    t.step[1].fail_until = 6;
    /* No jitter: 50, then 150 (capped; uncapped would be 200, 800, 3200). */
    struct fsm_retry_policy p = {.max_attempts = 10,
                                 .initial_backoff_ms = 50,
                                 .max_backoff_ms = 150,
                                 .multiplier = 4.0,
                                 .jitter = 0,
                                 .on_exhausted = FSM_ABORT};
    /* Jitter 0.5 around a flat 100 ms: every delay within 50..150 ms. */
    struct fsm_retry_policy pj = {.max_attempts = 10,
                                  .initial_backoff_ms = 100,
                                  .max_backoff_ms = 100,
                                  .multiplier = 1.0,
                                  .jitter = 0.5,
                                  .on_exhausted = FSM_ABORT};
    /* This test is about time, not durability: without fsync the gaps are the backoff plus
     * a little CPU, even on a busy disk. */
    char path[512];
    snprintf(path, sizeof(path), "%s/nosync.db", dir);
    struct db_options nosync = {.synchronous = DB_SYNC_OFF};
    struct db *fast = NULL;
    assert_int_equal(db_open(path, &nosync, &fast, NULL), 0);
    assert_int_equal(db_exec(fast, "CREATE TABLE dom(run TEXT, step TEXT, attempt INTEGER)"), 0);
    struct fsm_manager *m = ft_open_manager(fast, NULL, 0);
    struct fsm_transition_def defs[2] = {{"t0", ft_t0, &p}, {"t1", ft_t1, &pj}};
    struct fsm_machine_def def = {.type = "test",
                                  .action = "backoff",
                                  .transitions = defs,
                                  .n_transitions = 2,
                                  .end_state = "done",
                                  .ud = &t};
    struct fsm_machine *x = NULL;
    assert_int_equal(fsm_register(m, &def, &x), 0);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    assert_int_equal(fsm_wait(m, &v, 20000, NULL, NULL), 0);
    fsm_manager_close(m);
    /* events: error x4, complete(t0), error x6, complete(t1): 11 gaps */
    int64_t g[16];
    assert_int_equal(error_gaps(fast, &v, g, 16), 11);
    db_close(fast);
    /* Lower bounds are exact (the engine never retries early); upper bounds leave room for a
     * loaded machine but still tell the cap (150) from the uncapped curve (800, 3200). */
    static const int64_t expect[4] = {50, 150, 150, 150};
    for (int i = 0; i < 4; i++)
        assert_true(g[i] >= expect[i] - 2);
    assert_true(g[2] < 700 && g[3] < 700);
    /* g[4] is t0's COMPLETE to t1's first failure (no delay); g[5..9] are t1's backoffs:
     * never below 1 - jitter. */
    for (int i = 5; i < 10; i++) {
        assert_true(g[i] >= 50 - 2);
        assert_true(g[i] < 700);
    }
}

static void test_exhausted(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[1].fail_until = 1000;
    snprintf(t.step[1].message, sizeof(t.step[1].message), "disk on fire");
    struct fsm_retry_policy p = ft_fast;
    p.max_attempts = 3;
    p.on_exhausted = FSM_UNRECOVERABLE;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "exhaust", 3, &p);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    enum fsm_outcome o;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, &err), 0);
    assert_int_equal(o, FSM_UNRECOVERABLE);
    assert_string_equal(err, "disk on fire failed on attempt 2"); /* the last message */
    free(err);
    assert_int_equal(t.calls[1], 3);
    assert_int_equal(t.calls[2], 0);
    assert_int_equal(t.fin_calls, 1);
    assert_int_equal(t.fin_outcome, FSM_UNRECOVERABLE);
    assert_string_equal(t.fin_error, "disk on fire failed on attempt 2");
    char *s = ft_events(db, &v);
    assert_string_equal(s, "start,complete,error,error,error,halt,finish");
    free(s);
    s = ft_qs(db, "SELECT error_state FROM fsm_runs WHERE version='%s'", v.s);
    assert_string_equal(s, "t1");
    free(s);
    assert_int_equal(ft_q(db, "SELECT outcome FROM fsm_events WHERE version='%s' AND type=5", v.s),
                     FSM_UNRECOVERABLE);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s'", v.s), 1); /* t0 only */
    assert_int_equal(ft_q(db,
                          "SELECT count(*) FROM fin WHERE run='%s' AND outcome=%d AND"
                          " error='disk on fire failed on attempt 2'",
                          v.s, FSM_UNRECOVERABLE),
                     1);
    fsm_manager_close(m);
}

/* A failure's kind travels with the run: a deterministic one (not found) ends the run on its
 * first attempt, whatever the retry policy allows; a transient one (connection refused) is
 * retried; either kind is stored with the run and read back after a restart. */
static void test_error_kinds(void **state)
{
    (void)state;
    struct fsm_retry_policy p = ft_fast;
    p.max_attempts = 4;
    p.on_exhausted = FSM_ABORT;
    static const struct {
        int code;
        enum err_kind kind;
        const char *name;
        int calls;
    } cases[] = {
        {-ENOENT, ERR_KIND_NOT_FOUND, "not_found", 1},
        {-EBADMSG, ERR_KIND_REJECTED, "rejected", 1},
        {-EACCES, ERR_KIND_PERMISSION, "permission", 1},
        {-ECONNREFUSED, ERR_KIND_TRANSIENT, "transient", 4},
        {-EIO, ERR_KIND_OTHER, "internal", 4},
    };
    struct fsm_id v[5];
    for (size_t i = 0; i < 5; i++) {
        struct ft t;
        ft_init(&t);
        t.step[1].fail_until = 1000;
        t.step[1].fail_code = cases[i].code;
        struct fsm_manager *m = ft_open_manager(db, NULL, 0);
        char action[32];
        snprintf(action, sizeof(action), "kind-%zu", i);
        struct fsm_machine *x = ft_register(m, &t, action, 3, &p);
        assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v[i]), 0);
        enum fsm_outcome o;
        enum err_kind k = ERR_KIND_INVALID;
        char *err = NULL;
        assert_int_equal(fsm_wait_kind(m, &v[i], 10000, &o, &k, &err), 0);
        assert_int_equal(o, FSM_ABORT);
        assert_int_equal(k, cases[i].kind);
        free(err);
        assert_int_equal(t.calls[1], cases[i].calls);
        char *s = ft_qs(db, "SELECT error_kind FROM fsm_runs WHERE version='%s'", v[i].s);
        assert_string_equal(s, cases[i].name);
        free(s);
        fsm_manager_close(m);
    }
    /* After a restart the kind comes from the database, for fsm_wait_kind and for records. */
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    for (size_t i = 0; i < 5; i++) {
        enum err_kind k = ERR_KIND_INVALID;
        assert_int_equal(fsm_wait_kind(m, &v[i], 1000, NULL, &k, NULL), 0);
        assert_int_equal(k, cases[i].kind);
        struct fsm_run_record rec = {0};
        assert_int_equal(fsm_db_get_run(db, &v[i], &rec), 0);
        assert_int_equal(rec.error_kind, cases[i].kind);
        fsm_run_record_free(&rec);
    }
    fsm_manager_close(m);
    /* A run that failed once (transient) and then ended well has no error kind. */
    {
        struct ft t;
        ft_init(&t);
        t.step[1].fail_until = 1;
        t.step[1].fail_code = -ECONNREFUSED;
        m = ft_open_manager(db, NULL, 0);
        struct fsm_machine *x = ft_register(m, &t, "kind-ok", 3, &p);
        struct fsm_id ok;
        assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &ok), 0);
        enum fsm_outcome o;
        assert_int_equal(fsm_wait_kind(m, &ok, 10000, &o, NULL, NULL), 0);
        assert_int_equal(o, FSM_OK);
        assert_int_equal(t.calls[1], 2);
        assert_int_equal(
            ft_q(db, "SELECT count(*) FROM fsm_runs WHERE version='%s' AND error_kind IS NULL",
                 ok.s),
            1);
        fsm_manager_close(m);
    }
    /* A RETRY that carries a deterministic kind is not retried either. */
    struct fsm_result r = fsm_with_kind(fsm_retry("no"), ERR_KIND_REJECTED);
    assert_int_equal(r.outcome, FSM_RETRY);
    assert_int_equal(r.kind, ERR_KIND_REJECTED);
    r = fsm_fail(-ETIMEDOUT, "slow");
    assert_int_equal(r.outcome, FSM_RETRY);
    assert_int_equal(r.kind, ERR_KIND_TRANSIENT);
    assert_string_equal(r.message, "slow");
}

static void run_halt_case(enum fsm_outcome which, bool expect_t1_write)
{
    struct ft t;
    ft_init(&t);
    t.step[1].outcome = which;
    snprintf(t.step[1].message, sizeof(t.step[1].message), "stop: %s", fsm_outcome_name(which));
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    char action[32];
    snprintf(action, sizeof(action), "halt-%s", fsm_outcome_name(which));
    struct fsm_machine *x = ft_register(m, &t, action, 3, NULL);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    enum fsm_outcome o;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, &err), 0);
    assert_int_equal(o, which);
    char expect[64];
    snprintf(expect, sizeof(expect), "stop: %s", fsm_outcome_name(which));
    assert_string_equal(err, expect);
    free(err);
    assert_int_equal(t.calls[1], 1); /* never retried */
    assert_int_equal(t.calls[2], 0); /* skipped */
    assert_int_equal(t.fin_calls, 1);
    assert_int_equal(t.fin_outcome, which);
    assert_string_equal(t.fin_error, expect);
    char *s = ft_events(db, &v);
    assert_string_equal(s, "start,complete,halt,finish");
    free(s);
    assert_int_equal(ft_q(db, "SELECT outcome FROM fsm_events WHERE version='%s' AND type=4", v.s),
                     which);
    assert_int_equal(ft_q(db, "SELECT outcome FROM fsm_runs WHERE version='%s'", v.s), which);
    s = ft_qs(db, "SELECT error_state FROM fsm_runs WHERE version='%s'", v.s);
    assert_string_equal(s, "t1");
    free(s);
    /* HANDOFF keeps the transition's domain writes and response; the failures drop them. */
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s' AND step='t1'", v.s),
                     expect_t1_write ? 1 : 0);
    s = ft_qs(db, "SELECT CAST(response AS TEXT) FROM fsm_runs WHERE version='%s'", v.s);
    assert_string_equal(s, expect_t1_write ? "t1" : "t0");
    free(s);
    fsm_manager_close(m);
}

static void test_abort(void **state)
{
    (void)state;
    run_halt_case(FSM_ABORT, false);
}

static void test_unrecoverable(void **state)
{
    (void)state;
    run_halt_case(FSM_UNRECOVERABLE, false);
}

static void test_handoff(void **state)
{
    (void)state;
    run_halt_case(FSM_HANDOFF, true);
}

static void test_attempt_timeout(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].sleep_ms = 20000; /* the first attempt would hang: the timeout cuts it */
    struct fsm_retry_policy p = ft_fast;
    p.attempt_timeout_ms = 100;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "timeout", 1, &p);
    int64_t t0 = mono_ms();
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    /* Each attempt sleeps and is cut after 100 ms: 5 attempts, then abort (exhausted). */
    enum fsm_outcome o;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, &v, 15000, &o, &err), 0);
    int64_t elapsed = mono_ms() - t0;
    assert_int_equal(o, FSM_ABORT);
    assert_true(tu_contains(err, "attempt timed out after 100 ms"));
    free(err);
    assert_true(elapsed >= 5LL * 100 && elapsed < 5000);
    assert_int_equal(t.calls[0], 5);
    assert_int_equal(t.sleep_rc[0], -ECANCELED); /* woken by the timeout */
    assert_int_equal(t.saw_cancel[0], FSM_CANCEL_TIMEOUT);
    assert_true(t.saw_deadline[0] > 0);
    assert_int_equal(ft_q(db,
                          "SELECT count(*) FROM fsm_events WHERE version='%s' AND type=2"
                          " AND error LIKE 'attempt timed out after 100 ms%%'",
                          v.s),
                     5);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s'", v.s), 0);
    fsm_manager_close(m);
}

static void test_timeout_then_success(void **state)
{
    (void)state;
    /* A slow first attempt times out; the retry (no longer slow) succeeds: the timeout is
     * per attempt, and the cancel fd is clear again for the next one. */
    struct ft t;
    ft_init(&t);
    t.step[0].gate = true; /* blocks until cancelled (the timeout) or the gate opens */
    struct fsm_retry_policy p = ft_fast;
    p.attempt_timeout_ms = 80;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "timeout2", 2, &p);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    /* Let the first attempt time out, then open the gate. */
    while (ft_q(db, "SELECT count(*) FROM fsm_events WHERE version='%s' AND type=2", v.s) < 1)
        sleep_ms(5);
    ft_open_gate(&t);
    enum fsm_outcome o;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, NULL), 0);
    assert_int_equal(o, FSM_OK);
    assert_true(t.calls[0] >= 2);
    assert_int_equal(t.saw_cancel[0], FSM_CANCEL_NONE); /* the winning attempt was not cut */
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s' AND step='t0'", v.s), 1);
    assert_int_equal(t.calls[1], 1);
    fsm_manager_close(m);
}

static void test_commit_callback_failure(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    /* t1's first callback inserts its dom row, its second fails on attempts 0 and 1: the whole
     * checkpoint (the dom row, COMPLETE, next_index) must roll back each time. */
    t.step[1].fail_commit_until = 2;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "commitfail", 3, NULL);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    enum fsm_outcome o;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, NULL), 0);
    assert_int_equal(o, FSM_OK);
    assert_int_equal(t.calls[1], 3);
    /* Exactly one t1 row, from the attempt whose checkpoint committed. */
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s' AND step='t1'", v.s), 1);
    assert_int_equal(ft_q(db, "SELECT attempt FROM dom WHERE run='%s' AND step='t1'", v.s), 2);
    assert_int_equal(ft_q(db,
                          "SELECT count(*) FROM fsm_events WHERE version='%s' AND type=3"
                          " AND state='t1'",
                          v.s),
                     1);
    assert_int_equal(ft_q(db,
                          "SELECT count(*) FROM fsm_events WHERE version='%s' AND type=2"
                          " AND state='t1' AND error LIKE 'commit callback 2 failed%%'",
                          v.s),
                     2);
    char *s = ft_events(db, &v);
    assert_string_equal(s, "start,complete,error,error,complete,complete,finish");
    free(s);
    fsm_manager_close(m);
}

static void test_finalizer_commit_failure(void **state)
{
    (void)state;
    /* A failing FINISH (its finalizer's commit callback) rolls back and the end step runs
     * again: finalizers are re-invoked, the run finishes once. */
    struct ft t;
    ft_init(&t);
    t.fin_fail_commit = true;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "finfail", 1, NULL);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    assert_int_equal(fsm_wait(m, &v, 300, NULL, NULL), -ETIMEDOUT);
    assert_true(t.fin_calls >= 1);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fin WHERE run='%s'", v.s), 0);
    assert_int_equal(ft_q(db, "SELECT status FROM fsm_runs WHERE version='%s'", v.s), 2);
    pthread_mutex_lock(&t.lock);
    t.fin_fail_commit = false;
    pthread_mutex_unlock(&t.lock);
    enum fsm_outcome o;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, NULL), 0);
    assert_int_equal(o, FSM_OK);
    assert_true(t.fin_calls >= 2);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fin WHERE run='%s'", v.s), 1);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_events WHERE version='%s' AND type=5", v.s),
                     1);
    fsm_manager_close(m);
}

static void test_wait_after_restart(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].outcome = FSM_ABORT;
    snprintf(t.step[0].message, sizeof(t.step[0].message), "blob sha256:abc is corrupt");
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "restart", 2, NULL);
    struct fsm_id v, ok;
    assert_int_equal(fsm_start(m, x, "r1", NULL, 0, NULL, &v), 0);
    assert_int_equal(fsm_wait(m, &v, 10000, NULL, NULL), 0);
    t.step[0].outcome = FSM_OK;
    assert_int_equal(fsm_start(m, x, "r2", NULL, 0, NULL, &ok), 0);
    assert_int_equal(fsm_wait(m, &ok, 10000, NULL, NULL), 0);
    fsm_manager_close(m);

    /* A new manager (a restart), nothing registered: outcome and error come from the db. */
    m = ft_open_manager(db, NULL, 0);
    enum fsm_outcome o = FSM_OK;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, &v, 1000, &o, &err), 0);
    assert_int_equal(o, FSM_ABORT);
    assert_string_equal(err, "blob sha256:abc is corrupt");
    free(err);
    assert_int_equal(fsm_wait(m, &ok, 1000, &o, &err), 0);
    assert_int_equal(o, FSM_OK);
    assert_string_equal(err, "");
    free(err);
    struct fsm_id unknown;
    fsm_id_new(&unknown);
    assert_int_equal(fsm_wait(m, &unknown, 100, &o, NULL), -ENOENT);
    assert_int_equal(fsm_cancel(m, &v, "late"), -EALREADY);
    assert_int_equal(fsm_cancel(m, &unknown, "late"), -ENOENT);
    fsm_manager_close(m);
}

/* ---- observer, introspection, logs ------------------------------------------------------- */

struct obs {
    pthread_mutex_t lock;
    int count[8];
    int64_t finish_duration;
    char last_error[128];
};

static void observer(const struct fsm_event_info *ev, void *ud)
{
    struct obs *o = ud;
    pthread_mutex_lock(&o->lock);
    o->count[ev->type]++;
    if (ev->type == FSM_EV_FINISH)
        o->finish_duration = ev->duration_ms;
    if (ev->type == FSM_EV_ERROR)
        snprintf(o->last_error, sizeof(o->last_error), "%s", ev->error);
    pthread_mutex_unlock(&o->lock);
}

static void test_observer(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].fail_until = 2;
    t.step[1].sleep_ms = 30;
    struct obs ob = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    fsm_manager_set_observer(m, observer, &ob);
    struct fsm_machine *x = ft_register(m, &t, "observed", 3, NULL);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    assert_int_equal(fsm_wait(m, &v, 10000, NULL, NULL), 0);
    fsm_manager_close(m);
    assert_int_equal(ob.count[FSM_EV_START], 1);
    assert_int_equal(ob.count[FSM_EV_ERROR], 2);
    assert_int_equal(ob.count[FSM_EV_COMPLETE], 3);
    assert_int_equal(ob.count[FSM_EV_FINISH], 1);
    assert_int_equal(ob.count[FSM_EV_HALT], 0);
    assert_true(ob.finish_duration >= 30);
    assert_string_equal(ob.last_error, "t0 failed on attempt 1");
}

struct live {
    int n;
    struct fsm_run_record rec;
};

static int grab_live(const struct fsm_run_record *r, void *ud)
{
    struct live *l = ud;
    l->n++;
    l->rec = *r;
    l->rec.state = strdup(r->state);
    l->rec.error = strdup(r->error);
    l->rec.phase = r->phase ? strdup(r->phase) : NULL;
    l->rec.type = l->rec.action = l->rec.resource_id = l->rec.queue = NULL;
    l->rec.transitions = NULL;
    l->rec.n_transitions = 0;
    l->rec.error_state = NULL;
    l->rec.request = l->rec.response = NULL;
    return 0;
}

static struct fsm_result progress_step(struct fsm_run *run, void *ud)
{
    struct ft *t = ud;
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    if (info.attempt < 2)
        return fsm_retry("mirror unreachable (attempt %u)", info.attempt);
    fsm_run_set_progress(run, "download", 5, 10);
    log_info("hello from a transition", "bytes=%d", 5);
    pthread_mutex_lock(&t->lock);
    while (!t->gate_open && fsm_run_cancelled(run) == FSM_CANCEL_NONE) {
        pthread_mutex_unlock(&t->lock);
        sleep_ms(2);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return fsm_ok();
}

static char captured[4096];
static pthread_mutex_t captured_lock = PTHREAD_MUTEX_INITIALIZER;

static void capture_hook(enum log_level level, const char *line, void *ud)
{
    (void)level;
    (void)ud;
    if (strstr(line, "hello from a transition")) {
        pthread_mutex_lock(&captured_lock);
        snprintf(captured, sizeof(captured), "%s", line);
        pthread_mutex_unlock(&captured_lock);
    }
}

static bool captured_line(void *ud)
{
    (void)ud;
    pthread_mutex_lock(&captured_lock);
    bool ok = captured[0] != '\0';
    pthread_mutex_unlock(&captured_lock);
    return ok;
}

static void test_live_state_and_log_context(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_INFO, devnull);
    log_set_hook(capture_hook, NULL);
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_transition_def defs[2] = {{"prepare", noop, &ft_fast},
                                         {"download", progress_step, &ft_fast}};
    struct fsm_machine_def def = {.type = "fetch",
                                  .action = "fetch-blob",
                                  .transitions = defs,
                                  .n_transitions = 2,
                                  .end_state = "done",
                                  .ud = &t};
    struct fsm_machine *x = NULL;
    assert_int_equal(fsm_register(m, &def, &x), 0);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "sha256:feed", NULL, 0, NULL, &v), 0);
    assert_true(ft_eventually(captured_line, NULL, 5000));

    struct live l = {0};
    assert_int_equal(fsm_list_active(m, grab_live, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.rec.status, FSM_RUN_RUNNING);
    assert_string_equal(l.rec.state, "download");
    assert_int_equal(l.rec.attempt, 2);
    assert_string_equal(l.rec.error, "mirror unreachable (attempt 1)");
    assert_string_equal(l.rec.phase, "download");
    assert_int_equal(l.rec.progress_done, 5);
    assert_int_equal(l.rec.progress_total, 10);
    free(l.rec.state);
    free(l.rec.error);
    free(l.rec.phase);

    /* Another connection, read-only (the CLI next to a daemon), sees the durable state. */
    char path[512];
    snprintf(path, sizeof(path), "%s/fsm.db", dir);
    struct db_options ro = {.readonly = true};
    struct db *rdb = NULL;
    assert_int_equal(db_open(path, &ro, &rdb, NULL), 0);
    struct fsm_run_record rec;
    assert_int_equal(fsm_db_get_run(rdb, &v, &rec), 0);
    assert_int_equal(rec.status, FSM_RUN_RUNNING);
    assert_int_equal(rec.next_index, 1);
    assert_int_equal(rec.attempt, 2); /* two failed attempts recorded */
    assert_string_equal(rec.error, "mirror unreachable (attempt 1)");
    assert_null(rec.phase); /* live only */
    fsm_run_record_free(&rec);

    /* Every line logged from a transition carries the run's context. */
    pthread_mutex_lock(&captured_lock);
    char expect[128];
    snprintf(expect, sizeof(expect), "run=%s", v.s);
    assert_true(tu_contains(captured, expect));
    assert_true(tu_contains(captured, "machine=fetch/fetch-blob"));
    assert_true(tu_contains(captured, "resource=sha256:feed"));
    assert_true(tu_contains(captured, "state=download"));
    assert_true(tu_contains(captured, "bytes=5"));
    pthread_mutex_unlock(&captured_lock);
    log_set_hook(NULL, NULL);
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_ERROR, 2);
    close(devnull);

    ft_open_gate(&t);
    assert_int_equal(fsm_wait(m, &v, 10000, NULL, NULL), 0);
    assert_int_equal(fsm_db_get_run(rdb, &v, &rec), 0);
    assert_int_equal(rec.status, FSM_RUN_FINISHED);
    fsm_run_record_free(&rec);
    db_close(rdb);
    fsm_manager_close(m);
}

static int count_events(const struct fsm_event_record *ev, void *ud)
{
    int *n = ud;
    if (ev->seq != *n + 1)
        return -EPROTO; /* seq is 1, 2, 3, ... */
    (*n)++;
    if (ev->type == FSM_EV_FINISH && (!ev->has_outcome || ev->outcome != FSM_OK))
        return -EBADMSG;
    return 0;
}

static void test_prune(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].gate = true;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "prune", 1, NULL);
    struct fsm_id a, b, live;
    assert_int_equal(fsm_start(m, x, "a", NULL, 0, NULL, &a), 0);
    assert_int_equal(fsm_start(m, x, "b", NULL, 0, NULL, &b), 0);
    ft_open_gate(&t);
    assert_int_equal(fsm_wait(m, &a, 10000, NULL, NULL), 0);
    assert_int_equal(fsm_wait(m, &b, 10000, NULL, NULL), 0);
    t.gate_open = false;
    assert_int_equal(fsm_start(m, x, "live", NULL, 0, NULL, &live), 0);
    int n = 0;
    assert_int_equal(fsm_db_list_events(db, &a, count_events, &n), 0);
    assert_int_equal(n, 3);
    /* a finished long ago. */
    assert_int_equal(db_exec(db, "UPDATE fsm_runs SET finished_ms=1000 WHERE resource_id='a'"), 0);
    assert_int_equal(fsm_db_prune(db, now_ms() - 3600LL * 1000, 0), 1);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE version='%s'", a.s), 0);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_events WHERE version='%s'", a.s), 0);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE version='%s'", b.s), 1);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_events WHERE version='%s'", b.s), 3);
    /* Unfinished runs are never pruned, whatever the cutoff. */
    assert_int_equal(fsm_db_prune(db, INT64_MAX, 0), 1); /* b */
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE version='%s'", live.s), 1);
    n = 0;
    assert_int_equal(fsm_db_list_events(db, &a, count_events, &n), -ENOENT);
    ft_open_gate(&t);
    assert_int_equal(fsm_wait(m, &live, 10000, NULL, NULL), 0);
    fsm_manager_close(m);
}

/* By count: all but the newest keep_runs finished runs go, in batches (more runs than one
 * batch), events with them; runs that finished in the same millisecond as the last one kept
 * stay; unfinished runs are never counted or touched. */
static void test_prune_keep_count(void **state)
{
    (void)state;
    const int total = FSM_PRUNE_BATCH * 2 + 37;
    struct err e = {0};
    assert_int_equal(fsm_db_migrate(db, &e), 0);
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<%d)"
             " INSERT INTO fsm_runs(version,type,action,resource_id,request,transitions,"
             "end_state,status,outcome,created_ms,finished_ms)"
             " SELECT printf('%%016x',i),'t','a','r'||i,x'','[]','done',3,1,i,i FROM n",
             total);
    assert_int_equal(db_exec(db, sql), 0);
    assert_int_equal(db_exec(db, "INSERT INTO fsm_events(version,seq,type,ts_ms)"
                                 " SELECT version,1,1,0 FROM fsm_runs"),
                     0);
    /* a tie with the oldest run kept (finished_ms = total - 99) */
    assert_int_equal(db_exec(db, "UPDATE fsm_runs SET finished_ms=finished_ms+1 WHERE"
                                 " finished_ms=(SELECT max(finished_ms)-100 FROM fsm_runs)"),
                     0);
    assert_int_equal(db_exec(db, "INSERT INTO fsm_runs(version,type,action,resource_id,request,"
                                 "transitions,end_state,status,created_ms) VALUES"
                                 "('zzzz','t','a','live',x'','[]','done',1,0)"),
                     0);
    assert_int_equal(fsm_db_prune_count(db, 0, 100), total - 101);
    assert_int_equal(fsm_db_prune(db, 0, 100), total - 101);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE status=3"), 101);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_events"), 101);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE status<3"), 1);
    assert_int_equal(ft_q(db, "SELECT min(finished_ms) FROM fsm_runs WHERE status=3"),
                     total - 99);
    /* again: nothing left to prune; then the age cutoff alone */
    assert_int_equal(fsm_db_prune(db, 0, 100), 0);
    assert_int_equal(fsm_db_prune(db, total - 50, 0), 50);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs"), 101 - 50 + 1);
}

static void test_retention_prune_at_open(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "retention", 1, NULL);
    struct fsm_id old, recent;
    assert_int_equal(fsm_start(m, x, "old", NULL, 0, NULL, &old), 0);
    assert_int_equal(fsm_start(m, x, "recent", NULL, 0, NULL, &recent), 0);
    assert_int_equal(fsm_wait(m, &old, 10000, NULL, NULL), 0);
    assert_int_equal(fsm_wait(m, &recent, 10000, NULL, NULL), 0);
    fsm_manager_close(m);
    char sql[256];
    snprintf(sql, sizeof(sql), "UPDATE fsm_runs SET finished_ms=%lld WHERE resource_id='old'",
             (long long)(now_ms() - 8LL * 86400000));
    assert_int_equal(db_exec(db, sql), 0);
    struct fsm_config cfg = {.history_retention_days = 7};
    struct err e = {0};
    assert_int_equal(fsm_manager_open(db, &cfg, &m, &e), 0);
    /* The timer thread prunes once at start. */
    for (int i = 0;
         i < 500 && ft_q(db, "SELECT count(*) FROM fsm_runs WHERE version='%s'", old.s) != 0; i++)
        sleep_ms(5);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE version='%s'", old.s), 0);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE version='%s'", recent.s), 1);
    fsm_manager_close(m);
}

/* ---- misuse ------------------------------------------------------------------------------ */

struct nested {
    struct fsm_manager *m;
    struct fsm_machine *x;
    int start_rc, cancel_rc;
    struct fsm_id self;
};

static int start_from_callback(struct db *cdb, void *ud)
{
    (void)cdb;
    struct nested *n = ud;
    n->start_rc = fsm_start(n->m, n->x, "nested", NULL, 0, NULL, NULL);
    n->cancel_rc = fsm_cancel(n->m, &n->self, "nested");
    return 0;
}

static struct fsm_result starts_in_callback(struct fsm_run *run, void *ud)
{
    struct nested *n = ud;
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    n->self = info.version;
    fsm_run_on_commit(run, start_from_callback, n, NULL);
    return fsm_ok();
}

static void test_no_start_inside_commit_callback(void **state)
{
    (void)state;
    struct nested n = {0};
    n.m = ft_open_manager(db, NULL, 0);
    struct fsm_transition_def t[1] = {{"only", starts_in_callback, NULL}};
    struct fsm_machine_def def = {.type = "misuse",
                                  .action = "nest",
                                  .transitions = t,
                                  .n_transitions = 1,
                                  .end_state = "done",
                                  .ud = &n};
    assert_int_equal(fsm_register(n.m, &def, &n.x), 0);
    struct fsm_id v;
    assert_int_equal(fsm_start(n.m, n.x, "outer", NULL, 0, NULL, &v), 0);
    enum fsm_outcome o;
    assert_int_equal(fsm_wait(n.m, &v, 10000, &o, NULL), 0);
    assert_int_equal(o, FSM_OK);
    assert_int_equal(n.start_rc, -EDEADLK);
    assert_int_equal(n.cancel_rc, -EDEADLK);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE resource_id='nested'"), 0);
    fsm_manager_close(n.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_outcome_names),
        cmocka_unit_test_setup_teardown(test_register, setup, teardown),
        cmocka_unit_test_setup_teardown(test_happy_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff_curve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exhausted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unrecoverable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attempt_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_callback_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finalizer_commit_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_observer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_state_and_log_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune_keep_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_prune_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_start_inside_commit_callback, setup, teardown),
    };
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_ERROR, 2);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
