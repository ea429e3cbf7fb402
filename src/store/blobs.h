/*
 * blobs.h: the blob store's records: one place for the rows of the `blobs`, `blob_sources`
 * and `downloads` tables (schema_blobs.c). Every other module asks here: the fetch machine
 * records what it fetched and finds what it fetched before, the unpack machine finds a blob's
 * file, gc lists the blobs no image uses, the CLI and the daemon read digests and totals.
 * None of them writes SQL on these tables.
 *
 * The files themselves, and the integrity rule a blob file follows before it is used (its
 * seal, verification, quarantine), are store/blobfile.h: blobs_verify() below is that rule
 * applied to a stored blob.
 *
 * Threads and transactions: each function takes the connection lock for its statements
 * (store/db.h), so it may run inside an open transaction (a checkpoint's commit callback) and
 * is then part of it; the functions that say "a transaction of its own" commit by themselves.
 * Errors: negative errnos as in store/db.h.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/blobfile.h"
#include "store/db.h"

/* ---- blobs: one row per digest held locally ------------------------------------------------ */

/* 1 when a row for digest exists, 0 when not, negative on error. */
int blobs_exists(struct db *db, const char *digest);

/* The file of a stored blob: 0 with *path (malloc'd: blob_dir/sha256/<hex>, named by the
 * digest, never by the row's text), -ENOENT when the store has no row for digest. */
int blobs_stored_path(struct db *db, const char *blob_dir, const char *digest, char **path);

/* Insert or update the row of a blob just written and hashed: its size, the media type that
 * validation detected, its path (relative: "sha256/<hex>") and its seal (NULL: none, the file
 * is hashed before its next use). now: the time of the record, in ms. */
int blobs_record(struct db *db, const char *digest, uint64_t size, const char *media_type,
                 const struct blob_seal *seal, int64_t now);

/* The blob was used (found fetched already) at now. */
int blobs_touch(struct db *db, const char *digest, int64_t now);

/* How many blobs are stored and their bytes. */
int blobs_totals(struct db *db, int64_t *count, int64_t *bytes);

/* Apply the integrity rule (store/blobfile.h) to a stored blob's file before it is used: 1
 * usable; 0 not (missing, or its bytes do not match: quarantined, why says what), negative on
 * error. */
int blobs_verify(struct db *db, const char *blob_dir, const char *digest, const char *path,
                 char *why, size_t why_len);

/* ---- blob_sources: what a location resolved to when it was last fetched -------------------- */

struct blob_source {
    char *etag;    /* NULL when the source gave none */
    uint64_t size; /* the location's size as listed */
    char *digest;  /* the blob it resolved to */
    char *path;    /* blobs.path of that blob */
    uint64_t blob_size;
    char *media_type;
};
void blob_source_free(struct blob_source *s);

/* The location's record joined with its blob: 1 found (*out filled, blob_source_free() it),
 * 0 not, negative on error. */
int blobs_source_get(struct db *db, const char *location, struct blob_source *out);

/* Record what location resolved to (insert or update). */
int blobs_source_record(struct db *db, const char *location, const char *etag, uint64_t size,
                        const char *digest, int64_t now);

/* The digest a listed location (its ETag and size as listed now) is already stored as, or
 * NULL (not known, changed since, or an error). malloc'd. */
char *blobs_known_digest(struct db *db, const char *location, const char *etag, uint64_t size);

/* ---- blob_identities: what a source calls an object -> the blob (schema_identity.c) -------- */

/* Record that the object with this identity (source.h) has the bytes of digest; location is
 * where it was seen. Insert or update; part of the open transaction, if any. */
int blobs_identity_record(struct db *db, const char *identity, uint64_t size, const char *digest,
                          const char *location, int64_t now);

/* The blob an identity was recorded against, joined with its blobs row: 1 found (*out filled:
 * digest, path, blob_size, media_type, and size = the identity's size; blob_source_free() it),
 * 0 not, negative on error. */
int blobs_identity_get(struct db *db, const char *identity, struct blob_source *out);

/* ---- downloads: the resume hints of partial downloads -------------------------------------- */

struct blob_download {
    char *etag;
    char *tmp_path;
    uint64_t bytes_done; /* bytes on disk for sure (after an fdatasync) */
    char *boot_id;       /* the boot the temp file was last written in (NULL: unknown) */
};
void blob_download_free(struct blob_download *d);

/* 1 found (*out filled, blob_download_free() it), 0 not, negative on error. */
int blobs_download_get(struct db *db, const char *location, struct blob_download *out);

/* Record (insert or update) the resume hint of location: a short transaction of its own (a
 * hint is not FSM state: a lost update only means fetching a little more again). The row is
 * stamped with the current boot id (schema_identity.c). */
int blobs_download_put(struct db *db, const char *location, const char *etag, const char *tmp_path,
                       uint64_t bytes_done, uint64_t size);

/* The temp file of location is not a prefix of the object (parallel ranges, preallocated):
 * its length proves nothing, so the row loses its boot id and a one-GET resume trusts only
 * bytes_done. */
int blobs_download_not_prefix(struct db *db, const char *location);

/* Delete the resume hint of location (part of the open transaction, if any). */
int blobs_download_delete(struct db *db, const char *location);

/* ---- gc ------------------------------------------------------------------------------------ */

/* Every resume hint: fn(location, tmp_path, ud) per row, under the connection lock; fn returns
 * non-zero to stop. */
int blobs_download_list(struct db *db,
                        int (*fn)(const char *location, const char *tmp_path, void *ud), void *ud);

/* Every blob no image uses (no image layer names its digest, no layer that is not ready yet
 * needs it, and it is no registry image's manifest or config: store/oci.h): fn(digest, path column,
 * size, ud) per blob; fn returns non-zero to stop. */
int blobs_list_unreferenced(struct db *db,
                            int (*fn)(const char *digest, const char *path, uint64_t size,
                                      void *ud),
                            void *ud);

/* Delete the row of digest (its file is the caller's: gc unlinks it first). */
int blobs_delete(struct db *db, const char *digest);
