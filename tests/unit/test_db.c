/*
 * test_db.c: the SQLite layer: pragmas on the connection, migrations (idempotent, recorded,
 * refused when the database is newer), statement cache, nested transactions and rollback; a
 * busy database names the lock's holder and waits once, a corrupt one is said at open.
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

#include "fsm/fsm.h"
#include "store/db.h"
#include "store/schema.h"
#include "testutil.h"
#include "util/timeutil.h"

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

/* Another connection holds the write lock: the first write waits the busy timeout and says who
 * holds the lock and on what file; a second one right after looks once instead of waiting
 * again; once the holder commits, writes go through. */
static void test_busy_names_holder_and_waits_once(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/busy.db", dir);
    struct db *a = NULL, *b = NULL;
    struct err e = {0};
    const int timeout_ms = 300;
    struct db_options o = {.busy_timeout_ms = timeout_ms};
    assert_int_equal(db_open(path, &o, &a, &e), 0);
    assert_int_equal(db_open(path, &o, &b, &e), 0);
    assert_int_equal(db_exec(a, "CREATE TABLE t(x)"), 0);
    assert_int_equal(db_begin(a), 0);

    int64_t t0 = mono_ms();
    assert_int_equal(db_begin(b), -EBUSY);
    int64_t waited = mono_ms() - t0;
    assert_true(waited >= timeout_ms - 20);
    struct err note = {0};
    assert_int_equal(db_last_failure(&note), -EBUSY);
    char want[600];
    snprintf(want, sizeof(want), "database is busy: %s is write-locked by pid %d (", path,
             (int)getpid());
    assert_true(tu_contains(note.msg, want));
    assert_int_equal(err_kind_of(note.code), ERR_KIND_BUSY);

    t0 = mono_ms();
    assert_int_equal(db_begin(b), -EBUSY);
    assert_true(mono_ms() - t0 < timeout_ms / 2); /* looked, did not wait again */

    assert_int_equal(db_commit(a), 0);
    assert_int_equal(db_begin(b), 0);
    assert_int_equal(db_commit(b), 0);
    db_close(a);
    db_close(b);
}

/* A file that is not a database, and a database with a table's root page overwritten (the
 * first table's, and the last's: every table is probed, not only the first): db_open says
 * "database is corrupt: PATH: ...", kind corrupt, for read-write and read-only connections. */
static void test_corrupt_said_at_open(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/corrupt.db", dir);
    struct db *db = NULL;
    struct err e = {0};
    char junk[4096];
    memset(junk, 0xa5, sizeof(junk));
    char want[600];
    snprintf(want, sizeof(want), "database is corrupt: %s: ", path);
    FILE *f = NULL;
    for (long page = 2; page <= 3; page++) { /* t's root, then u's */
        unlink(path);
        err_clear(&e);
        assert_int_equal(db_open(path, NULL, &db, &e), 0);
        assert_int_equal(db_exec(db, "CREATE TABLE t(x); CREATE TABLE u(y);"
                                     "INSERT INTO t VALUES(randomblob(3000));"
                                     "INSERT INTO u VALUES(randomblob(3000));"),
                         0);
        db_close(db);
        db = NULL;
        f = fopen(path, "r+b");
        assert_non_null(f);
        assert_int_equal(fseek(f, (page - 1) * 4096, SEEK_SET), 0);
        assert_int_equal(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
        fclose(f);
        for (int ro = 0; ro < 2; ro++) {
            struct db_options o = {.readonly = ro};
            err_clear(&e);
            assert_int_equal(db_open(path, &o, &db, &e), -ENOTRECOVERABLE);
            assert_true(tu_contains(e.msg, want));
            assert_true(tu_contains(e.msg, "restore it from a backup or move it away"));
            assert_int_equal(err_kind_of(e.code), ERR_KIND_CORRUPT);
        }
    }
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
    fclose(f);
    err_clear(&e);
    assert_int_equal(db_open(path, NULL, &db, &e), -ENOTRECOVERABLE);
    assert_true(tu_contains(e.msg, want));
    assert_true(tu_contains(e.msg, "file is not a database"));
}

/* The kinds of a corrupt database and a read-only file system: their own names, and a run
 * that fails with them ends at once. */
static void test_kinds(void **state)
{
    (void)state;
    assert_int_equal(err_kind_of(-EROFS), ERR_KIND_READ_ONLY);
    assert_string_equal(err_kind_name(ERR_KIND_READ_ONLY), "read_only");
    assert_string_equal(err_kind_name(ERR_KIND_CORRUPT), "corrupt");
    assert_int_equal(err_kind_parse("corrupt"), ERR_KIND_CORRUPT);
    assert_int_equal(err_kind_of(err_kind_errno(ERR_KIND_READ_ONLY)), ERR_KIND_READ_ONLY);
    assert_true(err_kind_deterministic(ERR_KIND_CORRUPT));
    assert_true(err_kind_deterministic(ERR_KIND_READ_ONLY));
    /* Not a read-only file system: a pool in ro mode (EHOSTDOWN), a corrupt pool (EUCLEAN). */
    assert_int_equal(err_kind_of(-EUCLEAN), ERR_KIND_UNHEALTHY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_pragmas),
        cmocka_unit_test(test_migrations),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_full_schema),
        cmocka_unit_test(test_busy_names_holder_and_waits_once),
        cmocka_unit_test(test_corrupt_said_at_open),
        cmocka_unit_test(test_kinds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
