/*
 * test_fsm_sched.c: the FSM engine's scheduling and lifecycle: queue FIFO order and limits
 * (also changed at run time), run-after composed with a queue, delayed start composed with
 * both, cancel of pending / delayed / waiting / running runs, the parent filter, unqueued
 * dedupe, graceful shutdown leaving runs resumable, and resume (right transition, attempt
 * restored, through the queue, end step re-run, unknown machines untouched, frozen transition
 * lists).
 *
 * A "restart" is a new manager on the same database after fsm_manager_close(); the crash
 * test (tests/crash) does the same with SIGKILL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fsm_testutil.h"
#include "util/log.h"

static char *dir;
static struct db *db;

static int setup(void **state)
{
    (void)state;
    return ft_env_open("fsmsched", &dir, &db);
}

static int teardown(void **state)
{
    (void)state;
    ft_env_close(&dir, &db);
    return 0;
}

static const struct fsm_queue_cfg q1[] = {{"q", 1}};
static const struct fsm_queue_cfg q2[] = {{"q", 2}};
static const struct fsm_queue_cfg q3[] = {{"q", 3}};

static int ft_in_flight(struct ft *t)
{
    pthread_mutex_lock(&t->lock);
    int n = t->in_flight;
    pthread_mutex_unlock(&t->lock);
    return n;
}

static int ft_max_in_flight(struct ft *t)
{
    pthread_mutex_lock(&t->lock);
    int n = t->max_in_flight;
    pthread_mutex_unlock(&t->lock);
    return n;
}

static bool ft_seen(struct ft *t, const char *resource)
{
    pthread_mutex_lock(&t->lock);
    bool seen = false;
    for (int i = 0; i < t->n_order; i++)
        if (!strcmp(t->order[i], resource))
            seen = true;
    pthread_mutex_unlock(&t->lock);
    return seen;
}

struct flight_probe {
    struct ft *t;
    int want;
};

static bool in_flight_is(void *ud)
{
    struct flight_probe *p = ud;
    return ft_in_flight(p->t) == p->want;
}

static void wait_in_flight(struct ft *t, int want)
{
    struct flight_probe p = {t, want};
    assert_true(ft_eventually(in_flight_is, &p, 5000));
}

static int64_t run_col(const struct fsm_id *v, const char *col)
{
    return ft_q(db, "SELECT %s FROM fsm_runs WHERE version='%s'", col, v->s);
}

static void wait_ok(struct fsm_manager *m, const struct fsm_id *v)
{
    enum fsm_outcome o = FSM_RETRY;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, v, 10000, &o, &err), 0);
    if (o != FSM_OK)
        fprintf(stderr, "run %s: %s: %s\n", v->s, fsm_outcome_name(o), err);
    assert_int_equal(o, FSM_OK);
    free(err);
}

/* ---- queues ------------------------------------------------------------------------------ */

static void test_queue_fifo_and_limit(void **state)
{
    (void)state;
    static const struct fsm_queue_cfg qs[] = {{"q", 2}, {"serial", 1}};
    struct ft t, ts;
    ft_init(&t);
    ft_init(&ts);
    t.step[0].sleep_ms = 30;
    ts.step[0].sleep_ms = 5;
    struct fsm_manager *m = ft_open_manager(db, qs, 2);
    struct fsm_machine *x = ft_register(m, &t, "limit2", 2, NULL);
    struct fsm_machine *xs = ft_register(m, &ts, "serial", 2, NULL);
    struct fsm_start_opts o = {.queue = "q"}, os = {.queue = "serial"};
    struct fsm_id v[8], w[8];
    for (int i = 0; i < 8; i++) {
        char res[8];
        snprintf(res, sizeof(res), "r%d", i);
        assert_int_equal(fsm_start(m, x, res, NULL, 0, &o, &v[i]), 0);
        assert_int_equal(fsm_start(m, xs, res, NULL, 0, &os, &w[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        wait_ok(m, &v[i]);
        wait_ok(m, &w[i]);
    }
    /* Never over the limit. (That the limit is reached, too, is asserted with gates in
     * test_queue_limit_at_run_time: here 30 ms windows need not overlap on a busy machine.) */
    assert_true(t.max_in_flight >= 1 && t.max_in_flight <= 2);
    assert_int_equal(ts.max_in_flight, 1);
    /* Strict FIFO: with one slot, runs start in the order they were queued. */
    assert_int_equal(ts.n_order, 8);
    for (int i = 0; i < 8; i++) {
        char res[8];
        snprintf(res, sizeof(res), "r%d", i);
        assert_string_equal(ts.order[i], res);
    }
    /* The database agrees: when a run of "q" started, at most one run queued before it was
     * still unfinished (the other slot). */
    for (int i = 2; i < 8; i++) {
        int unfinished = 0;
        for (int j = 0; j < i; j++)
            if (run_col(&v[j], "finished_ms") > run_col(&v[i], "started_ms"))
                unfinished++;
        assert_true(unfinished <= 1);
    }
    char *s = ft_qs(db, "SELECT queue FROM fsm_runs WHERE version='%s'", v[0].s);
    assert_string_equal(s, "q");
    free(s);
    /* Unknown queue names are refused. */
    struct fsm_start_opts bad = {.queue = "nope"};
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, &bad, NULL), -EINVAL);
    fsm_manager_close(m);
}

static int count_running(const struct fsm_run_record *r, void *ud)
{
    int *n = ud;
    if (r->status == FSM_RUN_RUNNING)
        n[0]++;
    else if (r->status == FSM_RUN_PENDING)
        n[1]++;
    return 0;
}

static void test_queue_limit_at_run_time(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].gate = true;
    t.step[0].progress = 100;
    struct fsm_manager *m = ft_open_manager(db, q1, 1);
    struct fsm_machine *x = ft_register(m, &t, "limit", 1, NULL);
    struct fsm_start_opts o = {.queue = "q"};
    struct fsm_id v[6];
    for (int i = 0; i < 6; i++) {
        char res[8];
        snprintf(res, sizeof(res), "r%d", i);
        assert_int_equal(fsm_start(m, x, res, NULL, 0, &o, &v[i]), 0);
    }
    wait_in_flight(&t, 1);
    sleep_ms(100);
    assert_int_equal(ft_max_in_flight(&t), 1);
    int n[2] = {0, 0};
    assert_int_equal(fsm_list_active(m, count_running, n), 0);
    assert_int_equal(n[0], 1);
    assert_int_equal(n[1], 5);
    struct fsm_queue_stats qs;
    assert_int_equal(fsm_queue_stats(m, "q", &qs), 0);
    assert_int_equal(qs.limit, 1);
    assert_int_equal(qs.running, 1);
    assert_int_equal(qs.waiting, 5);
    assert_int_equal(qs.work_done, 101); /* "work" 0..100, then "next" 1 */
    assert_int_equal(fsm_queue_stats(m, "nope", &qs), -ENOENT);

    assert_int_equal(fsm_queue_set_limit(m, "q", 3), 0);
    wait_in_flight(&t, 3);
    sleep_ms(100);
    assert_int_equal(ft_max_in_flight(&t), 3);
    n[0] = n[1] = 0;
    assert_int_equal(fsm_list_active(m, count_running, n), 0);
    assert_int_equal(n[0], 3);
    assert_int_equal(n[1], 3);
    /* The database shows the same: 3 running, 3 pending. */
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE status=2"), 3);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE status=1"), 3);
    assert_int_equal(fsm_queue_stats(m, "q", &qs), 0);
    assert_int_equal(qs.limit, 3);
    assert_int_equal(qs.running, 3);
    assert_int_equal(qs.waiting, 3);
    assert_int_equal(fsm_queue_set_limit(m, "q", 0), -EINVAL);
    ft_open_gate(&t);
    for (int i = 0; i < 6; i++)
        wait_ok(m, &v[i]);
    assert_int_equal(fsm_queue_stats(m, "q", &qs), 0);
    assert_int_equal(qs.work_done, 6 * 101);
    /* a slot is free once the run's thread has exited, just after its end step */
    for (int i = 0; i < 2000 && qs.running + qs.waiting > 0; i++) {
        sleep_ms(5);
        assert_int_equal(fsm_queue_stats(m, "q", &qs), 0);
    }
    assert_int_equal(qs.running + qs.waiting, 0);
    assert_int_equal(ft_max_in_flight(&t), 3);
    fsm_manager_close(m);
}

