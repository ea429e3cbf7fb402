/*
 * test_s3_source.c: the s3:// and http:// sources against a real S3 server (s3rver) and the
 * fault-injecting proxy: pagination over 1,000 keys, numeric family order, ranges, a body cut
 * mid-transfer and resumed, an object replaced between attempts, 404, 403 (anonymous and
 * signed), a stalled server, 5xx/SlowDown retries, SigV4 accepted by the server, plain HTTP
 * with and without Range.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "s3harness.h"
#include "source/ref.h"
#include "source/source.h"
#include "testutil.h"
#include "util/buf.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/hash.h"
#include "util/timeutil.h"

#define BUCKET   "imgs"
#define BIG_SIZE (3 * 1024 * 1024 + 17)
#define MANY     1100

static struct s3h H;
static char *SEED;
static unsigned char *BIG; /* content of big/blob.tar */

static void write_seed(const char *rel, const void *data, size_t n)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/%s", SEED, rel);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    assert_int_equal(mkdir_p(p, 0755), 0);
    *slash = '/';
    assert_int_equal(tu_write_file(p, data, n), 0);
}

static int setup(void **state)
{
    (void)state;
    s3h_anonymous_env();
    SEED = tu_mkdtemp("s3seed");
    /* many/k0000 .. k1099: pagination */
    for (int i = 0; i < MANY; i++) {
        char rel[64];
        snprintf(rel, sizeof(rel), "many/k%04d", i);
        write_seed(rel, rel, strlen(rel));
    }
    /* a family with numeric order traps, a gap and a non-layer name */
    const char *fam[] = {"1", "2", "3", "9", "10"};
    for (size_t i = 0; i < 5; i++) {
        char rel[64], body[64];
        snprintf(rel, sizeof(rel), "images/golang/%s.tar", fam[i]);
        snprintf(body, sizeof(body), "layer %s", fam[i]);
        write_seed(rel, body, strlen(body));
    }
    write_seed("images/golang/latest.tar", "x", 1);
    for (int i = 1; i <= 3; i++) {
        char rel[64], body[64];
        snprintf(rel, sizeof(rel), "images/node/%d.tar", i);
        snprintf(body, sizeof(body), "node %d", i);
        write_seed(rel, body, strlen(body));
    }
    BIG = malloc(BIG_SIZE);
    for (size_t i = 0; i < BIG_SIZE; i++)
        BIG[i] = (unsigned char)((i * 2654435761u) >> 13);
    write_seed("big/blob.tar", BIG, BIG_SIZE);
    write_seed("replace/obj", "version one, the original bytes", 31);
    if (s3h_start(&H, BUCKET, SEED) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    s3h_stop(&H);
    tu_rmrf(SEED);
    free(SEED);
    free(BIG);
    return 0;
}

static int reset(void **state)
{
    (void)state;
    return s3h_reset(&H);
}

/* Options pointing at the proxy, with short backoffs so failure tests stay fast. The stall
 * tests shorten the low-speed window to 1 s; the others keep 10 s, so a loaded machine that
 * pauses the server for a moment does not count as a stall. */
static struct source_options opts(void)
{
    return (struct source_options){.endpoint = H.proxy_url,
                                   .retry_initial_ms = 20,
                                   .retry_max_ms = 100,
                                   .low_speed_time_s = 10,
                                   .connect_timeout_ms = 2000};
}

static struct source *open_src_stall(const char *loc)
{
    struct source_options o = opts();
    o.low_speed_time_s = 1;
    struct source *s = NULL;
    struct err e = {0};
    if (source_open(loc, &o, &s, NULL, &e) < 0)
        fail_msg("source_open %s: %s", loc, err_str(&e));
    return s;
}

static struct source *open_src(const char *loc, char **key)
{
    struct source_options o = opts();
    struct source *s = NULL;
    struct err e = {0};
    int r = source_open(loc, &o, &s, key, &e);
    if (r < 0)
        fail_msg("source_open %s: %s", loc, err_str(&e));
    return s;
}

struct mem {
    struct buf b;
    size_t stop_after; /* return -EINTR after this many bytes (0 = never) */
};

static int mem_sink(const void *data, size_t n, void *ud)
{
    struct mem *m = ud;
    if (m->stop_after && m->b.len + n > m->stop_after) {
        buf_append(&m->b, data, m->stop_after - m->b.len);
        return -EINTR;
    }
    return buf_append(&m->b, data, n);
}

static size_t count_requests(json_t *log, const char *method, const char *path_part,
                             const char *field, const char *field_part)
{
    size_t i, n = 0;
    json_t *v;
    json_array_foreach(log, i, v)
    {
        const char *m = json_string_value(json_object_get(v, "method"));
        const char *p = json_string_value(json_object_get(v, "path"));
        if (method && (!m || strcmp(m, method)))
            continue;
        if (path_part && (!p || !strstr(p, path_part)))
            continue;
        if (field) {
            const char *f = json_string_value(json_object_get(v, field));
            if (!f || (field_part && !strstr(f, field_part)))
                continue;
        }
        n++;
    }
    return n;
}

static void test_list_pagination(void **state)
{
    (void)state;
    _cleanup_source_ struct source *s = open_src("s3://" BUCKET "/", NULL);
    struct source_listing l = {0};
    struct err e = {0};
    assert_int_equal(source_list(s, "many/", &l, &e), 0);
    assert_int_equal(l.n, MANY);
    assert_string_equal(l.items[0].key, "many/k0000");
    assert_string_equal(l.items[MANY - 1].key, "many/k1099");
    for (size_t i = 1; i < l.n; i++)
        assert_true(strcmp(l.items[i - 1].key, l.items[i].key) < 0);
    assert_int_equal(l.items[5].size, strlen("many/k0005"));
    assert_non_null(l.items[5].etag);
    assert_true(l.items[5].mtime_ms > 0);
    source_listing_free(&l);
    json_t *log = s3h_log(&H);
    /* two pages: the second one carries the continuation token */
    assert_int_equal(count_requests(log, "GET", "list-type=2", NULL, NULL), 2);
    assert_int_equal(count_requests(log, "GET", "continuation-token=", NULL, NULL), 1);
    json_decref(log);
}

static void test_family_numeric_order(void **state)
{
    (void)state;
    struct source_options o = opts();
    struct image_ref r = {0};
    struct err e = {0};
    assert_int_equal(ref_resolve("s3://" BUCKET "/images/golang/", NULL, &o, &r, &e), 0);
    assert_int_equal(r.kind, REF_FAMILY);
    assert_int_equal(r.n_layers, 5);
    unsigned want[] = {1, 2, 3, 9, 10};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(r.layers[i].n, want[i]);
    assert_string_equal(r.layers[4].location, "s3://" BUCKET "/images/golang/10.tar");
    assert_string_equal(r.canonical, "s3://" BUCKET "/images/golang/10.tar");
    assert_string_equal(r.name, "golang:10");
    assert_int_equal(r.layers[0].size, 7);
    assert_non_null(r.layers[0].etag);
    bool gap = false, latest = false;
    for (size_t i = 0; i < r.n_warnings; i++) {
        gap |= tu_contains(r.warnings[i], "4.tar to 8.tar are missing");
        latest |= tu_contains(r.warnings[i], "'latest.tar' is not a layer name");
    }
    assert_true(gap);
    assert_true(latest);
    image_ref_free(&r);

    /* relative to a default source with a prefix; no trailing '/' on the family */
    assert_int_equal(ref_resolve("node", "s3://" BUCKET "/images", &o, &r, &e), 0);
    assert_int_equal(r.n_layers, 3);
    assert_string_equal(r.name, "node:3");
    image_ref_free(&r);

    /* a family key: layers 1..N */
    assert_int_equal(ref_resolve("images/golang/3.tar", "s3://" BUCKET, &o, &r, &e), 0);
    assert_int_equal(r.kind, REF_FAMILY_KEY);
    assert_int_equal(r.n_layers, 3);
    assert_string_equal(r.name, "golang:3");
    image_ref_free(&r);

    /* ... with missing members is an error naming them */
    assert_int_equal(ref_resolve("s3://" BUCKET "/images/golang/10.tar", NULL, &o, &r, &e),
                     -ENOENT);
    assert_true(tu_contains(e.msg, "4.tar, 5.tar, 6.tar, 7.tar, 8.tar"));
    err_clear(&e);

    /* a prefix with several families */
    assert_int_equal(ref_resolve("s3://" BUCKET "/images/", NULL, &o, &r, &e), -EISDIR);
    assert_true(tu_contains(e.msg, "holds 2 images"));
    err_clear(&e);

    /* a single object */
    assert_int_equal(ref_resolve("s3://" BUCKET "/big/blob.tar", NULL, &o, &r, &e), 0);
    assert_int_equal(r.kind, REF_BLOB);
    assert_int_equal(r.n_layers, 1);
    assert_int_equal(r.layers[0].size, BIG_SIZE);
    assert_string_equal(r.name, "blob");
    image_ref_free(&r);
}

static void test_range(void **state)
{
    (void)state;
    _cleanup_source_ struct source *s = open_src("s3://" BUCKET "/", NULL);
    struct mem m = {BUF_INIT, 0};
    struct source_get_info info;
    struct err e = {0};
    assert_int_equal(source_get(s, "big/blob.tar", 1000000, NULL, mem_sink, &m, &info, &e), 0);
    assert_int_equal(m.b.len, BIG_SIZE - 1000000);
    assert_memory_equal(m.b.data, BIG + 1000000, m.b.len);
    assert_int_equal(info.size, BIG_SIZE);
    assert_int_equal(info.attempts, 1);
    assert_true(info.etag[0] == '"');
    buf_free(&m.b);
    json_t *log = s3h_log(&H);
    assert_int_equal(count_requests(log, "GET", "big/blob.tar", "range", "bytes=1000000-"), 1);
    json_decref(log);

    /* offset == size: nothing to read, success */
    assert_int_equal(source_get(s, "big/blob.tar", BIG_SIZE, NULL, mem_sink, &m, &info, &e), 0);
    assert_int_equal(m.b.len, 0);
    buf_free(&m.b);
}

static void test_cut_mid_body_resumes(void **state)
{
    (void)state;
    _cleanup_source_ struct source *s = open_src("s3://" BUCKET "/", NULL);
    assert_int_equal(s3h_fault(&H, "{\"match\":\"big/blob.tar\",\"method\":\"GET\","
                                   "\"action\":\"cut\",\"after\":1200000}"),
                     0);
    struct mem m = {BUF_INIT, 0};
    struct source_get_info info;
    struct err e = {0};
    int r = source_get(s, "big/blob.tar", 0, NULL, mem_sink, &m, &info, &e);
    assert_int_equal(r, 0);
    assert_int_equal(m.b.len, BIG_SIZE);
    assert_memory_equal(m.b.data, BIG, BIG_SIZE);
    assert_int_equal(info.attempts, 2);
    /* the resumed request asked for the rest only, with If-Match on the first ETag */
    json_t *log = s3h_log(&H);
    size_t i;
    json_t *v;
    int seen = 0;
    json_array_foreach(log, i, v)
    {
        const char *range = json_string_value(json_object_get(v, "range"));
        if (range && !strcmp(range, "bytes=1200000-")) {
            seen++;
            assert_string_equal(json_string_value(json_object_get(v, "ifMatch")), info.etag);
            assert_int_equal(json_integer_value(json_object_get(v, "bytes")), BIG_SIZE - 1200000);
        }
    }
    assert_int_equal(seen, 1);
    /* bytes received in all == the object: nothing fetched twice */
    assert_int_equal(info.bytes_received, BIG_SIZE);
    json_decref(log);
    buf_free(&m.b);
}

static void test_resume_after_interruption(void **state)
{
    (void)state;
    /* A caller that stopped (a killed process) resumes from its own offset. */
    _cleanup_source_ struct source *s = open_src("s3://" BUCKET "/", NULL);
    struct mem m = {BUF_INIT, 700000};
    struct source_get_info info;
    struct err e = {0};
    assert_int_equal(source_get(s, "big/blob.tar", 0, NULL, mem_sink, &m, &info, &e), -EINTR);
    assert_int_equal(m.b.len, 700000);
    char etag[SOURCE_ETAG_MAX + 1];
    strcpy(etag, info.etag);
    s3h_reset(&H);
    m.stop_after = 0;
    assert_int_equal(source_get(s, "big/blob.tar", 700000, etag, mem_sink, &m, &info, &e), 0);
    assert_int_equal(m.b.len, BIG_SIZE);
    assert_memory_equal(m.b.data, BIG, BIG_SIZE);
    assert_int_equal(info.bytes, BIG_SIZE - 700000);
    json_t *log = s3h_log(&H);
    assert_int_equal(json_array_size(log), 1);
    json_t *req = json_array_get(log, 0);
    assert_string_equal(json_string_value(json_object_get(req, "range")), "bytes=700000-");
    /* bytes on the wire for the resume ~= the remainder */
    assert_int_equal(json_integer_value(json_object_get(req, "bytes")), BIG_SIZE - 700000);
    json_decref(log);
    buf_free(&m.b);
}

static void test_replaced_between_attempts(void **state)
{
    (void)state;
    _cleanup_source_ struct source *s = open_src("s3://" BUCKET "/", NULL);
    struct source_object o = {0};
    struct err e = {0};
    assert_int_equal(source_stat(s, "replace/obj", &o, &e), 0);
    char old_etag[SOURCE_ETAG_MAX + 1];
    strcpy(old_etag, o.etag);
    source_object_free(&o);
    assert_int_equal(s3h_put(&H, BUCKET, "replace/obj", "version two", 11), 0);
    /* s3rver may answer the PUT before a GET sees the new object whole (one run got a 416 for
     * a range inside it): wait, bounded, until the new version is what a HEAD reports. */
    for (int i = 0;; i++) {
        assert_true(i < 100);
        assert_int_equal(source_stat(s, "replace/obj", &o, &e), 0);
        bool visible = o.size == 11 && strcmp(o.etag, old_etag) != 0;
        source_object_free(&o);
        if (visible)
            break;
        sleep_ms(50);
    }
    struct mem m = {BUF_INIT, 0};
    struct source_get_info info;
    /* through the proxy (enforces If-Match like S3): 412 */
    assert_int_equal(source_get(s, "replace/obj", 10, old_etag, mem_sink, &m, &info, &e), -ESTALE);
    assert_true(tu_contains(e.msg, "the object changed"));
    assert_int_equal(m.b.len, 0);
    err_clear(&e);
    /* straight to s3rver, which ignores If-Match: our own ETag check catches it */
    struct source_options so = opts();
    so.endpoint = H.s3_url;
    _cleanup_source_ struct source *direct = NULL;
    assert_int_equal(source_open("s3://" BUCKET "/", &so, &direct, NULL, &e), 0);
    assert_int_equal(source_get(direct, "replace/obj", 0, old_etag, mem_sink, &m, &info, &e),
                     -ESTALE);
    assert_int_equal(m.b.len, 0);
    err_clear(&e);
    /* without If-Match: the new version */
    assert_int_equal(source_get(s, "replace/obj", 0, NULL, mem_sink, &m, &info, &e), 0);
    assert_int_equal(m.b.len, 11);
    assert_memory_equal(m.b.data, "version two", 11);
    assert_string_not_equal(info.etag, old_etag);
    buf_free(&m.b);
}

static void test_not_found(void **state)
{
    (void)state;
    _cleanup_source_ struct source *s = open_src("s3://" BUCKET "/", NULL);
    struct source_object o = {0};
    struct err e = {0};
    assert_int_equal(source_stat(s, "images/nope/1.tar", &o, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "s3://" BUCKET "/images/nope/1.tar: not found (404"));
    err_clear(&e);
    struct mem m = {BUF_INIT, 0};
    assert_int_equal(source_get(s, "images/nope/1.tar", 0, NULL, mem_sink, &m, NULL, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "404 NoSuchKey"));
    err_clear(&e);
    /* a 404 is not retried */
    json_t *log = s3h_log(&H);
    assert_int_equal(count_requests(log, NULL, "images/nope/1.tar", NULL, NULL), 2);
    json_decref(log);
    /* no such bucket */
    _cleanup_source_ struct source *nb = open_src("s3://no-such-bucket/", NULL);
    struct source_listing l = {0};
    assert_int_equal(source_list(nb, "", &l, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "no such bucket"));
    buf_free(&m.b);
}

static void test_forbidden(void **state)
{
    (void)state;
    _cleanup_source_ struct source *s = open_src("s3://" BUCKET "/", NULL);
    assert_int_equal(s3h_fault(&H, "{\"match\":\"/" BUCKET "/\",\"action\":\"status\","
                                   "\"status\":403,\"code\":\"AccessDenied\",\"count\":0}"),
                     0);
    struct source_listing l = {0};
    struct err e = {0};
    assert_int_equal(source_list(s, "images/", &l, &e), -EACCES);
    assert_true(tu_contains(e.msg, "access denied (403 AccessDenied)"));
    assert_true(tu_contains(e.msg, "no credentials are set; set AWS_ACCESS_KEY_ID"));
    err_clear(&e);
    struct mem m = {BUF_INIT, 0};
    assert_int_equal(source_get(s, "big/blob.tar", 0, NULL, mem_sink, &m, NULL, &e), -EACCES);
    err_clear(&e);
    /* permanent: one request each, no retries */
    json_t *log = s3h_log(&H);
    assert_int_equal(json_array_size(log), 2);
    json_decref(log);

    /* with credentials the message names where they came from */
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    _cleanup_source_ struct source *signed_src = open_src("s3://" BUCKET "/", NULL);
    assert_int_equal(source_list(signed_src, "images/", &l, &e), -EACCES);
    assert_true(tu_contains(e.msg, "the credentials from environment"));
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    buf_free(&m.b);
}

static void test_signed_requests(void **state)
{
    (void)state;
    /* s3rver checks that the access key exists and that x-amz-content-sha256 is present. */
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    setenv("AWS_SESSION_TOKEN", "session-token-value", 1);
    _cleanup_source_ struct source *s = open_src("s3://" BUCKET "/", NULL);
    struct source_listing l = {0};
    struct err e = {0};
    assert_int_equal(source_list(s, "images/node/", &l, &e), 0);
    assert_int_equal(l.n, 3);
    source_listing_free(&l);
    struct mem m = {BUF_INIT, 0};
    assert_int_equal(source_get(s, "images/node/2.tar", 0, NULL, mem_sink, &m, NULL, &e), 0);
    assert_int_equal(m.b.len, 6);
    assert_memory_equal(m.b.data, "node 2", 6);
    json_t *log = s3h_log(&H);
    size_t i;
    json_t *v;
    json_array_foreach(log, i, v)
    {
        assert_true(json_is_true(json_object_get(v, "signed")));
        assert_string_equal(json_string_value(json_object_get(v, "contentSha")),
                            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_int_equal(json_integer_value(json_object_get(v, "status")) / 100, 2);
    }
    json_decref(log);
    unsetenv("AWS_SESSION_TOKEN");
    /* an access key the server does not know */
    setenv("AWS_ACCESS_KEY_ID", "NOSUCHKEY", 1);
    _cleanup_source_ struct source *bad = open_src("s3://" BUCKET "/", NULL);
    assert_int_equal(source_list(bad, "images/", &l, &e), -EACCES);
    assert_true(tu_contains(e.msg, "InvalidAccessKeyId"));
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    buf_free(&m.b);
}

static void test_stall_times_out_and_retries(void **state)
{
    (void)state;
    _cleanup_source_ struct source *s = open_src_stall("s3://" BUCKET "/");
    assert_int_equal(s3h_fault(&H, "{\"match\":\"big/blob.tar\",\"method\":\"GET\","
                                   "\"action\":\"stall\",\"after\":500000}"),
                     0);
    struct mem m = {BUF_INIT, 0};
    struct source_get_info info;
    struct err e = {0};
    int64_t t0 = mono_ms();
    assert_int_equal(source_get(s, "big/blob.tar", 0, NULL, mem_sink, &m, &info, &e), 0);
    int64_t dt = mono_ms() - t0;
    assert_int_equal(m.b.len, BIG_SIZE);
    assert_memory_equal(m.b.data, BIG, BIG_SIZE);
    assert_int_equal(info.attempts, 2);
    /* the low-speed limit (1 s here) cut the stalled transfer; it did not hang */
    assert_true(dt >= 900);
    assert_true(dt < 20000);
    json_t *log = s3h_log(&H);
    assert_int_equal(count_requests(log, "GET", "big/blob.tar", "range", "bytes=500000-"), 1);
    json_decref(log);
    buf_free(&m.b);

    /* a stall on a small request (listing) times out as a whole and is retried too */
    assert_int_equal(s3h_fault(&H, "{\"match\":\"list-type\",\"action\":\"stall\",\"after\":0}"),
                     0);
    struct source_listing l = {0};
    assert_int_equal(source_list(s, "images/node/", &l, &e), 0);
    assert_int_equal(l.n, 3);
    source_listing_free(&l);
}

static void test_server_errors_retry(void **state)
{
    (void)state;
    _cleanup_source_ struct source *s = open_src("s3://" BUCKET "/", NULL);
    assert_int_equal(s3h_fault(&H, "{\"match\":\"images/node/1.tar\",\"action\":\"status\","
                                   "\"status\":503,\"code\":\"SlowDown\",\"count\":2}"),
                     0);
    struct mem m = {BUF_INIT, 0};
    struct source_get_info info;
    struct err e = {0};
    assert_int_equal(source_get(s, "images/node/1.tar", 0, NULL, mem_sink, &m, &info, &e), 0);
    assert_int_equal(info.attempts, 3);
    assert_memory_equal(m.b.data, "node 1", 6);
    buf_free(&m.b);
    /* a 500 that never ends: gives up with the status and code in the message */
    assert_int_equal(s3h_fault(&H, "{\"match\":\"images/node/2.tar\",\"action\":\"status\","
                                   "\"status\":500,\"code\":\"InternalError\",\"count\":0}"),
                     0);
    assert_int_equal(source_get(s, "images/node/2.tar", 0, NULL, mem_sink, &m, &info, &e),
                     -EREMOTEIO);
    assert_true(tu_contains(e.msg, "server error 500 InternalError"));
    assert_int_equal(info.attempts, SOURCE_RETRY_ATTEMPTS);
    buf_free(&m.b);
    /* 429 is retried too */
    err_clear(&e);
    assert_int_equal(s3h_fault(&H, "{\"match\":\"images/node/3.tar\",\"action\":\"status\","
                                   "\"status\":429,\"code\":\"TooManyRequests\"}"),
                     0);
    struct source_object o = {0};
    assert_int_equal(source_stat(s, "images/node/3.tar", &o, &e), 0);
    assert_int_equal(o.size, 6);
    source_object_free(&o);
}

static void test_connection_refused(void **state)
{
    (void)state;
    struct source_options o = opts();
    o.endpoint = "http://127.0.0.1:1"; /* nothing listens on port 1 */
    o.retry_attempts = 2;
    _cleanup_source_ struct source *s = NULL;
    struct err e = {0};
    assert_int_equal(source_open("s3://" BUCKET "/", &o, &s, NULL, &e), 0);
    struct source_object ob = {0};
    assert_int_equal(source_stat(s, "x", &ob, &e), -ECONNREFUSED);
    assert_true(tu_contains(e.msg, "gave up after 2 attempts"));
}

static void test_http_source(void **state)
{
    (void)state;
    char loc[256];
    struct err e = {0};
    /* plain HTTP straight from the server: a family key resolved by HEAD on 1..N */
    snprintf(loc, sizeof(loc), "%s/" BUCKET "/images/node/3.tar", H.proxy_url);
    struct source_options o = opts();
    struct image_ref r = {0};
    assert_int_equal(ref_resolve(loc, NULL, &o, &r, &e), 0);
    assert_int_equal(r.kind, REF_FAMILY_KEY);
    assert_int_equal(r.n_layers, 3);
    assert_string_equal(r.name, "node:3");
    assert_true(tu_contains(r.layers[0].location, "/" BUCKET "/images/node/1.tar"));
    image_ref_free(&r);
    /* a prefix cannot be listed over HTTP */
    snprintf(loc, sizeof(loc), "%s/" BUCKET "/images/node/", H.proxy_url);
    assert_int_equal(ref_resolve(loc, NULL, &o, &r, &e), -ENOTSUP);
    err_clear(&e);

    snprintf(loc, sizeof(loc), "%s/" BUCKET "/big/blob.tar", H.proxy_url);
    _cleanup_free_ char *key = NULL;
    _cleanup_source_ struct source *s = open_src(loc, &key);
    assert_string_equal(key, "blob.tar");
    struct mem m = {BUF_INIT, 0};
    struct source_get_info info;
    assert_int_equal(source_get(s, key, 2000000, NULL, mem_sink, &m, &info, &e), 0);
    assert_int_equal(m.b.len, BIG_SIZE - 2000000);
    assert_memory_equal(m.b.data, BIG + 2000000, m.b.len);
    assert_false(info.range_ignored);
    buf_free(&m.b);
    /* a server without Range: the whole body comes; without a validator nothing proves it
     * is the version of the bytes before the offset: refused (the caller starts over) */
    s3h_reset(&H);
    assert_int_equal(s3h_fault(&H, "{\"match\":\"big/blob.tar\",\"action\":\"norange\"}"), 0);
    assert_int_equal(source_get(s, key, 2000000, NULL, mem_sink, &m, &info, &e), -ESTALE);
    assert_true(tu_contains(e.msg, "ignored Range"));
    assert_int_equal(m.b.len, 0);
    err_clear(&e);
    /* with the ETag (If-Match) the same version is proven: the prefix is skipped */
    struct source_object so = {0};
    assert_int_equal(source_stat(s, key, &so, &e), 0);
    s3h_reset(&H);
    assert_int_equal(s3h_fault(&H, "{\"match\":\"big/blob.tar\",\"action\":\"norange\"}"), 0);
    assert_int_equal(source_get(s, key, 2000000, so.etag, mem_sink, &m, &info, &e), 0);
    source_object_free(&so);
    assert_int_equal(m.b.len, BIG_SIZE - 2000000);
    assert_memory_equal(m.b.data, BIG + 2000000, m.b.len);
    assert_true(info.range_ignored);
    assert_int_equal(info.bytes_received, BIG_SIZE);
    buf_free(&m.b);
    /* 404 */
    assert_int_equal(source_get(s, "missing.tar", 0, NULL, mem_sink, &m, &info, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "not found (404)"));
    buf_free(&m.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_list_pagination, reset),
        cmocka_unit_test_setup(test_family_numeric_order, reset),
        cmocka_unit_test_setup(test_range, reset),
        cmocka_unit_test_setup(test_cut_mid_body_resumes, reset),
        cmocka_unit_test_setup(test_resume_after_interruption, reset),
        cmocka_unit_test_setup(test_replaced_between_attempts, reset),
        cmocka_unit_test_setup(test_not_found, reset),
        cmocka_unit_test_setup(test_forbidden, reset),
        cmocka_unit_test_setup(test_signed_requests, reset),
        cmocka_unit_test_setup(test_stall_times_out_and_retries, reset),
        cmocka_unit_test_setup(test_server_errors_retry, reset),
        cmocka_unit_test_setup(test_connection_refused, reset),
        cmocka_unit_test_setup(test_http_source, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
