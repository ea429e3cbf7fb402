/*
 * gunzip.c: gzip members inflated by ISA-L, with the member framing (headers, trailers, the
 * end of the stream) read here so that what is accepted is exactly what gunzip.h says.
 *
 * Each member: its header is parsed byte by byte as the input streams by (a header may span
 * any number of source blocks and its names may be any length; nothing is buffered but the
 * 10 fixed bytes), then isal_inflate in ISAL_GZIP_NO_HDR_VER mode inflates the deflate data
 * and checks the trailer itself (CRC-32 and ISIZE against its own count: one error code for
 * both), then the next member's header is looked for. ISA-L picks its AVX2/AVX-512 or
 * generic code at run time, so this is the one gzip decoder on every CPU: no zlib fallback
 * to keep in step with.
 */
#include <errno.h>
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive/gunzip.h"
#include "archive/isal_lib.h"
#include "util/cleanup.h"
#include "util/log.h"

#define GZ_FIXED_BYTES    10 /* magic, method, flags, mtime, xfl, os */
#define GZ_METHOD_DEFLATE 8
#define GZ_FHCRC          0x02
#define GZ_FEXTRA         0x04
#define GZ_FNAME          0x08
#define GZ_FCOMMENT       0x10
#define GZ_FRESERVED      0xe0

enum gz_stage {
    GZ_HEADER,  /* the fixed part of a member header */
    GZ_XLEN,    /* FEXTRA's 2-byte length */
    GZ_EXTRA,   /* FEXTRA's bytes */
    GZ_NAME,    /* FNAME, to its NUL */
    GZ_COMMENT, /* FCOMMENT, to its NUL */
    GZ_HCRC,    /* FHCRC's 2 bytes */
    GZ_DEFLATE, /* deflate data and the trailer (ISA-L) */
    GZ_END,     /* after the last member */
    GZ_FAILED,
};

struct gunzip {
    gunzip_source_fn src;
    void *ud;
    const uint8_t *in; /* unconsumed part of the source's current block */
    size_t in_len;
    bool src_eof;
    enum gz_stage stage;
    uint8_t fixed[GZ_FIXED_BYTES]; /* also FEXTRA's length and FHCRC's bytes */
    size_t fixed_n;
    uint8_t flags;
    uint32_t hcrc; /* CRC-32 of the header so far (FHCRC) */
    size_t skip;   /* FEXTRA bytes left */
    uint64_t in_bytes, out_bytes, members;
    int err;
    char msg[192];
    uint8_t *out;
    struct inflate_state st;
    /* gunzip_new_fd's source */
    int fd;
    bool own_fd; /* gunzip_archive_open_fd: closed with g */
    uint8_t *fd_buf;
    size_t fd_buf_size;
};

static int fail(struct gunzip *g, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct gunzip *g, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->msg, sizeof(g->msg), fmt, ap);
    va_end(ap);
    g->stage = GZ_FAILED;
    g->err = code;
    return code;
}

/* Make input available: 1 when there is some, 0 at the blob's end, negative on failure. */
static int need_input(struct gunzip *g)
{
    while (g->in_len == 0 && !g->src_eof) {
        const void *b;
        ssize_t n = g->src(g->ud, &b);
        if (n < 0)
            return fail(g, (int)n, "cannot read the compressed stream: %s", strerror((int)-n));
        if (n == 0)
            g->src_eof = true;
        g->in = b;
        g->in_len = (size_t)n;
    }
    return g->in_len > 0;
}

static void consume(struct gunzip *g, size_t n)
{
    if (g->flags & GZ_FHCRC && g->stage != GZ_HCRC && g->stage != GZ_DEFLATE)
        g->hcrc = crc32_gzip_refl(g->hcrc, g->in, n);
    g->in += n;
    g->in_len -= n;
    g->in_bytes += n;
}

/* Collect want bytes into g->fixed (from fixed_n on): 1 when complete, 0 at the blob's end. */
static int collect(struct gunzip *g, size_t want)
{
    while (g->fixed_n < want) {
        int r = need_input(g);
        if (r <= 0)
            return r;
        size_t k = want - g->fixed_n < g->in_len ? want - g->fixed_n : g->in_len;
        memcpy(g->fixed + g->fixed_n, g->in, k);
        g->fixed_n += k;
        consume(g, k);
    }
    return 1;
}

/* Skip to and past a NUL: 1 past it, 0 at the blob's end. */
static int skip_string(struct gunzip *g)
{
    for (;;) {
        int r = need_input(g);
        if (r <= 0)
            return r;
        const uint8_t *nul = memchr(g->in, 0, g->in_len);
        size_t k = nul ? (size_t)(nul - g->in) + 1 : g->in_len;
        consume(g, k);
        if (nul)
            return 1;
    }
}

/* The end of the blob inside a member header: the first member's must be complete; after a
 * member, an incomplete header is trailing data that libarchive ignores too. */
static int header_cut(struct gunzip *g)
{
    if (g->members == 0)
        return fail(g, -EBADMSG, "truncated gzip input (inside the member header)");
    g->stage = GZ_END;
    return 0;
}

