/*
 * archive.h: reading hostile image blobs: format detection, the policy scan, secure layer
 * apply, and the manifests of multi-layer archives (docker-archive, OCI layout).
 *
 * Every blob is hostile until proven otherwise. Reading is done by libarchive; writing is this
 * module's own fd-based code: every parent directory is resolved with
 * openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) under the root fd (absolute symlinks in the
 * image resolve inside the image), and the final component is created with *at() calls that
 * never follow it. Nothing outside the root is ever created, changed or followed.
 *
 * Formats are detected by content (magic bytes and structure), never by name.
 *
 * Errors: 0 on success, a negative errno on failure, and the struct err names the entry and
 * the rule ("entry 'a/../../x': name has a '..' component (rule: traversal)"). Rejections use
 * -EPERM (policy), -EBADMSG (malformed/truncated archive), -EFBIG (a limit), -ELOOP (a
 * symlink loop or magic link on the way to a parent), -EXDEV (a mount point on the way),
 * -ENOTSUP (unsupported format: "not an image layer"). File-system failures keep their errno
 * ("(rule: io)"), with EPERM reported as -EACCES so it never reads as a policy rejection.
 *
 * Limits (entries, sizes, path length, depth, time, compression ratio) and what is allowed
 * (device nodes, xattr allowlist) are in struct archive_policy; archive_policy_default() has
 * the defaults, documented in limits.h.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"
#include "util/hash.h"

struct archive_policy; /* limits.h */

enum blob_format {
    BLOB_UNKNOWN = 0,    /* not an image layer */
    BLOB_TAR,            /* uncompressed tar layer (ustar/pax/gnu) */
    BLOB_TAR_GZIP,       /* gzip-compressed tar layer */
    BLOB_TAR_ZSTD,       /* zstd-compressed tar layer */
    BLOB_DOCKER_ARCHIVE, /* `docker save` tar: manifest.json + layer tars */
    BLOB_OCI_LAYOUT,     /* OCI image layout in a tar: oci-layout, index.json, blobs/ */
};

const char *blob_format_name(enum blob_format f); /* "tar", "tar+gzip", ..., "unknown" */
bool blob_format_is_layer(enum blob_format f);    /* TAR, TAR_GZIP, TAR_ZSTD */

/* Detect the format of the file at path by content. An unknown format returns 0 with
 * *out = BLOB_UNKNOWN and a human description in e-less form via `why` (may be NULL), e.g.
 * "empty file", "looks like an XML document (an S3 error body?)", "looks like HTML",
 * "truncated tar header". */
int archive_detect(const char *path, enum blob_format *out, char *why, size_t why_len);

struct archive_stats {
    uint64_t entries; /* entries read */
    uint64_t files;   /* regular files written (or that would be written) */
    uint64_t dirs, symlinks, hardlinks, devices, whiteouts; /* devices: nodes and FIFOs */
    uint64_t bytes;                                         /* regular file payload bytes */
    uint64_t compressed_bytes;                              /* bytes read from the blob */
    uint64_t xattrs_dropped; /* xattrs not on the policy's allowlist (not applied) */
    uint64_t skipped;        /* entries ignored by design (sockets) */
};

/* Read the whole layer and check it against the policy without writing anything. */
int archive_scan(const char *path, const struct archive_policy *p, struct archive_stats *st,
                 struct err *e);

/* archive_detect() and, for a layer, archive_scan() in one pass over the blob (the fetch
 * machine's validate step). Returns 0 with *out:
 *   BLOB_UNKNOWN                 not an image blob, why says what it looks like;
 *   a layer format               the layer passed the scan, st filled;
 *   docker-archive / OCI layout  an outer tar (st is of the outer tar; read its manifest);
 * or a negative errno with e set and *out the layer's format: the layer was rejected (codes
 * as archive_scan) or could not be read. Same answers as archive_detect() then archive_scan(),
 * with the blob read (and decompressed) once instead of twice. */
int archive_scan_detect(const char *path, const struct archive_policy *p, enum blob_format *out,
                        char *why, size_t why_len, struct archive_stats *st, struct err *e);

/* Apply one layer (any layer format) onto the directory open as root_fd: regular files,
 * dirs, symlinks, hardlinks, devices/FIFOs (policy), ownership, modes, times, allowed xattrs,
 * OCI whiteouts against lower layers. Directory modes and times are applied at the end.
 * On failure the root may hold part of the layer: the caller must not record the layer as
 * applied (the unpack machine recreates the device from its parent on retry). */
int archive_apply(int root_fd, const char *path, const struct archive_policy *p,
                  struct archive_stats *st, struct err *e);
/* archive_apply(), and opaque(dir, ud) once the lower contents of an opaque directory (an OCI
 * `.wh..wh..opq` marker) are cleared: dir is the directory's path below the root as the layer
 * names it ("" for the root). For a root that is an overlay mount, whose backend records the
 * directory in overlay's own form (one opaque mark instead of a whiteout per hidden entry). Not
 * called on a fresh root (nothing below to hide). */
