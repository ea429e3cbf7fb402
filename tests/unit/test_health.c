/*
 * test_health.c: the health checks against a fake /proc tree and a kernel log file: storage
 * tasks stuck in D state, trouble in the kernel log (once, then the cursor moves on), low
 * memory, I/O pressure, a failing or hanging pool check (bounded by the check timeout), and
 * a healthy report on the real /proc of this machine.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guard/health.h"
#include "testutil.h"
#include "util/timeutil.h"

static char *dir;
static char proc[512], kmsg[512], cursor[512];

static void put(const char *rel, const char *content)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", proc, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
    assert_int_equal(system(cmd), 0);
    *slash = '/';
    assert_int_equal(tu_write_file(path, content, strlen(content)), 0);
}

static int setup(void **state)
{
    (void)state;
    dir = tu_mkdtemp("health");
    snprintf(proc, sizeof(proc), "%s/proc", dir);
    snprintf(kmsg, sizeof(kmsg), "%s/kmsg", dir);
    snprintf(cursor, sizeof(cursor), "%s/kmsg.cursor", dir);
    put("meminfo", "MemTotal: 1000000 kB\nMemFree: 500000 kB\nMemAvailable: 600000 kB\n");
    put("pressure/io", "some avg10=1.00 avg60=0 avg300=0 total=0\nfull avg10=0.50 avg60=0 "
                       "avg300=0 total=0\n");
    put("pressure/memory", "some avg10=0.00 avg60=0 avg300=0 total=0\nfull avg10=0.00 avg60=0 "
                           "avg300=0 total=0\n");
    put("uptime", "1000.00 1500.00\n");
    put("sys/kernel/random/boot_id", "6d0f6c1e-0000-4000-8000-000000000001\n");
    put("1/stat", "1 (init) S 0 1 1 0 -1\n");
    tu_write_file(kmsg, "6,1,1000,-;Linux version x\n", 27);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static const struct health_check *find(const struct health_report *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->checks[i].name, name))
            return &r->checks[i];
    fail_msg("no check %s", name);
    return NULL;
}

static struct health_opts opts(void)
{
    struct health_opts o = {.cursor_path = cursor, .kmsg_path = kmsg, .proc_root = proc,
                            .advance_cursor = true};
    return o;
}

static void test_healthy(void **state)
{
    (void)state;
    struct health_opts o = opts();
    struct health_report r;
    assert_int_equal(health_run(&o, &r), 0);
    assert_int_equal(r.overall, HEALTH_OK);
    assert_int_equal(r.n, 4);
    assert_int_equal(find(&r, "dstate")->level, HEALTH_OK);
    assert_int_equal(find(&r, "kmsg")->level, HEALTH_OK);
    char s[512];
    health_report_summary(&r, s, sizeof(s));
    assert_string_equal(s, "healthy");
}

static void test_dstate(void **state)
{
    (void)state;
    put("77/stat", "77 (bash) D 1 77 77 0 -1\n");
    struct health_opts o = opts();
    struct health_report r;
    health_run(&o, &r);
    assert_int_equal(find(&r, "dstate")->level, HEALTH_WARN); /* not storage: warn only */
    assert_int_equal(r.overall, HEALTH_WARN);
    put("123/stat", "123 (loop0) D 2 0 0 0 -1\n");
    health_run(&o, &r);
    const struct health_check *c = find(&r, "dstate");
    assert_int_equal(c->level, HEALTH_FAIL);
    assert_true(tu_contains(c->detail, "123 (loop0)"));
    assert_int_equal(r.overall, HEALTH_FAIL);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/123' '%s/77'", proc, proc);
    assert_int_equal(system(cmd), 0);
}

/* A writer that bumps /proc/PID/status's switch counters every 50 ms, as a task that blocks,
 * wakes and blocks again does. */
static volatile int g_waking = 1;

static void *waker(void *arg)
{
    const char *pid = arg;
    char rel[64], body[128];
    for (long long n = 1; g_waking; n++) {
        snprintf(rel, sizeof(rel), "%s/status", pid);
        snprintf(body, sizeof(body), "Name:\tjbd2\nvoluntary_ctxt_switches:\t%lld\n"
                 "nonvoluntary_ctxt_switches:\t3\n", n);
        char path[1024], tmp[1100];
        snprintf(path, sizeof(path), "%s/%s", proc, rel);
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        tu_write_file(tmp, body, strlen(body));
        rename(tmp, path);
        sleep_ms(50);
    }
    return NULL;
}

/* A busy disk is not a hung one: a storage task in D at every sample that keeps waking (its
 * context switches grow) is no trouble; the same task with its counters still is stuck, and
 * is reported only after the whole window. */
static void test_dstate_busy_vs_stuck(void **state)
{
    (void)state;
    put("321/stat", "321 (jbd2/dm-1-8) D 2 0 0 0 -1\n");
    put("321/status", "Name:\tjbd2\nvoluntary_ctxt_switches:\t0\nnonvoluntary_ctxt_switches:\t3\n");
    g_waking = 1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, waker, "321"), 0);
    struct health_opts o = opts();
    struct health_report r;
    health_run(&o, &r);
    g_waking = 0;
    pthread_join(t, NULL);
    const struct health_check *c = find(&r, "dstate");
    assert_int_equal(c->level, HEALTH_OK);
    assert_true(tu_contains(c->detail, "waking: a busy disk"));

    int64_t t0 = mono_ms();
    health_run(&o, &r); /* the counters stand still now */
    c = find(&r, "dstate");
    assert_int_equal(c->level, HEALTH_FAIL);
    assert_true(tu_contains(c->detail, "321 (jbd2/dm-1-8)"));
    assert_true(tu_contains(c->detail, "without waking"));
    assert_true(mono_ms() - t0 >= HEALTH_DSTATE_WINDOW_MS);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/321'", proc);
    assert_int_equal(system(cmd), 0);
}