/* ---- run-after, delay -------------------------------------------------------------------- */

static void test_run_after_with_queue(void **state)
{
    (void)state;
    struct ft ta, tb;
    ft_init(&ta);
    ft_init(&tb);
    ta.step[0].gate = true;
    ta.step[1].outcome = FSM_ABORT;
    snprintf(ta.step[1].message, sizeof(ta.step[1].message), "A failed");
    struct fsm_manager *m = ft_open_manager(db, q2, 1);
    struct fsm_machine *xa = ft_register(m, &ta, "pred", 2, NULL);
    struct fsm_machine *xb = ft_register(m, &tb, "succ", 1, NULL);
    struct fsm_start_opts oq = {.queue = "q"};
    struct fsm_id a, b, c;
    assert_int_equal(fsm_start(m, xa, "a", NULL, 0, &oq, &a), 0);
    struct fsm_start_opts ob = {.queue = "q", .run_after = &a};
    assert_int_equal(fsm_start(m, xb, "b", NULL, 0, &ob, &b), 0);
    assert_int_equal(fsm_start(m, xb, "c", NULL, 0, &oq, &c), 0);
    /* c takes the second slot; b does not, although it was queued first: it only joins the
     * queue once a has finished. */
    wait_ok(m, &c);
    assert_true(ft_seen(&tb, "c"));
    assert_false(ft_seen(&tb, "b"));
    assert_int_equal(run_col(&b, "status"), FSM_RUN_PENDING);
    ft_open_gate(&ta);
    wait_ok(m, &b);
    enum fsm_outcome o;
    assert_int_equal(fsm_wait(m, &a, 1000, &o, NULL), 0);
    assert_int_equal(o, FSM_ABORT);
    /* b ran whatever a's outcome, after a finished, and saw it. */
    assert_int_equal(tb.pred_rc, 0);
    assert_int_equal(tb.pred_outcome, FSM_ABORT);
    assert_string_equal(tb.pred_error, "A failed");
    assert_true(run_col(&b, "started_ms") >= run_col(&a, "finished_ms"));
    char *s = ft_qs(db, "SELECT run_after FROM fsm_runs WHERE version='%s'", b.s);
    assert_string_equal(s, a.s);
    free(s);
    fsm_manager_close(m);
}

