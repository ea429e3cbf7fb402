/*
 * test_imagedb.c: the images domain queries on a real database: image upsert and lookup by ref
 * or name, layer lists with chain ids, shared layers and their users, activations, and the
 * rules the schema enforces (states, foreign keys, refusing to delete an image in use).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sqlite3.h>
#include <string.h>

#include "fsm/fsm.h"
#include "pipeline/imagedb.h"
#include "store/blobs.h"
#include "store/schema.h"
#include "testutil.h"

static struct tu_db t;
static struct db *db;

static int setup(void **state)
{
    (void)state;
    int r = tu_db_open("imagedb", &t);
    db = t.db;
    return r;
}

static int teardown(void **state)
{
    (void)state;
    tu_db_close(&t);
    return 0;
}

static const char *D1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
static const char *D2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

static int count_cb(const struct image_rec *r, void *ud)
{
    (void)r;
    (*(int *)ud)++;
    return 0;
}

static int ref_cb(const struct image_rec *r, void *ud)
{
    strcat((char *)ud, r->ref);
    strcat((char *)ud, ",");
    return 0;
}

static void test_images(void **state)
{
    (void)state;
    int64_t id = 0, id2 = 0;
    assert_int_equal(imagedb_image_upsert(db, "dir:/b/images/golang/2.tar", "golang:2", &id), 0);
    assert_true(id > 0);
    assert_int_equal(imagedb_image_upsert(db, "dir:/b/images/golang/2.tar", "golang:2", &id2), 0);
    assert_int_equal(id, id2);

    char c2[DIGEST_STR_LEN + 1];
    assert_int_equal(chain_id_next(D1, D2, c2), 0);
    struct image_layer_rec layers[2] = {
        {1, "dir:/b/images/golang/1.tar", (char *)D1, (char *)D1, 10},
        {2, "dir:/b/images/golang/2.tar", (char *)D2, c2, -1},
    };
    assert_int_equal(imagedb_image_set_layers(db, id, layers, 2), 0);
    assert_int_equal(imagedb_image_set_state(db, id, "ready", NULL), 0);

    struct image_rec r = {0};
    assert_int_equal(imagedb_image_find(db, "golang:2", &r), 0);
    assert_int_equal(r.id, id);
    assert_int_equal(r.n_layers, 2);
    assert_string_equal(r.top_chain, c2);
    assert_string_equal(r.state, "ready");
    assert_null(r.error);
    image_rec_free(&r);

    struct image_layer_rec *v = NULL;
    size_t n = 0;
    assert_int_equal(imagedb_image_layers(db, id, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[1].chain_id, c2);
    assert_int_equal(v[0].size, 10);
    assert_int_equal(v[1].size, -1);
    imagedb_image_layers_free(v, n);

    assert_int_equal(imagedb_image_find(db, "nope", &r), -ENOENT);
    assert_int_equal(imagedb_image_set_state(db, id, "bogus", NULL), -EEXIST); /* CHECK */

    /* Two refs with the same name: lookup by name is ambiguous, by ref is exact. */
    int64_t id3;
    assert_int_equal(imagedb_image_upsert(db, "s3://x/images/golang/2.tar", "golang:2", &id3), 0);
    assert_int_equal(imagedb_image_find(db, "golang:2", &r), -EEXIST);
    assert_int_equal(imagedb_image_find(db, "s3://x/images/golang/2.tar", &r), 0);
    assert_int_equal(r.id, id3);
    image_rec_free(&r);
    int count = 0;
    assert_int_equal(imagedb_image_list(db, NULL, count_cb, &count), 0);
    assert_int_equal(count, 2);
    /* pages by name then ref: golang:2 (dir:) before golang:2 (s3:) */
    char refs[512] = "";
    struct imagedb_page pg = {.limit = 1};
    assert_int_equal(imagedb_image_list(db, &pg, ref_cb, refs), 0);
    assert_string_equal(refs, "dir:/b/images/golang/2.tar,");
    pg.after = "dir:/b/images/golang/2.tar";
    refs[0] = '\0';
    assert_int_equal(imagedb_image_list(db, &pg, ref_cb, refs), 0);
    assert_string_equal(refs, "s3://x/images/golang/2.tar,");
    pg.after = "s3://x/images/golang/2.tar";
    refs[0] = '\0';
    assert_int_equal(imagedb_image_list(db, &pg, ref_cb, refs), 0);
    assert_string_equal(refs, "");
    pg.after = "dir:/nope";
    assert_int_equal(imagedb_image_list(db, &pg, ref_cb, refs), -ENOENT);
}

static int act_names(const struct activation_rec *r, void *ud)
{
    strcat((char *)ud, r->name);
    strcat((char *)ud, ",");
    return 0;
}

static void state_count(const char *state, int64_t rows, int64_t bytes, void *ud)
{
    char *out = ud;
    size_t n = strlen(out);
    snprintf(out + n, 256 - n, "%s=%lld/%lld,", state, (long long)rows, (long long)bytes);
}

