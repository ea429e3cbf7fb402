/*
 * test_cmd_ls.c: `thinimg ls` over a dir: source: the table, --json, warnings on stderr,
 * relative REFs against --source, usage errors and exit codes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "util/fsutil.h"

static char *ROOT;

static void put(const char *rel, const char *content)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/bucket/%s", ROOT, rel);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    assert_int_equal(mkdir_p(p, 0755), 0);
    *slash = '/';
    assert_int_equal(tu_write_file(p, content, strlen(content)), 0);
}

static int setup(void **state)
{
    (void)state;
    ROOT = tu_mkdtemp("cmdls");
    put("images/golang/1.tar", "1");
    put("images/golang/2.tar", "22");
    put("images/golang/10.tar", "1010");
    put("images/golang/notes.txt", "n");
    put("images/node/1.tar", "n");
    put("misc/alpine.tar", "alpine");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmrf(ROOT);
    free(ROOT);
    return 0;
}

static int ls(const char *a1, const char *a2, const char *a3, char **out, char **err)
{
    char sd[4096];
    snprintf(sd, sizeof(sd), "--state-dir=%s/state", ROOT);
    char *argv[] = {(char *)tu_thinimg(), sd, "ls", (char *)a1, (char *)a2, (char *)a3, NULL};
    return tu_run(argv, NULL, out, err);
}

static void test_table(void **state)
{
    (void)state;
    char loc[4096];
    snprintf(loc, sizeof(loc), "dir:%s/bucket", ROOT);
    char *out = NULL, *err = NULL;
    assert_int_equal(ls(loc, NULL, NULL, &out, &err), 0);
    assert_true(tu_contains(out, "golang:10"));
    assert_true(tu_contains(out, "3 layers"));
    assert_true(tu_contains(out, "node:1"));
    assert_true(tu_contains(out, "misc/alpine.tar"));
    /* numeric order: 2.tar is printed before 10.tar */
    assert_true(strstr(out, "  2.tar") < strstr(out, "  10.tar"));
    assert_true(tu_contains(err, "warning: golang: gap: 3.tar to 9.tar are missing"));
    assert_true(tu_contains(err, "'notes.txt' is not a layer name"));
    free(out);
    free(err);
}

static void test_json_relative(void **state)
{
    (void)state;
    char src[4096];
    snprintf(src, sizeof(src), "--source=dir:%s/bucket", ROOT);
    char *out = NULL, *err = NULL;
    assert_int_equal(ls(src, "images/golang", "--json", &out, &err), 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    json_t *fams = json_object_get(j, "families");
    assert_int_equal(json_array_size(fams), 1);
    json_t *f = json_array_get(fams, 0);
    assert_string_equal(json_string_value(json_object_get(f, "image")), "golang:10");
    assert_int_equal(json_integer_value(json_object_get(f, "size")), 7);
    json_t *layers = json_object_get(f, "layers");
    assert_int_equal(json_array_size(layers), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(layers, 2), "n")), 10);
    assert_true(json_is_null(json_object_get(json_array_get(layers, 0), "digest")));
    assert_int_equal(json_array_size(json_object_get(f, "warnings")), 2);
    json_decref(j);
    free(out);
    free(err);
    /* a single object */
    assert_int_equal(ls(src, "misc/alpine.tar", "--json", &out, &err), 0);
    j = json_loads(out, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "objects")), 1);
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(j, "objects"), 0), "size")),
                     6);
    json_decref(j);
    free(out);
    free(err);
}

static void test_errors(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    /* no REF and no default source: usage */
    assert_int_equal(ls(NULL, NULL, NULL, &out, &err), 2);
    assert_true(tu_contains(err, "--source"));
    free(out);
    free(err);
    /* missing folder: not found */
    char loc[4096];
    snprintf(loc, sizeof(loc), "dir:%s/bucket/nope/", ROOT);
    assert_int_equal(ls(loc, NULL, NULL, &out, &err), 4);
    free(out);
    free(err);
    /* traversal in a relative REF: rejected */
    char src[4096];
    snprintf(src, sizeof(src), "--source=dir:%s/bucket", ROOT);
    assert_int_equal(ls(src, "../secret", NULL, &out, &err), 6);
    assert_true(tu_contains(err, "path traversal"));
    free(out);
    free(err);
    assert_int_equal(ls("--help", NULL, NULL, &out, &err), 0);
    assert_true(tu_contains(out, "Usage: thinimg ls"));
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_json_relative),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
