/*
 * cmd_activate.c: `thinimg activate IMAGE [--name NAME]`: a new (or reactivated) activation
 * (a named writable snapshot of a processed image), through the activate machine (durable,
 * idempotent). When a daemon holds the state directory, the work goes to the daemon
 * (src/daemon/client.h) and the result is printed with the same code and exit codes.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/run_cmd.h"
#include "daemon/client.h"
#include "pipeline/imagedb.h"
#include "util/timeutil.h"

static int print_activation(struct db *db, const char *name, bool json, int64_t took_ms)
{
    struct activation_rec a = {0};
    if (imagedb_activation_get(db, name, &a) < 0)
        return EXIT_FAIL;
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:I, s:I}", "activation", a.name, "image",
                              a.image_name, "state", a.state, "device_path", a.device_path,
                              "device_id", (json_int_t)a.dev_id, "elapsed_ms",
                              (json_int_t)took_ms);
        cli_print_json(o);
    } else {
        printf("activation  %s\nimage       %s\ndevice      %s\n", a.name, a.image_name,
               a.device_path ? a.device_path : "-");
    }
    activation_rec_free(&a);
    return EXIT_OK;
}

/* Print the result of a finished activate run (done here or by the daemon); exit code. */
static int activate_report(struct db *db, const struct fsm_id *run, enum fsm_outcome out,
                           const char *error, bool json, int64_t t0)
{
    if (!fsm_outcome_success(out)) {
        fprintf(stderr, "thinimg: activate: %s\n  (details: thinimg runs show %s)\n",
                error && *error ? error : fsm_outcome_name(out), run->s);
        return run_error_exit_code(db, run, out);
    }
    struct fsm_run_record rec = {0};
    char act[80] = "";
    if (fsm_db_get_run(db, run, &rec) == 0) {
        snprintf(act, sizeof(act), "%s", rec.resource_id);
        fsm_run_record_free(&rec);
    }
    return print_activation(db, act, json, mono_ms() - t0);
}

static int activate_remote(struct cli *cli, struct api_client *api, const char *image,
                           const char *name, const char *mount_at, bool json, int64_t t0)
{
    struct err e = {0};
    json_t *body =
        json_pack("{s:s, s:s?, s:s?}", "image", image, "name", name, "mount_at", mount_at);
    struct fsm_id run;
    int r = run_remote_start(api, "/v1/activations", body, &run, &e);
    json_decref(body);
    if (r < 0)
        return cli_fail("activate", r, &e);
    enum fsm_outcome out = FSM_OK;
    char *error = NULL;
    r = run_remote_wait(cli, api, &run, &out, &error, &e);
    int rc;
    if (r == -EINTR) {
        fprintf(stderr, "thinimg: activate: interrupted; run %s goes on in the daemon\n", run.s);
        rc = EXIT_INTERRUPTED;
    } else if (r < 0) {
        rc = cli_fail("activate", r, &e);
    } else {
        struct db *db = run_remote_db(cli, "activate");
        rc = db ? activate_report(db, &run, out, error, json, t0) : EXIT_FAIL;
        db_close(db);
    }
    free(error);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: thinimg activate [--name NAME] [--mount-at DIR] [--json] [--wait-lock] "
                 "IMAGE\n"
                 "\n"
                 "Create a named writable snapshot of a processed image (name or ref, see\n"
                 "list-images): the block device a VM boots from. Without --name the image's\n"
                 "default activation is (re)activated. An inactive activation (deactivate)\n"
                 "comes back with its data.\n"
                 "With the overlay backend the activation is an overlay mount, at\n"
                 "STATE/overlay/act/NAME/merged or at --mount-at DIR (an absolute path, made\n"
                 "when missing; passed to a running daemon, which mounts it).\n");
}

int cmd_activate(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"mount-at", required_argument, NULL, 'm'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"wait-lock", no_argument, NULL, 'w'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *name = NULL, *mount_at = NULL;
    bool json = false;
    struct run_env_opts ro = {.no_queued_work = true};
    int c;
    while ((c = getopt_long(argc, argv, "hn:", opts, NULL)) != -1) {
        switch (c) {
        case 'n': name = optarg; break;
        case 'm': mount_at = optarg; break;
        case 'j': json = true; break;
        case 'w': ro.wait_lock = true; break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default: return cli_bad_option("activate");
        }
    }
    int operands_rc = cli_check_operands("activate", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    if (name && !imagedb_name_valid(name))
        return cli_usage_error("activate", "invalid --name '%s' (1-64 of [A-Za-z0-9_.-])", name);
    int64_t t0 = mono_ms();
    struct err e = {0};
    struct api_client *api = NULL;
    int r = api_client_detect(&cli->cfg, &api, &e);
    if (r < 0)
        return cli_fail("activate", r, &e);
    if (r > 0) {
        r = activate_remote(cli, api, argv[optind], name, mount_at, json, t0);
        api_client_free(api);
        return r;
    }
    struct host env;
    r = run_env_open(cli, "activate", &ro, &env, &e);
    if (r < 0)
        return cli_fail("activate", r, &e);
    struct fsm_id run;
    r = pipeline_start_activate_at(env.p, argv[optind], name, mount_at, &run, &e);
    if (r < 0) {
        run_env_close(&env);
        return cli_fail("activate", r, &e);
    }
    enum fsm_outcome out;
    char *error = NULL;
    r = run_env_wait(cli, &env, &run, &out, &error);
    int rc;
    if (r == -EINTR) {
        fprintf(stderr, "thinimg: activate: interrupted; run %s resumes next time\n", run.s);
        rc = EXIT_INTERRUPTED;
    } else if (r < 0) {
        rc = cli_fail("activate", r, NULL);
    } else {
        rc = activate_report(env.db, &run, out, error, json, t0);
    }
    free(error);
    run_env_close(&env);
    return rc;
}
