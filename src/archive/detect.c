/*
 * detect.c: what is this blob? Decided by content only: the first bytes (sniff.c: magic bytes,
 * the tar header checksum), then the structure of the tar (a docker-archive has a
 * manifest.json naming layer members; an OCI layout has oci-layout and index.json), read by a
 * walk over the names (walk.c). The key a blob was stored under never matters.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive/gunzip.h"
#include "archive/internal.h"
#include "util/cleanup.h"
#include "util/fsutil.h"

/* Read size of detection: it reads the first block, or headers only */
#define DETECT_READ_BYTES (1 << 16)

/* A short reason into why. */
static void set_why(char *why, size_t why_len, const char *fmt, const char *arg)
{
    if (why)
        snprintf(why, why_len, fmt, arg);
}

/* Walk the names of an outer tar to tell layers from docker-archives and OCI layouts
 * (tar_kind_note). archive_manifest_read() validates the rest of the structure. */
static int classify_tar(int fd, enum blob_format layer_fmt, enum blob_format *out, char *why,
                        size_t why_len)
{
    _cleanup_(gunzip_freep) struct gunzip *gz = NULL;
    if (layer_fmt == BLOB_TAR_GZIP && gunzip_new_fd(&gz, fd, DETECT_READ_BYTES) < 0)
        return -ENOMEM;
    struct archive *a = archive_read_new();
    if (!a)
        return -ENOMEM;
    archive_read_support_format_tar(a);
    archive_read_support_filter_zstd(a);
    int r = gz ? gunzip_archive_open(a, gz) : archive_read_open_fd(a, fd, DETECT_READ_BYTES);
    if (r != ARCHIVE_OK) {
        set_why(why, why_len, "unreadable archive: %s", archive_error_string(a));
        archive_read_free(a);
        *out = BLOB_UNKNOWN;
        return 0;
    }
    struct tar_kind kind = {0};
    uint64_t n = 0;
    struct archive_entry *ae;
    while ((r = archive_read_header_shared(a, &ae)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
        bool read_data = false;
        n++;
        tar_kind_note(&kind, a, ae, &read_data);
        /* Bounded like a scan: a header walk past the default entry limit is not an archive
         * we would accept anyway. */
        if (n > ARCHIVE_DEFAULT_MAX_ENTRIES)
            break;
    }
    /* A damaged tar is still a tar: the scan names what is wrong with it. */
    archive_read_free(a);
    *out = tar_kind_format(&kind, layer_fmt);
    return 0;
}

/* 1 when the n decompressed bytes at head start a tar archive, 0 (why set) when not. */
static int head_is_tar(const unsigned char *head, la_ssize_t n, uint64_t size, char *why,
                       size_t why_len)
{
    char inner[128];
    /* An empty decompressed stream has size 0 for the sniffer's purposes. */
    if (archive_sniff(head, (size_t)n, n == 0 ? 0 : size, inner, sizeof(inner)) != SNIFF_TAR) {
        set_why(why, why_len, "compressed data that is not a tar archive (%s)", inner);
        return 0;
    }
    return 1;
}

/* The first block of a gzip blob, inflated (gunzip.c): bytes in head (fewer when the stream
 * is shorter), or -1 with the reason in why. */
static la_ssize_t gzip_head(int fd, unsigned char *head, size_t size, char *why, size_t why_len)
{
    _cleanup_(gunzip_freep) struct gunzip *gz = NULL;
    if (gunzip_new_fd(&gz, fd, DETECT_READ_BYTES) < 0)
        return -ENOMEM;
    size_t n = 0;
    while (n < size) {
        const void *b;
        ssize_t k = gunzip_read(gz, &b);
        if (k < 0) {
            set_why(why, why_len, "corrupt compressed data: %s", gunzip_error(gz));
            return -1;
        }
        if (k == 0)
            break;
        size_t c = (size_t)k < size - n ? (size_t)k : size - n;
        memcpy(head + n, b, c);
        n += c;
    }
    return (la_ssize_t)n;
}

/* Decompress the first block of a gzip/zstd blob (k): 1 when it starts a tar archive, 0
 * (with a reason in why) when not. */
static int compressed_is_tar(int fd, enum sniff_kind k, uint64_t size, char *why, size_t why_len)
{
    unsigned char head[SNIFF_BYTES];
    if (k == SNIFF_GZIP) {
        la_ssize_t n = gzip_head(fd, head, sizeof(head), why, why_len);
        return n < 0 ? (n == -ENOMEM ? -ENOMEM : 0) : head_is_tar(head, n, size, why, why_len);
    }
    struct archive *a = archive_read_new();
    if (!a)
        return -ENOMEM;
    archive_read_support_format_raw(a);
    archive_read_support_filter_zstd(a);
    la_ssize_t n = -1;
    struct archive_entry *ae;
    if (archive_read_open_fd(a, fd, DETECT_READ_BYTES) == ARCHIVE_OK &&
        archive_read_header_shared(a, &ae) == ARCHIVE_OK) {
        /* archive_read_data may return less than asked: fill the block. */
        n = 0;
        while (n < (la_ssize_t)sizeof(head)) {
            la_ssize_t got = archive_read_data(a, head + n, sizeof(head) - (size_t)n);
            if (got <= 0) {
                if (got < 0)
                    n = -1;
                break;
            }
            n += got;
        }
    }
    if (n < 0) {
        set_why(why, why_len, "corrupt compressed data: %s", archive_error_string(a));
        archive_read_free(a);
        return 0;
    }
    archive_read_free(a);
    return head_is_tar(head, n, size, why, why_len);
}

/* What the first bytes say: UNKNOWN (why set), or the layer format the blob has if it is a
 * plain layer (tar, or a compressed stream whose first block is a tar header). fd is left at
 * offset 0. */
static int detect_head(int fd, enum blob_format *layer_fmt, char *why, size_t why_len)
{
    *layer_fmt = BLOB_UNKNOWN;
    struct stat stbuf;
    if (fstat(fd, &stbuf) < 0)
        return neg_errno();
    if (!S_ISREG(stbuf.st_mode)) {
        set_why(why, why_len, "%s", "not a regular file");
        return 0;
    }
    unsigned char head[SNIFF_BYTES];
    ssize_t n = read_full(fd, head, sizeof(head));
    if (n < 0)
        return (int)n;
    enum sniff_kind k = archive_sniff(head, (size_t)n, (uint64_t)stbuf.st_size, why, why_len);
    if (k == SNIFF_UNKNOWN)
        return 0;
    if (lseek(fd, 0, SEEK_SET) < 0)
        return neg_errno();
    if (k != SNIFF_TAR) {
        int r = compressed_is_tar(fd, k, (uint64_t)stbuf.st_size, why, why_len);
        if (r <= 0)
            return r;
        if (lseek(fd, 0, SEEK_SET) < 0)
            return neg_errno();
    }
    *layer_fmt = k == SNIFF_GZIP ? BLOB_TAR_GZIP : k == SNIFF_ZSTD ? BLOB_TAR_ZSTD : BLOB_TAR;
    return 0;
}

static int open_blob(const char *path)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    return fd < 0 ? neg_errno() : fd;
}

