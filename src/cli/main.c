/*
 * main.c: `thinimg` entry point: global options, command dispatch, top-level help.
 *
 * Global options are taken out of argv wherever they appear (before "--"), so both
 * `thinimg --state-dir D list-images` and `thinimg list-images --state-dir D` work; the rest
 * is handed to the command, which parses its own options with getopt_long. A command's own
 * option written before the command name (`thinimg --endpoint URL ls REF`) is handed to it too.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/log.h"
#include "util/version.h"

static const struct cli_command commands[] = {
    {"process-image", cmd_process_image, "fetch, unpack and activate an image (the main job)"},
    {"activate", cmd_activate, "create a named writable snapshot of a processed image"},
    {"deactivate", cmd_deactivate, "remove an activation's device (keeps the image)"},
    {"remove", cmd_remove, "remove an image or an activation"},
    {"list-images", cmd_list_images, "list processed images"},
    {"list-snapshots", cmd_list_snapshots, "list activations (writable snapshots)"},
    {"ls", cmd_ls, "list the images and layers under a source location"},
    {"fetch", cmd_fetch, "download and validate an image's blobs without unpacking"},
    {"extract", cmd_extract, "apply layer archives into a directory (no device)"},
    {"runs", cmd_runs, "list workflow runs, or show one with its events"},
    {"status", cmd_status, "show the thin pool and its devices"},
    {"health", cmd_health, "check the host and the pool before devicemapper work"},
    {"setup-pool", cmd_setup_pool, "create, reassemble or adopt the thin pool"},
    {"gc", cmd_gc, "find and remove orphaned devices, mounts and files (dry run by default)"},
    {"daemon", cmd_daemon, "run the manager with its admin API"},
    {"monitor", cmd_monitor, "terminal dashboard of runs, pool and activations"},
    {"version", cmd_version, "print version information"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg [GLOBAL OPTIONS] COMMAND [ARGS]\n"
            "\n"
            "Turns container images (in S3, a directory or over HTTP) into ready-to-boot\n"
            "devicemapper thin devices.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-16s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Global options (anywhere on the line):\n"
            "  --state-dir DIR     state directory (env THINIMG_STATE_DIR, default "
            "/var/lib/thinimg)\n"
            "  --db PATH           database (env THINIMG_DB, default STATE/thinimg.db)\n"
            "  --pool NAME         thin pool name (env THINIMG_POOL, default thinimg)\n"
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

/* Global options that take a value. */
static const char *const value_opts[] = {"--state-dir", "--db",         "--pool",      "--source",
                                         "--socket",    "--log-format", "--log-level", NULL};

/* The source options (cli_source.h) that take a value: written before the command, they are
 * handed to it (`thinimg --endpoint URL ls REF`), so the command's parser needs their value
 * next to them. Commands without source options reject them as usual. */
static const char *const source_value_opts[] = {"--region", "--endpoint", NULL};

