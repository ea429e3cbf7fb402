/*
 * test_diffid.c: a layer's diff id (archive.h archive_diff_id): the sha256 of the uncompressed
 * tar stream whatever the compression (plain, gzip, zstd: the same tar gives the same diff
 * id, and it is the plain tar's own digest), tar padding after the end blocks included; a
 * zstd or gzip bomb stops at the policy's compression ratio (and the policy scan refuses the
 * zstd bomb the same way as a gzip one); a truncated stream is -EBADMSG.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive/archive.h"
#include "archive/limits.h"
#include "testutil.h"
#include "util/cleanup.h"
#include "util/hash.h"

/* One file of `size` bytes of `fill`, as a tar compressed with filter (0, 'g', 'z'). */
static void write_layer(const char *path, char filter, size_t size, char fill)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (filter == 'g')
        archive_write_add_filter_gzip(a);
    else if (filter == 'z')
        archive_write_add_filter_zstd(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, "data");
    archive_entry_set_filetype(ae, AE_IFREG);
    archive_entry_set_perm(ae, 0644);
    archive_entry_set_size(ae, (la_int64_t)size);
    assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
    char *buf = malloc(1 << 20);
    memset(buf, fill, 1 << 20);
    for (size_t done = 0; done < size;) {
        size_t n = size - done < (1 << 20) ? size - done : (1 << 20);
        assert_int_equal(archive_write_data(a, buf, n), (la_ssize_t)n);
        done += n;
    }
    free(buf);
    archive_entry_free(ae);
    archive_write_close(a);
    archive_write_free(a);
}

/* The uncompressed stream of a compressed file, as gunzip/unzstd would give it. */
static void file_digest(const char *path, char out[DIGEST_STR_LEN + 1])
{
    uint8_t h[SHA256_LEN];
    assert_int_equal(sha256_file(path, h, NULL), 0);
    digest_format(h, out);
}

static void test_same_tar_same_diff_id(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("diffid");
    char plain[4096], gz[4096], zs[4096];
    snprintf(plain, sizeof(plain), "%s/l.tar", dir);
    snprintf(gz, sizeof(gz), "%s/l.tar.gz", dir);
    snprintf(zs, sizeof(zs), "%s/l.tar.zst", dir);
    write_layer(plain, 0, 300 * 1024, 'a');
    write_layer(gz, 'g', 300 * 1024, 'a');
    write_layer(zs, 'z', 300 * 1024, 'a');
    char want[DIGEST_STR_LEN + 1], got[DIGEST_STR_LEN + 1];
    file_digest(plain, want);
    struct err e = {0};
    assert_int_equal(archive_diff_id(plain, BLOB_TAR, NULL, got, &e), 0);
    assert_string_equal(got, want);
    assert_int_equal(archive_diff_id(gz, BLOB_TAR_GZIP, NULL, got, &e), 0);
    assert_string_equal(got, want);
    assert_int_equal(archive_diff_id(zs, BLOB_TAR_ZSTD, NULL, got, &e), 0);
    assert_string_equal(got, want);

    /* A stream cut in the middle does not decompress. */
    size_t n = 0;
    char *b = tu_read_file(gz, &n);
    assert_int_equal(tu_write_file(gz, b, n / 2), 0);
    free(b);
    e = (struct err){0};
    assert_int_equal(archive_diff_id(gz, BLOB_TAR_GZIP, NULL, got, &e), -EBADMSG);
    assert_non_null(strstr(e.msg, "cannot decompress"));
    e = (struct err){0};
    assert_int_equal(archive_diff_id(gz, BLOB_DOCKER_ARCHIVE, NULL, got, &e), -ENOTSUP);
    tu_rmrf(dir);
    free(dir);
}

static void test_bombs(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("diffid-bomb");
    char gz[4096], zs[4096];
    snprintf(gz, sizeof(gz), "%s/b.tar.gz", dir);
    snprintf(zs, sizeof(zs), "%s/b.tar.zst", dir);
    /* 64 MiB of zeros: zstd makes it a few KiB, gzip ~64 KiB (ratio ~1000). */
    write_layer(gz, 'g', 64 << 20, 0);
    write_layer(zs, 'z', 64 << 20, 0);
    struct archive_policy p = archive_policy_default();
    char got[DIGEST_STR_LEN + 1];
    const char *paths[] = {gz, zs};
    const enum blob_format fmts[] = {BLOB_TAR_GZIP, BLOB_TAR_ZSTD};
    for (int i = 0; i < 2; i++) {
        struct err e = {0};
        assert_int_equal(archive_diff_id(paths[i], fmts[i], &p, got, &e), -EFBIG);
        assert_non_null(strstr(e.msg, "rule: ratio"));
        /* The policy scan refuses both the same way. */
        struct archive_stats st = {0};
        e = (struct err){0};
        assert_int_equal(archive_scan(paths[i], &p, &st, &e), -EFBIG);
        assert_non_null(strstr(e.msg, "ratio"));
    }
    /* Without the ratio limit the same stream is hashed whole. */
    p.max_ratio = 0;
    struct err e = {0};
    assert_int_equal(archive_diff_id(zs, BLOB_TAR_ZSTD, &p, got, &e), 0);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_tar_same_diff_id),
        cmocka_unit_test(test_bombs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
