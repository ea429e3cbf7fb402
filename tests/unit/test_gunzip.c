/*
 * test_gunzip.c: the gzip reader (src/archive/gunzip.c, ISA-L) on its own: members one after
 * another, each header flag (FEXTRA, FNAME, FCOMMENT, FHCRC) alone and together, the checks
 * of the header CRC, the trailer's CRC-32 and ISIZE, the first header's magic, method and
 * reserved flags, a stream cut at every byte (inside a header, the deflate data, a trailer:
 * each named), what follows the last member (ignored), a failing source, and the counts.
 * Every case runs with the source handing out 1 byte at a time, a few bytes, and the whole
 * blob, so headers and trailers split across blocks are covered. The deflate data comes
 * from libarchive's gzip writer (zlib), not from ISA-L.
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

#include "archive/gunzip.h"
#include "testutil.h"
#include "util/cleanup.h"

#define GZ_FHCRC    0x02
#define GZ_FEXTRA   0x04
#define GZ_FNAME    0x08
#define GZ_FCOMMENT 0x10
#define GZ_HEADER   10 /* the fixed part */
#define GZ_TRAILER  8

struct buf {
    unsigned char *p;
    size_t n, cap;
};

static void buf_add(struct buf *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->n, data, n);
    b->n += n;
}

/* The CRC-32 of gzip (zlib's crc32), bitwise: the reference the reader is checked against. */
static uint32_t crc32_ref(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0xedb88320u : crc >> 1;
    }
    return ~crc;
}

/* data as deflate data + trailer (a gzip member from libarchive's writer, header cut off). */
static void deflate_body(struct buf *out, const void *data, size_t n)
{
    size_t used = 0;
    unsigned char *m = tu_gzip_member(data, n, &used);
    assert_non_null(m);
    assert_true(used > GZ_HEADER + GZ_TRAILER);
    assert_int_equal(m[3], 0); /* a plain header: 10 bytes */
    buf_add(out, m + GZ_HEADER, used - GZ_HEADER);
    free(m);
}

/* A member of data with the header flags given (FHCRC right unless bad_hcrc); returns the
 * header's length. */
static size_t member(struct buf *out, const void *data, size_t n, unsigned flags, bool bad_hcrc)
{
    struct buf h = {0};
    unsigned char fixed[GZ_HEADER] = {0x1f, 0x8b, 8, (unsigned char)flags, 1, 2, 3, 4, 0, 3};
    buf_add(&h, fixed, sizeof(fixed));
    if (flags & GZ_FEXTRA) {
        static const unsigned char x[] = {7, 0, 'A', 'p', 3, 0, 'x', 'y', 'z'};
        buf_add(&h, x, sizeof(x));
    }
    if (flags & GZ_FNAME)
        buf_add(&h, "layer.tar", 10);
    if (flags & GZ_FCOMMENT)
        buf_add(&h, "a comment, with \xc3\xa9", 19);
    if (flags & GZ_FHCRC) {
        uint32_t c = crc32_ref(0, h.p, h.n) ^ (bad_hcrc ? 1u : 0u);
        unsigned char hc[2] = {(unsigned char)c, (unsigned char)(c >> 8)};
        buf_add(&h, hc, 2);
    }
    size_t hl = h.n;
    buf_add(out, h.p, h.n);
    free(h.p);
    deflate_body(out, data, n);
    return hl;
}

/* Source: the blob in pieces of `chunk` bytes (0: whole); fails with fail_at_end at its end
 * instead of ending when set. */
struct src {
    const struct buf *b;
    size_t pos, chunk;
    int fail_at_end;
};

static ssize_t src_read(void *ud, const void **buf)
{
    struct src *s = ud;
    if (s->pos >= s->b->n)
        return s->fail_at_end;
    size_t k = s->b->n - s->pos;
    if (s->chunk && k > s->chunk)
        k = s->chunk;
    *buf = s->b->p + s->pos;
    s->pos += k;
    return (ssize_t)k;
}

struct result {
    int r;
    struct buf out;
    char msg[256];
    uint64_t in, members;
};

static void result_free(struct result *res)
{
    free(res->out.p);
}

