/*
 * cmd_process_image.c: `thinimg process-image REF`: the main job. Fetch an image's layers,
 * unpack them into a chain of thin devices and activate it, as one durable run; print the
 * device a VM boots from.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_queue.h"
#include "cli/cli_source.h"
#include "cli/run_cmd.h"
#include "daemon/client.h"
#include "daemon/views.h"
#include "pipeline/imagedb.h"
#include "util/parse.h"
#include "util/timeutil.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg process-image [OPTIONS] REF\n"
            "\n"
            "Fetch, unpack and activate an image. REF is a location (s3://bucket/images/golang/,\n"
            "dir:/srv/bucket/images/golang/3.tar, https://host/layer.tar) or a key relative to\n"
            "--source / THINIMG_SOURCE. A family prefix (images/golang/) or key (.../3.tar)\n"
            "names the ordered layers N.tar; a docker-archive or OCI layout carries its own.\n"
            "Re-running on an active image returns at once. Interrupted runs (Ctrl-C, kill,\n"
            "reboot) resume where they stopped the next time thinimg runs.\n"
            "\n"
            "Options:\n"
            "  --name NAME          activation name (default: from the image, e.g. golang-3)\n"
            "  --device-size SIZE   virtual size of new layer devices (default 8G)\n"
            "  --wait-lock          wait for another thinimg process instead of failing\n"
            "  --json               print the result as JSON\n" CLI_QUEUE_HELP CLI_SOURCE_HELP
            "  -h, --help           this help\n"
            "\n"
            "Exit codes: 0 done, 1 failed, 2 usage, 3 refused (host or pool unhealthy, no\n"
            "permission), 4 not found, 5 locked by another thinimg, 6 rejected input (not an\n"
            "image, unsafe archive), 7 database corrupt, 8 read-only state directory,\n"
            "130 interrupted.\n");
}

static void print_human(json_t *o)
{
    const char *s;
    printf("image       %s", (s = json_string_value(json_object_get(o, "image"))) ? s : "?");
    if ((s = json_string_value(json_object_get(o, "ref"))))
        printf("  (%s)", s);
    printf("\n");
    json_t *layers = json_object_get(o, "layers");
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l)
    {
        const char *d = json_string_value(json_object_get(l, "digest"));
        const char *c = json_string_value(json_object_get(l, "chain_id"));
        json_t *dev = json_object_get(l, "device_id");
        printf("layer %-4zu  %.19s  chain %.19s", i + 1, d ? d : "-", c ? c : "-");
        if (json_is_integer(dev))
            printf("  device %lld", (long long)json_integer_value(dev));
        printf("\n");
    }
    if ((s = json_string_value(json_object_get(o, "activation"))))
        printf("activation  %s\n", s);
    if ((s = json_string_value(json_object_get(o, "device_path"))))
        printf("device      %s\n", s);
    char took[32];
    format_duration_ms(json_integer_value(json_object_get(o, "elapsed_ms")), took, sizeof(took));
    printf("took        %s%s\n", took,
           !strcmp(json_string_value(json_object_get(o, "outcome")), "handoff")
               ? " (already active)"
               : "");
}

/* Print the result of a finished run and return the exit code: the same for a run done here
 * and one done by the daemon (db is then a read-only connection). */
static int report(struct db *db, const struct fsm_id *run, enum fsm_outcome out,
                  const char *error, bool json, int64_t t0)
{
    int rc = run_error_exit_code(db, run, out);
    struct fsm_run_record rec = {0};
    if (fsm_db_get_run(db, run, &rec) == 0) {
        json_t *o = view_process_result(db, &rec, mono_ms() - t0);
        if (rc != EXIT_OK)
            json_object_set_new(o, "error", json_string(error ? error : ""));
        if (json) {
            cli_print_json(o);
        } else {
            if (rc == EXIT_OK)
                print_human(o);
            json_decref(o);
        }
        fsm_run_record_free(&rec);
    }
    if (rc != EXIT_OK)
        fprintf(stderr, "thinimg: process-image: %s\n  (details: thinimg runs show %s)\n",
                error && *error ? error : fsm_outcome_name(out), run->s);
    return rc;
}

