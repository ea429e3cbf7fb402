/*
 * test_mount.c: the mount runner on the host, with a tmpfs in place of a thin device (the
 * namespace, the child, the report and the progress channel are the same): progress the child
 * reports reaches the waiting parent while the work runs, and the last figures arrive.
 * Needs root (a mount namespace); skipped otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dm/mount.h"
#include "testutil.h"

#define STEPS 6
#define STEP_MS 400 /* > MOUNT_PROGRESS_MS / 2: the parent sees several distinct figures */

struct seen {
    uint64_t done[64], total[64];
    int n;
};

static void on_progress(uint64_t done, uint64_t total, void *ud)
{
    struct seen *s = ud;
    if (s->n < 64) {
        s->done[s->n] = done;
        s->total[s->n] = total;
        s->n++;
    }
}

static int stepping_fn(int root_fd, void *ud, struct buf *out, struct err *e)
{
    (void)root_fd;
    (void)ud;
    (void)e;
    for (uint64_t i = 1; i <= STEPS; i++) {
        mount_child_progress(i * 1000, STEPS * 1000);
        nanosleep(&(struct timespec){0, STEP_MS * 1000000L}, NULL);
    }
    return buf_append(out, "done", 5);
}

static void test_progress_reaches_parent(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char *dir = tu_mkdtemp("mount");
    struct seen s = {0};
    struct mount_spec spec = {.device = "thinimg-test", .mountpoint = dir, .fstype = "tmpfs",
                              .timeout_ms = 60000, .progress = on_progress, .progress_ud = &s};
    struct buf res = BUF_INIT;
    struct err e = {0};
    int r = mount_run(&spec, stepping_fn, NULL, &res, &e);
    if (r < 0)
        fail_msg("mount_run: %s", err_str(&e));
    assert_string_equal(res.data, "done");
    buf_free(&res);
    /* Several reports while it ran, never going back, and the last one is the end. */
    assert_true(s.n >= 2);
    for (int i = 1; i < s.n; i++)
        assert_true(s.done[i] > s.done[i - 1]);
    assert_int_equal(s.done[s.n - 1], STEPS * 1000);
    assert_int_equal(s.total[s.n - 1], STEPS * 1000);
    /* Without a progress callback the child's reports go nowhere, and nothing breaks. */
    spec.progress = NULL;
    assert_int_equal(mount_run(&spec, stepping_fn, NULL, NULL, &e), 0);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_progress_reaches_parent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
