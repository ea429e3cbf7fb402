/*
 * test_lock.c: the flock process lock across real processes: a second acquirer is refused with
 * the holder named, waits and gets the lock when the holder exits, and a holder killed with
 * SIGKILL leaves no stale lock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guard/lock.h"
#include "testutil.h"
#include "util/timeutil.h"

static char *dir;
static char path[512];

static int setup(void **state)
{
    (void)state;
    dir = tu_mkdtemp("lock");
    snprintf(path, sizeof(path), "%s/thinimg.lock", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmrf(dir);
    free(dir);
    return 0;
}

/* Fork a child that takes the lock, signals readiness through a pipe, then sleeps. */
static pid_t hold_in_child(int hold_ms)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct proc_lock l = PROC_LOCK_INIT;
        if (proc_lock_acquire(path, "test-holder", 0, &l, NULL, NULL) < 0)
            _exit(3);
        char c = 'x';
        if (write(p[1], &c, 1) != 1)
            _exit(4);
        sleep_ms(hold_ms);
        _exit(0);
    }
    close(p[1]);
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    return pid;
}

static void test_refused_with_holder(void **state)
{
    (void)state;
    pid_t pid = hold_in_child(5000);
    struct proc_lock l = PROC_LOCK_INIT;
    struct lock_holder h;
    struct err e = {0};
    assert_int_equal(proc_lock_acquire(path, "second", 0, &l, &h, &e), -EBUSY);
    assert_int_equal(h.pid, pid);
    assert_string_equal(h.command, "test-holder");
    char expect[64];
    snprintf(expect, sizeof(expect), "locked by pid %d (test-holder", (int)pid);
    assert_true(tu_contains(e.msg, expect));
    struct lock_holder h2;
    assert_int_equal(proc_lock_holder(path, &h2), 0);
    assert_int_equal(h2.pid, pid);
    /* SIGKILL the holder: the kernel drops the lock, nothing stale remains. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(proc_lock_holder(path, &h2), -ESRCH);
    assert_int_equal(proc_lock_acquire(path, "third", 0, &l, NULL, NULL), 0);
    proc_lock_release(&l);
}

static void test_wait_for_holder(void **state)
{
    (void)state;
    pid_t pid = hold_in_child(300);
    struct proc_lock l = PROC_LOCK_INIT;
    int64_t t0 = mono_ms();
    assert_int_equal(proc_lock_acquire(path, "waiter", 5000, &l, NULL, NULL), 0);
    assert_true(mono_ms() - t0 >= 200);
    struct lock_holder h;
    assert_int_equal(proc_lock_holder(path, &h), 0);
    assert_int_equal(h.pid, getpid());
    assert_string_equal(h.command, "waiter");
    proc_lock_release(&l);
    waitpid(pid, NULL, 0);
    /* A wait that runs out reports a timeout. */
    pid = hold_in_child(2000);
    struct err e = {0};
    assert_int_equal(proc_lock_acquire(path, "waiter", 200, &l, NULL, &e), -ETIMEDOUT);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_with_holder),
        cmocka_unit_test(test_wait_for_holder),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
