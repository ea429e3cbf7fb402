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
 *  - a download killed 10 times at random points (kill -9 and SIGINT in turn) and then
 *    finished: each run resumes at the byte the last one left on disk, the server sent at
 *    most 1.01 x the object's size, and the digest is right. In the suite the proxy stops
 *    sending at each kill point (a stall) and the kill comes once those bytes are on disk, so
 *    nothing is in flight and any byte sent twice is the resume's; the benchmark
 *    (bench/fetch-resume.sh, THINIMG_TEST_RESUME_MIB) kills a throttled stream in full flow,
 *    where what sat in socket buffers is lost too;
 *  - two runs that want one object at once (two layers of one identity, fetched in
 *    parallel): the server sends it once; killed with kill -9 in the middle, the next fetch
 *    resumes the bytes on disk and takes the blob for the other layer, and nothing is left
 *    behind (no temp file, `gc --dry-run` lists nothing);
 *  - a download in parallel ranges killed at random points, each other kill followed by a
 *    modelled reboot (the bytes no fdatasync covered are destroyed): every range resumes
 *    from its durable bytes, and the server sends at most 1.01 x what was missing.
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

#include "pipeline/fetch_ranges.h"
#include "fetch_fixture.h"
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
#define RESUME_MIB 64 /* THINIMG_TEST_RESUME_MIB overrides it (bench/fetch-resume.sh) */
/* (4 MiB/s: what the client takes in at once on a loaded machine, the sanitizer build hashing
 * every byte; what a kill loses is what sat in socket buffers, and a client that falls behind
 * a faster rate leaves more there) */
#define RESUME_RATE      (4 << 20)
#define RESUME_KILLS     10
#define RESUME_STEP_MIN  (1 << 20)
#define RESUME_STEP_SPAN (3 << 20)
#define WAIT_MS          120000
/* One identity at two locations (twins/1.tar and twins/2.tar, byte-identical), sent at
 * TWIN_RATE so that both runs are under way while it downloads. */
#define TWIN_MIB  32
#define TWIN_RATE (8 << 20)
/* The reboot model (test_streams_reboot): the kills, and how far the server gets in each
 * round before its kill: a round followed by a reboot goes past the ranges' checkpoint
 * (FETCH_RANGE_CHECKPOINT_BYTES, 16 MiB) so that some of its bytes are durable; the rounds
 * stop well before the object's end. */
#define REBOOT_ROUNDS      4
#define REBOOT_STEP_MIN    (17 << 20)
#define REBOOT_STEP_SPAN   (2 << 20)
#define SAMEBOOT_STEP_MIN  (2 << 20)
#define SAMEBOOT_STEP_SPAN (2 << 20)
#define ANOTHER_BOOT       "00000000-0000-4000-8000-000000000000"

static struct fetch_fixture F;

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static int resume_mib(void)
{
    const char *v = getenv("THINIMG_TEST_RESUME_MIB");
    int n = v ? atoi(v) : 0;
    return n > 0 ? n : RESUME_MIB;
}

static int setup(void **state)
{
    *state = &F; /* the cases' setup (fixture_reset) and the teardown take it */
    if (fixture_init(&F, "byteonce") < 0)
        return -1;
    const char *seed = F.seed;
    char p[4096];
    for (int f = 0; f < 3; f++) {
        fixture_sh("mkdir -p '%s/images/%s'", seed, FAMILIES[f]);
        for (int l = 0; l < 3; l++) {
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", seed, FAMILIES[f], l + 1);
            fixture_make_layer(p, SHARED_KIB[l], l + 1); /* same seed: byte-identical */
        }
        for (int l = 0; l < 2; l++) {
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", seed, FAMILIES[f], l + 4);
            fixture_make_layer(p, OWN_KIB[l], 100 + 10 * f + l);
        }
    }
    fixture_sh("mkdir -p '%s/extra' '%s/big' '%s/twins'", seed, seed, seed);
    snprintf(p, sizeof(p), "%s/twins/1.tar", seed);
    fixture_make_layer(p, TWIN_MIB << 10, 9);
    fixture_sh("cp '%s/twins/1.tar' '%s/twins/2.tar'", seed, seed);
    fixture_sh("cp '%s/images/golang/1.tar' '%s/extra/1.tar'", seed, seed);
    snprintf(p, sizeof(p), "%s/big/resume.tar", seed);
    fixture_make_layer(p, resume_mib() << 10, 7);
    return fixture_start(&F, BUCKET);
}

