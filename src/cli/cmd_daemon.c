/*
 * cmd_daemon.c: `thinimg daemon`: run the manager of the state directory with its admin API
 * until SIGTERM/SIGINT (src/daemon/daemon.h; docs/daemon.md).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_queue.h"
#include "cli/cli_source.h"
#include "daemon/daemon.h"

/* --auto-gc-orphans-grace: a week is the longest that still means "collect them". */
#define DAEMON_ORPHAN_GRACE_MAX_MS (7LL * 24 * 3600 * 1000)

/* "30s", "10m", "1h", "500ms" or plain seconds ("90", "1.5") into ms; -1 when malformed. */
static int64_t parse_duration_ms(const char *s)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"", 1000}};
    char *end = NULL;
    double v = strtod(s, &end);
    if (!*s || end == s || !(v >= 0))
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (!strcmp(end, units[i].unit))
            return (int64_t)(v * units[i].ms);
    return -1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg daemon [OPTIONS]\n"
            "\n"
            "Run the manager of the state directory: resume unfinished runs, serve the admin\n"
            "API (HTTP/JSON on a Unix socket, docs/daemon.md) and Prometheus /metrics. While\n"
            "it runs, process-image, activate, deactivate, remove and gc send their work to\n"
            "it, and it removes orphans (what `gc` lists) on its own when idle and healthy.\n"
            "SIGTERM or SIGINT stops it gracefully (runs resume at the next start); SIGHUP\n"
            "reloads nothing.\n"
            "\n"
            "Options:\n"
            "  --socket PATH            admin API socket (default STATE/thinimg.sock, mode 0600)\n"
            "  --socket-mode MODE       octal permissions of the socket (default 0600)\n"
            "  --metrics-listen A:P     also serve GET /metrics over TCP (127.0.0.1:9100)\n"
            "  --no-pool-setup          use the pool as it is; never create or reassemble it\n"
            "  --gc-high-water PCT      while idle, when pool usage reaches PCT%%, remove\n"
            "                           images without activations, least recently used\n"
            "                           first (default 0: off)\n"
            "  --gc-low-water PCT       ... until usage is below PCT%% (default high - 10)\n"
            "  --auto-gc-orphans-grace DURATION\n"
            "                           while idle and healthy, remove what failed or\n"
            "                           interrupted work left behind (what `gc` lists, blobs\n"
            "                           included) once it has been an orphan this long\n"
            "                           (default 10m; 30s, 10m, 1h, or seconds)\n"
            "  --no-auto-gc-orphans     leave orphans to `thinimg gc --force`\n"
            "  --wait-lock              wait for another thinimg process instead of "
            "failing\n" CLI_QUEUE_HELP CLI_SOURCE_HELP "  -h, --help               this help\n"
            "\n"
            "Exit codes: 0 stopped cleanly, 1 failed (e.g. another process serves the\n"
            "socket), 2 usage, 5 another thinimg process holds the state directory.\n");
}

int cmd_daemon(struct cli *cli, int argc, char **argv)
{
    enum {
        OPT_METRICS = 256,
        OPT_NOPOOL,
        OPT_WAIT,
        OPT_MODE,
        OPT_GCHI,
        OPT_GCLO,
        OPT_ORPHAN_GRACE,
        OPT_NO_ORPHANS
    };
    static const struct option opts[] = {
        {"metrics-listen", required_argument, NULL, OPT_METRICS},
        CLI_QUEUE_LONG_OPTIONS,
        {"no-pool-setup", no_argument, NULL, OPT_NOPOOL},
        {"wait-lock", no_argument, NULL, OPT_WAIT},
        {"socket-mode", required_argument, NULL, OPT_MODE},
        {"gc-high-water", required_argument, NULL, OPT_GCHI},
        {"gc-low-water", required_argument, NULL, OPT_GCLO},
        {"auto-gc-orphans-grace", required_argument, NULL, OPT_ORPHAN_GRACE},
        {"no-auto-gc-orphans", no_argument, NULL, OPT_NO_ORPHANS},
        {"help", no_argument, NULL, 'h'},
        CLI_SOURCE_LONG_OPTIONS,
        {0}};
    struct source_options so = {0};
    struct daemon_opts o = {.cfg = &cli->cfg,
                            .source = &so,
                            .skip_health = getenv("THINIMG_SKIP_HEALTH_CHECKS") != NULL};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case OPT_METRICS:
            o.metrics_listen = optarg;
            break;
        case OPT_GCHI:
        case OPT_GCLO: {
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < (c == OPT_GCHI ? 0 : 1) || v > 99)
                return cli_usage_error("daemon", "--%s needs a percentage 1..99, not '%s'",
                                       c == OPT_GCHI ? "gc-high-water" : "gc-low-water", optarg);
            *(c == OPT_GCHI ? &o.autogc.high_pct : &o.autogc.low_pct) = (int)v;
            break;
        }
        case OPT_ORPHAN_GRACE:
            o.orphan_grace_ms = parse_duration_ms(optarg);
            if (o.orphan_grace_ms <= 0 || o.orphan_grace_ms > DAEMON_ORPHAN_GRACE_MAX_MS)
                return cli_usage_error("daemon",
                                       "--auto-gc-orphans-grace needs a duration above 0 and "
                                       "at most a week (30s, 10m, 1h), not '%s'",
                                       optarg);
            break;
        case OPT_NO_ORPHANS:
            o.no_auto_gc_orphans = true;
            break;
        case OPT_NOPOOL:
            o.no_pool_setup = true;
            break;
        case OPT_WAIT:
            o.wait_lock = true;
            break;
        case OPT_MODE: {
            long m = strtol(optarg, &end, 8);
            if (!*optarg || *end || m <= 0 || m > 0777)
                return cli_usage_error("daemon",
                                       "--socket-mode needs an octal mode such as "
                                       "0660, not '%s'",
                                       optarg);
            o.socket_mode = (mode_t)m;
            break;
        }
        default: {
            int qr = cli_queue_option("daemon", c, optarg, &o.queues);
            if (qr < 0)
                return EXIT_USAGE;
            if (qr)
                break;
            int rc = cli_common_option("daemon", c, usage, NULL, &so);
            if (rc != CLI_OPTION_TAKEN)
                return rc;
        }
        }
    }
    int operands_rc = cli_check_operands("daemon", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    if (o.autogc.low_pct && o.autogc.low_pct >= o.autogc.high_pct)
        return cli_usage_error("daemon", "--gc-low-water needs --gc-high-water above it");
    struct err e = {0};
    int r = daemon_run(&o, &e);
    if (r < 0)
        return cli_fail("daemon", r, &e);
    return EXIT_OK;
}