static void test_delayed_start(void **state)
{
    (void)state;
    struct ft t, tg;
    ft_init(&t);
    ft_init(&tg);
    tg.step[0].gate = true;
    struct fsm_manager *m = ft_open_manager(db, q2, 1);
    struct fsm_machine *x = ft_register(m, &t, "delayed", 1, NULL);
    struct fsm_machine *xg = ft_register(m, &tg, "gated", 1, NULL);

    /* Alone: not before its time. */
    int64_t t0 = now_ms();
    struct fsm_start_opts od = {.delay_until_ms = t0 + 500};
    struct fsm_id d;
    assert_int_equal(fsm_start(m, x, "d", NULL, 0, &od, &d), 0);
    sleep_ms(100);
    assert_int_equal(run_col(&d, "status"), FSM_RUN_PENDING);
    assert_false(ft_seen(&t, "d"));
    wait_ok(m, &d);
    assert_true(run_col(&d, "started_ms") >= t0 + 500);
    assert_int_equal(run_col(&d, "delay_until_ms"), t0 + 500);

    /* Delay + run-after + queue: starts at the later of the delay and the predecessor's end. */
    struct fsm_start_opts oq = {.queue = "q"};
    struct fsm_id p, e;
    assert_int_equal(fsm_start(m, xg, "p", NULL, 0, &oq, &p), 0);
    t0 = now_ms();
    struct fsm_start_opts oe = {.queue = "q", .run_after = &p, .delay_until_ms = t0 + 100};
    assert_int_equal(fsm_start(m, x, "e", NULL, 0, &oe, &e), 0);
    sleep_ms(300); /* the delay has passed; the predecessor still runs */
    assert_false(ft_seen(&t, "e"));
    ft_open_gate(&tg);
    wait_ok(m, &e);
    assert_true(run_col(&e, "started_ms") >= run_col(&p, "finished_ms"));
    assert_true(run_col(&e, "started_ms") >= t0 + 300);

    /* ...and the other way round: the predecessor finishes first, the delay decides. */
    struct fsm_id p2, f;
    assert_int_equal(fsm_start(m, x, "p2", NULL, 0, &oq, &p2), 0);
    wait_ok(m, &p2);
    t0 = now_ms();
    struct fsm_start_opts of = {.queue = "q", .run_after = &p2, .delay_until_ms = t0 + 200};
    assert_int_equal(fsm_start(m, x, "f", NULL, 0, &of, &f), 0);
    wait_ok(m, &f);
    assert_true(run_col(&f, "started_ms") >= t0 + 200);
    fsm_manager_close(m);
}

/* ---- cancel ------------------------------------------------------------------------------ */

static void expect_cancelled(struct fsm_manager *m, const struct fsm_id *v, const char *cause)
{
    enum fsm_outcome o = FSM_OK;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, v, 10000, &o, &err), 0);
    assert_int_equal(o, FSM_CANCELLED);
    assert_string_equal(err, cause);
    free(err);
    assert_int_equal(ft_q(db,
                          "SELECT count(*) FROM fin WHERE run='%s' AND outcome=%d AND"
                          " error='%s'",
                          v->s, FSM_CANCELLED, cause),
                     1);
    assert_int_equal(ft_q(db,
                          "SELECT count(*) FROM fsm_events WHERE version='%s' AND type=4"
                          " AND outcome=%d",
                          v->s, FSM_CANCELLED),
                     1);
}

static void test_cancel(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].gate = true;
    struct fsm_manager *m = ft_open_manager(db, q1, 1);
    struct fsm_machine *x = ft_register(m, &t, "cancel", 2, NULL);
    struct fsm_start_opts oq = {.queue = "q"};
    struct fsm_id a, b, d, w;
    assert_int_equal(fsm_start(m, x, "a", NULL, 0, &oq, &a), 0);
    assert_int_equal(fsm_start(m, x, "b", NULL, 0, &oq, &b), 0); /* waits in the queue */
    struct fsm_start_opts od = {.delay_until_ms = now_ms() + 3600LL * 1000};
    assert_int_equal(fsm_start(m, x, "d", NULL, 0, &od, &d), 0); /* delayed an hour */
    struct fsm_start_opts ow = {.run_after = &a};
    assert_int_equal(fsm_start(m, x, "w", NULL, 0, &ow, &w), 0); /* waits for a */
    wait_in_flight(&t, 1);

    /* Pending runs: they end CANCELLED at once, finalizers run, no transition runs. */
    assert_int_equal(fsm_cancel(m, &b, "user said no"), 0);
    expect_cancelled(m, &b, "user said no");
    assert_int_equal(fsm_cancel(m, &d, "too late"), 0);
    expect_cancelled(m, &d, "too late");
    assert_int_equal(fsm_cancel(m, &w, "not needed"), 0);
    expect_cancelled(m, &w, "not needed");
    assert_false(ft_seen(&t, "b"));
    assert_false(ft_seen(&t, "d"));
    assert_false(ft_seen(&t, "w"));
    char *s = ft_events(db, &b);
    assert_string_equal(s, "start,halt,finish");
    free(s);
    assert_int_equal(fsm_cancel(m, &b, "again"), -EALREADY);
    s = ft_qs(db, "SELECT error_state FROM fsm_runs WHERE version='%s'", b.s);
    assert_null(s); /* it never ran a transition */

    /* The running run: its transition sees FSM_CANCEL_USER, the run ends CANCELLED at t0. */
    assert_int_equal(fsm_cancel(m, &a, "operator cancel"), 0);
    expect_cancelled(m, &a, "operator cancel");
    assert_int_equal(t.saw_cancel[0], FSM_CANCEL_USER);
    assert_int_equal(t.calls[1], 0);
    s = ft_qs(db, "SELECT error_state FROM fsm_runs WHERE version='%s'", a.s);
    assert_string_equal(s, "t0");
    free(s);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s'", a.s), 0);
    struct fsm_id unknown;
    fsm_id_new(&unknown);
    assert_int_equal(fsm_cancel(m, &unknown, "x"), -ENOENT);
    fsm_manager_close(m);
}

