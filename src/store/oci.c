/*
 * oci.c: layer diff ids and registry image configs (schema_oci.c). See oci.h.
 */
#include "store/oci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/stmt.h"

int oci_diff_id_set(struct db *db, const char *digest, const char *diff_id)
{
    int r = db_run(db, "INSERT OR REPLACE INTO layer_diff_ids(digest, diff_id) VALUES(?1, ?2)",
                   DB_TEXT(digest), DB_TEXT(diff_id));
    return r < 0 ? r : 0;
}

static int read_diff_id(sqlite3_stmt *st, void *ud)
{
    const char *d = (const char *)sqlite3_column_text(st, 0);
    snprintf(ud, DIGEST_STR_LEN + 1, "%s", d ? d : "");
    return 0;
}

int oci_diff_id_get(struct db *db, const char *digest, char out[DIGEST_STR_LEN + 1])
{
    out[0] = '\0';
    int r = db_query_one(db, "SELECT diff_id FROM layer_diff_ids WHERE digest = ?1", read_diff_id,
                         out, DB_TEXT(digest));
    return r == 1 && digest_valid(out) ? 1 : r < 0 ? r : 0;
}

void oci_image_config_free(struct oci_image_config *c)
{
    free(c->manifest_digest);
    free(c->config_digest);
    free(c->platform);
    free(c->config);
    *c = (struct oci_image_config){0};
}

int oci_image_config_set(struct db *db, int64_t image_id, const struct oci_image_config *c)
{
    int r = db_run(db,
                   "INSERT OR REPLACE INTO image_configs(image_id, manifest_digest, "
                   "config_digest, platform, config) VALUES(?1, ?2, ?3, ?4, ?5)",
                   DB_INT(image_id), DB_TEXT(c->manifest_digest), DB_TEXT(c->config_digest),
                   DB_TEXT(c->platform), DB_TEXT(c->config));
    return r < 0 ? r : 0;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? strdup(s) : NULL;
}

static int read_config(sqlite3_stmt *st, void *ud)
{
    struct oci_image_config *c = ud;
    c->manifest_digest = col_dup(st, 0);
    c->config_digest = col_dup(st, 1);
    c->platform = col_dup(st, 2);
    c->config = col_dup(st, 3);
    return c->manifest_digest && c->config_digest && c->config ? 0 : -ENOMEM;
}

int oci_image_config_get(struct db *db, int64_t image_id, struct oci_image_config *out)
{
    *out = (struct oci_image_config){0};
    int r = db_query_one(db,
                         "SELECT manifest_digest, config_digest, platform, config FROM "
                         "image_configs WHERE image_id = ?1",
                         read_config, out, DB_INT(image_id));
    if (r != 1)
        oci_image_config_free(out);
    return r;
}
