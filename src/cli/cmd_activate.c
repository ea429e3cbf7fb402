/*
 * cmd_activate.c: `thinimg activate`, `thinimg deactivate` and `thinimg remove`: the life
 * cycle of activations (named writable snapshots) and images after process-image.
 *
 *   activate IMAGE [--name NAME]   a new (or reactivated) activation, through the activate
 *                                  machine (durable, idempotent)
 *   deactivate NAME                removes the activation's dm device; its thin device and the
 *                                  VM's writes stay in the pool (activate again to get it back)
 *   remove NAME                    deletes an activation: dm device and thin device
 *   remove --image IMAGE           deletes an image and the layer devices no other image uses
 *
 * deactivate and remove are operator-requested devicemapper removals (pipeline/lifecycle.c),
 * run under the process lock and the operation guard, and refused while a device is open (a VM
 * uses it). When a daemon holds the state directory, each command sends its work to the daemon
 * (src/daemon/client.h) and prints the result with the same code and exit codes.
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
        json_dumpf(o, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(o);
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
                           const char *name, bool json, int64_t t0)
{
    struct err e = {0};
    json_t *body = json_pack("{s:s, s:s?}", "image", image, "name", name);
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

int cmd_activate(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"wait-lock", no_argument, NULL, 'w'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *name = NULL;
    bool json = false;
    struct run_env_opts ro = {0};
    int c;
    while ((c = getopt_long(argc, argv, "hn:", opts, NULL)) != -1) {
        switch (c) {
        case 'n': name = optarg; break;
        case 'j': json = true; break;
        case 'w': ro.wait_lock = true; break;
        case 'h':
            printf("Usage: thinimg activate [--name NAME] [--json] [--wait-lock] IMAGE\n"
                   "\n"
                   "Create a named writable snapshot of a processed image (name or ref, see\n"
                   "list-images): the block device a VM boots from. Without --name the image's\n"
                   "default activation is (re)activated. An inactive activation (deactivate)\n"
                   "comes back with its data.\n");
            return EXIT_OK;
        default: return cli_bad_option("activate");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("activate", "expected one IMAGE");
    if (name && !imagedb_name_valid(name))
        return cli_usage_error("activate", "invalid --name '%s' (1-64 of [A-Za-z0-9_.-])", name);
    int64_t t0 = mono_ms();
    struct err e = {0};
    struct api_client *api = NULL;
    int r = api_client_detect(&cli->cfg, &api, &e);
    if (r < 0)
        return cli_fail("activate", r, &e);
    if (r > 0) {
        r = activate_remote(cli, api, argv[optind], name, json, t0);
        api_client_free(api);
        return r;
    }
    struct host env;
    r = run_env_open(cli, "activate", &ro, &env, &e);
    if (r < 0)
        return cli_fail("activate", r, &e);
    struct fsm_id run;
    r = pipeline_start_activate(env.p, argv[optind], name, &run, &e);
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

/* The work of deactivate, remove and remove --image, done here (env) or by the daemon (api):
 * one code path for the messages and exit codes. */
struct lifecycle_target {
    struct host *env;
    struct api_client *api;
};

/* A lifecycle request to the daemon: 0 with *reply, or a negative errno with e. */
static int remote_lifecycle(struct api_client *api, const char *method, const char *collection,
                            const char *name, const char *suffix, json_t **reply, struct err *e)
{
    char *esc = api_escape(name);
    if (!esc)
        return err_set(e, -ENOMEM, "out of memory");
    char path[8192];
    snprintf(path, sizeof(path), "/v1/%s/%s%s", collection, esc, suffix);
    free(esc);
    long status = 0;
    /* Removals wait for the operation guard, which an mkfs may hold for a while. */
    int r = api_call(api, method, path, NULL, 600000, &status, reply, e);
    if (r == 0 && status != 200) {
        r = api_reply_error(status, *reply, e);
        json_decref(*reply);
        *reply = NULL;
    }
    return r;
}

/* Take the activation's dm device down; EXIT code. */
static int deactivate_one(struct lifecycle_target *t, const char *name, bool quiet)
{
    struct err e = {0};
    bool was_active = false;
    int r;
    if (t->api) {
        json_t *reply = NULL;
        r = remote_lifecycle(t->api, "POST", "activations", name, "/deactivate", &reply, &e);
        was_active = json_is_true(json_object_get(reply, "was_active"));
        json_decref(reply);
    } else {
        r = pipeline_deactivate(t->env->p, name, -1, &was_active, &e);
    }
    if (r < 0)
        return cli_fail("deactivate", r, &e);
    if (!quiet)
        printf("%s %s\n", name, was_active ? "deactivated (data kept; `thinimg activate` brings "
                                             "it back)"
                                           : "is inactive");
    return EXIT_OK;
}

/* Open the lifecycle target: the daemon if one runs, else this process (no resume). */
static int target_open(struct cli *cli, const char *command, const struct run_env_opts *ro,
                       struct lifecycle_target *t, struct host *env)
{
    struct err e = {0};
    memset(t, 0, sizeof(*t));
    int r = api_client_detect(&cli->cfg, &t->api, &e);
    if (r < 0)
        return cli_fail(command, r, &e);
    if (r > 0)
        return EXIT_OK;
    r = run_env_open(cli, command, ro, env, &e);
    if (r < 0)
        return cli_fail(command, r, &e);
    t->env = env;
    return EXIT_OK;
}

