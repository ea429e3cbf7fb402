/*
 * cmd_status.c: `thinimg status`: the pool (usage, mode, flags, transaction id, health) and
 * its thin devices: id, name, kind, state from the database, and whether each is active.
 * Devices active in the kernel under the pool's name prefix that the database does not know
 * are listed too (state "unknown"): they are what gc calls orphans.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "guard/lock.h"
#include "pipeline/gc.h"
#include "cli/pool_report.h"
#include "cli/table.h"
#include "dm/dm.h"
#include "dm/pool.h"
#include "dm/thin.h"
#include "util/cleanup.h"
#include "util/timeutil.h"

static void usage(void)
{
    printf("Usage: thinimg status [--json]\n"
           "\n"
           "Show the thin pool (data and metadata usage, mode, flags, transaction id, health)\n"
           "and its thin devices: id, name, kind, state in the database, and whether active.\n"
           "Field meanings: docs/dm.md (\"Status fields\").\n"
           "\n"
           "Exit codes: 0 ok, 3 pool unhealthy or no device-mapper here, 4 pool not active,\n"
           "1 other failure.\n");
}

struct dev_line {
    char id[16], name[DM_NAME_MAX + 1], kind[16], state[16], size[32], origin[16];
    uint32_t id_num, origin_num; /* 0: none (unknown device / no origin) */
    bool active;
};

int cmd_status(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            json = true;
        else if (c == 'h') {
            usage();
            return EXIT_OK;
        } else
            return cli_bad_option("status");
    }
    if (optind < argc)
        return cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
    const char *pool = cli->cfg.pool_name;

    struct err e = {0};
    _cleanup_db_ struct db *db = NULL;
    struct err de = {0};
    int r = cli_open_db(cli, true, &db, &de); /* no database yet is fine; a broken one is not */
    if (r < 0 && r != -ENOENT)
        return cli_fail("status", r, &de);
    if (r < 0)
        db = NULL;
    struct pool_info info;
    struct err pe = {0};
    int pr = pool_get(db, pool, &info, &pe);
    struct err health = {0};
    int hr = pr == 0 ? pool_check_usable(pool, &info.status, NULL, &health) : 0;

    /* Devices: database rows, plus active dm devices with our prefix that it does not know. */
    struct thin_dev *rows = NULL;
    size_t nrows = 0;
    if (db && thin_list(db, pool, false, &rows, &nrows) < 0) {
        rows = NULL;
        nrows = 0;
    }
    char **names = NULL;
    int nn = dm_available(NULL) == 0 ? dm_dev_list(&names, &e) : 0;
    if (nn < 0)
        nn = 0;
    size_t nlines = 0;
    struct dev_line *lines = calloc(nrows + (size_t)nn + 1, sizeof(*lines));
    if (!lines) {
        free(rows);
        dm_names_free(names);
        return cli_fail("status", -ENOMEM, NULL);
    }
    for (size_t i = 0; i < nrows; i++) {
        struct dev_line *l = &lines[nlines++];
        snprintf(l->id, sizeof(l->id), "%u", rows[i].id);
        l->id_num = rows[i].id;
        l->origin_num = rows[i].origin_id;
        snprintf(l->name, sizeof(l->name), "%s", rows[i].name);
        snprintf(l->kind, sizeof(l->kind), "%s", thin_kind_db_name(rows[i].kind));
        snprintf(l->state, sizeof(l->state), "%s", rows[i].state);
        format_bytes(rows[i].size_bytes, l->size, sizeof(l->size));
        if (rows[i].origin_id)
            snprintf(l->origin, sizeof(l->origin), "%u", rows[i].origin_id);
        for (int k = 0; names && k < nn; k++)
            if (!strcmp(names[k], rows[i].name))
                l->active = true;
    }
    for (int k = 0; names && k < nn; k++) {
        if (!dm_name_match(names[k], pool, NULL)) /* not "<pool>-": pool "tp-b" is not ours */
            continue;
        bool known = false;
        for (size_t i = 0; i < nrows; i++)
            if (!strcmp(names[k], rows[i].name))
                known = true;
        if (known)
            continue;
        struct dev_line *l = &lines[nlines++];
        snprintf(l->id, sizeof(l->id), "-");
        snprintf(l->name, sizeof(l->name), "%s", names[k]);
        snprintf(l->kind, sizeof(l->kind), "-");
        snprintf(l->state, sizeof(l->state), "unknown");
        snprintf(l->size, sizeof(l->size), "-");
        l->active = true;
    }

    /* Reconcile: what gc would collect (the pool's metadata against the records). Skipped
     * while another thinimg works: its metadata snapshot and ours would step on each other,
     * and its in-flight devices would look like orphans. */
    struct gc_report orphans = {0};
    struct lock_holder holder;
    bool busy = proc_lock_holder(cli->cfg.lock_path, &holder) == 0;
    bool have_orphans = !busy && db && pr == 0 && info.active &&
                        gc_scan(db, &cli->cfg, NULL, &orphans, NULL) == 0 && orphans.pool_active;
    char orphan_summary[256] = "nothing";
    if (have_orphans)
        gc_report_summary(&orphans, orphan_summary, sizeof(orphan_summary));

    if (json) {
        json_t *o = json_object();
        if (have_orphans)
            json_object_set_new(o, "orphans", json_pack("{s:i, s:s}", "count", (int)orphans.n,
                                                        "summary", orphan_summary));
        json_object_set_new(
            o, "pool", pr == 0 ? pool_report_json(&info, hr < 0 ? &health : NULL) : json_null());
        if (pr < 0)
            json_object_set_new(o, "error", json_string(err_str(&pe)));
        json_t *arr = json_array();
        for (size_t i = 0; i < nlines; i++) {
            json_t *d =
                json_pack("{s:s, s:s, s:s, s:b}", "name", lines[i].name, "kind", lines[i].kind,
                          "state", lines[i].state, "active", lines[i].active);
            json_object_set_new(d, "id",
                                lines[i].id_num ? json_integer(lines[i].id_num) : json_null());
            json_object_set_new(d, "origin_id",
                                lines[i].origin_num ? json_integer(lines[i].origin_num)
                                                    : json_null());
            if (i < nrows)
                json_object_set_new(d, "size_bytes", json_integer((json_int_t)rows[i].size_bytes));
            json_array_append_new(arr, d);
        }
        json_object_set_new(o, "devices", arr);
        json_dumpf(o, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(o);
    } else {
        if (pr == 0)
            pool_report_text(&info, hr < 0 ? &health : NULL, stdout);
        else
            printf("pool %s: %s\n", pool, err_str(&pe));
        if (nlines == 0)
            printf("\nno thin devices\n");
        else {
            struct table t = TABLE_INIT;
            table_header(&t, "ID", "NAME", "KIND", "STATE", "ACTIVE", "SIZE", "ORIGIN", NULL);
            for (size_t i = 0; i < nlines; i++)
                table_row(&t, lines[i].id, lines[i].name, lines[i].kind, lines[i].state,
                          lines[i].active ? "yes" : "no", lines[i].size,
                          lines[i].origin[0] ? lines[i].origin : "-", NULL);
            putchar('\n');
            table_print(&t, stdout);
            table_free(&t);
        }
        if (have_orphans && orphans.n > 0)
            printf("\norphans: %s (see `thinimg gc`)\n", orphan_summary);
    }
    gc_report_free(&orphans);
    free(lines);
    free(rows);
    dm_names_free(names);
    if (pr < 0)
        return cli_exit_code(pr);
    if (hr < 0)
        return cli_exit_code(hr);
    return EXIT_OK;
}
