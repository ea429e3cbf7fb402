/*
 * test_fsm_cli.c: `thinimg runs`, `runs show` and `runs prune`, run as the real binary against a
 * database in which this process's manager is running a run at the same time (the CLI opens
 * it read-only): tables, filters, --json, events, exit codes and messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "fsm_testutil.h"
#include "util/log.h"

static char *dir;

static int runs(char **out, char **err, const char *a1, const char *a2, const char *a3,
                const char *a4)
{
    char *argv[] = {(char *)tu_thinimg(), "--state-dir", dir,        "runs", (char *)a1,
                    (char *)a2,           (char *)a3,    (char *)a4, NULL};
    return tu_run(argv, NULL, out, err);
}

static void test_runs_command(void **state)
{
    (void)state;
    dir = tu_mkdtemp("fsmcli");
    char path[512];
    snprintf(path, sizeof(path), "%s/thinimg.db", dir);
    struct db *db = NULL;
    assert_int_equal(db_open(path, NULL, &db, NULL), 0);
    assert_int_equal(db_exec(db, "CREATE TABLE dom(run TEXT, step TEXT, attempt INTEGER);"
                                 "CREATE TABLE fin(run TEXT, outcome INTEGER, error TEXT)"),
                     0);
    struct ft t, tg;
    ft_init(&t);
    ft_init(&tg);
    t.step[1].fail_until = 1;
    snprintf(t.step[1].message, sizeof(t.step[1].message), "network hiccup");
    tg.step[0].gate = true;
    static const struct fsm_queue_cfg q[] = {{"fetch", 2}};
    struct fsm_manager *m = ft_open_manager(db, q, 1);
    struct fsm_machine *x = ft_register(m, &t, "fetch-blob", 2, NULL);
    struct fsm_machine *xg = ft_register(m, &tg, "slow", 1, NULL);
    struct fsm_id ok, bad, live;
    const char *req = "{\"key\":\"images/golang/1.tar\"}";
    assert_int_equal(fsm_start(m, x, "sha256:aaaa", req, strlen(req), NULL, &ok), 0);
    assert_int_equal(fsm_wait(m, &ok, 10000, NULL, NULL), 0);
    t.step[1].outcome = FSM_ABORT;
    t.step[1].fail_until = 0;
    snprintf(t.step[1].message, sizeof(t.step[1].message), "digest mismatch");
    assert_int_equal(fsm_start(m, x, "sha256:bbbb", NULL, 0, NULL, &bad), 0);
    assert_int_equal(fsm_wait(m, &bad, 10000, NULL, NULL), 0);
    struct fsm_start_opts oq = {.queue = "fetch"};
    assert_int_equal(fsm_start(m, xg, "sha256:cccc", NULL, 0, &oq, &live), 0);
    while (ft_q(db, "SELECT status FROM fsm_runs WHERE version='%s'", live.s) != 2)
        sleep_ms(2);

    char *out = NULL, *err = NULL;
    /* Default: only unfinished runs. */
    assert_int_equal(runs(&out, &err, NULL, NULL, NULL, NULL), 0);
    assert_true(tu_contains(out, "VERSION"));
    assert_true(tu_contains(out, live.s));
    assert_true(tu_contains(out, "test/slow"));
    assert_true(tu_contains(out, "running"));
    assert_false(tu_contains(out, ok.s));
    free(out);
    free(err);

    /* --all: everything, newest first, with outcome and error. */
    assert_int_equal(runs(&out, &err, "--all", NULL, NULL, NULL), 0);
    assert_true(tu_contains(out, ok.s));
    assert_true(tu_contains(out, bad.s));
    assert_true(tu_contains(out, live.s));
    assert_true(tu_contains(out, "digest mismatch"));
    assert_true(tu_contains(out, "abort"));
    assert_true(strstr(out, live.s) < strstr(out, ok.s));
    free(out);
    free(err);

    /* --limit, --type, --resource. */
    assert_int_equal(runs(&out, &err, "--all", "--limit", "1", NULL), 0);
    assert_true(tu_contains(out, live.s));
    assert_false(tu_contains(out, bad.s));
    free(out);
    free(err);
    assert_int_equal(runs(&out, &err, "--type", "unpack", NULL, NULL), 0);
    assert_true(tu_contains(out, "no pending or running runs"));
    free(out);
    free(err);
    assert_int_equal(runs(&out, &err, "--all", "--resource", "sha256:bbbb", NULL), 0);
    assert_true(tu_contains(out, bad.s));
    assert_false(tu_contains(out, ok.s));
    free(out);
    free(err);

    /* --json: an array with the fields. */
    assert_int_equal(runs(&out, &err, "--all", "--json", NULL, NULL), 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_array_size(j), 3);
    json_t *first = json_array_get(j, 0);
    assert_string_equal(json_string_value(json_object_get(first, "version")), live.s);
    assert_string_equal(json_string_value(json_object_get(first, "status")), "running");
    assert_string_equal(json_string_value(json_object_get(first, "queue")), "fetch");
    assert_true(json_is_null(json_object_get(first, "outcome")));
    json_t *abort_run = json_array_get(j, 1);
    assert_string_equal(json_string_value(json_object_get(abort_run, "outcome")), "abort");
    assert_string_equal(json_string_value(json_object_get(abort_run, "error")), "digest mismatch");
    assert_string_equal(json_string_value(json_object_get(abort_run, "error_state")), "t1");
    json_decref(j);
    free(out);
    free(err);

    /* show: the run and its events. */
    assert_int_equal(runs(&out, &err, "show", ok.s, NULL, NULL), 0);
    assert_true(tu_contains(out, "test/fetch-blob"));
    assert_true(tu_contains(out, "finished, outcome ok"));
    assert_true(tu_contains(out, "images/golang/1.tar"));
    assert_true(tu_contains(out, "network hiccup failed on attempt 0"));
    assert_true(tu_contains(out, "complete"));
    assert_true(tu_contains(out, "finish"));
    free(out);
    free(err);
    assert_int_equal(runs(&out, &err, "show", bad.s, "--json", NULL), 0);
    j = json_loads(out, 0, NULL);
    assert_non_null(j);
    json_t *evs = json_object_get(j, "events");
    assert_int_equal(json_array_size(evs), 4); /* start, complete, halt, finish */
    json_t *halt = json_array_get(evs, 2);
    assert_string_equal(json_string_value(json_object_get(halt, "type")), "halt");
    assert_string_equal(json_string_value(json_object_get(halt, "outcome")), "abort");
    assert_string_equal(json_string_value(json_object_get(halt, "state")), "t1");
    json_decref(j);
    free(out);
    free(err);
    assert_int_equal(runs(&out, &err, "show", ok.s, "--json", NULL), 0);
    j = json_loads(out, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "request"), "key")),
                        "images/golang/1.tar"); /* JSON requests are embedded as JSON */
    json_decref(j);
    free(out);
    free(err);

    /* Errors: unknown run (4), not a version (2), bad option (2). */
    struct fsm_id unknown;
    fsm_id_new(&unknown);
    assert_int_equal(runs(&out, &err, "show", unknown.s, NULL, NULL), 4);
    assert_true(tu_contains(err, "no run"));
    free(out);
    free(err);
    assert_int_equal(runs(&out, &err, "show", "nope", NULL, NULL), 2);
    assert_true(tu_contains(err, "not a run version"));
    free(out);
    free(err);
    assert_int_equal(runs(&out, &err, "--limit", "-3", NULL, NULL), 2);
    free(out);
    free(err);
    assert_int_equal(runs(&out, &err, "--help", NULL, NULL, NULL), 0);
    assert_true(tu_contains(out, "Usage: thinimg runs"));
    free(out);
    free(err);

    /* runs prune: beside the running manager; finished runs only; --dry-run counts. */
    assert_int_equal(runs(&out, &err, "prune", "--keep", "x", NULL), 2);
    assert_true(tu_contains(err, "--keep needs a number"));
    free(out);
    free(err);
    assert_int_equal(runs(&out, &err, "prune", "--older-than", "0", "--keep=0"), 2);
    assert_true(tu_contains(err, "nothing to prune"));
    free(out);
    free(err);
    assert_int_equal(runs(&out, &err, "prune", "--dry-run", "--older-than=0", "--keep=1"), 0);
    assert_true(tu_contains(out, "would prune 1 finished run "));
    free(out);
    free(err);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE status=3"), 2);
    assert_int_equal(runs(&out, &err, "prune", "--older-than=0", "--keep=1", NULL), 0);
    assert_true(tu_contains(out, "pruned 1 finished run "));
    free(out);
    free(err);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE status=3"), 1);
    assert_int_equal(ft_q(db, "SELECT count(*) FROM fsm_runs WHERE version='%s'", bad.s), 1);
    assert_int_equal(ft_q(db, "SELECT status FROM fsm_runs WHERE version='%s'", live.s), 2);

    ft_open_gate(&tg);
    assert_int_equal(fsm_wait(m, &live, 10000, NULL, NULL), 0);
    fsm_manager_close(m);
    db_close(db);

    /* No database: exit 4 with a hint. */
    char *argv[] = {(char *)tu_thinimg(), "--state-dir", "/nonexistent/thinimg", "runs", NULL};
    assert_int_equal(tu_run(argv, NULL, &out, &err), 4);
    assert_true(tu_contains(err, "no database"));
    free(out);
    free(err);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_command),
    };
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_ERROR, 2);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
