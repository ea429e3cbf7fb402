/*
 * test_byteonce_s3.c: `thinimg fetch` moves each byte over the network once (docs/sources.md,
 * "Identity reuse" and "Resume at the byte"), counted where the bytes leave: at the proxy in
 * front of s3rver (tests/s3/harness.js logs the body bytes it sent for every request).
 *
 *  - a facsimile of the work-sample bucket: three families (golang, node, python) of five
 *    layers whose layers 1-3 are byte-identical. Fetching the three families sends at most
 *    1.01 x the sum of the unique layers' sizes (listings included), node and python report
 *    layers 1-3 as reused, and the digests are the objects' own;
 *  - the same identity whose stored blob was changed on disk is not reused: the blob is
 *    quarantined and downloaded again;
 *  - a download through a throttled proxy killed 10 times at random points (kill -9 and
 *    SIGINT in turn) and then finished: the server sent at most 1.01 x the object's size, and
 *    the digest is right.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "s3harness.h"
#include "testutil.h"
#include "util/cleanup.h"
#include "util/hash.h"
#include "util/timeutil.h"

#define BUCKET "facsimile"
/* The bound of the issue: bytes sent <= 1.01 x the bytes that were needed. */
#define MAX_RATIO 1.01
/* Layer sizes in KiB: 1-3 shared by the three families, 4-5 each family's own. Small for CI;
 * the proportions of the real bucket do not matter to the count. */
static const int SHARED_KIB[3] = {1536, 2048, 768};
static const int OWN_KIB[2] = {640, 896};
static const char *const FAMILIES[3] = {"golang", "node", "python"};
/* The resume test: its object, the proxy's rate while it is killed (so that a kill lands
 * mid-stream), the kills and how far each run gets before its kill (at random within these
 * bounds). The last run, which finishes, is not slowed. */
#define RESUME_MIB       64 /* THINIMG_TEST_RESUME_MIB overrides it (bench/fetch-resume.sh) */
#define RESUME_RATE      (8 << 20)
#define RESUME_KILLS     10
#define RESUME_STEP_MIN  (1 << 20)
#define RESUME_STEP_SPAN (3 << 20)
#define WAIT_MS          120000

static struct s3h H;
static char *ROOT, *SEED;
static int state_n;

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char *err = NULL;
    if (tu_sh(cmd, NULL, &err) != 0)
        fail_msg("%s: %s", cmd, err ? err : "");
    free(err);
}

