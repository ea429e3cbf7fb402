/*
 * schema_blobs.c: tables for fetched blobs (component "blobs").
 *
 * blobs         one row per digest held locally (content-addressed: the file name is the hex
 *               digest, never a key). media_type is what validation detected.
 * blob_sources  what a location (s3://bucket/key, dir:/path/key, https://...) resolved to the
 *               last time it was fetched: its ETag, size and digest. Two locations with the same
 *               bytes point at the same blob.
 * downloads     partial downloads for resume: the temp file, the ETag it was started against
 *               and how many bytes it holds. Deleted when the blob is recorded.
 * blob_quarantine  blob files found not to match their digest (store/blobfile.h): where the
 *               file went and why. Kept as a record; the blob is fetched again.
 *
 * blobs.path is relative to the blob directory ("sha256/<hex>", store/blobfile.h); the
 * file_* columns are the blob file's seal (inode, mtime and ctime in ns) recorded when its
 * bytes were hashed and matched; NULL means "hash it before use".
 */
#include <stddef.h>

#include "store/schema.h"

const struct db_migration store_blobs_migrations[] = {
    {1, "blobs, blob_sources, downloads",
     "CREATE TABLE blobs("
     "  digest TEXT PRIMARY KEY CHECK(length(digest) = 71 AND digest LIKE 'sha256:%'),"
     "  size INTEGER NOT NULL CHECK(size >= 0),"
     "  media_type TEXT NOT NULL,"
     "  path TEXT NOT NULL,"
     "  created_at_ms INTEGER NOT NULL,"
     "  last_used_ms INTEGER NOT NULL);"
     "CREATE TABLE blob_sources("
     "  location TEXT PRIMARY KEY,"
     "  etag TEXT,"
     "  size INTEGER,"
     "  digest TEXT REFERENCES blobs(digest) ON DELETE SET NULL,"
     "  seen_at_ms INTEGER NOT NULL);"
     "CREATE INDEX blob_sources_digest ON blob_sources(digest);"
     "CREATE TABLE downloads("
     "  location TEXT PRIMARY KEY,"
     "  etag TEXT,"
     "  tmp_path TEXT NOT NULL,"
     "  bytes_done INTEGER NOT NULL DEFAULT 0,"
     "  size INTEGER,"
     "  started_at_ms INTEGER NOT NULL,"
     "  updated_at_ms INTEGER NOT NULL);"},
    /* Version 1 stored the path as the process saw it: with a relative --state-dir it was
     * relative to that process's working directory, useless to any other. The file name is
     * the digest, so the relative path is derived, never guessed. */
    {2, "blob paths relative to the blob directory, blob seals, blob_quarantine",
     "UPDATE blobs SET path = 'sha256/' || substr(digest, 8);"
     "ALTER TABLE blobs ADD COLUMN file_ino INTEGER;"
     "ALTER TABLE blobs ADD COLUMN file_mtime_ns INTEGER;"
     "ALTER TABLE blobs ADD COLUMN file_ctime_ns INTEGER;"
     "ALTER TABLE blobs ADD COLUMN verified_at_ms INTEGER;"
     "CREATE TABLE blob_quarantine("
     "  id INTEGER PRIMARY KEY,"
     "  digest TEXT NOT NULL,"
     "  moved_to TEXT,"
     "  reason TEXT NOT NULL,"
     "  at_ms INTEGER NOT NULL);"},
    /* The blob totals of `status` and /metrics read this instead of summing every row. */
    {3, "row_counts of blobs, kept by triggers",
     "CREATE TABLE IF NOT EXISTS row_counts("
     "  tbl TEXT NOT NULL,"
     "  state TEXT NOT NULL,"
     "  rows INTEGER NOT NULL,"
     "  bytes INTEGER NOT NULL,"
     "  PRIMARY KEY(tbl, state)) WITHOUT ROWID;"
     "CREATE TRIGGER blobs_count_insert AFTER INSERT ON blobs BEGIN "
     "  INSERT INTO row_counts(tbl, state, rows, bytes) VALUES('blobs', '', 1, NEW.size)"
     "   ON CONFLICT(tbl, state) DO UPDATE SET rows = rows + 1, bytes = bytes + excluded.bytes;"
     "END;"
     "CREATE TRIGGER blobs_count_delete AFTER DELETE ON blobs BEGIN "
     "  UPDATE row_counts SET rows = rows - 1, bytes = bytes - OLD.size"
     "   WHERE tbl = 'blobs' AND state = '';"
     "END;"
     "CREATE TRIGGER blobs_count_update AFTER UPDATE OF size ON blobs BEGIN "
     "  UPDATE row_counts SET rows = rows - 1, bytes = bytes - OLD.size"
     "   WHERE tbl = 'blobs' AND state = '';"
     "  INSERT INTO row_counts(tbl, state, rows, bytes) VALUES('blobs', '', 1, NEW.size)"
     "   ON CONFLICT(tbl, state) DO UPDATE SET rows = rows + 1, bytes = bytes + excluded.bytes;"
     "END;"
     "INSERT INTO row_counts SELECT 'blobs', '', count(*), coalesce(sum(size), 0) FROM blobs"
     "  WHERE EXISTS (SELECT 1 FROM blobs);"},
};
const size_t store_blobs_migrations_n =
    sizeof(store_blobs_migrations) / sizeof(store_blobs_migrations[0]);
