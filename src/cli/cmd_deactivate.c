/*
 * cmd_deactivate.c: `thinimg deactivate NAME...`: removes each activation's dm device; its
 * thin device and the VM's writes stay in the pool (activate again to get it back). Done by
 * the daemon when one holds the state directory (lifecycle_target.h).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/lifecycle_target.h"

/* Take the activation's dm device down; EXIT code. */
static int deactivate_one(struct lifecycle_target *t, const char *name, bool quiet)
{
    struct err e = {0};
    bool was_active = false;
    int r;
    if (t->api) {
        json_t *reply = NULL;
        r = lifecycle_remote(t->api, "POST", "activations", name, "/deactivate", &reply, &e);
        was_active = json_is_true(json_object_get(reply, "was_active"));
        json_decref(reply);
    } else {
        r = pipeline_deactivate(t->env->p, name, -1, &was_active, &e);
    }
    if (r < 0)
        return cli_fail("deactivate", r, &e);
    if (!quiet)
        printf("%s %s\n", name,
               was_active ? "deactivated (data kept; `thinimg activate` brings "
                            "it back)"
                          : "is inactive");
    return EXIT_OK;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: thinimg deactivate [--wait-lock] NAME...\n"
                 "\n"
                 "Remove the dm device of each activation. The thin device and everything\n"
                 "the VM wrote stay in the pool; `thinimg activate --name NAME IMAGE` brings\n"
                 "it back. Refused while the device is open.\n");
}

int cmd_deactivate(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"wait-lock", no_argument, NULL, 'w'}, {"help", no_argument, NULL, 'h'}, {0}};
    struct run_env_opts ro = {.no_resume = true, .no_queued_work = true};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'w':
            ro.wait_lock = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_bad_option("deactivate");
        }
    }
    int operands_rc = cli_check_operands("deactivate", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    struct lifecycle_target t;
    struct host env;
    int rc = lifecycle_target_open(cli, "deactivate", &ro, &t, &env);
    if (rc != EXIT_OK)
        return rc;
    for (int i = optind; i < argc; i++) {
        int one = deactivate_one(&t, argv[i], cli->quiet);
        if (one != EXIT_OK)
            rc = one;
    }
    lifecycle_target_close(&t);
    return rc;
}
