/*
 * test_dm_thin_meta.c: the pool's thin ids read in this process (dm/thin_meta.h) from a live
 * pool (label dm: runs inside the VM, tests/vm/run; skips with 77 elsewhere):
 *   - the ids thin_ls lists, answered without thin_ls;
 *   - a device deleted behind thinimg's back (a delete message, its row left `ready`) is gone
 *     from the answer at once, also when its blocks were all shared with a snapshot, so that
 *     neither the pool's transaction id nor its used data blocks changed (the figures the
 *     usage cache is keyed by: they cannot tell such a delete);
 *   - a metadata snapshot left reserved by a reader that is gone is replaced by a fresh one
 *     (read as it stood, it would miss what changed since).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dm/dm.h"
#include "dm/pool.h"
#include "dm/thin.h"
#include "dm_fixture.h"
#include "testutil.h"

#define MIB (1024ull * 1024)

static struct dm_fixture fx;

static int group_setup(void **state)
{
    (void)state;
    return dm_fixture_setup(&fx, "dmmeta", "tdmm", 64 * MIB) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dm_fixture_teardown(&fx);
    return 0;
}

/* Whether the in-process reader (not thin_ls) lists id. */
static bool listed(uint32_t id)
{
    unsigned long before = thin_metadata_reads_in_process;
    uint32_t *ids = NULL;
    size_t n = 0;
    struct err e = {0};
    assert_int_equal(thin_pool_metadata_ids(fx.pool, &ids, NULL, &n, &e), 0);
    assert_int_equal(thin_metadata_reads_in_process, before + 1);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= ids[i] == id;
    free(ids);
    return found;
}

static struct pool_status status(void)
{
    struct pool_info pi;
    struct err e = {0};
    assert_int_equal(pool_get(NULL, fx.pool, &pi, &e), 0);
    return pi.status;
}

static void message(const char *fmt, uint32_t id)
{
    char msg[64];
    snprintf(msg, sizeof(msg), fmt, id);
    struct err e = {0};
    assert_int_equal(dm_dev_message(fx.pool, msg, NULL, &e), 0);
}

static void test_ids_in_process_and_deletes_behind_our_back(void **state)
{
    (void)state;
    struct err e = {0};
    struct thin_spec spec = {.kind = THIN_KIND_TEST, .size_bytes = 16 * MIB};
    uint32_t origin = 0, snap = 0, other = 0;
    assert_int_equal(thin_create(fx.db, fx.pool, &spec, &origin, &e), 0);
    assert_int_equal(thin_create(fx.db, fx.pool, &spec, &other, &e), 0);
    /* The origin gets data, then a snapshot shares all of it. */
    char path[256];
    assert_int_equal(thin_activate(fx.db, fx.pool, origin, path, sizeof(path), &e), 0);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    static char chunk[MIB];
    memset(chunk, 0x5a, sizeof(chunk));
    for (int i = 0; i < 2; i++)
        assert_int_equal(write(fd, chunk, sizeof(chunk)), (ssize_t)sizeof(chunk));
    assert_int_equal(fsync(fd), 0);
    close(fd);
    assert_int_equal(thin_deactivate(fx.db, fx.pool, origin, &e), 0);
    assert_int_equal(thin_snapshot(fx.db, fx.pool, origin, &spec, &snap, &e), 0);

    /* The same ids as thin_ls (asked for mapped bytes too, so it runs). */
    uint32_t *ids = NULL, *ls_ids = NULL;
    uint64_t *mapped = NULL;
    size_t n = 0, ls_n = 0;
    unsigned long before = thin_metadata_reads_in_process;
    assert_int_equal(thin_pool_metadata_ids(fx.pool, &ids, NULL, &n, &e), 0);
    assert_int_equal(thin_metadata_reads_in_process, before + 1);
    assert_int_equal(thin_pool_metadata_ids(fx.pool, &ls_ids, &mapped, &ls_n, &e), 0);
    assert_int_equal(n, ls_n);
    assert_true(n >= 3);
    assert_memory_equal(ids, ls_ids, n * sizeof(*ids));
    free(ids);
    free(ls_ids);
    free(mapped);
    assert_true(listed(origin) && listed(snap) && listed(other));

    /* Deleted behind thinimg's back while its blocks are the snapshot's too: the pool's
     * transaction id and used data blocks stay as they were, the answer changes. */
    struct pool_status s0 = status();
    message("delete %u", origin);
    struct pool_status s1 = status();
    assert_int_equal(s1.transaction_id, s0.transaction_id);
    assert_int_equal(s1.data_used, s0.data_used);
    assert_false(listed(origin));
    assert_true(listed(snap));
    struct thin_dev row;
    assert_int_equal(thin_get(fx.db, fx.pool, origin, &row), 0);
    assert_string_equal(row.state, "ready"); /* the database still believes in it */

    /* A snapshot left reserved by a reader that is gone (kill -9 between reserve and release:
     * no one holds the metadata device's lock) is not read as it stands, or a device made or
     * deleted since would be missed: a fresh one is taken, and nothing stays reserved. */
    assert_int_equal(dm_dev_message(fx.pool, "reserve_metadata_snap", NULL, &e), 0);
    message("delete %u", other);
    assert_false(listed(other));
    assert_true(listed(snap));
    assert_int_equal(dm_dev_message(fx.pool, "reserve_metadata_snap", NULL, &e), 0);
    assert_int_equal(dm_dev_message(fx.pool, "release_metadata_snap", NULL, &e), 0);
}

int main(void)
{
    if (!dm_fixture_usable())
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_in_process_and_deletes_behind_our_back),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
