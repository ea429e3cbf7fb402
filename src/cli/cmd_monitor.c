/*
 * cmd_monitor.c: `thinimg monitor`: the terminal dashboard (src/tui/monitor.h).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_source.h"
#include "tui/monitor.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg monitor [--inline] [--refresh MS] [REF]\n"
            "\n"
            "A terminal dashboard: active and recent runs with their states and progress, pool\n"
            "usage, activations and the daemon's recent log lines. A second view (key 2) lists\n"
            "the images under REF (default: --source / THINIMG_SOURCE), like `thinimg ls`, and\n"
            "starts process-image on the selected one. With a running daemon the data is live;\n"
            "without one the monitor shows the database read-only and cannot start work.\n"
            "\n"
            "Keys: q quit, 1 dashboard, 2 or Tab source view, r refresh now; in the source view\n"
            "Up/Down (j/k) select, Enter (p) process-image, l list again.\n"
            "\n"
            "Options:\n"
            "  --inline        draw on the normal screen, not the alternate one (SSH sessions,\n"
            "                  terminal logs); the last frame stays when it quits\n"
            "  --refresh MS    refresh interval (default %d, at least %d)\n" CLI_SOURCE_HELP
            "  -h, --help      this help\n",
            MONITOR_DEFAULT_REFRESH_MS, MONITOR_MIN_REFRESH_MS);
}

int cmd_monitor(struct cli *cli, int argc, char **argv)
{
    enum { OPT_INLINE = 256, OPT_REFRESH };
    static const struct option opts[] = {{"inline", no_argument, NULL, OPT_INLINE},
                                         {"refresh", required_argument, NULL, OPT_REFRESH},
                                         {"help", no_argument, NULL, 'h'},
                                         CLI_SOURCE_LONG_OPTIONS,
                                         {0}};
    struct source_options so = {0};
    struct monitor_opts o = {.cfg = &cli->cfg, .source = &so};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case OPT_INLINE:
            o.inline_mode = true;
            break;
        case OPT_REFRESH:
            o.refresh_ms = (int)strtol(optarg, &end, 10);
            if (!*optarg || *end || o.refresh_ms < MONITOR_MIN_REFRESH_MS)
                return cli_usage_error("monitor", "--refresh needs milliseconds >= %d, not '%s'",
                                       MONITOR_MIN_REFRESH_MS, optarg);
            break;
        default: {
            int rc = cli_common_option("monitor", c, usage, NULL, &so);
            if (rc != CLI_OPTION_TAKEN)
                return rc;
        }
        }
    }
    int operands_rc = cli_check_operands("monitor", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    o.browse = optind < argc ? argv[optind] : NULL;
    if (!isatty(STDOUT_FILENO) || !isatty(STDIN_FILENO))
        return cli_failf("monitor", EXIT_USAGE,
                         "the monitor needs a terminal (for scripts: thinimg runs --json, "
                         "curl --unix-socket %s http://localhost/v1/runs)",
                         cli->cfg.socket_path);
    /* Log lines would scribble over the screen; the daemon's log is shown in it instead. */
    log_setup(cli->log_format, LOG_LVL_OFF, STDERR_FILENO);
    struct err e = {0};
    int r = monitor_run(&o, &e);
    if (r < 0)
        return cli_fail("monitor", r, &e);
    return EXIT_OK;
}
