/*
 * test_pool_life_unit.c: the host-side parts of the pool lifecycle (label unit): thin_check's
 * verdict from its output, the check itself on metadata files (real thin_check and
 * thin_restore: a sound file, a corrupted one, a fresh all-zero one, the tool missing), the
 * offline check's refusals, and the `+SIZE` size arguments of `pool grow`. The online parts
 * (grow under a mounted activation, the check at assembly) run in the VM: test_pool_life.sh.
 *
 * The verdict texts are thin_check 0.9.0's output on metadata corrupted the way the VM test
 * corrupts it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dm/pool.h"
#include "testutil.h"

static const char SB_ERR[] = "examining superblock\n"
                             "  superblock is corrupt\n"
                             "    bad checksum in superblock, wanted 205381550\n";
static const char TREE_ERR[] = "examining superblock\n"
                               "examining devices tree\n"
                               "  missing devices: [0, -]\n"
                               "    bad checksum in btree node (block 6)\n"
                               "examining mapping tree\n"
                               "  missing all mappings for devices: [0, -]\n"
                               "    bad checksum in btree node (block 7)\n";
static const char OK_OUT[] = "TRANSACTION_ID=1\nMETADATA_FREE_BLOCKS=4095\n";
static const char OK_ERR[] = "examining superblock\nexamining devices tree\n"
                             "examining mapping tree\nchecking space map counts\n";

static void verdict_problem_lines(void **state)
{
    (void)state;
    char v[1024];
    pool_check_verdict(OK_OUT, SB_ERR, v, sizeof(v));
    assert_string_equal(v, "superblock is corrupt; bad checksum in superblock, wanted 205381550");
    /* at most POOL_CHECK_VERDICT_LINES lines, progress lines left out */
    pool_check_verdict(OK_OUT, TREE_ERR, v, sizeof(v));
    assert_string_equal(v, "missing devices: [0, -]; bad checksum in btree node (block 6); "
                           "missing all mappings for devices: [0, -]; bad checksum in btree "
                           "node (block 7)");
}

static void verdict_without_problem_lines(void **state)
{
    (void)state;
    char v[1024];
    /* an unindented message (a tool that cannot open the device) */
    pool_check_verdict("", "examining superblock\nCouldn't stat path\n", v, sizeof(v));
    assert_string_equal(v, "Couldn't stat path");
    /* nothing on stderr: stdout */
    pool_check_verdict("some words\n", NULL, v, sizeof(v));
    assert_string_equal(v, "some words");
    pool_check_verdict(NULL, OK_ERR, v, sizeof(v));
    assert_string_equal(v, "");
    /* truncated, never overflowing */
    char small[12];
    pool_check_verdict(OK_OUT, SB_ERR, small, sizeof(small));
    assert_string_equal(small, "superblock ");
}

static void size_arguments(void **state)
{
    (void)state;
    struct pool_size_arg a;
    assert_int_equal(pool_size_arg_parse("+64M", &a), 0);
    assert_true(a.set && a.relative);
    assert_int_equal(a.bytes, 64ull << 20);
    assert_int_equal(pool_size_arg_target(&a, 100), 100 + (64ull << 20));
    assert_int_equal(pool_size_arg_target(&a, UINT64_MAX - 1), UINT64_MAX);
    assert_int_equal(pool_size_arg_parse("2G", &a), 0);
    assert_true(a.set && !a.relative);
    assert_int_equal(pool_size_arg_target(&a, 100), 2ull << 30);
    const char *bad[] = {"", "+", "0", "+0", "++1M", "+-1M", "-1M", "1X", "M"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(pool_size_arg_parse(bad[i], &a), -EINVAL);
        assert_false(a.set);
    }
    assert_int_equal(pool_size_arg_parse(NULL, &a), -EINVAL);
    struct pool_size_arg unset = {0};
    assert_int_equal(pool_size_arg_target(&unset, 42), 42);
}

