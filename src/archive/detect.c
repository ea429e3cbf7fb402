/*
 * detect.c: what is this blob? Decided by content only: magic bytes first (gzip, zstd, and the
 * usual wrong answers: XML error bodies, HTML, PNG, zip, bzip2, xz), then the tar header
 * checksum, then the structure of the tar (a docker-archive has a manifest.json naming layer
 * members; an OCI layout has oci-layout and index.json). The key a blob was stored under
 * never matters.
 *
 * Old v7 tar headers (no "ustar" magic) are accepted when their checksum is valid: libarchive
 * reads them and a checksum over 512 bytes rarely matches by chance.
 */
#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive/gunzip.h"
#include "archive/internal.h"
#include "util/cleanup.h"
#include "util/fsutil.h"

#define TAR_BLOCK 512
/* Bytes read for sniffing: one tar header block is all the magic checks need. */
#define SNIFF_BYTES TAR_BLOCK
/* Read size of detection: it reads the first block, or headers only */
#define DETECT_READ_BYTES (1 << 16)

const char *blob_format_name(enum blob_format f)
{
    switch (f) {
    case BLOB_TAR:
        return "tar";
    case BLOB_TAR_GZIP:
        return "tar+gzip";
    case BLOB_TAR_ZSTD:
        return "tar+zstd";
    case BLOB_DOCKER_ARCHIVE:
        return "docker-archive";
    case BLOB_OCI_LAYOUT:
        return "oci-layout";
    case BLOB_UNKNOWN:
        break;
    }
    return "unknown";
}

bool blob_format_is_layer(enum blob_format f)
{
    return f == BLOB_TAR || f == BLOB_TAR_GZIP || f == BLOB_TAR_ZSTD;
}

/* Parse an octal tar field (NUL/space padded). Returns -1 when malformed. */
static long long tar_octal(const unsigned char *f, size_t n)
{
    long long v = 0;
    size_t i = 0;
    while (i < n && f[i] == ' ')
        i++;
    bool any = false;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        v = v * 8 + (f[i] - '0');
        any = true;
    }
    for (; i < n; i++)
        if (f[i] != ' ' && f[i] != '\0')
            return -1;
    return any ? v : -1;
}

