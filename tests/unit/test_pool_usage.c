/*
 * test_pool_usage.c: exclusive and shared bytes per thin device (dm/usage.h), on the host: the
 * thin_ls output parser against good and hostile output, and the figures kept between listings
 * (memory and cache file) with the kernel replaced by a test source. The VM test
 * tests/dm/test_dm_usage.c reads a real pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/views.h"
#include "dm/usage.h"
#include "store/db.h"
#include "testutil.h"
#include "util/timeutil.h"

static int parse(const char *text, struct thin_usage_dev **v, size_t *n, struct err *e)
{
    return thin_usage_parse(text, strlen(text), v, n, e);
}

static void test_parse_good(void **state)
{
    (void)state;
    /* thin_ls pads its columns and ends lines with a space (thin-provisioning-tools 0.9:
     * "2 262144 131072 131072 \n"); ids come in any order and are sorted. */
    const char *out = "     3   1048576     65536   983040 \n"
                      "1 4194304 0 4194304\n"
                      "\t2\t196608\t196608\t0\n"
                      "16777215 18446744073709551615 18446744073709551615 0\n";
    struct thin_usage_dev *v = NULL;
    size_t n = 0;
    struct err e = {0};
    assert_int_equal(parse(out, &v, &n, &e), 0);
    assert_int_equal(n, 4);
    assert_int_equal(v[0].id, 1);
    assert_int_equal(v[0].mapped, 4194304);
    assert_int_equal(v[0].exclusive, 0);
    assert_int_equal(v[0].shared, 4194304);
    assert_int_equal(v[1].id, 2);
    assert_int_equal(v[1].exclusive, 196608);
    assert_int_equal(v[2].id, 3);
    assert_int_equal(v[2].exclusive, 65536);
    assert_int_equal(v[2].shared, 983040);
    assert_int_equal(v[3].id, 16777215);
    assert_true(v[3].mapped == UINT64_MAX);
    struct thin_usage u = {.ok = true, .devs = v, .n = n};
    assert_non_null(thin_usage_find(&u, 3));
    assert_null(thin_usage_find(&u, 4));
    thin_usage_free(&u);
    /* No devices at all. */
    assert_int_equal(parse("", &v, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_null(v);
}

static void test_parse_hostile(void **state)
{
    (void)state;
    static const struct {
        const char *text, *phrase;
    } bad[] = {
        {"1 4096 0\n", "not 4 fields"},                                      /* a column missing */
        {"1 4096 0 4096 7\n", "more than 4 fields"},                         /* one too many */
        {"DEV MAPPED_BYTES EXCLUSIVE_BYTES SHARED_BYTES\n", "not a number"}, /* a header */
        {"1 4096 0 4096\n2 4.0MiB 0 4.0MiB\n", "line 2"},                    /* human units */
        {"1 -4096 0 -4096\n", "not a number"},                               /* negative */
        {"1 99999999999999999999 0 99999999999999999999\n", "64 bits"}, /* overflow, 20 digits */
        {"1 184467440737095516150 0 1\n", "64 bits"},                   /* 21 digits */
        {"0 4096 0 4096\n", "out of range"},                            /* id 0 */
        {"16777216 4096 0 4096\n", "out of range"},                     /* id over 24 bits */
        {"1 4096 4096 4096\n", "exclusive + shared"},                   /* does not add up */
        {"1 4096 8192 0\n", "exclusive + shared"},                      /* exclusive > mapped */
        {"1 4096 0 4096\n1 4096 0 4096\n", "twice"},                    /* a device twice */
        {"1 4096 0 4096\n2 4096 0 40", "no newline"},                   /* cut output */
        {"1 4096 0 4096\n\n", "not 4 fields"},                          /* an empty line */
        {"1 0x1000 0 0x1000\n", "not a number"},                        /* hex */
        {"1 4096 0 4096\r\n", "not a number"},                          /* CRLF */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct thin_usage_dev *v = NULL;
        size_t n = 0;
        struct err e = {0};
        int r = parse(bad[i].text, &v, &n, &e);
        if (r != -EBADMSG || !tu_contains(e.msg, bad[i].phrase))
            fail_msg("case %zu: r=%d msg=\"%s\" (want -EBADMSG with \"%s\")", i, r, e.msg,
                     bad[i].phrase);
        assert_null(v);
        assert_int_equal(n, 0);
    }
    /* A NUL inside the output (binary garbage) is not a digit. */
    static const char nul[] = "1 40\0096 0 4096\n";
    struct thin_usage_dev *v = NULL;
    size_t n = 0;
    struct err e = {0};
    assert_int_equal(thin_usage_parse(nul, sizeof(nul) - 1, &v, &n, &e), -EBADMSG);
}

/* ---- kept figures ------------------------------------------------------------------------- */

static struct thin_usage_key cur_key;
static int key_error; /* < 0: the pool cannot be read */
#define FIRST_TEXT "1 4194304 0 4194304\n2 4259840 65536 4194304\n"
static const char *cur_text;
static int run_error;

static int fake_key(struct db *db, const char *pool, struct thin_usage_key *k, struct err *e)
{
    (void)db;
    if (key_error)
        return err_set(e, key_error, "pool \"%s\" is not active", pool);
    *k = cur_key;
    return 0;
}

static int fake_run(const char *pool, struct buf *out, struct err *e)
{
    (void)pool;
    if (run_error)
        return err_set(e, run_error, "thin_ls is not installed (install thin-provisioning-tools)");
    buf_puts(out, cur_text);
    return 0;
}

static const struct thin_usage_source fake = {fake_key, fake_run};

static char *dir, cache[512];

static int setup(void **state)
{
    (void)state;
    dir = tu_mkdtemp("usage");
    snprintf(cache, sizeof(cache), "%s/%s", dir, THIN_USAGE_CACHE_FILE);
    thin_usage_test_source = &fake;
    thin_usage_forget();
    thin_usage_runs = 0;
    cur_key = (struct thin_usage_key){.data_used = 100, .rows = 2};
    key_error = run_error = 0;
    cur_text = FIRST_TEXT;
    thin_usage_min_run_ms = THIN_USAGE_MIN_RUN_MS;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    thin_usage_test_source = NULL;
    thin_usage_forget();
    view_usage_cache_file(NULL);
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static void get(struct thin_usage *u)
{
    thin_usage_get(NULL, "tp", cache, u);
}

static void test_kept_until_the_pool_changes(void **state)
{
    (void)state;
    struct thin_usage u;
    get(&u);
    assert_true(u.ok);
    assert_false(u.cached);
    assert_int_equal(u.n, 2);
    assert_int_equal(thin_usage_find(&u, 2)->exclusive, 65536);
    thin_usage_free(&u);
    assert_int_equal(thin_usage_runs, 1);
    /* The same pool: no thin_ls. */
    get(&u);
    assert_true(u.ok && u.cached);
    thin_usage_free(&u);
    assert_int_equal(thin_usage_runs, 1);
    /* A write provisioned blocks: a long-lived process answers with what it has until
     * thin_usage_min_run_ms passed since its last run ... */
    cur_key.data_used++;
    cur_text = "1 4194304 0 4194304\n2 5308416 1114112 4194304\n";
    usleep((THIN_USAGE_RECHECK_MS + 100) * 1000);
    get(&u);
    assert_true(u.ok && u.cached);
    assert_int_equal(thin_usage_find(&u, 2)->exclusive, 65536);
    thin_usage_free(&u);
    assert_int_equal(thin_usage_runs, 1);
    /* ... then reads the pool again (after the recheck interval within one listing). */
    thin_usage_min_run_ms = 0;
    usleep((THIN_USAGE_RECHECK_MS + 100) * 1000);
    get(&u);
    assert_true(u.ok);
    assert_false(u.cached);
    assert_int_equal(thin_usage_find(&u, 2)->exclusive, 1114112);
    thin_usage_free(&u);
    assert_int_equal(thin_usage_runs, 2);
    /* The next process (nothing in memory) finds them in the cache file: no thin_ls. */
    thin_usage_forget();
    get(&u);
    assert_true(u.ok && u.cached);
    assert_int_equal(thin_usage_find(&u, 2)->exclusive, 1114112);
    thin_usage_free(&u);
    assert_int_equal(thin_usage_runs, 2);
    /* A device row changed (a snapshot taken, a device deleted): the cache file of the old
     * key is not used; the pool is read again. */
    thin_usage_forget();
    cur_key.rows++;
    get(&u);
    assert_false(u.cached);
    thin_usage_free(&u);
    assert_int_equal(thin_usage_runs, 3);
}

static void test_cache_file_hostile_or_old(void **state)
{
    (void)state;
    struct thin_usage u;
    get(&u);
    thin_usage_free(&u);
    assert_int_equal(thin_usage_runs, 1);
    char *good = tu_read_file(cache, NULL);
    assert_non_null(good);
    /* Garbage in the file: ignored, the pool is read again (and the file rewritten). */
    static const char *const garbage[] = {"", "thinimg pool-usage 1\n",
                                          "\x01\x02\x03 not a cache\n\n",
                                          NULL /* the good header with a hostile body, below */};
    for (size_t i = 0; i < 4; i++) {
        char body[4096];
        if (garbage[i])
            snprintf(body, sizeof(body), "%s", garbage[i]);
        else
            snprintf(body, sizeof(body), "%.*s1 4096 0 999\n",
                     (int)(strchr(strchr(good, '\n') + 1, '\n') + 1 - good), good);
        assert_int_equal(tu_write_file(cache, body, strlen(body)), 0);
        thin_usage_forget();
        unsigned long before = thin_usage_runs;
        get(&u);
        assert_true(u.ok);
        assert_false(u.cached);
        assert_int_equal(u.n, 2);
        thin_usage_free(&u);
        assert_int_equal(thin_usage_runs, before + 1);
    }
    /* Figures older than THIN_USAGE_MAX_AGE_MS are read again even with the same key. */
    char old[4096];
    int64_t then = now_ms() - THIN_USAGE_MAX_AGE_MS - 1000;
    char *read_at = strstr(good, " read=");
    assert_non_null(read_at);
    snprintf(old, sizeof(old), "%.*s read=%" PRId64 "\n%s", (int)(read_at - good), good, then,
             strchr(read_at, '\n') + 1);
    assert_int_equal(tu_write_file(cache, old, strlen(old)), 0);
    thin_usage_forget();
    unsigned long before = thin_usage_runs;
    get(&u);
    assert_false(u.cached);
    thin_usage_free(&u);
    assert_int_equal(thin_usage_runs, before + 1);
    free(good);
}

static void test_no_figures_says_why(void **state)
{
    (void)state;
    struct thin_usage u;
    /* thin_ls missing: no figures, the reason, and the listing goes on. */
    run_error = -ENOENT;
    get(&u);
    assert_false(u.ok);
    assert_true(tu_contains(u.why, "thin_ls is not installed"));
    assert_null(thin_usage_find(&u, 1));
    thin_usage_free(&u);
    /* Within one listing the failure is kept: one try per listing, not one per row. */
    struct view_bytes b;
    for (int i = 0; i < 100; i++)
        view_device_bytes(NULL, "tp", 1, &b);
    assert_false(b.known);
    assert_true(tu_contains(b.why, "thin_ls is not installed"));
    assert_int_equal(thin_usage_runs, 1);
    json_t *o = json_object();
    view_bytes_json(o, &b);
    assert_true(json_is_null(json_object_get(o, "exclusive_bytes")));
    assert_true(json_is_null(json_object_get(o, "shared_bytes")));
    assert_true(tu_contains(json_string_value(json_object_get(o, "bytes_note")), "thin_ls"));
    json_decref(o);
    /* No pool: the same, with that reason. */
    thin_usage_forget();
    key_error = -ENXIO;
    view_device_bytes(NULL, "tp", 1, &b);
    assert_false(b.known);
    assert_true(tu_contains(b.why, "not active"));
    /* A device the output leaves out (a missing line): no figures for it, named. */
    thin_usage_forget();
    key_error = run_error = 0;
    view_device_bytes(NULL, "tp", 7, &b);
    assert_false(b.known);
    assert_true(tu_contains(b.why, "device 7 is not in pool tp's metadata"));
    view_device_bytes(NULL, "tp", 2, &b);
    assert_true(b.known);
    assert_int_equal(b.exclusive, 65536);
    assert_int_equal(b.shared, 4194304);
    o = json_object();
    view_bytes_json(o, &b);
    assert_int_equal(json_integer_value(json_object_get(o, "exclusive_bytes")), 65536);
    assert_null(json_object_get(o, "bytes_note"));
    json_decref(o);
    /* Output that does not parse: no figures rather than wrong ones. */
    thin_usage_forget();
    cur_text = "1 4096 0\n";
    view_device_bytes(NULL, "tp", 1, &b);
    assert_false(b.known);
    assert_true(tu_contains(b.why, "not 4 fields"));
}

#define MIB (1024ll * 1024)

/* The real thin_ls on the pool of tests/dm/test_dm_usage.c (restored from
 * tests/fixtures/pool_usage/two_layers.xml by thin_restore): the parser reads its output, and
 * the views make the image's and the activations' figures from it as docs/cli.md defines
 * them. Skipped without thin-provisioning-tools. */
static void test_real_thin_ls_and_image_figures(void **state)
{
    (void)state;
    char xml[1024], bin[600];
    snprintf(xml, sizeof(xml), "%s/tests/fixtures/pool_usage/two_layers.xml", tu_source_dir());
    snprintf(bin, sizeof(bin), "%s/meta.bin", dir);
    char *restore[] = {"sh", "-c", "truncate -s 8M \"$1\" && thin_restore -q -i \"$0\" -o \"$1\"",
                       xml,  bin,  NULL};
    char *out = NULL, *err = NULL;
    if (tu_run(restore, NULL, &out, &err) != 0) {
        free(out);
        free(err);
        skip(); /* no thin_restore here */
    }
    free(out);
    free(err);
    char *ls[] = {"thin_ls", "--no-headers",
                  "-o",      "DEV,MAPPED_BYTES,EXCLUSIVE_BYTES,SHARED_BYTES",
                  bin,       NULL};
    char *text = NULL;
    assert_int_equal(tu_run(ls, NULL, &text, &err), 0);
    free(err);
    cur_text = text;

    struct tu_db t;
    assert_int_equal(tu_db_open("usageimg", &t), 0);
    assert_int_equal(
        db_exec(t.db,
                "INSERT INTO devices(pool,dev_id,name,kind,state,size_bytes,created_at_ms,"
                "updated_at_ms) VALUES('tp',1,'tp-layer-1','layer','ready',4096,1,1),"
                "('tp',2,'tp-layer-2','layer','ready',4096,1,1),"
                "('tp',3,'tp-act-a1','activation','ready',4096,1,1),"
                "('tp',4,'tp-act-a2','activation','ready',4096,1,1);"
                "INSERT INTO images(id,ref,name,state,n_layers,top_chain,created_at_ms,"
                "updated_at_ms,last_used_ms) VALUES(1,'dir:/t/img/','img:1','ready',2,"
                "'sha256:c2',1,1,1);"
                "INSERT INTO layers(chain_id,parent_chain,digest,depth,pool,dev_id,state,"
                "created_at_ms,updated_at_ms) VALUES('sha256:c1',NULL,'sha256:d1',1,'tp',1,"
                "'ready',1,1),('sha256:c2','sha256:c1','sha256:d2',2,'tp',2,'ready',1,1);"
                "INSERT INTO image_layers VALUES(1,1,'l1','sha256:d1','sha256:c1',1),"
                "(1,2,'l2','sha256:d2','sha256:c2',1);"
                "INSERT INTO activations(name,image_id,chain_id,pool,dev_id,state,device_path,"
                "created_at_ms,updated_at_ms) VALUES('a1',1,'sha256:c2','tp',3,'inactive',"
                "'/dev/mapper/tp-act-a1',1,1);"),
        0);
    struct view_bytes b;
    view_image_bytes(t.db, 1, &b);
    assert_true(b.known);
    assert_int_equal(b.exclusive, 1 * MIB); /* base's first MiB, which layer 2 rewrote */
    assert_int_equal(b.shared, 11 * MIB);   /* layer 2 (the top): all of it */
    struct activation_rec a = {
        .name = "a1", .chain_id = "sha256:c2", .pool = "tp", .dev_id = 3, .state = "inactive"};
    view_activation_bytes(t.db, &a, &b);
    assert_true(b.known);
    assert_int_equal(b.mapped, 15 * MIB);
    assert_int_equal(b.exclusive, 6 * MIB);
    assert_int_equal(b.shared, 9 * MIB);
    json_t *o = view_activation(t.db, &a);
    assert_int_equal(json_integer_value(json_object_get(o, "exclusive_bytes")), 6 * MIB);
    json_decref(o);
    /* Another image on the same base: base is no longer this image's alone. */
    assert_int_equal(
        db_exec(t.db, "INSERT INTO images(id,ref,name,state,n_layers,top_chain,created_at_ms,"
                      "updated_at_ms,last_used_ms) VALUES(2,'dir:/t/other/','other:1','ready',1,"
                      "'sha256:c1',1,1,1);"
                      "INSERT INTO image_layers VALUES(2,1,'l1','sha256:d1','sha256:c1',1);"),
        0);
    view_image_bytes(t.db, 1, &b);
    assert_true(b.known);
    assert_int_equal(b.exclusive, 0);
    assert_int_equal(b.shared, 11 * MIB);
    /* An image whose layer has no device yet: no figures, and why. */
    assert_int_equal(db_exec(t.db, "UPDATE layers SET dev_id=NULL, state='pending' WHERE "
                                   "chain_id='sha256:c2'"),
                     0);
    view_image_bytes(t.db, 1, &b);
    assert_false(b.known);
    assert_true(tu_contains(b.why, "layer 2"));
    tu_db_close(&t);
    free(text);
}

/* The listings never fail for want of figures: no pool here (on the host no device-mapper
 * either), so the cells are '-', one note says why, JSON has null with bytes_note, exit 0. */
static void test_listing_without_figures(void **state)
{
    (void)state;
    struct tu_db t;
    assert_int_equal(tu_db_open("usagecli", &t), 0);
    assert_int_equal(
        db_exec(t.db,
                "INSERT INTO images(id,ref,name,state,n_layers,top_chain,created_at_ms,"
                "updated_at_ms,last_used_ms) VALUES(1,'dir:/t/img/','img:1','ready',1,"
                "'sha256:c1',1,1,1);"
                "INSERT INTO devices(pool,dev_id,name,kind,state,size_bytes,created_at_ms,"
                "updated_at_ms) VALUES('nopool',1,'nopool-layer-1','layer','ready',4096,1,1),"
                "('nopool',2,'nopool-act-a1','activation','ready',4096,1,1);"
                "INSERT INTO layers(chain_id,digest,depth,pool,dev_id,state,bytes,created_at_ms,"
                "updated_at_ms) VALUES('sha256:c1','sha256:d1',1,'nopool',1,'ready',4096,1,1);"
                "INSERT INTO image_layers VALUES(1,1,'dir:/t/img/1.tar','sha256:d1','sha256:c1',1);"
                "INSERT INTO activations(name,image_id,chain_id,pool,dev_id,state,device_path,"
                "created_at_ms,updated_at_ms) VALUES('a1',1,'sha256:c1','nopool',2,'inactive',"
                "'/dev/mapper/nopool-act-a1',1,1);"),
        0);
    char env_state[600], env_db[600];
    snprintf(env_state, sizeof(env_state), "THINIMG_STATE_DIR=%s", t.dir);
    snprintf(env_db, sizeof(env_db), "THINIMG_DB=%s/t.db", t.dir);
    char *env[] = {env_state, env_db, "THINIMG_POOL=nopool", NULL};
    static const char *const cmds[][3] = {{"list-snapshots", "--all", NULL},
                                          {"list-images", "--layers", NULL}};
    for (size_t i = 0; i < 2; i++) {
        char *argv[] = {(char *)tu_thinimg(), (char *)cmds[i][0], (char *)cmds[i][1], NULL};
        char *out = NULL, *err = NULL;
        assert_int_equal(tu_run(argv, env, &out, &err), 0);
        if (!tu_contains(out, "EXCL") || !tu_contains(out, "SHARED") ||
            !tu_contains(err, "note: EXCL and SHARED show '-' where they cannot be read: "))
            fail_msg("%s: out=%s err=%s", cmds[i][0], out, err);
        free(out);
        free(err);
        char *jargv[] = {(char *)tu_thinimg(), (char *)cmds[i][0], (char *)cmds[i][1], "--json",
                         NULL};
        assert_int_equal(tu_run(jargv, env, &out, &err), 0);
        json_t *j = json_loads(out, 0, NULL);
        assert_non_null(j);
        json_t *o = json_array_get(j, 0);
        assert_true(json_is_null(json_object_get(o, "exclusive_bytes")));
        assert_true(json_is_null(json_object_get(o, "shared_bytes")));
        assert_true(json_string_length(json_object_get(o, "bytes_note")) > 0);
        json_decref(j);
        free(out);
        free(err);
    }
    tu_db_close(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_hostile),
        cmocka_unit_test_setup_teardown(test_kept_until_the_pool_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_file_hostile_or_old, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_figures_says_why, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_thin_ls_and_image_figures, setup, teardown),
        cmocka_unit_test(test_listing_without_figures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
