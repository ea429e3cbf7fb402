/*
 * imagedb.c: queries on images, image_layers, layers and activations. See imagedb.h.
 *
 * Every function takes the connection lock for its statement(s) (recursive, so it nests inside
 * a checkpoint transaction) and uses cached prepared statements, through store/stmt.h.
 */
#include "pipeline/imagedb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/stmt.h"
#include "util/cleanup.h"
#include "util/timeutil.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static int64_t col_i64_or(sqlite3_stmt *st, int col, int64_t dflt)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? dflt : sqlite3_column_int64(st, col);
}

/* A write that must change a row: 0, -ENOENT when it changed none, or a negative errno. */
static int changed_one(int r)
{
    return r < 0 ? r : (r == 0 ? -ENOENT : 0);
}

void image_rec_free(struct image_rec *r)
{
    free(r->ref);
    free(r->name);
    free(r->state);
    free(r->top_chain);
    free(r->error);
    memset(r, 0, sizeof(*r));
}

void image_layer_rec_free(struct image_layer_rec *r)
{
    free(r->location);
    free(r->digest);
    free(r->chain_id);
    memset(r, 0, sizeof(*r));
}

void layer_rec_free(struct layer_rec *r)
{
    free(r->chain_id);
    free(r->parent_chain);
    free(r->digest);
    free(r->pool);
    free(r->state);
    free(r->error);
    memset(r, 0, sizeof(*r));
}

void activation_rec_free(struct activation_rec *r)
{
    free(r->name);
    free(r->image_name);
    free(r->chain_id);
    free(r->pool);
    free(r->state);
    free(r->device_path);
    free(r->error);
    memset(r, 0, sizeof(*r));
}

bool imagedb_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64 || !strcmp(name, ".") || !strcmp(name, ".."))
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-'))
            return false;
    return true;
}

void imagedb_default_activation_name(const char *image_name, char *out, size_t n)
{
    size_t k = 0;
    for (const char *p = image_name; *p && k + 1 < n && k < 64; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        out[k++] = ok ? c : '-';
    }
    if (k == 0 && n > 1)
        out[k++] = 'x';
    out[k] = '\0';
}

/* ---- images ------------------------------------------------------------------------------- */

#define IMAGE_COLS                                                                                 \
    "i.id, i.ref, i.name, i.state, i.n_layers, i.top_chain, i.error, i.created_at_ms,"             \
    " i.updated_at_ms, i.last_used_ms,"                                                            \
    " (SELECT count(*) FROM activations a WHERE a.image_id = i.id AND a.state = 'active')"

static void image_from_row(sqlite3_stmt *st, struct image_rec *r)
{
    r->id = sqlite3_column_int64(st, 0);
    r->ref = db_col_strdup(st, 1);
    r->name = db_col_strdup(st, 2);
    r->state = db_col_strdup(st, 3);
    r->n_layers = sqlite3_column_int(st, 4);
    r->top_chain = db_col_strdup(st, 5);
    r->error = db_col_strdup(st, 6);
    r->created_at_ms = sqlite3_column_int64(st, 7);
    r->updated_at_ms = sqlite3_column_int64(st, 8);
    r->last_used_ms = sqlite3_column_int64(st, 9);
    r->n_activations = sqlite3_column_int(st, 10);
}

static int read_id(sqlite3_stmt *st, void *ud)
{
    *(int64_t *)ud = sqlite3_column_int64(st, 0);
    return 0;
}

int imagedb_image_upsert(struct db *db, const char *ref, const char *name, int64_t *id)
{
    int r = db_query_one(db,
                         "INSERT INTO images(ref, name, state, created_at_ms, updated_at_ms,"
                         " last_used_ms) VALUES(?1, ?2, 'pending', ?3, ?3, ?3)"
                         " ON CONFLICT(ref) DO UPDATE SET last_used_ms = ?3, name = ?2"
                         " RETURNING id",
                         read_id, id, DB_TEXT(ref), DB_TEXT(name), DB_INT(now_ms()));
    return r < 0 ? r : (r == 1 ? 0 : -EIO);
}

int imagedb_image_set_state(struct db *db, int64_t id, const char *state, const char *error)
{
    return changed_one(db_run(
        db, "UPDATE images SET state = ?2, error = ?3, updated_at_ms = ?4 WHERE id = ?1",
        DB_INT(id), DB_TEXT(state), DB_TEXT(error && *error ? error : NULL), DB_INT(now_ms())));
}

