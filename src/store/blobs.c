/*
 * blobs.c: the rows of the blob store (blobs, blob_sources, downloads). See blobs.h.
 */
#include "store/blobs.h"

#include <errno.h>
#include <stdlib.h>

#include "store/stmt.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/timeutil.h"

/* ---- blobs --------------------------------------------------------------------------------- */

int blobs_exists(struct db *db, const char *digest)
{
    return db_query_one(db, "SELECT 1 FROM blobs WHERE digest = ?1", NULL, NULL, DB_TEXT(digest));
}

int blobs_stored_path(struct db *db, const char *blob_dir, const char *digest, char **path)
{
    *path = NULL;
    int r = blobs_exists(db, digest);
    if (r <= 0)
        return r < 0 ? r : -ENOENT;
    /* The file name is the digest's (blobs.path is relative to the blob directory). */
    *path = blobfile_path(blob_dir, digest);
    return *path ? 0 : -ENOMEM;
}

int blobs_record(struct db *db, const char *digest, uint64_t size, const char *media_type,
                 const struct blob_seal *seal, int64_t now)
{
    _cleanup_free_ char *rel = blobfile_relpath(digest);
    if (!rel)
        return -ENOMEM;
    int r =
        db_run(db,
               "INSERT INTO blobs(digest, size, media_type, path, created_at_ms, last_used_ms, "
               "file_ino, file_mtime_ns, file_ctime_ns, verified_at_ms) VALUES(?1, ?2, ?3, ?4, ?5, "
               "?5, ?6, ?7, ?8, ?5) ON CONFLICT(digest) DO UPDATE SET media_type = "
               "excluded.media_type, path = excluded.path, last_used_ms = excluded.last_used_ms, "
               "file_ino = excluded.file_ino, file_mtime_ns = excluded.file_mtime_ns, "
               "file_ctime_ns = excluded.file_ctime_ns, verified_at_ms = excluded.verified_at_ms",
               DB_TEXT(digest), DB_INT(size), DB_TEXT(media_type), DB_TEXT(rel), DB_INT(now),
               seal ? DB_INT(seal->ino) : DB_NULL(), seal ? DB_INT(seal->mtime_ns) : DB_NULL(),
               seal ? DB_INT(seal->ctime_ns) : DB_NULL());
    return r < 0 ? r : 0;
}

int blobs_touch(struct db *db, const char *digest, int64_t now)
{
    int r = db_run(db, "UPDATE blobs SET last_used_ms = ?2 WHERE digest = ?1", DB_TEXT(digest),
                   DB_INT(now));
    return r < 0 ? r : 0;
}

struct totals {
    int64_t *count, *bytes;
};

static int totals_read(sqlite3_stmt *st, void *ud)
{
    struct totals *t = ud;
    *t->count = sqlite3_column_int64(st, 0);
    *t->bytes = sqlite3_column_int64(st, 1);
    return 0;
}

int blobs_totals(struct db *db, int64_t *count, int64_t *bytes)
{
    struct totals t = {count, bytes};
    *count = *bytes = 0;
    /* Kept by triggers (store/schema_blobs.c, migration 3). */
    int r = db_query_one(db,
                         "SELECT coalesce(sum(rows), 0), coalesce(sum(bytes), 0) FROM row_counts"
                         " WHERE tbl = 'blobs'",
                         totals_read, &t);
    return r < 0 ? r : 0;
}

int blobs_verify(struct db *db, const char *blob_dir, const char *digest, const char *path,
                 char *why, size_t why_len)
{
    return blobfile_verify(db, blob_dir, digest, 0, path, NULL, why, why_len);
}

/* ---- blob_sources -------------------------------------------------------------------------- */

void blob_source_free(struct blob_source *s)
{
    free(s->etag);
    free(s->digest);
    free(s->path);
    free(s->media_type);
    *s = (struct blob_source){0};
}

static int source_read(sqlite3_stmt *st, void *ud)
{
    struct blob_source *k = ud;
    k->etag = db_col_strdup(st, 0);
    k->size = (uint64_t)sqlite3_column_int64(st, 1);
    k->digest = db_col_strdup(st, 2);
    k->path = db_col_strdup(st, 3);
    k->blob_size = (uint64_t)sqlite3_column_int64(st, 4);
    k->media_type = db_col_strdup(st, 5);
    return k->digest && k->path && k->media_type ? 0 : -ENOMEM;
}

int blobs_source_get(struct db *db, const char *location, struct blob_source *out)
{
    *out = (struct blob_source){0};
    int r = db_query_one(db,
                         "SELECT s.etag, s.size, s.digest, b.path, b.size, b.media_type FROM "
                         "blob_sources s JOIN blobs b ON b.digest = s.digest WHERE "
                         "s.location = ?1",
                         source_read, out, DB_TEXT(location));
    if (r <= 0)
        blob_source_free(out);
    return r;
}

int blobs_source_record(struct db *db, const char *location, const char *etag, uint64_t size,
                        const char *digest, int64_t now)
{
    int r = db_run(db,
                   "INSERT INTO blob_sources(location, etag, size, digest, seen_at_ms) "
                   "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(location) DO UPDATE SET etag = "
                   "excluded.etag, size = excluded.size, digest = excluded.digest, seen_at_ms "
                   "= excluded.seen_at_ms",
                   DB_TEXT(location), DB_TEXT(etag), DB_INT(size), DB_TEXT(digest), DB_INT(now));
    return r < 0 ? r : 0;
}

static int digest_read(sqlite3_stmt *st, void *ud)
{
    *(char **)ud = db_col_strdup(st, 0);
    return 0;
}

