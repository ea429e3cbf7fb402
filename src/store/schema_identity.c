/*
 * schema_identity.c: the tables that let thinimg download each byte once (component
 * "blob_identity", migrated after "blobs", whose tables it references and extends).
 *
 * blob_identities  what a source calls an object (source.h: `identity`, e.g. S3's ETag and
 *                  size at one server, a local file's device, inode, size and mtime) -> the
 *                  blob its bytes were hashed to. Written by the fetch machine's record step
 *                  for every verified download; read before a download, so that another
 *                  location with the same identity reuses the blob without a GET. location is
 *                  where the identity was first seen (for `thinimg` diagnostics only).
 * downloads.boot_id  the kernel boot a partial download was last written in: in the same
 *                  boot every byte of the temp file is in the page cache even after the writer
 *                  died (kill -9), so a resume takes the file's length; after a reboot only
 *                  bytes_done (the last fdatasync'ed length) is trusted.
 *
 * A separate component, so its versions never collide with the "blobs" list's.
 */
#include <stddef.h>

#include "store/schema.h"

const struct db_migration store_identity_migrations[] = {
    {1, "blob_identities, downloads.boot_id",
     "CREATE TABLE blob_identities("
     "  identity TEXT PRIMARY KEY CHECK(length(identity) BETWEEN 1 AND 2048),"
     "  size INTEGER NOT NULL CHECK(size >= 0),"
     "  digest TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,"
     "  location TEXT NOT NULL,"
     "  seen_at_ms INTEGER NOT NULL);"
     "CREATE INDEX blob_identities_digest ON blob_identities(digest);"
     "ALTER TABLE downloads ADD COLUMN boot_id TEXT;"},
};
const size_t store_identity_migrations_n =
    sizeof(store_identity_migrations) / sizeof(store_identity_migrations[0]);