static struct fsm_result sleepy(struct fsm_run *run, void *ud)
{
    struct ft *t = ud;
    int64_t t0 = mono_ms();
    int r = fsm_run_sleep_ms(run, 30000);
    pthread_mutex_lock(&t->lock);
    t->sleep_rc[0] = r;
    t->saw_deadline[0] = mono_ms() - t0; /* how long it slept */
    pthread_mutex_unlock(&t->lock);
    return r < 0 ? fsm_retry("woken") : fsm_ok();
}

/* Ignores cancellation and finishes its work: the work is kept, then the run is cancelled. */
static struct fsm_result stubborn(struct fsm_run *run, void *ud)
{
    struct ft *t = ud;
    pthread_mutex_lock(&t->lock);
    t->calls[0]++;
    while (!t->gate_open) {
        pthread_mutex_unlock(&t->lock);
        sleep_ms(2);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    struct ft_row *row = calloc(1, sizeof(*row));
    snprintf(row->run, sizeof(row->run), "%s", info.version.s);
    snprintf(row->step, sizeof(row->step), "stubborn");
    fsm_run_on_commit(run, ft_insert_dom, row, free);
    return fsm_ok();
}

static void test_cancel_running_wakes_and_keeps_done_work(void **state)
{
    (void)state;
    struct ft t, ts;
    ft_init(&t);
    ft_init(&ts);
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_transition_def d1[2] = {{"nap", sleepy, NULL}, {"after", ft_t1, NULL}};
    struct fsm_machine_def def1 = {.type = "test",
                                   .action = "sleepy",
                                   .transitions = d1,
                                   .n_transitions = 2,
                                   .end_state = "done",
                                   .finalizers = ft_fins,
                                   .n_finalizers = 1,
                                   .ud = &t};
    struct fsm_machine *x1 = NULL;
    assert_int_equal(fsm_register(m, &def1, &x1), 0);
    struct fsm_transition_def d2[2] = {{"work", stubborn, NULL}, {"after", ft_t1, NULL}};
    struct fsm_machine_def def2 = {.type = "test",
                                   .action = "stubborn",
                                   .transitions = d2,
                                   .n_transitions = 2,
                                   .end_state = "done",
                                   .finalizers = ft_fins,
                                   .n_finalizers = 1,
                                   .ud = &ts};
    struct fsm_machine *x2 = NULL;
    assert_int_equal(fsm_register(m, &def2, &x2), 0);

    struct fsm_id a, b;
    assert_int_equal(fsm_start(m, x1, "a", NULL, 0, NULL, &a), 0);
    assert_int_equal(fsm_start(m, x2, "b", NULL, 0, NULL, &b), 0);
    while (run_col(&a, "status") != FSM_RUN_RUNNING || run_col(&b, "status") != FSM_RUN_RUNNING)
        sleep_ms(2);
    sleep_ms(50);
    assert_int_equal(fsm_cancel(m, &a, "stop sleeping"), 0);
    expect_cancelled(m, &a, "stop sleeping");
    assert_int_equal(t.sleep_rc[0], -ECANCELED);
    assert_true(t.saw_deadline[0] < 5000); /* woken, not slept out */
    assert_int_equal(t.calls[1], 0);

    assert_int_equal(fsm_cancel(m, &b, "changed my mind"), 0);
    assert_int_equal(fsm_cancel(m, &b, "twice"), 0); /* already requested: fine */
    ft_open_gate(&ts);
    expect_cancelled(m, &b, "changed my mind");
    /* The transition finished its work: its checkpoint committed, then the run ended. */
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s' AND step='stubborn'", b.s),
                     1);
    assert_int_equal(ts.calls[1], 0);
    char *s = ft_events(db, &b);
    assert_string_equal(s, "start,complete,halt,finish");
    free(s);
    fsm_manager_close(m);
}

/* ---- parent, dedupe ---------------------------------------------------------------------- */

struct collect {
    int n;
    char res[16][16];
};

static int collect_res(const struct fsm_run_record *r, void *ud)
{
    struct collect *c = ud;
    snprintf(c->res[c->n++], sizeof(c->res[0]), "%s", r->resource_id);
    return 0;
}

