/*
 * cli.h: the `thinimg` command-line front end: dispatch, shared options, exit codes.
 *
 * Each command lives in its own file `cmd_<name>.c` and defines `int cmd_<name>(struct cli *,
 * int argc, char **argv)`; argv[0] is the command name and the global options have already
 * been removed. A command returns an exit code (below), never a negative errno: map errors
 * with cli_exit_code().
 *
 * Global options may appear anywhere before "--": --state-dir, --db, --pool, --source,
 * --socket, --log-format, --log-level, -v/--verbose (= --log-level debug), -q/--quiet.
 */
#pragma once

#include <stdbool.h>
#include <stdio.h>

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

struct cli_command {
    const char *name;
    cli_cmd_fn fn;
    const char *summary;
};

/* Map a negative errno to an exit code (-ENOENT -> NOTFOUND, -EBUSY/-EAGAIN -> BUSY, ...). */
int cli_exit_code(int r);

/* Print "thinimg: <command>: <message>" to stderr and return the exit code for r. */
int cli_fail(const char *cmd, int r, const struct err *e);
int cli_failf(const char *cmd, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* What a permission error on the state directory or the database tells the operator. */
#define CLI_RUN_AS_ROOT                                                                            \
    "thinimg runs as root (or as the user that owns the state directory and its files)"

/* Print a usage error with a hint to run --help; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* getopt has just said what was wrong with an option (on stderr, as "thinimg: CMD: ..."): add
 * where the usage is and return EXIT_USAGE. */
int cli_bad_option(const char *cmd);

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
int cmd_status(struct cli *cli, int argc, char **argv);
int cmd_health(struct cli *cli, int argc, char **argv);
int cmd_runs(struct cli *cli, int argc, char **argv);
int cmd_daemon(struct cli *cli, int argc, char **argv);
int cmd_monitor(struct cli *cli, int argc, char **argv);
int cmd_ls(struct cli *cli, int argc, char **argv);
int cmd_fetch(struct cli *cli, int argc, char **argv);
int cmd_extract(struct cli *cli, int argc, char **argv);