/* `thinimg --state-dir S fetch REF --json` through the proxy, with env1 and env2 (NULL: none)
 * added to the environment; the exit code, the parsed output (NULL when none) and stderr. */
static int fetch_env(const char *state_dir, const char *ref, const char *env1, const char *env2,
                     json_t **out_json, char **err)
{
    const char *env[] = {env1, env2, NULL};
    char *out = NULL;
    int rc = fixture_fetch(&F, state_dir, ref, "--json", env, &out, err);
    *out_json = out ? json_loads(out, 0, NULL) : NULL;
    free(out);
    return rc;
}

/* `thinimg --state-dir S fetch REF --json` through the proxy; the parsed output. */
static json_t *fetch_json(const char *state_dir, const char *ref)
{
    json_t *j = NULL;
    char *err = NULL;
    int rc = fetch_env(state_dir, ref, NULL, NULL, &j, &err);
    if (rc != 0)
        fail_msg("fetch %s: rc %d: %s", ref, rc, err);
    assert_non_null(j);
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
    json_t *log = s3h_log(&F.h);
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
    _cleanup_free_ char *sd = fixture_new_state(&F);
    uint64_t unique = 0, shared = 0;
    char p[4096];
    for (int f = 0; f < 3; f++)
        for (int l = 1; l <= 5; l++) {
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", F.seed, FAMILIES[f], l);
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
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", F.seed, FAMILIES[f], l);
            _cleanup_free_ char *want = s3h_digest_of(p);
            json_t *e = json_array_get(layers, (size_t)l - 1);
            assert_string_equal(json_string_value(json_object_get(e, "digest")), want);
            /* layers 1-3 of node and python: no GET, the golang blobs */
            assert_int_equal(json_is_true(json_object_get(e, "reused")), f > 0 && l <= 3);
        }
        uint64_t own = 0;
        for (int l = 4; l <= 5; l++) {
            snprintf(p, sizeof(p), "%s/images/%s/%d.tar", F.seed, FAMILIES[f], l);
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
    _cleanup_free_ char *sd = fixture_new_state(&F);
    json_t *j = fetch_json(sd, "s3://" BUCKET "/images/golang/1.tar");
    const char *d = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "layers"), 0), "digest"));
    char blob[4096];
    snprintf(blob, sizeof(blob), "%s/blobs/sha256/%s", sd, d + strlen("sha256:"));
    json_decref(j);
    /* one byte of the stored blob changed in place (same size) */
    fixture_sh("chmod u+w '%s' && printf X | dd of='%s' bs=1 seek=600 conv=notrunc status=none",
               blob, blob);
    s3h_reset(&F.h);
    j = fetch_json(sd, "s3://" BUCKET "/extra/1.tar");
    char p[4096];
    snprintf(p, sizeof(p), "%s/extra/1.tar", F.seed);
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

/* The proxy sends a slowed response in pieces of about SLOW_PIECE_MS at its rate, at least
 * SLOW_PIECE_MIN bytes: small, because what a kill costs is counted at the proxy, and the
 * proxy writes a piece or two more before it sees that the connection died. */
#define SLOW_PIECE_MS  1
#define SLOW_PIECE_MIN 4096

static int slow_piece(int rate)
{
    int piece = rate / 1000 * SLOW_PIECE_MS;
    return piece > SLOW_PIECE_MIN ? piece : SLOW_PIECE_MIN;
}

/* The proxy rule that sends each GET of big/resume.tar at `rate` bytes/s (count: the next
 * `count` GETs, 0 = all). */
static void slow_rule(char *r, size_t n, int rate, int count)
{
    snprintf(r, n,
             "{\"match\":\"big/resume.tar\",\"method\":\"GET\",\"action\":\"slow\","
             "\"bytes_per_s\":%d,\"piece\":%d,\"count\":%d}",
             rate, slow_piece(rate), count);
}

