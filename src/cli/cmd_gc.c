/*
 * cmd_gc.c: `thinimg gc`: find every orphan (dry run, the default) and, with --force, remove
 * them safely: under the process lock, after the health checks, unmount -> remove -> delete,
 * each kernel operation with a timeout, skipping whatever is mounted or open.
 *
 * While a daemon holds the state directory, the request goes to it (POST /v1/gc): it runs gc
 * under its operation guard, between devicemapper sections, sparing what its runs may be using
 * (pipeline/gc.h), and answers with the same report; the exit codes are the same. Only a
 * daemon that does not answer leaves --ignore-lock as the way to act.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/table.h"
#include "daemon/client.h"
#include "guard/health.h"
#include "guard/lock.h"
#include "pipeline/gc.h"
#include "util/defaults.h"
#include "util/timeutil.h"

/* Through the daemon, gc first waits for the operation guard (an mkfs may hold it for a
 * while), then runs kernel operations of GC_OP_TIMEOUT_MS each. */
#define GC_REMOTE_TIMEOUT_MS 600000

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg gc [--dry-run | --force] [OPTIONS]\n"
            "\n"
            "Find what failed or interrupted work left behind and, with --force, remove it:\n"
            "devices left `creating` or recorded failed, devices nothing uses, thin ids in the\n"
            "pool the database does not know, stale mounts, partial downloads and temp files no\n"
            "run owns, locks of dead processes, and (with --blobs) blobs no image uses.\n"
            "Devices that are mounted or open are skipped, never forced.\n"
            "While the daemon runs, gc is done by it (under its operation guard, between\n"
            "devicemapper operations; what its runs may be using right now is spared and\n"
            "listed as such); the report and exit codes are the same.\n"
            "\n"
            "  --dry-run          list only (the default)\n"
            "  --force            remove: takes the process lock and runs the health checks;\n"
            "                     unmount -> remove -> pool delete, each with a timeout\n"
            "  --ignore-lock      act even while another thinimg holds the lock, or a daemon\n"
            "                     holds it and does not answer (dangerous: what that\n"
            "                     process creates right now may be removed)\n"
            "  --blobs            also delete blobs no image uses\n"
            "  --include-foreign  also delete unknown thin ids in a pool thinimg did not create\n"
            "  --history-days N   prune finished runs older than N days (default %d)\n"
            "  --timeout S        per kernel operation (default %d)\n"
            "  --json             machine-readable report\n"
            "\n"
            "Exit codes: 0 nothing failed, 1 an operation failed or timed out, 3 unhealthy\n"
            "(refused), 5 locked by another thinimg (or a daemon that does not answer).\n",
            DEFAULT_HISTORY_RETENTION_DAYS, GC_OP_TIMEOUT_MS / 1000);
}

static void report_print(const struct gc_report *r, bool applied)
{
    if (r->pool_note[0])
        printf("note: %s\n", r->pool_note);
    if (r->n == 0) {
        printf("nothing to collect\n");
        return;
    }
    struct table t = TABLE_INIT;
    if (applied)
        table_header(&t, "KIND", "WHAT", "RESULT", "DETAIL", NULL);
    else
        table_header(&t, "KIND", "WHAT", "REASON", "ACTION", NULL);
    uint64_t bytes = 0;
    for (size_t i = 0; i < r->n; i++) {
        const struct gc_item *it = &r->items[i];
        if (applied)
            table_row(&t, gc_kind_name(it->kind), it->what,
                      it->removable ? gc_result_name(it->result) : "kept",
                      it->removable ? it->detail : it->action, NULL);
        else
            table_row(&t, gc_kind_name(it->kind), it->what, it->reason, it->action, NULL);
        if (it->removable)
            bytes += it->bytes;
    }
    table_print(&t, stdout);
    table_free(&t);
    char summary[256], b[32];
    gc_report_summary(r, summary, sizeof(summary));
    format_bytes(bytes, b, sizeof(b));
    printf("\n%s: %s (%s held by what can be removed)\n", applied ? "collected" : "orphans",
           summary, b);
    if (!applied)
        printf("dry run: nothing was changed; run `thinimg gc --force` to remove them\n");
}

/* Another process holds the state directory: refuse (exit 5) with `refusal`, or with
 * --ignore-lock, warn with `warning` and go on (EXIT_OK). */
