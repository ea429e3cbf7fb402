/*
 * test_fetch.c: the fetch machine over dir: sources (real FSM engine, real SQLite, real
 * archive module): every supported format (tar, tar+gzip, tar+zstd, docker-archive, OCI
 * layout) is fetched and recorded, garbage (zero bytes, an XML error body, HTML, a truncated
 * tar, a PNG) is rejected and leaves nothing behind, identical bytes under two keys are stored
 * once, a second fetch hands off, a corrupted store file and a changed source are fetched
 * again, an archive's layer changed on disk is quarantined and stored again, a compressed
 * layer is scanned while it downloads, its diff id computed in that same pass (validate does
 * not decompress it again). Blobs come from tests/s3/make_blobs.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fsm/fsm.h"
#include "pipeline/fetch.h"
#include "store/oci.h"
#include "store/schema.h"
#include "testutil.h"
#include "util/cleanup.h"
#include "util/config.h"
#include "util/fsutil.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/timeutil.h"

static char *DIR_;   /* temp root */
static char *BLOBS;  /* make_blobs.py output */

struct env {
    char *state;
    struct config cfg;
    struct db *db;
    struct fsm_manager *m;
    struct fsm_machine *machine;
    struct fetch_context *ctx;
    enum err_kind last_kind; /* of the last fetch() */
};

static int group_setup(void **state)
{
    (void)state;
    DIR_ = tu_mkdtemp("fetch");
    if (asprintf(&BLOBS, "%s/blobs-src", DIR_) < 0)
        return -1;
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "python3 '%s/tests/s3/make_blobs.py' '%s'", tu_source_dir(),
             BLOBS);
    return tu_sh(cmd, NULL, NULL) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    tu_rmrf(DIR_);
    free(DIR_);
    free(BLOBS);
    return 0;
}

static int env_setup(void **state)
{
    struct env *v = calloc(1, sizeof(*v));
    static int n;
    if (asprintf(&v->state, "%s/state%d", DIR_, n++) < 0)
        return -1;
    struct config_overrides o = {.state_dir = v->state};
    if (config_resolve(&v->cfg, &o) < 0 || config_ensure_dirs(&v->cfg, NULL) < 0)
        return -1;
    struct err e = {0};
    if (db_open(v->cfg.db_path, NULL, &v->db, &e) < 0 || store_migrate(v->db, &e) < 0)
        return -1;
    struct fsm_queue_cfg q[] = {{FETCH_QUEUE, 2}};
    struct fsm_config fc = {.queues = q, .n_queues = 1};
    if (fsm_manager_open(v->db, &fc, &v->m, &e) < 0)
        return -1;
    struct fetch_config cfg = {.blob_dir = v->cfg.blob_dir, .tmp_dir = v->cfg.tmp_dir,
                               .policy = archive_policy_default()};
    if (fetch_register(v->m, &cfg, &v->machine, &v->ctx) < 0 || fsm_manager_resume(v->m) < 0)
        return -1;
    *state = v;
    return 0;
}

static int env_teardown(void **state)
{
    struct env *v = *state;
    fsm_manager_close(v->m);
    fetch_context_free(v->ctx);
    db_close(v->db);
    config_free(&v->cfg);
    free(v->state);
    free(v);
    return 0;
}

/* Fetch one location; returns the outcome, fills res on success and err with the error. */
static enum fsm_outcome fetch(struct env *v, const char *rel, struct fetch_result *res,
                              char **error)
{
    char loc[4096];
    snprintf(loc, sizeof(loc), "dir:%s/%s", BLOBS, rel);
    _cleanup_free_ char *req = NULL;
    size_t len = 0;
    assert_int_equal(fetch_request_build(loc, NULL, 0, NULL, &req, &len), 0);
    struct fsm_id id;
    struct fsm_start_opts so = {.queue = FETCH_QUEUE};
    assert_int_equal(fsm_start(v->m, v->machine, loc, req, len, &so, &id), 0);
    enum fsm_outcome out;
    char *err = NULL;
    assert_int_equal(fsm_wait_kind(v->m, &id, 30000, &out, &v->last_kind, &err), 0);
    if (res) {
        *res = (struct fetch_result){0};
        if (fsm_outcome_success(out)) {
            struct fsm_run_record rec;
            assert_int_equal(fsm_db_get_run(v->db, &id, &rec), 0);
            struct err e = {0};
            assert_int_equal(fetch_response_parse(rec.response, rec.response_len, res, &e), 0);
            fsm_run_record_free(&rec);
        }
    }
    if (error)
        *error = err;
    else
        free(err);
    return out;
}

