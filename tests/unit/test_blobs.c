/*
 * test_blobs.c: the blob store's records (store/blobs.h) and the statement helpers under them
 * (store/stmt.h) on a real, migrated database: a recorded blob is found by its location and
 * ETag, its path is derived from the digest, totals and the gc listing see it, resume hints
 * come and go; a transaction left without commit rolls back, and a statement reports what it
 * changed.
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

#include "store/blobs.h"
#include "store/schema.h"
#include "store/stmt.h"
#include "testutil.h"
#include "util/cleanup.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

struct env {
    char *dir;
    struct db *db;
};

static int setup(void **state)
{
    struct env *v = calloc(1, sizeof(*v));
    v->dir = tu_mkdtemp("blobs");
    char dbp[4096];
    snprintf(dbp, sizeof(dbp), "%s/thinimg.db", v->dir);
    struct err e = {0};
    if (!v->dir || db_open(dbp, NULL, &v->db, &e) < 0 || store_migrate(v->db, &e) < 0)
        return -1;
    *state = v;
    return 0;
}

static int teardown(void **state)
{
    struct env *v = *state;
    db_close(v->db);
    tu_rmrf(v->dir);
    free(v->dir);
    free(v);
    return 0;
}

static int64_t count(struct db *db, const char *sql)
{
    int64_t n = -1;
    assert_int_equal(db_query_int(db, sql, &n), 1);
    return n;
}

static void test_stmt_run_and_tx(void **state)
{
    struct env *v = *state;
    struct blob_seal seal = {.size = 10, .ino = 7, .mtime_ns = 8, .ctime_ns = 9};
    assert_int_equal(blobs_record(v->db, D1, 10, "tar", &seal, 1000), 0);
    assert_int_equal(blobs_record(v->db, D2, 20, "tar+gzip", NULL, 1000), 0);
    /* db_run: the number of rows changed */
    assert_int_equal(db_run(v->db, "UPDATE blobs SET last_used_ms = ?1", DB_INT(5)), 2);
    assert_int_equal(db_run(v->db, "UPDATE blobs SET last_used_ms = 6 WHERE digest = ?1",
                            DB_TEXT("sha256:none")),
                     0);
    assert_int_equal(db_run(v->db, "NOT SQL"), -EIO);
    /* a transaction left without commit rolls back */
    {
        _cleanup_tx_ struct db_tx tx = {0};
        assert_int_equal(db_tx_begin(&tx, v->db), 0);
        assert_int_equal(blobs_delete(v->db, D1), 0);
        assert_int_equal(count(v->db, "SELECT count(*) FROM blobs"), 1);
    }
    assert_false(db_in_tx(v->db));
    assert_int_equal(count(v->db, "SELECT count(*) FROM blobs"), 2);
    {
        _cleanup_tx_ struct db_tx tx = {0};
        assert_int_equal(db_tx_begin(&tx, v->db), 0);
        assert_int_equal(blobs_delete(v->db, D2), 0);
        assert_int_equal(db_tx_commit(&tx), 0);
    }
    assert_int_equal(count(v->db, "SELECT count(*) FROM blobs"), 1);
    /* the seal went into the row; NULL seal columns without one */
    assert_int_equal(count(v->db, "SELECT file_ino FROM blobs WHERE digest = '" D1 "'"), 7);
}

