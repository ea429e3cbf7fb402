/*
 * cmd_runs.c: `thinimg runs`: the workflow runs recorded in the database, `thinimg runs
 * show VERSION`: one run with its event history, `runs cancel`, and `runs prune`: the
 * retention policy for finished runs applied now.
 *
 * Listing and show are read-only: the database is opened read-only, so they work next to a
 * running daemon (WAL readers never block the writer) and never change anything. What they show
 * is the durable state: a run's current transition and attempt as of its last checkpoint or
 * recorded error. `runs prune` deletes finished runs only, which no machine touches again, so
 * it too works next to a daemon.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/table.h"
#include "daemon/client.h"
#include "daemon/views.h"
#include "fsm/fsm.h"
#include "util/defaults.h"
#include "util/parse.h"
#include "util/timeutil.h"

/* With --all, the newest runs only unless --limit says otherwise: a long-lived host has
 * thousands of finished runs and a table of all of them helps nobody. */
#define RUNS_DEFAULT_ALL_LIMIT 100
/* Width of the ERROR column in the table (the full text is in --json and `runs show`). */
#define RUNS_ERROR_WIDTH 60
/* `runs cancel` asks the daemon, which records the request at once: a short exchange. */
#define RUNS_CANCEL_TIMEOUT_MS 10000

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg runs [--all] [--json] [--type TYPE] [--resource ID] [--limit N]\n"
            "                    [--after VERSION]\n"
            "       thinimg runs show VERSION [--json]\n"
            "       thinimg runs cancel VERSION\n"
            "       thinimg runs prune [--older-than DAYS] [--keep N] [--dry-run]\n"
            "\n"
            "List workflow runs (durable state machines): pending and running ones by\n"
            "default, oldest first; with --all also finished ones, newest first (the newest\n"
            "%d unless --limit is given). `runs show` prints one run and its events.\n"
            "`runs cancel` asks the daemon to cancel a pending or running run (a run stuck\n"
            "listing or downloading stops; it ends with outcome cancelled).\n"
            "`runs prune` deletes finished runs (and their events) older than DAYS (default\n"
            "%d; 0 = any age) or beyond the newest N (default %d; 0 = any number), the policy\n"
            "the daemon and every command apply hourly; --dry-run counts them.\n"
            "\n"
            "Options:\n"
            "  -a, --all            include finished runs\n"
            "  -t, --type TYPE      only runs of this machine type (e.g. fetch, unpack)\n"
            "  -r, --resource ID    only runs about this resource id\n"
            "  -n, --limit N        at most N runs (0 = no limit)\n"
            "      --after VERSION  the runs after VERSION in this order (the last one shown;\n"
            "                       a full page says how to ask for the next)\n"
            "      --json           machine-readable output\n"
            "  -h, --help           this help\n"
            "\n"
            "Columns: VERSION (the run id), MACHINE (type/action), RESOURCE, STATE (current\n"
            "transition, or the end state), STATUS (pending, running, finished), ATTEMPT\n"
            "(failed attempts of the current transition), OUTCOME (ok, retry, abort,\n"
            "unrecoverable, handoff, cancelled), AGE, ERROR (last error).\n"
            "\n"
            "Exit codes: 0 ok, 1 no daemon (cancel), 2 usage, 4 no database or no such run,\n"
            "5 the run has already finished (cancel).\n",
            RUNS_DEFAULT_ALL_LIMIT, DEFAULT_HISTORY_RETENTION_DAYS, DEFAULT_HISTORY_RETENTION_RUNS);
}

static const char *outcome_or_dash(const struct fsm_run_record *r)
{
    return r->status == FSM_RUN_FINISHED ? fsm_outcome_name(r->outcome) : "-";
}

struct list_ctx {
    bool json;
    json_t *arr;
    struct table t;
    int64_t now;
    size_t n;
    struct cli_page page;
};

