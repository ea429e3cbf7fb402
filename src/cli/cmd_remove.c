/*
 * cmd_remove.c: `thinimg remove NAME` deletes an activation (dm device and thin device);
 * `thinimg remove --image IMAGE` deletes an image and the layer devices no other image uses.
 * Done by the daemon when one holds the state directory (lifecycle_target.h).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/lifecycle_target.h"
#include "pipeline/imagedb.h"

static int remove_activation(struct lifecycle_target *t, const char *name, bool quiet)
{
    struct err e = {0};
    int r;
    if (t->api) {
        json_t *reply = NULL;
        r = lifecycle_remote(t->api, "DELETE", "activations", name, "", &reply, &e);
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
        r = lifecycle_remote(t->api, "DELETE", "images", image, "", &reply, &e);
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

static void usage(FILE *out)
{
    fprintf(out, "Usage: thinimg remove [--image|--activation] [--wait-lock] NAME\n"
                 "\n"
                 "Remove an activation (its dm device and thin device, with the VM's writes)\n"
                 "or an image (the image and the layer devices no other image uses). A name\n"
                 "that is both an activation and an image needs --image or --activation.\n"
                 "Refused while a device is open or an image still has activations.\n");
}

int cmd_remove(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"image", no_argument, NULL, 'i'},
                                         {"activation", no_argument, NULL, 'a'},
                                         {"wait-lock", no_argument, NULL, 'w'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct run_env_opts ro = {.no_resume = true, .no_queued_work = true};
    bool want_image = false, want_act = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            want_image = true;
            break;
        case 'a':
            want_act = true;
            break;
        case 'w':
            ro.wait_lock = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_bad_option("remove");
        }
    }
    int operands_rc = cli_check_operands("remove", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    const char *what = argv[optind];
    struct lifecycle_target t;
    struct host env;
    int rc = lifecycle_target_open(cli, "remove", &ro, &t, &env);
    if (rc != EXIT_OK)
        return rc;
    /* Which one is it: decided from the database (read-only next to a daemon). */
    struct db *db = t.env ? t.env->db : run_remote_db(cli, "remove");
    if (!db) {
        lifecycle_target_close(&t);
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
        rc =
            cli_failf("remove", EXIT_USAGE,
                      "'%s' is both an activation and an image; add --activation or --image", what);
    else if (is_act)
        rc = remove_activation(&t, what, cli->quiet);
    else if (is_img)
        rc = remove_image(&t, what, cli->quiet);
    else
        rc = cli_failf("remove", EXIT_NOTFOUND,
                       "no activation or image named '%s' (see list-snapshots, list-images)", what);
    lifecycle_target_close(&t);
    return rc;
}