/* The kill tests on big/resume.tar: a new state directory (*sd), every GET of the object slowed
 * down to `rate` (0: not slowed), the random kill points seeded (and the seed printed, to replay a
 * failure); the object's size. */
static uint64_t resume_setup(char **sd, int rate, const char *test)
{
    *sd = fixture_new_state(&F);
    char p[4096];
    snprintf(p, sizeof(p), "%s/big/resume.tar", F.seed);
    if (rate > 0) {
        char rule[256];
        slow_rule(rule, sizeof(rule), rate, 0);
        assert_int_equal(s3h_fault(&F.h, rule), 0);
    }
    unsigned seed = (unsigned)time(NULL);
    printf("%s: seed %u\n", test, seed);
    srand(seed);
    return file_size(p);
}

static void test_resume_at_the_byte(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = NULL;
    bool in_flow = getenv("THINIMG_TEST_RESUME_MIB") != NULL; /* the benchmark */
    uint64_t size = resume_setup(&sd, in_flow ? RESUME_RATE : 0, "resume");
    const char *ref = "s3://" BUCKET "/big/resume.tar";
    char p[4096];
    snprintf(p, sizeof(p), "%s/big/resume.tar", F.seed);
    /* one stream: the file grows from its start (parallel ranges: test_streams) */
    setenv("THINIMG_SOURCE_DOWNLOAD_STREAMS", "1", 1);
    int kills = 0;
    /* the kills spread over the first half of a big object (the bench's 300 MiB) */
    uint64_t step_span = size / (2 * RESUME_KILLS);
    if (step_span < RESUME_STEP_SPAN)
        step_span = RESUME_STEP_SPAN;
    for (int i = 0; i < RESUME_KILLS; i++) {
        uint64_t have = s3h_part_size(sd);
        uint64_t step = RESUME_STEP_MIN + (uint64_t)rand() % step_span;
        uint64_t target = have + step;
        if (!in_flow) {
            /* the next GET (this run's, resuming at `have`) stops after `step` bytes */
            char rule[256];
            snprintf(rule, sizeof(rule),
                     "{\"match\":\"big/resume.tar\",\"method\":\"GET\",\"action\":\"stall\","
                     "\"after\":%llu,\"count\":1}",
                     (unsigned long long)step);
            assert_int_equal(s3h_fault(&F.h, rule), 0);
        }
        int sig = i % 2 ? SIGINT : SIGKILL;
        pid_t pid = fixture_spawn(&F, sd, ref);
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
        /* Stalled at the kill point: the run resumed at the byte on disk, so what the proxy
         * sent ends exactly there (a run that went back to an earlier byte never reaches it,
         * one that skipped ahead passes it). */
        if (!in_flow && s3h_part_size(sd) != target)
            fail_msg("round %d: %llu bytes on disk, not the %llu that resuming at %llu and "
                     "receiving %llu gives",
                     i, (unsigned long long)s3h_part_size(sd), (unsigned long long)target,
                     (unsigned long long)have, (unsigned long long)step);
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
    s3h_reset(&F.h);
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
    json_t *log = s3h_log(&F.h);
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
    snprintf(p, sizeof(p), "%s/big/resume.tar", F.seed);
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
    s3h_reset(&F.h);
    char r[512];
    slow_rule(r, sizeof(r), FIRST_RATE, 1);
    assert_int_equal(s3h_fault(&F.h, r), 0);
    if (rule) {
        snprintf(r, sizeof(r), "{\"match\":\"big/resume.tar\",\"method\":\"GET\",%s}", rule);
        assert_int_equal(s3h_fault(&F.h, r), 0);
    }
    _cleanup_free_ char *sd = fixture_new_state(&F);
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
    snprintf(p, sizeof(p), "%s/big/resume.tar", F.seed);
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
    s3h_reset(&F.h);
    _cleanup_free_ char *sd5 = fixture_new_state(&F);
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
    s3h_reset(&F.h);
    char rule[256];
    slow_rule(rule, sizeof(rule), RESUME_RATE, 4);
    assert_int_equal(s3h_fault(&F.h, rule), 0);
    _cleanup_free_ char *sd6 = fixture_new_state(&F);
    setenv("THINIMG_SOURCE_STREAM_MIN_BYTES", "1048576", 1);
    pid_t pid = fixture_spawn(&F, sd6, "s3://" BUCKET "/big/resume.tar");
    unsetenv("THINIMG_SOURCE_STREAM_MIN_BYTES");
    int64_t deadline = mono_ms() + WAIT_MS;
    uint64_t sent = 0;
    while (mono_ms() < deadline && (sent = sent_bytes("big/resume.tar", NULL)) < size / 4)
        sleep_ms(20);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    sent = sent_bytes("big/resume.tar", NULL);
    s3h_reset(&F.h);
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
    s3h_reset(&F.h);
    assert_int_equal(s3h_fault(&F.h, rule), 0);
    _cleanup_free_ char *sd7 = fixture_new_state(&F);
    setenv("THINIMG_SOURCE_STREAM_MIN_BYTES", "1048576", 1);
    pid = fixture_spawn(&F, sd7, "s3://" BUCKET "/big/resume.tar");
    unsetenv("THINIMG_SOURCE_STREAM_MIN_BYTES");
    deadline = mono_ms() + WAIT_MS;
    while (mono_ms() < deadline && sent_bytes("big/resume.tar", NULL) < size / 4)
        sleep_ms(20);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "rm '%s'/tmp/*.ranges", sd7);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    s3h_reset(&F.h);
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
    s3h_reset(&F.h);
    char rule[256];
    slow_rule(rule, sizeof(rule), PROGRESS_RATE, 0);
    assert_int_equal(s3h_fault(&F.h, rule), 0);
    _cleanup_free_ char *sd = fixture_new_state(&F);
    char sdarg[4096], ep[128], min[] = STREAMS_MIN;
    snprintf(sdarg, sizeof(sdarg), "--state-dir=%s", sd);
    snprintf(ep, sizeof(ep), "AWS_ENDPOINT_URL=%s", F.h.proxy_url);
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

/* ---- one download at a time ---------------------------------------------------------------- */

#define TWINS "s3://" BUCKET "/twins/"

static uint64_t twin_sent(void)
{
    return sent_bytes("twins/1.tar", NULL) + sent_bytes("twins/2.tar", NULL);
}

static void twins_slow(void)
{
    char r[256];
    snprintf(r, sizeof(r),
             "{\"match\":\"/twins/\",\"method\":\"GET\",\"action\":\"slow\","
             "\"bytes_per_s\":%d,\"piece\":%d,\"count\":0}",
             TWIN_RATE, slow_piece(TWIN_RATE));
    assert_int_equal(s3h_fault(&F.h, r), 0);
}

/* A new state directory (*sd) and the twins slowed down; the twin's size. */
static uint64_t twins_setup(char **sd)
{
    *sd = fixture_new_state(&F);
    char p[4096];
    snprintf(p, sizeof(p), "%s/twins/1.tar", F.seed);
    twins_slow();
    return file_size(p);
}

/* Both layers are the twin, with its digest. */
static void check_twins(json_t *j)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/twins/1.tar", F.seed);
    _cleanup_free_ char *want = s3h_digest_of(p);
    json_t *layers = json_object_get(j, "layers");
    assert_int_equal(json_array_size(layers), 2);
    for (size_t i = 0; i < 2; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(layers, i), "digest")),
                            want);
}