static void test_layers_and_activations(void **state)
{
    (void)state;
    char c2[DIGEST_STR_LEN + 1];
    chain_id_next(D1, D2, c2);
    assert_int_equal(imagedb_layer_ensure(db, D1, NULL, D1, 1), 0);
    assert_int_equal(imagedb_layer_ensure(db, c2, D1, D2, 2), 0);
    assert_int_equal(imagedb_layer_ensure(db, c2, D1, D2, 2), 0); /* idempotent */
    /* A parent chain must exist (foreign key). */
    assert_int_equal(imagedb_layer_ensure(db, D2, "sha256:ffff", D2, 2), -EEXIST);

    /* A device must exist before a layer points at it. */
    assert_int_equal(imagedb_layer_set_device(db, D1, "pool", 7), -EEXIST);
    assert_int_equal(db_exec(db, "INSERT INTO devices(pool, dev_id, name, kind, state, size_bytes,"
                                 " created_at_ms, updated_at_ms) VALUES('pool', 7, 'pool-layer-7',"
                                 " 'layer', 'ready', 1048576, 0, 0)"),
                     0);
    assert_int_equal(imagedb_layer_set_device(db, D1, "pool", 7), 0);
    assert_int_equal(imagedb_layer_set_state(db, D1, "ready", NULL), 0);
    assert_int_equal(imagedb_layer_set_stats(db, D1, 12, 3456), 0);
    struct layer_rec l = {0};
    assert_int_equal(imagedb_layer_get(db, D1, &l), 0);
    assert_int_equal(l.dev_id, 7);
    assert_int_equal(l.entries, 12);
    assert_string_equal(l.state, "ready");
    layer_rec_free(&l);
    int users = -1;
    assert_int_equal(imagedb_layer_users(db, D1, &users), 0);
    assert_int_equal(users, 2); /* the image that lists it + the child layer c2 */

    struct image_rec img = {0};
    assert_int_equal(imagedb_image_find(db, "dir:/b/images/golang/2.tar", &img), 0);
    assert_int_equal(imagedb_activation_insert(db, "golang-2", img.id, c2), 0);
    assert_int_equal(imagedb_activation_insert(db, "golang-2", img.id, c2), -EEXIST);
    assert_int_equal(imagedb_activation_insert(db, "bad name", img.id, c2), -EINVAL);
    assert_int_equal(imagedb_activation_insert(db, "vm1", img.id, c2), 0);
    assert_int_equal(imagedb_activation_set_state(db, "vm1", "active", NULL), 0);
    char names[256] = "";
    assert_int_equal(imagedb_activation_list(db, 0, true, NULL, act_names, names), 0);
    assert_string_equal(names, "vm1,");
    names[0] = '\0';
    assert_int_equal(imagedb_activation_list(db, img.id, false, NULL, act_names, names), 0);
    assert_string_equal(names, "golang-2,vm1,");
    /* pages: oldest first, after a name; an unknown name is -ENOENT */
    struct imagedb_page pg = {.limit = 1};
    names[0] = '\0';
    assert_int_equal(imagedb_activation_list(db, 0, false, &pg, act_names, names), 0);
    assert_string_equal(names, "golang-2,");
    pg.after = "golang-2";
    names[0] = '\0';
    assert_int_equal(imagedb_activation_list(db, 0, false, &pg, act_names, names), 0);
    assert_string_equal(names, "vm1,");
    pg.after = "vm1";
    names[0] = '\0';
    assert_int_equal(imagedb_activation_list(db, 0, false, &pg, act_names, names), 0);
    assert_string_equal(names, "");
    pg.after = "nope";
    assert_int_equal(imagedb_activation_list(db, 0, false, &pg, act_names, names), -ENOENT);
    struct activation_rec a = {0};
    assert_int_equal(imagedb_activation_get(db, "vm1", &a), 0);
    assert_string_equal(a.image_name, "golang:2");
    assert_string_equal(a.state, "active");
    activation_rec_free(&a);

    /* Rows per state (the daemon's gauges). */
    char counts[256] = "";
    assert_int_equal(imagedb_state_counts(db, IMAGEDB_LAYERS, state_count, counts), 0);
    assert_string_equal(counts, "pending=1/0,ready=1/3456,");
    counts[0] = '\0';
    assert_int_equal(imagedb_state_counts(db, IMAGEDB_ACTIVATIONS, state_count, counts), 0);
    assert_string_equal(counts, "active=1/0,creating=1/0,");

    /* The image cannot go while activations reference it. */
    assert_int_equal(imagedb_image_delete(db, img.id), -ENOTEMPTY);
    assert_int_equal(imagedb_activation_delete(db, "vm1"), 0);
    assert_int_equal(imagedb_activation_delete(db, "golang-2"), 0);
    assert_int_equal(imagedb_activation_delete(db, "golang-2"), -ENOENT);
    assert_int_equal(imagedb_image_delete(db, img.id), 0);
    image_rec_free(&img);
}

