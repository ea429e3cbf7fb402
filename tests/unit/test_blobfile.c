/*
 * test_blobfile.c: the integrity rule of the blob store (store/blobfile.h) on real files and a
 * real database: a sealed file is trusted on one stat, a file written in place is caught by its
 * ctime even with its mtime put back, an unsealed file is hashed and sealed, a mismatch is
 * quarantined with a row saying why; the blobs migration makes old paths relative; URL
 * userinfo is stripped from text (util/redact.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/blobfile.h"
#include "store/schema.h"
#include "testutil.h"
#include "util/cleanup.h"
#include "util/hash.h"
#include "util/redact.h"
#include "util/timeutil.h"

struct env {
    char *dir, *blob_dir;
    struct db *db;
};

static int setup(void **state)
{
    struct env *v = calloc(1, sizeof(*v));
    v->dir = tu_mkdtemp("blobfile");
    if (!v->dir || asprintf(&v->blob_dir, "%s/blobs", v->dir) < 0)
        return -1;
    char sha[4096], dbp[4096];
    snprintf(sha, sizeof(sha), "%s/" BLOBFILE_SUBDIR, v->blob_dir);
    snprintf(dbp, sizeof(dbp), "%s/thinimg.db", v->dir);
    struct err e = {0};
    if (mkdir(v->blob_dir, 0700) < 0 || mkdir(sha, 0700) < 0 ||
        db_open(dbp, NULL, &v->db, &e) < 0 || store_migrate(v->db, &e) < 0)
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
    free(v->blob_dir);
    free(v);
    return 0;
}

static int64_t q_int(struct db *db, const char *sql, const char *arg)
{
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, sql);
    assert_non_null(st);
    if (arg)
        db_bind_text(st, 1, arg);
    int64_t r = db_step(db, st) == 1 ? sqlite3_column_int64(st, 0) : -1;
    db_done(st);
    db_unlock(db);
    return r;
}

static void exec(struct db *db, const char *sql)
{
    assert_int_equal(db_exec(db, sql), 0);
}

/* Write data as the blob of its own digest (or of `name_digest` when given), with a blobs row
 * without a seal. Returns the path; *digest gets the digest the file is named after. */
static char *put_blob(struct env *v, const char *data, const char *name_digest, char *digest)
{
    uint8_t h[SHA256_LEN];
    assert_int_equal(sha256_buf(data, strlen(data), h), 0);
    digest_format(h, digest);
    if (name_digest)
        snprintf(digest, DIGEST_STR_LEN + 1, "%s", name_digest);
    char *path = blobfile_path(v->blob_dir, digest);
    assert_non_null(path);
    assert_int_equal(tu_write_file(path, data, strlen(data)), 0);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO blobs(digest, size, media_type, path, "
             "created_at_ms, last_used_ms) VALUES('%s', %zu, 'tar', 'sha256/x', 1, 1)",
             digest, strlen(data));
    exec(v->db, sql);
    return path;
}

static void seal(struct env *v, const char *path, const char *digest)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct blob_seal s;
    assert_int_equal(blobfile_seal_fd(fd, &s), 0);
    close(fd);
    assert_int_equal(blobfile_seal_store(v->db, digest, &s), 0);
}

static void test_sealed_file_trusted_on_stat(void **state)
{
    struct env *v = *state;
    /* Named after another digest on purpose: only a stat-only check accepts it. */
    const char *other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    char digest[DIGEST_STR_LEN + 1];
    _cleanup_free_ char *path = put_blob(v, "layer bytes", other, digest);
    seal(v, path, digest);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, BLOBFILE_MODE);
    assert_int_equal(blobfile_verify(v->db, v->blob_dir, digest, 0, path, NULL, NULL, 0), 1);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_quarantine", NULL), 0);
    /* Sealing it again (another run storing the same bytes) keeps the first seal valid. */
    struct blob_seal first, again;
    assert_int_equal(blobfile_seal_load(v->db, digest, &first), 1);
    sleep_ms(20);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(blobfile_seal_fd(fd, &again), 0);
    close(fd);
    assert_int_equal(again.ctime_ns, first.ctime_ns);
}

