/*
 * commands.c: the command table (name, operands and their counts, one-line summary) and what
 * is derived from it: the top-level help and the operand check every command runs after its
 * options. See cli.h.
 */
#include <string.h>

#include "cli/cli.h"
#include "util/cleanup.h"

const struct cli_command cli_commands[] = {
    {"process-image", cmd_process_image, "REF", 1, 1,
     "fetch, unpack and activate an image (the main job)"},
    {"activate", cmd_activate, "IMAGE", 1, 1,
     "create a named writable snapshot of a processed image"},
    {"deactivate", cmd_deactivate, "NAME...", 1, CLI_MANY,
     "remove an activation's device (keeps the image)"},
    {"remove", cmd_remove, "NAME", 1, 1, "remove an image or an activation"},
    {"list-images", cmd_list_images, "", 0, 0, "list processed images"},
    {"list-snapshots", cmd_list_snapshots, "", 0, 0, "list activations (writable snapshots)"},
    {"ls", cmd_ls, "[REF]", 0, 1, "list the images and layers under a source location"},
    {"fetch", cmd_fetch, "REF", 1, 1, "download and validate an image's blobs without unpacking"},
    {"extract", cmd_extract, "LAYER...", 1, CLI_MANY,
     "apply layer archives into a directory (no device)"},
    /* runs reads its operands itself: `runs show RUN`, `runs cancel RUN` */
    {"runs", cmd_runs, "[show|cancel RUN]", 0, 2,
     "list workflow runs, or show one with its events"},
    {"status", cmd_status, "", 0, 0, "show the thin pool and its devices"},
    {"health", cmd_health, "", 0, 0, "check the host and the pool before devicemapper work"},
    {"setup-pool", cmd_setup_pool, "", 0, 0, "create, reassemble or adopt the thin pool"},
    {"pool", cmd_pool, "check|grow|repair|backup|set", 1, 1,
     "check, repair or back up the pool's metadata, grow it, set its autoextend policy"},
    {"gc", cmd_gc, "", 0, 0,
     "find and remove orphaned devices, mounts and files (dry run by default)"},
    {"daemon", cmd_daemon, "", 0, 0, "run the manager with its admin API"},
    {"monitor", cmd_monitor, "[REF]", 0, 1, "terminal dashboard of runs, pool and activations"},
    {"version", cmd_version, "", 0, 0, "print version information"},
};
const size_t cli_n_commands = ARRAY_SIZE(cli_commands);

const struct cli_command *cli_command_find(const char *name)
{
    for (size_t i = 0; i < cli_n_commands; i++)
        if (!strcmp(cli_commands[i].name, name))
            return &cli_commands[i];
    return NULL;
}

int cli_check_operands(const char *name, int argc, char **argv, int first)
{
    const struct cli_command *c = cli_command_find(name);
    int n = argc - first;
    if (!c || (n >= c->min_operands && (c->max_operands == CLI_MANY || n <= c->max_operands)))
        return EXIT_OK;
    if (n < c->min_operands)
        return cli_usage_error(name, "expected %s", c->operands);
    return cli_usage_error(name, "unexpected argument '%s'", argv[first + c->max_operands]);
}

void cli_usage(FILE *out)
{
    fprintf(out, "Usage: thinimg [GLOBAL OPTIONS] COMMAND [ARGS]\n"
                 "\n"
                 "Turns container images (in S3, a directory or over HTTP) into ready-to-boot\n"
                 "devicemapper thin devices.\n"
                 "\n"
                 "Commands:\n");
    for (size_t i = 0; i < cli_n_commands; i++) {
        char synopsis[64];
        snprintf(synopsis, sizeof(synopsis), "%s %s", cli_commands[i].name,
                 cli_commands[i].operands);
        fprintf(out, "  %-24s %s\n", synopsis, cli_commands[i].summary);
    }
    fprintf(out, "\n"
                 "Global options (anywhere on the line):\n"
                 "  --state-dir DIR     state directory (env THINIMG_STATE_DIR, default "
                 "/var/lib/thinimg)\n"
                 "  --db PATH           database (env THINIMG_DB, default STATE/thinimg.db)\n"
                 "  --pool NAME         thin pool name (env THINIMG_POOL, default thinimg)\n"
                 "  --backend NAME      dm-thin or overlay (env THINIMG_BACKEND); a state dir\n"
                 "                      keeps the one it was first used with (default dm-thin)\n"
                 "  --source LOC        default source for relative refs (env THINIMG_SOURCE)\n"
                 "  --socket PATH       daemon socket (env THINIMG_SOCKET, default "
                 "STATE/thinimg.sock)\n"
                 "  --log-format FMT    logfmt (default) or json\n"
                 "  --log-level LEVEL   debug, info (default), warn, error, off\n"
                 "  -v, --verbose       same as --log-level debug\n"
                 "  -q, --quiet         print only results and errors\n"
                 "  -h, --help          this help; `thinimg COMMAND --help` for a command\n"
                 "  --version           print the version\n"
                 "\n"
                 "Exit codes: 0 ok, 1 failed, 2 usage, 3 refused (unhealthy host or pool, or no\n"
                 "permission), 4 not found, 5 busy/locked, 6 input rejected, 7 database corrupt,\n"
                 "8 read-only file system, 130 interrupted.\n"
                 "See docs/cli.md.\n");
}