static int list_one(const struct fsm_run_record *r, void *ud)
{
    struct list_ctx *c = ud;
    if (!cli_page_row(&c->page, r->version.s))
        return 1;
    c->n++;
    if (c->json)
        return json_array_append_new(c->arr, view_run(r, false)) < 0 ? -ENOMEM : 0;
    char machine[256], attempt[16], age[32], error[RUNS_ERROR_WIDTH + 4];
    snprintf(machine, sizeof(machine), "%s/%s", r->type, r->action);
    snprintf(attempt, sizeof(attempt), "%u", r->attempt);
    format_duration_ms(c->now - r->created_ms, age, sizeof(age));
    if (strlen(r->error) > RUNS_ERROR_WIDTH)
        snprintf(error, sizeof(error), "%.*s...", RUNS_ERROR_WIDTH - 3, r->error);
    else
        snprintf(error, sizeof(error), "%s", r->error);
    for (char *p = error; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    return table_row(&c->t, r->version.s, machine, r->resource_id, r->state,
                     fsm_run_status_name(r->status), attempt, outcome_or_dash(r), age, error, NULL);
}

static int list_runs(struct cli *cli, const struct fsm_list_filter *filter, bool json)
{
    struct err e = {0};
    _cleanup_db_ struct db *db = NULL;
    int r = cli_open_db(cli, true, &db, &e);
    if (r < 0)
        return cli_fail("runs", r, &e);
    struct list_ctx c = {.json = json,
                         .t = TABLE_INIT,
                         .now = now_ms(),
                         .page = {.limit = filter->limit}};
    struct fsm_list_filter fl = *filter, *f = &fl;
    fl.limit = cli_page_ask(&c.page);
    if (json)
        c.arr = json_array();
    else
        table_header(&c.t, "VERSION", "MACHINE", "RESOURCE", "STATE", "STATUS", "ATTEMPT",
                     "OUTCOME", "AGE", "ERROR", NULL);
    r = fsm_db_list_runs(db, f, list_one, &c);
    if (r < 0) {
        table_free(&c.t);
        json_decref(c.arr);
        free(c.page.last);
        return cli_fail("runs", r, NULL);
    }
    if (json) {
        r = cli_print_json(c.arr);
    } else {
        if (c.n == 0) {
            if (!cli->quiet)
                printf("no %sruns\n", f->include_finished ? "" : "pending or running ");
        } else {
            table_print(&c.t, stdout);
        }
        table_free(&c.t);
        r = EXIT_OK;
    }
    cli_page_done(cli, f->include_finished ? "runs --all" : "runs", &c.page);
    return r;
}

/* ---- runs show --------------------------------------------------------------------------- */

struct events_ctx {
    bool json;
    json_t *arr;
    struct table t;
};

static int event_one(const struct fsm_event_record *ev, void *ud)
{
    struct events_ctx *c = ud;
    if (c->json)
        return json_array_append_new(c->arr, view_event(ev)) < 0 ? -ENOMEM : 0;
    char seq[24], ts[40], attempt[16];
    snprintf(seq, sizeof(seq), "%lld", (long long)ev->seq);
    format_rfc3339_ms(ev->ts_ms, ts, sizeof(ts));
    snprintf(attempt, sizeof(attempt), "%u", ev->attempt);
    return table_row(&c->t, seq, ts, fsm_event_type_name(ev->type), ev->state ? ev->state : "",
                     attempt, ev->has_outcome ? fsm_outcome_name(ev->outcome) : "",
                     ev->error ? ev->error : "", NULL);
}

static void print_time(const char *label, int64_t ms, int64_t now)
{
    if (!ms) {
        printf("%-12s -\n", label);
        return;
    }
    char ts[40], ago[32];
    format_rfc3339_ms(ms, ts, sizeof(ts));
    format_duration_ms(now - ms, ago, sizeof(ago));
    printf("%-12s %s (%s ago)\n", label, ts, ago);
}

static void print_bytes(const char *label, const void *p, size_t n)
{
    if (!p || n == 0) {
        printf("%-12s -\n", label);
        return;
    }
    bool text = true;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = ((const unsigned char *)p)[i];
        if (ch < 0x20 && ch != '\n' && ch != '\t')
            text = false;
    }
    if (text)
        printf("%-12s %.*s (%zu bytes)\n", label, (int)n, (const char *)p, n);
    else
        printf("%-12s (%zu bytes of binary data)\n", label, n);
}

