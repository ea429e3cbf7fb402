/*
 * test_pool_status.c: thin-pool / thin status and table parsers, pool usability decisions
 * (the refusal messages), metadata sizing and device names. Host-only: no device-mapper.
 *
 * Fixtures in tests/fixtures/pool_status/: rw, ro, out_of_data_space and needs_check are
 * status lines captured from a 6.1 kernel in the test VM (tests/vm/run); the others follow
 * the kernel's format (thin-provisioning.rst) for cases that are slow to force.
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

#include "dm/dm.h"
#include "util/cleanup.h"
#include "dm/pool.h"
#include "dm/pool_status.h"
#include "testutil.h"

static char *fixture(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/fixtures/pool_status/%s", tu_source_dir(), name);
    char *s = tu_read_file(path, NULL);
    if (!s)
        fail_msg("missing fixture %s", path);
    return s;
}

static void parse_fixture(const char *name, struct pool_status *s)
{
    char *line = fixture(name);
    assert_int_equal(pool_status_parse(line, s), 0);
    free(line);
}

static void test_rw(void **state)
{
    (void)state;
    struct pool_status s;
    parse_fixture("rw.txt", &s);
    assert_int_equal(s.mode, POOL_MODE_RW);
    assert_int_equal(s.transaction_id, 0);
    assert_int_equal(s.meta_used, 418);
    assert_int_equal(s.meta_total, 4096);
    assert_int_equal(s.data_used, 0);
    assert_int_equal(s.data_total, 4096);
    assert_false(s.has_held_root);
    assert_int_equal(s.discard, POOL_DISCARD_PASSDOWN);
    assert_true(s.error_if_no_space);
    assert_false(s.needs_check);
    assert_true(s.has_low_watermark);
    assert_int_equal(s.meta_low_watermark, 1024);
    assert_int_equal(pool_check_usable("p", &s, NULL, NULL), 0);
}

static void test_ro(void **state)
{
    (void)state;
    struct pool_status s;
    parse_fixture("ro.txt", &s);
    assert_int_equal(s.mode, POOL_MODE_RO);
    assert_false(s.needs_check);
    assert_int_equal(s.data_used, 64);
    struct err e = {0};
    assert_int_equal(pool_check_usable("thinimg", &s, NULL, &e), -EHOSTDOWN);
    assert_true(tu_contains(e.msg, "pool \"thinimg\" is read-only (ro)"));
    assert_true(tu_contains(e.msg, "docs/dm.md"));
}

static void test_out_of_data_space(void **state)
{
    (void)state;
    struct pool_status s;
    parse_fixture("out_of_data_space.txt", &s);
    assert_int_equal(s.mode, POOL_MODE_OUT_OF_DATA_SPACE);
    assert_int_equal(s.data_used, 512);
    assert_int_equal(s.data_total, 512);
    assert_true(pool_status_data_pct(&s) == 100.0);
    struct err e = {0};
    assert_int_equal(pool_check_usable("thinimg", &s, NULL, &e), -ENOSPC);
    assert_true(tu_contains(e.msg, "out of data space"));
    assert_true(tu_contains(e.msg, "thinimg gc --force"));
}

static void test_needs_check(void **state)
{
    (void)state;
    struct pool_status s;
    parse_fixture("needs_check.txt", &s);
    assert_int_equal(s.mode, POOL_MODE_RO);
    assert_true(s.needs_check);
    struct err e = {0};
    /* needs_check wins over ro: it is the one that says what to run. */
    assert_int_equal(pool_check_usable("thinimg", &s, NULL, &e), -EUCLEAN);
    assert_true(tu_contains(e.msg, "pool \"thinimg\" needs_check"));
    assert_true(tu_contains(e.msg, "stop thinimg") || tu_contains(e.msg, "Stop thinimg"));
    assert_true(tu_contains(e.msg, "thin_check"));
}