static void test_parent_filter(void **state)
{
    (void)state;
    struct ft t, t2;
    ft_init(&t);
    ft_init(&t2);
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "family", 1, NULL);
    struct fsm_machine *y = ft_register(m, &t2, "other", 1, NULL);
    struct fsm_id p, c1, c2, u, g;
    assert_int_equal(fsm_start(m, x, "parent", NULL, 0, NULL, &p), 0);
    struct fsm_start_opts oc = {.parent = &p};
    assert_int_equal(fsm_start(m, x, "child-1", NULL, 0, &oc, &c1), 0);
    assert_int_equal(fsm_start(m, y, "child-2", NULL, 0, &oc, &c2), 0);
    assert_int_equal(fsm_start(m, x, "unrelated", NULL, 0, NULL, &u), 0);
    struct fsm_start_opts og = {.parent = &c1};
    assert_int_equal(fsm_start(m, x, "grandchild", NULL, 0, &og, &g), 0);
    struct fsm_id all[5] = {p, c1, c2, u, g};
    for (int i = 0; i < 5; i++)
        wait_ok(m, &all[i]);

    struct collect c = {0};
    struct fsm_list_filter f = {.include_finished = true, .parent = &p};
    assert_int_equal(fsm_db_list_runs(db, &f, collect_res, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.res[0], "child-2"); /* newest first */
    assert_string_equal(c.res[1], "child-1");
    struct fsm_run_record rec;
    assert_int_equal(fsm_db_get_run(db, &c1, &rec), 0);
    assert_string_equal(rec.parent.s, p.s);
    fsm_run_record_free(&rec);

    /* The other filters. */
    memset(&c, 0, sizeof(c));
    struct fsm_list_filter ft = {.include_finished = true, .type = "test", .limit = 3};
    assert_int_equal(fsm_db_list_runs(db, &ft, collect_res, &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.res[0], "grandchild");
    memset(&c, 0, sizeof(c));
    struct fsm_list_filter fr = {.include_finished = true, .resource_id = "unrelated"};
    assert_int_equal(fsm_db_list_runs(db, &fr, collect_res, &c), 0);
    assert_int_equal(c.n, 1);
    memset(&c, 0, sizeof(c));
    struct fsm_list_filter active = {0};
    assert_int_equal(fsm_db_list_runs(db, &active, collect_res, &c), 0);
    assert_int_equal(c.n, 0); /* all finished */
    fsm_manager_close(m);
}

static void test_unqueued_dedupe(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].gate = true;
    struct fsm_manager *m = ft_open_manager(db, q2, 1);
    struct fsm_machine *x = ft_register(m, &t, "dedupe", 1, NULL);
    struct fsm_id a, again, other, queued;
    assert_int_equal(fsm_start(m, x, "img", NULL, 0, NULL, &a), 0);
    assert_int_equal(fsm_start(m, x, "img", NULL, 0, NULL, &again), -EEXIST);
    assert_string_equal(again.s, a.s); /* the existing run */
    assert_int_equal(fsm_start(m, x, "img-2", NULL, 0, NULL, &other), 0);
    struct fsm_start_opts oq = {.queue = "q"};
    assert_int_equal(fsm_start(m, x, "img", NULL, 0, &oq, &queued), 0); /* queued: no dedupe */
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE resource_id='img'"), 2);
    ft_open_gate(&t);
    wait_ok(m, &a);
    wait_ok(m, &other);
    wait_ok(m, &queued);
    struct fsm_id next;
    assert_int_equal(fsm_start(m, x, "img", NULL, 0, NULL, &next), 0); /* the first finished */
    assert_string_not_equal(next.s, a.s);
    wait_ok(m, &next);
    fsm_manager_close(m);
}

/* ---- shutdown and resume ----------------------------------------------------------------- */

static void test_shutdown_leaves_runs_resumable(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[1].gate = true;
    struct fsm_manager *m = ft_open_manager(db, q1, 1);
    struct fsm_machine *x = ft_register(m, &t, "resumable", 3, NULL);
    struct fsm_start_opts oq = {.queue = "q"};
    struct fsm_id a, b;
    assert_int_equal(fsm_start(m, x, "a", NULL, 0, &oq, &a), 0);
    assert_int_equal(fsm_start(m, x, "b", NULL, 0, &oq, &b), 0);
    while (t.calls[1] == 0)
        sleep_ms(2);
    int64_t t0 = mono_ms();
    fsm_manager_shutdown(m, 5000);
    assert_true(mono_ms() - t0 < 2000); /* the gated transition was woken */
    assert_int_equal(t.saw_cancel[1], FSM_CANCEL_SHUTDOWN);
    fsm_manager_shutdown(m, 5000); /* idempotent */
    /* Nothing recorded as an outcome. */
    assert_int_equal(run_col(&a, "status"), FSM_RUN_RUNNING);
    assert_int_equal(run_col(&a, "outcome"), -1);
    assert_int_equal(run_col(&a, "next_index"), 1);
    assert_int_equal(run_col(&a, "attempt"), 0); /* the interrupted attempt is not a failure */
    assert_int_equal(run_col(&b, "status"), FSM_RUN_PENDING);
    char *s = ft_events(db, &a);
    assert_string_equal(s, "start,complete");
    free(s);
    s = ft_events(db, &b);
    assert_string_equal(s, "start");
    free(s);
    assert_int_equal(fsm_start(m, x, "c", NULL, 0, &oq, NULL), -ESHUTDOWN);
    assert_int_equal(fsm_wait(m, &a, 100, NULL, NULL), -ESHUTDOWN);
    assert_int_equal(fsm_wait(m, &b, 100, NULL, NULL), -ESHUTDOWN);
    assert_int_equal(fsm_cancel(m, &a, "x"), -ESHUTDOWN);
    assert_int_equal(fsm_manager_resume(m), -ESHUTDOWN);
    fsm_manager_close(m);

    /* Restart: both continue where they were, through the queue. */
    struct ft t2;
    ft_init(&t2);
    m = ft_open_manager(db, q1, 1);
    x = ft_register(m, &t2, "resumable", 3, NULL);
    assert_int_equal(fsm_manager_resume(m), 2);
    assert_int_equal(fsm_manager_resume(m), 0); /* idempotent: already live */
    wait_ok(m, &a);
    wait_ok(m, &b);
    assert_int_equal(t2.calls[0], 1); /* b's t0; a's t0 was checkpointed before */
    assert_int_equal(t2.calls[1], 2);
    assert_true(t2.saw_restart[1]);
    assert_string_equal(t2.saw_response[2], "t1"); /* responses are checkpointed */
    s = ft_events(db, &a);
    assert_string_equal(s, "start,complete,resume,complete,complete,finish");
    free(s);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s'", a.s), 3);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s' AND step='t0'", a.s), 1);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s'", b.s), 3);
    fsm_manager_close(m);
}

static bool attempts_recorded(void *ud)
{
    const struct fsm_id *v = ud;
    return run_col(v, "attempt") >= 2;
}

