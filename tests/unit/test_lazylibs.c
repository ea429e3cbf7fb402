/*
 * test_lazylibs.c: libcurl, libmicrohttpd, libarchive, libcrypto, ISA-L and ncursesw are loaded
 * on first use (util/dynlib.h), never at process start: the local commands do not load them, the
 * network sources load libcurl, reading a layer loads libarchive and libcrypto (its digest),
 * reading a gzip stream loads ISA-L, and a library that cannot be loaded is one clear error of
 * kind "unhealthy" (exit code 3), not a crash.
 *
 * The evidence that a command did not load a library is the dynamic loader's own trace
 * (LD_DEBUG=libs on stderr), checked against a library the command does load (jansson), so the
 * test fails if the trace is missing rather than passing on silence.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/gunzip.h"
#include "archive/isal_lib.h"
#include "daemon/mhd_lib.h"
#include "source/curl_lib.h"
#include "source/source.h"
#include "testutil.h"
#include "util/dynlib.h"
#include "util/err.h"

/* Runs `thinimg ARGS...` under LD_DEBUG=libs with a fresh state directory; returns the exit
 * code, the loader's trace in *trace (stderr). */
static int run_traced(const char *state_dir, char *const args[], char **trace)
{
    char *argv[8] = {(char *)tu_thinimg()};
    for (int i = 0; args[i]; i++) {
        assert_true(i + 2 < (int)(sizeof(argv) / sizeof(argv[0])));
        argv[i + 1] = args[i];
    }
    char state_env[4096];
    snprintf(state_env, sizeof(state_env), "THINIMG_STATE_DIR=%s", state_dir);
    char *env[] = {(char *)"LD_DEBUG=libs", state_env, NULL};
    char *out = NULL;
    int rc = tu_run(argv, env, &out, trace);
    free(out);
    return rc;
}

static void assert_not_loaded(const char *cmd, const char *trace)
{
    if (!tu_contains(trace, "libjansson.so"))
        fail_msg("`thinimg %s`: no loader trace on stderr (LD_DEBUG=libs ignored?): %.2000s", cmd,
                 trace);
    if (tu_contains(trace, "libcurl.so"))
        fail_msg("`thinimg %s` loaded libcurl", cmd);
    if (tu_contains(trace, "libmicrohttpd.so"))
        fail_msg("`thinimg %s` loaded libmicrohttpd", cmd);
    if (tu_contains(trace, "libisal.so"))
        fail_msg("`thinimg %s` loaded ISA-L (the example's layers are plain tars)", cmd);
    if (tu_contains(trace, "libncursesw.so") || tu_contains(trace, "libtinfo.so"))
        fail_msg("`thinimg %s` loaded ncursesw (only the monitor draws)", cmd);
}

static void assert_archive_loaded(const char *cmd, const char *trace, bool loaded)
{
    if (tu_contains(trace, "libarchive.so") != loaded)
        fail_msg("`thinimg %s` %s libarchive", cmd, loaded ? "did not load" : "loaded");
    if (tu_contains(trace, "libcrypto.so") != loaded)
        fail_msg("`thinimg %s` %s libcrypto", cmd, loaded ? "did not load" : "loaded");
}

/* `version`, `list-images` on an empty state directory and a fetch from a dir: source load
 * neither libcurl nor libmicrohttpd (the executable does not list them as NEEDED); the first
 * two do not load libarchive or libcrypto either, the fetch does (it hashes and validates the
 * layer) and succeeds. */
static void test_local_commands_do_not_load(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("lazylibs");
    char *trace = NULL;

    assert_int_equal(run_traced(dir, (char *[]){"version", NULL}, &trace), 0);
    assert_not_loaded("version", trace);
    assert_archive_loaded("version", trace, false);
    free(trace);

    assert_int_equal(run_traced(dir, (char *[]){"list-images", NULL}, &trace), 0);
    assert_not_loaded("list-images", trace);
    assert_archive_loaded("list-images", trace, false);
    free(trace);

    char ref[4096];
    snprintf(ref, sizeof(ref), "dir:%s/example/images/busybox/1.tar", tu_build_dir());
    assert_int_equal(run_traced(dir, (char *[]){"fetch", ref, NULL}, &trace), 0);
    assert_not_loaded("fetch dir:", trace);
    assert_archive_loaded("fetch dir:", trace, true);
    free(trace);

    tu_rmrf(dir);
    free(dir);
}

