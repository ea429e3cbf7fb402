/*
 * cmd_health.c: `thinimg health`: run the checks the operation guard runs before devicemapper
 * work and print the report. Exit 0 when healthy (warnings included), EXIT_UNHEALTHY otherwise.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/table.h"
#include "daemon/views.h"
#include "guard/health.h"
#include "pipeline/pipeline.h"
#include "util/fsutil.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: thinimg health [--json] [--peek]\n"
                 "\n"
                 "Check the host before devicemapper work: storage tasks stuck in D state,\n"
                 "kernel log errors since the last check (thin pool, I/O, hung tasks, OOM),\n"
                 "memory and I/O pressure, and the thin pool. Exits 0 when healthy, 3 when not.\n"
                 "\n"
                 "  --peek   do not mark kernel log lines as seen (report them again next time)\n"
                 "  --json   machine-readable report\n");
}

int cmd_health(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"peek", no_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    bool json = false, peek = false;
    int c;
    while ((c = getopt_long(argc, argv, "hjp", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'p': peek = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: return cli_bad_option("health");
        }
    }
    int operands_rc = cli_check_operands("health", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    bool have_state = mkdir_p(cli->cfg.state_dir, 0700) == 0;
    struct health_opts o = {.cursor_path = have_state ? cli->cfg.kmsg_cursor_path : NULL,
                            .advance_cursor = !peek};
    o.pool = pipeline_pool_health;
    o.pool_ud = cli->cfg.pool_name;
    struct health_report rep;
    int r = health_run(&o, &rep);
    if (r < 0)
        return cli_fail("health", r, NULL);
    if (json) {
        json_t *top = view_health(&rep);
        cli_print_json(top);
    } else {
        struct table t = TABLE_INIT;
        table_header(&t, "CHECK", "RESULT", "TOOK", "DETAIL", NULL);
        for (size_t i = 0; i < rep.n; i++) {
            char took[32];
            snprintf(took, sizeof(took), "%lldms", (long long)rep.checks[i].duration_ms);
            table_row(&t, rep.checks[i].name, health_level_name(rep.checks[i].level), took,
                      rep.checks[i].detail, NULL);
        }
        table_print(&t, stdout);
        table_free(&t);
        printf("\n%s\n", rep.overall == HEALTH_FAIL ? "UNHEALTHY: devicemapper work is refused "
                                                      "until the failing checks clear"
                         : rep.overall == HEALTH_WARN ? "healthy, with warnings"
                                                      : "healthy");
    }
    return rep.overall == HEALTH_FAIL ? EXIT_UNHEALTHY : EXIT_OK;
}