/* A layer tar with one file of `kib` KiB of pseudo-random bytes (seeded: reproducible). */
static void make_layer(const char *path, int kib, int seed)
{
    sh("python3 -c 'import io,random,tarfile,sys\n"
       "r=random.Random(%d); n=%d<<10\n"
       "d=b\"\".join(r.randbytes(min(1<<20,n-o)) for o in range(0,n,1<<20))\n"
       "with tarfile.open(sys.argv[1],\"w\",format=tarfile.USTAR_FORMAT) as t:\n"
       "  i=tarfile.TarInfo(\"f%d.bin\"); i.size=n; i.mtime=1700000000\n"
       "  t.addfile(i, io.BytesIO(d))' '%s'",
       seed, kib, seed, path);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static pid_t spawn(const char *state_dir, const char *ref)
{
    pid_t pid = s3h_spawn_fetch(&H, state_dir, ref);
    assert_true(pid > 0);
    return pid;
}

static int resume_mib(void)
{
    const char *v = getenv("THINIMG_TEST_RESUME_MIB");
    int n = v ? atoi(v) : 0;
    return n > 0 ? n : RESUME_MIB;
}

static int setup(void **state)
{
    (void)state;
    ROOT = tu_mkdtemp("byteonce");
    if (asprintf(&SEED, "%s/seed", ROOT) < 0)
        return -1;
    char p[4096];
    for (int f = 0; f < 3; f++) {
        sh("mkdir -p '%s/images/%s'", SEED, FAMILIES[f]);
        for (int l = 0; l < 3; l++) {
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", SEED, FAMILIES[f], l + 1);
            make_layer(p, SHARED_KIB[l], l + 1); /* same seed: byte-identical */
        }
        for (int l = 0; l < 2; l++) {
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", SEED, FAMILIES[f], l + 4);
            make_layer(p, OWN_KIB[l], 100 + 10 * f + l);
        }
    }
    sh("mkdir -p '%s/extra' '%s/big'", SEED, SEED);
    sh("cp '%s/images/golang/1.tar' '%s/extra/1.tar'", SEED, SEED);
    snprintf(p, sizeof(p), "%s/big/resume.tar", SEED);
    make_layer(p, resume_mib() << 10, 7);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_PROFILE");
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
    return s3h_start(&H, BUCKET, SEED);
}

static int teardown(void **state)
{
    (void)state;
    s3h_stop(&H);
    tu_rmrf(ROOT);
    free(ROOT);
    free(SEED);
    return 0;
}

static int reset(void **state)
{
    (void)state;
    return s3h_reset(&H);
}

static char *new_state(void)
{
    char *p = NULL;
    if (asprintf(&p, "%s/state%d", ROOT, state_n++) < 0)
        return NULL;
    return p;
}

/* `thinimg --state-dir S fetch REF --json` through the proxy, with env1 and env2 (NULL: none)
 * added to the environment; the exit code, the parsed output (NULL when none) and stderr. */
static int fetch_env(const char *state_dir, const char *ref, const char *env1, const char *env2,
                     json_t **out_json, char **err)
{
    char sd[4096], ep[128];
    snprintf(sd, sizeof(sd), "--state-dir=%s", state_dir);
    snprintf(ep, sizeof(ep), "AWS_ENDPOINT_URL=%s", H.proxy_url);
    char *env[] = {ep, (char *)env1, (char *)env2, NULL};
    char *argv[] = {(char *)tu_thinimg(), sd, "fetch", (char *)ref, "--json", NULL};
    char *out = NULL;
    int rc = tu_run(argv, env, &out, err);
    *out_json = out ? json_loads(out, 0, NULL) : NULL;
    free(out);
    return rc;
}

/* `thinimg --state-dir S fetch REF --json` through the proxy; the parsed output. */
static json_t *fetch_json(const char *state_dir, const char *ref)
{
    char sd[4096], ep[128];
    snprintf(sd, sizeof(sd), "--state-dir=%s", state_dir);
    snprintf(ep, sizeof(ep), "AWS_ENDPOINT_URL=%s", H.proxy_url);
    char *env[] = {ep, NULL};
    char *argv[] = {(char *)tu_thinimg(), sd, "fetch", (char *)ref, "--json", NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, env, &out, &err);
    if (rc != 0)
        fail_msg("fetch %s: rc %d: %s", ref, rc, err);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    free(out);
    free(err);
    return j;
}

static uint64_t bytes_field(json_t *j, const char *what)
{
    return (uint64_t)json_integer_value(json_object_get(json_object_get(j, "bytes"), what));
}

/* Body bytes the proxy sent: every request, or the GETs whose path contains match. */
static uint64_t sent_bytes(const char *match, size_t *gets)
{
    json_t *log = s3h_log(&H);
    assert_non_null(log);
    size_t i;
    json_t *v;
    uint64_t sum = 0;
    if (gets)
        *gets = 0;
    json_array_foreach(log, i, v)
    {
        const char *path = json_string_value(json_object_get(v, "path"));
        if (match && (!path || !strstr(path, match)))
            continue;
        sum += (uint64_t)json_integer_value(json_object_get(v, "bytes"));
        if (gets && !strcmp(json_string_value(json_object_get(v, "method")), "GET"))
            (*gets)++;
    }
    json_decref(log);
    return sum;
}

static void test_families_share_layers(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = new_state();
    uint64_t unique = 0, shared = 0;
    char p[4096];
    for (int f = 0; f < 3; f++)
        for (int l = 1; l <= 5; l++) {
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", SEED, FAMILIES[f], l);
            if (l <= 3 && f == 0)
                shared += file_size(p);
            if (l > 3 || f == 0)
                unique += file_size(p);
        }
    for (int f = 0; f < 3; f++) {
        char ref[256];
        snprintf(ref, sizeof(ref), "s3://" BUCKET "/images/%s/", FAMILIES[f]);
        json_t *j = fetch_json(sd, ref);
        json_t *layers = json_object_get(j, "layers");
        assert_int_equal(json_array_size(layers), 5);
        for (int l = 1; l <= 5; l++) {
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", SEED, FAMILIES[f], l);
            _cleanup_free_ char *want = s3h_digest_of(p);
            json_t *e = json_array_get(layers, (size_t)l - 1);
            assert_string_equal(json_string_value(json_object_get(e, "digest")), want);
            /* layers 1-3 of node and python: no GET, the golang blobs */
            assert_int_equal(json_is_true(json_object_get(e, "reused")), f > 0 && l <= 3);
        }
        uint64_t own = 0;
        for (int l = 4; l <= 5; l++) {
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", SEED, FAMILIES[f], l);
            own += file_size(p);
        }
        assert_int_equal(bytes_field(j, "reused"), f > 0 ? shared : 0);
        assert_int_equal(bytes_field(j, "downloaded"), f > 0 ? own : own + shared);
        assert_int_equal(bytes_field(j, "resumed"), 0);
        json_decref(j);
    }
    size_t gets = 0;
    uint64_t sent = sent_bytes(NULL, NULL);
    sent_bytes("/images/", &gets);
    double ratio = (double)sent / (double)unique;
    printf("facsimile bucket: server sent %llu bytes for %llu unique (ratio %.4f), %zu GETs\n",
           (unsigned long long)sent, (unsigned long long)unique, ratio, gets);
    assert_true(ratio <= MAX_RATIO);
    assert_int_equal(gets, 9); /* 3 shared + 3 x 2 own */
}

static void test_changed_blob_not_reused(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = new_state();
    json_t *j = fetch_json(sd, "s3://" BUCKET "/images/golang/1.tar");
    const char *d = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "layers"), 0), "digest"));
    char blob[4096];
    snprintf(blob, sizeof(blob), "%s/blobs/sha256/%s", sd, d + strlen("sha256:"));
    json_decref(j);
    /* one byte of the stored blob changed in place (same size) */
    sh("chmod u+w '%s' && printf X | dd of='%s' bs=1 seek=600 conv=notrunc status=none", blob,
       blob);
    s3h_reset(&H);
    j = fetch_json(sd, "s3://" BUCKET "/extra/1.tar");
    char p[4096];
    snprintf(p, sizeof(p), "%s/extra/1.tar", SEED);
    _cleanup_free_ char *want = s3h_digest_of(p);
    json_t *l = json_array_get(json_object_get(j, "layers"), 0);
    assert_string_equal(json_string_value(json_object_get(l, "digest")), want);
    assert_false(json_is_true(json_object_get(l, "reused")));
    assert_int_equal(bytes_field(j, "downloaded"), file_size(p));
    assert_int_equal(bytes_field(j, "reused"), 0);
    json_decref(j);
    size_t gets = 0;
    assert_int_equal(sent_bytes("/extra/1.tar", &gets), file_size(p));
    assert_int_equal(gets, 1);
    _cleanup_free_ char *now = s3h_digest_of(blob);
    assert_string_equal(now, want); /* the store holds the right bytes again */
}

