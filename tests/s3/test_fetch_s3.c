/*
 * test_fetch_s3.c: `thinimg fetch` against the local S3 server, as an operator runs it:
 *  - a family fetched, every digest equal to the sha256 of the object, rows recorded;
 *  - kill -9 in the middle of a download, then fetch again: the download resumes at the
 *    byte (the temp file's length: same boot), past the last durability checkpoint, with
 *    Range + If-Match; the bytes sent on resume are the remainder;
 *  - kill -9, the object replaced, fetch again: the ETag changed, the download starts over and
 *    the digest is the new content's;
 *  - two keys with identical bytes are stored once;
 *  - 404 (exit 4), 403 (exit 1, says what to do), not an image layer (exit 6).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fetch_fixture.h"
#include "store/db.h"
#include "testutil.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/hash.h"
#include "util/timeutil.h"

#define BUCKET "imgs"
/* Bigger than the 64 MiB durability checkpoint of the fetch machine, so a kill after it leaves
 * something to resume from. */
#define BIG_MIB    96
#define CHECKPOINT (64ULL << 20)

static struct fetch_fixture F;

static int setup(void **state)
{
    *state = &F; /* the cases' setup (fixture_reset) and the teardown take it */
    if (fixture_init(&F, "fetchs3") < 0)
        return -1;
    const char *root = F.root, *seed = F.seed;
    fixture_sh("python3 '%s/tests/s3/make_blobs.py' '%s/gen'", tu_source_dir(), root);
    fixture_sh("mkdir -p '%s/images/demo' '%s/images/dup' '%s/big' '%s/bad'", seed, seed, seed,
               seed);
    fixture_sh("cp '%s/gen/layers/1.tar' '%s/images/demo/1.tar'", root, seed);
    fixture_sh("cp '%s/gen/layers/2.tar' '%s/images/demo/2.tar'", root, seed);
    fixture_sh("cp '%s/gen/layers/1.tar' '%s/images/dup/1.tar'", root, seed);
    fixture_sh("cp '%s/gen/garbage/page.tar' '%s/bad/page.tar'", root, seed);
    char p[4096];
    snprintf(p, sizeof(p), "%s/big/resume.tar", seed);
    fixture_make_layer(p, BIG_MIB << 10, 1);
    snprintf(p, sizeof(p), "%s/big/replace.tar", seed);
    fixture_make_layer(p, BIG_MIB << 10, 2);
    snprintf(p, sizeof(p), "%s/replacement.tar", root);
    fixture_make_layer(p, 3 << 10, 3);
    /* one GET per object: these are the one-stream resume tests (parallel ranges:
     * test_byteonce_s3.c) */
    setenv("THINIMG_SOURCE_DOWNLOAD_STREAMS", "1", 1);
    return fixture_start(&F, BUCKET);
}

/* Run `thinimg --state-dir S fetch REF [OPTION]` through the proxy. */
static int run_fetch(const char *state_dir, const char *ref, const char *option, char **out,
                     char **err)
{
    return fixture_fetch(&F, state_dir, ref, option, NULL, out, err);
}

/* downloads.bytes_done for location (-1 when no row / no database yet). */
static int64_t bytes_done(const char *state_dir, const char *location)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/thinimg.db", state_dir);
    if (access(path, F_OK) < 0)
        return -1;
    struct db *db = NULL;
    struct db_options o = {.readonly = true, .busy_timeout_ms = 1000};
    if (db_open(path, &o, &db, NULL) < 0)
        return -1;
    int64_t v = -1;
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "SELECT bytes_done FROM downloads WHERE location = ?1");
    if (st) {
        db_bind_text(st, 1, location);
        if (db_step(db, st) == 1)
            v = sqlite3_column_int64(st, 0);
        db_done(st);
    }
    db_unlock(db);
    db_close(db);
    return v;
}

static void kill_when_durable(pid_t pid, const char *state_dir, const char *location)
{
    int64_t deadline = mono_ms() + 120000;
    int64_t v = -1;
    while (mono_ms() < deadline) {
        v = bytes_done(state_dir, location);
        if (v >= (int64_t)CHECKPOINT)
            break;
        sleep_ms(50);
    }
    assert_true(v >= (int64_t)CHECKPOINT);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st));
}

