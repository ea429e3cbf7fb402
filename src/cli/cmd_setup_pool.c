/*
 * cmd_setup_pool.c: `thinimg setup-pool`: create, reassemble or adopt the thin pool (see
 * dm/pool.h for the rules), then report it. Running it again is a no-op.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/parse.h"
#include "cli/pool_report.h"
#include "dm/pool.h"
#include "util/cleanup.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg setup-pool [OPTIONS]\n"
            "\n"
            "Create the thin pool, reassemble it from its files after a reboot, or adopt a pool\n"
            "someone else made. Idempotent: a second run changes nothing. Before reassembling,\n"
            "thin_check checks the metadata; damage refuses (exit 3). Refuses a pool that is\n"
            "ro, needs_check, failed or too full, and says what to do (docs/dm.md).\n"
            "\n"
            "Options (used when the pool is created):\n"
            "  --data-size SIZE        data file size (default 4G); K, M, G, T suffixes\n"
            "  --metadata-size SIZE    metadata file size (default: 4 x 48 x data/block,\n"
            "                          at least 16M; the kernel needs at least 2M)\n"
            "  --block-size SIZE       data block size, multiple of 64K (default 64K)\n"
            "  --low-water FRACTION    free-space event threshold, fraction of the pool\n"
            "                          (default 0.10)\n"
            "  --data-file PATH        data file (default STATE/pool/POOL-data.img)\n"
            "  --metadata-file PATH    metadata file (default STATE/pool/POOL-meta.img)\n"
            "  --json                  print the result as JSON\n"
            "  -h, --help              this help\n"
            "\n"
            "The pool name comes from --pool or THINIMG_POOL (default thinimg).\n"
            "Exit codes: 0 ok, 1 failed, 2 usage, 3 pool unhealthy (refused), 4 not found.\n");
}

int cmd_setup_pool(struct cli *cli, int argc, char **argv)
{
    enum {
        OPT_DATA_SIZE = 256,
        OPT_META_SIZE,
        OPT_BLOCK,
        OPT_LOW,
        OPT_DATA_FILE,
        OPT_META_FILE,
        OPT_JSON
    };
    static const struct option opts[] = {{"data-size", required_argument, NULL, OPT_DATA_SIZE},
                                         {"metadata-size", required_argument, NULL, OPT_META_SIZE},
                                         {"block-size", required_argument, NULL, OPT_BLOCK},
                                         {"low-water", required_argument, NULL, OPT_LOW},
                                         {"data-file", required_argument, NULL, OPT_DATA_FILE},
                                         {"metadata-file", required_argument, NULL, OPT_META_FILE},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct pool_config pc = {.name = cli->cfg.pool_name, .pool_dir = cli->cfg.pool_dir};
    bool json = false;
    uint64_t v = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_DATA_SIZE:
            if (parse_size(optarg, &v) < 0 || v == 0)
                return cli_usage_error("setup-pool", "invalid --data-size '%s'", optarg);
            pc.data_bytes = v;
            break;
        case OPT_META_SIZE:
            if (parse_size(optarg, &v) < 0 || v == 0)
                return cli_usage_error("setup-pool", "invalid --metadata-size '%s'", optarg);
            pc.metadata_bytes = v;
            break;
        case OPT_BLOCK:
            if (parse_size(optarg, &v) < 0 || v % (64ull * 1024) || v == 0 ||
                v / DM_SECTOR_SIZE > POOL_BLOCK_SECTORS_MAX)
                return cli_usage_error("setup-pool",
                                       "invalid --block-size '%s' (a multiple of 64K, at most 1G)",
                                       optarg);
            pc.block_sectors = (uint32_t)(v / DM_SECTOR_SIZE);
            break;
        case OPT_LOW: {
            char *end = NULL;
            double f = strtod(optarg, &end);
            if (!end || *end || !(f > 0.0 && f < 1.0))
                return cli_usage_error("setup-pool",
                                       "invalid --low-water '%s' (a fraction, e.g. 0.1)", optarg);
            pc.low_water = f;
            break;
        }
        case OPT_DATA_FILE:
            pc.data_file = optarg;
            break;
        case OPT_META_FILE:
            pc.metadata_file = optarg;
            break;
        case OPT_JSON:
            json = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return cli_bad_option("setup-pool");
        }
    }
    int operands_rc = cli_check_operands("setup-pool", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;

    struct err e = {0};
    _cleanup_db_ struct db *db = NULL;
    int r = cli_open_db(cli, false, &db, &e);
    if (r < 0)
        return cli_fail("setup-pool", r, &e);
    struct pool_info info;
    r = pool_setup(db, &pc, &info, &e);
    if (info.active) {
        if (json) {
            json_t *o = pool_report_json(&info, r < 0 ? &e : NULL);
            cli_print_json(o);
        } else if (!cli->quiet || r < 0)
            pool_report_text(&info, r < 0 ? &e : NULL, stdout);
    }
    if (r < 0)
        return cli_fail("setup-pool", r, &e);
    return EXIT_OK;
}