int archive_detect_head(const char *path, enum blob_format *layer_fmt, char *why, size_t why_len)
{
    *layer_fmt = BLOB_UNKNOWN;
    if (why && why_len)
        why[0] = '\0';
    _cleanup_close_ int fd = open_blob(path);
    return fd < 0 ? fd : detect_head(fd, layer_fmt, why, why_len);
}

int archive_detect(const char *path, enum blob_format *out, char *why, size_t why_len)
{
    *out = BLOB_UNKNOWN;
    if (why && why_len)
        why[0] = '\0';
    _cleanup_close_ int fd = open_blob(path);
    if (fd < 0)
        return fd;
    enum blob_format layer_fmt;
    int r = detect_head(fd, &layer_fmt, why, why_len);
    if (r < 0 || layer_fmt == BLOB_UNKNOWN)
        return r;
    struct names_scope u = names_scope_begin();
    r = classify_tar(fd, layer_fmt, out, why, why_len);
    names_scope_end(&u);
    return r;
}

int archive_scan_detect(const char *path, const struct archive_policy *p, enum blob_format *out,
                        char *why, size_t why_len, struct archive_stats *st, struct err *e)
{
    *out = BLOB_UNKNOWN;
    if (why && why_len)
        why[0] = '\0';
    enum blob_format layer_fmt;
    int r = archive_detect_head(path, &layer_fmt, why, why_len);
    if (r < 0 || layer_fmt == BLOB_UNKNOWN)
        return r;
    /* One pass: the scan notes the names that make an outer tar (tar_kind_note). */
    struct tar_kind kind = {0};
    r = layer_walk_run(path, p, st, e, NULL, NULL, &kind);
    if (r == 0) {
        *out = tar_kind_format(&kind, layer_fmt);
        return 0;
    }
    /* Rejected as a layer, maybe before the walk saw the names that make it a docker-archive
     * or an OCI layout (rejected blobs are rare: a second, header-only walk decides). */
    enum blob_format f;
    char fwhy[256] = "";
    if (archive_detect(path, &f, fwhy, sizeof(fwhy)) == 0 && !blob_format_is_layer(f)) {
        err_clear(e);
        *out = f;
        if (why && why_len)
            snprintf(why, why_len, "%s", fwhy);
        return 0;
    }
    *out = layer_fmt;
    return r;
}
