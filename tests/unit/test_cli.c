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
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_global_options_anywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