/* The proxy rule that sends each GET of big/resume.tar at `rate` bytes/s (count: the next
 * `count` GETs, 0 = all). */
static void slow_rule(char *r, size_t n, int rate, int count)
{
    snprintf(r, n,
             "{\"match\":\"big/resume.tar\",\"method\":\"GET\",\"action\":\"slow\","
             "\"bytes_per_s\":%d,\"count\":%d}",
             rate, count);
}

static void test_resume_at_the_byte(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = new_state();
    const char *ref = "s3://" BUCKET "/big/resume.tar";
    char p[4096];
    snprintf(p, sizeof(p), "%s/big/resume.tar", SEED);
    uint64_t size = file_size(p);
    char rule[256];
    slow_rule(rule, sizeof(rule), RESUME_RATE, 0);
    assert_int_equal(s3h_fault(&H, rule), 0);
    /* one stream: the file grows from its start (parallel ranges: test_streams) */
    setenv("THINIMG_SOURCE_DOWNLOAD_STREAMS", "1", 1);
    unsigned seed = (unsigned)time(NULL);
    printf("resume: seed %u\n", seed);
    srand(seed);
    int kills = 0;
    /* the kills spread over the first half of a big object (the bench's 300 MiB) */
    uint64_t step_span = size / (2 * RESUME_KILLS);
    if (step_span < RESUME_STEP_SPAN)
        step_span = RESUME_STEP_SPAN;
    for (int i = 0; i < RESUME_KILLS; i++) {
        uint64_t target = s3h_part_size(sd) + RESUME_STEP_MIN + (uint64_t)rand() % step_span;
        int sig = i % 2 ? SIGINT : SIGKILL;
        pid_t pid = spawn(sd, ref);
        int64_t deadline = mono_ms() + WAIT_MS;
        int st = 0;
        bool exited = false;
        while (mono_ms() < deadline && s3h_part_size(sd) < target)
            if (waitpid(pid, &st, WNOHANG) == pid) {
                exited = true;
                break;
            } else {
                sleep_ms(5);
            }
        if (exited)
            fail_msg("round %d: the fetch ended (status %d) before byte %llu", i, st,
                     (unsigned long long)target);
        assert_int_equal(kill(pid, sig), 0);
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (sig == SIGKILL)
            assert_true(WIFSIGNALED(st));
        else /* interrupted: exit 130, the fetch resumes next time */
            assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 130);
        assert_true(s3h_part_size(sd) > 0); /* not finished: the next run has bytes to resume */
        kills++;
        printf("resume: round %d: %s at %llu bytes (target %llu)\n", i,
               sig == SIGKILL ? "kill -9" : "SIGINT", (unsigned long long)s3h_part_size(sd),
               (unsigned long long)target);
    }
    uint64_t before_last = s3h_part_size(sd);
    uint64_t sent = sent_bytes("big/resume.tar", NULL);
    s3h_reset(&H);
    json_t *j = fetch_json(sd, ref);
    _cleanup_free_ char *want = s3h_digest_of(p);
    json_t *l = json_array_get(json_object_get(j, "layers"), 0);
    assert_string_equal(json_string_value(json_object_get(l, "digest")), want);
    /* the last run resumed at the byte it found on disk */
    assert_int_equal(bytes_field(j, "resumed"), before_last);
    assert_int_equal(bytes_field(j, "resumed") + bytes_field(j, "downloaded"), size);
    json_decref(j);
    unsetenv("THINIMG_SOURCE_DOWNLOAD_STREAMS");
    sent += sent_bytes("big/resume.tar", NULL);
    double ratio = (double)sent / (double)size;
    printf("resume: %d kills, the server sent %llu bytes for %llu missing (ratio %.4f)\n", kills,
           (unsigned long long)sent, (unsigned long long)size, ratio);
    assert_true(ratio <= MAX_RATIO);
    assert_true(sent >= size);
}