static void test_fail(void **state)
{
    (void)state;
    struct pool_status s;
    parse_fixture("fail.txt", &s);
    assert_int_equal(s.mode, POOL_MODE_FAIL);
    struct err e = {0};
    assert_int_equal(pool_check_usable("thinimg", &s, NULL, &e), -EHOSTDOWN);
    assert_true(tu_contains(e.msg, "has failed"));
    assert_int_equal(pool_status_parse("Error", &s), 0);
    assert_int_equal(s.mode, POOL_MODE_ERROR);
}

static void test_queue_and_error_if_no_space(void **state)
{
    (void)state;
    struct pool_status s;
    parse_fixture("queue_if_no_space.txt", &s);
    assert_false(s.error_if_no_space);
    assert_int_equal(s.discard, POOL_DISCARD_NO_PASSDOWN);
    assert_true(s.has_held_root);
    assert_int_equal(s.held_root, 77);
    assert_int_equal(s.transaction_id, 5);
    assert_int_equal(s.meta_low_watermark, 64);
    parse_fixture("error_if_no_space.txt", &s);
    assert_true(s.error_if_no_space);
    assert_int_equal(s.discard, POOL_DISCARD_IGNORE);
    assert_int_equal(s.transaction_id, 12);
    /* Older kernels stop after the mode. */
    parse_fixture("old_kernel.txt", &s);
    assert_int_equal(s.mode, POOL_MODE_RW);
    assert_false(s.has_low_watermark);
    assert_false(s.needs_check);
}

static void test_usage_limits(void **state)
{
    (void)state;
    struct pool_status s;
    assert_int_equal(
        pool_status_parse("0 10/100 97/100 - rw discard_passdown error_if_no_space - 8", &s), 0);
    struct err e = {0};
    assert_int_equal(pool_check_usable("p", &s, NULL, &e), -ENOSPC);
    assert_true(tu_contains(e.msg, "97.0% used, over the limit of 95%"));
    struct pool_limits l = {.max_data_pct = 98};
    assert_int_equal(pool_check_usable("p", &s, &l, NULL), 0);
    assert_int_equal(
        pool_status_parse("0 95/100 1/100 - rw discard_passdown error_if_no_space - 8", &s), 0);
    err_clear(&e);
    assert_int_equal(pool_check_usable("p", &s, NULL, &e), -ENOSPC);
    assert_true(tu_contains(e.msg, "metadata is 95.0% used"));
}

