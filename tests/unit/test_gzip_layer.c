/*
 * test_gzip_layer.c: what a .tar.gz layer may look like around its gzip framing, through the
 * module's public calls (detect + scan, apply, the diff id, the scan of a followed download):
 *   - bytes after the last gzip member (zeros, garbage, the start of a header cut short) are
 *     ignored, as libarchive's gzip filter ignores them;
 *   - members one after another are one stream (the diff id is the plain tar's digest).
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

struct buf {
    unsigned char *p;
    size_t n, cap;
};

static void buf_add(struct buf *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

/* data as one gzip member (libarchive's writer, zlib: not the reader under test). */
static void gzip_member(struct buf *out, const void *data, size_t n)
{
    size_t cap = n + n / 100 + 4096, used = 0;
    unsigned char *m = malloc(cap);
    assert_non_null(m);
    struct archive *a = archive_write_new();
    archive_write_set_format_raw(a);
    archive_write_add_filter_gzip(a);
    archive_write_set_bytes_in_last_block(a, 1);
    assert_int_equal(archive_write_open_memory(a, m, cap, &used), ARCHIVE_OK);
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, "data");
    archive_entry_set_filetype(ae, AE_IFREG);
    archive_entry_set_size(ae, (la_int64_t)n);
    assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
    if (n)
        assert_int_equal(archive_write_data(a, data, n), (la_ssize_t)n);
    archive_entry_free(ae);
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    buf_add(out, m, used);
    free(m);
}

/* A small layer: a directory and a few files of text. */
static void make_tar(struct buf *out)
{
    size_t cap = 1 << 20, used = 0;
    unsigned char *m = malloc(cap);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_memory(a, m, cap, &used), ARCHIVE_OK);
    char data[40000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + (i * 7 + i / 13) % 26);
    for (int i = 0; i < 4; i++) {
        struct archive_entry *ae = archive_entry_new();
        char name[32];
        snprintf(name, sizeof(name), "d/f%d.txt", i);
        archive_entry_set_pathname(ae, name);
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, 0644);
        archive_entry_set_size(ae, (la_int64_t)sizeof(data));
        assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
        assert_int_equal(archive_write_data(a, data, sizeof(data)), (la_ssize_t)sizeof(data));
        archive_entry_free(ae);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    buf_add(out, m, used);
    free(m);
}

static bool no_more(void *ud)
{
    (void)ud;
    return false;
}

/* The blob b at path; detect, scan, diff id, followed scan and apply of it: each result
 * into r[0..4] (0 or a negative errno), the last error message into msg. The diff ids
 * must equal want when they succeed. */
static void run_all(const char *dir, const struct buf *b, const char *want, int r[5], char *msg,
                    size_t msg_len)
{
    char path[4096], root[4096];
    snprintf(path, sizeof(path), "%s/layer.tar.gz", dir);
    snprintf(root, sizeof(root), "%s/root", dir);
    assert_int_equal(tu_write_file(path, b->p, b->n), 0);
    msg[0] = '\0';
    struct err e = {0};
    enum blob_format f;
    char why[256] = "";
    r[0] = archive_scan_detect(path, NULL, &f, why, sizeof(why), NULL, &e);
    if (r[0] == 0 && f != BLOB_TAR_GZIP)
        r[0] = -ENOTSUP;
    if (r[0] < 0)
        snprintf(msg, msg_len, "scan: %s%s", e.msg, why);

    char got[DIGEST_STR_LEN + 1];
    e = (struct err){0};
    r[1] = archive_diff_id(path, BLOB_TAR_GZIP, NULL, got, &e);
    if (r[1] == 0)
        assert_string_equal(got, want);
    else
        snprintf(msg, msg_len, "diff id: %s", e.msg);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct sha256 h;
    assert_int_equal(sha256_init(&h), 0);
    struct archive_follow fo = {.more = no_more, .size = b->n, .hash = &h};
    e = (struct err){0};
    r[2] = archive_scan_follow(fd, &fo, NULL, &f, got, NULL, &e);
    uint8_t d[SHA256_LEN];
    assert_int_equal(sha256_final(&h, d), 0);
    close(fd);
    if (r[2] == 0)
        assert_string_equal(got, want);
    else
        snprintf(msg, msg_len, "follow: %s", e.msg);

    tu_rmrf(root);
    assert_int_equal(mkdir(root, 0755), 0);
    int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    e = (struct err){0};
    r[3] = archive_apply(rfd, path, NULL, NULL, &e);
    if (r[3] < 0)
        snprintf(msg, msg_len, "apply: %s", e.msg);
    close(rfd);
    char f3[4200];
    snprintf(f3, sizeof(f3), "%s/d/f3.txt", root);
    struct stat sb;
    r[4] = r[3] == 0 ? (stat(f3, &sb) == 0 && sb.st_size == 40000 ? 0 : -ENOENT) : r[3];
}