static void test_in_place_write_caught_by_ctime(void **state)
{
    struct env *v = *state;
    char digest[DIGEST_STR_LEN + 1];
    _cleanup_free_ char *path = put_blob(v, "0123456789abcdef", NULL, digest);
    seal(v, path, digest);
    struct stat before;
    assert_int_equal(stat(path, &before), 0);
    /* Same size, in place, mtime put back: only the ctime (and the bytes) differ. */
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "XXXX", 4, 6), 4);
    struct timespec ts[2] = {before.st_atim, before.st_mtim};
    assert_int_equal(futimens(fd, ts), 0);
    close(fd);
    char why[512];
    assert_int_equal(blobfile_verify(v->db, v->blob_dir, digest, 0, path, NULL, why, sizeof(why)),
                     0);
    assert_non_null(strstr(why, "hash to"));
    assert_int_equal(access(path, F_OK), -1);
    char qdir[4096];
    snprintf(qdir, sizeof(qdir), "%s/" BLOBFILE_QUARANTINE_SUBDIR, v->blob_dir);
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "ls '%s' | grep -q '^%s\\.'", qdir, digest + strlen(DIGEST_PREFIX));
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    assert_int_equal(q_int(v->db,
                           "SELECT count(*) FROM blob_quarantine WHERE digest = ?1 AND "
                           "reason LIKE '%hash to%' AND moved_to IS NOT NULL",
                           digest),
                     1);
    assert_int_equal(q_int(v->db,
                           "SELECT count(*) FROM blobs WHERE digest = ?1 AND "
                           "file_ctime_ns IS NULL",
                           digest),
                     1);
}

static void test_unsealed_file_hashed_then_sealed(void **state)
{
    struct env *v = *state;
    char digest[DIGEST_STR_LEN + 1];
    _cleanup_free_ char *path = put_blob(v, "an old thinimg wrote me", NULL, digest);
    assert_int_equal(chmod(path, 0644), 0);
    struct blob_seal s;
    assert_int_equal(blobfile_verify(v->db, v->blob_dir, digest, 0, path, &s, NULL, 0), 1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, BLOBFILE_MODE);
    assert_true(blobfile_seal_matches(&st, &s));
    assert_int_equal(q_int(v->db, "SELECT file_ino FROM blobs WHERE digest = ?1", digest),
                     (int64_t)st.st_ino);
}

static void test_wrong_size_and_missing(void **state)
{
    struct env *v = *state;
    char digest[DIGEST_STR_LEN + 1];
    _cleanup_free_ char *path = put_blob(v, "short", NULL, digest);
    char why[512];
    assert_int_equal(blobfile_verify(v->db, v->blob_dir, digest, 999, path, NULL, why, sizeof(why)),
                     0);
    assert_non_null(strstr(why, "999"));
    assert_int_equal(blobfile_verify(v->db, v->blob_dir, digest, 0, path, NULL, why, sizeof(why)),
                     0); /* now missing: not quarantined twice */
    assert_non_null(strstr(why, "missing"));
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_quarantine", NULL), 1);
}

/* The quarantine keeps the newest files within its bounds: a store corrupted over and over
 * does not fill the disk with copies. Count bound with small files, byte bound with sparse
 * 1 GiB ones (no disk used). Trimmed files' rows say they are gone (moved_to NULL). */
static void quarantine_n(struct env *v, const char *digest, int n, off_t size)
{
    for (int i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/bad.%d", v->dir, i);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, size), 0);
        close(fd);
        assert_int_equal(blobfile_quarantine(v->db, v->blob_dir, digest, p, "test"), 0);
        usleep(2000); /* distinct <ms> suffixes */
    }
}

