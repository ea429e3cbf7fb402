/*
 * limits.h: the archive policy: what a layer may contain and how big it may be.
 *
 * Every limit below has a default, the reason for it, and a valid range (archive_limits[]).
 * For sizes, counts, time and ratio 0 means "no limit"; the path length and depth limits
 * cannot be disabled (the kernel caps a path at PATH_MAX anyway) and refuse 0. The CLI
 * exposes each limit as a flag (`thinimg extract --max-entries N`, ...) parsed and checked
 * by archive_limit_set(); docs/archive.md lists them with their ranges. scan and apply check
 * the whole policy first (archive_policy_check) and refuse one out of range with -EINVAL.
 *
 * The policy is a plain value: copy it, change a field, pass a pointer. Functions that take a
 * `const struct archive_policy *` accept NULL for the defaults.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest blob accepted. The largest layer of the reference bucket is 570 MB; 8 GiB leaves
 * room for real images with big toolchains while refusing obviously hostile objects before a
 * single byte is read. */
#define ARCHIVE_DEFAULT_MAX_BLOB_BYTES (8ULL << 30)

/* Entries per layer. A full Debian image layer has ~20k entries and node_modules-heavy layers
 * a few 100k; a million bounds the memory of the per-layer path tables (~100 MB) and stops
 * "millions of empty files" inode-exhaustion layers. */
#define ARCHIVE_DEFAULT_MAX_ENTRIES 1000000ULL

/* One regular file's (logical) size. Real layers hold files up to a few hundred MB; 8 GiB
 * admits large database or model files and stops size-field overflow tricks. */
#define ARCHIVE_DEFAULT_MAX_FILE_BYTES (8ULL << 30)

/* Sum of regular file sizes in a layer. Bounded by what a thin device of a reasonable virtual
 * size can hold; a layer bigger than this is more likely an attack than an image. */
#define ARCHIVE_DEFAULT_MAX_TOTAL_BYTES (32ULL << 30)

/* Longest entry name (and hardlink target), in bytes. PATH_MAX (4096) includes the NUL: the
 * kernel cannot address a longer relative path from the root in one call. This is also the
 * largest value the limit takes: a longer name could not be created. */
#define ARCHIVE_DEFAULT_MAX_PATH_BYTES 4095U
#define ARCHIVE_MAX_PATH_BYTES_LIMIT   4095U

/* Most components in one name. Real trees stay under ~40 (deep node_modules); 256 stops
 * "1000 nested directories" stack and recursion attacks on the tools that walk the tree. */
#define ARCHIVE_DEFAULT_MAX_DEPTH 256U
/* The most components a name within the path limit can have ("a/a/.../a": 4095 bytes). */
#define ARCHIVE_MAX_DEPTH_LIMIT ((ARCHIVE_MAX_PATH_BYTES_LIMIT + 1) / 2)

/* Metadata bytes before one entry's data (PAX records, GNU long names). A PATH_MAX name and
 * a handful of 64 KiB xattrs fit; huge PAX records (Go CVE-2022-2879 class) do not. */
#define ARCHIVE_DEFAULT_MAX_HEADER_BYTES (1ULL << 20)
/* An entry's metadata is at least its 512-byte header block: a smaller limit would refuse
 * every entry. */
#define ARCHIVE_MIN_HEADER_BYTES_LIMIT 512U

/* Wall time for one scan or apply. A 570 MB layer applies in well under a minute on a thin
 * device; 30 minutes only stops a layer that stalls the unpack queue forever. */
#define ARCHIVE_DEFAULT_MAX_TIME_MS (1800ULL * 1000)
/* The largest time limit: 30 days. A longer bound bounds nothing (use 0 for none), and this
 * keeps the deadline arithmetic (now + limit, in ms) far from overflowing. */
#define ARCHIVE_MAX_TIME_MS_LIMIT (30ULL * 24 * 3600 * 1000)

/* Decompressed bytes per compressed byte. Real gzip/zstd layers compress 2-10x; 100x (the
 * ratio hardened extractors use) stops decompression bombs. Checked only once more than
 * ARCHIVE_RATIO_FLOOR_BYTES came out, so small highly-compressible layers are fine. */
#define ARCHIVE_DEFAULT_MAX_RATIO 100U
#define ARCHIVE_MAX_RATIO_LIMIT   UINT32_MAX
#define ARCHIVE_RATIO_FLOOR_BYTES (16ULL << 20)