static int refuse_or_warn(bool ignore_lock, const struct err *e, const char *refusal,
                          const char *warning)
{
    if (!ignore_lock)
        return cli_failf("gc", EXIT_BUSY, "%s; %s", err_str(e), refusal);
    fprintf(stderr, "thinimg: gc: WARNING: --ignore-lock: %s. %s.\n", err_str(e), warning);
    return EXIT_OK;
}

/* Before --force removes anything: the process lock (or, with --ignore-lock, a warning that
 * it is held) and a healthy host. An exit code; on EXIT_OK *lock may be held. */
static int prepare_force(struct cli *cli, bool ignore_lock, struct proc_lock *lock)
{
    struct err e = {0};
    int r = config_ensure_dirs(&cli->cfg, &e);
    if (r < 0)
        return cli_fail("gc", r, &e);
    r = proc_lock_acquire(cli->cfg.lock_path, "gc", 0, lock, NULL, &e);
    if (r < 0) {
        int rc = refuse_or_warn(ignore_lock, &e,
                                "gc --force refuses while thinimg works (--ignore-lock "
                                "overrides: dangerous)",
                                "Devices that process is creating right now may be listed as "
                                "orphans and removed; what was made since its oldest unfinished "
                                "run started is spared");
        if (rc != EXIT_OK)
            return rc;
    }
    /* D-state tasks, memory and I/O pressure: removing devices on a sick kernel is how hosts
     * hang. Past kernel log lines are not checked: they often ask for this cleanup. */
    struct health_opts ho = {.skip_kmsg = true};
    struct health_report rep;
    health_run(&ho, &rep);
    if (rep.overall == HEALTH_FAIL) {
        char s[1500];
        health_report_summary(&rep, s, sizeof(s));
        proc_lock_release(lock);
        return cli_failf("gc", EXIT_UNHEALTHY, "refused: the host is not healthy: %s", s);
    }
    return EXIT_OK;
}

/* The daemon does it: the same report (and --json) from its reply, the same exit codes. */
static int gc_remote(struct api_client *api, const struct gc_opts *go, bool force, bool json)
{
    json_t *body = json_pack("{s:b, s:b, s:b, s:i}", "force", force, "blobs", go->include_blobs,
                             "include_foreign", go->include_foreign_ids, "history_days",
                             (int)go->history_days);
    if (go->op_timeout_ms > 0)
        json_object_set_new(body, "timeout", json_integer(go->op_timeout_ms / 1000));
    long status = 0;
    json_t *reply = NULL;
    struct err e = {0};
    int r = api_call(api, "POST", "/v1/gc", body, GC_REMOTE_TIMEOUT_MS, &status, &reply, &e);
    json_decref(body);
    if (r < 0)
        return cli_fail("gc", r, &e);
    struct gc_report rep;
    bool applied = false;
    if (!reply || gc_report_from_json(reply, &rep, &applied) < 0) {
        r = status == 200 ? err_set(&e, -EBADMSG, "the daemon's reply is not a gc report")
                          : api_reply_error(status, reply, &e);
        json_decref(reply);
        return cli_fail("gc", r, &e);
    }
    int rc = EXIT_OK;
    if (status != 200)
        rc = cli_fail("gc", api_reply_error(status, reply, &e), &e);
    if (json) {
        /* The local report's shape: the failure went to stderr above. */
        json_object_del(reply, "error");
        json_object_del(reply, "code");
        json_object_del(reply, "reason");
        cli_print_json(reply);
    } else {
        report_print(&rep, applied);
        json_decref(reply);
    }
    gc_report_free(&rep);
    return rc;
}

/* gc in this process: the lock for --force (or --ignore-lock's warning), the scan, the removals
 * and the report. */
