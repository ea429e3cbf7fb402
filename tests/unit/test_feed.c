/*
 * test_feed.c: the monitor's data without a daemon (read-only from the database): a database
 * that cannot be read is reported with the CLI's words and kind, never shown as an empty
 * dashboard or as "no database yet".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tui/feed.h"
#include "util/config.h"

static void refresh(const char *state, struct feed_snapshot *s)
{
    struct config cfg = {0};
    char sock[600];
    snprintf(sock, sizeof(sock), "%s/no-daemon.sock", state);
    struct config_overrides o = {.state_dir = state, .pool_name = "feedtest", .socket_path = sock};
    assert_int_equal(config_resolve(&cfg, &o), 0);
    struct feed *f = NULL;
    assert_int_equal(feed_open(&cfg, &f), 0);
    feed_refresh(f, s);
    feed_close(f);
    config_free(&cfg);
}

static void test_corrupt_database(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("feed");
    char db[600];
    snprintf(db, sizeof(db), "%s/thinimg.db", dir);
    char junk[8192];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)("not a database "[i % 15]);
    assert_int_equal(tu_write_file(db, junk, sizeof(junk)), 0);
    struct feed_snapshot *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    refresh(dir, s);
    assert_false(s->live);
    if (!tu_contains(s->error, "database is corrupt") || !tu_contains(s->error, db) ||
        !tu_contains(s->error, "restore it from a backup or move it away"))
        fail_msg("monitor error: \"%s\"", s->error);
    assert_string_equal(s->error_kind, "corrupt");
    assert_int_equal(s->n_acts, 0);
    assert_int_equal(s->n_active, 0);
    /* No database at all is not trouble of that kind. */
    tu_rmrf(dir);
    free(dir);
    dir = tu_mkdtemp("feed");
    refresh(dir, s);
    assert_true(tu_contains(s->error, "no database"));
    assert_string_equal(s->error_kind, "");
    tu_rmrf(dir);
    free(dir);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corrupt_database),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