/* The largest byte size or count a limit takes: the largest file size (off_t), so sums and
 * comparisons with file offsets stay in range. */
#define ARCHIVE_MAX_BYTES_LIMIT ((uint64_t)INT64_MAX)

/* Extended attributes: the kernel's XATTR_SIZE_MAX (ext4 stores less; the write fails with
 * a clear error there) and a per-entry count far above what images use (1-2). */
#define ARCHIVE_MAX_XATTR_VALUE_BYTES 65536U
#define ARCHIVE_MAX_XATTRS_PER_ENTRY  64U

/* Longest symlink target: PATH_MAX without the NUL, as the kernel enforces. */
#define ARCHIVE_MAX_SYMLINK_TARGET_BYTES 4095U

/* The default xattr allowlist: file capabilities (ping, some daemons) are part of an image;
 * user.* is free-form data an image may carry. security.selinux, security.ima, trusted.*,
 * system.posix_acl_* describe the build host, not the image: they are dropped (counted in
 * archive_stats.xattrs_dropped). Patterns: an exact name, or a prefix ending in '.'. */
#define ARCHIVE_DEFAULT_XATTR_ALLOW "security.capability,user."

struct archive_policy {
    uint64_t max_blob_bytes;
    uint64_t max_entries;
    uint64_t max_file_bytes;
    uint64_t max_total_bytes;
    uint32_t max_path_bytes;
    uint32_t max_depth;
    uint64_t max_header_bytes;
    uint64_t max_time_ms;
    uint32_t max_ratio;

    /* Character and block device nodes. Default allowed: images carry /dev nodes (a Debian
     * root has dev/null, dev/zero, ...), and they are harmless where thinimg handles them:
     * the layer device is mounted nodev on the host, and the guest owns its own devices.
     * When false, a device entry rejects the layer (rule: device). FIFOs are always allowed
     * (any user may create one; extraction never opens them). */
    bool allow_devices;

    /* Names (entries, link targets) with control bytes 0x01-0x1f or 0x7f. Default rejected:
     * no real image needs them, and they corrupt logs, error messages and tools that split
     * on newlines. */
    bool allow_control_chars;

    /* chown entries to their uid/gid. True by default; `thinimg extract` turns it off when
     * not run as root (like GNU tar's --no-same-owner). */
    bool preserve_owner;

    /* Comma-separated xattr allowlist (see ARCHIVE_DEFAULT_XATTR_ALLOW); "" keeps none. The
     * string is not copied: it must outlive the policy's use. */
    const char *xattr_allow;
};

/* The defaults above. */
struct archive_policy archive_policy_default(void);

/* ---- limits as options ------------------------------------------------------------------- */

enum archive_limit_unit {
    ARCHIVE_LIMIT_BYTES, /* a size: N, or N with a K, M, G or T suffix (binary) */
    ARCHIVE_LIMIT_COUNT, /* a plain number */
    ARCHIVE_LIMIT_MS,    /* a duration: N or Ns seconds, Nms milliseconds */
};

/* One limit of struct archive_policy, as an option: its name, where it lives in the policy and
 * its valid range. A value is valid when min <= v <= max, or v == 0 when zero_is_none. */
struct archive_limit {
    const char *option; /* without the dashes: "max-path" */
    enum archive_limit_unit unit;
    const char *units;   /* what the number counts, for messages: "bytes", "entries", ... */
    size_t offset, size; /* the policy field (uint32_t or uint64_t) */
    uint64_t min, max;
    bool zero_is_none;
};

extern const struct archive_limit archive_limits[];
extern const size_t archive_limits_count;

/* Parse value for the limit named option ("max-path") into p. Returns 0, -ENOENT for an
 * unknown option, or -EINVAL with why set ("--max-path: 0 is out of range: 1 to 4095"): not
 * a number (a sign, blanks, an unknown suffix), too large for the unit, or out of the range. */
int archive_limit_set(struct archive_policy *p, const char *option, const char *value, char *why,
                      size_t why_len);

/* 0 when every limit of p is in its range, else -EINVAL with why naming the first one that is
 * not. scan and apply refuse a policy that fails this. */
int archive_policy_check(const struct archive_policy *p, char *why, size_t why_len);

/* True when the xattr name is on the policy's allowlist. */
bool archive_policy_xattr_allowed(const struct archive_policy *p, const char *name);