static void tar_digest(const struct buf *t, char out[DIGEST_STR_LEN + 1])
{
    uint8_t d[SHA256_LEN];
    assert_int_equal(sha256_buf(t->p, t->n, d), 0);
    digest_format(d, out);
}

static void expect_ok(const char *dir, const struct buf *b, const char *want, const char *what)
{
    int r[5];
    char msg[1024];
    run_all(dir, b, want, r, msg, sizeof(msg));
    for (int i = 0; i < 5; i++)
        if (r[i] != 0)
            fail_msg("%s: step %d: %d %s", what, i, r[i], msg);
}

static void test_after_the_last_member(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("gzlayer");
    struct buf tar = {0}, gz = {0};
    make_tar(&tar);
    char want[DIGEST_STR_LEN + 1];
    tar_digest(&tar, want);
    gzip_member(&gz, tar.p, tar.n);
    expect_ok(dir, &gz, want, "one member");

    static const unsigned char zeros[4096];
    static const char garbage[] = "garbage after the gzip stream\n";
    static const unsigned char cut_magic[] = {0x1f, 0x8b, 0x08};
    /* a header whose FNAME has no NUL before the end */
    static const unsigned char cut_name[] = {0x1f, 0x8b, 0x08, 0x08, 0, 0, 0, 0, 0, 3, 'n', 'a'};
    /* reserved flag bits: not a header */
    static const unsigned char reserved[] = {0x1f, 0x8b, 0x08, 0x20, 0, 0, 0, 0, 0, 3, 1, 2, 3};
    const struct {
        const void *p;
        size_t n;
        const char *what;
    } tails[] = {
        {zeros, sizeof(zeros), "4 KiB of zeros"},
        {garbage, sizeof(garbage) - 1, "text"},
        {cut_magic, sizeof(cut_magic), "the magic of a header, cut"},
        {cut_name, sizeof(cut_name), "a header cut inside its name"},
        {reserved, sizeof(reserved), "a header with reserved flags"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(tails); i++) {
        struct buf b = {0};
        buf_add(&b, gz.p, gz.n);
        buf_add(&b, tails[i].p, tails[i].n);
        expect_ok(dir, &b, want, tails[i].what);
        free(b.p);
    }
    free(gz.p);
    free(tar.p);
    tu_rmrf(dir);
    free(dir);
}

static void test_members_concatenated(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("gzlayer");
    struct buf tar = {0}, gz = {0};
    make_tar(&tar);
    char want[DIGEST_STR_LEN + 1];
    tar_digest(&tar, want);
    /* cut inside the first file's header, inside data, and an empty member between */
    size_t cuts[] = {100, 30000, 30000, 90001, tar.n};
    size_t at = 0;
    for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
        gzip_member(&gz, tar.p + at, cuts[i] - at);
        at = cuts[i];
    }
    expect_ok(dir, &gz, want, "five members");
    free(gz.p);
    free(tar.p);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_after_the_last_member),
        cmocka_unit_test(test_members_concatenated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