/* A 16 MiB metadata file with one thin device, made by thin_restore. NULL (test skipped) when
 * thin-provisioning-tools are not installed. */
static char *metadata_file(const char *dir, const char *name)
{
    if (tu_sh("command -v thin_restore && command -v thin_check", NULL, NULL) != 0)
        return NULL;
    char *path = NULL, *cmd = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    assert_true(asprintf(&cmd,
                         "printf '%%s\\n' '<superblock uuid=\"\" time=\"0\" transaction=\"1\" "
                         "flags=\"0\" version=\"2\" data_block_size=\"128\" "
                         "nr_data_blocks=\"1024\">' '<device dev_id=\"1\" mapped_blocks=\"2\" "
                         "transaction=\"0\" creation_time=\"0\" snap_time=\"0\">' "
                         "'<range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"2\" "
                         "time=\"0\"/>' '</device>' '</superblock>' >%s/m.xml && "
                         "truncate -s 16M %s && thin_restore -q -i %s/m.xml -o %s",
                         dir, path, dir, path) > 0);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    free(cmd);
    return path;
}

static void check_metadata_files(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("poolcheck");
    char *good = metadata_file(dir, "good.img");
    if (!good) {
        tu_rmrf(dir);
        free(dir);
        skip();
    }
    struct err e = {0};
    struct pool_check c;
    assert_int_equal(pool_metadata_check(good, false, &c, &e), 0);
    assert_true(c.ran && c.passed && !c.fresh);
    assert_int_equal(c.status, 0);

    /* the superblock overwritten: damage, and the verdict names it */
    char *cmd = NULL;
    assert_true(asprintf(&cmd,
                         "cp %s %s/bad.img && printf 'garbage%%04096d' 0 | dd of=%s/bad.img "
                         "conv=notrunc status=none",
                         good, dir, dir) > 0);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    free(cmd);
    char bad[1024];
    snprintf(bad, sizeof(bad), "%s/bad.img", dir);
    assert_int_equal(pool_metadata_check(bad, false, &c, &e), 0);
    assert_true(c.ran && !c.passed && !c.fresh);
    assert_int_not_equal(c.status, 0);
    assert_true(tu_contains(c.verdict, "superblock"));

    /* all zeroes: fresh metadata, not checked (the kernel formats it) */
    char zero[1024];
    snprintf(zero, sizeof(zero), "%s/zero.img", dir);
    assert_true(asprintf(&cmd, "truncate -s 16M %s", zero) > 0);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    free(cmd);
    assert_int_equal(pool_metadata_check(zero, false, &c, &e), 0);
    assert_true(c.fresh && c.passed && !c.ran);

    /* no thin_check on PATH: not run, not an error */
    char *path = strdup(getenv("PATH"));
    setenv("PATH", dir, 1);
    assert_int_equal(pool_metadata_check(bad, false, &c, &e), 0);
    setenv("PATH", path, 1);
    free(path);
    assert_false(c.ran);
    assert_false(c.passed);

    /* a file that is not there */
    char missing[1100];
    snprintf(missing, sizeof(missing), "%s/missing.img", dir);
    assert_int_equal(pool_metadata_check(missing, false, &c, &e), -ENOENT);
    free(good);
    tu_rmrf(dir);
    free(dir);
}

static void check_offline_unknown_pool(void **state)
{
    (void)state;
    struct tu_db t;
    assert_int_equal(tu_db_open("poolcheckdb", &t), 0);
    struct err e = {0};
    struct pool_check c;
    assert_int_equal(pool_check_offline(t.db, "nosuchpool", &c, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "setup-pool"));
    tu_db_close(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verdict_problem_lines),
        cmocka_unit_test(verdict_without_problem_lines),
        cmocka_unit_test(size_arguments),
        cmocka_unit_test(check_metadata_files),
        cmocka_unit_test(check_offline_unknown_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