/* Read the whole stream; res->r is 0 or the error. */
static struct result gunzip_all(const struct buf *b, size_t chunk, int fail_at_end)
{
    struct result res = {0};
    struct src s = {.b = b, .chunk = chunk, .fail_at_end = fail_at_end};
    struct gunzip *g;
    assert_int_equal(gunzip_new(&g, src_read, &s), 0);
    for (;;) {
        const void *p;
        ssize_t n = gunzip_read(g, &p);
        if (n == 0)
            break;
        if (n < 0) {
            res.r = (int)n;
            snprintf(res.msg, sizeof(res.msg), "%s", gunzip_error(g));
            assert_int_equal(gunzip_read(g, &p), n); /* final */
            break;
        }
        assert_true((size_t)n <= GUNZIP_OUT_BYTES);
        buf_add(&res.out, p, (size_t)n);
    }
    assert_int_equal(gunzip_bytes_out(g), res.out.n);
    res.in = gunzip_bytes_in(g);
    res.members = gunzip_members(g);
    gunzip_free(g);
    return res;
}

static const size_t chunks[] = {1, 3, 4096, 0};

static void make_data(struct buf *d, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)('a' + (i * seed + i / 11) % 23);
        buf_add(d, &c, 1);
    }
}

static void expect_data(const struct buf *blob, const struct buf *want, uint64_t members)
{
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        struct result res = gunzip_all(blob, chunks[i], 0);
        if (res.r != 0)
            fail_msg("chunk %zu: %d %s", chunks[i], res.r, res.msg);
        assert_int_equal(res.out.n, want->n);
        assert_memory_equal(res.out.p, want->p, want->n);
        assert_int_equal(res.members, members);
        result_free(&res);
    }
}

static void expect_error(const struct buf *blob, const char *needle)
{
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        struct result res = gunzip_all(blob, chunks[i], 0);
        assert_int_equal(res.r, -EBADMSG);
        if (!strstr(res.msg, needle))
            fail_msg("chunk %zu: '%s' not in '%s'", chunks[i], needle, res.msg);
        result_free(&res);
    }
}

static void test_members(void **state)
{
    (void)state;
    struct buf a = {0}, b = {0}, big = {0}, want = {0}, blob = {0};
    make_data(&a, 5000, 3);
    make_data(&b, 70000, 5);
    make_data(&big, 3 * GUNZIP_OUT_BYTES + 17, 7); /* several output blocks */
    member(&blob, a.p, a.n, 0, false);
    member(&blob, "", 0, 0, false); /* an empty member */
    member(&blob, b.p, b.n, GZ_FNAME, false);
    member(&blob, big.p, big.n, 0, false);
    buf_add(&want, a.p, a.n);
    buf_add(&want, b.p, b.n);
    buf_add(&want, big.p, big.n);
    expect_data(&blob, &want, 4);
    struct result res = gunzip_all(&blob, 0, 0);
    assert_int_equal(res.in, blob.n); /* every byte consumed, nothing more */
    result_free(&res);
    free(a.p);
    free(b.p);
    free(big.p);
    free(want.p);
    free(blob.p);
}

static void test_header_flags(void **state)
{
    (void)state;
    struct buf d = {0};
    make_data(&d, 3000, 3);
    const unsigned flag_sets[] = {GZ_FEXTRA, GZ_FNAME, GZ_FCOMMENT, GZ_FHCRC,
                                  GZ_FEXTRA | GZ_FNAME | GZ_FCOMMENT | GZ_FHCRC};
    for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        struct buf blob = {0};
        member(&blob, d.p, d.n, flag_sets[i], false);
        member(&blob, d.p, d.n, flag_sets[i], false); /* and as a second member */
        struct buf want = {0};
        buf_add(&want, d.p, d.n);
        buf_add(&want, d.p, d.n);
        expect_data(&blob, &want, 2);
        free(want.p);
        free(blob.p);
        if (flag_sets[i] & GZ_FHCRC) {
            struct buf bad = {0};
            member(&bad, d.p, d.n, flag_sets[i], true);
            expect_error(&bad, "gzip data is corrupt: header CRC");
            free(bad.p);
        }
    }
    free(d.p);
}