/* The daemon holds the state directory: it does the work; we show progress and the result. */
static int process_remote(struct cli *cli, struct api_client *api, const char *ref,
                          const char *name, uint64_t device_bytes, bool json, bool local_opts,
                          int64_t t0)
{
    if (local_opts && !cli->quiet)
        fprintf(stderr, "thinimg: process-image: the daemon does this work with its own source "
                        "and queue settings; --region, --endpoint, --no-sign-request, "
                        "--fetch-queue and --unpack-queue are ignored\n");
    struct err e = {0};
    char *loc = NULL;
    int r = pipeline_ref_expand(ref, cli->cfg.source, &loc, &e);
    if (r < 0)
        return cli_fail("process-image", r, &e);
    json_t *body = json_pack("{s:s, s:s?}", "ref", loc, "name", name);
    free(loc);
    if (device_bytes)
        json_object_set_new(body, "device_size", json_integer((json_int_t)device_bytes));
    struct fsm_id run;
    r = run_remote_start(api, "/v1/process-image", body, &run, &e);
    json_decref(body);
    if (r < 0)
        return cli_fail("process-image", r, &e);
    enum fsm_outcome out = FSM_OK;
    char *error = NULL;
    r = run_remote_wait(cli, api, &run, &out, &error, &e);
    if (r == -EINTR) {
        fprintf(stderr, "thinimg: process-image: interrupted; run %s goes on in the daemon "
                        "(thinimg runs show %s)\n", run.s, run.s);
        free(error);
        return EXIT_INTERRUPTED;
    }
    if (r < 0) {
        free(error);
        return cli_fail("process-image", r, &e);
    }
    struct db *db = run_remote_db(cli, "process-image");
    int rc = db ? report(db, &run, out, error, json, t0) : EXIT_FAIL;
    db_close(db);
    free(error);
    return rc;
}

int cmd_process_image(struct cli *cli, int argc, char **argv)
{
    enum { OPT_NAME = 256, OPT_SIZE, OPT_WAIT, OPT_JSON };
    static const struct option opts[] = {{"name", required_argument, NULL, OPT_NAME},
                                         {"device-size", required_argument, NULL, OPT_SIZE},
                                         {"wait-lock", no_argument, NULL, OPT_WAIT},
                                         CLI_QUEUE_LONG_OPTIONS,
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"help", no_argument, NULL, 'h'},
                                         CLI_SOURCE_LONG_OPTIONS,
                                         {0}};
    const char *name = NULL;
    bool json = false;
    struct source_options so = {0};
    struct run_env_opts ro = {.source = &so};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_NAME: name = optarg; break;
        case OPT_SIZE:
            if (parse_size(optarg, &ro.device_bytes) < 0 ||
                ro.device_bytes < PIPELINE_MIN_DEVICE_BYTES ||
                ro.device_bytes % 512)
                return cli_usage_error("process-image",
                                       "invalid --device-size '%s' (at least 64M)", optarg);
            break;
        case OPT_WAIT: ro.wait_lock = true; break;
        case OPT_JSON: json = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: {
            int qr = cli_queue_option("process-image", c, optarg, &ro.queues);
            if (qr < 0)
                return EXIT_USAGE;
            if (!qr && !cli_source_option(c, optarg, &so))
                return cli_bad_option("process-image");
        }
        }
    }
    int operands_rc = cli_check_operands("process-image", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    const char *ref = argv[optind];
    if (name && !imagedb_name_valid(name))
        return cli_usage_error("process-image",
                               "invalid --name '%s' (1-64 characters of [A-Za-z0-9_.-])", name);

    int64_t t0 = mono_ms();
    struct err e = {0};
    struct api_client *api = NULL;
    int r = api_client_detect(&cli->cfg, &api, &e);
    if (r < 0)
        return cli_fail("process-image", r, &e);
    if (r > 0) {
        bool local_opts = so.region || so.endpoint || so.anonymous || ro.queues.fetch_limit ||
                          ro.queues.unpack_limit || ro.queues.fetch_max || ro.queues.unpack_max;
        r = process_remote(cli, api, ref, name, ro.device_bytes, json, local_opts, t0);
        api_client_free(api);
        return r;
    }
    struct host env;
    r = run_env_open(cli, "process-image", &ro, &env, &e);
    if (r < 0)
        return cli_fail("process-image", r, &e);
    struct fsm_id run;
    r = pipeline_start_process(env.p, ref, name, ro.device_bytes, &run, &e);
    if (r < 0) {
        run_env_close(&env);
        return cli_fail("process-image", r, &e);
    }
    enum fsm_outcome out = FSM_OK;
    char *error = NULL;
    r = run_env_wait(cli, &env, &run, &out, &error);
    if (r == -EINTR) {
        run_env_close(&env);
        fprintf(stderr,
                "thinimg: process-image: interrupted; run %s resumes the next time thinimg "
                "runs (e.g. the same command again)\n",
                run.s);
        free(error);
        return EXIT_INTERRUPTED;
    }
    if (r < 0) {
        run_env_close(&env);
        free(error);
        return cli_fail("process-image", r, NULL);
    }
    int rc = report(env.db, &run, out, error, json, t0);
    free(error);
    run_env_close(&env);
    return rc;
}
