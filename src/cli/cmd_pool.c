/*
 * cmd_pool.c: `thinimg pool check` (thin_check on the metadata of an offline pool) and
 * `thinimg pool grow` (grow an active pool's data and metadata online). The rules are in
 * dm/pool.h; docs/dm.md says when to use which.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "dm/pool.h"
#include "util/cleanup.h"
#include "util/timeutil.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg pool check [--json]\n"
            "       thinimg pool grow [--data SIZE|+SIZE] [--metadata SIZE|+SIZE] [--json]\n"
            "\n"
            "`pool check` runs thin_check (thin-provisioning-tools) on the pool's metadata. The\n"
            "pool must be offline: an active pool is refused (exit 5) and nothing is stopped.\n"
            "When the metadata is sound, its needs_check flag is cleared, so `thinimg\n"
            "setup-pool` brings the pool back writable; damage is reported with thin_check's\n"
            "verdict and the repair command (exit 3). setup-pool runs the same check by itself\n"
            "before it reassembles a pool from its files.\n"
            "\n"
            "`pool grow` grows an active pool online (activations stay usable): the backing\n"
            "file is extended, its loop device refreshed and the pool reloaded with the new\n"
            "size. SIZE is the new total, +SIZE adds to the current size (K, M, G, T\n"
            "suffixes). Metadata grows up to about 16 GiB (the kernel uses no more). Growing a\n"
            "file leaves %.0f%% of its file system free, at least %" PRIu64 " MiB.\n"
            "Without --data and --metadata, devices grown by the operator (a block device, a\n"
            "file extended by hand) are picked up.\n"
            "\n"
            "Options:\n"
            "  --data SIZE|+SIZE       new data size, or how much to add (grow)\n"
            "  --metadata SIZE|+SIZE   new metadata size, or how much to add (grow)\n"
            "  --json                  print the result as JSON\n"
            "  -h, --help              this help\n"
            "\n"
            "The pool name comes from --pool or THINIMG_POOL (default thinimg).\n"
            "Exit codes: 0 ok, 1 failed (thin_check missing), 2 usage, 3 metadata damaged or\n"
            "pool unhealthy or no room on the backing file system, 4 pool not found or not\n"
            "active (grow), 5 pool active (check).\n",
            POOL_GROW_RESERVE_PCT, (uint64_t)(POOL_GROW_RESERVE_MIN >> 20));
}

static int pool_check_cmd(struct cli *cli, struct db *db, bool json)
{
    struct err e = {0};
    struct pool_check c;
    int r = pool_check_offline(db, cli->cfg.pool_name, &c, &e);
    if (json && (c.ran || c.fresh)) {
        json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:i, s:s}", "pool", cli->cfg.pool_name,
                              "device", c.device, "passed", c.passed, "fresh", c.fresh, "status",
                              c.status, "verdict", c.verdict);
        cli_print_json(o);
    }
    if (r < 0)
        return cli_fail("pool check", r, &e);
    if (!json && !cli->quiet)
        printf("pool %s: metadata %s %s\n", cli->cfg.pool_name, c.device,
               c.fresh ? "is fresh (never formatted): nothing to check"
                       : "passed thin_check (needs_check cleared if it was set)");
    return EXIT_OK;
}

static int pool_grow_cmd(struct cli *cli, struct db *db, const struct pool_grow_request *rq,
                         bool json)
{
    struct err e = {0};
    struct pool_grow_result g;
    int r = pool_grow(db, cli->cfg.pool_name, rq, &g, &e);
    if (r < 0)
        return cli_fail("pool grow", r, &e);
    if (json)
        return cli_print_json(json_pack(
            "{s:s, s:b, s:I, s:I, s:I, s:I, s:I}", "pool", cli->cfg.pool_name, "grown", g.reloaded,
            "data_bytes_before", (json_int_t)g.data_before, "data_bytes", (json_int_t)g.data_after,
            "metadata_bytes_before", (json_int_t)g.meta_before, "metadata_bytes",
            (json_int_t)g.meta_after, "low_water_blocks", (json_int_t)g.low_water_after));
    if (cli->quiet)
        return EXIT_OK;
    char d0[32], d1[32], m0[32], m1[32];
    format_bytes(g.data_before, d0, sizeof(d0));
    format_bytes(g.data_after, d1, sizeof(d1));
    format_bytes(g.meta_before, m0, sizeof(m0));
    format_bytes(g.meta_after, m1, sizeof(m1));
    if (!g.reloaded)
        printf("pool %s: nothing to grow (data %s, metadata %s)\n", cli->cfg.pool_name, d1, m1);
    else
        printf("pool %s: grown: data %s -> %s, metadata %s -> %s\n", cli->cfg.pool_name, d0, d1, m0,
               m1);
    return EXIT_OK;
}

int cmd_pool(struct cli *cli, int argc, char **argv)
{
    enum { OPT_DATA = 256, OPT_META };
    static const struct option opts[] = {{"data", required_argument, NULL, OPT_DATA},
                                         {"metadata", required_argument, NULL, OPT_META},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct pool_grow_request rq = {0};
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_DATA:
            if (pool_size_arg_parse(optarg, &rq.data) < 0)
                return cli_usage_error("pool", "invalid --data '%s' (SIZE or +SIZE)", optarg);
            break;
        case OPT_META:
            if (pool_size_arg_parse(optarg, &rq.metadata) < 0)
                return cli_usage_error("pool", "invalid --metadata '%s' (SIZE or +SIZE)", optarg);
            break;
        default: {
            int rc = cli_common_option("pool", c, usage, &json, NULL);
            if (rc != CLI_OPTION_TAKEN)
                return rc;
        }
        }
    }
    int rc = cli_check_operands("pool", argc, argv, optind);
    if (rc != EXIT_OK)
        return rc;
    const char *sub = argv[optind];
    bool check = !strcmp(sub, "check"), grow = !strcmp(sub, "grow");
    if (!check && !grow)
        return cli_usage_error("pool", "unknown subcommand '%s' (check or grow)", sub);
    if (check && (rq.data.set || rq.metadata.set))
        return cli_usage_error("pool", "--data and --metadata belong to `pool grow`");

    struct err e = {0};
    _cleanup_db_ struct db *db = NULL;
    int r = cli_open_db(cli, false, &db, &e);
    if (r < 0)
        return cli_fail(check ? "pool check" : "pool grow", r, &e);
    return check ? pool_check_cmd(cli, db, json) : pool_grow_cmd(cli, db, &rq, json);
}