int imagedb_image_set_layers(struct db *db, int64_t id, const struct image_layer_rec *layers,
                             size_t n)
{
    _cleanup_tx_ struct db_tx tx = {0};
    int r = db_tx_begin(&tx, db);
    if (r < 0)
        return r;
    r = db_run(db, "DELETE FROM image_layers WHERE image_id = ?", DB_INT(id));
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = db_run(db,
                   "INSERT INTO image_layers(image_id, idx, location, digest, chain_id, size)"
                   " VALUES(?,?,?,?,?,?)",
                   DB_INT(id), DB_INT(layers[i].idx), DB_TEXT(layers[i].location),
                   DB_TEXT(layers[i].digest), DB_TEXT(layers[i].chain_id),
                   layers[i].size >= 0 ? DB_INT(layers[i].size) : DB_NULL());
    if (r >= 0)
        r = db_run(db,
                   "UPDATE images SET n_layers = ?2, top_chain = ?3, updated_at_ms = ?4"
                   " WHERE id = ?1",
                   DB_INT(id), DB_INT(n), DB_TEXT(n ? layers[n - 1].chain_id : NULL),
                   DB_INT(now_ms()));
    return r < 0 ? r : db_tx_commit(&tx);
}

static int image_get_where(struct db *db, const char *sql, struct db_arg key, struct image_rec *out)
{
    _cleanup_query_ struct db_query q = {0};
    int r = db_query(&q, db, sql, key);
    if (r >= 0)
        r = db_query_next(&q);
    if (r != 1)
        return r < 0 ? r : -ENOENT;
    image_from_row(q.st, out);
    r = db_query_next(&q);
    if (r == 0)
        return 0;
    image_rec_free(out); /* an error, or a second row: only possible for names */
    return r < 0 ? r : -EEXIST;
}

int imagedb_image_get(struct db *db, int64_t id, struct image_rec *out)
{
    return image_get_where(db, "SELECT " IMAGE_COLS " FROM images i WHERE i.id = ?", DB_INT(id),
                           out);
}

int imagedb_image_find(struct db *db, const char *ref_or_name, struct image_rec *out)
{
    int r = image_get_where(db, "SELECT " IMAGE_COLS " FROM images i WHERE i.ref = ?",
                            DB_TEXT(ref_or_name), out);
    if (r != -ENOENT)
        return r;
    return image_get_where(db, "SELECT " IMAGE_COLS " FROM images i WHERE i.name = ?",
                           DB_TEXT(ref_or_name), out);
}

int imagedb_image_layers(struct db *db, int64_t id, struct image_layer_rec **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    _cleanup_query_ struct db_query q = {0};
    int r = db_query(&q, db,
                     "SELECT idx, location, digest, chain_id, size FROM image_layers"
                     " WHERE image_id = ? ORDER BY idx",
                     DB_INT(id));
    size_t cap = 0;
    while (r >= 0 && (r = db_query_next(&q)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            struct image_layer_rec *p = realloc(*out, cap * sizeof(**out));
            if (!p) {
                r = -ENOMEM;
                break;
            }
            *out = p;
        }
        struct image_layer_rec *l = &(*out)[(*n)++];
        l->idx = sqlite3_column_int(q.st, 0);
        l->location = db_col_strdup(q.st, 1);
        l->digest = db_col_strdup(q.st, 2);
        l->chain_id = db_col_strdup(q.st, 3);
        l->size = col_i64_or(q.st, 4, -1);
    }
    if (r < 0) {
        imagedb_image_layers_free(*out, *n);
        *out = NULL;
        *n = 0;
        return r;
    }
    return 0;
}

void imagedb_image_layers_free(struct image_layer_rec *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        image_layer_rec_free(&v[i]);
    free(v);
}

/* -ENOENT when a page starts after a key that names no row of table.col. */
static int page_key_exists(struct db *db, const struct imagedb_page *pg, const char *sql)
{
    if (!pg || !pg->after)
        return 0;
    int64_t n = 0;
    int r = db_query_int(db, sql, &n, DB_TEXT(pg->after));
    return r < 0 ? r : n > 0 ? 0 : -ENOENT;
}

/* LIMIT's argument: -1 is no limit in SQLite. */
static int64_t page_limit(const struct imagedb_page *pg)
{
    return pg && pg->limit ? (int64_t)pg->limit : -1;
}