char *blobs_known_digest(struct db *db, const char *location, const char *etag, uint64_t size)
{
    if (!db)
        return NULL;
    char *d = NULL;
    db_query_one(db,
                 "SELECT s.digest FROM blob_sources s JOIN blobs b ON b.digest = s.digest "
                 "WHERE s.location = ?1 AND s.etag IS ?2 AND s.size = ?3",
                 digest_read, &d, DB_TEXT(location), DB_TEXT(etag), DB_INT(size));
    return d;
}

/* ---- blob_identities ---------------------------------------------------------------------- */

int blobs_identity_record(struct db *db, const char *identity, uint64_t size, const char *digest,
                          const char *location, int64_t now)
{
    int r =
        db_run(db,
               "INSERT INTO blob_identities(identity, size, digest, location, seen_at_ms) "
               "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(identity) DO UPDATE SET size = "
               "excluded.size, digest = excluded.digest, seen_at_ms = excluded.seen_at_ms",
               DB_TEXT(identity), DB_INT(size), DB_TEXT(digest), DB_TEXT(location), DB_INT(now));
    return r < 0 ? r : 0;
}

int blobs_identity_get(struct db *db, const char *identity, struct blob_source *out)
{
    *out = (struct blob_source){0};
    int r = db_query_one(db,
                         "SELECT NULL, i.size, i.digest, b.path, b.size, b.media_type FROM "
                         "blob_identities i JOIN blobs b ON b.digest = i.digest WHERE "
                         "i.identity = ?1",
                         source_read, out, DB_TEXT(identity));
    if (r <= 0)
        blob_source_free(out);
    return r;
}

/* ---- downloads ----------------------------------------------------------------------------- */

void blob_download_free(struct blob_download *d)
{
    free(d->etag);
    free(d->tmp_path);
    free(d->boot_id);
    *d = (struct blob_download){0};
}

static int download_read(sqlite3_stmt *st, void *ud)
{
    struct blob_download *d = ud;
    d->etag = db_col_strdup(st, 0);
    d->tmp_path = db_col_strdup(st, 1);
    d->bytes_done = (uint64_t)sqlite3_column_int64(st, 2);
    d->boot_id = db_col_strdup(st, 3);
    return 0;
}

int blobs_download_get(struct db *db, const char *location, struct blob_download *out)
{
    *out = (struct blob_download){0};
    return db_query_one(
        db, "SELECT etag, tmp_path, bytes_done, boot_id FROM downloads WHERE location = ?1",
        download_read, out, DB_TEXT(location));
}

int blobs_download_put(struct db *db, const char *location, const char *etag, const char *tmp_path,
                       uint64_t bytes_done, uint64_t size)
{
    char boot[BOOT_ID_MAX];
    return db_run_tx(
        db,
        "INSERT INTO downloads(location, etag, tmp_path, bytes_done, size, started_at_ms, "
        "updated_at_ms, boot_id) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7) ON CONFLICT(location) "
        "DO UPDATE SET etag = excluded.etag, tmp_path = excluded.tmp_path, bytes_done = "
        "excluded.bytes_done, size = excluded.size, updated_at_ms = "
        "excluded.updated_at_ms, boot_id = excluded.boot_id",
        DB_TEXT(location), DB_TEXT(etag), DB_TEXT(tmp_path), DB_INT(bytes_done), DB_INT(size),
        DB_INT(now_ms()), boot_id_read(boot, sizeof(boot)) == 0 ? DB_TEXT(boot) : DB_NULL());
}

int blobs_download_not_prefix(struct db *db, const char *location)
{
    return db_run_tx(db, "UPDATE downloads SET boot_id = NULL WHERE location = ?1",
                     DB_TEXT(location));
}

int blobs_download_delete(struct db *db, const char *location)
{
    int r = db_run(db, "DELETE FROM downloads WHERE location = ?1", DB_TEXT(location));
    return r < 0 ? r : 0;
}

/* ---- gc ------------------------------------------------------------------------------------ */

int blobs_download_list(struct db *db,
                        int (*fn)(const char *location, const char *tmp_path, void *ud), void *ud)
{
    _cleanup_query_ struct db_query q = {0};
    int r = db_query(&q, db, "SELECT location, tmp_path FROM downloads");
    while (r >= 0 && (r = db_query_next(&q)) == 1)
        if (fn((const char *)sqlite3_column_text(q.st, 0),
               (const char *)sqlite3_column_text(q.st, 1), ud))
            break;
    return r < 0 ? r : 0;
}

int blobs_list_unreferenced(struct db *db,
                            int (*fn)(const char *digest, const char *path, uint64_t size,
                                      void *ud),
                            void *ud)
{
    _cleanup_query_ struct db_query q = {0};
    int r = db_query(&q, db,
                     "SELECT digest, path, size FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM "
                     "image_layers l WHERE l.digest = b.digest) AND NOT EXISTS (SELECT 1 FROM "
                     "layers y WHERE y.digest = b.digest AND y.state != 'ready') AND NOT EXISTS "
                     "(SELECT 1 FROM image_configs c WHERE c.manifest_digest = b.digest OR "
                     "c.config_digest = b.digest)");
    while (r >= 0 && (r = db_query_next(&q)) == 1)
        if (fn((const char *)sqlite3_column_text(q.st, 0),
               (const char *)sqlite3_column_text(q.st, 1), (uint64_t)sqlite3_column_int64(q.st, 2),
               ud))
            break;
    return r < 0 ? r : 0;
}

int blobs_delete(struct db *db, const char *digest)
{
    int r = db_run(db, "DELETE FROM blobs WHERE digest = ?1", DB_TEXT(digest));
    return r < 0 ? r : 0;
}
