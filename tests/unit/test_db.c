/*
 * test_db.c: the SQLite layer: pragmas on the connection, migrations (idempotent, recorded,
 * refused when the database is newer), statement cache, nested transactions and rollback.
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

#include "fsm/fsm.h"
#include "store/db.h"
#include "store/schema.h"
#include "testutil.h"

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = tu_mkdtemp("db");
    return dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static int64_t q_int(struct db *db, const char *sql)
{
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, sql);
    assert_non_null(st);
    assert_int_equal(db_step(db, st), 1);
    int64_t v = sqlite3_column_int64(st, 0);
    db_done(st);
    db_unlock(db);
    return v;
}

static char *q_text(struct db *db, const char *sql)
{
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, sql);
    assert_int_equal(db_step(db, st), 1);
    char *v = db_col_strdup(st, 0);
    db_done(st);
    db_unlock(db);
    return v;
}

static void test_open_pragmas(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/a.db", dir);
    struct db *db = NULL;
    struct err e = {0};
    assert_int_equal(db_open(path, NULL, &db, &e), 0);
    char *mode = q_text(db, "PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    free(mode);
    assert_int_equal(q_int(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(q_int(db, "PRAGMA synchronous"), 2); /* FULL */
    assert_int_equal(q_int(db, "PRAGMA busy_timeout"), DB_BUSY_TIMEOUT_MS);
    db_close(db);
}

static const struct db_migration m2[] = {
    {1, "t1", "CREATE TABLE t1(a INTEGER)"},
    {2, "t2", "CREATE TABLE t2(b TEXT NOT NULL)"},
};

static void test_migrations(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/m.db", dir);
    struct db *db = NULL;
    struct err e = {0};
    assert_int_equal(db_open(path, NULL, &db, &e), 0);
    assert_int_equal(db_migrate(db, "x", m2, 1, &e), 0);
    int v = 0;
    assert_int_equal(db_schema_version(db, "x", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(db_migrate(db, "x", m2, 2, &e), 0);
    assert_int_equal(db_migrate(db, "x", m2, 2, &e), 0); /* idempotent */
    assert_int_equal(q_int(db, "SELECT count(*) FROM schema_migrations WHERE component='x'"), 2);
    assert_int_equal(db_exec(db, "INSERT INTO t2(b) VALUES('ok')"), 0);
    /* A database newer than the code is refused with a clear message. */
    err_clear(&e);
    assert_int_equal(db_migrate(db, "x", m2, 1, &e), -EPROTO);
    assert_true(tu_contains(e.msg, "newer than this thinimg knows"));
    /* A failing migration leaves nothing behind. */
    static const struct db_migration bad[] = {
        {1, "t1", "CREATE TABLE t1(a INTEGER)"},
        {2, "t2", "CREATE TABLE t2(b TEXT NOT NULL)"},
        {3, "broken", "CREATE TABLE t3(c); CREATE TABLE t3(c)"},
    };
    err_clear(&e);
    assert_true(db_migrate(db, "x", bad, 3, &e) < 0);
    assert_true(tu_contains(e.msg, "migration x v3 (broken) failed"));
    assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_master WHERE name='t3'"), 0);
    assert_int_equal(q_int(db, "SELECT MAX(version) FROM schema_migrations WHERE component='x'"), 2);
    db_close(db);
}

static void test_transactions(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/t.db", dir);
    struct db *db = NULL;
    assert_int_equal(db_open(path, NULL, &db, NULL), 0);
    assert_int_equal(db_exec(db, "CREATE TABLE k(v INTEGER UNIQUE)"), 0);

    assert_int_equal(db_begin(db), 0);
    assert_int_equal(db_exec(db, "INSERT INTO k VALUES(1)"), 0);
    assert_int_equal(db_begin(db), 0); /* nested: counts only */
    assert_int_equal(db_exec(db, "INSERT INTO k VALUES(2)"), 0);
    assert_int_equal(db_commit(db), 0);
    assert_true(db_in_tx(db));
    assert_int_equal(db_commit(db), 0);
    assert_false(db_in_tx(db));
    assert_int_equal(q_int(db, "SELECT count(*) FROM k"), 2);

    /* Inner rollback dooms the whole transaction. */
    assert_int_equal(db_begin(db), 0);
    assert_int_equal(db_exec(db, "INSERT INTO k VALUES(3)"), 0);
    assert_int_equal(db_begin(db), 0);
    db_rollback(db);
    assert_int_equal(db_commit(db), -ECANCELED);
    assert_int_equal(q_int(db, "SELECT count(*) FROM k"), 2);

    /* Constraint violations map to -EEXIST; cached statements are reused. */
    sqlite3_stmt *a = db_prepare(db, "INSERT INTO k VALUES(?)");
    db_bind_i64(a, 1, 1);
    assert_int_equal(db_step(db, a), -EEXIST);
    db_done(a);
    sqlite3_stmt *b = db_prepare(db, "INSERT INTO k VALUES(?)");
    assert_ptr_equal(a, b);
    db_close(db);
}

static void test_full_schema(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/full.db", dir);
    struct db *db = NULL;
    struct err e = {0};
    assert_int_equal(db_open(path, NULL, &db, &e), 0);
    assert_int_equal(fsm_db_migrate(db, &e), 0);
    assert_int_equal(store_migrate(db, &e), 0);
    assert_int_equal(store_migrate(db, &e), 0);
    assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN"
                               "('fsm_runs','fsm_events','blobs','devices','images','layers',"
                               "'activations','resource_locks','image_layers','blob_sources',"
                               "'downloads','device_id_seq')"),
                     12);
    /* Foreign keys are enforced on this connection. */
    assert_int_equal(db_exec(db, "INSERT INTO image_layers(image_id, idx) VALUES(999, 1)"), -EEXIST);
    db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_pragmas),
        cmocka_unit_test(test_migrations),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_full_schema),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