static void test_one_identity_at_once(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = NULL;
    uint64_t size = twins_setup(&sd);
    /* the family's two layers start at once (--jobs 5): one downloads, the other waits for
     * it and takes its blob */
    json_t *j = fetch_json(sd, TWINS);
    check_twins(j);
    assert_int_equal(bytes_field(j, "downloaded"), size);
    assert_int_equal(bytes_field(j, "reused"), size);
    json_decref(j);
    uint64_t sent = twin_sent();
    printf("one identity at once: the server sent %llu bytes for %llu (ratio %.4f)\n",
           (unsigned long long)sent, (unsigned long long)size, (double)sent / (double)size);
    assert_true(sent >= size && (double)sent <= MAX_RATIO * (double)size);
}

/* Nothing of the downloads is left: no file in STATE/tmp, and `gc --dry-run` lists no
 * download record and no temp file (the blobs it lists are kept: no image uses them yet). */
static void assert_nothing_left(const char *sd)
{
    assert_int_equal(fixture_files_in(sd, "tmp"), 0);
    char sdo[4096];
    snprintf(sdo, sizeof(sdo), "--state-dir=%s", sd);
    char *argv[] = {(char *)tu_thinimg(), sdo, "gc", "--dry-run", "--json", NULL};
    _cleanup_free_ char *out = NULL, *err = NULL;
    assert_int_equal(tu_run(argv, NULL, &out, &err), 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(j, "orphans"), i, o)
    {
        const char *kind = json_string_value(json_object_get(o, "kind"));
        if (!kind || !strcmp(kind, "download") || !strcmp(kind, "tmpfile"))
            fail_msg("gc --dry-run lists %s", out);
    }
    json_decref(j);
}