static void test_malformed(void **state)
{
    (void)state;
    struct pool_status s;
    const char *bad[] = {
        "",
        "   ",
        "fail",
        "0 1/2 3/4 -",    /* no mode */
        "0 1/2 3/4 - rx", /* unknown mode */
        "x 1/2 3/4 - rw", /* transaction not a number */
        "0 3/2 3/4 - rw", /* used > total */
        "0 1/2/3 3/4 - rw",
        "0 /2 3/4 - rw",
        "0 1/ 3/4 - rw",
        "-1 1/2 3/4 - rw",
        "0 1/2 3/4 x rw",                    /* held root not a number */
        "18446744073709551616 1/2 3/4 - rw", /* 2^64 */
        "0 1/2 3/4 - rw passdown",
        "0 1/2 3/4 - rw discard_passdown error",
        "0 1/2 3/4 - rw discard_passdown error_if_no_space needs",
        "0 1/2 3/4 - rw discard_passdown error_if_no_space - x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (pool_status_parse(bad[i], &s) != -EBADMSG)
            fail_msg("accepted malformed status \"%s\"", bad[i]);
    assert_int_equal(pool_status_parse(NULL, &s), -EBADMSG);
    char longline[2048];
    memset(longline, '1', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    assert_int_equal(pool_status_parse(longline, &s), -EBADMSG);
    /* Unknown trailing words from a newer kernel are ignored. */
    assert_int_equal(
        pool_status_parse("0 1/2 3/4 - rw discard_passdown error_if_no_space - 8 new", &s), 0);
}

static void test_thin_status(void **state)
{
    (void)state;
    struct thin_status t;
    assert_int_equal(thin_status_parse("1024 2047", &t), 0);
    assert_int_equal(t.mapped_sectors, 1024);
    assert_true(t.has_highest);
    assert_int_equal(t.highest_sector, 2047);
    assert_int_equal(thin_status_parse("0 -", &t), 0);
    assert_false(t.has_highest);
    assert_int_equal(thin_status_parse("-", &t), 0);
    assert_true(t.deleting);
    assert_int_equal(thin_status_parse("Fail", &t), 0);
    assert_true(t.failed);
    assert_int_equal(thin_status_parse("5 -", &t), -EBADMSG);
    assert_int_equal(thin_status_parse("1 2 3", &t), -EBADMSG);
    assert_int_equal(thin_status_parse("", &t), -EBADMSG);
}

static void test_table(void **state)
{
    (void)state;
    struct pool_table t;
    assert_int_equal(pool_table_parse("7:0 7:1 128 410 1 error_if_no_space ", &t), 0);
    assert_string_equal(t.metadata_dev, "7:0");
    assert_string_equal(t.data_dev, "7:1");
    assert_int_equal(t.block_sectors, 128);
    assert_int_equal(t.low_water_blocks, 410);
    assert_int_equal(t.n_features, 1);
    assert_true(pool_table_has_feature(&t, "error_if_no_space"));
    assert_false(pool_table_has_feature(&t, "read_only"));
    /* The work-sample README's pool: no features. */
    assert_int_equal(pool_table_parse("7:2 7:3 2048 32768", &t), 0);
    assert_int_equal(t.n_features, 0);
    assert_int_equal(pool_table_parse("7:2 7:3 128 16 2 a", &t), -EBADMSG);
    assert_int_equal(pool_table_parse("7:2 7:3 128", &t), -EBADMSG);
    assert_int_equal(pool_table_parse("7:2 7:3 x 16", &t), -EBADMSG);
}

static void test_metadata_sizing(void **state)
{
    (void)state;
    /* Small pools get the floor. */
    assert_int_equal(pool_metadata_bytes(256ull << 20, 128), POOL_META_DEFAULT_MIN);
    /* Kernel rule with headroom: 1 TiB / 64 KiB = 16 Mi blocks, x48 = 768 MiB, x4 = 3 GiB. */
    assert_int_equal(pool_metadata_bytes(1ull << 40, 128), 3ull << 30);
    /* Never below the kernel's minimum, never above its maximum. */
    assert_true(pool_metadata_bytes(1, 128) >= POOL_META_KERNEL_MIN);
    assert_int_equal(pool_metadata_bytes(1ull << 50, 128), POOL_META_MAX);
    assert_int_equal(pool_metadata_bytes(4ull << 30, 128) % (1 << 20), 0);
}

static void test_names(void **state)
{
    (void)state;
    assert_true(dm_name_valid("thinimg-layer-12"));
    assert_true(dm_name_valid("a.b_c-D9"));
    assert_false(dm_name_valid(""));
    assert_false(dm_name_valid(NULL));
    assert_false(dm_name_valid("-x"));
    assert_false(dm_name_valid(".x"));
    assert_false(dm_name_valid("a/b"));
    assert_false(dm_name_valid("a b"));
    assert_false(dm_name_valid("a\nb"));
    char n127[128], n128[129];
    memset(n127, 'a', 127);
    n127[127] = '\0';
    memset(n128, 'a', 128);
    n128[128] = '\0';
    assert_true(dm_name_valid(n127));
    assert_false(dm_name_valid(n128));
    char out[DM_NAME_MAX + 1];
    assert_int_equal(dm_name_format(out, sizeof(out), "thinimg", DM_KIND_ACTIVATION, "vm-1"), 0);
    assert_string_equal(out, "thinimg-act-vm-1");
    assert_int_equal(dm_name_format(out, sizeof(out), "", DM_KIND_LAYER, "1"), -EINVAL);
    assert_int_equal(dm_name_format(out, 8, "thinimg", DM_KIND_LAYER, "1"), -ENAMETOOLONG);
    /* The kind's suffix shape: layers and foreign ids are thin ids, kinds are known. */
    assert_int_equal(dm_name_format(out, sizeof(out), "tp", DM_KIND_LAYER, "x"), -EINVAL);
    assert_int_equal(dm_name_format(out, sizeof(out), "tp", DM_KIND_LAYER, "07"), -EINVAL);
    assert_int_equal(dm_name_format(out, sizeof(out), "tp", DM_KIND_FOREIGN, "1-2"), -EINVAL);
    assert_int_equal(dm_name_format(out, sizeof(out), "tp", "junk", "1"), -EINVAL);
}

/* gc's unknown-device scan: pool "tp" claims exactly the names it builds, never those of a
 * pool named with "tp-" in front ("tp-b") nor other devices that merely start with "tp-". */
static void test_name_match(void **state)
{
    (void)state;
    const char *k = NULL;
    char out[DM_NAME_MAX + 1];
    static const struct {
        const char *kind, *suffix;
    } made[] = {{DM_KIND_LAYER, "7"},        {DM_KIND_LAYER, "16777215"},
                {DM_KIND_ACTIVATION, "web"}, {DM_KIND_ACTIVATION, "golang-3.2"},
                {DM_KIND_TEST, "of-ghost"},  {DM_KIND_TEST, "12"},
                {DM_KIND_FOREIGN, "999"}};
    /* Whatever dm_name_format builds for a pool, dm_name_match recognises for that pool (with
     * its kind), and for no pool that is the other's prefix or extension. */
    for (size_t i = 0; i < ARRAY_SIZE(made); i++) {
        const char *pools[] = {"tp", "tp-b", "thinimg", "a.b_c-D9"};
        for (size_t j = 0; j < ARRAY_SIZE(pools); j++) {
            assert_int_equal(
                dm_name_format(out, sizeof(out), pools[j], made[i].kind, made[i].suffix), 0);
            assert_true(dm_name_match(out, pools[j], &k));
            assert_string_equal(k, made[i].kind);
        }
    }
    /* Pool "tp-b"'s devices are not pool "tp"'s, and the reverse. */
    assert_true(dm_name_match("tp-b-layer-7", "tp-b", NULL));
    assert_false(dm_name_match("tp-b-layer-7", "tp", NULL));
    assert_false(dm_name_match("tp-b-act-web", "tp", NULL));
    assert_false(dm_name_match("tp-b-test-3", "tp", NULL));
    assert_false(dm_name_match("tp-b-foreign-9", "tp", NULL));
    assert_false(dm_name_match("tp-layer-7", "tp-b", NULL));
    assert_false(dm_name_match("tp-b", "tp", NULL)); /* the other pool itself */
    assert_false(dm_name_match("tp", "tp", NULL));   /* the pool itself */
    /* Devices someone else made that merely start with "tp-". */
    assert_false(dm_name_match("tp-junk", "tp", NULL));
    assert_false(dm_name_match("tp-layer", "tp", NULL));
    assert_false(dm_name_match("tp-layer-", "tp", NULL));
    assert_false(dm_name_match("tp-layer-x", "tp", NULL));
    assert_false(dm_name_match("tp-layer-07", "tp", NULL));
    assert_false(dm_name_match("tp-layer-7-old", "tp", NULL));
    assert_false(dm_name_match("tp-foreign-1x", "tp", NULL));
    assert_false(dm_name_match("tp-act-", "tp", NULL));
    assert_false(dm_name_match("tp-acts-web", "tp", NULL));
    assert_false(dm_name_match("tp-act-a b", "tp", NULL));
    assert_false(dm_name_match("tpx-layer-7", "tp", NULL));
    assert_false(dm_name_match("t-layer-7", "tp", NULL));
    assert_false(dm_name_match(NULL, "tp", NULL));
    assert_false(dm_name_match("tp-layer-7", NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rw),
        cmocka_unit_test(test_ro),
        cmocka_unit_test(test_out_of_data_space),
        cmocka_unit_test(test_needs_check),
        cmocka_unit_test(test_fail),
        cmocka_unit_test(test_queue_and_error_if_no_space),
        cmocka_unit_test(test_usage_limits),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_thin_status),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_metadata_sizing),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_name_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