static void test_kmsg_once(void **state)
{
    (void)state;
    /* Old trouble (before the first-run window) is ignored; new trouble fails once. */
    const char *log = "6,1,1000,-;Linux version x\n"
                      "3,2,100000000,-;Buffer I/O error on dev loop9 (old)\n"
                      "3,3,990000000,-;device-mapper: thin: 253:2: switching pool to "
                      "out-of-data-space (error IO) mode\n"
                      " SUBSYSTEM=block\n"
                      "4,4,995000000,-;device-mapper: thin: 253:2: reached low water mark\n";
    unlink(cursor);
    tu_write_file(kmsg, log, strlen(log));
    struct health_opts o = opts();
    struct health_report r;
    health_run(&o, &r);
    const struct health_check *c = find(&r, "kmsg");
    assert_int_equal(c->level, HEALTH_FAIL);
    assert_true(tu_contains(c->detail, "1 kernel log line(s)"));
    assert_true(tu_contains(c->detail, "switching pool to out-of-data-space"));
    char *cur = tu_read_file(cursor, NULL);
    assert_string_equal(cur, "6d0f6c1e-0000-4000-8000-000000000001 4\n");
    free(cur);
    /* The same lines are not reported twice. */
    health_run(&o, &r);
    assert_int_equal(find(&r, "kmsg")->level, HEALTH_OK);
    /* Without advance_cursor the cursor stays. */
    const char *more = "3,5,999000000,-;INFO: task kworker/0:1 blocked for more than 120 seconds.\n";
    FILE *f = fopen(kmsg, "a");
    fputs(more, f);
    fclose(f);
    o.advance_cursor = false;
    health_run(&o, &r);
    assert_int_equal(find(&r, "kmsg")->level, HEALTH_FAIL);
    health_run(&o, &r);
    assert_int_equal(find(&r, "kmsg")->level, HEALTH_FAIL);
    o.advance_cursor = true;
    health_run(&o, &r);
    health_run(&o, &r);
    assert_int_equal(find(&r, "kmsg")->level, HEALTH_OK);
    /* A reboot (new boot id) restarts from the window. */
    put("sys/kernel/random/boot_id", "6d0f6c1e-0000-4000-8000-000000000002\n");
    health_run(&o, &r);
    assert_int_equal(find(&r, "kmsg")->level, HEALTH_FAIL);
}

static void test_memory_and_io(void **state)
{
    (void)state;
    put("meminfo", "MemTotal: 1000000 kB\nMemAvailable: 20000 kB\n");
    put("pressure/io", "some avg10=90 avg60=0 avg300=0 total=0\nfull avg10=75.00 avg60=0 "
                       "avg300=0 total=0\n");
    struct health_opts o = opts();
    struct health_report r;
    health_run(&o, &r);
    assert_int_equal(find(&r, "memory")->level, HEALTH_FAIL);
    assert_true(tu_contains(find(&r, "memory")->detail, "2.0% of memory available"));
    assert_int_equal(find(&r, "io")->level, HEALTH_FAIL);
    put("meminfo", "MemTotal: 1000000 kB\nMemAvailable: 600000 kB\n");
    put("pressure/io", "full avg10=0.00 avg60=0 avg300=0 total=0\n");
}

static void pool_bad(struct health_check *c, void *ud)
{
    (void)ud;
    c->level = HEALTH_FAIL;
    snprintf(c->detail, sizeof(c->detail), "pool is read-only");
}

static void pool_hang(struct health_check *c, void *ud)
{
    (void)ud;
    sleep_ms(HEALTH_CHECK_TIMEOUT_MS + 1500);
    c->level = HEALTH_OK;
}

static void test_pool_and_timeout(void **state)
{
    (void)state;
    struct health_opts o = opts();
    o.pool = pool_bad;
    struct health_report r;
    health_run(&o, &r);
    assert_int_equal(find(&r, "pool")->level, HEALTH_FAIL);
    char s[1024];
    health_report_summary(&r, s, sizeof(s));
    assert_true(tu_contains(s, "pool: pool is read-only"));
    o.pool = pool_hang;
    int64_t t0 = mono_ms();
    health_run(&o, &r);
    int64_t took = mono_ms() - t0;
    assert_true(took < HEALTH_CHECK_TIMEOUT_MS + 1000);
    assert_int_equal(find(&r, "pool")->level, HEALTH_FAIL);
    assert_true(tu_contains(find(&r, "pool")->detail, "timed out"));
    sleep_ms(1800); /* let the abandoned thread finish before the process exits (leak check) */
}

static void test_real_proc(void **state)
{
    (void)state;
    struct health_opts o = {0};
    struct health_report r;
    assert_int_equal(health_run(&o, &r), 0);
    assert_int_equal(find(&r, "memory")->level, HEALTH_OK);
    assert_true(r.n >= 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthy),          cmocka_unit_test(test_dstate), cmocka_unit_test(test_dstate_busy_vs_stuck),
        cmocka_unit_test(test_kmsg_once),        cmocka_unit_test(test_memory_and_io),
        cmocka_unit_test(test_pool_and_timeout), cmocka_unit_test(test_real_proc),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
