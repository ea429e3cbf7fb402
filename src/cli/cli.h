/*
 * cli.h: the `thinimg` command-line front end: dispatch, shared options, exit codes.
 *
 * Each command lives in its own file `cmd_<name>.c` and defines `int cmd_<name>(struct cli *,
 * int argc, char **argv)`; argv[0] is the command name and the global options have already
 * been removed. A command returns an exit code (below), never a negative errno: map errors
 * with cli_exit_code(). Every command has the same shape:
 *
 *   static void usage(FILE *out)         its --help text ("Usage: thinimg NAME ...")
 *   int cmd_<name>(cli, argc, argv)
 *       getopt_long() loop: 'h' prints usage(stdout) and returns EXIT_OK; an unknown option
 *       returns cli_bad_option(NAME)
 *       cli_check_operands(NAME, argc, argv, optind): the operand count from the command table
 *       then the work; failures through cli_fail(), --json output through cli_print_json()
 *
 * The command table (commands.c) names each command with its operands, their counts and a
 * one-line summary; `thinimg --help` is generated from it.
 *
 * Global options may appear anywhere before "--": --state-dir, --db, --pool, --source,
 * --socket, --log-format, --log-level, -v/--verbose (= --log-level debug), -q/--quiet.
 */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

#include "store/db.h"
#include "util/log.h"
#include "util/config.h"
#include "util/err.h"

/* Exit codes: documented in docs/cli.md; keep both in sync. */
enum cli_exit {
    EXIT_OK = 0,
    EXIT_FAIL = 1,          /* the operation failed (details on stderr) */
    EXIT_USAGE = 2,         /* bad command line */
    EXIT_UNHEALTHY = 3,     /* refused: pool or host unhealthy, or a permission is missing */
    EXIT_NOTFOUND = 4,      /* the named image, activation, run or object does not exist */
    EXIT_BUSY = 5,          /* another thinimg holds the lock or the resource is in use */
    EXIT_REJECTED = 6,      /* input rejected: not an image, unsafe archive, invalid key */
    EXIT_CORRUPT = 7,       /* the database file is corrupt: restore it or move it away */
    EXIT_READ_ONLY = 8,     /* the state directory is on a read-only file system */
    EXIT_INTERRUPTED = 130, /* SIGINT/SIGTERM/SIGHUP or a cancel: the runs stay recorded */
};

struct cli {
    struct config cfg;
    bool quiet;
    bool verbose;
    bool tty;        /* stdout is a terminal */
    bool log_level_set; /* --log-level, -v, -q or THINIMG_LOG_LEVEL given */
    enum log_format log_format;
    const char *argv0;
};

typedef int (*cli_cmd_fn)(struct cli *cli, int argc, char **argv);

/* max_operands for a command that takes any number of them. */
#define CLI_MANY -1

struct cli_command {
    const char *name;
    cli_cmd_fn fn;
    const char *operands;           /* their synopsis: "REF", "[REF]", "NAME...", "" */
    int min_operands, max_operands; /* max CLI_MANY: no limit */
    const char *summary;            /* one line, for `thinimg --help` */
};

extern const struct cli_command cli_commands[];
extern const size_t cli_n_commands;
/* The command of that name, or NULL. */
const struct cli_command *cli_command_find(const char *name);
/* After the option loop: the operands argv[first..argc) against the command's counts in the
 * table. EXIT_OK, or the usage error printed ("expected REF", "unexpected argument 'x'") and
 * EXIT_USAGE. */
int cli_check_operands(const char *name, int argc, char **argv, int first);
/* The top-level help: usage, the commands from the table, global options, exit codes. */
void cli_usage(FILE *out);

/* Map a negative errno to an exit code (-ENOENT -> NOTFOUND, -EBUSY/-EAGAIN -> BUSY, ...). */
int cli_exit_code(int r);