static void test_names(void **state)
{
    (void)state;
    char out[80];
    imagedb_default_activation_name("golang:3", out, sizeof(out));
    assert_string_equal(out, "golang-3");
    imagedb_default_activation_name("a/b c", out, sizeof(out));
    assert_string_equal(out, "a-b-c");
    assert_true(imagedb_name_valid("vm_1.x-2"));
    assert_false(imagedb_name_valid(".."));
    assert_false(imagedb_name_valid(""));
    assert_false(imagedb_name_valid("a/b"));
}

struct counts_buf {
    char text[1024];
};

static void counts_text(const char *state, int64_t rows, int64_t bytes, void *ud)
{
    struct counts_buf *b = ud;
    size_t n = strlen(b->text);
    snprintf(b->text + n, sizeof(b->text) - n, "%s=%lld/%lld,", state, (long long)rows,
             (long long)bytes);
}

/* What a GROUP BY over the table itself says, in the same form. */
static void grouped_text(const char *sql, struct counts_buf *b)
{
    b->text[0] = '\0';
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db_handle(db), sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW)
        counts_text((const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
                    sqlite3_column_int64(st, 2), b);
    sqlite3_finalize(st);
}

/* The per-state counts the daemon's gauges read are kept by triggers: after inserts, state
 * changes, byte updates, upserts and deletes they equal a count of the rows themselves. */
static void test_row_counts(void **state)
{
    (void)state;
    static const char *const states[] = {"pending", "unpacking", "ready", "failed"};
    char sql[512];
    for (int i = 0; i < 60; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO layers(chain_id,digest,depth,state,bytes,created_at_ms,"
                 "updated_at_ms) VALUES('c%02d','d',1,'%s',%d,0,0)",
                 i, states[i % 4], i % 3 ? i * 100 : 0);
        assert_int_equal(db_exec(db, sql), 0);
    }
    assert_int_equal(db_exec(db, "UPDATE layers SET state='ready', bytes=bytes+7 WHERE"
                                 " chain_id < 'c20'"),
                     0);
    assert_int_equal(db_exec(db, "UPDATE layers SET bytes=NULL WHERE chain_id > 'c50'"), 0);
    assert_int_equal(db_exec(db, "DELETE FROM layers WHERE chain_id LIKE 'c3%'"), 0);
    assert_int_equal(db_exec(db, "INSERT INTO layers(chain_id,digest,depth,state,"
                                 "created_at_ms,updated_at_ms) VALUES('c01','d',1,'failed',0,0)"
                                 " ON CONFLICT(chain_id) DO NOTHING"),
                     0);
    struct counts_buf kept = {0}, real;
    assert_int_equal(imagedb_state_counts(db, IMAGEDB_LAYERS, counts_text, &kept), 0);
    grouped_text("SELECT state, count(*), coalesce(sum(bytes), 0) FROM layers GROUP BY state"
                 " ORDER BY state",
                 &real);
    assert_string_equal(kept.text, real.text);

    for (int i = 0; i < 30; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO images(ref,name,state,created_at_ms,updated_at_ms,last_used_ms)"
                 " VALUES('dir:/r/%d.tar','n%d:1','%s',0,0,0)",
                 i, i, i % 2 ? "ready" : "failed");
        assert_int_equal(db_exec(db, sql), 0);
    }
    assert_int_equal(db_exec(db, "UPDATE images SET state='pending' WHERE ref LIKE '%1%'"), 0);
    assert_int_equal(db_exec(db, "DELETE FROM images WHERE ref LIKE '%2.tar'"), 0);
    kept.text[0] = '\0';
    assert_int_equal(imagedb_state_counts(db, IMAGEDB_IMAGES, counts_text, &kept), 0);
    grouped_text("SELECT state, count(*), 0 FROM images GROUP BY state ORDER BY state", &real);
    assert_string_equal(kept.text, real.text);

    int64_t n = 0, bytes = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO blobs(digest,size,media_type,path,created_at_ms,last_used_ms)"
                 " VALUES(printf('sha256:%%064x',%d),%d,'tar','p',0,0)",
                 i, 1000 + i);
        assert_int_equal(db_exec(db, sql), 0);
    }
    assert_int_equal(db_exec(db, "UPDATE blobs SET size=size*2 WHERE size < 1003"), 0);
    assert_int_equal(db_exec(db, "DELETE FROM blobs WHERE size = 1009"), 0);
    assert_int_equal(blobs_totals(db, &n, &bytes), 0);
    assert_int_equal(n, 9);
    assert_int_equal(bytes, 2000 + 2002 + 2004 + 1003 + 1004 + 1005 + 1006 + 1007 + 1008);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_images),
        cmocka_unit_test(test_layers_and_activations),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_row_counts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