int imagedb_image_list(struct db *db, const struct imagedb_page *pg, imagedb_image_cb cb,
                       void *ud)
{
    int r = page_key_exists(db, pg, "SELECT count(*) FROM images WHERE ref = ?");
    if (r < 0)
        return r;
    /* Two statements, so that a later page is a SEARCH of the index from its key, never a
     * walk of the pages before it. */
    _cleanup_query_ struct db_query q = {0};
    if (pg && pg->after)
        r = db_query(&q, db,
                     "SELECT " IMAGE_COLS " FROM images i WHERE (i.name, i.ref) >"
                     " (SELECT name, ref FROM images WHERE ref = ?1) ORDER BY i.name, i.ref"
                     " LIMIT ?2",
                     DB_TEXT(pg->after), DB_INT(page_limit(pg)));
    else
        r = db_query(&q, db,
                     "SELECT " IMAGE_COLS " FROM images i ORDER BY i.name, i.ref LIMIT ?1",
                     DB_INT(page_limit(pg)));
    int stop = 0;
    while (!stop && r >= 0 && (r = db_query_next(&q)) == 1) {
        struct image_rec rec = {0};
        image_from_row(q.st, &rec);
        stop = cb(&rec, ud);
        image_rec_free(&rec);
    }
    return stop ? stop : (r < 0 ? r : 0);
}

int imagedb_image_delete(struct db *db, int64_t id)
{
    int64_t n = 0;
    db_lock(db); /* the count and the delete under one lock */
    int r = db_query_int(db, "SELECT count(*) FROM activations WHERE image_id = ?", &n, DB_INT(id));
    if (r >= 0 && n > 0)
        r = -ENOTEMPTY; /* not -EBUSY: that is what a locked database answers */
    else if (r >= 0)
        r = changed_one(db_run(db, "DELETE FROM images WHERE id = ?", DB_INT(id)));
    db_unlock(db);
    return r;
}

int imagedb_ref_set(struct db *db, const char *ref, int64_t image_id)
{
    int r = db_run(db,
                   "INSERT INTO image_refs(ref, image_id, resolved_at_ms) VALUES(?,?,?)"
                   " ON CONFLICT(ref) DO UPDATE SET image_id = excluded.image_id,"
                   " resolved_at_ms = excluded.resolved_at_ms",
                   DB_TEXT(ref), DB_INT(image_id), DB_INT(now_ms()));
    return r < 0 ? r : 0;
}

int imagedb_ref_get(struct db *db, const char *ref, int64_t *image_id)
{
    int r =
        db_query_int(db, "SELECT image_id FROM image_refs WHERE ref = ?", image_id, DB_TEXT(ref));
    return r < 0 ? r : (r == 1 ? 0 : -ENOENT);
}

/* ---- layers ------------------------------------------------------------------------------- */

#define LAYER_COLS                                                                                 \
    "chain_id, parent_chain, digest, depth, pool, dev_id, state, entries, bytes, error,"           \
    " created_at_ms, updated_at_ms"

static void layer_from_row(sqlite3_stmt *st, struct layer_rec *r)
{
    r->chain_id = db_col_strdup(st, 0);
    r->parent_chain = db_col_strdup(st, 1);
    r->digest = db_col_strdup(st, 2);
    r->depth = sqlite3_column_int(st, 3);
    r->pool = db_col_strdup(st, 4);
    r->dev_id = col_i64_or(st, 5, 0);
    r->state = db_col_strdup(st, 6);
    r->entries = col_i64_or(st, 7, -1);
    r->bytes = col_i64_or(st, 8, -1);
    r->error = db_col_strdup(st, 9);
    r->created_at_ms = sqlite3_column_int64(st, 10);
    r->updated_at_ms = sqlite3_column_int64(st, 11);
}

int imagedb_layer_ensure(struct db *db, const char *chain_id, const char *parent_chain,
                         const char *digest, int depth)
{
    int r = db_run(db,
                   "INSERT INTO layers(chain_id, parent_chain, digest, depth, state,"
                   " created_at_ms, updated_at_ms) VALUES(?1, ?2, ?3, ?4, 'pending', ?5, ?5)"
                   " ON CONFLICT(chain_id) DO NOTHING",
                   DB_TEXT(chain_id), DB_TEXT(parent_chain), DB_TEXT(digest), DB_INT(depth),
                   DB_INT(now_ms()));
    return r < 0 ? r : 0;
}