static char *file_digest(const char *path)
{
    uint8_t h[SHA256_LEN];
    if (sha256_file(path, h, NULL) < 0)
        return NULL;
    char *d = malloc(DIGEST_STR_LEN + 1);
    digest_format(h, d);
    return d;
}

static char *src_digest(const char *rel)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/%s", BLOBS, rel);
    return file_digest(p);
}

static int64_t q_int(struct db *db, const char *sql, const char *arg)
{
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, sql);
    assert_non_null(st);
    if (arg)
        db_bind_text(st, 1, arg);
    int64_t v = db_step(db, st) == 1 ? sqlite3_column_int64(st, 0) : -1;
    db_done(st);
    db_unlock(db);
    return v;
}

static size_t count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void check_layer_blob(struct env *v, const struct fetch_layer *l)
{
    _cleanup_free_ char *d = file_digest(l->path);
    assert_non_null(d);
    assert_string_equal(d, l->digest);
    assert_true(tu_contains(l->path, v->cfg.blob_dir));
    assert_true(tu_contains(l->path, l->digest + 7)); /* named by digest */
    assert_int_equal(q_int(v->db, "SELECT size FROM blobs WHERE digest = ?1", l->digest),
                     (int64_t)l->size);
}

/* Was the layer at location scanned while it downloaded (its run's response says so)? */
static bool scanned_while_downloading(struct env *v, const char *location)
{
    db_lock(v->db);
    sqlite3_stmt *st = db_prepare(v->db, "SELECT response FROM fsm_runs WHERE resource_id = ?1 "
                                         "ORDER BY rowid DESC LIMIT 1");
    assert_non_null(st);
    db_bind_text(st, 1, location);
    bool yes = db_step(v->db, st) == 1 && sqlite3_column_text(st, 0) &&
               strstr((const char *)sqlite3_column_text(st, 0), "\"scanned\"") != NULL;
    db_done(st);
    db_unlock(v->db);
    return yes;
}

static void test_layer_formats(void **state)
{
    struct env *v = *state;
    const struct {
        const char *rel;
        enum blob_format f;
    } cases[] = {{"layers/1.tar", BLOB_TAR},
                 {"formats/gzip.tar", BLOB_TAR_GZIP},
                 {"formats/zstd.tar", BLOB_TAR_ZSTD}};
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct fetch_result r;
        char *err = NULL;
        assert_int_equal(fetch(v, cases[i].rel, &r, &err), FSM_OK);
        free(err);
        _cleanup_free_ char *want = src_digest(cases[i].rel);
        assert_string_equal(r.digest, want);
        assert_int_equal(r.format, cases[i].f);
        assert_false(r.reused);
        assert_int_equal(r.n_layers, 1);
        assert_string_equal(r.layers[0].digest, want);
        assert_null(r.layers[0].member);
        check_layer_blob(v, &r.layers[0]);
        assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_sources WHERE location = ?1 "
                                      "AND digest IS NOT NULL", r.location), 1);
        /* A compressed layer is scanned while it downloads (validate then reads one block);
         * a plain tar is scanned after, by seeking from header to header. */
        assert_int_equal(scanned_while_downloading(v, r.location), cases[i].f != BLOB_TAR);
        fetch_result_free(&r);
    }
    /* the resume hints are gone, and no temp file is left */
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM downloads", NULL), 0);
    assert_int_equal(count_files(v->cfg.tmp_dir), 0);
}

/* The "layer validated" log lines (the fetch machine's workers write them). */
static pthread_mutex_t validated_lock = PTHREAD_MUTEX_INITIALIZER;
static char validated[8192];

static void capture_validated(enum log_level level, const char *line, void *ud)
{
    (void)level;
    (void)ud;
    if (!strstr(line, "layer validated"))
        return;
    pthread_mutex_lock(&validated_lock);
    size_t n = strlen(validated);
    snprintf(validated + n, sizeof(validated) - n, "%s\n", line);
    pthread_mutex_unlock(&validated_lock);
}

/* A gzip and a zstd layer get their diff id from the scan while they download: the one
 * archive_diff_id() computes from the stored file, recorded, and validate does not
 * decompress the layer again (its log line says where the diff id came from). A plain tar's
 * is its digest. */