static void print_run(const struct fsm_run_record *r)
{
    int64_t now = now_ms();
    printf("%-12s %s\n", "run", r->version.s);
    printf("%-12s %s/%s\n", "machine", r->type, r->action);
    printf("%-12s %s\n", "resource", r->resource_id);
    printf("%-12s %s\n", "queue", r->queue ? r->queue : "-");
    printf("%-12s %s\n", "parent", fsm_id_is_zero(&r->parent) ? "-" : r->parent.s);
    printf("%-12s %s\n", "run after", fsm_id_is_zero(&r->run_after) ? "-" : r->run_after.s);
    if (r->status == FSM_RUN_FINISHED)
        printf("%-12s finished, outcome %s\n", "status", fsm_outcome_name(r->outcome));
    else
        printf("%-12s %s\n", "status", fsm_run_status_name(r->status));
    if (r->status == FSM_RUN_FINISHED)
        printf("%-12s %s\n", "state", r->state);
    else
        printf("%-12s %s (attempt %u)\n", "state", r->state, r->attempt);
    printf("%-12s", "transitions");
    for (size_t i = 0; i < r->n_transitions; i++)
        printf("%s%s%s%s", i ? " > " : " ", i == r->next_index ? "[" : "", r->transitions[i],
               i == r->next_index ? "]" : "");
    printf("\n");
    if (r->error[0]) {
        printf("%-12s %s%s%s%s\n", "error", r->error, r->error_state ? " (in " : "",
               r->error_state ? r->error_state : "", r->error_state ? ")" : "");
        printf("%-12s %s\n", "error kind", err_kind_name(r->error_kind));
    }
    print_time("created", r->created_ms, now);
    if (r->delay_until_ms)
        print_time("not before", r->delay_until_ms, now);
    print_time("started", r->started_ms, now);
    print_time("finished", r->finished_ms, now);
    print_bytes("request", r->request, r->request_len);
    print_bytes("response", r->response, r->response_len);
}

/* 0 with *v, or the usage error's exit code. */
static int parse_version(const char *version, struct fsm_id *v)
{
    if (fsm_id_parse(version, v) < 0)
        return cli_usage_error("runs",
                               "'%s' is not a run version (26 characters, as listed by"
                               " `thinimg runs --all`)",
                               version);
    return 0;
}

static int show_run(struct cli *cli, const char *version, bool json)
{
    struct fsm_id v;
    int rc = parse_version(version, &v);
    if (rc)
        return rc;
    struct err e = {0};
    _cleanup_db_ struct db *db = NULL;
    int r = cli_open_db(cli, true, &db, &e);
    if (r < 0)
        return cli_fail("runs", r, &e);
    struct fsm_run_record rec;
    r = fsm_db_get_run(db, &v, &rec);
    if (r == -ENOENT)
        return cli_failf("runs", EXIT_NOTFOUND,
                         "no run %s in %s (finished runs are pruned after the retention period;"
                         " list them with `thinimg runs --all`)",
                         v.s, db_path(db));
    if (r < 0)
        return cli_fail("runs", r, NULL);
    struct events_ctx c = {.json = json, .t = TABLE_INIT};
    if (json)
        c.arr = json_array();
    else
        table_header(&c.t, "SEQ", "TIME", "EVENT", "STATE", "ATTEMPT", "OUTCOME", "ERROR", NULL);
    r = fsm_db_list_events(db, &v, event_one, &c);
    if (r < 0) {
        fsm_run_record_free(&rec);
        table_free(&c.t);
        json_decref(c.arr);
        return cli_fail("runs", r, NULL);
    }
    if (json) {
        json_t *o = view_run(&rec, true);
        json_object_set_new(o, "events", c.arr);
        fsm_run_record_free(&rec);
        return cli_print_json(o);
    }
    print_run(&rec);
    printf("\n");
    table_print(&c.t, stdout);
    table_free(&c.t);
    fsm_run_record_free(&rec);
    return EXIT_OK;
}

/* ---- runs cancel ------------------------------------------------------------------------- */

/* Runs are driven by the process that holds the state directory: cancelling is a request to
 * the daemon (a foreground command is stopped with Ctrl-C instead). */
static int cancel_run(struct cli *cli, const char *version)
{
    struct fsm_id v;
    int rc = parse_version(version, &v);
    if (rc)
        return rc;
    struct err e = {0};
    struct api_client *api = NULL;
    int r = api_client_detect(&cli->cfg, &api, &e);
    if (r < 0)
        return cli_fail("runs", r, &e);
    if (r == 0)
        return cli_failf("runs", EXIT_FAIL,
                         "no daemon serves this state directory: only the daemon's runs can be "
                         "cancelled; stop a foreground command with Ctrl-C (its runs resume at "
                         "the next start)");
    char path[64];
    snprintf(path, sizeof(path), "/v1/runs/%s/cancel", v.s);
    long status = 0;
    json_t *reply = NULL;
    r = api_call(api, "POST", path, NULL, RUNS_CANCEL_TIMEOUT_MS, &status, &reply, &e);
    api_client_free(api);
    if (r == 0 && (status < 200 || status > 299))
        r = api_reply_error(status, reply, &e);
    json_decref(reply);
    if (r < 0)
        return cli_fail("runs", r, &e);
    if (!cli->quiet)
        printf("run %s: cancel requested\n", v.s);
    return EXIT_OK;
}