/* Read a member header as far as the input allows: 1 when the deflate data begins, 0 at the
 * end of the stream, negative on failure. */
static int read_header(struct gunzip *g)
{
    int r;
    for (;;) {
        switch (g->stage) {
        case GZ_HEADER:
            g->flags = 0;
            if ((r = collect(g, GZ_FIXED_BYTES)) <= 0)
                return r < 0 ? r : header_cut(g);
            if (g->fixed[0] != 0x1f || g->fixed[1] != 0x8b || g->fixed[2] != GZ_METHOD_DEFLATE ||
                g->fixed[3] & GZ_FRESERVED) {
                if (g->members > 0) { /* not a member: trailing data, ignored */
                    g->stage = GZ_END;
                    return 0;
                }
                if (g->fixed[0] != 0x1f || g->fixed[1] != 0x8b)
                    return fail(g, -EBADMSG, "gzip data is corrupt: not a gzip header");
                if (g->fixed[2] != GZ_METHOD_DEFLATE)
                    return fail(g, -EBADMSG,
                                "gzip data is corrupt: compression method %u, not deflate (8)",
                                g->fixed[2]);
                return fail(g, -EBADMSG,
                            "gzip data is corrupt: reserved header flag bits set (0x%02x)",
                            g->fixed[3]);
            }
            g->flags = g->fixed[3];
            g->hcrc = g->flags & GZ_FHCRC ? crc32_gzip_refl(0, g->fixed, GZ_FIXED_BYTES) : 0;
            g->fixed_n = 0;
            g->stage = GZ_XLEN;
            break;
        case GZ_XLEN:
            if (!(g->flags & GZ_FEXTRA)) {
                g->stage = GZ_NAME;
                break;
            }
            if ((r = collect(g, 2)) <= 0)
                return r < 0 ? r : header_cut(g);
            g->skip = (size_t)g->fixed[0] | (size_t)g->fixed[1] << 8;
            g->fixed_n = 0;
            g->stage = GZ_EXTRA;
            break;
        case GZ_EXTRA:
            while (g->skip > 0) {
                if ((r = need_input(g)) <= 0)
                    return r < 0 ? r : header_cut(g);
                size_t k = g->skip < g->in_len ? g->skip : g->in_len;
                consume(g, k);
                g->skip -= k;
            }
            g->stage = GZ_NAME;
            break;
        case GZ_NAME:
        case GZ_COMMENT: {
            uint8_t bit = g->stage == GZ_NAME ? GZ_FNAME : GZ_FCOMMENT;
            if (g->flags & bit && (r = skip_string(g)) <= 0)
                return r < 0 ? r : header_cut(g);
            g->stage = g->stage == GZ_NAME ? GZ_COMMENT : GZ_HCRC;
            break;
        }
        case GZ_HCRC:
            if (g->flags & GZ_FHCRC) {
                if ((r = collect(g, 2)) <= 0)
                    return r < 0 ? r : header_cut(g);
                unsigned want = (unsigned)g->fixed[0] | (unsigned)g->fixed[1] << 8;
                if (want != (g->hcrc & 0xffffu))
                    return fail(g, -EBADMSG,
                                "gzip data is corrupt: header CRC 0x%04x, the header hashes "
                                "to 0x%04x",
                                want, g->hcrc & 0xffffu);
                g->fixed_n = 0;
            }
            isal_inflate_reset(&g->st);
            g->st.crc_flag = ISAL_GZIP_NO_HDR_VER;
            g->stage = GZ_DEFLATE;
            return 1;
        default:
            return 0;
        }
    }
}

static const char *isal_error_name(int r)
{
    switch (r) {
    case ISAL_INVALID_BLOCK:
        return "invalid deflate block";
    case ISAL_INVALID_SYMBOL:
        return "invalid deflate symbol";
    case ISAL_INVALID_LOOKBACK:
        return "invalid back-reference distance";
    case ISAL_INCORRECT_CHECKSUM:
        return "the member's CRC-32 or length does not match its trailer";
    case ISAL_NEED_DICT:
        return "a preset dictionary is required";
    default:
        return "decompression failed";
    }
}

/* Inflate into g->out from have on, until it is full or the stream ends: the new fill, or a
 * negative errno (g failed; the bytes made before the failure are in the fill it had). */
