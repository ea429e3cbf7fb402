/*
 * health_pool.c: the pool check of `thinimg health` (the hook cmd_health.c declares weak), so
 * that the command runs what the operation guard runs: a pool that is ro, needs_check,
 * failed, out of data space or over its usage limits makes the host unhealthy (exit 3). A
 * pool that is not active (not set up yet, or after a reboot before setup-pool) is skipped:
 * nothing can be refused on its account until it exists.
 */
#include <stdio.h>

#include "cli/cli.h"
#include "dm/pool.h"
#include "guard/health.h"

void cli_health_pool_check(struct cli *cli, struct health_opts *o);

static void pool_check(struct health_check *c, void *ud)
{
    const char *name = ud;
    struct pool_info pi;
    struct err e = {0};
    if (pool_get(NULL, name, &pi, &e) < 0) {
        c->level = HEALTH_SKIP;
        snprintf(c->detail, sizeof(c->detail), "%s", err_str(&e));
        return;
    }
    err_clear(&e);
    int r = pool_check_usable(name, &pi.status, NULL, &e);
    c->level = r == 0 ? HEALTH_OK : HEALTH_FAIL;
    if (r == 0)
        snprintf(c->detail, sizeof(c->detail), "pool \"%s\" usable (%s, data %.1f%%, metadata "
                 "%.1f%%)", name, pool_mode_name(pi.status.mode),
                 pool_status_data_pct(&pi.status), pool_status_meta_pct(&pi.status));
    else
        snprintf(c->detail, sizeof(c->detail), "%s", err_str(&e));
}

void cli_health_pool_check(struct cli *cli, struct health_opts *o)
{
    o->pool = pool_check;
    o->pool_ud = cli->cfg.pool_name;
}