/* Parallel ranges (docs/sources.md): the 64 MiB object with a 1 MiB threshold and the default
 * 4 streams, against a correct server and hostile ones. A download starts with one GET and
 * is split only when that connection is slow: the proxy slows the first GET down to
 * FIRST_RATE (below the split rate, SOURCE_STREAM_SPLIT_RATE) and the rule of each case acts
 * on the GETs after it. */
#define STREAMS_MIN "THINIMG_SOURCE_STREAM_MIN_BYTES=1048576"
#define FIRST_RATE  (32 << 20)

/* The GETs of the log for big/resume.tar: how many, how many with a closed range
 * ("bytes=A-B"), and the body bytes sent. */
static void range_gets(size_t *gets, size_t *ranged, uint64_t *bytes)
{
    json_t *log = s3h_log(&H);
    size_t i;
    json_t *v;
    *gets = *ranged = 0;
    *bytes = 0;
    json_array_foreach(log, i, v)
    {
        const char *path = json_string_value(json_object_get(v, "path"));
        const char *range = json_string_value(json_object_get(v, "range"));
        if (strcmp(json_string_value(json_object_get(v, "method")), "GET") != 0 || !path ||
            !strstr(path, "big/resume.tar"))
            continue;
        (*gets)++;
        if (range && range[strlen(range) - 1] != '-')
            (*ranged)++;
        *bytes += (uint64_t)json_integer_value(json_object_get(v, "bytes"));
    }
    json_decref(log);
}

static void check_resume_blob(json_t *j)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/big/resume.tar", SEED);
    _cleanup_free_ char *want = s3h_digest_of(p);
    assert_non_null(j);
    json_t *l = json_array_get(json_object_get(j, "layers"), 0);
    assert_string_equal(json_string_value(json_object_get(l, "digest")), want);
}

/* Fetch big/resume.tar into a new state with parallel ranges, with the proxy fault `rule`
 * (the JSON members after match and method, applied once unless it says; NULL: none) and
 * env2 in the environment; it must succeed with the right digest. The GETs the proxy saw. */