static int layer_read(sqlite3_stmt *st, void *ud)
{
    layer_from_row(st, ud);
    return 0;
}

int imagedb_layer_get(struct db *db, const char *chain_id, struct layer_rec *out)
{
    int r = db_query_one(db, "SELECT " LAYER_COLS " FROM layers WHERE chain_id = ?", layer_read,
                         out, DB_TEXT(chain_id));
    return r < 0 ? r : (r == 1 ? 0 : -ENOENT);
}

int imagedb_layer_set_device(struct db *db, const char *chain_id, const char *pool, int64_t dev_id)
{
    return changed_one(db_run(
        db, "UPDATE layers SET pool = ?2, dev_id = ?3, updated_at_ms = ?4 WHERE chain_id = ?1",
        DB_TEXT(chain_id), DB_TEXT(pool), dev_id > 0 ? DB_INT(dev_id) : DB_NULL(),
        DB_INT(now_ms())));
}

int imagedb_layer_set_state(struct db *db, const char *chain_id, const char *state,
                            const char *error)
{
    return changed_one(db_run(
        db, "UPDATE layers SET state = ?2, error = ?3, updated_at_ms = ?4 WHERE chain_id = ?1",
        DB_TEXT(chain_id), DB_TEXT(state), DB_TEXT(error && *error ? error : NULL),
        DB_INT(now_ms())));
}

int imagedb_layer_set_stats(struct db *db, const char *chain_id, int64_t entries, int64_t bytes)
{
    return changed_one(db_run(
        db, "UPDATE layers SET entries = ?2, bytes = ?3, updated_at_ms = ?4 WHERE chain_id = ?1",
        DB_TEXT(chain_id), DB_INT(entries), DB_INT(bytes), DB_INT(now_ms())));
}

int imagedb_layer_users(struct db *db, const char *chain_id, int *n)
{
    int64_t v = 0;
    int r = db_query_int(db,
                         "SELECT (SELECT count(DISTINCT image_id) FROM image_layers WHERE "
                         "chain_id = ?1) + (SELECT count(*) FROM layers WHERE parent_chain = ?1)"
                         " + (SELECT count(*) FROM activations WHERE chain_id = ?1)",
                         &v, DB_TEXT(chain_id));
    if (r == 1)
        *n = (int)v;
    return r < 0 ? r : 0;
}

int imagedb_layer_delete(struct db *db, const char *chain_id)
{
    return changed_one(db_run(db, "DELETE FROM layers WHERE chain_id = ?", DB_TEXT(chain_id)));
}

/* ---- activations -------------------------------------------------------------------------- */

#define ACT_COLS                                                                                   \
    "a.name, a.image_id, i.name, a.chain_id, a.pool, a.dev_id, a.state, a.device_path,"            \
    " a.error, a.created_at_ms, a.updated_at_ms"

static void activation_from_row(sqlite3_stmt *st, struct activation_rec *r)
{
    r->name = db_col_strdup(st, 0);
    r->image_id = sqlite3_column_int64(st, 1);
    r->image_name = db_col_strdup(st, 2);
    r->chain_id = db_col_strdup(st, 3);
    r->pool = db_col_strdup(st, 4);
    r->dev_id = col_i64_or(st, 5, 0);
    r->state = db_col_strdup(st, 6);
    r->device_path = db_col_strdup(st, 7);
    r->error = db_col_strdup(st, 8);
    r->created_at_ms = sqlite3_column_int64(st, 9);
    r->updated_at_ms = sqlite3_column_int64(st, 10);
}

int imagedb_activation_insert(struct db *db, const char *name, int64_t image_id,
                              const char *chain_id)
{
    if (!imagedb_name_valid(name))
        return -EINVAL;
    int r = db_run(db,
                   "INSERT INTO activations(name, image_id, chain_id, state, created_at_ms,"
                   " updated_at_ms) VALUES(?1, ?2, ?3, 'creating', ?4, ?4)",
                   DB_TEXT(name), DB_INT(image_id), DB_TEXT(chain_id), DB_INT(now_ms()));
    return r < 0 ? r : 0;
}

static int activation_read(sqlite3_stmt *st, void *ud)
{
    activation_from_row(st, ud);
    return 0;
}