static void test_diff_id_while_downloading(void **state)
{
    struct env *v = *state;
    const struct {
        const char *rel;
        enum blob_format f;
        const char *from;
    } cases[] = {{"formats/gzip.tar", BLOB_TAR_GZIP, "diff_id_from=while-downloading"},
                 {"formats/zstd.tar", BLOB_TAR_ZSTD, "diff_id_from=while-downloading"},
                 {"layers/1.tar", BLOB_TAR, "diff_id_from=known"}};
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        validated[0] = '\0';
        log_set_hook(capture_validated, NULL);
        struct fetch_result r;
        assert_int_equal(fetch(v, cases[i].rel, &r, NULL), FSM_OK);
        log_set_hook(NULL, NULL);
        assert_int_equal(r.format, cases[i].f);
        assert_int_equal(r.n_layers, 1);
        char want[DIGEST_STR_LEN + 1], recorded[DIGEST_STR_LEN + 1];
        struct err e = {0};
        assert_int_equal(archive_diff_id(r.layers[0].path, cases[i].f, NULL, want, &e), 0);
        assert_string_equal(r.layers[0].diff_id, want);
        if (!tu_contains(validated, cases[i].from))
            fail_msg("%s: validate says '%s', not %s", cases[i].rel, validated, cases[i].from);
        if (cases[i].f == BLOB_TAR) {
            assert_string_equal(want, r.digest);
        } else {
            assert_string_not_equal(want, r.digest);
            assert_int_equal(oci_diff_id_get(v->db, r.digest, recorded), 1);
            assert_string_equal(recorded, want);
        }
        fetch_result_free(&r);
    }
}

static void test_archives_split(void **state)
{
    struct env *v = *state;
    _cleanup_free_ char *l1 = src_digest("layers/1.tar");
    _cleanup_free_ char *l2 = src_digest("layers/2.tar");
    const char *rels[] = {"formats/docker.tar", "formats/oci.tar"};
    const char *tags[] = {"demo:2", "demo:oci"};
    for (size_t i = 0; i < 2; i++) {
        struct fetch_result r;
        char *err = NULL;
        assert_int_equal(fetch(v, rels[i], &r, &err), FSM_OK);
        free(err);
        assert_int_equal(r.format, i == 0 ? BLOB_DOCKER_ARCHIVE : BLOB_OCI_LAYOUT);
        assert_string_equal(r.repo_tag, tags[i]);
        assert_int_equal(r.n_layers, 2);
        /* the members are the very bytes of layers 1 and 2, stored by digest */
        assert_string_equal(r.layers[0].digest, l1);
        assert_string_equal(r.layers[1].digest, l2);
        assert_non_null(r.layers[0].member);
        check_layer_blob(v, &r.layers[0]);
        check_layer_blob(v, &r.layers[1]);
        char loc[8192];
        snprintf(loc, sizeof(loc), "%s#%s", r.location, r.layers[1].member);
        assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_sources WHERE location = ?1",
                               loc), 1);
        fetch_result_free(&r);
        /* fetched again: handed off from check-exists, with the same layers */
        assert_int_equal(fetch(v, rels[i], &r, NULL), FSM_HANDOFF);
        assert_true(r.reused);
        assert_int_equal(r.n_layers, 2);
        assert_string_equal(r.layers[1].digest, l2);
        fetch_result_free(&r);
    }
    /* the archives + two shared layers */
    char sha[4096];
    snprintf(sha, sizeof(sha), "%s/sha256", v->cfg.blob_dir);
    assert_int_equal(count_files(sha), 4);
}

static void test_garbage_rejected(void **state)
{
    struct env *v = *state;
    const struct {
        const char *rel, *why;
    } cases[] = {{"garbage/empty.tar", "empty"},
                 {"garbage/error.tar", "XML"},
                 {"garbage/page.tar", "HTML"},
                 {"garbage/cut.tar", "runcated"},
                 {"garbage/png.tar", "PNG"}};
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *err = NULL;
        assert_int_equal(fetch(v, cases[i].rel, NULL, &err), FSM_ABORT);
        assert_int_equal(v->last_kind, ERR_KIND_REJECTED); /* the kind, not the words */
        if (!tu_contains(err, cases[i].why))
            fail_msg("%s: '%s' does not mention %s", cases[i].rel, err, cases[i].why);
        if (i < 3 || i == 4)
            assert_true(tu_contains(err, "not an image layer"));
        free(err);
    }
    /* nothing recorded, nothing left in the store */
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blobs", NULL), 0);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_sources", NULL), 0);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM downloads", NULL), 0);
    char sha[4096];
    snprintf(sha, sizeof(sha), "%s/sha256", v->cfg.blob_dir);
    assert_int_equal(count_files(sha), 0);
}

