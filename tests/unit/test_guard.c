/*
 * test_guard.c: the operation guard: one section at a time by default (a second thread waits),
 * refusal with the health reason when unhealthy, a cancelled wait, and the health report cache.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "guard/guard.h"
#include "testutil.h"
#include "util/timeutil.h"
#include <stdlib.h>

static atomic_int inside, max_inside;

static void *worker(void *arg)
{
    struct guard *g = arg;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(guard_enter(g, "work", -1, NULL), 0);
        int now = atomic_fetch_add(&inside, 1) + 1;
        int m = atomic_load(&max_inside);
        while (now > m && !atomic_compare_exchange_weak(&max_inside, &m, now)) {
        }
        sleep_ms(10);
        atomic_fetch_sub(&inside, 1);
        guard_leave(g);
    }
    return NULL;
}

static void test_serializes(void **state)
{
    (void)state;
    struct guard *g;
    struct guard_opts o = {.skip_health = true};
    assert_int_equal(guard_new(&o, &g), 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, worker, g);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&max_inside), 1);
    guard_free(g);
}

static int pool_calls;
static enum health_level pool_level;

static void pool_check(struct health_check *c, void *ud)
{
    (void)ud;
    pool_calls++;
    c->level = pool_level;
    snprintf(c->detail, sizeof(c->detail), "pool \"p\" is %s", pool_level ? "read-only" : "rw");
}

static void test_refuses_when_unhealthy(void **state)
{
    (void)state;
    struct guard *g;
    char *dir = tu_mkdtemp("guard");
    char kmsg[512];
    snprintf(kmsg, sizeof(kmsg), "%s/kmsg", dir);
    tu_write_file(kmsg, "", 0);
    struct guard_opts o = {.health = {.kmsg_path = kmsg}};
    assert_int_equal(guard_new(&o, &g), 0);
    guard_set_pool_check(g, pool_check, NULL);
    pool_level = HEALTH_FAIL;
    struct err e = {0};
    assert_int_equal(guard_enter(g, "create-device", -1, &e), -EHOSTDOWN);
    /* Other checks of this (busy, shared) host may be listed before the pool's. */
    assert_true(tu_contains(e.msg, "create-device refused: the host is not healthy: "));
    assert_true(tu_contains(e.msg, "pool: pool \"p\" is read-only"));
    /* The slot was released: a healthy entry succeeds, and its report is cached. */
    pool_level = HEALTH_OK;
    pool_calls = 0;
    assert_int_equal(guard_enter(g, "a", -1, NULL), 0);
    guard_leave(g);
    assert_int_equal(guard_enter(g, "b", -1, NULL), 0);
    guard_leave(g);
    assert_int_equal(pool_calls, 1);
    struct health_report rep;
    guard_last_report(g, &rep);
    assert_int_equal(rep.overall, HEALTH_OK);

    /* A waiter gives up when its cancel fd fires. */
    assert_int_equal(guard_enter(g, "holder", -1, NULL), 0);
    int efd = eventfd(1, 0);
    err_clear(&e);
    assert_int_equal(guard_enter(g, "waiter", efd, &e), -ECANCELED);
    close(efd);
    guard_leave(g);
    guard_free(g);
    tu_rmrf(dir);
    free(dir);
}

/* The guard keeps its own copy of the health paths: callers pass stack buffers. */
static void test_paths_copied(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("guardpaths");
    char kmsg[512], cursor[512], expect[512];
    snprintf(kmsg, sizeof(kmsg), "%s/kmsg", dir);
    snprintf(cursor, sizeof(cursor), "%s/kmsg.cursor", dir);
    snprintf(expect, sizeof(expect), "%s", cursor);
    tu_write_file(kmsg, "6,7,1000,-;hello\n", 17);
    struct guard *g;
    struct guard_opts o = {.health = {.kmsg_path = kmsg, .cursor_path = cursor,
                                      .advance_cursor = true}};
    assert_int_equal(guard_new(&o, &g), 0);
    memset(kmsg, 'x', sizeof(kmsg) - 1);   /* the caller's buffers change or go away */
    memset(cursor, 'y', sizeof(cursor) - 1);
    assert_int_equal(guard_enter(g, "op", -1, NULL), 0);
    guard_leave(g);
    char *cur = tu_read_file(expect, NULL);
    assert_non_null(cur);
    assert_true(tu_contains(cur, " 7\n"));
    free(cur);
    guard_free(g);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serializes),
        cmocka_unit_test(test_refuses_when_unhealthy),
        cmocka_unit_test(test_paths_copied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
