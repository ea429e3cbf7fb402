/*
 * sniff.c: what the first bytes of a blob and the names in a tar say it is, for detect.c and
 * the walk (walk.c) alike: magic bytes (gzip, zstd, and the usual wrong answers: XML error
 * bodies, HTML, PNG, zip, bzip2, xz), the tar header checksum, and the members that make a tar
 * a docker-archive or an OCI layout. Nothing here reads a whole archive.
 *
 * Old v7 tar headers (no "ustar" magic) are accepted when their checksum is valid: libarchive
 * reads them and a checksum over 512 bytes rarely matches by chance.
 */
#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/internal.h"
#include "util/cleanup.h"

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
