/*
 * test_pipeline_guard.c: the pipeline's operation guard keeps its kernel log cursor in
 * <state>/kmsg.cursor, for as long as the pipeline lives, and reads it without moving it (only
 * `thinimg health` acknowledges kernel log lines).
 *
 * Regression: pipeline_open() handed the guard a cursor path in a buffer on its own stack. Every
 * later health check read and wrote the cursor at whatever that stack memory held by then (a
 * garbage file name in the working directory), so the guard never saw the cursor `thinimg
 * health` had advanced: an acknowledged kernel log line kept refusing devicemapper work, and
 * every guard entry re-reported the last ten minutes of the log.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsm/fsm.h"
#include "pipeline/pipeline.h"
#include "store/schema.h"
#include "testutil.h"
#include "util/config.h"

/* Overwrite the stack below the caller, where pipeline_open()'s frame was. */
static __attribute__((noinline)) void scribble_stack(void)
{
    volatile char junk[32768];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)('a' + i % 26);
}

static void test_cursor_in_state_dir(void **state)
{
    (void)state;
    if (access("/dev/kmsg", R_OK) != 0 || access("/proc/sys/kernel/random/boot_id", R_OK) != 0) {
        skip(); /* no kernel log here: the kmsg check is skipped and writes no cursor */
        return;
    }
    char *dir = tu_mkdtemp("pipeguard");
    struct config cfg;
    struct config_overrides ov = {.state_dir = dir, .pool_name = "tpguard"};
    assert_int_equal(config_resolve(&cfg, &ov), 0);
    assert_int_equal(config_ensure_dirs(&cfg, NULL), 0);
    struct err e = {0};
    struct db *db = NULL;
    assert_int_equal(db_open(cfg.db_path, NULL, &db, &e), 0);
    assert_true(fsm_db_migrate(db, &e) >= 0);
    assert_true(store_migrate(db, &e) >= 0);

    /* A cursor past every record of this boot: the guard's kmsg check must read it (and say
     * "since the last check"); without it the check looks at the last ten minutes. */
    char path[4096], *boot = tu_read_file("/proc/sys/kernel/random/boot_id", NULL);
    assert_non_null(boot);
    boot[strcspn(boot, "\n")] = '\0';
    char content[128];
    int n = snprintf(content, sizeof(content), "%s 9223372036854775000\n", boot);
    free(boot);
    snprintf(path, sizeof(path), "%s/kmsg.cursor", dir);
    assert_int_equal(tu_write_file(path, content, (size_t)n), 0);

    struct pipeline *p = NULL;
    struct pipeline_opts po = {.cfg = &cfg};
    assert_int_equal(pipeline_open(db, &po, &p, &e), 0);
    scribble_stack();
    /* The pool check fails here (no pool, maybe no device-mapper): the guard refuses, but its
     * kernel log check ran. */
    int r = guard_enter(pipeline_guard(p), "test", -1, &e);
    if (r == 0)
        guard_leave(pipeline_guard(p));
    struct health_report rep;
    guard_last_report(pipeline_guard(p), &rep);
    const struct health_check *k = NULL;
    for (size_t i = 0; i < rep.n; i++)
        if (!strcmp(rep.checks[i].name, "kmsg"))
            k = &rep.checks[i];
    assert_non_null(k);
    assert_int_equal(k->level, HEALTH_OK);
    assert_non_null(strstr(k->detail, "since the last check"));
    /* The guard reports kernel log lines without consuming them: the cursor is unchanged. */
    char *after = tu_read_file(path, NULL);
    assert_non_null(after);
    assert_string_equal(after, content);
    free(after);

    pipeline_close(p);
    db_close(db);
    config_free(&cfg);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cursor_in_state_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