static void test_one_identity_killed(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = NULL;
    uint64_t size = twins_setup(&sd);
    /* The download stops a third of the way (a stall, not the rate: the other run is under way
     * meanwhile, waiting) and is killed once that third is in the file, so nothing is in
     * flight at the kill and any byte sent twice would be the resume's. */
    s3h_reset(&F.h);
    char rule[256];
    snprintf(rule, sizeof(rule),
             "{\"match\":\"twins/\",\"method\":\"GET\",\"action\":\"stall\",\"after\":%llu,"
             "\"count\":1}",
             (unsigned long long)(size / 3));
    assert_int_equal(s3h_fault(&F.h, rule), 0);
    pid_t pid = fixture_spawn(&F, sd, TWINS);
    int64_t deadline = mono_ms() + WAIT_MS;
    while (mono_ms() < deadline && s3h_part_size(sd) < size / 3)
        sleep_ms(10);
    assert_int_equal(s3h_part_size(sd), size / 3);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    uint64_t sent = twin_sent(), in_file = s3h_part_size(sd);
    assert_true(sent < size);
    s3h_reset(&F.h);
    /* both runs resume: the one that takes the temp file goes on from its bytes (whichever
     * location started them), the other takes the blob */
    json_t *j = fetch_json(sd, TWINS);
    check_twins(j);
    uint64_t resumed = bytes_field(j, "resumed");
    assert_true(resumed > 0);
    assert_int_equal(bytes_field(j, "downloaded") + resumed, size);
    assert_int_equal(bytes_field(j, "reused"), size);
    json_decref(j);
    /* after the kill: exactly what was missing from the file; in all (with what was in flight
     * at the kill) about the object once */
    uint64_t again = twin_sent();
    assert_int_equal(resumed, in_file);
    assert_int_equal(again, size - in_file);
    sent += again;
    printf("one identity, kill -9: %llu resumed; the server sent %llu bytes for %llu (ratio "
           "%.4f)\n",
           (unsigned long long)resumed, (unsigned long long)sent, (unsigned long long)size,
           (double)sent / (double)size);
    assert_true((double)sent <= MAX_RATIO * (double)size);
    assert_nothing_left(sd);
}

/* The process dies right after the first run stored the blob, before that step was recorded
 * (THINIMG_FAULT: kill -9 at the end of the download step): the next fetch takes the stored
 * blob for both layers (the marker beside the temp file names it), no byte is fetched again,
 * and nothing is left behind. */
