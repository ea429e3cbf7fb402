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
 * deactivate and remove are operator-requested devicemapper removals, run under the process
 * lock and the operation guard, and refused while a device is open (a VM uses it).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/run_cmd.h"
#include "dm/thin.h"
#include "pipeline/imagedb.h"
#include "util/log.h"
#include "util/timeutil.h"

static int print_activation(struct run_env *env, const char *name, bool json, int64_t took_ms)
{
    struct activation_rec a = {0};
    if (imagedb_activation_get(env->db, name, &a) < 0)
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
        default: return cli_usage_error("activate", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("activate", "expected one IMAGE");
    if (name && !imagedb_name_valid(name))
        return cli_usage_error("activate", "invalid --name '%s' (1-64 of [A-Za-z0-9_.-])", name);
    int64_t t0 = mono_ms();
    struct err e = {0};
    struct run_env env;
    int r = run_env_open(cli, "activate", &ro, &env, &e);
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
        rc = 130;
    } else if (r < 0) {
        rc = cli_fail("activate", r, NULL);
    } else if (!fsm_outcome_success(out)) {
        rc = run_error_exit_code(out, error);
        fprintf(stderr, "thinimg: activate: %s\n  (details: thinimg runs show %s)\n",
                error && *error ? error : fsm_outcome_name(out), run.s);
    } else {
        struct fsm_run_record rec = {0};
        char act[80] = "";
        if (fsm_db_get_run(env.db, &run, &rec) == 0) {
            snprintf(act, sizeof(act), "%s", rec.resource_id);
            fsm_run_record_free(&rec);
        }
        rc = print_activation(&env, act, json, mono_ms() - t0);
    }
    free(error);
    run_env_close(&env);
    return rc;
}

/* Take the activation's dm device down; EXIT code. */
static int deactivate_one(struct run_env *env, const char *pool, const char *name, bool quiet)
{
    struct activation_rec a = {0};
    int r = imagedb_activation_get(env->db, name, &a);
    if (r < 0)
        return cli_failf("deactivate", EXIT_NOTFOUND, "no activation '%s' (see list-snapshots)",
                         name);
    uint32_t dev_id = (uint32_t)a.dev_id;
    bool was_active = !strcmp(a.state, "active");
    activation_rec_free(&a);
    struct err e = {0};
    if (dev_id) {
        r = guard_enter(pipeline_guard(env->p), "deactivate", -1, &e);
        if (r < 0)
            return cli_fail("deactivate", r, &e);
        r = thin_deactivate(env->db, pool, dev_id, &e);
        guard_leave(pipeline_guard(env->p));
        if (r == -EBUSY)
            return cli_failf("deactivate", EXIT_BUSY, "%s is in use: %s", name, err_str(&e));
        if (r < 0)
            return cli_fail("deactivate", r, &e);
    }
    r = imagedb_activation_set_state(env->db, name, "inactive", NULL);
    if (r < 0)
        return cli_fail("deactivate", r, NULL);
    if (!quiet)
        printf("%s %s\n", name, was_active ? "deactivated (data kept; `thinimg activate` brings "
                                             "it back)"
                                           : "is inactive");
    return EXIT_OK;
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
        default: return cli_usage_error("deactivate", "unknown option");
        }
    }
    if (optind >= argc)
        return cli_usage_error("deactivate", "expected an activation NAME");
    struct err e = {0};
    struct run_env env;
    int r = run_env_open(cli, "deactivate", &ro, &env, &e);
    if (r < 0)
        return cli_fail("deactivate", r, &e);
    int rc = EXIT_OK;
    for (int i = optind; i < argc; i++) {
        int one = deactivate_one(&env, cli->cfg.pool_name, argv[i], cli->quiet);
        if (one != EXIT_OK)
            rc = one;
    }
    run_env_close(&env);
    return rc;
}

static int remove_activation(struct run_env *env, const char *pool, const char *name, bool quiet)
{
    struct activation_rec a = {0};
    if (imagedb_activation_get(env->db, name, &a) < 0)
        return cli_failf("remove", EXIT_NOTFOUND, "no activation '%s' (see list-snapshots)",
                         name);
    uint32_t dev_id = (uint32_t)a.dev_id;
    activation_rec_free(&a);
    struct err e = {0};
    if (dev_id) {
        int r = guard_enter(pipeline_guard(env->p), "remove-activation", -1, &e);
        if (r < 0)
            return cli_fail("remove", r, &e);
        r = thin_deactivate(env->db, pool, dev_id, &e);
        if (r == 0)
            r = thin_delete(env->db, pool, dev_id, &e);
        guard_leave(pipeline_guard(env->p));
        if (r == -EBUSY)
            return cli_failf("remove", EXIT_BUSY, "%s is in use: %s", name, err_str(&e));
        if (r < 0)
            return cli_fail("remove", r, &e);
    }
    int r = imagedb_activation_delete(env->db, name);
    if (r < 0)
        return cli_fail("remove", r, NULL);
    if (!quiet)
        printf("activation %s removed\n", name);
    return EXIT_OK;
}