/* Opening a network source loads libcurl into this process (the same code the CLI runs); a
 * dir: source does not. Nothing is contacted: opening only parses the location. */
static void test_network_source_loads_curl(void **state)
{
    (void)state;
    struct source *s = NULL;
    char *key = NULL;
    struct err e = {0};
    char ref[4096];
    snprintf(ref, sizeof(ref), "dir:%s/example/images/busybox/", tu_build_dir());
    assert_int_equal(source_open(ref, NULL, &s, &key, &e), 0);
    source_free(s);
    free(key);
    assert_false(curl_lib_loaded());
    char *maps = tu_read_file("/proc/self/maps", NULL);
    assert_non_null(maps);
    assert_false(tu_contains(maps, curl_lib_soname()));
    free(maps);

    assert_int_equal(source_open("http://127.0.0.1:9/images/x.tar", NULL, &s, &key, &e), 0);
    source_free(s);
    free(key);
    assert_true(curl_lib_loaded());
    maps = tu_read_file("/proc/self/maps", NULL);
    assert_non_null(maps);
    assert_true(tu_contains(maps, "libcurl"));
    free(maps);
    assert_false(mhd_lib_loaded());
}

static ssize_t empty_source(void *ud, const void **buf)
{
    (void)ud;
    *buf = NULL;
    return 0;
}

/* Reading a gzip stream loads ISA-L into this process; nothing before it did. */
static void test_gunzip_loads_isal(void **state)
{
    (void)state;
    assert_false(isal_lib_loaded());
    char *maps = tu_read_file("/proc/self/maps", NULL);
    assert_non_null(maps);
    assert_false(tu_contains(maps, isal_lib_soname()));
    free(maps);
    struct gunzip *g = NULL;
    assert_int_equal(gunzip_new(&g, empty_source, NULL), 0);
    gunzip_free(g);
    assert_true(isal_lib_loaded());
    maps = tu_read_file("/proc/self/maps", NULL);
    assert_non_null(maps);
    assert_true(tu_contains(maps, "libisal"));
    free(maps);
}

/* A library that is not installed, or lacks a function: -ELIBACC, kind "unhealthy", a message
 * naming the library, what needs it and the package; the forwarding path gets NULL, not a
 * crash, and keeps the outcome. */
static void test_missing_library(void **state)
{
    (void)state;
    static const char *const names[] = {"thinimg_test_fn"};
    void *slots[1] = {NULL};
    struct dynlib missing = {
        .soname = "libthinimg-test-absent.so.9",
        .used_for = "the test",
        .package = "thinimg-test-absent",
        .names = names,
        .slots = slots,
        .count = 1,
    };
    struct err e = {0};
    assert_int_equal(dynlib_load(&missing, &e), -ELIBACC);
    assert_true(tu_contains(e.msg, "libthinimg-test-absent.so.9, needed by the test, cannot be "
                                   "loaded"));
    assert_true(tu_contains(e.msg, "install thinimg-test-absent"));
    assert_null(dynlib_fn(&missing, 0));
    assert_false(dynlib_loaded(&missing));
    assert_int_equal(err_kind_of(-ELIBACC), ERR_KIND_UNHEALTHY);

    static const char *const libc_names[] = {"strlen", "thinimg_no_such_function"};
    void *libc_slots[2] = {NULL, NULL};
    struct dynlib old = {
        .soname = "libc.so.6",
        .used_for = "the test",
        .package = "libc6",
        .names = libc_names,
        .slots = libc_slots,
        .count = 2,
    };
    err_clear(&e);
    assert_int_equal(dynlib_load(&old, &e), -ELIBACC);
    assert_true(tu_contains(e.msg, "libc.so.6, needed by the test, has no function "
                                   "thinimg_no_such_function"));
    assert_null(dynlib_fn(&old, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_commands_do_not_load),
        cmocka_unit_test(test_network_source_loads_curl),
        cmocka_unit_test(test_gunzip_loads_isal),
        cmocka_unit_test(test_missing_library),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
