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
#include "pipeline/host.h"
#include "pipeline/fetch.h"
#include "source/ref.h"
#include "util/cleanup.h"
#include "util/defaults.h"
#include "util/redact.h"
#include "util/timeutil.h"

/* How often the progress display refreshes. */
#define FETCH_CLI_TICK_MS 250

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg fetch REF [--json] [--jobs N] [--region R] [--endpoint URL]\n"
            "                         [--no-sign-request] [--download-streams N]\n"
            "                         [--platform OS/ARCH[/VARIANT]]\n"
            "                         [--insecure-registry HOST[:PORT]]\n"
            "\n"
            "Download and validate an image's blobs without unpacking them. REF names a family\n"
            "of layers (s3://bucket/images/golang/), a layer and the ones below it\n"
            "(images/golang/3.tar: layers 1..3), or a single blob (a layer, a docker-archive or\n"
            "an OCI layout). Blobs are stored by digest in STATE/blobs. Each byte is downloaded\n"
            "once: an object whose identity (S3 ETag and size, an HTTP strong ETag and size, a\n"
            "local file's device, inode, size and mtime) matches a stored blob reuses it without\n"
            "a GET, layers of one identity fetched at once are downloaded by one of them (the\n"
            "others wait and take its blob), an interrupted fetch resumes at the byte it\n"
            "stopped at (in ranges: each range at its byte; after a reboot at its last\n"
            "fdatasync'ed byte), and an object of 64 MiB or more comes as parallel ranged GETs\n"
            "(s3, http). Prints the digest of every layer (--json: and the bytes downloaded,\n"
            "resumed and reused).\n"
            "\n"
            "Options:\n"
            "  --json              machine-readable output\n"
            "  --jobs N            parallel downloads (default %d)\n" CLI_SOURCE_HELP
            "  -h, --help          this help\n"
            "\n"
            "Exit codes: 0 fetched, 1 failed, 2 usage, 3 refused (not enough space, access\n"
            "denied), 4 not found, 5 busy, 6 rejected (not an image layer, unsafe archive, too\n"
            "large), 7 database corrupt, 8 read-only state directory, 130 interrupted\n"
            "(SIGINT/SIGTERM: the fetch resumes where it stopped the next time).\n",
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

static void draw_progress(struct fsm_manager *m, struct item *items, size_t n, bool tty, int64_t t0)
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
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:s, s:s, s:b}", "location", it->layer->location, "digest",
                  l->digest, "size", (json_int_t)l->size, "format", blob_format_name(l->format),
                  "path", l->path, "reused", it->result.reused);
    if (l->member)
        json_object_set_new(o, "member", json_string(l->member));
    else /* the blob's own bytes (an archive's members share its download) */
        json_object_set_new(o, "bytes",
                            fetch_bytes_json(it->result.bytes_downloaded, it->result.bytes_resumed,
                                             it->result.bytes_reused));
    if (l->diff_id[0])
        json_object_set_new(o, "diff_id", json_string(l->diff_id));
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

/* One `thinimg fetch`: the resolved REF, a run per layer, and the host they run on. */
struct fetch_cmd {
    struct cli *cli;
    bool json, progress;
    struct image_ref ref;
    struct item *items; /* ref.n_layers */
    struct host h;
};

/* Resolve REF; the credentials in it stay in memory only. An exit code. */
static int resolve(struct fetch_cmd *f, const char *refarg, const struct source_options *so)
{
    struct err e = {0};
    int r = ref_resolve(refarg, f->cli->cfg.source, so, &f->ref, &e);
    text_strip_userinfo(e.msg);
    if (r < 0)
        return cli_fail("fetch", r, &e);
    r = keep_credentials(&f->ref);
    if (r < 0)
        return cli_fail("fetch", r, NULL);
    for (size_t i = 0; i < f->ref.n_warnings; i++)
        fprintf(stderr, "warning: %s\n", f->ref.warnings[i]);
    if (!f->cli->quiet)
        fprintf(stderr, "fetching %s (%s): %zu blob%s\n", f->ref.name, f->ref.canonical,
                f->ref.n_layers, f->ref.n_layers == 1 ? "" : "s");
    return EXIT_OK;
}

/* One run per location: an unfinished run from an interrupted fetch (resumed when the host
 * opened) is joined rather than duplicated. */