static ssize_t fill(struct gunzip *g, size_t *have)
{
    while (*have < GUNZIP_OUT_BYTES && g->stage != GZ_END) {
        if (g->stage != GZ_DEFLATE) {
            int r = read_header(g);
            if (r < 0)
                return r;
            continue;
        }
        int r = need_input(g);
        if (r < 0)
            return r;
        uint32_t room = (uint32_t)(GUNZIP_OUT_BYTES - *have);
        g->st.next_in = (uint8_t *)(uintptr_t)g->in;
        g->st.avail_in = (uint32_t)g->in_len;
        g->st.next_out = g->out + *have;
        g->st.avail_out = room;
        enum isal_block_state was = g->st.block_state;
        int ir = isal_inflate(&g->st);
        /* On invalid data ISA-L may leave its input count past what it was given: its
         * counts are used only when they are in range (a checksum error leaves them right,
         * and the output before it is handed over). */
        if (g->st.avail_in > g->in_len || g->st.avail_out > room)
            return fail(g, -EBADMSG, "gzip data is corrupt: %s",
                        ir < 0 ? isal_error_name(ir) : "inconsistent inflate state");
        size_t used = g->in_len - g->st.avail_in;
        size_t made = room - g->st.avail_out;
        if (used) { /* g->in is NULL once the source has ended: no offset on it */
            g->in += used;
            g->in_len -= used;
            g->in_bytes += used;
        }
        *have += made;
        if (ir < 0)
            return fail(g, -EBADMSG, "gzip data is corrupt: %s", isal_error_name(ir));
        if (g->st.block_state == ISAL_BLOCK_FINISH) {
            g->members++;
            g->fixed_n = 0;
            g->stage = GZ_HEADER;
            continue;
        }
        /* Nothing moved with the whole input given: the blob ended inside the member. */
        if (used == 0 && made == 0 && g->in_len == 0 && g->src_eof && g->st.block_state == was)
            return fail(g, -EBADMSG, "truncated gzip input (%s)",
                        g->st.block_state == ISAL_CHECKSUM_CHECK ? "inside the trailer"
                                                                 : "inside the deflate data");
    }
    return (ssize_t)*have;
}

ssize_t gunzip_read(struct gunzip *g, const void **buf)
{
    if (g->stage == GZ_FAILED)
        return g->err;
    size_t have = 0;
    ssize_t r = fill(g, &have);
    /* What came out before a failure is handed over first; the failure comes next call. */
    if (r < 0 && have == 0)
        return r;
    g->out_bytes += have;
    *buf = g->out;
    return (ssize_t)have;
}

int gunzip_new(struct gunzip **out, gunzip_source_fn src, void *ud)
{
    *out = NULL;
    struct err le = {0};
    int r = isal_lib_load(&le);
    if (r < 0) {
        log_error("cannot read a gzip stream", "error=%s", le.msg);
        return r;
    }
    struct gunzip *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->out = malloc(GUNZIP_OUT_BYTES);
    if (!g->out) {
        free(g);
        return -ENOMEM;
    }
    g->src = src;
    g->ud = ud;
    g->fd = -1;
    g->stage = GZ_HEADER;
    isal_inflate_init(&g->st);
    *out = g;
    return 0;
}

static ssize_t fd_source(void *ud, const void **buf)
{
    struct gunzip *g = ud;
    for (;;) {
        ssize_t n = read(g->fd, g->fd_buf, g->fd_buf_size);
        if (n < 0 && errno == EINTR)
            continue;
        *buf = g->fd_buf;
        return n < 0 ? neg_errno() : n;
    }
}

int gunzip_new_fd(struct gunzip **out, int fd, size_t read_bytes)
{
    int r = gunzip_new(out, fd_source, NULL);
    if (r < 0)
        return r;
    struct gunzip *g = *out;
    g->ud = g;
    g->fd = fd;
    g->fd_buf_size = read_bytes;
    g->fd_buf = malloc(read_bytes);
    if (!g->fd_buf) {
        gunzip_free(g);
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

void gunzip_free(struct gunzip *g)
{
    if (!g)
        return;
    if (g->own_fd)
        close(g->fd);
    free(g->fd_buf);
    free(g->out);
    free(g);
}

uint64_t gunzip_bytes_in(const struct gunzip *g)
{
    return g->in_bytes;
}

uint64_t gunzip_bytes_out(const struct gunzip *g)
{
    return g->out_bytes;
}

uint64_t gunzip_members(const struct gunzip *g)
{
    return g->members;
}

const char *gunzip_error(const struct gunzip *g)
{
    return g->msg;
}

la_ssize_t gunzip_archive_read(struct archive *a, void *ud, const void **buf)
{
    struct gunzip *g = ud;
    ssize_t n = gunzip_read(g, buf);
    if (n < 0) {
        archive_set_error(a, (int)-n, "%s", g->msg);
        return -1;
    }
    return n;
}

int gunzip_archive_open(struct archive *a, struct gunzip *g)
{
    return archive_read_open(a, g, NULL, gunzip_archive_read, NULL);
}

static int gunzip_archive_close(struct archive *a, void *ud)
{
    (void)a;
    gunzip_free(ud);
    return ARCHIVE_OK;
}

int gunzip_archive_open_fd(struct archive *a, int fd, size_t read_bytes)
{
    struct gunzip *g;
    if (gunzip_new_fd(&g, fd, read_bytes) < 0) {
        close(fd);
        archive_set_error(a, ENOMEM, "out of memory");
        return ARCHIVE_FATAL;
    }
    g->own_fd = true;
    return archive_read_open(a, g, NULL, gunzip_archive_read, gunzip_archive_close);
}