static void test_same_bytes_stored_once(void **state)
{
    struct env *v = *state;
    struct fetch_result a, b;
    assert_int_equal(fetch(v, "layers/1.tar", &a, NULL), FSM_OK);
    assert_int_equal(fetch(v, "layers/copy.tar", &b, NULL), FSM_OK);
    assert_string_equal(a.digest, b.digest);
    assert_string_equal(a.path, b.path);
    assert_false(b.reused); /* a different location: downloaded, then deduplicated */
    char sha[4096];
    snprintf(sha, sizeof(sha), "%s/sha256", v->cfg.blob_dir);
    assert_int_equal(count_files(sha), 1);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blobs", NULL), 1);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_sources WHERE digest = ?1",
                           a.digest), 2);
    fetch_result_free(&a);
    fetch_result_free(&b);
}

static void test_reality_checked(void **state)
{
    struct env *v = *state;
    struct fetch_result r;
    assert_int_equal(fetch(v, "layers/2.tar", &r, NULL), FSM_OK);
    fetch_result_free(&r);
    assert_int_equal(fetch(v, "layers/2.tar", &r, NULL), FSM_HANDOFF);
    assert_true(r.reused);
    /* the store file is damaged behind our back: check-exists notices, fetches again */
    assert_int_equal(tu_write_file(r.path, "garbage", 7), 0);
    char path[4096];
    snprintf(path, sizeof(path), "%s", r.path);
    fetch_result_free(&r);
    assert_int_equal(fetch(v, "layers/2.tar", &r, NULL), FSM_OK);
    assert_false(r.reused);
    _cleanup_free_ char *d = file_digest(path);
    assert_string_equal(d, r.digest);
    fetch_result_free(&r);
    /* the source changes (new ETag): fetched again, new digest recorded for the location */
    char src[4096];
    snprintf(src, sizeof(src), "%s/layers/2.tar", BLOBS);
    _cleanup_free_ char *orig = tu_read_file(src, NULL);
    size_t n = 0;
    _cleanup_free_ char *l1 = NULL;
    {
        char p1[4096];
        snprintf(p1, sizeof(p1), "%s/layers/1.tar", BLOBS);
        l1 = tu_read_file(p1, &n);
    }
    sleep_ms(20);
    assert_int_equal(tu_write_file(src, l1, n), 0);
    assert_int_equal(fetch(v, "layers/2.tar", &r, NULL), FSM_OK);
    _cleanup_free_ char *want = src_digest("layers/1.tar");
    assert_string_equal(r.digest, want);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_sources WHERE digest = ?1",
                           want), 1);
    fetch_result_free(&r);
    /* put it back for the other tests */
    char p2[4096];
    snprintf(p2, sizeof(p2), "python3 '%s/tests/s3/make_blobs.py' '%s'", tu_source_dir(), BLOBS);
    assert_int_equal(tu_sh(p2, NULL, NULL), 0);
    (void)orig;
}

/* Change 4 bytes in the middle of a stored file, in place (same size, same inode). */
static void tamper(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "printf XXXX | dd of='%s' bs=1 seek=700 conv=notrunc 2>/dev/null",
             path);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
}

/* The integrity rule (store/blobfile.h) where an archive's layers are reused: the split of
 * another archive holding the same layer, and check-exists of the archive itself. */
