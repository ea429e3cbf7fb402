/*
 * diffid.c: a layer's diff id, the sha256 of its uncompressed tar stream (OCI image config
 * `rootfs.diff_ids`). An uncompressed layer's diff id is its own digest; a gzip or zstd layer
 * is decompressed once more here (gzip by gunzip.c, zstd by libarchive's "raw" format: the
 * whole uncompressed stream, tar padding after the end-of-archive blocks included, as the OCI
 * spec hashes it).
 *
 * Why a pass of its own: the policy scan of a stored file (walk.c) reads entries through
 * libarchive's tar reader, which stops at the end-of-archive blocks and never shows the
 * decompressed bytes. The scan of a download as it arrives (archive_scan_follow) puts this
 * same reader under the tar reader and hashes its output, so a layer fetched that way gets
 * its diff id without this pass; this is for every other case (a resumed or reused
 * download, a docker-archive member, a layer stored before diff ids were recorded). The
 * pass is bounded like the scan: the blob size limit, the compression ratio limit (past
 * ARCHIVE_RATIO_FLOOR_BYTES) and the wall time limit of the policy.
 */
#include <archive.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive/archive.h"
#include "archive/gunzip.h"
#include "archive/internal.h"
#include "archive/limits.h"
#include "util/cleanup.h"
#include "util/hash.h"
#include "util/timeutil.h"

/* Read size and decompressed chunk size: large pieces, few hash updates. */
#define DIFFID_READ_BYTES (1 << 20)

DEFINE_POINTER_CLEANUP(struct archive, archive_read_free)

int archive_diff_id(const char *path, enum blob_format fmt, const struct archive_policy *p,
                    char out[DIGEST_STR_LEN + 1], struct err *e)
{
    struct archive_policy pol = p ? *p : archive_policy_default();
    if (fmt == BLOB_TAR) {
        uint8_t d[SHA256_LEN];
        int r = sha256_file(path, d, NULL);
        if (r < 0)
            return err_set(e, r, "cannot hash layer %s: %s", path, strerror(-r));
        digest_format(d, out);
        return 0;
    }
    if (fmt != BLOB_TAR_GZIP && fmt != BLOB_TAR_ZSTD)
        return err_set(e, -ENOTSUP, "%s: a %s has no diff id (not a layer)", path,
                       blob_format_name(fmt));
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0)
        return err_set(e, neg_errno(), "cannot open layer %s: %m", path);
    if (pol.max_blob_bytes && (uint64_t)sb.st_size > pol.max_blob_bytes)
        return err_set(e, -EFBIG,
                       "layer %s: %" PRIu64 " bytes, over the blob size limit of %" PRIu64, path,
                       (uint64_t)sb.st_size, pol.max_blob_bytes);
    _cleanup_(gunzip_freep) struct gunzip *gz = NULL;
    _cleanup_(archive_read_freep) struct archive *a = NULL;
    _cleanup_free_ char *buf = NULL;
    if (fmt == BLOB_TAR_GZIP) {
        if (gunzip_new_fd(&gz, fd, DIFFID_READ_BYTES) < 0)
            return err_set(e, -ENOMEM, "out of memory");
    } else {
        a = archive_read_new();
        buf = malloc(DIFFID_READ_BYTES);
        if (!a || !buf)
            return err_set(e, -ENOMEM, "out of memory");
        archive_read_support_format_raw(a);
        archive_read_support_filter_zstd(a);
        struct archive_entry *ae;
        if (archive_read_open_fd(a, fd, DIFFID_READ_BYTES) != ARCHIVE_OK ||
            archive_read_next_header(a, &ae) != ARCHIVE_OK)
            return err_set(e, -EBADMSG, "layer %s: cannot decompress: %s", path,
                           archive_error_string(a) ? archive_error_string(a) : "unknown error");
    }
    _cleanup_(sha256_free) struct sha256 h = {0};
    int r = sha256_init(&h);
    if (r < 0)
        return err_set(e, r, "cannot hash layer %s", path);
    int64_t deadline = pol.max_time_ms ? mono_ms() + (int64_t)pol.max_time_ms : 0;
    uint64_t outb = 0;
    for (;;) {
        const void *chunk = buf;
        ssize_t n = gz ? gunzip_read(gz, &chunk) : archive_read_data(a, buf, DIFFID_READ_BYTES);
        if (n == 0)
            break;
        if (n < 0) {
            const char *m = gz ? gunzip_error(gz) : archive_error_string(a);
            return err_set(e, gz && n != -EBADMSG ? (int)n : -EBADMSG,
                           "layer %s: cannot decompress: %s", path, m ? m : "unknown error");
        }
        outb += (uint64_t)n;
        uint64_t in = gz ? gunzip_bytes_in(gz) : (uint64_t)archive_filter_bytes(a, -1);
        if (pol.max_ratio && outb > ARCHIVE_RATIO_FLOOR_BYTES &&
            (in == 0 || outb / in >= pol.max_ratio))
            return err_set(e, -EFBIG,
                           "layer %s: decompressed %" PRIu64 " bytes from %" PRIu64
                           ", over the compression ratio limit of %" PRIu32 " (rule: ratio)",
                           path, outb, in, pol.max_ratio);
        if (deadline && mono_ms() > deadline)
            return err_set(e, -EFBIG,
                           "layer %s: took longer than the time limit of %" PRIu64
                           " ms (rule: time)",
                           path, pol.max_time_ms);
        if ((r = sha256_update(&h, chunk, (size_t)n)) < 0)
            return err_set(e, r, "cannot hash layer %s", path);
    }
    uint8_t d[SHA256_LEN];
    r = sha256_final(&h, d);
    if (r < 0)
        return err_set(e, r, "cannot hash layer %s", path);
    digest_format(d, out);
    return 0;
}