static void test_sources_paths_totals(void **state)
{
    struct env *v = *state;
    assert_int_equal(blobs_exists(v->db, D1), 0);
    _cleanup_free_ char *path = NULL;
    assert_int_equal(blobs_stored_path(v->db, "/st/blobs", D1, &path), -ENOENT);
    assert_null(path);
    assert_int_equal(blobs_record(v->db, D1, 10, "tar", NULL, 1000), 0);
    assert_int_equal(blobs_record(v->db, D2, 32, "docker-archive", NULL, 1000), 0);
    assert_int_equal(blobs_source_record(v->db, "s3://b/k", "\"e1\"", 10, D1, 1000), 0);
    assert_int_equal(blobs_exists(v->db, D1), 1);
    assert_int_equal(blobs_stored_path(v->db, "/st/blobs", D1, &path), 0);
    assert_string_equal(
        path, "/st/blobs/sha256/1111111111111111111111111111111111111111111111111111111111111111");

    struct blob_source k;
    assert_int_equal(blobs_source_get(v->db, "s3://b/k", &k), 1);
    assert_string_equal(k.etag, "\"e1\"");
    assert_string_equal(k.digest, D1);
    assert_string_equal(k.media_type, "tar");
    assert_string_equal(k.path,
                        "sha256/1111111111111111111111111111111111111111111111111111111111111111");
    assert_int_equal(k.blob_size, 10);
    blob_source_free(&k);
    assert_int_equal(blobs_source_get(v->db, "s3://b/other", &k), 0);

    /* known: same location, ETag and size only */
    char *d = blobs_known_digest(v->db, "s3://b/k", "\"e1\"", 10);
    assert_string_equal(d, D1);
    free(d);
    assert_null(blobs_known_digest(v->db, "s3://b/k", "\"e2\"", 10));
    assert_null(blobs_known_digest(v->db, "s3://b/k", "\"e1\"", 11));
    assert_null(blobs_known_digest(NULL, "s3://b/k", "\"e1\"", 10));

    int64_t n = 0, bytes = 0;
    assert_int_equal(blobs_totals(v->db, &n, &bytes), 0);
    assert_int_equal(n, 2);
    assert_int_equal(bytes, 42);

    assert_int_equal(blobs_touch(v->db, D1, 5000), 0);
    assert_int_equal(count(v->db, "SELECT last_used_ms FROM blobs WHERE digest = '" D1 "'"), 5000);
}

static int collect(const char *digest, const char *path, uint64_t size, void *ud)
{
    (void)path;
    (void)size;
    char *out = ud;
    strcat(out, digest + 7);
    strcat(out, " ");
    return 0;
}

static void test_unreferenced(void **state)
{
    struct env *v = *state;
    assert_int_equal(blobs_record(v->db, D1, 10, "tar", NULL, 1000), 0);
    assert_int_equal(blobs_record(v->db, D2, 20, "tar", NULL, 1000), 0);
    /* an image uses D1 */
    assert_true(db_exec(v->db, "INSERT INTO images(ref, name, state, created_at_ms, "
                               "updated_at_ms, last_used_ms) VALUES('r', 'n', 'ready', 0, 0, 0);"
                               "INSERT INTO image_layers(image_id, idx, location, digest) "
                               "VALUES(1, 1, 's3://b/k', '" D1 "');") == 0);
    char seen[512] = "";
    assert_int_equal(blobs_list_unreferenced(v->db, collect, seen), 0);
    assert_string_equal(seen, "2222222222222222222222222222222222222222222222222222222222222222 ");
}

static int collect_dl(const char *location, const char *tmp, void *ud)
{
    char *out = ud;
    strcat(out, location);
    strcat(out, "=");
    strcat(out, tmp);
    strcat(out, " ");
    return 0;
}

static void test_downloads(void **state)
{
    struct env *v = *state;
    struct blob_download dl;
    assert_int_equal(blobs_download_get(v->db, "s3://b/k", &dl), 0);
    assert_int_equal(blobs_download_put(v->db, "s3://b/k", "\"e\"", "/t/a.part", 0, 100), 0);
    assert_int_equal(blobs_download_put(v->db, "s3://b/k", "\"e\"", "/t/a.part", 64, 100), 0);
    assert_false(db_in_tx(v->db));
    assert_int_equal(blobs_download_get(v->db, "s3://b/k", &dl), 1);
    assert_string_equal(dl.etag, "\"e\"");
    assert_string_equal(dl.tmp_path, "/t/a.part");
    assert_int_equal(dl.bytes_done, 64);
    blob_download_free(&dl);
    char seen[256] = "";
    assert_int_equal(blobs_download_list(v->db, collect_dl, seen), 0);
    assert_string_equal(seen, "s3://b/k=/t/a.part ");
    assert_int_equal(blobs_download_delete(v->db, "s3://b/k"), 0);
    assert_int_equal(blobs_download_get(v->db, "s3://b/k", &dl), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stmt_run_and_tx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sources_paths_totals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreferenced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_downloads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
