/*
 * cmd_status.c: `thinimg status`: the pool (usage, mode, flags, transaction id, health) and
 * its thin devices: id, name, kind, state from the database, and whether each is active.
 * Devices active in the kernel under the pool's name prefix that the database does not know
 * are listed too (state "unknown"): they are what gc calls orphans.
 *
 * While a daemon serves the state directory, its queues (limit, maximum, pinned or sized to the
 * load, the last change and the signals it saw: GET /v1/queues) and its idle collection of
 * orphans (how many wait, when the next may go, or why none is collected: GET /v1/gc) are shown
 * too.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/overlay_report.h"
#include "pipeline/backend.h"
#include "guard/lock.h"
#include "pipeline/gc.h"
#include "cli/pool_report.h"
#include "cli/table.h"
#include "daemon/client.h"
#include "daemon/views.h"
#include "dm/pool.h"
#include "tui/loadview.h"
#include "util/cleanup.h"
#include "util/timeutil.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg status [--json]\n"
            "\n"
            "Show the thin pool (data and metadata usage, mode, flags, transaction id, health)\n"
            "and its thin devices: id, name, kind, state in the database, and whether active.\n"
            "While a daemon runs: each queue's limit, maximum, pinned or sized to the load, its\n"
            "last change and signals, and the orphans waiting for the idle collection.\n"
            "Field meanings: docs/dm.md (\"Status fields\"), docs/safety.md (queues, orphans).\n"
            "\n"
            "Exit codes: 0 ok, 3 pool unhealthy or no device-mapper here, 4 pool not active,\n"
            "1 other failure.\n");
}

/* What gc would collect (the pool's metadata against the records), into *orphans; false
 * when it is not known. Skipped while another thinimg works: its metadata snapshot and ours
 * would step on each other, and its in-flight devices would look like orphans. */
static bool scan_orphans(struct cli *cli, struct db *db, const struct pool_info *info,
                         struct gc_report *orphans)
{
    struct lock_holder holder;
    if (proc_lock_holder(cli->cfg.lock_path, &holder) == 0 || !db || !info->active)
        return false;
    return gc_scan(db, &cli->cfg, NULL, orphans, NULL) == 0 && orphans->pool_active;
}

static void print_devices(const struct view_device *v, size_t n)
{
    if (n == 0) {
        printf("\nno thin devices\n");
        return;
    }
    struct table t = TABLE_INIT;
    table_header(&t, "ID", "NAME", "KIND", "STATE", "ACTIVE", "SIZE", "ORIGIN", NULL);
    for (size_t i = 0; i < n; i++) {
        char id[16] = "-", size[32] = "-", origin[16] = "-";
        if (v[i].known) {
            snprintf(id, sizeof(id), "%u", v[i].id);
            format_bytes(v[i].size_bytes, size, sizeof(size));
        }
        if (v[i].origin_id)
            snprintf(origin, sizeof(origin), "%u", v[i].origin_id);
        table_row(&t, id, v[i].name, v[i].kind, v[i].state, v[i].active ? "yes" : "no", size,
                  origin, NULL);
    }
    putchar('\n');
    table_print(&t, stdout);
    table_free(&t);
}

/* ---- the daemon's queues and idle orphan collection ------------------------------------------ */

/* How long status waits for each of the daemon's answers (both come from memory). */
#define STATUS_DAEMON_MS 3000

struct daemon_load {
    json_t *queues; /* GET /v1/queues, NULL when unknown */
    json_t *gc;     /* GET /v1/gc, NULL when unknown */
    char note[300]; /* no daemon, or why its answers are missing */
};

static json_t *daemon_get(struct api_client *api, const char *path, struct err *e)
{
    long status = 0;
    json_t *reply = NULL;
    if (api_call(api, "GET", path, NULL, STATUS_DAEMON_MS, &status, &reply, e) < 0)
        return NULL;
    if (status == 200)
        return reply;
    api_reply_error(status, reply, e);
    json_decref(reply);
    return NULL;
}

static void daemon_load_get(struct cli *cli, struct daemon_load *dl)
{
    *dl = (struct daemon_load){0};
    struct api_client *api = NULL;
    struct err e = {0};
    int r = api_client_detect(&cli->cfg, &api, &e);
    if (r == 0) {
        snprintf(dl->note, sizeof(dl->note),
                 "no daemon runs: each process-image sizes its own queues (docs/safety.md)");
        return;
    }
    if (r > 0) {
        dl->queues = daemon_get(api, "/v1/queues", &e);
        dl->gc = daemon_get(api, "/v1/gc", &e);
        api_client_free(api);
    }
    if (!dl->queues || !dl->gc)
        snprintf(dl->note, sizeof(dl->note), "the daemon's queues and orphans are unknown: %s",
                 err_str(&e));
}

static void daemon_load_free(struct daemon_load *dl)
{
    json_decref(dl->queues);
    json_decref(dl->gc);
}