static int start_runs(struct fetch_cmd *f)
{
    f->items = calloc(f->ref.n_layers, sizeof(*f->items));
    if (!f->items)
        return -ENOMEM;
    for (size_t i = 0; i < f->ref.n_layers; i++) {
        struct item *it = &f->items[i];
        it->layer = &f->ref.layers[i];
        struct find_ctx fc = {&it->id, false};
        struct fsm_list_filter flt = {.type = FETCH_MACHINE_TYPE,
                                      .resource_id = it->layer->location};
        int r = fsm_db_list_runs(f->h.db, &flt, find_cb, &fc);
        if (r < 0)
            return r;
        if (fc.found) {
            fprintf(stderr, "resuming the interrupted fetch of %s\n", it->layer->location);
            continue;
        }
        _cleanup_free_ char *req = NULL;
        size_t len = 0;
        /* A registry image's config declares each layer's diff id: checked by validate. */
        const char *diff_id = f->ref.n_diff_ids == f->ref.n_layers ? f->ref.diff_ids[i] : NULL;
        r = fetch_request_build(it->layer->location, it->layer->etag, it->layer->size, diff_id,
                                &req, &len);
        if (r < 0)
            return r;
        struct fsm_start_opts so = {.queue = FETCH_QUEUE};
        r = fsm_start(f->h.mgr, f->h.fetch, it->layer->location, req, len, &so, &it->id);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The run of it has finished (r from fsm_wait_kind): its outcome and result. */
static void finish_item(struct fetch_cmd *f, struct item *it, int r)
{
    it->done = true;
    if (r < 0) {
        it->outcome = FSM_ABORT;
        it->kind = err_kind_of(r);
        free(it->error);
        it->error = strdup(strerror(-r));
        return;
    }
    bool ok = fsm_outcome_success(it->outcome);
    if (ok) {
        struct fsm_run_record rec;
        if (fsm_db_get_run(f->h.db, &it->id, &rec) == 0) {
            struct err pe = {0};
            it->have_result =
                fetch_response_parse(rec.response, rec.response_len, &it->result, &pe) == 0;
            fsm_run_record_free(&rec);
        }
    }
    if (f->progress && !f->cli->tty)
        fprintf(stderr, "%s %s%s%s\n", it->layer->location,
                ok ? "fetched " : "failed: ", ok && it->have_result ? it->result.digest : "",
                ok          ? ""
                : it->error ? it->error
                            : "");
}

/* Wait for every run, with progress: EXIT_OK, or EXIT_INTERRUPTED on SIGINT/SIGTERM. */
static int wait_runs(struct fetch_cmd *f)
{
    size_t n = f->ref.n_layers, remaining = n;
    bool tty = f->cli->tty;
    int64_t t0 = mono_ms(), last_draw = 0;
    while (remaining) {
        if (run_env_interrupted()) {
            /* The shutdown that follows stops the transfers; their runs and partial files
             * stay recorded and the next start resumes them. */
            if (f->progress && tty)
                fputc('\n', stderr);
            fprintf(stderr,
                    "thinimg: fetch: interrupted; %zu unfinished fetch%s resume%s where "
                    "%s stopped the next time thinimg runs (e.g. the same command again)\n",
                    remaining, remaining == 1 ? "" : "es", remaining == 1 ? "s" : "",
                    remaining == 1 ? "it" : "they");
            return EXIT_INTERRUPTED;
        }
        for (size_t i = 0; i < n; i++) {
            struct item *it = &f->items[i];
            if (it->done)
                continue;
            int r = fsm_wait_kind(f->h.mgr, &it->id, remaining > 1 ? 0 : FETCH_CLI_TICK_MS,
                                  &it->outcome, &it->kind, &it->error);
            if (r == -ETIMEDOUT)
                continue;
            remaining--;
            finish_item(f, it, r);
        }
        if (f->progress && mono_ms() - last_draw >= (tty ? FETCH_CLI_TICK_MS : 5000)) {
            if (tty || remaining)
                draw_progress(f->h.mgr, f->items, n, tty, t0);
            last_draw = mono_ms();
        }
        if (remaining > 1)
            sleep_ms(FETCH_CLI_TICK_MS / 5);
    }
    if (f->progress && tty) {
        draw_progress(f->h.mgr, f->items, n, true, t0);
        fputc('\n', stderr);
    }
    return EXIT_OK;
}

static void print_json_result(const struct fetch_cmd *f, bool failed)
{
    json_t *root = json_pack("{s:s, s:s, s:s, s:b}", "image", f->ref.name, "ref", f->ref.canonical,
                             "kind", ref_kind_name(f->ref.kind), "ok", !failed);
    json_t *layers = json_array();
    uint64_t down = 0, resumed = 0, reused = 0;
    for (size_t i = 0; i < f->ref.n_layers; i++) {
        const struct fetch_result *fr = &f->items[i].result;
        for (size_t k = 0; f->items[i].have_result && k < fr->n_layers; k++)
            json_array_append_new(layers, layer_json(&f->items[i], &fr->layers[k]));
        if (f->items[i].have_result) {
            down += fr->bytes_downloaded;
            resumed += fr->bytes_resumed;
            reused += fr->bytes_reused;
        }
    }
    json_object_set_new(root, "layers", layers);
    json_object_set_new(root, "bytes", fetch_bytes_json(down, resumed, reused));
    if (f->items[0].have_result && f->items[0].result.repo_tag)
        json_object_set_new(root, "repo_tag", json_string(f->items[0].result.repo_tag));
    cli_print_json(root);
}

static void print_table(const struct fetch_cmd *f)
{
    struct table t = TABLE_INIT;
    table_header(&t, "LAYER", "DIGEST", "SIZE", "FORMAT", "FROM", NULL);
    size_t n = 0;
    for (size_t i = 0; i < f->ref.n_layers; i++) {
        const struct item *it = &f->items[i];
        for (size_t k = 0; k < it->result.n_layers; k++) {
            const struct fetch_layer *l = &it->result.layers[k];
            char idx[16], size[32];
            snprintf(idx, sizeof(idx), "%zu", ++n);
            format_bytes(l->size, size, sizeof(size));
            _cleanup_free_ char *from = NULL;
            if (asprintf(&from, "%s%s%s%s", it->layer->location, l->member ? "#" : "",
                         l->member ? l->member : "", it->result.reused ? " (cached)" : "") < 0)
                from = NULL;
            table_row(&t, idx, l->digest, size, blob_format_name(l->format), from ? from : "",
                      NULL);
        }
    }
    table_print(&t, stdout);
    table_free(&t);
}

/* Print the failures and the results; the exit code comes from the failures' kinds: a
 * rejected blob wins (the input is bad), else the first failure's kind (not found 4, no
 * space 3, ...). */
static int report(const struct fetch_cmd *f)
{
    bool rejected = false, failed = false;
    int first_failure = 0;
    for (size_t i = 0; i < f->ref.n_layers; i++) {
        const struct item *it = &f->items[i];
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
    if (f->json)
        print_json_result(f, failed);
    else if (!failed)
        print_table(f);
    return !failed ? EXIT_OK : rejected ? EXIT_REJECTED : cli_exit_code(first_failure);
}

static void fetch_cmd_free(struct fetch_cmd *f)
{
    host_close(&f->h, RUN_SHUTDOWN_TIMEOUT_MS);
    for (size_t i = 0; f->items && i < f->ref.n_layers; i++) {
        free(f->items[i].error);
        fetch_result_free(&f->items[i].result);
    }
    free(f->items);
    image_ref_free(&f->ref);
    fetch_credentials_forget();
}

int cmd_fetch(struct cli *cli, int argc, char **argv)
{
    struct fetch_cmd f = {.cli = cli};
    f.h.lock.fd = -1;
    int jobs = DEFAULT_FETCH_QUEUE_LIMIT;
    struct source_options so = {0};
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"jobs", required_argument, NULL, 'J'},
                                         {"help", no_argument, NULL, 'h'},
                                         CLI_SOURCE_LONG_OPTIONS,
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'J') {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!end || *end || v < 1 || v > 64)
                return cli_usage_error("fetch", "--jobs needs a number from 1 to 64");
            jobs = (int)v;
            continue;
        }
        int rc = cli_common_option("fetch", c, usage, &f.json, &so);
        if (rc != CLI_OPTION_TAKEN)
            return rc;
    }
    int operands_rc = cli_check_operands("fetch", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    f.progress = !cli->quiet && !f.json;

    int rc = resolve(&f, argv[optind], &so);
    if (rc != EXIT_OK) {
        fetch_cmd_free(&f);
        return rc;
    }
    /* The fetch machine alone: interrupted fetches resume, nothing else runs. */
    struct err e = {0};
    struct host_opts ho = {.cfg = &cli->cfg,
                           .holder = "fetch",
                           .fetch_only = true,
                           .pool = HOST_POOL_LEAVE,
                           .pipeline = {.source = &so, .queues = {.fetch_limit = jobs}},
                           .before_resume = run_env_catch_signals};
    int r = host_open(&ho, &f.h, &e);
    if (r == 0)
        r = start_runs(&f);
    if (r < 0)
        rc = cli_fail("fetch", r, &e);
    else if ((rc = wait_runs(&f)) == EXIT_OK)
        rc = report(&f);
    fetch_cmd_free(&f);
    return rc;
}