struct chain_list {
    char **v;
    size_t n;
};

static int remove_image(struct run_env *env, const char *pool, const char *image, bool quiet)
{
    struct image_rec img = {0};
    int r = imagedb_image_find(env->db, image, &img);
    if (r == -EEXIST)
        return cli_failf("remove", EXIT_USAGE, "image name '%s' is ambiguous; give its ref",
                         image);
    if (r < 0)
        return cli_failf("remove", EXIT_NOTFOUND, "no image '%s' (see list-images)", image);
    int64_t id = img.id;
    char name[256];
    snprintf(name, sizeof(name), "%s", img.name);
    image_rec_free(&img);
    struct image_layer_rec *v = NULL;
    size_t n = 0;
    imagedb_image_layers(env->db, id, &v, &n);
    r = imagedb_image_delete(env->db, id);
    if (r == -EBUSY) {
        imagedb_image_layers_free(v, n);
        return cli_failf("remove", EXIT_BUSY,
                         "image %s still has activations; remove them first (list-snapshots "
                         "--all --image %s)",
                         name, name);
    }
    if (r < 0) {
        imagedb_image_layers_free(v, n);
        return cli_fail("remove", r, NULL);
    }
    /* Top down: a layer goes when nothing (image, child layer, activation) uses it. */
    int removed = 0, rc = EXIT_OK;
    struct err e = {0};
    for (size_t i = n; i-- > 0;) {
        if (!v[i].chain_id)
            continue;
        int users = 1;
        if (imagedb_layer_users(env->db, v[i].chain_id, &users) < 0 || users > 0)
            break; /* shared from here down */
        struct layer_rec l = {0};
        if (imagedb_layer_get(env->db, v[i].chain_id, &l) < 0)
            continue;
        uint32_t dev_id = (uint32_t)l.dev_id;
        layer_rec_free(&l);
        if (dev_id) {
            r = guard_enter(pipeline_guard(env->p), "remove-layer", -1, &e);
            if (r == 0) {
                r = thin_deactivate(env->db, pool, dev_id, &e);
                if (r == 0)
                    r = thin_delete(env->db, pool, dev_id, &e);
                guard_leave(pipeline_guard(env->p));
            }
            if (r < 0) {
                rc = cli_fail("remove", r, &e);
                break;
            }
        }
        imagedb_layer_delete(env->db, v[i].chain_id);
        removed++;
    }
    imagedb_image_layers_free(v, n);
    if (!quiet && rc == EXIT_OK)
        printf("image %s removed (%d layer device%s deleted, %zu shared or kept)\n", name, removed,
               removed == 1 ? "" : "s", n - (size_t)removed);
    return rc;
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
        default: return cli_usage_error("remove", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("remove", "expected one NAME");
    const char *what = argv[optind];
    struct err e = {0};
    struct run_env env;
    int r = run_env_open(cli, "remove", &ro, &env, &e);
    if (r < 0)
        return cli_fail("remove", r, &e);
    struct activation_rec a = {0};
    bool is_act = !want_image && imagedb_activation_get(env.db, what, &a) == 0;
    if (is_act)
        activation_rec_free(&a);
    struct image_rec img = {0};
    bool is_img = !want_act && imagedb_image_find(env.db, what, &img) != -ENOENT;
    if (is_img)
        image_rec_free(&img);
    int rc;
    if (is_act && is_img)
        rc = cli_failf("remove", EXIT_USAGE,
                       "'%s' is both an activation and an image; add --activation or --image",
                       what);
    else if (is_act)
        rc = remove_activation(&env, cli->cfg.pool_name, what, cli->quiet);
    else if (is_img)
        rc = remove_image(&env, cli->cfg.pool_name, what, cli->quiet);
    else
        rc = cli_failf("remove", EXIT_NOTFOUND,
                       "no activation or image named '%s' (see list-snapshots, list-images)",
                       what);
    run_env_close(&env);
    return rc;
}
