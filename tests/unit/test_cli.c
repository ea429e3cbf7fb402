/*
 * test_cli.c: the thinimg binary's dispatch: --help, --version, unknown commands and options,
 * global options anywhere on the line, exit codes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <stdio.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static int run(const char *a1, const char *a2, const char *a3, char **out, char **err)
{
    char *argv[] = {(char *)tu_thinimg(), (char *)a1, (char *)a2, (char *)a3, NULL};
    return tu_run(argv, NULL, out, err);
}

static void test_help(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    assert_int_equal(run("--help", NULL, NULL, &out, &err), 0);
    assert_true(tu_contains(out, "process-image"));
    assert_true(tu_contains(out, "Exit codes"));
    free(out);
    free(err);
    assert_int_equal(run(NULL, NULL, NULL, &out, &err), 2);
    assert_true(tu_contains(err, "Usage: thinimg"));
    free(out);
    free(err);
}

/* Every command `thinimg --help` lists answers `thinimg CMD --help` with its own usage on stdout
 * and exit 0: the list comes from the command table, so a command added there without a help,
 * or a help that names another command, fails here. */
static void test_every_command_has_help(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    assert_int_equal(run("--help", NULL, NULL, &out, &err), 0);
    free(err);
    char *list = strstr(out, "Commands:\n");
    assert_non_null(list);
    list += strlen("Commands:\n");
    int n = 0;
    for (char *line = list; line && strncmp(line, "  ", 2) == 0; n++) {
        char name[64];
        assert_int_equal(sscanf(line, " %63s", name), 1);
        char *hout = NULL, *herr = NULL;
        assert_int_equal(run(name, "--help", NULL, &hout, &herr), 0);
        char want[96];
        snprintf(want, sizeof(want), "Usage: thinimg %s", name);
        if (!tu_contains(hout, want))
            fail_msg("`thinimg %s --help` does not print \"%s\": %s", name, want, hout);
        free(hout);
        free(herr);
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    assert_int_equal(n, 18);
    free(out);
}

/* Operand counts come from the command table: too many or too few is a usage error (exit 2)
 * that names what was wrong, before any work. */
static void test_operand_counts(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    assert_int_equal(run("list-images", "extra", NULL, &out, &err), 2);
    assert_true(tu_contains(err, "thinimg: list-images: unexpected argument 'extra'"));
    free(out);
    free(err);
    assert_int_equal(run("fetch", NULL, NULL, &out, &err), 2);
    assert_true(tu_contains(err, "thinimg: fetch: expected REF"));
    assert_true(tu_contains(err, "Run `thinimg fetch --help`"));
    free(out);
    free(err);
    assert_int_equal(run("remove", "a", "b", &out, &err), 2);
    assert_true(tu_contains(err, "unexpected argument 'b'"));
    free(out);
    free(err);
}

static void test_version(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    assert_int_equal(run("--version", NULL, NULL, &out, &err), 0);
    assert_true(strncmp(out, "thinimg 0.", 10) == 0);
    free(out);
    free(err);
    assert_int_equal(run("version", "--json", NULL, &out, &err), 0);
    assert_true(tu_contains(out, "\"sqlite\""));
    free(out);
    free(err);
}

static void test_errors(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    assert_int_equal(run("no-such-command", NULL, NULL, &out, &err), 2);
    assert_true(tu_contains(err, "unknown command 'no-such-command'"));
    free(out);
    free(err);
    assert_int_equal(run("--log-format", "xml", "version", &out, &err), 2);
    assert_true(tu_contains(err, "unknown log format 'xml'"));
    free(out);
    free(err);
    assert_int_equal(run("version", "--state-dir", NULL, &out, &err), 2);
    assert_true(tu_contains(err, "--state-dir needs a value"));
    free(out);
    free(err);
}

static void test_global_options_anywhere(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    assert_int_equal(run("version", "--log-level", "debug", &out, &err), 0);
    free(out);
    free(err);
    assert_int_equal(run("--state-dir=/nonexistent", "version", NULL, &out, &err), 0);
    free(out);
    free(err);
}

/* A command's option is named once, in the project's own "thinimg: CMD:" form (getopt's
 * message and thinimg's used to be printed one after the other). */
static void test_bad_option_said_once(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    assert_int_equal(run("version", "--bogus", NULL, &out, &err), 2);
    assert_true(tu_contains(err, "thinimg: version: unrecognized option '--bogus'"));
    assert_non_null(strstr(err, "--bogus"));
    assert_null(strstr(strstr(err, "--bogus") + 1, "--bogus"));
    assert_true(tu_contains(err, "Run `thinimg version --help`"));
    free(out);
    free(err);
}

/* `thinimg --endpoint URL ls REF`: a command's source option written before the command is
 * handed to the command, with its separate value. */
static void test_command_options_before_command(void **state)
{
    (void)state;
    char dir[] = "/tmp/thinimg-cli-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char loc[64];
    snprintf(loc, sizeof(loc), "dir:%s", dir);
    char *out = NULL, *err = NULL;
    char *argv[] = {(char *)tu_thinimg(), "--endpoint", "http://127.0.0.1:9", "ls", loc, NULL};
    int rc = tu_run(argv, NULL, &out, &err);
    assert_false(tu_contains(err, "unknown command"));
    assert_false(tu_contains(err, "unrecognized option"));
    assert_int_not_equal(rc, 2);
    free(out);
    free(err);
    /* A command that has no such option says so, naming itself. */
    char *argv2[] = {(char *)tu_thinimg(), "--endpoint", "http://127.0.0.1:9", "version", NULL};
    assert_int_equal(tu_run(argv2, NULL, &out, &err), 2);
    assert_true(tu_contains(err, "thinimg: version: unrecognized option '--endpoint'"));
    free(out);
    free(err);
    rmdir(dir);
}

/* A database this user cannot read is never reported as "nothing yet": list-images and gc say
 * why and fail, and a state directory that exists but is not writable says so. */
static void test_unreadable_state(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char *top = tu_mkdtemp("cli-perm");
    char sd[512], cmd[2048];
    snprintf(sd, sizeof(sd), "%s/s", top);
    char *out = NULL, *err = NULL;
    char *mk[] = {(char *)tu_thinimg(), "--state-dir", sd, "gc", "--force", NULL};
    assert_int_equal(tu_run(mk, NULL, &out, &err), 0);
    free(out);
    free(err);
    assert_int_equal(chmod(top, 0755), 0);
    /* As an unprivileged user (nobody), the database 0600 or its directory closed: */
    const char *as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    const char *modes[] = {"chmod 700 %s", "chmod 755 %s && chmod 600 %s/thinimg.db",
                           "chmod 755 %s && chmod 644 %s/thinimg.db"};
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        char prep[1200];
        snprintf(prep, sizeof(prep), modes[m], sd, sd);
        assert_int_equal(tu_sh(prep, NULL, NULL), 0);
        const char *cmds[] = {"list-images", "gc"};
        for (size_t c = 0; c < 2; c++) {
            snprintf(cmd, sizeof(cmd), "%s %s --state-dir %s %s", as_nobody, tu_thinimg(), sd,
                     cmds[c]);
            int rc = tu_sh(cmd, &out, &err);
            assert_int_not_equal(rc, 0);
            assert_false(tu_contains(out, "nothing"));
            assert_false(tu_contains(out, "no images"));
            assert_true(tu_contains(err, "thinimg.db"));
            assert_true(tu_contains(err, "thinimg runs as root"));
            free(out);
            free(err);
        }
    }
    /* A command that writes: the state directory exists, but not for this user. */
    snprintf(cmd, sizeof(cmd),
             "chmod 755 %s && %s %s --state-dir %s fetch dir:%s/example/images/busybox/1.tar", sd,
             as_nobody, tu_thinimg(), sd, tu_build_dir());
    assert_int_not_equal(tu_sh(cmd, &out, &err), 0);
    assert_true(tu_contains(err, "not writable by this user"));
    free(out);
    free(err);
    tu_rmrf(top);
    free(top);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_every_command_has_help),
        cmocka_unit_test(test_operand_counts),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_global_options_anywhere),
        cmocka_unit_test(test_bad_option_said_once),
        cmocka_unit_test(test_command_options_before_command),
        cmocka_unit_test(test_unreadable_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
