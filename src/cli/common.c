/*
 * common.c: helpers shared by the commands: exit codes, error printing, opening the database.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_source.h"
#include "cli/table.h"
#include "pipeline/host.h"
#include "util/fsutil.h"
#include "util/parse.h"

int cli_exit_code(int r)
{
    if (r >= 0)
        return EXIT_OK;
    switch (err_kind_of(r)) {
    case ERR_KIND_INVALID: return EXIT_USAGE;
    case ERR_KIND_NOT_FOUND: return EXIT_NOTFOUND;
    case ERR_KIND_BUSY: return EXIT_BUSY;
    case ERR_KIND_REJECTED: return EXIT_REJECTED;
    case ERR_KIND_UNHEALTHY:
    case ERR_KIND_PERMISSION: return EXIT_UNHEALTHY;
    case ERR_KIND_INTERRUPTED: return EXIT_INTERRUPTED;
    case ERR_KIND_CORRUPT: return EXIT_CORRUPT;
    case ERR_KIND_READ_ONLY: return EXIT_READ_ONLY;
    default: return EXIT_FAIL;
    }
}

int cli_fail(const char *cmd, int r, const struct err *e)
{
    int code = e && e->code ? e->code : r;
    /* A busy, corrupt or read-only database is described where SQLite said so (naming the file
     * and the lock's holder); the code that passed the errno up often had no words for it. */
    struct err db = {0};
    db_last_failure(&db);
    char msg[2 * ERR_MSG_MAX];
    db_failure_explain(&db, code, e, msg, sizeof(msg));
    fprintf(stderr, "thinimg: %s: %s\n", cmd, msg);
    return cli_exit_code(code);
}

int cli_failf(const char *cmd, int code, const char *fmt, ...)
{
    fprintf(stderr, "thinimg: %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    fprintf(stderr, "thinimg: %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun `thinimg %s --help` for usage.\n", cmd);
    return EXIT_USAGE;
}

int cli_bad_option(const char *cmd)
{
    fprintf(stderr, "Run `thinimg %s --help` for usage.\n", cmd);
    return EXIT_USAGE;
}

int cli_common_option(const char *name, int c, void (*usage)(FILE *), bool *json,
                      struct source_options *so)
{
    if (c == 'h') {
        usage(stdout);
        return EXIT_OK;
    }
    if (c == 'j' && json) {
        *json = true;
        return CLI_OPTION_TAKEN;
    }
    if (so && cli_source_option(c, optarg, so))
        return CLI_OPTION_TAKEN;
    return cli_bad_option(name);
}

int cli_print_json(json_t *j)
{
    int r = json_dumpf(j, stdout, JSON_INDENT(2));
    putchar('\n');
    json_decref(j);
    return r < 0 ? EXIT_FAIL : EXIT_OK;
}

int cli_print_listing(struct cli *cli, const char *cmd, int r, json_t *arr, struct table *t,
                      const char *empty)
{
    if (r < 0) {
        json_decref(arr);
        table_free(t);
        return cli_fail(cmd, r, NULL);
    }
    if (arr)
        return cli_print_json(arr);
    if (t->rows > 1)
        table_print(t, stdout);
    else if (!cli->quiet)
        printf("%s\n", empty);
    table_free(t);
    return EXIT_OK;
}

int cli_open_db(struct cli *cli, bool readonly, struct db **out, struct err *e)
{
    if (readonly) {
        /* -ENOENT only when the database really is not there: callers print "nothing yet"
         * for it, which must never stand in for a database they cannot read. */
        struct stat st;
        if (stat(cli->cfg.db_path, &st) < 0 && errno == ENOENT)
            return err_set(e, -ENOENT,
                           "no database at %s (nothing processed yet, or wrong --state-dir/--db)",
                           cli->cfg.db_path);
        if (access(cli->cfg.db_path, R_OK) < 0)
            return err_set(e, -errno, "cannot read the database %s: %s; %s", cli->cfg.db_path,
                           strerror(errno), CLI_RUN_AS_ROOT);
        struct db_options o = {.readonly = true};
        struct err oe = {0};
        int r = db_open(cli->cfg.db_path, &o, out, &oe);
        /* The file is there and readable, so SQLite's CANTOPEN or READONLY (-EACCES) here
         * means the WAL index beside it cannot be made or written by this user (a read-only
         * file system is said as such). */
        if (r == -ENOENT || r == -EACCES)
            return err_set(e, -EACCES, "%s; %s", err_str(&oe), CLI_RUN_AS_ROOT);
        if (r < 0)
            return err_set(e, r, "%s", err_str(&oe));
        return r;
    }
    int r = config_ensure_dirs(&cli->cfg, e);
    return r < 0 ? r : host_db_open(&cli->cfg, out, e);
}

int cli_page_option(const char *cmd, int c, const char *arg, struct cli_page *p)
{
    if (c == CLI_OPT_AFTER) {
        p->after = arg;
        return CLI_OPTION_TAKEN;
    }
    if (c != CLI_OPT_LIMIT)
        return cli_bad_option(cmd);
    uint64_t n = 0;
    if (parse_u64(arg, &n) < 0 || n < 1 || n > SIZE_MAX - 1)
        return cli_usage_error(cmd, "--limit needs a number >= 1, not '%s'", arg);
    p->limit = (size_t)n;
    return CLI_OPTION_TAKEN;
}

size_t cli_page_ask(const struct cli_page *p)
{
    return p->limit ? p->limit + 1 : 0;
}

bool cli_page_row(struct cli_page *p, const char *key)
{
    if (p->limit && p->shown == p->limit) {
        p->more = true;
        return false;
    }
    p->shown++;
    free(p->last);
    p->last = key ? strdup(key) : NULL;
    return true;
}

void cli_page_done(struct cli *cli, const char *cmd, struct cli_page *p)
{
    if (p->more && p->last && !cli->quiet)
        fprintf(stderr, "more: thinimg %s --limit %zu --after %s\n", cmd, p->limit, p->last);
    free(p->last);
    p->last = NULL;
}

int cli_print_page(struct cli *cli, const char *cmd, int r, json_t *arr, struct table *t,
                   const char *empty, struct cli_page *p, const char *what)
{
    if (r == 1) /* stopped at the row beyond the page */
        r = 0;
    if (r == -ENOENT && p->after) {
        json_decref(arr);
        table_free(t);
        free(p->last);
        p->last = NULL;
        return cli_failf(cmd, EXIT_NOTFOUND, "--after %s: no %s", p->after, what);
    }
    r = cli_print_listing(cli, cmd, r, arr, t, empty);
    cli_page_done(cli, cmd, p);
    return r;
}