static void test_archive_layers_tampered(void **state)
{
    struct env *v = *state;
    _cleanup_free_ char *l1 = src_digest("layers/1.tar");
    _cleanup_free_ char *l2 = src_digest("layers/2.tar");
    struct fetch_result r;
    assert_int_equal(fetch(v, "formats/docker.tar", &r, NULL), FSM_OK);
    char p1[4096], p2[4096];
    snprintf(p1, sizeof(p1), "%s", r.layers[0].path);
    snprintf(p2, sizeof(p2), "%s", r.layers[1].path);
    fetch_result_free(&r);
    /* another archive with the same layer 2: its split must not keep the tampered file */
    tamper(p2);
    assert_int_equal(fetch(v, "formats/oci.tar", &r, NULL), FSM_OK);
    fetch_result_free(&r);
    _cleanup_free_ char *d2 = file_digest(p2);
    assert_string_equal(d2, l2);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_quarantine WHERE digest = ?1", l2), 1);
    /* the archive itself again: check-exists finds layer 1 changed, no handoff; the archive's
     * own blob is intact and has the file's identity, so it is not read again (reused, no
     * bytes downloaded), and validate splits layer 1 out of it again */
    tamper(p1);
    assert_int_equal(fetch(v, "formats/docker.tar", &r, NULL), FSM_OK);
    assert_true(r.reused);
    assert_int_equal(r.bytes_downloaded, 0);
    assert_int_equal(r.bytes_reused, r.size);
    fetch_result_free(&r);
    _cleanup_free_ char *d1 = file_digest(p1);
    assert_string_equal(d1, l1);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_quarantine WHERE digest = ?1", l1), 1);
    /* untouched now: handed off on the seals alone */
    assert_int_equal(fetch(v, "formats/docker.tar", &r, NULL), FSM_HANDOFF);
    fetch_result_free(&r);
}

/* Identity reuse over dir: (docs/sources.md): the same file through another folder (a hard
 * link: same device, inode, size, mtime) is the stored blob, with no read; a copy (another
 * inode) is read; the identity row names the digest. */
static void test_identity_reuse(void **state)
{
    struct env *v = *state;
    char a[4096], b[4096], c[4096];
    snprintf(a, sizeof(a), "%s/layers/1.tar", BLOBS);
    snprintf(b, sizeof(b), "%s/ident/linked/1.tar", BLOBS);
    snprintf(c, sizeof(c), "%s/ident/copied/1.tar", BLOBS);
    char cmd[16384];
    snprintf(cmd, sizeof(cmd),
             "rm -rf '%s/ident' && mkdir -p '%s/ident/linked' '%s/ident/copied' && ln '%s' '%s' "
             "&& cp '%s' '%s'",
             BLOBS, BLOBS, BLOBS, a, b, a, c);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    struct fetch_result r;
    assert_int_equal(fetch(v, "layers/1.tar", &r, NULL), FSM_OK);
    assert_false(r.reused);
    assert_int_equal(r.bytes_downloaded, r.size);
    assert_non_null(r.identity);
    assert_true(!strncmp(r.identity, "dir ", 4));
    fetch_result_free(&r);
    assert_int_equal(fetch(v, "ident/linked/1.tar", &r, NULL), FSM_HANDOFF);
    assert_true(r.reused);
    assert_int_equal(r.bytes_downloaded, 0);
    assert_int_equal(r.bytes_reused, r.size);
    assert_int_equal(r.n_layers, 1);
    _cleanup_free_ char *want = src_digest("layers/1.tar");
    assert_string_equal(r.digest, want);
    fetch_result_free(&r);
    /* both locations recorded, one identity */
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_sources WHERE digest = ?1", want), 2);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_identities WHERE digest = ?1", want),
                     1);
    assert_int_equal(fetch(v, "ident/copied/1.tar", &r, NULL), FSM_OK);
    assert_false(r.reused);
    assert_int_equal(r.bytes_downloaded, r.size);
    fetch_result_free(&r);
    assert_int_equal(q_int(v->db, "SELECT count(*) FROM blob_identities WHERE digest = ?1", want),
                     2);
}

static void test_response_parse_errors(void **state)
{
    (void)state;
    struct fetch_result r;
    struct err e = {0};
    assert_int_equal(fetch_response_parse("nope", 4, &r, &e), -EBADMSG);
    err_clear(&e);
    assert_int_equal(fetch_response_parse("{\"location\":\"x\"}", 16, &r, &e), -EBADMSG);
    err_clear(&e);
    const char *j = "{\"location\":\"x\",\"digest\":\"sha256:0000000000000000000000000000000000"
                    "000000000000000000000000000000\",\"path\":\"/p\",\"size\":3,\"format\":\"tar\","
                    "\"layers\":[{\"digest\":\"bad\"}]}";
    assert_int_equal(fetch_response_parse(j, strlen(j), &r, &e), -EBADMSG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_layer_formats, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_diff_id_while_downloading, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_archives_split, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_garbage_rejected, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_same_bytes_stored_once, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_reality_checked, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_archive_layers_tampered, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_identity_reuse, env_setup, env_teardown),
        cmocka_unit_test(test_response_parse_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
