/*
 * test_gzip_layer.c: what a .tar.gz layer may look like around its gzip framing, through the
 * module's public calls (detect + scan, apply, the diff id, the scan of a followed download):
 *   - bytes after the last gzip member (zeros, garbage, the start of a header cut short) are
 *     ignored, as libarchive's gzip filter ignored them before gzip was read by ISA-L
 *     (gunzip.c); these cases pass on both readers;
 *   - members one after another are one stream (the diff id is the plain tar's digest);
 *   - a wrong CRC-32 or ISIZE in a trailer, or a stream cut inside a trailer, is refused
 *     (libarchive read the trailer without checking it, and the scan never read it);
 *   - a gzip bomb (an entry declared ~8 GiB, zeros compressed ~1000:1) is refused at the
 *     compression ratio limit within ~16 MiB of output, also while its data is skipped,
 *     in bounded time and memory.
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "archive/archive.h"
#include "archive/limits.h"
#include "testutil.h"
#include "util/cleanup.h"
#include "util/hash.h"

/* Bounds for the bomb: what the limit allows (16 MiB) and a block past it inflate in
 * milliseconds; reading the declared 8 GiB takes seconds. Generous against a loaded host. */
#define BOMB_MAX_SECONDS  3.0
#define BOMB_MAX_RSS_KIB  (64 * 1024)
#define BOMB_MEMBER_BYTES (64u << 20)
#define BOMB_MEMBERS      128 /* 8 GiB of zeros */

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
    size_t used = 0;
    unsigned char *m = tu_gzip_member(data, n, &used);
    assert_non_null(m);
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

/* Every step refuses the blob with code, and the message holds rule. */
static void expect_refused(const char *dir, const struct buf *b, const char *want, int code,
                           const char *needle, const char *what)
{
    int r[5];
    char msg[1024];
    run_all(dir, b, want, r, msg, sizeof(msg));
    for (int i = 0; i < 4; i++)
        if (r[i] != code)
            fail_msg("%s: step %d: %d, want %d (%s)", what, i, r[i], code, msg);
    if (!strstr(msg, needle))
        fail_msg("%s: '%s' not in '%s'", what, needle, msg);
}

/* A layer, its gzip (one member) and the digest of the tar (its diff id), in a temp dir. */
struct fixture {
    char *dir;
    struct buf tar, gz;
    char want[DIGEST_STR_LEN + 1];
};

static int fixture_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("gzlayer");
    make_tar(&f->tar);
    tar_digest(&f->tar, f->want);
    gzip_member(&f->gz, f->tar.p, f->tar.n);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fixture *f = *state;
    tu_rmrf(f->dir);
    free(f->dir);
    free(f->tar.p);
    free(f->gz.p);
    free(f);
    return 0;
}

static void test_after_the_last_member(void **state)
{
    struct fixture *f = *state;
    const char *dir = f->dir, *want = f->want;
    const struct buf gz = f->gz;
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
}

static void test_members_concatenated(void **state)
{
    struct fixture *f = *state;
    const char *dir = f->dir, *want = f->want;
    const struct buf tar = f->tar;
    struct buf gz = {0};
    /* cut inside the first file's header, inside data, and an empty member between */
    size_t cuts[] = {100, 30000, 30000, 90001, tar.n};
    size_t at = 0;
    for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
        gzip_member(&gz, tar.p + at, cuts[i] - at);
        at = cuts[i];
    }
    expect_ok(dir, &gz, want, "five members");
    free(gz.p);
}

static void test_trailer_checked(void **state)
{
    struct fixture *f = *state;
    const char *dir = f->dir, *want = f->want;
    const struct buf gz = f->gz;
    for (int field = 0; field < 2; field++) { /* CRC-32, ISIZE */
        struct buf b = {0};
        buf_add(&b, gz.p, gz.n);
        b.p[b.n - 8 + 4 * field] ^= 0x01;
        expect_refused(dir, &b, want, -EBADMSG, "(rule: malformed)",
                       field ? "bad ISIZE" : "bad CRC");
        expect_refused(dir, &b, want, -EBADMSG, "does not match its trailer",
                       field ? "bad ISIZE" : "bad CRC");
        free(b.p);
    }
    for (size_t cut = 1; cut < 8; cut++) {
        struct buf b = {0};
        buf_add(&b, gz.p, gz.n - cut);
        expect_refused(dir, &b, want, -EBADMSG, "truncated gzip input (inside the trailer)",
                       "cut in the trailer");
        free(b.p);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long maxrss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_bomb_bounded(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("gzlayer");
    /* A tar header for one file of ~8 GiB, then its zeros, as 128 identical members. */
    struct archive_policy p = archive_policy_default();
    unsigned char hdr[512 + 4096];
    size_t used = 0;
    struct archive *a = archive_write_new();
    archive_write_set_format_ustar(a);
    archive_write_set_bytes_per_block(a, 0);
    assert_int_equal(archive_write_open_memory(a, hdr, sizeof(hdr), &used), ARCHIVE_OK);
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, "zeros");
    archive_entry_set_filetype(ae, AE_IFREG);
    archive_entry_set_perm(ae, 0644);
    /* ustar's size field holds up to 8 GiB - 1 */
    archive_entry_set_size(ae, (la_int64_t)BOMB_MEMBER_BYTES * BOMB_MEMBERS - 512);
    assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
    archive_entry_free(ae);
    archive_write_free(a);
    assert_true(used >= 512); /* the header block, then end blocks: the header alone is kept */
    struct buf b = {0}, z = {0};
    gzip_member(&b, hdr, 512);
    unsigned char *zeros = calloc(1, BOMB_MEMBER_BYTES);
    gzip_member(&z, zeros, BOMB_MEMBER_BYTES);
    free(zeros);
    for (int i = 0; i < BOMB_MEMBERS; i++)
        buf_add(&b, z.p, z.n);
    assert_true((uint64_t)BOMB_MEMBER_BYTES * BOMB_MEMBERS / b.n > p.max_ratio);
    char path[4096];
    snprintf(path, sizeof(path), "%s/bomb.tar.gz", dir);
    assert_int_equal(tu_write_file(path, b.p, b.n), 0);

    long rss0 = maxrss_kib();
    double t0 = now_s();
    struct err e = {0};
    assert_int_equal(archive_scan(path, &p, NULL, &e), -EFBIG);
    double t1 = now_s();
    assert_non_null(strstr(e.msg, "(rule: ratio)"));
    char did[DIGEST_STR_LEN + 1];
    e = (struct err){0};
    assert_int_equal(archive_diff_id(path, BLOB_TAR_GZIP, &p, did, &e), -EFBIG);
    double t2 = now_s();
    assert_non_null(strstr(e.msg, "(rule: ratio)"));
    long grew = maxrss_kib() - rss0;
    print_message("bomb: scan %.3f s, diff id %.3f s, peak RSS +%ld KiB\n", t1 - t0, t2 - t1, grew);
    assert_true(t1 - t0 < BOMB_MAX_SECONDS);
    assert_true(t2 - t1 < BOMB_MAX_SECONDS);
    assert_true(grew < BOMB_MAX_RSS_KIB);
    free(z.p);
    free(b.p);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bomb_bounded),
        cmocka_unit_test_setup_teardown(test_after_the_last_member, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_members_concatenated, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_trailer_checked, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