static void test_fetch_family(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = fixture_new_state(&F);
    char *out = NULL, *err = NULL;
    int rc = run_fetch(sd, "s3://" BUCKET "/images/demo/", "--json", &out, &err);
    if (rc != 0)
        fail_msg("rc %d: %s", rc, err);
    char p[4096];
    snprintf(p, sizeof(p), "%s/images/demo/1.tar", F.seed);
    _cleanup_free_ char *d1 = s3h_digest_of(p);
    snprintf(p, sizeof(p), "%s/images/demo/2.tar", F.seed);
    _cleanup_free_ char *d2 = s3h_digest_of(p);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "image")), "demo:2");
    json_t *layers = json_object_get(j, "layers");
    assert_int_equal(json_array_size(layers), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(layers, 0), "digest")),
                        d1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(layers, 1), "digest")),
                        d2);
    json_decref(j);
    free(out);
    free(err);
    assert_int_equal(fixture_files_in(sd, "blobs/sha256"), 2);
    /* a relative REF without a default source is a usage error */
    assert_int_equal(run_fetch(sd, BUCKET "/images/demo/2.tar", NULL, &out, &err), 2);
    assert_true(tu_contains(err, "no default source"));
    free(out);
    free(err);
    /* the human table on a second run: both cached */
    assert_int_equal(run_fetch(sd, "s3://" BUCKET "/images/demo/2.tar", NULL, &out, &err), 0);
    assert_true(tu_contains(out, d1));
    assert_true(tu_contains(out, d2));
    assert_true(tu_contains(out, "(cached)"));
    free(out);
    free(err);
    /* `thinimg ls` now knows the digests (same location, ETag and size) */
    char sdo[4096], ep[128];
    snprintf(sdo, sizeof(sdo), "--state-dir=%s", sd);
    snprintf(ep, sizeof(ep), "--endpoint=%s", F.h.proxy_url);
    char *argv[] = {(char *)tu_thinimg(), sdo, "ls", ep, "--json", "s3://" BUCKET "/images/", NULL};
    assert_int_equal(tu_run(argv, NULL, &out, &err), 0);
    j = json_loads(out, 0, NULL);
    assert_non_null(j);
    json_t *fams = json_object_get(j, "families");
    assert_int_equal(json_array_size(fams), 2); /* demo, dup */
    json_t *demo = json_array_get(fams, 0);
    assert_string_equal(json_string_value(json_object_get(demo, "image")), "demo:2");
    layers = json_object_get(demo, "layers");
    assert_string_equal(json_string_value(json_object_get(json_array_get(layers, 0), "digest")),
                        d1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(layers, 1), "digest")),
                        d2);
    /* never fetched from this location: unknown, even though the bytes are known */
    json_t *dup = json_array_get(fams, 1);
    assert_true(
        json_is_null(json_object_get(json_array_get(json_object_get(dup, "layers"), 0), "digest")));
    json_decref(j);
    free(out);
    free(err);
}

static void test_same_bytes_stored_once(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = fixture_new_state(&F);
    char *out = NULL, *err = NULL;
    assert_int_equal(run_fetch(sd, "s3://" BUCKET "/images/demo/1.tar", NULL, &out, &err), 0);
    free(out);
    free(err);
    assert_int_equal(run_fetch(sd, "s3://" BUCKET "/images/dup/1.tar", NULL, &out, &err), 0);
    free(out);
    free(err);
    assert_int_equal(fixture_files_in(sd, "blobs/sha256"), 1);
}

static void test_kill_and_resume(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = fixture_new_state(&F);
    const char *loc = "s3://" BUCKET "/big/resume.tar";
    /* the first transfer stalls after 80 MiB: past the 64 MiB checkpoint, not finished */
    assert_int_equal(s3h_fault(&F.h, "{\"match\":\"big/resume.tar\",\"method\":\"GET\","
                                     "\"action\":\"stall\",\"after\":83886080}"),
                     0);
    pid_t pid = fixture_spawn(&F, sd, loc);
    kill_when_durable(pid, sd, loc);
    /* Same boot: every byte written before the kill is in the file (the page cache is the
     * kernel's), so the resume starts at the file's length, past the last checkpoint. */
    int64_t durable = (int64_t)s3h_part_size(sd);
    assert_true(durable > bytes_done(sd, loc));
    s3h_reset(&F.h);

    char *out = NULL, *err = NULL;
    int rc = run_fetch(sd, loc, "--json", &out, &err);
    if (rc != 0)
        fail_msg("rc %d: %s", rc, err);
    char p[4096];
    snprintf(p, sizeof(p), "%s/big/resume.tar", F.seed);
    _cleanup_free_ char *want = s3h_digest_of(p);
    assert_true(tu_contains(out, want));
    free(out);
    free(err);

    /* one GET after the restart: from the durable offset, If-Match, carrying the remainder */
    json_t *log = s3h_log(&F.h);
    size_t i, gets = 0;
    json_t *v;
    uint64_t size = 0;
    {
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        size = (uint64_t)st.st_size;
    }
    json_array_foreach(log, i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "method")), "GET") != 0)
            continue;
        gets++;
        char range[64];
        snprintf(range, sizeof(range), "bytes=%lld-", (long long)durable);
        assert_string_equal(json_string_value(json_object_get(v, "range")), range);
        assert_non_null(json_string_value(json_object_get(v, "ifMatch")));
        assert_int_equal(json_integer_value(json_object_get(v, "bytes")),
                         (json_int_t)(size - (uint64_t)durable));
    }
    assert_int_equal(gets, 1);
    json_decref(log);
    assert_int_equal(bytes_done(sd, loc), -1); /* the resume hint is gone */
    assert_int_equal(fixture_files_in(sd, "tmp"), 0);
}