static void test_resume_restores_attempt(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[1].fail_until = 1000000;
    struct fsm_retry_policy p = ft_fast;
    p.max_attempts = 0; /* never give up */
    p.initial_backoff_ms = 20;
    p.max_backoff_ms = 20;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "attempts", 3, &p);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    assert_true(ft_eventually(attempts_recorded, &v, 5000));
    fsm_manager_close(m);
    int64_t k = run_col(&v, "attempt");
    assert_true(k >= 2);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_events WHERE version='%s' AND type=2", v.s),
                     k);

    /* After the restart, t1 continues at attempt k (and now succeeds); t0 is not re-run. */
    struct ft t2;
    ft_init(&t2);
    m = ft_open_manager(db, NULL, 0);
    x = ft_register(m, &t2, "attempts", 3, &p);
    assert_int_equal(fsm_manager_resume(m), 1);
    wait_ok(m, &v);
    assert_int_equal(t2.calls[0], 0);
    assert_int_equal(t2.calls[1], 1);
    assert_int_equal(t2.last_attempt[1], k);
    assert_true(t2.saw_restart[1]);
    assert_true(t2.saw_restart[2]);
    assert_int_equal(t2.last_attempt[2], 0); /* the next transition starts from 0 */
    assert_int_equal(ft_q(db,
                          "SELECT attempt FROM fsm_events WHERE version='%s' AND type=3 AND"
                          " state='t1'",
                          v.s),
                     k);
    assert_int_equal(ft_q(db, "SELECT attempt FROM fsm_events WHERE version='%s' AND type=6", v.s),
                     k);
    fsm_manager_close(m);

    /* With a limit, the restored count counts: max_attempts = k + 1 leaves one attempt. */
    struct ft t3;
    ft_init(&t3);
    t3.step[1].fail_until = 1000000;
    m = ft_open_manager(db, NULL, 0);
    x = ft_register(m, &t3, "attempts", 3, &p);
    struct fsm_id w;
    assert_int_equal(fsm_start(m, x, "r2", NULL, 0, NULL, &w), 0);
    struct fsm_id *wp = &w;
    assert_true(ft_eventually(attempts_recorded, wp, 5000));
    fsm_manager_close(m);
    k = run_col(&w, "attempt");
    struct ft t4;
    ft_init(&t4);
    t4.step[1].fail_until = 1000000;
    struct fsm_retry_policy p4 = p;
    p4.max_attempts = (uint32_t)k + 1;
    m = ft_open_manager(db, NULL, 0);
    x = ft_register(m, &t4, "attempts", 3, &p4);
    assert_int_equal(fsm_manager_resume(m), 1);
    enum fsm_outcome o;
    assert_int_equal(fsm_wait(m, &w, 10000, &o, NULL), 0);
    assert_int_equal(o, FSM_ABORT);
    assert_int_equal(t4.calls[1], 1);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_events WHERE version='%s' AND type=2", w.s),
                     k + 1);
    fsm_manager_close(m);
}

static void test_resume_exhausted_before_halt(void **state)
{
    (void)state;
    /* The state a crash leaves between the last failed attempt's ERROR and its HALT: attempt
     * count == max_attempts, no outcome. Made by a shutdown during the last attempt, then
     * the ERROR recorded by hand, as the engine would have. */
    struct ft t;
    ft_init(&t);
    t.step[1].gate = true;
    struct fsm_retry_policy p = ft_fast;
    p.max_attempts = 3;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "exhaust-crash", 3, &p);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    while (t.calls[1] == 0)
        sleep_ms(2);
    fsm_manager_close(m);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "UPDATE fsm_runs SET attempt=3, error='t1 failed for good' WHERE version='%s'", v.s);
    assert_int_equal(db_exec(db, sql), 0);

    struct ft t2;
    ft_init(&t2);
    m = ft_open_manager(db, NULL, 0);
    x = ft_register(m, &t2, "exhaust-crash", 3, &p);
    assert_int_equal(fsm_manager_resume(m), 1);
    enum fsm_outcome o;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, &err), 0);
    assert_int_equal(o, FSM_ABORT);
    assert_string_equal(err, "t1 failed for good");
    free(err);
    assert_int_equal(t2.calls[1], 0); /* no fourth attempt */
    assert_int_equal(t2.fin_calls, 1);
    fsm_manager_close(m);
}

static void test_resume_reruns_end_step(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].outcome = FSM_ABORT;
    snprintf(t.step[0].message, sizeof(t.step[0].message), "bad blob");
    t.fin_fail_commit = true; /* FINISH cannot commit in this life */
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "endstep", 2, NULL);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    while (t.fin_calls < 1)
        sleep_ms(2);
    fsm_manager_close(m);
    /* Halted (outcome decided and durable) but not finished. */
    assert_int_equal(run_col(&v, "status"), FSM_RUN_RUNNING);
    assert_int_equal(run_col(&v, "outcome"), FSM_ABORT);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fin WHERE run='%s'", v.s), 0);
    char *s = ft_events(db, &v);
    assert_string_equal(s, "start,halt");
    free(s);

    struct ft t2;
    ft_init(&t2);
    m = ft_open_manager(db, NULL, 0);
    x = ft_register(m, &t2, "endstep", 2, NULL);
    assert_int_equal(fsm_manager_resume(m), 1);
    enum fsm_outcome o;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, &err), 0);
    assert_int_equal(o, FSM_ABORT);
    assert_string_equal(err, "bad blob");
    free(err);
    assert_int_equal(t2.calls[0], 0); /* only the end step ran */
    assert_int_equal(t2.fin_calls, 1);
    assert_int_equal(t2.fin_outcome, FSM_ABORT);
    assert_string_equal(t2.fin_error, "bad blob");
    assert_int_equal(
        ft_q(db, "SELECT count(*) FROM fin WHERE run='%s' AND outcome=%d", v.s, FSM_ABORT), 1);
    s = ft_events(db, &v);
    assert_string_equal(s, "start,halt,resume,finish");
    free(s);
    fsm_manager_close(m);
}

