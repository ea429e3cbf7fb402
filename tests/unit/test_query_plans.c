/*
 * test_query_plans.c: the queries every command runs (loading unfinished runs, listing runs,
 * pruning old ones) and gc's scan use indexes, so their cost follows the live work and not the
 * history of a host with thousands of images and runs.
 *
 * Each case runs the real function on a migrated database with SQLite's statement trace on,
 * collects the SQL it ran, and asks SQLite for each statement's plan (EXPLAIN QUERY PLAN):
 *  - per-operation queries (fsm): no SCAN of a table that grows with the host's history,
 *    except of a partial index that holds only unfinished runs;
 *  - listings (gc): at most one SCAN, at the top level (the listing itself, linear), never a
 *    SCAN nested under it (a subquery or inner loop per row: quadratic).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm/fsm.h"
#include "pipeline/gc.h"
#include "pipeline/imagedb.h"
#include "store/blobs.h"
#include "store/schema.h"
#include "util/config.h"
#include "testutil.h"

static struct tu_db t;
static struct db *db;

/* Tables whose size grows with the number of images, layers and runs a host has seen. */
static const char *const growing[] = {"fsm_runs", "fsm_events", "images",       "image_layers",
                                      "layers",   "blobs",      "blob_sources", "activations",
                                      "devices",  "image_refs", "downloads",    NULL};

/* Partial indexes bounded by the live work, not the history. */
static const char *const bounded_indexes[] = {"fsm_runs_unfinished", NULL};

#define MAX_SQL 64
static char *seen[MAX_SQL];
static size_t n_seen;

static int trace_cb(unsigned type, void *ud, void *p, void *x)
{
    (void)ud;
    (void)x;
    if (type != SQLITE_TRACE_STMT)
        return 0;
    const char *sql = sqlite3_sql((sqlite3_stmt *)p);
    if (!sql || !strncmp(sql, "EXPLAIN", 7))
        return 0;
    for (size_t i = 0; i < n_seen; i++)
        if (!strcmp(seen[i], sql))
            return 0;
    if (n_seen < MAX_SQL)
        seen[n_seen++] = strdup(sql);
    return 0;
}

static void trace_start(void)
{
    for (size_t i = 0; i < n_seen; i++)
        free(seen[i]);
    n_seen = 0;
    sqlite3_trace_v2(db_handle(db), SQLITE_TRACE_STMT, trace_cb, NULL);
}

static void trace_stop(void)
{
    sqlite3_trace_v2(db_handle(db), 0, NULL, NULL);
}

static bool in_list(const char *const *list, const char *s, size_t len)
{
    for (size_t i = 0; list[i]; i++)
        if (strlen(list[i]) == len && !strncmp(list[i], s, len))
            return true;
    return false;
}

/* Whether a plan row ("SCAN fsm_runs USING INDEX x", aliases already resolved) scans a growing
 * table. Sets *bounded when the scan walks a bounded partial index. */
static bool scans_growing(const char *detail, bool *bounded)
{
    *bounded = false;
    if (strncmp(detail, "SCAN ", 5))
        return false;
    const char *table = detail + 5;
    size_t tl = strcspn(table, " ");
    const char *idx = strstr(table, "INDEX ");
    if (idx) {
        idx += 6;
        *bounded = in_list(bounded_indexes, idx, strcspn(idx, " "));
    }
    return in_list(growing, table, tl);
}

struct plan_check {
    const char *sql;
    int scans;        /* scans of growing tables (unbounded) */
    int nested_scans; /* of those, below the top level */
};

/* Aliases used in this project's queries ("FROM blobs b"): expand them so the check sees the
 * table. Returns the table of alias a in sql, or a itself. */
static void resolve_alias(const char *sql, const char *a, size_t al, char *out, size_t n)
{
    snprintf(out, n, "%.*s", (int)al, a);
    for (size_t i = 0; growing[i]; i++) {
        char pat[128];
        snprintf(pat, sizeof(pat), "%s %.*s", growing[i], (int)al, a);
        const char *hit = strstr(sql, pat);
        if (hit && (hit[strlen(pat)] == ' ' || hit[strlen(pat)] == ',' || hit[strlen(pat)] == ')' ||
                    hit[strlen(pat)] == '\0')) {
            snprintf(out, n, "%s", growing[i]);
            return;
        }
    }
}

static struct plan_check check_plan(const char *sql)
{
    struct plan_check c = {.sql = sql};
    char *q = NULL;
    assert_true(asprintf(&q, "EXPLAIN QUERY PLAN %s", sql) > 0);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db_handle(db), q, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int parent = sqlite3_column_int(st, 1);
        const char *detail = (const char *)sqlite3_column_text(st, 3);
        if (strncmp(detail, "SCAN ", 5))
            continue;
        char table[128];
        resolve_alias(sql, detail + 5, strcspn(detail + 5, " "), table, sizeof(table));
        char expanded[512];
        snprintf(expanded, sizeof(expanded), "SCAN %s%s", table,
                 detail + 5 + strcspn(detail + 5, " "));
        bool bounded = false;
        if (!scans_growing(expanded, &bounded) || bounded)
            continue;
        print_message("  plan: %s\n    -> %s (parent %d)\n", sql, detail, parent);
        c.scans++;
        if (parent != 0)
            c.nested_scans++;
    }
    sqlite3_finalize(st);
    free(q);
    return c;
}

/* Every statement traced: no unbounded scan of a growing table at all. */
static void assert_no_scans(const char *what)
{
    assert_true(n_seen > 0);
    for (size_t i = 0; i < n_seen; i++) {
        struct plan_check c = check_plan(seen[i]);
        if (c.scans)
            fail_msg("%s: '%s' scans a table that grows with the host's history", what, seen[i]);
    }
}