static void target_close(struct lifecycle_target *t)
{
    if (t->env)
        run_env_close(t->env);
    api_client_free(t->api);
}

int cmd_deactivate(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"wait-lock", no_argument, NULL, 'w'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct run_env_opts ro = {.no_resume = true};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'w': ro.wait_lock = true; break;
        case 'h':
            printf("Usage: thinimg deactivate [--wait-lock] NAME...\n"
                   "\n"
                   "Remove the dm device of each activation. The thin device and everything\n"
                   "the VM wrote stay in the pool; `thinimg activate --name NAME IMAGE` brings\n"
                   "it back. Refused while the device is open.\n");
            return EXIT_OK;
        default: return cli_bad_option("deactivate");
        }
    }
    if (optind >= argc)
        return cli_usage_error("deactivate", "expected an activation NAME");
    struct lifecycle_target t;
    struct host env;
    int rc = target_open(cli, "deactivate", &ro, &t, &env);
    if (rc != EXIT_OK)
        return rc;
    for (int i = optind; i < argc; i++) {
        int one = deactivate_one(&t, argv[i], cli->quiet);
        if (one != EXIT_OK)
            rc = one;
    }
    target_close(&t);
    return rc;
}

static int remove_activation(struct lifecycle_target *t, const char *name, bool quiet)
{
    struct err e = {0};
    int r;
    if (t->api) {
        json_t *reply = NULL;
        r = remote_lifecycle(t->api, "DELETE", "activations", name, "", &reply, &e);
        json_decref(reply);
    } else {
        r = pipeline_remove_activation(t->env->p, name, -1, &e);
    }
    if (r < 0)
        return cli_fail("remove", r, &e);
    if (!quiet)
        printf("activation %s removed\n", name);
    return EXIT_OK;
}

static int remove_image(struct lifecycle_target *t, const char *image, bool quiet)
{
    struct err e = {0};
    struct pipeline_removed_image ri = {0};
    int r;
    if (t->api) {
        json_t *reply = NULL;
        r = remote_lifecycle(t->api, "DELETE", "images", image, "", &reply, &e);
        const char *n = json_string_value(json_object_get(reply, "image"));
        snprintf(ri.name, sizeof(ri.name), "%s", n ? n : image);
        ri.layers_deleted = (int)json_integer_value(json_object_get(reply, "layers_deleted"));
        ri.layers_kept = (int)json_integer_value(json_object_get(reply, "layers_kept"));
        json_decref(reply);
    } else {
        r = pipeline_remove_image(t->env->p, image, -1, &ri, &e);
    }
    if (r < 0)
        return cli_fail("remove", r, &e);
    if (!quiet)
        printf("image %s removed (%d layer device%s deleted, %d shared or kept)\n", ri.name,
               ri.layers_deleted, ri.layers_deleted == 1 ? "" : "s", ri.layers_kept);
    return EXIT_OK;
}

int cmd_remove(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"image", no_argument, NULL, 'i'},
                                         {"activation", no_argument, NULL, 'a'},
                                         {"wait-lock", no_argument, NULL, 'w'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct run_env_opts ro = {.no_resume = true};
    bool want_image = false, want_act = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': want_image = true; break;
        case 'a': want_act = true; break;
        case 'w': ro.wait_lock = true; break;
        case 'h':
            printf("Usage: thinimg remove [--image|--activation] [--wait-lock] NAME\n"
                   "\n"
                   "Remove an activation (its dm device and thin device, with the VM's writes)\n"
                   "or an image (the image and the layer devices no other image uses). A name\n"
                   "that is both an activation and an image needs --image or --activation.\n"
                   "Refused while a device is open or an image still has activations.\n");
            return EXIT_OK;
        default: return cli_bad_option("remove");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("remove", "expected one NAME");
    const char *what = argv[optind];
    struct lifecycle_target t;
    struct host env;
    int rc = target_open(cli, "remove", &ro, &t, &env);
    if (rc != EXIT_OK)
        return rc;
    /* Which one is it: decided from the database (read-only next to a daemon). */
    struct db *db = t.env ? t.env->db : run_remote_db(cli, "remove");
    if (!db) {
        target_close(&t);
        return EXIT_FAIL;
    }
    struct activation_rec a = {0};
    bool is_act = !want_image && imagedb_activation_get(db, what, &a) == 0;
    if (is_act)
        activation_rec_free(&a);
    struct image_rec img = {0};
    int ir = want_act ? -ENOENT : imagedb_image_find(db, what, &img);
    bool is_img = ir != -ENOENT;
    if (ir == 0)
        image_rec_free(&img);
    if (!t.env)
        db_close(db);
    if (is_act && is_img)
        rc = cli_failf("remove", EXIT_USAGE,
                       "'%s' is both an activation and an image; add --activation or --image",
                       what);
    else if (is_act)
        rc = remove_activation(&t, what, cli->quiet);
    else if (is_img)
        rc = remove_image(&t, what, cli->quiet);
    else
        rc = cli_failf("remove", EXIT_NOTFOUND,
                       "no activation or image named '%s' (see list-snapshots, list-images)",
                       what);
    target_close(&t);
    return rc;
}
