/*
 * fuzz_gunzip.c: libFuzzer target for the gzip reader (src/archive/gunzip.c, ISA-L). The
 * first input byte picks how the source hands out the rest (1 to 15 bytes at a time, or all
 * at once), so headers, deflate blocks and trailers split across blocks are exercised.
 *
 * Besides crashes and sanitizer reports, the target checks:
 *   - an error is final and has a message; counts only grow; no block exceeds
 *     GUNZIP_OUT_BYTES; bytes consumed never exceed the input;
 *   - the verdict does not depend on how the input is split, nor do the bytes of a stream
 *     read to its end (the same input read whole gives the same);
 *   - when the stream reads to its end, libarchive's gzip filter (zlib), where it also
 *     succeeds, gives the same bytes.
 * Output is capped (OUT_CAP) so that a small bomb stays fast.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/gunzip.h"

#define OUT_CAP (8u << 20)

struct src {
    const uint8_t *p;
    size_t n, pos, chunk;
};

static ssize_t src_read(void *ud, const void **buf)
{
    struct src *s = ud;
    if (s->pos >= s->n)
        return 0;
    size_t k = s->n - s->pos;
    if (s->chunk && k > s->chunk)
        k = s->chunk;
    *buf = s->p + s->pos;
    s->pos += k;
    return (ssize_t)k;
}

/* Read it all (up to OUT_CAP) into *out: 0, 1 when capped, or the error. */
static int read_all(const uint8_t *p, size_t n, size_t chunk, uint8_t **out, size_t *out_n)
{
    struct src s = {.p = p, .n = n, .chunk = chunk};
    struct gunzip *g;
    if (gunzip_new(&g, src_read, &s) < 0)
        abort();
    *out = NULL;
    *out_n = 0;
    int r = 0;
    uint64_t last_in = 0;
    for (;;) {
        const void *b;
        ssize_t k = gunzip_read(g, &b);
        if (gunzip_bytes_in(g) < last_in || gunzip_bytes_in(g) > n)
            abort();
        last_in = gunzip_bytes_in(g);
        if (k == 0)
            break;
        if (k < 0) {
            r = (int)k;
            if (!gunzip_error(g)[0] || gunzip_read(g, &b) != k)
                abort();
            break;
        }
        if ((size_t)k > GUNZIP_OUT_BYTES)
            abort();
        *out = realloc(*out, *out_n + (size_t)k);
        if (!*out)
            abort();
        memcpy(*out + *out_n, b, (size_t)k);
        *out_n += (size_t)k;
        if (*out_n >= OUT_CAP) {
            r = 1;
            break;
        }
    }
    if (gunzip_bytes_out(g) != *out_n)
        abort();
    gunzip_free(g);
    return r;
}

/* libarchive's gzip filter over the same bytes: 0 with the output, or -1. */
static int libarchive_all(const uint8_t *p, size_t n, uint8_t **out, size_t *out_n)
{
    struct archive *a = archive_read_new();
    archive_read_support_format_raw(a);
    archive_read_support_filter_gzip(a);
    *out = NULL;
    *out_n = 0;
    struct archive_entry *ae;
    int r = -1;
    if (archive_read_open_memory(a, p, n) == ARCHIVE_OK &&
        archive_read_next_header(a, &ae) == ARCHIVE_OK) {
        uint8_t buf[65536];
        for (;;) {
            la_ssize_t k = archive_read_data(a, buf, sizeof(buf));
            if (k == 0) {
                r = 0;
                break;
            }
            if (k < 0 || *out_n + (size_t)k > OUT_CAP)
                break;
            *out = realloc(*out, *out_n + (size_t)k);
            if (!*out)
                abort();
            memcpy(*out + *out_n, buf, (size_t)k);
            *out_n += (size_t)k;
        }
    }
    archive_read_free(a);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = data[0] & 0x0f; /* 0: all at once */
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    uint8_t *o1, *o2;
    size_t n1, n2;
    int r1 = read_all(p, n, chunk, &o1, &n1);
    int r2 = read_all(p, n, 0, &o2, &n2);
    /* the same verdict; the same bytes when read to the end (or the cap) */
    if (r1 != r2 || (r1 >= 0 && (n1 != n2 || (n1 && memcmp(o1, o2, n1) != 0))))
        abort();
    free(o2);
    if (r1 == 0 && n1 > 0) {
        uint8_t *o3;
        size_t n3;
        if (libarchive_all(p, n, &o3, &n3) == 0 && (n3 != n1 || memcmp(o3, o1, n1) != 0))
            abort();
        free(o3);
    }
    free(o1);
    return 0;
}