static void test_resume_through_queue(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[0].gate = true;
    struct fsm_manager *m = ft_open_manager(db, q3, 1);
    struct fsm_machine *x = ft_register(m, &t, "requeue", 2, NULL);
    struct fsm_start_opts oq = {.queue = "q"};
    struct fsm_id v[6];
    for (int i = 0; i < 6; i++) {
        char res[8];
        snprintf(res, sizeof(res), "r%d", i);
        assert_int_equal(fsm_start(m, x, res, NULL, 0, &oq, &v[i]), 0);
    }
    wait_in_flight(&t, 3);
    fsm_manager_close(m);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE status=2"), 3);

    /* The restarted manager has a limit of 2: the three that were running must not all run
     * again at once. */
    struct ft t2;
    ft_init(&t2);
    t2.step[0].gate = true;
    m = ft_open_manager(db, q2, 1);
    x = ft_register(m, &t2, "requeue", 2, NULL);
    assert_int_equal(fsm_manager_resume(m), 6);
    wait_in_flight(&t2, 2);
    sleep_ms(150);
    assert_int_equal(ft_max_in_flight(&t2), 2);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE status=2"), 2);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE status=1"), 4);
    /* The oldest two got the slots (FIFO by creation order). */
    pthread_mutex_lock(&t2.lock);
    assert_int_equal(t2.n_order, 2);
    assert_true((!strcmp(t2.order[0], "r0") && !strcmp(t2.order[1], "r1")) ||
                (!strcmp(t2.order[0], "r1") && !strcmp(t2.order[1], "r0")));
    pthread_mutex_unlock(&t2.lock);
    ft_open_gate(&t2);
    for (int i = 0; i < 6; i++)
        wait_ok(m, &v[i]);
    assert_int_equal(ft_max_in_flight(&t2), 2);
    assert_int_equal(t2.n_order, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(ft_q(db, "SELECT count(*) FROM dom WHERE run='%s'", v[i].s), 2);
    fsm_manager_close(m);
}

static void test_resume_rearms_delay(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    struct fsm_manager *m = ft_open_manager(db, q1, 1);
    struct fsm_machine *x = ft_register(m, &t, "later", 1, NULL);
    int64_t due = now_ms() + 600;
    struct fsm_start_opts o = {.queue = "q", .delay_until_ms = due};
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, &o, &v), 0);
    fsm_manager_close(m);
    assert_int_equal(t.calls[0], 0);

    struct ft t2;
    ft_init(&t2);
    m = ft_open_manager(db, q1, 1);
    x = ft_register(m, &t2, "later", 1, NULL);
    assert_int_equal(fsm_manager_resume(m), 1);
    if (now_ms() < due - 100) {
        sleep_ms(50);
        assert_int_equal(t2.calls[0], 0); /* still not due */
    }
    wait_ok(m, &v);
    assert_true(run_col(&v, "started_ms") >= due);
    assert_int_equal(t2.calls[0], 1);
    fsm_manager_close(m);
}

static void test_resume_unknown_machine_untouched(void **state)
{
    (void)state;
    struct ft ta, tb;
    ft_init(&ta);
    ft_init(&tb);
    ta.step[0].gate = true;
    tb.step[0].gate = true;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *xa = ft_register(m, &ta, "known", 1, NULL);
    struct fsm_machine *xb = ft_register(m, &tb, "gone", 1, NULL);
    struct fsm_id a, b;
    assert_int_equal(fsm_start(m, xa, "a", NULL, 0, NULL, &a), 0);
    assert_int_equal(fsm_start(m, xb, "b", NULL, 0, NULL, &b), 0);
    wait_in_flight(&ta, 1);
    wait_in_flight(&tb, 1);
    fsm_manager_close(m);

    struct ft ta2;
    ft_init(&ta2);
    m = ft_open_manager(db, NULL, 0);
    xa = ft_register(m, &ta2, "known", 1, NULL);
    assert_int_equal(fsm_manager_resume(m), 1);
    wait_ok(m, &a);
    /* b: no RESUME, status untouched, nothing runs it. */
    char *s = ft_events(db, &b);
    assert_string_equal(s, "start");
    free(s);
    assert_int_equal(run_col(&b, "status"), FSM_RUN_RUNNING);
    assert_int_equal(fsm_wait(m, &b, 150, NULL, NULL), -ETIMEDOUT);
    /* A cancel is recorded for whoever runs it. */
    assert_int_equal(fsm_cancel(m, &b, "machine retired"), 0);
    assert_int_equal(run_col(&b, "outcome"), FSM_CANCELLED);
    assert_int_equal(run_col(&b, "status"), FSM_RUN_RUNNING);
    fsm_manager_close(m);

    struct ft tb2;
    ft_init(&tb2);
    m = ft_open_manager(db, NULL, 0);
    xb = ft_register(m, &tb2, "gone", 1, NULL);
    assert_int_equal(fsm_manager_resume(m), 1);
    enum fsm_outcome o;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, &b, 10000, &o, &err), 0);
    assert_int_equal(o, FSM_CANCELLED);
    assert_string_equal(err, "machine retired");
    free(err);
    assert_int_equal(tb2.calls[0], 0);
    assert_int_equal(tb2.fin_calls, 1);
    assert_int_equal(tb2.fin_outcome, FSM_CANCELLED);
    fsm_manager_close(m);
}

