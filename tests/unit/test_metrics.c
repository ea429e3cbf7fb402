/*
 * test_metrics.c: the metrics registry: counters, gauges, histograms with labels, escaping,
 * the exact Prometheus text it renders, bad names, type conflicts, the series cap, and
 * concurrent updates from several threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "util/metrics.h"

static int setup(void **state)
{
    (void)state;
    metrics_reset();
    return 0;
}

static char *render(void)
{
    struct buf b = BUF_INIT;
    assert_int_equal(metrics_render(&b), 0);
    return buf_steal(&b);
}

static void test_counter_and_gauge(void **state)
{
    (void)state;
    assert_int_equal(metrics_describe("t_runs_total", METRIC_COUNTER, "runs by machine"), 0);
    metrics_counter_add("t_runs_total", 1, "machine", "fetch/fetch-blob", "outcome", "ok", NULL);
    metrics_counter_add("t_runs_total", 2, "machine", "fetch/fetch-blob", "outcome", "ok", NULL);
    metrics_counter_add("t_runs_total", 1, "machine", "unpack/unpack-layer", "outcome", "abort",
                        NULL);
    metrics_counter_add("t_runs_total", -5, "machine", "unpack/unpack-layer", "outcome", "abort",
                        NULL); /* counters never go down */
    metrics_gauge_set("t_pool_used_ratio", 0.25, NULL);
    metrics_gauge_set("t_pool_used_ratio", 0.5, NULL);
    double v = 0;
    assert_int_equal(
        metrics_get("t_runs_total", &v, "machine", "fetch/fetch-blob", "outcome", "ok", NULL), 0);
    assert_true(v == 3);
    assert_int_equal(metrics_get("t_runs_total", &v, "machine", "nope", NULL), -ENOENT);
    char *s = render();
    assert_true(tu_contains(s,
                            "# HELP t_runs_total runs by machine\n# TYPE t_runs_total counter\n"
                            "t_runs_total{machine=\"fetch/fetch-blob\",outcome=\"ok\"} 3\n"
                            "t_runs_total{machine=\"unpack/unpack-layer\",outcome=\"abort\"} 1\n"));
    assert_true(tu_contains(s, "# TYPE t_pool_used_ratio gauge\nt_pool_used_ratio 0.5\n"));
    free(s);
    metrics_clear("t_runs_total");
    s = render();
    assert_false(tu_contains(s, "t_runs_total{"));
    assert_true(tu_contains(s, "# TYPE t_runs_total counter\n"));
    free(s);
}

static void test_histogram(void **state)
{
    (void)state;
    const double b[] = {0.1, 1, 10};
    assert_int_equal(metrics_describe_histogram("t_dur_seconds", "durations", b, 3), 0);
    metrics_histogram_observe("t_dur_seconds", 0.05, "state", "download", NULL);
    metrics_histogram_observe("t_dur_seconds", 0.5, "state", "download", NULL);
    metrics_histogram_observe("t_dur_seconds", 20, "state", "download", NULL);
    metrics_histogram_observe("t_plain_seconds", 2, NULL); /* default buckets, no labels */
    char *s = render();
    assert_true(tu_contains(s, "t_dur_seconds_bucket{state=\"download\",le=\"0.1\"} 1\n"
                               "t_dur_seconds_bucket{state=\"download\",le=\"1\"} 2\n"
                               "t_dur_seconds_bucket{state=\"download\",le=\"10\"} 2\n"
                               "t_dur_seconds_bucket{state=\"download\",le=\"+Inf\"} 3\n"
                               "t_dur_seconds_sum{state=\"download\"} 20.55\n"
                               "t_dur_seconds_count{state=\"download\"} 3\n"));
    assert_true(tu_contains(s, "t_plain_seconds_bucket{le=\"2.5\"} 1\n"));
    assert_true(tu_contains(s, "t_plain_seconds_bucket{le=\"1\"} 0\n"));
    assert_true(tu_contains(s, "t_plain_seconds_sum 2\nt_plain_seconds_count 1\n"));
    free(s);
    /* bad buckets */
    const double bad[] = {1, 1};
    assert_int_equal(metrics_describe_histogram("t_bad", "x", bad, 2), -EINVAL);
}

static void test_escaping_and_names(void **state)
{
    (void)state;
    metrics_describe("t_esc", METRIC_GAUGE, "help with \\ and\nnewline");
    metrics_gauge_set("t_esc", 1, "detail", "a \"quoted\"\\path\nnext", NULL);
    char *s = render();
    assert_true(tu_contains(s, "# HELP t_esc help with \\\\ and\\nnewline\n"));
    assert_true(tu_contains(s, "t_esc{detail=\"a \\\"quoted\\\"\\\\path\\nnext\"} 1\n"));
    free(s);
    assert_int_equal(metrics_describe("9bad", METRIC_COUNTER, "x"), -EINVAL);
    assert_int_equal(metrics_describe("bad-name", METRIC_COUNTER, "x"), -EINVAL);
    assert_int_equal(metrics_describe("t_esc", METRIC_COUNTER, "x"), -EINVAL); /* type change */
    metrics_counter_add("t_esc", 1, NULL);                 /* wrong type: ignored */
    metrics_gauge_set("t_lbl", 1, "bad-label", "x", NULL); /* bad label name: ignored */
    double v;
    assert_int_equal(metrics_get("t_lbl", &v, NULL), -ENOENT);
    s = render();
    assert_false(tu_contains(s, "9bad"));
    assert_false(tu_contains(s, "bad-label"));
    free(s);
}

static void test_series_cap(void **state)
{
    (void)state;
    for (int i = 0; i < METRICS_MAX_SERIES_PER_FAMILY + 10; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        metrics_counter_add("t_many_total", 1, "id", v, NULL);
    }
    char *s = render();
    assert_true(tu_contains(s, "thinimg_metrics_dropped_series_total 10\n"));
    free(s);
}

static void *bump(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++)
        metrics_counter_add("t_conc_total", 1, "k", "v", NULL);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, bump, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    double v = 0;
    assert_int_equal(metrics_get("t_conc_total", &v, "k", "v", NULL), 0);
    assert_true(v == 40000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_counter_and_gauge, setup),
        cmocka_unit_test_setup(test_histogram, setup),
        cmocka_unit_test_setup(test_escaping_and_names, setup),
        cmocka_unit_test_setup(test_series_cap, setup),
        cmocka_unit_test_setup(test_threads, setup),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    metrics_reset();
    return r;
}
