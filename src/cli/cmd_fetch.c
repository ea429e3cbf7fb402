/*
 * cmd_fetch.c: `thinimg fetch REF [--json]`: resolve REF, fetch every layer through the fetch
 * machine's queue (durable: a killed fetch resumes where it stopped on the next start),
 * validate, and print each layer's digest. Progress goes to stderr (a bar on a terminal).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_source.h"
#include "cli/run_cmd.h"
#include "cli/table.h"
#include "fsm/fsm.h"
#include "guard/lock.h"
#include "pipeline/fetch.h"
#include "source/ref.h"
#include "util/cleanup.h"
#include "util/defaults.h"
#include "util/redact.h"
#include "util/timeutil.h"

/* How often the progress display refreshes. */
#define FETCH_CLI_TICK_MS 250
/* How long a graceful shutdown waits for running transitions (they resume next time). */
#define FETCH_CLI_SHUTDOWN_MS 10000

static void usage(void)
{
    printf("Usage: thinimg fetch REF [--json] [--jobs N] [--region R] [--endpoint URL]\n"
           "                         [--no-sign-request]\n"
           "\n"
           "Download and validate an image's blobs without unpacking them. REF names a family\n"
           "of layers (s3://bucket/images/golang/), a layer and the ones below it\n"
           "(images/golang/3.tar: layers 1..3), or a single blob (a layer, a docker-archive or\n"
           "an OCI layout). Blobs are stored by digest in STATE/blobs; an interrupted fetch\n"
           "resumes where it stopped. Prints the digest of every layer.\n"
           "\n"
           "Options:\n"
           "  --json              machine-readable output\n"
           "  --jobs N            parallel downloads (default %d)\n" CLI_SOURCE_HELP
           "  -h, --help          this help\n"
           "\n"
           "Exit codes: 0 fetched, 1 failed, 2 usage, 3 refused (not enough space, access\n"
           "denied), 4 not found, 5 busy, 6 rejected (not an image layer, unsafe archive, too\n"
           "large), 130 interrupted (SIGINT/SIGTERM: the fetch resumes where it stopped the\n"
           "next time).\n",
           DEFAULT_FETCH_QUEUE_LIMIT);
}

struct item {
    const struct ref_layer *layer;
    struct fsm_id id;
    bool done;
    enum fsm_outcome outcome;
    enum err_kind kind; /* of the error, as the run stored it */
    char *error;
    struct fetch_result result;
    bool have_result;
    uint64_t progress_done, progress_total;
};

struct find_ctx {
    struct fsm_id *out;
    bool found;
};

static int find_cb(const struct fsm_run_record *r, void *ud)
{
    struct find_ctx *f = ud;
    if (r->status == FSM_RUN_FINISHED)
        return 0;
    *f->out = r->version;
    f->found = true;
    return 1;
}

struct prog_ctx {
    struct item *items;
    size_t n;
};

static int progress_cb(const struct fsm_run_record *r, void *ud)
{
    struct prog_ctx *p = ud;
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->items[i].id.s, r->version.s)) {
            p->items[i].progress_done = r->progress_done;
            p->items[i].progress_total = r->progress_total;
        }
    return 0;
}

static void draw_progress(struct fsm_manager *m, struct item *items, size_t n, bool tty,
                          int64_t t0)
{
    struct prog_ctx p = {items, n};
    fsm_list_active(m, progress_cb, &p);
    uint64_t done = 0, total = 0;
    size_t finished = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t sz = items[i].layer->size;
        total += sz;
        if (items[i].done)
            done += sz, finished++;
        else
            done += items[i].progress_done < sz ? items[i].progress_done : sz;
    }
    char a[32], b[32], rate[32];
    format_bytes(done, a, sizeof(a));
    format_bytes(total, b, sizeof(b));
    double secs = (mono_ms() - t0) / 1000.0;
    format_bytes(secs > 0 ? (uint64_t)(done / secs) : 0, rate, sizeof(rate));
    if (tty) {
        const int width = 30;
        int fill = total ? (int)(width * (double)done / (double)total) : 0;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r[%s] %zu/%zu layers  %s / %s  %s/s   ", bar, finished, n, a, b, rate);
    } else {
        fprintf(stderr, "progress: %zu/%zu layers, %s of %s\n", finished, n, a, b);
    }
}