static bool takes_separate_value(const char *a)
{
    for (int k = 0; source_value_opts[k]; k++)
        if (!strcmp(a, source_value_opts[k]))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    struct cli cli = {.argv0 = argv[0], .tty = isatty(STDOUT_FILENO) == 1};
    struct config_overrides ov = {0};
    enum log_format lf = LOG_FMT_LOGFMT;
    enum log_level ll = LOG_LVL_INFO;
    bool level_given = false;
    const char *lf_s = getenv("THINIMG_LOG_FORMAT"), *ll_s = getenv("THINIMG_LOG_LEVEL");

    /* Take global options out of argv. */
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    if (!rest)
        return EXIT_FAIL;
    /* Options written before the command that are not global: moved after it. */
    char **early = calloc((size_t)argc + 1, sizeof(char *));
    if (!early) {
        free(rest);
        return EXIT_FAIL;
    }
    int nrest = 0, nearly = 0;
    bool dashdash = false, have_command = false;
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (i == 0 || dashdash) {
            rest[nrest++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            dashdash = true;
            rest[nrest++] = a;
            continue;
        }
        const char *matched = NULL, *value = NULL;
        for (int k = 0; value_opts[k]; k++) {
            size_t n = strlen(value_opts[k]);
            if (strncmp(a, value_opts[k], n) == 0 && (a[n] == '\0' || a[n] == '=')) {
                matched = value_opts[k];
                if (a[n] == '=')
                    value = a + n + 1;
                else if (i + 1 < argc)
                    value = argv[++i];
                else {
                    fprintf(stderr, "thinimg: option %s needs a value\n", matched);
                    free(rest);
                    free(early);
                    return EXIT_USAGE;
                }
                break;
            }
        }
        if (matched) {
            if (!strcmp(matched, "--state-dir"))
                ov.state_dir = value;
            else if (!strcmp(matched, "--db"))
                ov.db_path = value;
            else if (!strcmp(matched, "--pool"))
                ov.pool_name = value;
            else if (!strcmp(matched, "--source"))
                ov.source = value;
            else if (!strcmp(matched, "--socket"))
                ov.socket_path = value;
            else if (!strcmp(matched, "--log-format"))
                lf_s = value;
            else if (!strcmp(matched, "--log-level")) {
                ll_s = value;
                level_given = true;
            }
            continue;
        }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            cli.verbose = true;
            continue;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli.quiet = true;
            continue;
        }
        if (!have_command && a[0] == '-' && a[1] != '\0' && strcmp(a, "-h") &&
            strcmp(a, "--help") && strcmp(a, "--version")) {
            early[nearly++] = a;
            if (takes_separate_value(a) && i + 1 < argc)
                early[nearly++] = argv[++i];
            continue;
        }
        rest[nrest++] = a;
        if (!have_command) {
            have_command = true;
            for (int k = 0; k < nearly; k++)
                rest[nrest++] = early[k];
            nearly = 0;
        }
    }
    /* No command: what was held back is shown as it came (the usage error names it). */
    for (int k = 0; k < nearly; k++)
        rest[nrest++] = early[k];
    rest[nrest] = NULL;
    free(early);

    if (lf_s && log_format_parse(lf_s, &lf) < 0) {
        fprintf(stderr, "thinimg: unknown log format '%s' (use logfmt or json)\n", lf_s);
        free(rest);
        return EXIT_USAGE;
    }
    if (ll_s && log_level_parse(ll_s, &ll) < 0) {
        fprintf(stderr, "thinimg: unknown log level '%s' (use debug, info, warn, error, off)\n",
                ll_s);
        free(rest);
        return EXIT_USAGE;
    }
    if (cli.verbose && !level_given)
        ll = LOG_LVL_DEBUG;
    else if (cli.quiet && !level_given)
        ll = LOG_LVL_WARN;
    log_setup(lf, ll, STDERR_FILENO);
    cli.log_level_set = level_given || ll_s || cli.verbose || cli.quiet;
    cli.log_format = lf;

    if (nrest < 2) {
        usage(stderr);
        free(rest);
        return EXIT_USAGE;
    }
    const char *name = rest[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
        if (nrest >= 3) {
            /* `thinimg help CMD` == `thinimg CMD --help` */
            rest[1] = rest[2];
            rest[2] = "--help";
            name = rest[1];
        } else {
            usage(stdout);
            free(rest);
            return EXIT_OK;
        }
    }
    if (!strcmp(name, "--version"))
        name = "version";

    const struct cli_command *cmd = NULL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(commands[i].name, name))
            cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "thinimg: unknown command '%s'; run `thinimg --help` for the list\n",
                name);
        free(rest);
        return EXIT_USAGE;
    }
    if (config_resolve(&cli.cfg, &ov) < 0) {
        fprintf(stderr, "thinimg: out of memory\n");
        free(rest);
        return EXIT_FAIL;
    }
    /* getopt names the program in its messages ("thinimg: ls: unrecognized option '--x'"):
     * the command's argv[0] reads like every other error line. */
    char prog[64];
    snprintf(prog, sizeof(prog), "thinimg: %s", cmd->name);
    rest[1] = prog;
    optind = 1;
    int rc = cmd->fn(&cli, nrest - 1, rest + 1);
    config_free(&cli.cfg);
    free(rest);
    return rc;
}
