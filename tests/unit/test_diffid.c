/*
 * test_diffid.c: a layer's diff id (archive.h archive_diff_id): the sha256 of the uncompressed
 * tar stream whatever the compression (plain, gzip, zstd: the same tar gives the same diff
 * id, and it is the plain tar's own digest), tar padding after the end blocks included; a
 * zstd or gzip bomb stops at the policy's compression ratio (and the policy scan refuses the
 * zstd bomb the same way as a gzip one); a truncated stream is -EBADMSG. The scan of a blob
 * followed while it downloads (archive_scan_follow) gives the same diff id from its one
 * decompression, bytes after the end-of-archive blocks included, and stops a bomb the same way.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* data (n bytes) into path, compressed with filter ('g', 'z'): the exact stream, whatever it
 * holds (libarchive's raw writer: no tar framing of its own). */
static void write_compressed(const char *path, char filter, const void *data, size_t n)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_raw(a);
    if (filter == 'g')
        archive_write_add_filter_gzip(a);
    else
        archive_write_add_filter_zstd(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, "data");
    archive_entry_set_filetype(ae, AE_IFREG);
    archive_entry_set_size(ae, (la_int64_t)n);
    assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
    assert_int_equal(archive_write_data(a, data, n), (la_ssize_t)n);
    archive_entry_free(ae);
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

/* A finished file: nothing more will come. */
static bool no_more(void *ud)
{
    (void)ud;
    return false;
}

/* archive_scan_follow of the finished file at path: its result, diff id and format. */
static int follow_file(const char *path, const struct archive_policy *p,
                       char diff_id[DIGEST_STR_LEN + 1], enum blob_format *fmt, struct err *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    struct sha256 h;
    assert_int_equal(sha256_init(&h), 0);
    struct archive_follow f = {.more = no_more, .size = (uint64_t)sb.st_size, .hash = &h};
    struct archive_stats st = {0};
    int r = archive_scan_follow(fd, &f, p, fmt, diff_id, &st, e);
    uint8_t d[SHA256_LEN];
    char blob[DIGEST_STR_LEN + 1], want[DIGEST_STR_LEN + 1];
    assert_int_equal(sha256_final(&h, d), 0);
    if (r == 0) { /* every byte of the blob was read, in order */
        digest_format(d, blob);
        file_digest(path, want);
        assert_string_equal(blob, want);
    }
    close(fd);
    return r;
}

static void test_follow_diff_id(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("diffid-follow");
    char plain[4096], c[4096];
    snprintf(plain, sizeof(plain), "%s/l.tar", dir);
    snprintf(c, sizeof(c), "%s/l.c", dir);
    write_layer(plain, 0, 700 * 1024, 'a');
    size_t tar_len = 0;
    char *tar = tu_read_file(plain, &tar_len);
    assert_non_null(tar);
    /* The tar as is, and with bytes after its end-of-archive blocks (not zeros: a reader
     * that stopped at the end blocks and padded with zeros would hash something else). */
    size_t trail = 3 * 65536 + 7;
    char *padded = malloc(tar_len + trail);
    memcpy(padded, tar, tar_len);
    memset(padded + tar_len, 'x', trail);
    const struct {
        const char *data;
        size_t n;
    } streams[] = {{tar, tar_len}, {padded, tar_len + trail}};
    const char filters[] = {'g', 'z'};
    const enum blob_format fmts[] = {BLOB_TAR_GZIP, BLOB_TAR_ZSTD};
    for (size_t i = 0; i < ARRAY_SIZE(streams); i++) {
        uint8_t d[SHA256_LEN];
        char want[DIGEST_STR_LEN + 1];
        assert_int_equal(sha256_buf(streams[i].data, streams[i].n, d), 0);
        digest_format(d, want);
        for (size_t k = 0; k < ARRAY_SIZE(filters); k++) {
            write_compressed(c, filters[k], streams[i].data, streams[i].n);
            char got[DIGEST_STR_LEN + 1], followed[DIGEST_STR_LEN + 1];
            enum blob_format fmt;
            struct err e = {0};
            assert_int_equal(archive_diff_id(c, fmts[k], NULL, got, &e), 0);
            assert_string_equal(got, want);
            if (follow_file(c, NULL, followed, &fmt, &e) != 0)
                fail_msg("stream %zu filter %c: %s", i, filters[k], e.msg);
            assert_int_equal(fmt, fmts[k]);
            assert_string_equal(followed, want);
        }
    }
    /* A plain tar has no diff id to compute (its digest is one). */
    char followed[DIGEST_STR_LEN + 1];
    enum blob_format fmt;
    struct err e = {0};
    assert_int_equal(follow_file(plain, NULL, followed, &fmt, &e), 0);
    assert_int_equal(fmt, BLOB_TAR);
    assert_string_equal(followed, "");
    /* A bomb stops at the ratio limit, as archive_diff_id does: in a file's data, and after
     * the end-of-archive blocks (64 MiB of zeros there). */
    struct archive_policy p = archive_policy_default();
    write_layer(c, 'z', 64 << 20, 0);
    e = (struct err){0};
    assert_int_equal(follow_file(c, &p, followed, &fmt, &e), -EFBIG);
    assert_non_null(strstr(e.msg, "rule: ratio"));
    size_t bomb_len = tar_len + (64 << 20);
    char *bomb = calloc(1, bomb_len);
    memcpy(bomb, tar, tar_len);
    write_compressed(c, 'z', bomb, bomb_len);
    free(bomb);
    e = (struct err){0};
    assert_int_equal(follow_file(c, &p, followed, &fmt, &e), -EFBIG);
    assert_non_null(strstr(e.msg, "rule: ratio"));
    free(padded);
    free(tar);
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
        cmocka_unit_test(test_follow_diff_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