typedef void (*archive_opaque_fn)(const char *dir, void *ud);
int archive_apply_opaque(int root_fd, const char *path, const struct archive_policy *p,
                         archive_opaque_fn opaque, void *ud, struct archive_stats *st,
                         struct err *e);

/* archive_detect() and, for a layer, archive_apply() with the blob read (and decompressed)
 * once, the way `thinimg extract` takes a LAYER operand. Returns 0 with *out:
 *   BLOB_UNKNOWN                 not an image blob, why says what it looks like; nothing written;
 *   a layer format               the layer was applied, st filled;
 *   docker-archive / OCI layout  an outer tar: nothing applied (read its manifest);
 * or a negative errno with e set and *out the layer's format, as archive_apply().
 * Into an empty root (nothing but an empty lost+found) the blob is applied as it is read; when
 * it turns out to be an outer tar (known only once its manifest.json or oci-layout entry was
 * read, which can be the last one) its entries are removed again and the root is as empty as
 * before. Into a root that holds anything, the format is detected first (a second read). */
int archive_apply_detect(int root_fd, const char *path, const struct archive_policy *p,
                         enum blob_format *out, char *why, size_t why_len, struct archive_stats *st,
                         struct err *e);
/* The first bytes of the file at path: *layer_fmt is the layer format it has if it is a plain
 * layer (tar, or a gzip/zstd stream whose first block is a tar header), else BLOB_UNKNOWN with
 * why set. Reads one block (and decompresses one). Negative errno when it cannot be read. */
int archive_detect_head(const char *path, enum blob_format *layer_fmt, char *why, size_t why_len);
/* A blob read while it is being written (the fetch machine scans a download as it arrives).
 * A read past what the file holds waits in more(ud), which returns false when nothing more
 * will come (the download stopped). Every byte read, in order from 0 to size, goes into hash:
 * the caller trusts the result only if that digest is the finished blob's. */
struct sha256;
struct archive_follow {
    bool (*more)(void *ud);
    void *ud;
    uint64_t size;        /* the blob's size when complete */
    struct sha256 *hash;  /* initialised by the caller */
    bool compressed_only; /* a plain tar (scanned in moments later) is not followed: -EAGAIN */
};
/* The walk of archive_scan_detect() over the blob open as fd while it is written: 0 with *out
 * the format (a layer format: the layer passed the scan; docker-archive / OCI layout: an outer
 * tar, not scanned as such) and the whole blob hashed; negative errno otherwise (a rejection,
 * a read error, -ECANCELED when the download stopped, -EAGAIN for compressed_only). Only
 * the walk: the caller still checks the first block with archive_detect() rules on the
 * finished file (archive_scan_detect() is that check plus this walk). A gzip or zstd blob is
 * decompressed once for both: on 0, diff_id is its diff id (what archive_diff_id() computes
 * from the finished file, under the same limits), "" for a plain tar. */
int archive_scan_follow(int fd, const struct archive_follow *f, const struct archive_policy *p,
                        enum blob_format *out, char diff_id[DIGEST_STR_LEN + 1],
                        struct archive_stats *st, struct err *e);
/* The layer's diff id (OCI rootfs.diff_ids): "sha256:<hex>" of its uncompressed tar stream,
 * into out. fmt is the layer's format as detected (BLOB_TAR: the blob's own digest; gzip and
 * zstd are decompressed whole, bounded by the policy's blob size, ratio and time limits:
 * -EFBIG). -EBADMSG for a stream that does not decompress, -ENOTSUP for a format that is not
 * a layer. Registry layers are checked against their image config's diff ids with it, and
 * chain ids are made of diff ids, so one layer shares its devices whatever its compression. */
int archive_diff_id(const char *path, enum blob_format fmt, const struct archive_policy *p,
                    char out[DIGEST_STR_LEN + 1], struct err *e);

/* Progress callback for scan/apply: bytes of the blob consumed so far. Optional. */
typedef void (*archive_progress_fn)(uint64_t done, uint64_t total, void *ud);
void archive_set_progress(archive_progress_fn fn, void *ud); /* thread-local */

/* ---- multi-layer archives (docker-archive, OCI layout) ----------------------------------- */

struct archive_layer_ref {
    char *member;            /* path of the layer inside the outer tar */
    char *digest;            /* declared "sha256:..." when the manifest gives one, else NULL */
    enum blob_format format; /* as detected on the member's content */
    uint64_t size;
};

struct archive_manifest {
    struct archive_layer_ref *layers; /* bottom to top */
    size_t n_layers;
    char *repo_tag; /* first RepoTags entry / ref.name annotation, or NULL */
};

/* Read the manifest of a docker-archive or OCI-layout tar and list its layers in order.
 * Validates the manifest structure (member paths exist, no traversal). */
int archive_manifest_read(const char *path, struct archive_manifest *out, struct err *e);
void archive_manifest_free(struct archive_manifest *m);

/* Copy one member of the outer tar to out_fd (for storing each layer as its own blob). */
int archive_member_copy(const char *path, const char *member, int out_fd, uint64_t max_bytes,
                        struct err *e);
