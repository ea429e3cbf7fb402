/*
 * blobfile.h: the files of the blob store (STATE/blobs/sha256/<hex>) and the integrity rule
 * they follow.
 *
 * The rule: a blob is used (applied, split, reused) only after its bytes were hashed and
 * matched to its digest, and only while nothing can have changed them since. Hashing a
 * multi-GiB blob on every use is too slow, so the proof is recorded instead: when a blob file
 * is written (its bytes hashed on the way in), it is made read-only (0400) and its identity
 * (inode, size, mtime and ctime in nanoseconds) is recorded in its `blobs` row: its *seal*.
 * Any write to the file, in place or by replacing it, changes the ctime (a replacement also
 * the inode), and ctime cannot be set from user space, so a file whose stat still equals its
 * seal holds the bytes that were hashed. A file without a seal (written by an older thinimg,
 * or not recorded yet) or whose stat differs is hashed again before use: a match seals it
 * anew, a mismatch moves it to STATE/blobs/quarantine/ and records why (`blob_quarantine`
 * rows, and a log line), and the caller fetches the blob again.
 *
 * Paths: the `blobs.path` column holds the path relative to the blob directory
 * ("sha256/<hex>"), so moving or naming the state directory differently (a relative
 * --state-dir) never strands a file; blobfile_path() derives the full path from the digest.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "store/db.h"

/* A blob file is read-only for its owner: nothing of thinimg writes to it after it is sealed. */
#define BLOBFILE_MODE              0400
#define BLOBFILE_SUBDIR            "sha256"
#define BLOBFILE_QUARANTINE_SUBDIR "quarantine"
/* The quarantine keeps evidence, not a copy of every bad file ever found: a store tampered
 * with over and over (or a disk that keeps corrupting one blob) must not fill the disk with
 * copies. After each move the newest files are kept while they number at most KEEP_FILES and
 * total at most KEEP_BYTES (the file just moved is always kept, whatever its size); older ones
 * are deleted and their blob_quarantine rows say so (moved_to NULL, as for a file that could
 * not be moved). */
#define BLOBFILE_QUARANTINE_KEEP_FILES 8
#define BLOBFILE_QUARANTINE_KEEP_BYTES (2ULL << 30)

/* What a blob file looked like right after its bytes were hashed and matched. */
struct blob_seal {
    uint64_t size;
    uint64_t ino;
    int64_t mtime_ns;
    int64_t ctime_ns;
};

/* "sha256/<hex>" for a digest (the value of blobs.path); NULL on ENOMEM or a bad digest. */
char *blobfile_relpath(const char *digest);
/* blob_dir/sha256/<hex>; NULL on ENOMEM or a bad digest. */
char *blobfile_path(const char *blob_dir, const char *digest);

/* Make the open file fd read-only (BLOBFILE_MODE) and read its seal. Call it after the bytes
 * were hashed and matched, and after the final rename (a rename may change the ctime). */
int blobfile_seal_fd(int fd, struct blob_seal *s);

/* Does the file's stat equal the seal? */
bool blobfile_seal_matches(const struct stat *st, const struct blob_seal *s);

/* The seal recorded for digest: 1 found, 0 no row or no seal, negative on error. The size is
 * filled from the row even when there is no seal (0 when there is no row). */
int blobfile_seal_load(struct db *db, const char *digest, struct blob_seal *s);
/* Record the seal in the digest's row (a short transaction of its own, or part of the open
 * one). No row: nothing happens (the fetch's record step writes the row with the seal). */
int blobfile_seal_store(struct db *db, const char *digest, const struct blob_seal *s);

/* Move path to blob_dir/quarantine/<hex>.<ms> (deleted when that fails), drop the seal of
 * the digest's row and record a blob_quarantine row with why. Logged as a warning. Then the
 * quarantine is trimmed to the bounds above (oldest first). */
int blobfile_quarantine(struct db *db, const char *blob_dir, const char *digest, const char *path,
                        const char *why);

/*
 * Verify the file at path (normally blobfile_path(blob_dir, digest)) before using it:
 *   1   usable: its stat equals the recorded seal, or it was hashed now and matched (and is
 *       sealed now, so the next use costs one stat);
 *   0   not usable: missing, or its bytes do not match (then quarantined; *why says so);
 *   <0  error reading it (nothing moved).
 * size is the expected size (0: take it from the row). why may be NULL.
 */
int blobfile_verify(struct db *db, const char *blob_dir, const char *digest, uint64_t size,
                    const char *path, struct blob_seal *seal_out, char *why, size_t why_len);