/* ---- runs prune -------------------------------------------------------------------------- */

static int prune_runs(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"older-than", required_argument, NULL, 'o'},
                                         {"keep", required_argument, NULL, 'k'},
                                         {"dry-run", no_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    uint64_t days = DEFAULT_HISTORY_RETENTION_DAYS, keep = DEFAULT_HISTORY_RETENTION_RUNS;
    bool dry = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
        case 'k': {
            uint64_t *v = c == 'o' ? &days : &keep;
            if (parse_u64(optarg, v) < 0 || *v > UINT32_MAX)
                return cli_usage_error("runs", "--%s needs a number >= 0, not '%s'",
                                       c == 'o' ? "older-than" : "keep", optarg);
            break;
        }
        case 'd':
            dry = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_bad_option("runs");
        }
    }
    if (optind < argc)
        return cli_usage_error("runs", "unexpected argument '%s'", argv[optind]);
    if (days == 0 && keep == 0)
        return cli_usage_error("runs", "--older-than 0 --keep 0 would keep every run: nothing "
                                       "to prune");
    struct db *db = NULL;
    struct err e = {0};
    int r = cli_open_db(cli, dry, &db, &e);
    if (r < 0)
        return cli_fail("runs", r, &e);
    int64_t cutoff = days ? now_ms() - (int64_t)days * 86400000LL : 0;
    r = dry ? fsm_db_prune_count(db, cutoff, (uint32_t)keep)
            : fsm_db_prune(db, cutoff, (uint32_t)keep);
    db_close(db);
    if (r < 0) {
        err_set(&e, r, "cannot prune runs in %s: %s", cli->cfg.db_path, strerror(-r));
        return cli_fail("runs", r, &e);
    }
    if (!cli->quiet)
        printf("%s %d finished run%s (older than %" PRIu64 " days or beyond the newest %" PRIu64
               ")\n",
               dry ? "would prune" : "pruned", r, r == 1 ? "" : "s", days, keep);
    return EXIT_OK;
}

int cmd_runs(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"all", no_argument, NULL, 'a'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"type", required_argument, NULL, 't'},
                                         {"resource", required_argument, NULL, 'r'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {"after", required_argument, NULL, 'A'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct fsm_list_filter f = {0};
    struct fsm_id after = {0};
    bool json = false, limit_given = false;
    int c;
    while ((c = getopt_long(argc, argv, "+at:r:n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            f.include_finished = true;
            break;
        case 'j':
            json = true;
            break;
        case 't':
            f.type = optarg;
            break;
        case 'r':
            f.resource_id = optarg;
            break;
        case 'n': {
            uint64_t n = 0;
            if (parse_u64(optarg, &n) < 0 || n > SIZE_MAX)
                return cli_usage_error("runs", "--limit needs a number >= 0, not '%s'", optarg);
            f.limit = (size_t)n;
            limit_given = true;
            break;
        }
        case 'A':
            if (fsm_id_parse(optarg, &after) < 0)
                return cli_usage_error("runs", "--after needs a run VERSION, not '%s'", optarg);
            f.after = &after;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_bad_option("runs");
        }
    }
    if (optind < argc && !strcmp(argv[optind], "show")) {
        /* `runs show VERSION [--json]`: options may follow the version. */
        const char *version = NULL;
        for (int i = optind + 1; i < argc; i++) {
            if (!strcmp(argv[i], "--json"))
                json = true;
            else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
                usage(stdout);
                return EXIT_OK;
            } else if (argv[i][0] == '-')
                return cli_usage_error("runs", "unknown option '%s' for `runs show`", argv[i]);
            else if (version)
                return cli_usage_error("runs", "`runs show` takes one version");
            else
                version = argv[i];
        }
        if (!version)
            return cli_usage_error("runs", "`runs show` needs a run VERSION");
        return show_run(cli, version, json);
    }
    if (optind < argc && !strcmp(argv[optind], "prune"))
        return prune_runs(cli, argc - optind, argv + optind);
    if (optind < argc && !strcmp(argv[optind], "cancel")) {
        if (optind + 2 != argc)
            return cli_usage_error("runs", "`runs cancel` takes one run VERSION");
        return cancel_run(cli, argv[optind + 1]);
    }
    if (optind < argc)
        return cli_usage_error("runs", "unexpected argument '%s'", argv[optind]);
    if (f.include_finished && !limit_given)
        f.limit = RUNS_DEFAULT_ALL_LIMIT;
    return list_runs(cli, &f, json);
}