static void test_first_header_checked(void **state)
{
    (void)state;
    struct buf d = {0};
    make_data(&d, 1000, 3);
    const struct {
        size_t at;
        unsigned char v;
        const char *needle;
    } cases[] = {
        {0, 0x1e, "not a gzip header"},         {1, 0x8c, "not a gzip header"},
        {2, 7, "compression method 7"},         {3, 0x20, "reserved header flag bits"},
        {3, 0x80, "reserved header flag bits"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf blob = {0};
        member(&blob, d.p, d.n, 0, false);
        blob.p[cases[i].at] = cases[i].v;
        expect_error(&blob, cases[i].needle);
        free(blob.p);
    }
    free(d.p);
}

static void test_trailer_checked(void **state)
{
    (void)state;
    struct buf d = {0};
    make_data(&d, 1000, 3);
    for (int field = 0; field < 2; field++) { /* CRC-32, ISIZE */
        for (int byte = 0; byte < 4; byte++) {
            struct buf blob = {0};
            member(&blob, d.p, d.n, 0, false);
            blob.p[blob.n - GZ_TRAILER + 4 * field + byte] ^= 0x40;
            expect_error(&blob, "does not match its trailer");
            /* the data before the trailer was handed over before the error */
            struct result res = gunzip_all(&blob, 0, 0);
            assert_int_equal(res.out.n, d.n);
            result_free(&res);
            free(blob.p);
        }
    }
    /* A bad second member after a good one: the first one's data, then the error. */
    struct buf blob = {0};
    member(&blob, d.p, d.n, 0, false);
    member(&blob, d.p, d.n, 0, false);
    blob.p[blob.n - 1] ^= 1;
    expect_error(&blob, "does not match its trailer");
    free(blob.p);
    free(d.p);
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    struct buf d = {0}, blob = {0};
    make_data(&d, 2000, 3);
    size_t hl = member(&blob, d.p, d.n, GZ_FEXTRA | GZ_FNAME | GZ_FCOMMENT | GZ_FHCRC, false);
    for (size_t cut = 0; cut < blob.n; cut++) {
        struct buf part = {.p = blob.p, .n = cut};
        const char *where = cut < hl                    ? "inside the member header"
                            : cut < blob.n - GZ_TRAILER ? "inside the deflate data"
                                                        : "inside the trailer";
        for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
            struct result res = gunzip_all(&part, chunks[i], 0);
            assert_int_equal(res.r, -EBADMSG);
            char want[128];
            snprintf(want, sizeof(want), "truncated gzip input (%s)", where);
            if (strcmp(res.msg, want) != 0)
                fail_msg("cut at %zu of %zu (chunk %zu): '%s', want '%s'", cut, blob.n, chunks[i],
                         res.msg, want);
            result_free(&res);
        }
    }
    free(blob.p);
    free(d.p);
}

static void test_after_the_last_member(void **state)
{
    (void)state;
    struct buf d = {0};
    make_data(&d, 3000, 3);
    static const unsigned char zeros[1024];
    static const unsigned char cut_magic[] = {0x1f, 0x8b, 0x08};
    static const unsigned char cut_fixed[] = {0x1f, 0x8b, 0x08, 0, 0, 0, 0};
    static const unsigned char cut_extra[] = {0x1f, 0x8b, 0x08, GZ_FEXTRA, 0, 0,  0,
                                              0,    0,    3,    200,       0, 'x'};
    static const unsigned char cut_name[] = {0x1f, 0x8b, 0x08, GZ_FNAME, 0, 0, 0, 0, 0, 3, 'n'};
    static const unsigned char reserved[] = {0x1f, 0x8b, 0x08, 0x40, 0, 0, 0, 0, 0, 3, 9, 9};
    static const unsigned char method[] = {0x1f, 0x8b, 0x07, 0, 0, 0, 0, 0, 0, 3, 9, 9};
    static const char text[] = "not gzip at all";
    const struct {
        const void *p;
        size_t n;
    } tails[] = {
        {zeros, sizeof(zeros)},         {cut_magic, sizeof(cut_magic)},
        {cut_fixed, sizeof(cut_fixed)}, {cut_extra, sizeof(cut_extra)},
        {cut_name, sizeof(cut_name)},   {reserved, sizeof(reserved)},
        {method, sizeof(method)},       {text, sizeof(text) - 1},
    };
    for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
        struct buf blob = {0};
        member(&blob, d.p, d.n, 0, false);
        buf_add(&blob, tails[i].p, tails[i].n);
        expect_data(&blob, &d, 1);
        free(blob.p);
    }
    free(d.p);
}

static void test_source_error(void **state)
{
    (void)state;
    struct buf d = {0}, blob = {0};
    make_data(&d, 3000, 3);
    member(&blob, d.p, d.n, 0, false);
    blob.n -= 20; /* inside the deflate data, then the source fails */
    struct result res = gunzip_all(&blob, 0, -EIO);
    assert_int_equal(res.r, -EIO);
    assert_non_null(strstr(res.msg, "cannot read the compressed stream"));
    result_free(&res);
    free(blob.p);
    free(d.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_header_flags),
        cmocka_unit_test(test_first_header_checked),
        cmocka_unit_test(test_trailer_checked),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_after_the_last_member),
        cmocka_unit_test(test_source_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
