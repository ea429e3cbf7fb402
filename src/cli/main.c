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
#include "dm/pool_life.h"
#include "util/cleanup.h"
#include "util/log.h"

/* Global options that take a value. */
static const char *const value_opts[] = {"--state-dir",  "--db",        "--pool",
                                         "--source",     "--socket",    "--backend",
                                         "--log-format", "--log-level", NULL};

/* The source options (cli_source.h) that take a value: written before the command, they are
 * handed to it (`thinimg --endpoint URL ls REF`), so the command's parser needs their value
 * next to them. Commands without source options reject them as usual. */
static const char *const source_value_opts[] = {"--region", "--endpoint", "--platform",
                                                "--insecure-registry", NULL};

static bool takes_separate_value(const char *a)
{
    for (int k = 0; source_value_opts[k]; k++)
        if (!strcmp(a, source_value_opts[k]))
            return true;
    return false;
}

/* What the global options said, before the configuration is resolved. */
struct globals {
    struct config_overrides ov;
    const char *log_format, *log_level;
    bool level_given;
};

/* The value of global option a (argv[*i]) when it is one of value_opts: *value set, *i moved
 * past a separate value. 1 matched, 0 not a global option, -1 its value is missing. */
static int match_value_opt(int argc, char **argv, int *i, const char **name, const char **value)
{
    const char *a = argv[*i];
    for (int k = 0; value_opts[k]; k++) {
        size_t n = strlen(value_opts[k]);
        if (strncmp(a, value_opts[k], n) != 0 || (a[n] != '\0' && a[n] != '='))
            continue;
        *name = value_opts[k];
        if (a[n] == '=')
            *value = a + n + 1;
        else if (*i + 1 < argc)
            *value = argv[++*i];
        else
            return -1;
        return 1;
    }
    return 0;
}

static void set_global(struct globals *g, const char *name, const char *value)
{
    if (!strcmp(name, "--state-dir"))
        g->ov.state_dir = value;
    else if (!strcmp(name, "--db"))
        g->ov.db_path = value;
    else if (!strcmp(name, "--pool"))
        g->ov.pool_name = value;
    else if (!strcmp(name, "--source"))
        g->ov.source = value;
    else if (!strcmp(name, "--socket"))
        g->ov.socket_path = value;
    else if (!strcmp(name, "--backend"))
        g->ov.backend = value;
    else if (!strcmp(name, "--log-format"))
        g->log_format = value;
    else if (!strcmp(name, "--log-level")) {
        g->log_level = value;
        g->level_given = true;
    }
}

/* Take the global options out of argv into g and cli; the rest goes to rest (the command
 * name first, then the options written before it, then the ones after). Returns the count of
 * rest, or -EXIT_USAGE when a global option lacks its value. */
static int split_args(int argc, char **argv, struct cli *cli, struct globals *g, char **rest,
                      char **early)
{
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
        const char *name = NULL, *value = NULL;
        int m = match_value_opt(argc, argv, &i, &name, &value);
        if (m < 0) {
            fprintf(stderr, "thinimg: option %s needs a value\n", name);
            return -EXIT_USAGE;
        }
        if (m > 0) {
            set_global(g, name, value);
            continue;
        }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            cli->verbose = true;
            continue;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            cli->quiet = true;
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
    return nrest;
}

/* The log format and level from the options and the environment. An exit code. */
static int setup_logging(struct cli *cli, const struct globals *g)
{
    enum log_format lf = LOG_FMT_LOGFMT;
    enum log_level ll = LOG_LVL_INFO;
    if (g->log_format && log_format_parse(g->log_format, &lf) < 0) {
        fprintf(stderr, "thinimg: unknown log format '%s' (use logfmt or json)\n", g->log_format);
        return EXIT_USAGE;
    }
    if (g->log_level && log_level_parse(g->log_level, &ll) < 0) {
        fprintf(stderr, "thinimg: unknown log level '%s' (use debug, info, warn, error, off)\n",
                g->log_level);
        return EXIT_USAGE;
    }
    if (cli->verbose && !g->level_given)
        ll = LOG_LVL_DEBUG;
    else if (cli->quiet && !g->level_given)
        ll = LOG_LVL_WARN;
    log_setup(lf, ll, STDERR_FILENO);
    cli->log_level_set = g->level_given || g->log_level || cli->verbose || cli->quiet;
    cli->log_format = lf;
    return EXIT_OK;
}

/* Find the command in rest[1] (help and --version are commands too) and run it. */
static int dispatch(struct cli *cli, const struct globals *g, char **rest, int nrest)
{
    if (nrest < 2) {
        cli_usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = rest[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
        if (nrest < 3) {
            cli_usage(stdout);
            return EXIT_OK;
        }
        /* `thinimg help CMD` == `thinimg CMD --help` */
        rest[1] = rest[2];
        rest[2] = "--help";
        name = rest[1];
    }
    if (!strcmp(name, "--version"))
        name = "version";
    const struct cli_command *cmd = cli_command_find(name);
    if (!cmd) {
        fprintf(stderr, "thinimg: unknown command '%s'; run `thinimg --help` for the list\n", name);
        return EXIT_USAGE;
    }
    if (config_resolve(&cli->cfg, &g->ov) < 0) {
        fprintf(stderr, "thinimg: out of memory\n");
        return EXIT_FAIL;
    }
    /* getopt names the program in its messages ("thinimg: ls: unrecognized option '--x'"):
     * the command's argv[0] reads like every other error line. */
    char prog[64];
    snprintf(prog, sizeof(prog), "thinimg: %s", cmd->name);
    rest[1] = prog;
    optind = 1;
    int rc = cmd->fn(cli, nrest - 1, rest + 1);
    config_free(&cli->cfg);
    return rc;
}

int main(int argc, char **argv)
{
    pool_watch_claim_signal(); /* before any thread exists: every thread inherits it */
    struct cli cli = {.argv0 = argv[0], .tty = isatty(STDOUT_FILENO) == 1};
    struct globals g = {.log_format = getenv("THINIMG_LOG_FORMAT"),
                        .log_level = getenv("THINIMG_LOG_LEVEL")};
    _cleanup_free_ char **rest = calloc((size_t)argc + 1, sizeof(char *));
    /* Options written before the command that are not global: moved after it. */
    _cleanup_free_ char **early = calloc((size_t)argc + 1, sizeof(char *));
    if (!rest || !early)
        return EXIT_FAIL;
    int nrest = split_args(argc, argv, &cli, &g, rest, early);
    if (nrest < 0)
        return -nrest;
    int rc = setup_logging(&cli, &g);
    return rc != EXIT_OK ? rc : dispatch(&cli, &g, rest, nrest);
}