static void test_one_identity_killed_after_store(void **state)
{
    (void)state;
    _cleanup_free_ char *sd = NULL;
    uint64_t size = twins_setup(&sd);
    json_t *j = NULL;
    char *err = NULL;
    int rc = fetch_env(sd, TWINS, "THINIMG_FAULT=fetch.download.end", NULL, &j, &err);
    if (!tu_contains(err, "fault point fetch.download.end"))
        fail_msg("the fault point did not fire: rc %d: %s", rc, err);
    json_decref(j);
    free(err);
    uint64_t sent = twin_sent();
    assert_int_equal(sent, size);
    s3h_reset(&F.h);
    j = fetch_json(sd, TWINS);
    check_twins(j);
    assert_int_equal(bytes_field(j, "downloaded"), 0);
    assert_int_equal(bytes_field(j, "resumed"), 0);
    assert_int_equal(bytes_field(j, "reused"), 2 * size);
    json_decref(j);
    assert_int_equal(twin_sent(), 0);
    assert_nothing_left(sd);
}

/* ---- the reboot model of a download in ranges --------------------------------------------- */

/* STATE/tmp/<name>.part.ranges into head and recs; false when there is none. */
static bool ranges_read(const char *sd, char *path, size_t cap, struct fetch_ranges_head *head,
                        struct fetch_range_rec *recs)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tmp", sd);
    DIR *d = opendir(dir);
    struct dirent *de;
    bool found = false;
    while (d && !found && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        found = n > 12 && !strcmp(de->d_name + n - 12, ".part.ranges");
        if (found)
            snprintf(path, cap, "%s/%s", dir, de->d_name);
    }
    if (d)
        closedir(d);
    if (!found)
        return false;
    int fd = open(path, O_RDONLY);
    bool ok = fd >= 0 && pread(fd, head, sizeof(*head), 0) == (ssize_t)sizeof(*head) &&
              head->n >= 1 && head->n <= 16 &&
              pread(fd, recs, head->n * sizeof(*recs), sizeof(*head)) ==
                  (ssize_t)(head->n * sizeof(*recs));
    if (fd >= 0)
        close(fd);
    return ok;
}

/* A reboot after a kill -9, as far as a test can make one: what no fdatasync covered is lost.
 * TMP.ranges says what was covered (each range's `synced`); every other byte of the temp file
 * is overwritten and the record is stamped with another boot. Returns the bytes destroyed
 * (in the file before, not durable); *durable: the bytes that survive. */
static uint64_t model_reboot(const char *sd, uint64_t *durable)
{
    char idx[8192];
    struct fetch_ranges_head head;
    struct fetch_range_rec recs[16];
    assert_true(ranges_read(sd, idx, sizeof(idx), &head, recs));
    char part[8192];
    snprintf(part, sizeof(part), "%.*s", (int)(strlen(idx) - strlen(".ranges")), idx);
    int fd = open(part, O_WRONLY);
    assert_true(fd >= 0);
    static char junk[1 << 20];
    memset(junk, 0x5a, sizeof(junk));
    uint64_t lost = 0;
    *durable = 0;
    for (uint32_t i = 0; i < head.n; i++) {
        uint64_t done = recs[i].done > recs[i].synced ? recs[i].done : recs[i].synced;
        lost += done - recs[i].synced;
        *durable += recs[i].synced;
        for (uint64_t at = recs[i].start + recs[i].synced; at < recs[i].end;) {
            size_t n = recs[i].end - at < sizeof(junk) ? (size_t)(recs[i].end - at) : sizeof(junk);
            assert_int_equal(pwrite(fd, junk, n, (off_t)at), (ssize_t)n);
            at += n;
        }
    }
    close(fd);
    memset(head.boot, 0, sizeof(head.boot));
    snprintf(head.boot, sizeof(head.boot), "%s", ANOTHER_BOOT);
    fd = open(idx, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &head, sizeof(head), 0), (ssize_t)sizeof(head));
    close(fd);
    return lost;
}

