/*
 * imageconfig.c: a registry image's manifest and config as blobs, and its run settings with
 * the image. See imageconfig.h.
 */
#include "pipeline/imageconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/blobs.h"
#include "store/oci.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/timeutil.h"

/* The media type an image config is recorded under in the blobs table. */
#define IMAGECONFIG_CONFIG_MEDIA_TYPE "application/vnd.oci.image.config.v1+json"

void imageconfig_free(struct imageconfig *c)
{
    free(c->manifest_media_type);
    free(c->platform);
    free(c->run_config);
    *c = (struct imageconfig){0};
}

/* Bytes already checked against digest (by the source) into the store, sealed. */
static int store_bytes(struct db *db, const char *blob_dir, const char *tmp_dir, const char *digest,
                       const void *data, size_t len, struct blob_seal *seal, struct err *e)
{
    uint8_t h[SHA256_LEN];
    char got[DIGEST_STR_LEN + 1];
    int r = sha256_buf(data, len, h);
    if (r < 0)
        return err_set(e, r, "cannot hash %s", digest);
    digest_format(h, got);
    if (strcmp(got, digest))
        return err_set(e, -EBADMSG, "%s: the bytes kept are %s", digest, got);
    _cleanup_free_ char *final = blobfile_path(blob_dir, digest);
    _cleanup_free_ char *dir = final ? strdup(final) : NULL;
    if (!final || !dir)
        return -ENOMEM;
    *strrchr(dir, '/') = '\0';
    if ((r = mkdir_p(dir, 0700)) < 0 || (r = mkdir_p(tmp_dir, 0700)) < 0)
        return err_set(e, r, "cannot create %s: %s", dir, strerror(-r));
    int have = blobfile_verify(db, blob_dir, digest, len, final, seal, NULL, 0);
    if (have == 1)
        return 0;
    _cleanup_free_ char *tmpl = NULL;
    if (asprintf(&tmpl, "%s/meta-XXXXXX", tmp_dir) < 0)
        return -ENOMEM;
    _cleanup_close_ int fd = mkostemp(tmpl, O_CLOEXEC);
    if (fd < 0)
        return err_set(e, neg_errno(), "cannot create a temp file in %s: %m", tmp_dir);
    r = write_all(fd, data, len);
    if (r == 0 && fsync(fd) < 0)
        r = neg_errno();
    if (r == 0 && rename(tmpl, final) < 0)
        r = neg_errno();
    if (r < 0) {
        unlink(tmpl);
        return err_set(e, r, "cannot store %s in %s: %s", digest, blob_dir, strerror(-r));
    }
    if ((r = fsync_parent_dir(final)) < 0 || (r = blobfile_seal_fd(fd, seal)) < 0)
        return err_set(e, r, "cannot store %s: %s", final, strerror(-r));
    return 0;
}

int imageconfig_store_files(struct db *db, const char *blob_dir, const char *tmp_dir,
                            const struct image_ref *ref, struct imageconfig *c, struct err *e)
{
    *c = (struct imageconfig){0};
    if (ref->kind != REF_REGISTRY || !ref->manifest || !ref->config || !ref->manifest_digest ||
        !ref->config_digest || !ref->run_config)
        return 0;
    snprintf(c->manifest_digest, sizeof(c->manifest_digest), "%s", ref->manifest_digest);
    snprintf(c->config_digest, sizeof(c->config_digest), "%s", ref->config_digest);
    c->manifest_size = ref->manifest_len;
    c->config_size = ref->config_len;
    c->manifest_media_type = strdup(ref->manifest_media_type ? ref->manifest_media_type : "");
    c->platform = ref->platform ? strdup(ref->platform) : NULL;
    c->run_config = strdup(ref->run_config);
    if (!c->manifest_media_type || (ref->platform && !c->platform) || !c->run_config) {
        imageconfig_free(c);
        return -ENOMEM;
    }
    int r = store_bytes(db, blob_dir, tmp_dir, c->manifest_digest, ref->manifest, ref->manifest_len,
                        &c->manifest_seal, e);
    if (r == 0)
        r = store_bytes(db, blob_dir, tmp_dir, c->config_digest, ref->config, ref->config_len,
                        &c->config_seal, e);
    if (r < 0) {
        imageconfig_free(c);
        return r;
    }
    return 1;
}

int imageconfig_record(struct db *db, int64_t image_id, const struct imageconfig *c)
{
    int64_t now = now_ms();
    int r = blobs_record(db, c->manifest_digest, c->manifest_size, c->manifest_media_type,
                         &c->manifest_seal, now);
    if (r == 0)
        r = blobs_record(db, c->config_digest, c->config_size, IMAGECONFIG_CONFIG_MEDIA_TYPE,
                         &c->config_seal, now);
    struct oci_image_config row = {.manifest_digest = (char *)c->manifest_digest,
                                   .config_digest = (char *)c->config_digest,
                                   .platform = c->platform,
                                   .config = c->run_config};
    if (r == 0)
        r = oci_image_config_set(db, image_id, &row);
    return r;
}