static void streams_case(const char *rule, const char *env2, size_t *gets, size_t *ranged,
                         uint64_t *bytes)
{
    s3h_reset(&H);
    char r[512];
    slow_rule(r, sizeof(r), FIRST_RATE, 1);
    assert_int_equal(s3h_fault(&H, r), 0);
    if (rule) {
        snprintf(r, sizeof(r), "{\"match\":\"big/resume.tar\",\"method\":\"GET\",%s}", rule);
        assert_int_equal(s3h_fault(&H, r), 0);
    }
    _cleanup_free_ char *sd = new_state();
    json_t *j = NULL;
    char *err = NULL;
    int rc = fetch_env(sd, "s3://" BUCKET "/big/resume.tar", STREAMS_MIN, env2, &j, &err);
    if (rc != 0)
        fail_msg("fault %s: rc %d: %s", rule ? rule : "none", rc, err);
    check_resume_blob(j);
    json_decref(j);
    free(err);
    range_gets(gets, ranged, bytes);
}

static void test_streams(void **state)
{
    (void)state;
    char p[4096];
    snprintf(p, sizeof(p), "%s/big/resume.tar", SEED);
    uint64_t size = file_size(p);
    size_t gets, ranged;
    uint64_t bytes;
    json_t *j = NULL;
    char *err = NULL;

    /* a correct server: the first GET, slow, is split: 3 ranged GETs more, every byte sent
     * about once (what was in flight when the first GET stopped at its share) */
    streams_case(NULL, NULL, &gets, &ranged, &bytes);
    assert_int_equal(gets, 4);
    assert_int_equal(ranged, 3);
    assert_true(bytes >= size && bytes <= size * MAX_RATIO);

    /* a server that ignores Range: the 3 ranges are refused at their first byte, the first
     * GET goes on to the end */
    streams_case("\"action\":\"norange\",\"count\":3", NULL, &gets, &ranged, &bytes);
    assert_int_equal(gets, 4);

    /* the object changes between ranges (412 to one of them): started over, right bytes */
    streams_case("\"action\":\"status\",\"status\":412,\"code\":\"PreconditionFailed\"", NULL,
                 &gets, &ranged, &bytes);
    assert_true(gets > 4);

    /* one range stalls after 100 kB: cut by the low-speed limit, resumed inside its range */
    int64_t t0 = mono_ms();
    streams_case("\"action\":\"stall\",\"after\":100000", "THINIMG_SOURCE_LOW_SPEED_TIME_S=2",
                 &gets, &ranged, &bytes);
    assert_true(mono_ms() - t0 < 60000);
    assert_int_equal(gets, 5); /* 4, and the stalled one again from its byte 100000 */
    assert_int_equal(ranged, 4);
    assert_true(bytes <= size * MAX_RATIO);

    /* a Content-Range that is not the range asked for: nothing of it written; the range is
     * asked for again and the bytes are right */
    streams_case("\"action\":\"badrange\"", NULL, &gets, &ranged, &bytes);
    assert_int_equal(gets, 5);
    assert_int_equal(ranged, 4);

    /* a connection at least as fast as the split rate (1 MiB/s here, so that a loaded
     * machine cannot make the unshaped proxy look slow): one GET, never split */
    s3h_reset(&H);
    _cleanup_free_ char *sd5 = new_state();
    assert_int_equal(fetch_env(sd5, "s3://" BUCKET "/big/resume.tar", STREAMS_MIN,
                               "THINIMG_SOURCE_STREAM_SPLIT_RATE=1048576", &j, &err),
                     0);
    check_resume_blob(j);
    json_decref(j);
    free(err);
    range_gets(&gets, &ranged, &bytes);
    assert_int_equal(gets, 1);
    assert_int_equal(ranged, 0);
    assert_int_equal(bytes, size);

    /* kill -9 in the middle of the ranges (slowed down), then again: every range resumes at
     * its byte; the server sends the object about once */
    s3h_reset(&H);
    char rule[256];
    slow_rule(rule, sizeof(rule), RESUME_RATE, 4);
    assert_int_equal(s3h_fault(&H, rule), 0);
    _cleanup_free_ char *sd6 = new_state();
    setenv("THINIMG_SOURCE_STREAM_MIN_BYTES", "1048576", 1);
    pid_t pid = spawn(sd6, "s3://" BUCKET "/big/resume.tar");
    unsetenv("THINIMG_SOURCE_STREAM_MIN_BYTES");
    int64_t deadline = mono_ms() + WAIT_MS;
    uint64_t sent = 0;
    while (mono_ms() < deadline && (sent = sent_bytes("big/resume.tar", NULL)) < size / 4)
        sleep_ms(20);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    sent = sent_bytes("big/resume.tar", NULL);
    s3h_reset(&H);
    assert_int_equal(fetch_env(sd6, "s3://" BUCKET "/big/resume.tar", STREAMS_MIN, NULL, &j, &err),
                     0);
    check_resume_blob(j);
    uint64_t resumed = bytes_field(j, "resumed");
    json_decref(j);
    free(err);
    range_gets(&gets, &ranged, &bytes);
    assert_int_equal(ranged, 4); /* each range from where it was */
    double ratio = (double)(sent + bytes) / (double)size;
    printf("streams: kill -9 after %llu bytes, %llu resumed; sent / size %.4f\n",
           (unsigned long long)sent, (unsigned long long)resumed, ratio);
    assert_true(resumed > 0);
    assert_true(ratio <= MAX_RATIO);

    /* killed in the middle of the ranges, its TMP.ranges gone (as gc removes it), then one
     * GET: the preallocated file is not taken for bytes; started over, right digest */
    s3h_reset(&H);
    assert_int_equal(s3h_fault(&H, rule), 0);
    _cleanup_free_ char *sd7 = new_state();
    setenv("THINIMG_SOURCE_STREAM_MIN_BYTES", "1048576", 1);
    pid = spawn(sd7, "s3://" BUCKET "/big/resume.tar");
    unsetenv("THINIMG_SOURCE_STREAM_MIN_BYTES");
    deadline = mono_ms() + WAIT_MS;
    while (mono_ms() < deadline && sent_bytes("big/resume.tar", NULL) < size / 4)
        sleep_ms(20);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "rm '%s'/tmp/*.ranges", sd7);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    s3h_reset(&H);
    assert_int_equal(fetch_env(sd7, "s3://" BUCKET "/big/resume.tar",
                               "THINIMG_SOURCE_DOWNLOAD_STREAMS=1", NULL, &j, &err),
                     0);
    check_resume_blob(j);
    assert_int_equal(bytes_field(j, "resumed"), 0);
    assert_int_equal(bytes_field(j, "downloaded"), size);
    json_decref(j);
    free(err);
}