bool tar_header_valid(const unsigned char *blk)
{
    long long want = tar_octal(blk + 148, 8);
    if (want < 0)
        return false;
    long long sum_u = 0, sum_s = 0; /* unsigned per POSIX; signed as some old writers did */
    for (size_t i = 0; i < TAR_BLOCK; i++) {
        unsigned char c = (i >= 148 && i < 156) ? ' ' : blk[i];
        sum_u += c;
        sum_s += (signed char)c;
    }
    return want == sum_u || want == sum_s;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* The start of a tar header cut short: a printable name, then an octal mode field. */
static bool looks_like_tar_start(const unsigned char *p, size_t n)
{
    if (n < 108 || p[0] == '\0')
        return false;
    size_t i = 0;
    for (; i < 100 && p[i]; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
    for (; i < 100; i++)
        if (p[i])
            return false;
    for (i = 100; i < 108; i++)
        if (!((p[i] >= '0' && p[i] <= '7') || p[i] == ' ' || p[i] == '\0'))
            return false;
    return true;
}

static bool starts_ci(const unsigned char *p, size_t n, const char *s)
{
    size_t l = strlen(s);
    if (n < l)
        return false;
    for (size_t i = 0; i < l; i++)
        if (tolower(p[i]) != tolower((unsigned char)s[i]))
            return false;
    return true;
}

enum sniff_kind archive_sniff(const unsigned char *head, size_t n, uint64_t file_size, char *why,
                              size_t why_len)
{
#define WHY(...) (why ? (void)snprintf(why, why_len, __VA_ARGS__) : (void)0)
    if (file_size == 0) {
        WHY("empty file");
        return SNIFF_UNKNOWN;
    }
    if (n >= 2 && head[0] == 0x1f && head[1] == 0x8b) {
        if (n < 18) { /* 10-byte header + 8-byte trailer at least */
            WHY("truncated gzip data (%zu bytes)", n);
            return SNIFF_UNKNOWN;
        }
        return SNIFF_GZIP;
    }
    if (n >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd)
        return SNIFF_ZSTD;
    if (n >= TAR_BLOCK && tar_header_valid(head))
        return SNIFF_TAR;
    /* An empty layer: the end-of-archive marker only (one zero block is enough: see walk.c). */
    if (n >= TAR_BLOCK && all_zero(head, TAR_BLOCK))
        return SNIFF_TAR;

    /* Not a layer: say what it looks like. Skip leading white space for text formats. */
    size_t i = 0;
    if (n >= 3 && head[0] == 0xef && head[1] == 0xbb && head[2] == 0xbf)
        i = 3; /* UTF-8 BOM */
    while (i < n && isspace(head[i]))
        i++;
    const unsigned char *t = head + i;
    size_t tn = n - i;
    if (starts_ci(t, tn, "<?xml") || starts_ci(t, tn, "<Error") ||
        starts_ci(t, tn, "<ListBucketResult"))
        WHY("looks like an XML document (an S3 error body?)");
    else if (starts_ci(t, tn, "<!doctype html") || starts_ci(t, tn, "<html") ||
             starts_ci(t, tn, "<head") || starts_ci(t, tn, "<body"))
        WHY("looks like HTML (an error page?)");
    else if (tn > 0 && (t[0] == '{' || t[0] == '['))
        WHY("looks like JSON (a manifest or an error body, not a layer)");
    else if (n >= 8 && memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0)
        WHY("looks like a PNG image");
    else if (n >= 4 && memcmp(head, "PK\x03\x04", 4) == 0)
        WHY("looks like a zip archive (not supported)");
    else if (n >= 3 && memcmp(head, "BZh", 3) == 0)
        WHY("bzip2-compressed data (not supported for layers)");
    else if (n >= 6 && memcmp(head,
                              "\xfd"
                              "7zXZ\0",
                              6) == 0)
        WHY("xz-compressed data (not supported for layers)");
    else if (n >= 4 && memcmp(head,
                              "\x7f"
                              "ELF",
                              4) == 0)
        WHY("looks like an ELF executable");
    else if (n < TAR_BLOCK && looks_like_tar_start(head, n))
        WHY("truncated tar header (%zu bytes, a tar header is %d)", n, TAR_BLOCK);
    else if (n < TAR_BLOCK)
        WHY("too short to be a tar archive (%zu bytes)", n);
    else if (n >= 263 && memcmp(head + 257, "ustar", 5) == 0)
        WHY("tar header with a bad checksum");
    else
        WHY("unrecognised data (not a tar, gzip or zstd archive)");
    return SNIFF_UNKNOWN;
#undef WHY
}

/* A short reason into why. */
static void set_why(char *why, size_t why_len, const char *fmt, const char *arg)
{
    if (why)
        snprintf(why, why_len, fmt, arg);
}

/* Small JSON members read during the walk (manifest.json, oci-layout) are bounded: real
 * ones are a few KiB. */
#define DETECT_JSON_MAX (1 << 20)

static json_t *read_json_member(struct archive *a, int64_t size)
{
    if (size <= 0 || size > DETECT_JSON_MAX)
        return NULL;
    _cleanup_free_ char *buf = malloc((size_t)size);
    if (!buf)
        return NULL;
    la_ssize_t got = archive_read_data(a, buf, (size_t)size);
    if (got != size)
        return NULL;
    return json_loadb(buf, (size_t)size, JSON_REJECT_DUPLICATES, NULL);
}

void tar_kind_note(struct tar_kind *k, struct archive *a, struct archive_entry *ae, bool *read_data)
{
    const char *name = archive_entry_pathname(ae);
    if (!name || archive_entry_filetype(ae) != AE_IFREG)
        return;
    while (name[0] == '.' && name[1] == '/')
        name += 2;
    if (k->names_only) {
        if (!strcmp(name, "manifest.json") || !strcmp(name, "oci-layout"))
            k->named = true;
        else if (!strcmp(name, "index.json"))
            k->index = true;
        return;
    }
    if (!strcmp(name, "manifest.json")) {
        json_t *j = read_json_member(a, archive_entry_size(ae));
        json_t *first = json_is_array(j) ? json_array_get(j, 0) : NULL;
        k->manifest = json_is_array(json_object_get(first, "Layers"));
        json_decref(j);
        *read_data = true;
    } else if (!strcmp(name, "oci-layout")) {
        json_t *j = read_json_member(a, archive_entry_size(ae));
        k->oci_layout = json_is_string(json_object_get(j, "imageLayoutVersion"));
        json_decref(j);
        *read_data = true;
    } else if (!strcmp(name, "index.json")) {
        k->index = true;
    }
}

enum blob_format tar_kind_format(const struct tar_kind *k, enum blob_format layer_fmt)
{
    if (k->oci_layout && k->index)
        return BLOB_OCI_LAYOUT;
    if (k->manifest)
        return BLOB_DOCKER_ARCHIVE;
    return layer_fmt;
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
