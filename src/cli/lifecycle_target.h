/*
 * lifecycle_target.h: where `thinimg deactivate` and `thinimg remove` do their work: a daemon
 * that holds the state directory (its admin API), else this process (the host opened without
 * resuming other runs). One code path for the messages and exit codes of both.
 *
 * deactivate and remove are operator-requested devicemapper removals (pipeline/lifecycle.c),
 * run under the process lock and the operation guard, and refused while a device is open (a
 * VM uses it).
 */
#pragma once

#include <jansson.h>

#include "cli/cli.h"
#include "cli/run_cmd.h"
#include "daemon/client.h"

/* The work of deactivate, remove and remove --image: done here (env) or by the daemon (api). */
struct lifecycle_target {
    struct host *env;
    struct api_client *api;
};

/* A lifecycle request to the daemon: 0 with *reply, or a negative errno with e. */
int lifecycle_remote(struct api_client *api, const char *method, const char *collection,
                     const char *name, const char *suffix, json_t **reply, struct err *e);
/* Open the target: the daemon if one runs, else this process (env, no resume). An exit code:
 * EXIT_OK, or the failure already printed. */
int lifecycle_target_open(struct cli *cli, const char *command, const struct run_env_opts *ro,
                          struct lifecycle_target *t, struct host *env);
void lifecycle_target_close(struct lifecycle_target *t);
