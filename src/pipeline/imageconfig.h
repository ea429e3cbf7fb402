/*
 * imageconfig.h: what process-image keeps of a registry image besides its layers: the
 * manifest and config, stored as blobs (the blob store, by digest, sealed like a fetched
 * blob), and the config's run settings recorded with the image (store/oci.h image_configs:
 * entrypoint, cmd, env, working dir, user), which list-images --json and the API show.
 *
 * The bytes are written outside any transaction (imageconfig_store_files); the rows go into
 * the resolve step's checkpoint (imageconfig_record), so the image, its alias and its config
 * are committed together.
 */
#pragma once

#include <stdint.h>

#include "source/ref.h"
#include "store/blobfile.h"
#include "store/db.h"
#include "util/err.h"
#include "util/hash.h"

struct imageconfig {
    char manifest_digest[DIGEST_STR_LEN + 1], config_digest[DIGEST_STR_LEN + 1];
    char *manifest_media_type;
    uint64_t manifest_size, config_size;
    struct blob_seal manifest_seal, config_seal;
    char *platform;
    char *run_config; /* JSON */
};
void imageconfig_free(struct imageconfig *c);

/* Write ref's manifest and config (a registry image's; 0 and nothing done for other refs) into
 * blob_dir by digest (tmp_dir: same file system), fill *c for imageconfig_record. A file that
 * is there already and passes the integrity rule is kept. 1 stored, 0 nothing to store. */
int imageconfig_store_files(struct db *db, const char *blob_dir, const char *tmp_dir,
                            const struct image_ref *ref, struct imageconfig *c, struct err *e);

/* The blobs rows of both and the image_configs row of image_id (inside the caller's
 * transaction). */
int imageconfig_record(struct db *db, int64_t image_id, const struct imageconfig *c);