static void test_resume_run_after(void **state)
{
    (void)state;
    struct ft ta, tb;
    ft_init(&ta);
    ft_init(&tb);
    ta.step[0].gate = true;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *xa = ft_register(m, &ta, "first", 1, NULL);
    struct fsm_machine *xb = ft_register(m, &tb, "second", 1, NULL);
    struct fsm_id a, b;
    assert_int_equal(fsm_start(m, xa, "a", NULL, 0, NULL, &a), 0);
    struct fsm_start_opts ob = {.run_after = &a};
    assert_int_equal(fsm_start(m, xb, "b", NULL, 0, &ob, &b), 0);
    wait_in_flight(&ta, 1);
    fsm_manager_close(m);
    assert_int_equal(tb.calls[0], 0);

    struct ft ta2, tb2;
    ft_init(&ta2);
    ft_init(&tb2);
    ta2.step[0].gate = true;
    m = ft_open_manager(db, NULL, 0);
    /* Register in the "wrong" order: b's machine first. Resume loads everything at once. */
    xb = ft_register(m, &tb2, "second", 1, NULL);
    xa = ft_register(m, &ta2, "first", 1, NULL);
    assert_int_equal(fsm_manager_resume(m), 2);
    sleep_ms(100);
    assert_int_equal(tb2.calls[0], 0); /* still waiting for a */
    ft_open_gate(&ta2);
    wait_ok(m, &b);
    assert_int_equal(tb2.pred_rc, 0);
    assert_int_equal(tb2.pred_outcome, FSM_OK);
    assert_true(run_col(&b, "started_ms") >= run_col(&a, "finished_ms"));
    fsm_manager_close(m);
}

struct starter {
    struct fsm_manager *m;
    struct fsm_machine *x;
    struct fsm_id v[100];
    int n;
};

static void *start_many(void *arg)
{
    struct starter *st = arg;
    for (int i = 0; i < 100; i++) {
        char res[16];
        snprintf(res, sizeof(res), "c%d", i);
        if (fsm_start(st->m, st->x, res, NULL, 0, NULL, &st->v[i]) == 0)
            st->n++;
    }
    return NULL;
}

static void test_resume_concurrent_with_start(void **state)
{
    (void)state;
    /* Resume running while another thread starts runs must never make a run live twice
     * (it would run its transitions twice: duplicate domain rows). */
    struct ft t;
    ft_init(&t);
    char path[512];
    snprintf(path, sizeof(path), "%s/nosync.db", dir);
    struct db_options nosync = {.synchronous = DB_SYNC_OFF};
    struct db *fast = NULL;
    assert_int_equal(db_open(path, &nosync, &fast, NULL), 0);
    assert_int_equal(db_exec(fast, "CREATE TABLE dom(run TEXT, step TEXT, attempt INTEGER);"
                                   "CREATE TABLE fin(run TEXT, outcome INTEGER, error TEXT)"),
                     0);
    struct starter st = {0};
    st.m = ft_open_manager(fast, NULL, 0);
    st.x = ft_register(st.m, &t, "concurrent", 2, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, start_many, &st), 0);
    int resumed = 0;
    for (int i = 0; i < 200; i++) {
        int r = fsm_manager_resume(st.m);
        assert_true(r >= 0);
        resumed += r;
    }
    pthread_join(th, NULL);
    assert_int_equal(st.n, 100);
    for (int i = 0; i < st.n; i++) {
        enum fsm_outcome o;
        assert_int_equal(fsm_wait(st.m, &st.v[i], 10000, &o, NULL), 0);
        assert_int_equal(o, FSM_OK);
    }
    fsm_manager_close(st.m);
    assert_int_equal(resumed, 0); /* every run was live (or finished) when resume looked */
    assert_int_equal(ft_q(fast, "SELECT count(*) FROM dom"), 200);
    assert_int_equal(ft_q(fast, "SELECT count(*) FROM (SELECT run, step FROM dom GROUP BY run,"
                                " step HAVING count(*) > 1)"),
                     0);
    assert_int_equal(ft_q(fast, "SELECT count(*) FROM fin"), 100);
    assert_int_equal(ft_q(fast, "SELECT count(*) FROM fsm_events WHERE type=6"), 0);
    db_close(fast);
}

static void test_resume_changed_transition_list(void **state)
{
    (void)state;
    struct ft t;
    ft_init(&t);
    t.step[1].gate = true;
    struct fsm_manager *m = ft_open_manager(db, NULL, 0);
    struct fsm_machine *x = ft_register(m, &t, "evolving", 3, NULL);
    struct fsm_id v;
    assert_int_equal(fsm_start(m, x, "r", NULL, 0, NULL, &v), 0);
    while (t.calls[1] == 0)
        sleep_ms(2);
    fsm_manager_close(m);

    /* The new build's machine lost t2: the run keeps its frozen list and stops at t2. */
    struct ft t2;
    ft_init(&t2);
    m = ft_open_manager(db, NULL, 0);
    x = ft_register(m, &t2, "evolving", 2, NULL);
    assert_int_equal(fsm_manager_resume(m), 1);
    enum fsm_outcome o;
    char *err = NULL;
    assert_int_equal(fsm_wait(m, &v, 10000, &o, &err), 0);
    assert_int_equal(o, FSM_UNRECOVERABLE);
    assert_true(tu_contains(err, "transition t2 is not part of machine test/evolving"));
    free(err);
    assert_int_equal(t2.calls[1], 1); /* t1 did run */
    fsm_manager_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_queue_fifo_and_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_limit_at_run_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_after_with_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delayed_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_running_wakes_and_keeps_done_work, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_parent_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unqueued_dedupe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_leaves_runs_resumable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_restores_attempt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_exhausted_before_halt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_reruns_end_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_through_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_rearms_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_unknown_machine_untouched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_run_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_changed_transition_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_concurrent_with_start, setup, teardown),
    };
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_ERROR, 2);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
