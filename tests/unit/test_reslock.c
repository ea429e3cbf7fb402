/*
 * test_reslock.c: database resource locks between real processes: a live owner's lock is
 * refused (owner named), re-taking one's own lock works, a SIGKILLed owner's lock is broken,
 * a lock from an earlier boot is stale, and gc's stale listing finds dead owners.
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

#include "fsm/fsm.h"
#include "guard/reslock.h"
#include "store/schema.h"
#include "testutil.h"

static char *dir;
static char dbpath[512];

static struct db *open_db(void)
{
    struct db *db = NULL;
    struct err e = {0};
    assert_int_equal(db_open(dbpath, NULL, &db, &e), 0);
    assert_int_equal(fsm_db_migrate(db, &e), 0);
    assert_int_equal(store_migrate(db, &e), 0);
    return db;
}

static int setup(void **state)
{
    (void)state;
    dir = tu_mkdtemp("reslock");
    snprintf(dbpath, sizeof(dbpath), "%s/t.db", dir);
    db_close(open_db());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static pid_t child_takes(const char *resource)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct db *db = open_db();
        char c = reslock_acquire(db, resource, "child-work", NULL) == 0 ? 'y' : 'n';
        db_close(db);
        if (write(p[1], &c, 1) != 1)
            _exit(2);
        pause();
        _exit(0);
    }
    close(p[1]);
    char c = 0;
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    assert_int_equal(c, 'y');
    return pid;
}

static void test_live_and_dead_owner(void **state)
{
    (void)state;
    struct db *db = open_db();
    pid_t pid = child_takes("image:a");
    struct err e = {0};
    assert_int_equal(reslock_acquire(db, "image:a", "process-image", &e), -EBUSY);
    char expect[64];
    snprintf(expect, sizeof(expect), "locked by pid %d (child-work", (int)pid);
    assert_true(tu_contains(e.msg, expect));
    assert_int_equal(reslock_release(db, "image:a"), -ENOENT); /* not ours */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(reslock_acquire(db, "image:a", "process-image", NULL), 0);
    assert_int_equal(reslock_acquire(db, "image:a", "process-image", NULL), 0); /* own */
    assert_int_equal(reslock_release(db, "image:a"), 0);
    assert_int_equal(reslock_release(db, "image:a"), -ENOENT);
    db_close(db);
}

static void count_line(const char *line, void *ud)
{
    (void)line;
    (*(int *)ud)++;
}

static void test_stale_listing(void **state)
{
    (void)state;
    struct db *db = open_db();
    /* An owner from another boot, one with a dead pid, and our own live lock. */
    assert_int_equal(db_exec(db, "INSERT INTO resource_locks VALUES('chain:x', 1,"
                                 " 'not-this-boot', 5, 'unpack', 0)"),
                     0);
    assert_int_equal(db_exec(db, "INSERT INTO resource_locks VALUES('chain:y', 999999999,"
                                 " 'whatever', 5, 'unpack', 0)"),
                     0);
    assert_int_equal(reslock_acquire(db, "chain:z", "unpack", NULL), 0);
    int n = 0;
    assert_int_equal(reslock_stale(db, false, count_line, &n), 2);
    assert_int_equal(n, 2);
    assert_int_equal(reslock_stale(db, true, NULL, NULL), 2);
    assert_int_equal(reslock_stale(db, false, NULL, NULL), 0);
    /* Breaking a stale lock on acquire. */
    assert_int_equal(db_exec(db, "INSERT INTO resource_locks VALUES('chain:x', 1,"
                                 " 'not-this-boot', 5, 'unpack', 0)"),
                     0);
    assert_int_equal(reslock_acquire(db, "chain:x", "unpack", NULL), 0);
    db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live_and_dead_owner),
        cmocka_unit_test(test_stale_listing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
