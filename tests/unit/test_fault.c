/*
 * test_fault.c: the fault points crash tests rely on (util/fault.h): a named point kills the
 * process with SIGKILL (other names and longer names pass), THINIMG_FAULT_SKIP lets the first
 * matches pass, "+Nms" kills from a timer while the process goes on, ":stop" stops it with
 * SIGSTOP until SIGCONT, once per process. Each case runs in a forked child (the setting is
 * read once per process), which the parent watches with waitpid.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/fault.h"
#include "util/timeutil.h"

/* Child: set the environment, call the points in order, exit 0 (or 3 after sleeping). */
static pid_t child(const char *spec, const char *skip, const char *const *points, int sleep_after)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("THINIMG_FAULT", spec, 1);
        if (skip)
            setenv("THINIMG_FAULT_SKIP", skip, 1);
        for (const char *const *p = points; *p; p++)
            fault_point(*p);
        if (sleep_after) {
            sleep_ms(sleep_after);
            _exit(3);
        }
        _exit(0);
    }
    return pid;
}

static int wait_status(pid_t pid, int options)
{
    int st = 0;
    assert_int_equal(waitpid(pid, &st, options), pid);
    return st;
}

static void test_kill_at_the_named_point(void **state)
{
    (void)state;
    /* other names, a prefix and a longer name pass; the named point kills */
    const char *const pass[] = {"unpack.apply-layer.end", "unpack.apply-layer",
                                "unpack.apply-layer.start.x", NULL};
    int st = wait_status(child("unpack.apply-layer.start", NULL, pass, 0), 0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    const char *const hit[] = {"unpack.verify.start", "unpack.apply-layer.start", NULL};
    st = wait_status(child("x.y.start,unpack.apply-layer.start", NULL, hit, 0), 0);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGKILL);
}

static void test_skip(void **state)
{
    (void)state;
    const char *const once[] = {"a.b.start", NULL};
    int st = wait_status(child("a.b.start", "1", once, 0), 0);
    assert_true(WIFEXITED(st)); /* the first match passes */
    const char *const twice[] = {"a.b.start", "a.b.start", NULL};
    st = wait_status(child("a.b.start", "1", twice, 0), 0);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGKILL);
}

static void test_delayed_kill(void **state)
{
    (void)state;
    const char *const pts[] = {"a.b.start", NULL};
    int64_t t0 = mono_ms();
    int st = wait_status(child("a.b.start+100ms", NULL, pts, 30000), 0);
    int64_t took = mono_ms() - t0;
    assert_true(WIFSIGNALED(st)); /* killed while sleeping, not at the point */
    assert_int_equal(WTERMSIG(st), SIGKILL);
    assert_true(took >= 100 && took < 20000);
}

static void test_stop(void **state)
{
    (void)state;
    const char *const pts[] = {"a.b.end", "a.b.end", NULL}; /* stops once, then passes */
    pid_t pid = child("a.b.end:stop", NULL, pts, 0);
    int st = wait_status(pid, WUNTRACED);
    assert_true(WIFSTOPPED(st));
    assert_int_equal(WSTOPSIG(st), SIGSTOP);
    kill(pid, SIGCONT);
    st = wait_status(pid, 0);
    assert_true(WIFEXITED(st)); /* went on after SIGCONT */
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_at_the_named_point),
        cmocka_unit_test(test_skip),
        cmocka_unit_test(test_delayed_kill),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