static int gc_local(struct cli *cli, struct gc_opts *go, bool force, bool ignore_lock, bool json)
{
    struct err e = {0};
    struct proc_lock lock = PROC_LOCK_INIT;
    if (force) {
        int rc = prepare_force(cli, ignore_lock, &lock);
        if (rc != EXIT_OK)
            return rc;
    }
    /* A dry run next to a working thinimg: its in-flight devices would look like orphans and
     * two metadata snapshots would step on each other, so the devices are left out. */
    char busy_note[300];
    struct lock_holder holder;
    if (!force && proc_lock_holder(cli->cfg.lock_path, &holder) == 0) {
        char who[200];
        lock_holder_describe(&holder, who, sizeof(who));
        snprintf(busy_note, sizeof(busy_note), "%s is working; run gc when it is idle", who);
        go->skip_devices = busy_note;
    }
    _cleanup_db_ struct db *db = NULL;
    int r = cli_open_db(cli, !force, &db, &e);
    if (r == -ENOENT && !force) {
        if (json)
            printf("{\"mode\": \"dry-run\", \"orphans\": [], \"summary\": \"nothing\"}\n");
        else
            printf("nothing to collect (no database yet)\n");
        return EXIT_OK;
    }
    if (r < 0) {
        proc_lock_release(&lock);
        return cli_fail("gc", r, &e);
    }
    /* Another process works (--ignore-lock): spare what its runs may be using (gc.h). */
    char live_note[256];
    if (force && lock.fd < 0 &&
        gc_live_runs(db, &go->live_since_ms, live_note, sizeof(live_note)) > 0)
        go->live_note = live_note;
    struct gc_report rep;
    r = gc_scan(db, &cli->cfg, go, &rep, &e);
    if (r < 0) {
        proc_lock_release(&lock);
        return cli_fail("gc", r, &e);
    }
    int rc = EXIT_OK;
    if (force) {
        r = gc_apply(db, &cli->cfg, go, &rep, &e);
        if (r < 0)
            rc = cli_fail("gc", r, &e); /* its kind's code: e.g. 5 for a locked database */
    }
    if (json) {
        cli_print_json(gc_report_json(&rep, force));
    } else {
        report_print(&rep, force);
    }
    gc_report_free(&rep);
    proc_lock_release(&lock);
    return rc;
}

int cmd_gc(struct cli *cli, int argc, char **argv)
{
    enum { O_DRY = 256, O_FORCE, O_IGN, O_BLOBS, O_FOREIGN, O_HIST, O_TIMEOUT, O_JSON };
    static const struct option opts[] = {{"dry-run", no_argument, NULL, O_DRY},
                                         {"force", no_argument, NULL, O_FORCE},
                                         {"ignore-lock", no_argument, NULL, O_IGN},
                                         {"blobs", no_argument, NULL, O_BLOBS},
                                         {"include-foreign", no_argument, NULL, O_FOREIGN},
                                         {"history-days", required_argument, NULL, O_HIST},
                                         {"timeout", required_argument, NULL, O_TIMEOUT},
                                         {"json", no_argument, NULL, O_JSON},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    bool force = false, dry = false, ignore_lock = false, json = false;
    struct gc_opts go = {.history_days = DEFAULT_HISTORY_RETENTION_DAYS};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_DRY: dry = true; break;
        case O_FORCE: force = true; break;
        case O_IGN: ignore_lock = true; break;
        case O_BLOBS: go.include_blobs = true; break;
        case O_FOREIGN: go.include_foreign_ids = true; break;
        case O_HIST: {
            /* Whole days, 0 = keep: "-1" or "3x" used to become 4294967295 or 3 silently. */
            char *end = NULL;
            errno = 0;
            long d = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || d < 0 || d > GC_HISTORY_DAYS_MAX)
                return cli_usage_error("gc",
                                       "--history-days needs whole days from 0 (keep) to "
                                       "%d, not '%s'",
                                       GC_HISTORY_DAYS_MAX, optarg);
            go.history_days = (uint32_t)d;
            break;
        }
        case O_TIMEOUT:
            go.op_timeout_ms = atoi(optarg) * 1000;
            if (go.op_timeout_ms <= 0)
                return cli_usage_error("gc", "--timeout needs seconds > 0");
            break;
        case O_JSON: json = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: return cli_bad_option("gc");
        }
    }
    int operands_rc = cli_check_operands("gc", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    if (force && dry)
        return cli_usage_error("gc", "--dry-run and --force exclude each other");

    struct err e = {0};
    struct api_client *api = NULL;
    int dr = api_client_detect(&cli->cfg, &api, &e);
    if (dr > 0) {
        if (ignore_lock)
            fprintf(stderr, "thinimg: gc: --ignore-lock is not needed: the daemon answers and "
                            "runs gc under its own guard\n");
        int rc = gc_remote(api, &go, force, json);
        api_client_free(api);
        return rc;
    }
    if (dr < 0) {
        int rc = refuse_or_warn(ignore_lock, &e,
                                "gc waits for it to answer (--ignore-lock acts without it: "
                                "dangerous)",
                                "Acting behind the back of a daemon that does not answer");
        if (rc != EXIT_OK)
            return rc;
    }
    err_clear(&e);
    return gc_local(cli, &go, force, ignore_lock, json);
}