static void daemon_load_json(const struct daemon_load *dl, json_t *o)
{
    json_object_set(o, "queues", dl->queues ? json_object_get(dl->queues, "queues") : json_null());
    json_object_set(o, "auto_gc_orphans",
                    dl->gc ? json_object_get(dl->gc, "auto_gc_orphans") : json_null());
    if (dl->note[0])
        json_object_set_new(o, "daemon_note", json_string(dl->note));
}

static void daemon_load_text(const struct daemon_load *dl)
{
    if (dl->note[0])
        printf("\n%s\n", dl->note);
    const json_t *arr = json_object_get(dl->queues, "queues");
    if (json_array_size(arr)) {
        struct table t = TABLE_INIT;
        table_header(&t, "QUEUE", "LIMIT", "MAX", "SIZING", "LAST CHANGE", "SIGNALS", NULL);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            const json_t *q = json_array_get(arr, i);
            char limit[16], max[16], sig[256];
            snprintf(limit, sizeof(limit), "%lld",
                     (long long)json_integer_value(json_object_get(q, "limit")));
            snprintf(max, sizeof(max), "%lld",
                     (long long)json_integer_value(json_object_get(q, "max")));
            loadview_queue_signals(q, sig, sizeof(sig));
            const char *change = json_string_value(json_object_get(q, "last_change"));
            table_row(&t, json_string_value(json_object_get(q, "queue")) ?: "?", limit, max,
                      loadview_queue_mode(q), change ? change : "-", sig, NULL);
        }
        putchar('\n');
        table_print(&t, stdout);
        table_free(&t);
    }
    if (dl->gc) {
        char line[512];
        loadview_orphans_line(dl->gc, now_ms(), line, sizeof(line));
        printf("\nidle orphan collection: %s\n", line);
    }
}

int cmd_status(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int rc = cli_common_option("status", c, usage, &json, NULL);
        if (rc != CLI_OPTION_TAKEN)
            return rc;
    }
    int operands_rc = cli_check_operands("status", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    const char *pool = cli->cfg.pool_name;

    _cleanup_db_ struct db *db = NULL;
    struct err de = {0};
    int r = cli_open_db(cli, true, &db, &de); /* no database yet is fine; a broken one is not */
    if (r < 0 && r != -ENOENT)
        return cli_fail("status", r, &de);
    if (r < 0)
        db = NULL;
    char backend[32] = "";
    if (db && backend_recorded(db, backend, sizeof(backend)) == 1 && !strcmp(backend, "overlay"))
        return overlay_status(cli, db, json);
    struct pool_info info;
    struct err pe = {0};
    int pr = pool_get(db, pool, &info, &pe);
    struct err health = {0};
    int hr = pr == 0 ? pool_check_usable(pool, &info.status, NULL, &health) : 0;
    _cleanup_free_ struct view_device *devs = NULL;
    size_t ndevs = 0;
    r = view_devices(db, pool, &devs, &ndevs);
    if (r < 0)
        return cli_fail("status", r, NULL);
    struct gc_report orphans = {0};
    bool have_orphans = pr == 0 && scan_orphans(cli, db, &info, &orphans);
    struct daemon_load dl;
    daemon_load_get(cli, &dl);
    char orphan_summary[256] = "nothing";
    if (have_orphans)
        gc_report_summary(&orphans, orphan_summary, sizeof(orphan_summary));

    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "backend", json_string(backend_dm_thin.name));
        if (have_orphans)
            json_object_set_new(
                o, "orphans",
                json_pack("{s:i, s:s}", "count", (int)orphans.n, "summary", orphan_summary));
        json_object_set_new(
            o, "pool", pr == 0 ? pool_report_json(&info, hr < 0 ? &health : NULL) : json_null());
        json_object_set_new(o, "pool_life", pool_report_life_json(db, pool, cli->cfg.state_dir));
        if (pr < 0)
            json_object_set_new(o, "error", json_string(err_str(&pe)));
        json_t *arr = json_array();
        for (size_t i = 0; i < ndevs; i++)
            json_array_append_new(arr, view_device(&devs[i]));
        json_object_set_new(o, "devices", arr);
        daemon_load_json(&dl, o);
        cli_print_json(o);
    } else {
        printf("backend %s\n", backend_dm_thin.name);
        if (pr == 0)
            pool_report_text(&info, hr < 0 ? &health : NULL, stdout);
        else
            printf("pool %s: %s\n", pool, err_str(&pe));
        pool_report_life_text(db, pool, cli->cfg.state_dir, stdout);
        print_devices(devs, ndevs);
        if (have_orphans && orphans.n > 0)
            printf("\norphans: %s (see `thinimg gc`)\n", orphan_summary);
        daemon_load_text(&dl);
    }
    daemon_load_free(&dl);
    gc_report_free(&orphans);
    if (pr < 0)
        return cli_exit_code(pr);
    if (hr < 0)
        return cli_exit_code(hr);
    return EXIT_OK;
}
