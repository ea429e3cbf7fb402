/*
 * updates.c: commit callbacks for the machines' domain writes. See updates.h.
 */
#include "pipeline/updates.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/imagedb.h"
#include "util/timeutil.h"

struct layer_update *layer_update_new(const char *chain_id)
{
    struct layer_update *u = calloc(1, sizeof(*u));
    if (u)
        snprintf(u->chain_id, sizeof(u->chain_id), "%s", chain_id);
    return u;
}

int layer_update_apply(struct db *db, void *ud)
{
    struct layer_update *u = ud;
    if (!u)
        return -ENOMEM;
    if (u->only_if_not_ready) {
        struct layer_rec l = {0};
        if (imagedb_layer_get(db, u->chain_id, &l) == 0) {
            bool ready = !strcmp(l.state, "ready");
            layer_rec_free(&l);
            if (ready)
                return 0;
        }
    }
    int r = 0;
    if (u->set_device)
        r = imagedb_layer_set_device(db, u->chain_id, u->pool[0] ? u->pool : NULL, u->dev_id);
    if (r == 0 && u->set_stats)
        r = imagedb_layer_set_stats(db, u->chain_id, u->entries, u->bytes);
    if (r == 0 && u->set_state)
        r = imagedb_layer_set_state(db, u->chain_id, u->state, u->error);
    return r;
}

void layer_update_free(void *ud)
{
    struct layer_update *u = ud;
    if (u)
        free(u->error);
    free(u);
}

struct device_mark *device_mark_new(const char *pool, uint32_t dev_id, const char *state,
                                    const char *error)
{
    struct device_mark *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    snprintf(m->pool, sizeof(m->pool), "%s", pool);
    m->dev_id = dev_id;
    snprintf(m->state, sizeof(m->state), "%s", state);
    m->error = error ? strdup(error) : NULL;
    return m;
}

int device_mark_apply(struct db *db, void *ud)
{
    struct device_mark *m = ud;
    if (!m)
        return -ENOMEM;
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, m->only_if_ready
                                          ? "UPDATE devices SET state = ?3, error = ?4,"
                                            " updated_at_ms = ?5 WHERE pool = ?1 AND dev_id = ?2"
                                            " AND state = 'ready'"
                                          : "UPDATE devices SET state = ?3, error = ?4,"
                                            " updated_at_ms = ?5 WHERE pool = ?1 AND dev_id = ?2");
    if (!st) {
        db_unlock(db);
        return -EIO;
    }
    db_bind_text(st, 1, m->pool);
    db_bind_i64(st, 2, m->dev_id);
    db_bind_text(st, 3, m->state);
    db_bind_text(st, 4, m->error);
    db_bind_i64(st, 5, now_ms());
    int r = db_step(db, st);
    db_done(st);
    db_unlock(db);
    return r < 0 ? r : 0;
}

void device_mark_free(void *ud)
{
    struct device_mark *m = ud;
    if (m)
        free(m->error);
    free(m);
}

struct image_update *image_update_new(int64_t image_id, const char *state, const char *error)
{
    struct image_update *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->image_id = image_id;
    snprintf(u->state, sizeof(u->state), "%s", state);
    u->error = error && *error ? strdup(error) : NULL;
    return u;
}

int image_update_apply(struct db *db, void *ud)
{
    struct image_update *u = ud;
    return u ? imagedb_image_set_state(db, u->image_id, u->state, u->error) : -ENOMEM;
}

void image_update_free(void *ud)
{
    struct image_update *u = ud;
    if (u)
        free(u->error);
    free(u);
}

struct activation_update *activation_update_new(const char *name)
{
    struct activation_update *u = calloc(1, sizeof(*u));
    if (u)
        snprintf(u->name, sizeof(u->name), "%s", name);
    return u;
}

int activation_update_apply(struct db *db, void *ud)
{
    struct activation_update *u = ud;
    if (!u)
        return -ENOMEM;
    int r = 0;
    if (u->insert) {
        struct activation_rec a = {0};
        r = imagedb_activation_get(db, u->name, &a);
        if (r == 0)
            activation_rec_free(&a);
        else if (r == -ENOENT)
            r = imagedb_activation_insert(db, u->name, u->image_id, u->chain_id);
    }
    if (r == 0 && u->set_device)
        r = imagedb_activation_set_device(db, u->name, u->pool[0] ? u->pool : NULL, u->dev_id,
                                          u->device_path[0] ? u->device_path : NULL);
    if (r == 0 && u->set_state)
        r = imagedb_activation_set_state(db, u->name, u->state, u->error);
    return r;
}

void activation_update_free(void *ud)
{
    struct activation_update *u = ud;
    if (u)
        free(u->error);
    free(u);
}
