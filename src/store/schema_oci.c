/*
 * schema_oci.c: what OCI images say about their layers and themselves (component "oci").
 *
 * layer_diff_ids  a stored layer blob's diff id: the sha256 of its uncompressed tar stream
 *                 (equal to the digest for an uncompressed layer), computed once when the blob
 *                 is validated. Chain ids are made of diff ids, so the same layer shares its
 *                 devices whether it came gzip'd from a registry or as a plain tar from S3;
 *                 a registry's config claims are checked against it without decompressing the
 *                 blob again. Goes with its blob.
 * image_configs   a registry image's manifest and config blobs (kept in the blob store; gc
 *                 keeps them while the image exists), the platform it was chosen for, and the
 *                 run settings of its config (entrypoint, cmd, env, working dir, user) as JSON:
 *                 what a VM launcher needs. Goes with its image.
 *
 * Its own component, migrated after "images" (it references both blobs and images).
 */
#include <stddef.h>

#include "store/schema.h"

const struct db_migration store_oci_migrations[] = {
    {1, "layer_diff_ids, image_configs",
     "CREATE TABLE layer_diff_ids("
     "  digest TEXT PRIMARY KEY REFERENCES blobs(digest) ON DELETE CASCADE,"
     "  diff_id TEXT NOT NULL CHECK(length(diff_id) = 71 AND diff_id LIKE 'sha256:%'));"
     "CREATE TABLE image_configs("
     "  image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,"
     "  manifest_digest TEXT NOT NULL,"
     "  config_digest TEXT NOT NULL,"
     "  platform TEXT,"
     "  config TEXT NOT NULL);"
     "CREATE INDEX image_configs_manifest ON image_configs(manifest_digest);"
     "CREATE INDEX image_configs_config ON image_configs(config_digest);"},
};
const size_t store_oci_migrations_n =
    sizeof(store_oci_migrations) / sizeof(store_oci_migrations[0]);