/* Every statement traced: at most one scan, at the top level (the listing itself). */
static void assert_linear(const char *what)
{
    assert_true(n_seen > 0);
    for (size_t i = 0; i < n_seen; i++) {
        struct plan_check c = check_plan(seen[i]);
        if (c.scans > 1 || c.nested_scans)
            fail_msg("%s: '%s' scans a growing table inside another loop (%d scans, %d nested)",
                     what, seen[i], c.scans, c.nested_scans);
    }
}

static int setup(void **state)
{
    (void)state;
    int r = tu_db_open("plans", &t);
    db = t.db;
    return r;
}

static int teardown(void **state)
{
    (void)state;
    trace_stop();
    for (size_t i = 0; i < n_seen; i++)
        free(seen[i]);
    n_seen = 0;
    tu_db_close(&t);
    return 0;
}

static int count_run(const struct fsm_run_record *r, void *ud)
{
    (void)r;
    (*(int *)ud)++;
    return 0;
}

static void test_runs_queries(void **state)
{
    (void)state;
    /* A history of finished runs and one live run. */
    assert_int_equal(
        sqlite3_exec(db_handle(db),
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<500)"
                     " INSERT INTO fsm_runs(version,type,action,resource_id,request,transitions,"
                     "end_state,status,outcome,created_ms,finished_ms)"
                     " SELECT printf('%016x',i),'fetch','fetch','r'||i,x'','[]','done',3,1,i,i"
                     " FROM n;"
                     "INSERT INTO fsm_runs(version,type,action,resource_id,request,transitions,"
                     "end_state,status,created_ms) VALUES('ffffffffffffffff','fetch','fetch',"
                     "'live',x'','[]','done',1,1000);",
                     NULL, NULL, NULL),
        SQLITE_OK);

    trace_start();
    int n = 0;
    assert_int_equal(fsm_db_list_runs(db, NULL, count_run, &n), 0);
    trace_stop();
    assert_int_equal(n, 1); /* the live run only */
    assert_no_scans("fsm_db_list_runs (unfinished)");

    trace_start();
    n = 0;
    struct fsm_list_filter f = {.type = "fetch"};
    assert_int_equal(fsm_db_list_runs(db, &f, count_run, &n), 0);
    trace_stop();
    assert_int_equal(n, 1);
    assert_no_scans("fsm_db_list_runs (unfinished, by type)");

    trace_start();
    int pruned = fsm_db_prune(db, 100, 0);
    trace_stop();
    assert_int_equal(pruned, 99); /* finished_ms 1..99 */
    assert_no_scans("fsm_db_prune");
}

static void test_gc_scan(void **state)
{
    (void)state;
    assert_int_equal(
        sqlite3_exec(db_handle(db),
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<200)"
                     " INSERT INTO blobs(digest,size,media_type,path,created_at_ms,last_used_ms)"
                     " SELECT printf('sha256:%064x',i),1,'tar',printf('sha256/%064x',i),i,i"
                     " FROM n;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    struct config cfg = {0};
    struct config_overrides ov = {.state_dir = t.dir};
    assert_int_equal(config_resolve(&cfg, &ov), 0);
    struct gc_opts o = {.skip_devices = "test", .include_blobs = true};
    struct gc_report rep = {0};
    struct err e = {0};
    trace_start();
    assert_int_equal(gc_scan(db, &cfg, &o, &rep, &e), 0);
    trace_stop();
    gc_report_free(&rep);
    config_free(&cfg);
    assert_linear("gc_scan");
}

static int count_image(const struct image_rec *r, void *ud)
{
    (void)r;
    (*(int *)ud)++;
    return 0;
}

/* A later page of list-images / GET /v1/images starts at its key in the index: no scan. */
static void test_image_pages(void **state)
{
    (void)state;
    assert_int_equal(
        sqlite3_exec(db_handle(db),
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<300)"
                     " INSERT INTO images(ref,name,state,created_at_ms,updated_at_ms,last_used_ms)"
                     " SELECT printf('dir:/x/%05d/1.tar',i),printf('img%05d:1',i),'ready',i,i,i"
                     " FROM n;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    struct imagedb_page pg = {.limit = 10, .after = "dir:/x/00150/1.tar"};
    int n = 0;
    trace_start();
    assert_int_equal(imagedb_image_list(db, &pg, count_image, &n), 0);
    trace_stop();
    assert_int_equal(n, 10);
    assert_no_scans("imagedb_image_list (a later page)");
}

static void ignore_counts(const char *s, int64_t rows, int64_t bytes, void *ud)
{
    (void)s;
    (void)rows;
    (void)bytes;
    (void)ud;
}

/* What a /metrics scrape reads for its per-state gauges and blob totals: no scan either. */
static void test_scrape_counts(void **state)
{
    (void)state;
    assert_int_equal(
        sqlite3_exec(db_handle(db),
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<300)"
                     " INSERT INTO images(ref,name,state,created_at_ms,updated_at_ms,last_used_ms)"
                     " SELECT printf('dir:/x/%05d/1.tar',i),printf('img%05d:1',i),'ready',i,i,i"
                     " FROM n;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    trace_start();
    for (int k = IMAGEDB_IMAGES; k <= IMAGEDB_ACTIVATIONS; k++)
        assert_int_equal(imagedb_state_counts(db, k, ignore_counts, NULL), 0);
    int64_t n = 0, bytes = 0;
    assert_int_equal(blobs_totals(db, &n, &bytes), 0);
    trace_stop();
    assert_no_scans("the scrape's counts");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_runs_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_image_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scrape_counts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