static int count_files(const char *dir)
{
    _cleanup_closedir_ DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *de; d && (de = readdir(d));)
        n += de->d_name[0] != '.';
    return n;
}

static void test_quarantine_bounded(void **state)
{
    struct env *v = *state;
    const char *d = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    char q[4096];
    snprintf(q, sizeof(q), "%s/" BLOBFILE_QUARANTINE_SUBDIR, v->blob_dir);
    quarantine_n(v, d, BLOBFILE_QUARANTINE_KEEP_FILES + 4, 10);
    assert_int_equal(count_files(q), BLOBFILE_QUARANTINE_KEEP_FILES);
    assert_int_equal(
        q_int(v->db, "SELECT count(*) FROM blob_quarantine WHERE moved_to IS NULL", NULL), 4);
    /* The newest rows still point at files that exist. */
    assert_int_equal(
        q_int(v->db, "SELECT count(*) FROM blob_quarantine WHERE moved_to IS NOT NULL", NULL),
        BLOBFILE_QUARANTINE_KEEP_FILES);
    /* Bytes: 1 GiB sparse files; the bound keeps what fits (the newest always). */
    off_t gib = 1LL << 30;
    quarantine_n(v, d, 3, gib);
    int fit = (int)(BLOBFILE_QUARANTINE_KEEP_BYTES / (uint64_t)gib);
    assert_int_equal(count_files(q), fit < 1 ? 1 : fit);
    quarantine_n(v, d, 1, 2 * (off_t)BLOBFILE_QUARANTINE_KEEP_BYTES);
    assert_int_equal(count_files(q), 1); /* bigger than the bound: kept alone */
}

/* Version 1 stored the path as the fetching process saw it; version 2 derives it. */
static void test_migration_makes_paths_relative(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = tu_mkdtemp("blobmig");
    char p[4096];
    snprintf(p, sizeof(p), "%s/thinimg.db", dir);
    struct db *db = NULL;
    struct err e = {0};
    assert_int_equal(db_open(p, NULL, &db, &e), 0);
    assert_int_equal(db_migrate(db, "blobs", store_blobs_migrations, 1, &e), 0);
    const char *d = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO blobs VALUES('%s', 1, 'tar', "
             "'rel/state/blobs/sha256/%s', 1, 1)",
             d, d + strlen(DIGEST_PREFIX));
    exec(db, sql);
    assert_int_equal(store_migrate(db, &e), 0);
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "SELECT path FROM blobs");
    assert_int_equal(db_step(db, st), 1);
    char want[128];
    snprintf(want, sizeof(want), "sha256/%s", d + strlen(DIGEST_PREFIX));
    assert_string_equal((const char *)sqlite3_column_text(st, 0), want);
    db_done(st);
    db_unlock(db);
    db_close(db);
    tu_rmrf(dir);
}

static void test_strip_userinfo(void **state)
{
    (void)state;
    char a[] = "GET http://alice:s3cr3t@host:8080/x failed; see https://bob@h2/p?q=1";
    text_strip_userinfo(a);
    assert_string_equal(a, "GET http://host:8080/x failed; see https://h2/p?q=1");
    char b[] = "s3://bucket/key dir:/a/b http://host/p@x";
    text_strip_userinfo(b);
    assert_string_equal(b, "s3://bucket/key dir:/a/b http://host/p@x");
    char c[] = "location=\"http://u:p@h/k\"";
    text_strip_userinfo(c);
    assert_string_equal(c, "location=\"http://h/k\"");
    assert_true(url_has_userinfo("http://u:p@h/"));
    assert_false(url_has_userinfo("http://h/u@p"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sealed_file_trusted_on_stat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_place_write_caught_by_ctime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsealed_file_hashed_then_sealed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_size_and_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quarantine_bounded, setup, teardown),
        cmocka_unit_test(test_migration_makes_paths_relative),
        cmocka_unit_test(test_strip_userinfo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
