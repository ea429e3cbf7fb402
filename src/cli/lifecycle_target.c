/*
 * lifecycle_target.c: the daemon or this process, for deactivate and remove. See
 * lifecycle_target.h.
 */
#include "cli/lifecycle_target.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A lifecycle request to the daemon: 0 with *reply, or a negative errno with e. */
int lifecycle_remote(struct api_client *api, const char *method, const char *collection,
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

int lifecycle_target_open(struct cli *cli, const char *command, const struct run_env_opts *ro,
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

void lifecycle_target_close(struct lifecycle_target *t)
{
    if (t->env)
        run_env_close(t->env);
    api_client_free(t->api);
}