/* A download split into ranges shows its bytes in the progress lines while the ranges run
 * (it showed 0 until they ended): every GET at PROGRESS_RATE, so that the download lasts past
 * the first progress line (one every 5 s without a terminal). */
#define PROGRESS_RATE (2 << 20)
#define PROGRESS_LINE "progress: 0/1 layers, "

static void test_streams_progress(void **state)
{
    (void)state;
    s3h_reset(&H);
    char rule[256];
    slow_rule(rule, sizeof(rule), PROGRESS_RATE, 0);
    assert_int_equal(s3h_fault(&H, rule), 0);
    _cleanup_free_ char *sd = new_state();
    char sdarg[4096], ep[128], min[] = STREAMS_MIN;
    snprintf(sdarg, sizeof(sdarg), "--state-dir=%s", sd);
    snprintf(ep, sizeof(ep), "AWS_ENDPOINT_URL=%s", H.proxy_url);
    char *env[] = {ep, min, NULL};
    char *argv[] = {(char *)tu_thinimg(), sdarg, "fetch", "s3://" BUCKET "/big/resume.tar", NULL};
    _cleanup_free_ char *out = NULL, *err = NULL;
    assert_int_equal(tu_run(argv, env, &out, &err), 0);
    size_t lines = 0, moving = 0;
    for (const char *p = err; (p = strstr(p, PROGRESS_LINE)); p++) {
        lines++;
        if (strncmp(p + strlen(PROGRESS_LINE), "0 B of", strlen("0 B of")) != 0)
            moving++;
    }
    printf("streams progress: %zu progress lines, %zu with bytes\n", lines, moving);
    assert_true(moving >= 1);
    size_t gets, ranged;
    uint64_t bytes;
    range_gets(&gets, &ranged, &bytes);
    assert_int_equal(ranged, 3); /* it was split into ranges */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_families_share_layers, reset),
        cmocka_unit_test_setup(test_changed_blob_not_reused, reset),
        cmocka_unit_test_setup(test_resume_at_the_byte, reset),
        cmocka_unit_test_setup(test_streams, reset),
        cmocka_unit_test_setup(test_streams_progress, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
