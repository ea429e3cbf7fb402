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
#include "cli/cli_source.h"
#include "cli/run_cmd.h"
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
            "  --fetch-queue N      parallel downloads (default 5)\n"
            "  --unpack-queue N     parallel unpacks of independent chains (default 2)\n"
            "  --json               print the result as JSON\n" CLI_SOURCE_HELP
            "  -h, --help           this help\n"
            "\n"
            "Exit codes: 0 done, 1 failed, 2 usage, 3 host or pool unhealthy, 4 not found,\n"
            "5 locked by another thinimg, 6 rejected input (not an image, unsafe archive).\n");
}

static json_t *result_json(struct run_env *env, const struct fsm_run_record *rec,
                           int64_t elapsed_ms)
{
    json_t *resp = rec->response ? json_loadb(rec->response, rec->response_len, 0, NULL) : NULL;
    if (!resp)
        resp = json_object();
    int64_t image_id = json_integer_value(json_object_get(resp, "image_id"));
    json_t *o = json_pack("{s:s, s:s, s:I}", "run", rec->version.s, "outcome",
                          fsm_outcome_name(rec->outcome), "elapsed_ms", (json_int_t)elapsed_ms);
    struct image_rec img = {0};
    if (image_id && imagedb_image_get(env->db, image_id, &img) == 0) {
        json_object_set_new(o, "image", json_string(img.name));
        json_object_set_new(o, "ref", json_string(img.ref));
        json_object_set_new(o, "state", json_string(img.state));
        image_rec_free(&img);
    }
    const char *act = json_string_value(json_object_get(resp, "activation"));
    if (act) {
        json_object_set_new(o, "activation", json_string(act));
        struct activation_rec a = {0};
        if (imagedb_activation_get(env->db, act, &a) == 0) {
            if (a.device_path)
                json_object_set_new(o, "device_path", json_string(a.device_path));
            if (a.dev_id)
                json_object_set_new(o, "device_id", json_integer(a.dev_id));
            activation_rec_free(&a);
        }
    }
    json_t *layers = json_array();
    struct image_layer_rec *v = NULL;
    size_t n = 0;
    if (image_id && imagedb_image_layers(env->db, image_id, &v, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            json_t *l = json_pack("{s:i, s:s?, s:s?, s:s?}", "index", v[i].idx, "location",
                                  v[i].location, "digest", v[i].digest, "chain_id",
                                  v[i].chain_id);
            struct layer_rec lr = {0};
            if (v[i].chain_id && imagedb_layer_get(env->db, v[i].chain_id, &lr) == 0) {
                if (lr.dev_id)
                    json_object_set_new(l, "device_id", json_integer(lr.dev_id));
                json_object_set_new(l, "state", json_string(lr.state));
                layer_rec_free(&lr);
            }
            if (v[i].size >= 0)
                json_object_set_new(l, "size", json_integer(v[i].size));
            json_array_append_new(layers, l);
        }
        imagedb_image_layers_free(v, n);
    }
    json_object_set_new(o, "layers", layers);
    json_decref(resp);
    return o;
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

int cmd_process_image(struct cli *cli, int argc, char **argv)
{
    enum { OPT_NAME = 256, OPT_SIZE, OPT_WAIT, OPT_FQ, OPT_UQ, OPT_JSON };
    static const struct option opts[] = {{"name", required_argument, NULL, OPT_NAME},
                                         {"device-size", required_argument, NULL, OPT_SIZE},
                                         {"wait-lock", no_argument, NULL, OPT_WAIT},
                                         {"fetch-queue", required_argument, NULL, OPT_FQ},
                                         {"unpack-queue", required_argument, NULL, OPT_UQ},
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
            if (parse_size(optarg, &ro.device_bytes) < 0 || ro.device_bytes < (64ull << 20) ||
                ro.device_bytes % 512)
                return cli_usage_error("process-image",
                                       "invalid --device-size '%s' (at least 64M)", optarg);
            break;
        case OPT_WAIT: ro.wait_lock = true; break;
        case OPT_FQ: ro.fetch_limit = atoi(optarg); break;
        case OPT_UQ: ro.unpack_limit = atoi(optarg); break;
        case OPT_JSON: json = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        default:
            if (!cli_source_option(c, optarg, &so))
                return cli_usage_error("process-image", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("process-image", "expected one REF");
    if ((ro.fetch_limit < 0 || ro.fetch_limit > 64) || (ro.unpack_limit < 0 || ro.unpack_limit > 16))
        return cli_usage_error("process-image", "queue sizes: --fetch-queue 1..64, "
                                                "--unpack-queue 1..16");
    const char *ref = argv[optind];
    if (name && !imagedb_name_valid(name))
        return cli_usage_error("process-image",
                               "invalid --name '%s' (1-64 characters of [A-Za-z0-9_.-])", name);

    int64_t t0 = mono_ms();
    struct err e = {0};
    struct run_env env;
    int r = run_env_open(cli, "process-image", &ro, &env, &e);
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
        return 130;
    }
    if (r < 0) {
        run_env_close(&env);
        free(error);
        return cli_fail("process-image", r, NULL);
    }
    int rc = run_error_exit_code(out, error);
    struct fsm_run_record rec = {0};
    if (fsm_db_get_run(env.db, &run, &rec) == 0) {
        json_t *o = result_json(&env, &rec, mono_ms() - t0);
        if (rc != EXIT_OK)
            json_object_set_new(o, "error", json_string(error ? error : ""));
        if (json) {
            json_dumpf(o, stdout, JSON_INDENT(2));
            putchar('\n');
        } else if (rc == EXIT_OK) {
            print_human(o);
        }
        json_decref(o);
        fsm_run_record_free(&rec);
    }
    if (rc != EXIT_OK)
        fprintf(stderr, "thinimg: process-image: %s\n  (details: thinimg runs show %s)\n",
                error && *error ? error : fsm_outcome_name(out), run.s);
    free(error);
    run_env_close(&env);
    return rc;
}