int imagedb_activation_get(struct db *db, const char *name, struct activation_rec *out)
{
    int r = db_query_one(db,
                         "SELECT " ACT_COLS " FROM activations a JOIN images i ON"
                         " i.id = a.image_id WHERE a.name = ?",
                         activation_read, out, DB_TEXT(name));
    return r < 0 ? r : (r == 1 ? 0 : -ENOENT);
}

int imagedb_activation_set_device(struct db *db, const char *name, const char *pool, int64_t dev_id,
                                  const char *device_path)
{
    return changed_one(db_run(db,
                              "UPDATE activations SET pool = ?2, dev_id = ?3, device_path = ?4,"
                              " updated_at_ms = ?5 WHERE name = ?1",
                              DB_TEXT(name), DB_TEXT(pool), dev_id > 0 ? DB_INT(dev_id) : DB_NULL(),
                              DB_TEXT(device_path), DB_INT(now_ms())));
}

int imagedb_activation_set_state(struct db *db, const char *name, const char *state,
                                 const char *error)
{
    return changed_one(db_run(
        db, "UPDATE activations SET state = ?2, error = ?3, updated_at_ms = ?4 WHERE name = ?1",
        DB_TEXT(name), DB_TEXT(state), DB_TEXT(error && *error ? error : NULL), DB_INT(now_ms())));
}

int imagedb_activation_list(struct db *db, int64_t image_id, bool active_only,
                            const struct imagedb_page *pg, imagedb_activation_cb cb, void *ud)
{
    int r = page_key_exists(db, pg, "SELECT count(*) FROM activations WHERE name = ?");
    if (r < 0)
        return r;
    _cleanup_query_ struct db_query q = {0};
    if (pg && pg->after)
        r = db_query(&q, db,
                     "SELECT " ACT_COLS " FROM activations a JOIN images i ON"
                     " i.id = a.image_id WHERE (?1 = 0 OR a.image_id = ?1)"
                     " AND (?2 = 0 OR a.state = 'active') AND (a.created_at_ms, a.name) >"
                     " (SELECT created_at_ms, name FROM activations WHERE name = ?3)"
                     " ORDER BY a.created_at_ms, a.name LIMIT ?4",
                     DB_INT(image_id), DB_INT(active_only ? 1 : 0), DB_TEXT(pg->after),
                     DB_INT(page_limit(pg)));
    else
        r = db_query(&q, db,
                     "SELECT " ACT_COLS " FROM activations a JOIN images i ON"
                     " i.id = a.image_id WHERE (?1 = 0 OR a.image_id = ?1)"
                     " AND (?2 = 0 OR a.state = 'active') ORDER BY a.created_at_ms, a.name"
                     " LIMIT ?3",
                     DB_INT(image_id), DB_INT(active_only ? 1 : 0), DB_INT(page_limit(pg)));
    int stop = 0;
    while (!stop && r >= 0 && (r = db_query_next(&q)) == 1) {
        struct activation_rec rec = {0};
        activation_from_row(q.st, &rec);
        stop = cb(&rec, ud);
        activation_rec_free(&rec);
    }
    return stop ? stop : (r < 0 ? r : 0);
}

int imagedb_activation_delete(struct db *db, const char *name)
{
    return changed_one(db_run(db, "DELETE FROM activations WHERE name = ?", DB_TEXT(name)));
}

/* ---- totals ------------------------------------------------------------------------------- */

int imagedb_state_counts(struct db *db, enum imagedb_table table, imagedb_state_cb fn, void *ud)
{
    /* Kept by triggers (store/schema_images.c, migration 5): a scrape reads a few rows, not
     * every image. */
    static const char *const names[] = {
        [IMAGEDB_IMAGES] = "images",
        [IMAGEDB_LAYERS] = "layers",
        [IMAGEDB_ACTIVATIONS] = "activations",
    };
    _cleanup_query_ struct db_query q = {0};
    int r = db_query(&q, db,
                     "SELECT state, rows, bytes FROM row_counts WHERE tbl = ?1 AND rows > 0"
                     " ORDER BY state",
                     DB_TEXT(names[table]));
    while (r >= 0 && (r = db_query_next(&q)) == 1) {
        const char *v = (const char *)sqlite3_column_text(q.st, 0);
        fn(v ? v : "", sqlite3_column_int64(q.st, 1), sqlite3_column_int64(q.st, 2), ud);
    }
    return r < 0 ? r : 0;
}