static void test_streams_reboot(void **state)
{
    (void)state;
    const char *ref = "s3://" BUCKET "/big/resume.tar";
    _cleanup_free_ char *sd = NULL;
    /* a quarter of the one-stream rate on each of the four connections: what a kill loses in
     * their socket buffers (counted as sent) stays far inside the bound on a loaded machine */
    uint64_t size = resume_setup(&sd, RESUME_RATE / 4, "streams reboot");
    setenv("THINIMG_SOURCE_STREAM_MIN_BYTES", "1048576", 1);
    uint64_t destroyed = 0, durable = 0;
    for (int i = 0; i < REBOOT_ROUNDS; i++) {
        bool reboot = i % 2 == 1;
        uint64_t target = sent_bytes("big/resume.tar", NULL) +
                          (reboot ? REBOOT_STEP_MIN + (uint64_t)rand() % REBOOT_STEP_SPAN
                                  : SAMEBOOT_STEP_MIN + (uint64_t)rand() % SAMEBOOT_STEP_SPAN);
        pid_t pid = fixture_spawn(&F, sd, ref);
        int64_t deadline = mono_ms() + WAIT_MS;
        char idx[8192];
        struct fetch_ranges_head head;
        struct fetch_range_rec recs[16];
        int st = 0;
        while (mono_ms() < deadline && (sent_bytes("big/resume.tar", NULL) < target ||
                                        !ranges_read(sd, idx, sizeof(idx), &head, recs)))
            if (waitpid(pid, &st, WNOHANG) == pid)
                fail_msg("round %d: the fetch ended (status %d) before its kill", i, st);
            else
                sleep_ms(5);
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_int_equal(waitpid(pid, &st, 0), pid);
        uint64_t lost = 0, in_file = 0;
        assert_true(ranges_read(sd, idx, sizeof(idx), &head, recs));
        for (uint32_t k = 0; k < head.n; k++)
            in_file += recs[k].done > recs[k].synced ? recs[k].done : recs[k].synced;
        printf("streams reboot: round %d: %llu bytes in the file\n", i,
               (unsigned long long)in_file);
        if (reboot) {
            lost = model_reboot(sd, &durable);
            destroyed += lost;
            assert_true(durable > 0);
        }
        printf("streams reboot: round %d: kill -9 at %llu bytes sent%s, %llu durable, %llu "
               "destroyed\n",
               i, (unsigned long long)sent_bytes("big/resume.tar", NULL),
               reboot ? " and a reboot" : "", (unsigned long long)durable,
               (unsigned long long)lost);
    }
    uint64_t sent = sent_bytes("big/resume.tar", NULL);
    s3h_reset(&F.h);
    json_t *j = NULL;
    char *err = NULL;
    int rc = fetch_env(sd, ref, STREAMS_MIN, NULL, &j, &err);
    unsetenv("THINIMG_SOURCE_STREAM_MIN_BYTES");
    if (rc != 0)
        fail_msg("the last fetch: rc %d: %s", rc, err);
    free(err);
    check_resume_blob(j);
    uint64_t resumed = bytes_field(j, "resumed");
    json_decref(j);
    size_t gets, ranged;
    uint64_t last;
    range_gets(&gets, &ranged, &last);
    /* after the reboot every range resumed from its durable bytes, each on its connection */
    assert_int_equal(resumed, durable);
    assert_true(ranged >= 1);
    sent += last;
    double ratio = (double)sent / (double)(size + destroyed);
    printf("streams reboot: %llu resumed, the last run fetched %llu of %llu missing; the server "
           "sent %llu bytes for %llu missing in all (ratio %.4f)\n",
           (unsigned long long)resumed, (unsigned long long)last,
           (unsigned long long)(size - resumed), (unsigned long long)sent,
           (unsigned long long)(size + destroyed), ratio);
    assert_true((double)last <= MAX_RATIO * (double)(size - resumed));
    assert_true(ratio <= MAX_RATIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_families_share_layers, fixture_reset),
        cmocka_unit_test_setup(test_changed_blob_not_reused, fixture_reset),
        cmocka_unit_test_setup(test_resume_at_the_byte, fixture_reset),
        cmocka_unit_test_setup(test_streams, fixture_reset),
        cmocka_unit_test_setup(test_streams_progress, fixture_reset),
        cmocka_unit_test_setup(test_one_identity_at_once, fixture_reset),
        cmocka_unit_test_setup(test_one_identity_killed, fixture_reset),
        cmocka_unit_test_setup(test_one_identity_killed_after_store, fixture_reset),
        cmocka_unit_test_setup(test_streams_reboot, fixture_reset),
    };
    return cmocka_run_group_tests(tests, setup, fixture_teardown);
}
