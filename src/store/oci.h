/*
 * oci.h: the rows of the "oci" component (schema_oci.c): layer diff ids and the manifest and
 * config of registry images. Like blobs.h, each function takes the connection lock for its
 * statements and so may run inside an open transaction (a checkpoint's commit callback).
 *
 * Ownership: strings of a struct oci_image_config returned by oci_image_config_get() are the
 * caller's: oci_image_config_free() them.
 */
#pragma once

#include <stdint.h>

#include "store/db.h"
#include "util/hash.h"

/* Record the diff id of the stored blob digest (insert or replace: a diff id is a function of
 * the bytes, so a second record only repeats it). */
int oci_diff_id_set(struct db *db, const char *digest, const char *diff_id);
/* The diff id of a stored blob: 1 with out filled, 0 when none is recorded. */
int oci_diff_id_get(struct db *db, const char *digest, char out[DIGEST_STR_LEN + 1]);

struct oci_image_config {
    char *manifest_digest; /* "sha256:..." of the manifest blob */
    char *config_digest;   /* "sha256:..." of the config blob */
    char *platform;        /* "linux/amd64" when chosen from an index, else NULL */
    char *config;          /* JSON object: entrypoint, cmd, env, working_dir, user */
};
void oci_image_config_free(struct oci_image_config *c);

/* Record (insert or replace) the config of image id. */
int oci_image_config_set(struct db *db, int64_t image_id, const struct oci_image_config *c);
/* 1 with *out filled, 0 when the image has none (not from a registry). */
int oci_image_config_get(struct db *db, int64_t image_id, struct oci_image_config *out);