static json_t *layer_json(const struct item *it, const struct fetch_layer *l)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:b}", "location", it->layer->location,
                          "digest", l->digest, "size", (json_int_t)l->size, "format",
                          blob_format_name(l->format), "path", l->path, "reused",
                          it->result.reused);
    if (l->member)
        json_object_set_new(o, "member", json_string(l->member));
    return o;
}

/* Credentials in the REF's URL stay in memory (pipeline/fetch.h): from here on the
 * locations and names that runs, rows, logs and output carry are without them. */
static int keep_credentials(struct image_ref *ref)
{
    char **plain[] = {&ref->canonical, &ref->source, &ref->family_prefix};
    for (size_t i = 0; i < ARRAY_SIZE(plain); i++) {
        if (!*plain[i])
            continue;
        char *s = url_strip_userinfo(*plain[i]);
        if (!s)
            return -ENOMEM;
        free(*plain[i]);
        *plain[i] = s;
    }
    for (size_t i = 0; i < ref->n_layers; i++) {
        char *s = fetch_credentials_keep(ref->layers[i].location);
        if (!s)
            return -ENOMEM;
        free(ref->layers[i].location);
        ref->layers[i].location = s;
    }
    for (size_t i = 0; i < ref->n_warnings; i++)
        text_strip_userinfo(ref->warnings[i]);
    return 0;
}