static void test_kill_replace_restart(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = fixture_new_state(&F);
    const char *loc = "s3://" BUCKET "/big/replace.tar";
    assert_int_equal(s3h_fault(&F.h, "{\"match\":\"big/replace.tar\",\"method\":\"GET\","
                                     "\"action\":\"stall\",\"after\":83886080}"),
                     0);
    pid_t pid = fixture_spawn(&F, sd, loc);
    kill_when_durable(pid, sd, loc);
    /* the object is replaced while nobody fetches it */
    char p[4096];
    snprintf(p, sizeof(p), "%s/replacement.tar", F.root);
    size_t n = 0;
    _cleanup_free_ char *data = tu_read_file(p, &n);
    assert_int_equal(s3h_put(&F.h, BUCKET, "big/replace.tar", data, n), 0);
    s3h_reset(&F.h);
    char *out = NULL, *err = NULL;
    int rc = run_fetch(sd, loc, "--json", &out, &err);
    if (rc != 0)
        fail_msg("rc %d: %s", rc, err);
    _cleanup_free_ char *want = s3h_digest_of(p);
    assert_true(tu_contains(out, want));
    free(out);
    free(err);
    /* started over: one GET, whole object, no Range */
    json_t *log = s3h_log(&F.h);
    size_t i, gets = 0;
    json_t *v;
    json_array_foreach(log, i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "method")), "GET") != 0)
            continue;
        gets++;
        assert_true(json_is_null(json_object_get(v, "range")));
        assert_int_equal(json_integer_value(json_object_get(v, "bytes")), (json_int_t)n);
    }
    assert_int_equal(gets, 1);
    json_decref(log);
}

static void test_errors(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = fixture_new_state(&F);
    char *out = NULL, *err = NULL;
    assert_int_equal(run_fetch(sd, "s3://" BUCKET "/images/nope/3.tar", NULL, &out, &err), 4);
    assert_true(tu_contains(err, "missing"));
    free(out);
    free(err);
    assert_int_equal(run_fetch(sd, "s3://" BUCKET "/nope.tar", NULL, &out, &err), 4);
    assert_true(tu_contains(err, "not found (404"));
    free(out);
    free(err);
    /* not an image layer */
    assert_int_equal(run_fetch(sd, "s3://" BUCKET "/bad/page.tar", NULL, &out, &err), 6);
    assert_true(tu_contains(err, "not an image layer"));
    free(out);
    free(err);
    /* access denied on the object itself (the listing and HEAD work) */
    assert_int_equal(s3h_fault(&F.h, "{\"match\":\"images/demo/2.tar\",\"method\":\"GET\","
                                     "\"action\":\"status\",\"status\":403,"
                                     "\"code\":\"AccessDenied\",\"count\":0}"),
                     0);
    assert_int_equal(run_fetch(sd, "s3://" BUCKET "/images/demo/2.tar", NULL, &out, &err), 3);
    /* kind "permission": refused, exit 3 (docs/cli.md), ended without retries */
    assert_true(tu_contains(err, "access denied (403 AccessDenied)"));
    assert_true(tu_contains(err, "set AWS_ACCESS_KEY_ID"));
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_fetch_family, fixture_reset),
        cmocka_unit_test_setup(test_same_bytes_stored_once, fixture_reset),
        cmocka_unit_test_setup(test_kill_and_resume, fixture_reset),
        cmocka_unit_test_setup(test_kill_replace_restart, fixture_reset),
        cmocka_unit_test_setup(test_errors, fixture_reset),
    };
    return cmocka_run_group_tests(tests, setup, fixture_teardown);
}