/* Print "thinimg: <command>: <message>" to stderr and return the exit code for r. */
int cli_fail(const char *cmd, int r, const struct err *e);
int cli_failf(const char *cmd, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* What a permission error on the state directory or the database tells the operator. */
#define CLI_RUN_AS_ROOT                                                                            \
    "thinimg runs as root (or as the user that owns the state directory and its files)"

/* The options commands share, for the end of a getopt_long loop (after the command's own
 * cases): --help ('h') prints usage(stdout) and ends the command with EXIT_OK; --json ('j')
 * sets *json (json NULL: the command has no --json); a source option (cli_source.h) fills *so
 * (so NULL: none); anything else is a bad option (cli_bad_option). CLI_OPTION_TAKEN when c was
 * taken and the loop goes on, else the exit code the command returns. */
#define CLI_OPTION_TAKEN (-1)
struct source_options;
int cli_common_option(const char *name, int c, void (*usage)(FILE *), bool *json,
                      struct source_options *so);

/* Print a usage error with a hint to run --help; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* getopt has just said what was wrong with an option (on stderr, as "thinimg: CMD: ..."): add
 * where the usage is and return EXIT_USAGE. */
int cli_bad_option(const char *cmd);

/* Print j on stdout as indented JSON and a newline, and drop the reference (every --json
 * output goes through here). EXIT_OK, or EXIT_FAIL when it could not be written. */
int cli_print_json(json_t *j);

/* The end of a listing command: r is what listing the rows returned. r < 0: the failure
 * (cli_fail). Else the rows: --json prints arr, otherwise the table, or `empty` on its own
 * line when the table has no row (nothing under --quiet). Frees arr and the table; an exit
 * code. */
struct table;
int cli_print_listing(struct cli *cli, const char *cmd, int r, json_t *arr, struct table *t,
                      const char *empty);

/* --limit N and --after KEY of a listing that pages (list-images, list-snapshots): at most N
 * rows after KEY. The listing asks for one row more than it shows (cli_page_ask), each row
 * callback calls cli_page_row (false: the row beyond the page, not shown), and
 * cli_page_done says on stderr how to continue. */
enum { CLI_OPT_LIMIT = 0x1200, CLI_OPT_AFTER };
#define CLI_PAGE_LONG_OPTIONS                                                                      \
    {"limit", required_argument, NULL, CLI_OPT_LIMIT}, {"after", required_argument, NULL, CLI_OPT_AFTER}
#define CLI_PAGE_HELP                                                                              \
    "  --limit N   at most N rows (default: all)\n"                                             \
    "  --after KEY the rows after KEY (the last one shown; the message after a page says it)\n"
struct cli_page {
    size_t limit;      /* 0 = all */
    const char *after; /* NULL = from the start */
    size_t shown;
    bool more;
    char *last;        /* the last row's key, for the next page */
};
/* In an option loop's default branch: CLI_OPTION_TAKEN when c was --limit or --after, else the
 * command's exit code (a bad value: a usage error; any other option: cli_bad_option). */
int cli_page_option(const char *cmd, int c, const char *arg, struct cli_page *p);
/* How many rows to ask the database for (one more than the page, to see if there are more). */
size_t cli_page_ask(const struct cli_page *p);
bool cli_page_row(struct cli_page *p, const char *key);
/* After a listing that succeeded: "more: thinimg CMD --after KEY" on stderr when the page was
 * full; frees p's memory. */
void cli_page_done(struct cli *cli, const char *cmd, struct cli_page *p);
/* The end of a paged listing: r as the listing returned it (1: stopped at the row beyond the
 * page), an --after key that names nothing said as "not found" (what: "image with that ref"),
 * then cli_print_listing and cli_page_done. */
int cli_print_page(struct cli *cli, const char *cmd, int r, json_t *arr, struct table *t,
                   const char *empty, struct cli_page *p, const char *what);

/* Open the database at cfg.db_path (creating the state dir and running every migration
 * unless readonly). Read-only opening of a missing database fails with -ENOENT. */
int cli_open_db(struct cli *cli, bool readonly, struct db **out, struct err *e);

/* Commands (one file each). */
int cmd_version(struct cli *cli, int argc, char **argv);
int cmd_process_image(struct cli *cli, int argc, char **argv);
int cmd_list_images(struct cli *cli, int argc, char **argv);
int cmd_list_snapshots(struct cli *cli, int argc, char **argv);
int cmd_activate(struct cli *cli, int argc, char **argv);
int cmd_deactivate(struct cli *cli, int argc, char **argv);
int cmd_remove(struct cli *cli, int argc, char **argv);
int cmd_gc(struct cli *cli, int argc, char **argv);
int cmd_setup_pool(struct cli *cli, int argc, char **argv);
int cmd_pool(struct cli *cli, int argc, char **argv);
int cmd_status(struct cli *cli, int argc, char **argv);
int cmd_health(struct cli *cli, int argc, char **argv);
int cmd_runs(struct cli *cli, int argc, char **argv);
int cmd_daemon(struct cli *cli, int argc, char **argv);
int cmd_monitor(struct cli *cli, int argc, char **argv);
int cmd_ls(struct cli *cli, int argc, char **argv);
int cmd_fetch(struct cli *cli, int argc, char **argv);
int cmd_extract(struct cli *cli, int argc, char **argv);