int cmd_fetch(struct cli *cli, int argc, char **argv)
{
    bool json = false;
    int jobs = DEFAULT_FETCH_QUEUE_LIMIT;
    struct source_options so = {0};
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"jobs", required_argument, NULL, 'J'},
                                         {"help", no_argument, NULL, 'h'},
                                         CLI_SOURCE_LONG_OPTIONS,
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            json = true;
        else if (c == 'J') {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!end || *end || v < 1 || v > 64)
                return cli_usage_error("fetch", "--jobs needs a number from 1 to 64");
            jobs = (int)v;
        } else if (c == 'h') {
            usage();
            return EXIT_OK;
        } else if (!cli_source_option(c, optarg, &so))
            return cli_bad_option("fetch");
    }
    if (argc - optind != 1)
        return cli_usage_error("fetch", "name exactly one REF");
    const char *refarg = argv[optind];

    struct err e = {0};
    struct image_ref ref = {0};
    int r = ref_resolve(refarg, cli->cfg.source, &so, &ref, &e);
    text_strip_userinfo(e.msg);
    if (r < 0)
        return cli_fail("fetch", r, &e);
    r = keep_credentials(&ref);
    if (r < 0) {
        image_ref_free(&ref);
        return cli_fail("fetch", r, NULL);
    }
    for (size_t i = 0; i < ref.n_warnings; i++)
        fprintf(stderr, "warning: %s\n", ref.warnings[i]);
    if (!cli->quiet)
        fprintf(stderr, "fetching %s (%s): %zu blob%s\n", ref.name, ref.canonical, ref.n_layers,
                ref.n_layers == 1 ? "" : "s");

    struct err de = {0};
    r = config_ensure_dirs(&cli->cfg, &de);
    if (r < 0) {
        image_ref_free(&ref);
        return cli_fail("fetch", r, &de);
    }
    struct proc_lock lock = PROC_LOCK_INIT;
    r = proc_lock_acquire(cli->cfg.lock_path, "fetch", 0, &lock, NULL, &e);
    if (r < 0) {
        image_ref_free(&ref);
        return cli_fail("fetch", r, &e);
    }
    struct db *db = NULL;
    r = cli_open_db(cli, false, &db, &e);
    if (r < 0) {
        proc_lock_release(&lock);
        image_ref_free(&ref);
        return cli_fail("fetch", r, &e);
    }
    struct fsm_queue_cfg queues[] = {{FETCH_QUEUE, jobs}};
    struct fsm_config fcfg = {.queues = queues, .n_queues = 1,
                              .history_retention_days = DEFAULT_HISTORY_RETENTION_DAYS,
                              .history_retention_runs = DEFAULT_HISTORY_RETENTION_RUNS};
    struct fsm_manager *m = NULL;
    struct fsm_machine *machine = NULL;
    struct fetch_context *ctx = NULL;
    struct fetch_config cfg = {.blob_dir = cli->cfg.blob_dir, .tmp_dir = cli->cfg.tmp_dir,
                               .source = so, .policy = archive_policy_default()};
    r = fsm_manager_open(db, &fcfg, &m, &e);
    if (r == 0)
        r = fetch_register(m, &cfg, &machine, &ctx);
    if (r == 0)
        r = fsm_manager_resume(m); /* may return how many runs it resumed */
    if (r > 0)
        r = 0;
    run_catch_signals();
    struct item *items = calloc(ref.n_layers, sizeof(*items));
    if (r == 0 && !items)
        r = -ENOMEM;
    /* One run per location: an unfinished run from an interrupted fetch (resumed above) is
     * joined rather than duplicated. */
    for (size_t i = 0; r == 0 && i < ref.n_layers; i++) {
        struct item *it = &items[i];
        it->layer = &ref.layers[i];
        struct find_ctx f = {&it->id, false};
        struct fsm_list_filter flt = {.type = FETCH_MACHINE_TYPE,
                                      .resource_id = it->layer->location};
        r = fsm_db_list_runs(db, &flt, find_cb, &f);
        if (r < 0)
            break;
        r = 0;
        if (f.found) {
            fprintf(stderr, "resuming the interrupted fetch of %s\n", it->layer->location);
            continue;
        }
        _cleanup_free_ char *req = NULL;
        size_t len = 0;
        r = fetch_request_build(it->layer->location, it->layer->etag, it->layer->size, &req,
                                &len);
        if (r == 0) {
            struct fsm_start_opts so2 = {.queue = FETCH_QUEUE};
            r = fsm_start(m, machine, it->layer->location, req, len, &so2, &it->id);
        }
    }
    int rc = EXIT_OK;
    if (r < 0) {
        rc = cli_fail("fetch", r, &e);
        goto out;
    }

    /* Wait, with progress. */
    int64_t t0 = mono_ms(), last_draw = 0;
    bool progress = !cli->quiet && !json;
    size_t remaining = ref.n_layers;
    while (remaining) {
        if (run_env_interrupted()) {
            /* The shutdown below stops the transfers; their runs and partial files stay
             * recorded and the next start resumes them. */
            if (progress && cli->tty)
                fputc('\n', stderr);
            fprintf(stderr,
                    "thinimg: fetch: interrupted; %zu unfinished fetch%s resume%s where "
                    "%s stopped the next time thinimg runs (e.g. the same command again)\n",
                    remaining, remaining == 1 ? "" : "es", remaining == 1 ? "s" : "",
                    remaining == 1 ? "it" : "they");
            rc = EXIT_INTERRUPTED;
            goto out;
        }
        for (size_t i = 0; i < ref.n_layers; i++) {
            struct item *it = &items[i];
            if (it->done)
                continue;
            r = fsm_wait_kind(m, &it->id, remaining > 1 ? 0 : FETCH_CLI_TICK_MS, &it->outcome,
                              &it->kind, &it->error);
            if (r == -ETIMEDOUT)
                continue;
            it->done = true;
            remaining--;
            if (r < 0) {
                it->outcome = FSM_ABORT;
                it->kind = err_kind_of(r);
                free(it->error);
                it->error = strdup(strerror(-r));
                continue;
            }
            if (fsm_outcome_success(it->outcome)) {
                struct fsm_run_record rec;
                if (fsm_db_get_run(db, &it->id, &rec) == 0) {
                    struct err pe = {0};
                    it->have_result = fetch_response_parse(rec.response, rec.response_len,
                                                           &it->result, &pe) == 0;
                    fsm_run_record_free(&rec);
                }
            }
            if (progress && !cli->tty)
                fprintf(stderr, "%s %s%s%s\n", it->layer->location,
                        fsm_outcome_success(it->outcome) ? "fetched " : "failed: ",
                        fsm_outcome_success(it->outcome) && it->have_result ? it->result.digest
                                                                            : "",
                        fsm_outcome_success(it->outcome) ? "" : it->error ? it->error : "");
        }
        if (progress && mono_ms() - last_draw >= (cli->tty ? FETCH_CLI_TICK_MS : 5000)) {
            if (cli->tty || remaining)
                draw_progress(m, items, ref.n_layers, cli->tty, t0);
            last_draw = mono_ms();
        }
        if (remaining > 1)
            sleep_ms(FETCH_CLI_TICK_MS / 5);
    }
    if (progress && cli->tty) {
        draw_progress(m, items, ref.n_layers, true, t0);
        fputc('\n', stderr);
    }

    /* Results. */
    /* The exit code comes from the failures' kinds: a rejected blob wins (the input is bad),
     * else the first failure's kind (not found 4, no space 3, ...). */
    bool rejected = false, failed = false;
    int first_failure = 0;
    for (size_t i = 0; i < ref.n_layers; i++) {
        struct item *it = &items[i];
        if (fsm_outcome_success(it->outcome) && it->have_result)
            continue;
        if (!failed)
            first_failure = it->outcome == FSM_CANCELLED ? -EIO : err_kind_errno(it->kind);
        failed = true;
        if (it->kind == ERR_KIND_REJECTED)
            rejected = true;
        const char *msg = it->error && *it->error ? it->error : fsm_outcome_name(it->outcome);
        fprintf(stderr, "thinimg: fetch: %s: %s\n", it->layer->location, msg);
    }
    if (json) {
        json_t *root = json_pack("{s:s, s:s, s:s, s:b}", "image", ref.name, "ref", ref.canonical,
                                 "kind", ref_kind_name(ref.kind), "ok", !failed);
        json_t *layers = json_array();
        for (size_t i = 0; i < ref.n_layers; i++)
            for (size_t k = 0; items[i].have_result && k < items[i].result.n_layers; k++)
                json_array_append_new(layers, layer_json(&items[i], &items[i].result.layers[k]));
        json_object_set_new(root, "layers", layers);
        if (items[0].have_result && items[0].result.repo_tag)
            json_object_set_new(root, "repo_tag", json_string(items[0].result.repo_tag));
        json_dumpf(root, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(root);
    } else if (!failed) {
        struct table t = TABLE_INIT;
        table_header(&t, "LAYER", "DIGEST", "SIZE", "FORMAT", "FROM", NULL);
        size_t n = 0;
        for (size_t i = 0; i < ref.n_layers; i++)
            for (size_t k = 0; k < items[i].result.n_layers; k++) {
                const struct fetch_layer *l = &items[i].result.layers[k];
                char idx[16], size[32];
                snprintf(idx, sizeof(idx), "%zu", ++n);
                format_bytes(l->size, size, sizeof(size));
                _cleanup_free_ char *from = NULL;
                if (asprintf(&from, "%s%s%s%s", items[i].layer->location, l->member ? "#" : "",
                             l->member ? l->member : "", items[i].result.reused ? " (cached)"
                                                                                 : "") < 0)
                    from = NULL;
                table_row(&t, idx, l->digest, size, blob_format_name(l->format),
                          from ? from : "", NULL);
            }
        table_print(&t, stdout);
        table_free(&t);
    }
    rc = !failed ? EXIT_OK : rejected ? EXIT_REJECTED : cli_exit_code(first_failure);

out:
    if (m) {
        fsm_manager_shutdown(m, FETCH_CLI_SHUTDOWN_MS);
        fsm_manager_close(m);
    }
    fetch_context_free(ctx);
    for (size_t i = 0; items && i < ref.n_layers; i++) {
        free(items[i].error);
        fetch_result_free(&items[i].result);
    }
    free(items);
    db_close(db);
    proc_lock_release(&lock);
    image_ref_free(&ref);
    fetch_credentials_forget();
    return rc;
}
