/*
 * test_registry.c: the parts of the docker:// source that need no server (registry.h):
 * reference parsing and Docker Hub normalisation, locations, WWW-Authenticate challenges,
 * docker config.json credentials, the token cache, platforms and index selection, and
 * manifests and configs, hostile ones included. The protocol itself is tested against a
 * hostile registry (tests/hostile/sources.py, registry_* cases).
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

#include "source/registry.h"
#include "source/source.h"
#include "testutil.h"
#include "util/buf.h"
#include "util/cleanup.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"

static void parse_ok(const char *rest, const char *host, const char *api, const char *repo,
                     const char *tag, const char *digest, bool blob)
{
    struct registry_name n;
    struct err e = {0};
    int r = registry_name_parse(rest, &n, &e);
    if (r != 0)
        fail_msg("%s: %s", rest, e.msg);
    assert_string_equal(n.host, host);
    assert_string_equal(n.api_host, api);
    assert_string_equal(n.repo, repo);
    if (tag)
        assert_string_equal(n.tag, tag);
    else
        assert_null(n.tag);
    if (digest)
        assert_string_equal(n.digest, digest);
    else
        assert_null(n.digest);
    assert_int_equal(n.blob, blob);
    registry_name_free(&n);
}

static void test_name_parse(void **state)
{
    (void)state;
    parse_ok("127.0.0.1:5000/app", "127.0.0.1:5000", "127.0.0.1:5000", "app", NULL, NULL, false);
    parse_ok("127.0.0.1:5000/team/app:v1.2", "127.0.0.1:5000", "127.0.0.1:5000", "team/app", "v1.2",
             NULL, false);
    parse_ok("localhost/app@" D1, "localhost", "localhost", "app", NULL, D1, false);
    parse_ok("ghcr.io/o/app:1@" D1, "ghcr.io", "ghcr.io", "o/app", "1", D1, false);
    parse_ok("r.example:443/a/b/blobs/" D2, "r.example:443", "r.example:443", "a/b", NULL, D2,
             true);
    /* Docker Hub: bare names, official images under library/. */
    parse_ok("alpine", "docker.io", "registry-1.docker.io", "library/alpine", NULL, NULL, false);
    parse_ok("alpine@" D1, "docker.io", "registry-1.docker.io", "library/alpine", NULL, D1, false);
    parse_ok("alpine:3.19", "docker.io", "registry-1.docker.io", "library/alpine", "3.19", NULL,
             false);
    parse_ok("user/app:1", "docker.io", "registry-1.docker.io", "user/app", "1", NULL, false);
    parse_ok("docker.io/library/x", "docker.io", "registry-1.docker.io", "library/x", NULL, NULL,
             false);
    parse_ok("h.io/a__b/c-d/e.f", "h.io", "h.io", "a__b/c-d/e.f", NULL, NULL, false);
    /* Only a full digest after /blobs/ names a blob; anything else is a repository and tag. */
    parse_ok("h.io/a/blobs/sha256:zz", "h.io", "h.io", "a/blobs/sha256", "zz", NULL, false);

    const char *bad[] = {
        "",
        "h.io/",
        "h.io/App",          /* upper case */
        "h.io/a//b",         /* empty component */
        "h.io/-a",           /* leading separator */
        "h.io/a_",           /* trailing separator */
        "h.io/a___b",        /* three underscores */
        "h.io/a:",           /* empty tag */
        "h.io/a:-x",         /* tag starts with '-' */
        "h.io/a@sha256:abc", /* short digest */
        "h.io/a@sha512:"
        "11",             /* another algorithm */
        "h.io/a@" D1 "x", /* trailing junk */
        "h.io/a b",       /* space */
        "h.io/a\n",       /* control */
        "h.io/a?x=1",     /* query */
        "h.io/a#f",       /* fragment */
        "user:pw@h.io/a", /* credentials */
        "h.io:0/a",       /* port 0 */
        "h.io:99999/a",   /* port out of range */
        "h.io:/a",        /* empty port */
        "h_x.io/a",       /* '_' in a host */
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct registry_name n;
        struct err e = {0};
        int r = registry_name_parse(bad[i], &n, &e);
        if (r != -EINVAL)
            fail_msg("'%s' accepted (%d)", bad[i], r);
        assert_true(e.msg[0] != '\0');
        registry_name_free(&n);
    }
    /* Credentials in a reference are refused without being echoed. */
    struct err ce = {0};
    struct registry_name cn;
    assert_int_equal(registry_name_parse("user:hunter2@h.io/a b", &cn, &ce), -EINVAL);
    assert_null(strstr(ce.msg, "hunter2"));
    assert_non_null(strstr(ce.msg, "THINIMG_REGISTRY_AUTH"));
    registry_name_free(&cn);
    err_clear(&ce);
    assert_int_equal(registry_name_parse("user:hunter2@h.io", &cn, &ce), -EINVAL);
    assert_null(strstr(ce.msg, "hunter2"));
    registry_name_free(&cn);
    /* Length limits. */
    char longtag[REGISTRY_TAG_MAX + 16];
    snprintf(longtag, sizeof(longtag), "h.io/a:");
    memset(longtag + 7, 't', REGISTRY_TAG_MAX + 1);
    longtag[7 + REGISTRY_TAG_MAX + 1] = '\0';
    struct registry_name n;
    assert_int_equal(registry_name_parse(longtag, &n, NULL), -EINVAL);
    registry_name_free(&n);
    longtag[7 + REGISTRY_TAG_MAX] = '\0';
    assert_int_equal(registry_name_parse(longtag, &n, NULL), 0);
    registry_name_free(&n);
}

/* Opening a docker:// location: its key, root and locations (no network). */
static void test_open_locations(void **state)
{
    (void)state;
    struct {
        const char *loc, *key, *root, *back, *name;
    } cases[] = {
        {"docker://h.io/a/b", "", "docker://h.io/a/b/", "docker://h.io/a/b", ""},
        {"docker://h.io/a:v1", "manifests/v1", "docker://h.io/a/", "docker://h.io/a:v1", "v1"},
        {"docker://h.io/a@" D1, "manifests/" D1, "docker://h.io/a/", "docker://h.io/a@" D1, D1},
        {"docker://h.io/a/blobs/" D2, "blobs/" D2, "docker://h.io/a/", "docker://h.io/a/blobs/" D2,
         "blobs/" D2},
        {"docker://alpine", "", "docker://docker.io/library/alpine/",
         "docker://docker.io/library/alpine", ""},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct source *s = NULL;
        char *key = NULL;
        struct err e = {0};
        int r = source_open(cases[i].loc, NULL, &s, &key, &e);
        if (r != 0)
            fail_msg("%s: %s", cases[i].loc, e.msg);
        assert_int_equal(source_kind(s), SOURCE_REGISTRY);
        assert_string_equal(key, cases[i].key);
        assert_string_equal(source_root(s), cases[i].root);
        char *back = source_location(s, key);
        assert_string_equal(back, cases[i].back);
        /* A tag is shown by its name (ls, the monitor's source browser), a blob by its key. */
        assert_string_equal(source_key_name(s, key), cases[i].name);
        free(back);
        free(key);
        source_free(s);
    }
    assert_true(source_is_location("docker://h.io/a"));
    /* A bad platform is an error of the command line. */
    struct source_options o = {.platform = "linux"};
    struct source *s = NULL;
    struct err e = {0};
    assert_int_equal(source_open("docker://h.io/a", &o, &s, NULL, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "OS/ARCH"));
}

static void test_challenge_parse(void **state)
{
    (void)state;
    struct registry_challenge c;
    assert_int_equal(
        registry_challenge_parse("Bearer realm=\"https://auth.docker.io/token\",service=\"registry."
                                 "docker.io\",scope=\"repository:library/alpine:pull\"",
                                 &c),
        0);
    assert_int_equal(c.scheme, REGISTRY_AUTH_BEARER);
    assert_string_equal(c.realm, "https://auth.docker.io/token");
    assert_string_equal(c.service, "registry.docker.io");
    assert_string_equal(c.scope, "repository:library/alpine:pull");
    registry_challenge_free(&c);
    /* Case, spaces, token values, escapes, unknown parameters, the first of duplicates. */
    assert_int_equal(registry_challenge_parse("  bearer  realm=https://t.example/tok , "
                                              "error=\"insufficient_scope\", "
                                              "scope=\"a\\\"b\", scope=\"second\"",
                                              &c),
                     0);
    assert_string_equal(c.realm, "https://t.example/tok");
    assert_null(c.service);
    assert_string_equal(c.scope, "a\"b");
    registry_challenge_free(&c);
    assert_int_equal(registry_challenge_parse("Basic realm=\"Registry Realm\"", &c), 0);
    assert_int_equal(c.scheme, REGISTRY_AUTH_BASIC);
    registry_challenge_free(&c);
    const char *bad[] = {
        NULL,
        "",
        "Digest realm=\"x\"",
        "Bearer",                              /* no realm */
        "Bearer service=\"s\"",                /* no realm */
        "Bearer realm=\"file:///etc/passwd\"", /* not http(s) */
        "Bearer realm=\"https://x",            /* unterminated */
        "Bearerrealm=\"https://x\"",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        if (registry_challenge_parse(bad[i], &c) != -EBADMSG)
            fail_msg("challenge '%s' accepted", bad[i] ? bad[i] : "(null)");
        registry_challenge_free(&c);
    }
    /* A long hostile header: no overrun, one answer. */
    _cleanup_buf_ struct buf b = BUF_INIT;
    buf_puts(&b, "Bearer realm=\"https://x/t\"");
    for (int i = 0; i < 5000; i++)
        buf_puts(&b, ",k=\"\\\\\\\"\"");
    assert_int_equal(registry_challenge_parse(b.data, &c), 0);
    assert_string_equal(c.realm, "https://x/t");
    registry_challenge_free(&c);
}

static void test_docker_config(void **state)
{
    (void)state;
    /* alice:pw, bob:s:ecret (a ':' in the password), and Docker Hub's legacy key. */
    const char *cfg = "{\"auths\": {"
                      "\"https://r.example:5000/v1/\": {\"auth\": \"YWxpY2U6cHc=\"},"
                      "\"other.io\": {\"auth\": \"Ym9iOnM6ZWNyZXQ=\"},"
                      "\"https://index.docker.io/v1/\": {\"auth\": \"aHViOmh1Yg==\"},"
                      "\"plain.io\": {\"username\": \"u\", \"password\": \"p\"},"
                      "\"bad.io\": {\"auth\": \"!!!!\"},"
                      "\"nocolon.io\": {\"auth\": \"YWJj\"}},"
                      "\"credsStore\": \"desktop\"}";
    struct {
        const char *host, *want;
        int r;
    } cases[] = {
        {"r.example:5000", "alice:pw", 1},
        {"other.io", "bob:s:ecret", 1},
        {"docker.io", "hub:hub", 1},
        {"registry-1.docker.io", "hub:hub", 1},
        {"plain.io", "u:p", 1},
        {"r.example", NULL, 0},
        {"nowhere.io", NULL, 0},
        {"bad.io", NULL, -EBADMSG},
        {"nocolon.io", NULL, -EBADMSG},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *up = NULL;
        struct err e = {0};
        int r = registry_docker_config_auth(cfg, strlen(cfg), cases[i].host, &up, &e);
        if (r != cases[i].r)
            fail_msg("%s: %d, expected %d (%s)", cases[i].host, r, cases[i].r, e.msg);
        if (cases[i].want)
            assert_string_equal(up, cases[i].want);
        else
            assert_null(up);
        /* A message names the entry, never the secret. */
        assert_null(strstr(e.msg, "!!!!"));
        registry_secret_free(up);
    }
    char *up = NULL;
    assert_int_equal(registry_docker_config_auth("[1,2]", 5, "x", &up, NULL), -EBADMSG);
    assert_int_equal(registry_docker_config_auth("{\"auths\":", 9, "x", &up, NULL), -EBADMSG);
    assert_int_equal(registry_docker_config_auth("{\"auths\": 7}", 12, "x", &up, NULL), 0);

    /* The environment wins over the file. */
    setenv("THINIMG_REGISTRY_AUTH", "env:pw", 1);
    assert_int_equal(registry_credentials("r.example:5000", &up, NULL), 1);
    assert_string_equal(up, "env:pw");
    registry_secret_free(up);
    setenv("THINIMG_REGISTRY_AUTH", "nocolon", 1);
    struct err e = {0};
    assert_int_equal(registry_credentials("r.example:5000", &up, &e), -EINVAL);
    assert_null(strstr(e.msg, "nocolon"));
    unsetenv("THINIMG_REGISTRY_AUTH");
    setenv("DOCKER_CONFIG", "/nonexistent-thinimg-test", 1);
    assert_int_equal(registry_credentials("r.example:5000", &up, NULL), 0);
    unsetenv("DOCKER_CONFIG");
}

/* A fake docker-credential-NAME in dir: a shell script. */
static void write_helper(const char *dir, const char *name, const char *body)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/docker-credential-%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    assert_int_equal(chmod(path, 0755), 0);
}

static void test_cred_helpers(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("credhelper");
    /* The server name arrives on stdin (no newline), as docker sends it. */
    write_helper(dir, "fake",
                 "read -r s || true\n"
                 "case \"$1:$s\" in\n"
                 "get:r.example:5000) echo '{\"ServerURL\":\"r.example:5000\",\"Username\":"
                 "\"helper-user\",\"Secret\":\"helper-s3cret\"}' ;;\n"
                 "get:https://index.docker.io/v1/) echo '{\"Username\":\"hub\",\"Secret\":"
                 "\"hub-s3cret\"}' ;;\n"
                 "*) echo 'credentials not found in native keychain'; exit 1 ;;\n"
                 "esac");
    write_helper(dir, "broken", "echo helper-s3cret >&2; exit 3");
    write_helper(dir, "idtoken", "echo '{\"Username\":\"<token>\",\"Secret\":\"refresh-s3cret\"}'");
    char *path = NULL;
    assert_true(asprintf(&path, "%s:%s", dir, getenv("PATH")) > 0);
    char *old_path = strdup(getenv("PATH"));
    setenv("PATH", path, 1);

    char *up = NULL;
    struct err e = {0};
    assert_int_equal(registry_cred_helper_get("fake", "r.example:5000", &up, &e), 1);
    assert_string_equal(up, "helper-user:helper-s3cret");
    registry_secret_free(up);
    assert_int_equal(registry_cred_helper_get("fake", "docker.io", &up, &e), 1);
    assert_string_equal(up, "hub:hub-s3cret");
    registry_secret_free(up);
    up = NULL;
    assert_int_equal(registry_cred_helper_get("fake", "nowhere.io", &up, &e), 0);
    assert_null(up);
    struct {
        const char *helper, *phrase;
    } bad[] = {
        {"broken", "failed with exit status 3"},
        {"idtoken", "identity token"},
        {"missing", "docker-credential-missing is not in PATH"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        e = (struct err){0};
        assert_int_equal(registry_cred_helper_get(bad[i].helper, "r.example:5000", &up, &e),
                         -EACCES);
        if (!strstr(e.msg, bad[i].phrase))
            fail_msg("%s: '%s' lacks '%s'", bad[i].helper, e.msg, bad[i].phrase);
        assert_null(strstr(e.msg, "s3cret"));
        assert_null(up);
    }

    /* Which helper a config names: credHelpers for the host, else credsStore. */
    const char *cfg =
        "{\"credHelpers\": {\"r.example:5000\": \"fake\"}, \"credsStore\": \"store\"}";
    char *h = NULL;
    assert_int_equal(registry_docker_config_helper(cfg, strlen(cfg), "r.example:5000", &h, &e), 1);
    assert_string_equal(h, "fake");
    free(h);
    assert_int_equal(registry_docker_config_helper(cfg, strlen(cfg), "other.io", &h, &e), 1);
    assert_string_equal(h, "store");
    free(h);
    assert_int_equal(registry_docker_config_helper("{}", 2, "other.io", &h, &e), 0);
    const char *evil[] = {"{\"credsStore\": \"../../bin/sh\"}", "{\"credsStore\": \"-x\"}",
                          "{\"credsStore\": \"a b\"}"};
    for (size_t i = 0; i < ARRAY_SIZE(evil); i++) {
        e = (struct err){0};
        assert_int_equal(registry_docker_config_helper(evil[i], strlen(evil[i]), "x", &h, &e),
                         -EINVAL);
    }

    /* registry_credentials: the helper for its host, the auths entry for the others, and a
     * store with nothing for a server leaves the auths entry. */
    char cfgpath[512];
    snprintf(cfgpath, sizeof(cfgpath), "%s/config.json", dir);
    const char *cfgs[] = {
        "{\"credHelpers\": {\"r.example:5000\": \"fake\"},"
        " \"auths\": {\"nowhere.io\": {\"auth\": \"YWxpY2U6cHc=\"}}}",
        "{\"credsStore\": \"fake\", \"auths\": {\"nowhere.io\": {\"auth\": \"YWxpY2U6cHc=\"}}}",
    };
    setenv("DOCKER_CONFIG", dir, 1);
    for (size_t i = 0; i < ARRAY_SIZE(cfgs); i++) {
        FILE *f = fopen(cfgpath, "w");
        assert_non_null(f);
        fputs(cfgs[i], f);
        fclose(f);
        assert_int_equal(registry_credentials("r.example:5000", &up, &e), 1);
        assert_string_equal(up, "helper-user:helper-s3cret");
        registry_secret_free(up);
        assert_int_equal(registry_credentials("nowhere.io", &up, &e), 1);
        assert_string_equal(up, "alice:pw");
        registry_secret_free(up);
    }
    unsetenv("DOCKER_CONFIG");
    setenv("PATH", old_path, 1);
    free(old_path);
    free(path);
    tu_rmrf(dir);
    free(dir);
}

static void test_tokens(void **state)
{
    (void)state;
    registry_token_forget();
    char *t = NULL;
    int64_t ttl = 0;
    const char *body = "{\"token\": \"abc.def\", \"expires_in\": 300}";
    assert_int_equal(registry_token_parse(body, strlen(body), &t, &ttl, NULL), 0);
    assert_string_equal(t, "abc.def");
    assert_int_equal(ttl, 300);
    assert_int_equal(registry_token_put("https://a/t", "svc", "repository:x:pull", t, ttl), 0);
    free(t);
    body = "{\"access_token\": \"zz\"}";
    assert_int_equal(registry_token_parse(body, strlen(body), &t, &ttl, NULL), 0);
    assert_string_equal(t, "zz");
    assert_int_equal(ttl, REGISTRY_TOKEN_DEFAULT_TTL_S);
    free(t);
    const char *bad[] = {"",
                         "[]",
                         "{}",
                         "{\"token\": \"\"}",
                         "{\"token\": 7}",
                         "{\"token\": \"a\\r\\nX-Evil: 1\"}",
                         "{\"token\": \"a b\"}"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        if (registry_token_parse(bad[i], strlen(bad[i]), &t, &ttl, NULL) != -EBADMSG)
            fail_msg("token response '%s' accepted", bad[i]);
        assert_null(t);
    }
    /* Cached per (realm, service, scope). */
    assert_int_equal(registry_token_get("https://a/t", "svc", "repository:x:pull", &t), 1);
    assert_string_equal(t, "abc.def");
    free(t);
    assert_int_equal(registry_token_get("https://a/t", "svc", "repository:y:pull", &t), 0);
    assert_int_equal(registry_token_get("https://a/t", NULL, "repository:x:pull", &t), 0);
    /* Replaced in place; a token too short-lived to reuse is not cached. */
    assert_int_equal(registry_token_put("https://a/t", "svc", "repository:x:pull", "new", 300), 0);
    assert_int_equal(registry_token_get("https://a/t", "svc", "repository:x:pull", &t), 1);
    assert_string_equal(t, "new");
    free(t);
    assert_int_equal(
        registry_token_put("https://a/t", "svc", "s2", "short", REGISTRY_TOKEN_EXPIRY_MARGIN_S), 0);
    assert_int_equal(registry_token_get("https://a/t", "svc", "s2", &t), 0);
    registry_token_forget();
    assert_int_equal(registry_token_get("https://a/t", "svc", "repository:x:pull", &t), 0);
}

static void test_platforms(void **state)
{
    (void)state;
    struct registry_platform p;
    assert_int_equal(registry_platform_parse("linux/arm/v7", &p, NULL), 0);
    assert_string_equal(p.os, "linux");
    assert_string_equal(p.arch, "arm");
    assert_string_equal(p.variant, "v7");
    assert_int_equal(registry_platform_parse("linux/amd64", &p, NULL), 0);
    assert_string_equal(p.variant, "");
    const char *bad[] = {"",
                         "linux",
                         "linux/",
                         "/amd64",
                         "linux/amd64/",
                         "linux/amd64/v1/x",
                         "Linux/amd64",
                         "linux/amd 64",
                         "linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (registry_platform_parse(bad[i], &p, NULL) != -EINVAL)
            fail_msg("platform '%s' accepted", bad[i]);
    registry_platform_host(&p);
    assert_string_equal(p.os, "linux");
    assert_true(p.arch[0] != '\0');
}

static const char *index_json =
    "{\"schemaVersion\": 2, \"mediaType\": \"" MT_OCI_INDEX "\", \"manifests\": ["
    "{\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D1 "\", \"size\": 10,"
    " \"platform\": {\"os\": \"linux\", \"architecture\": \"arm\", \"variant\": \"v6\"}},"
    "{\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D2 "\", \"size\": 10,"
    " \"platform\": {\"os\": \"linux\", \"architecture\": \"arm\", \"variant\": \"v7\"}},"
    "{\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D3 "\", \"size\": 10,"
    " \"platform\": {\"os\": \"linux\", \"architecture\": \"arm64\", \"variant\": \"v8\"}},"
    "{\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D1 "\", \"size\": 10,"
    " \"platform\": {\"os\": \"unknown\", \"architecture\": \"unknown\"}},"
    "{\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D2 "\", \"size\": 10}"
    "]}";

static size_t select_for(const struct registry_manifest *m, const char *platform, int *r,
                         struct err *e)
{
    struct registry_platform p;
    assert_int_equal(registry_platform_parse(platform, &p, NULL), 0);
    size_t i = SIZE_MAX;
    *r = registry_platform_select(m, &p, &i, e);
    return i;
}

static void test_platform_select(void **state)
{
    (void)state;
    struct registry_manifest m;
    struct err e = {0};
    assert_int_equal(registry_manifest_parse(index_json, strlen(index_json), NULL, &m, &e), 0);
    assert_true(m.is_index);
    assert_int_equal(m.n_entries, 5);
    int r;
    assert_int_equal(select_for(&m, "linux/arm/v6", &r, NULL), 0);
    assert_int_equal(select_for(&m, "linux/arm/v7", &r, NULL), 1);
    assert_int_equal(select_for(&m, "linux/arm", &r, NULL), 1);   /* arm's usual: v7 */
    assert_int_equal(select_for(&m, "linux/arm64", &r, NULL), 2); /* v8 = none */
    assert_int_equal(select_for(&m, "linux/arm64/v8", &r, NULL), 2);
    select_for(&m, "linux/amd64", &r, &e);
    assert_int_equal(r, -ENOENT);
    assert_non_null(strstr(e.msg, "no manifest for platform linux/amd64"));
    assert_non_null(strstr(e.msg, "linux/arm/v6, linux/arm/v7, linux/arm64/v8)"));
    err_clear(&e);
    select_for(&m, "unknown/unknown", &r, &e); /* attestations are never images */
    assert_int_equal(r, -ENOENT);
    select_for(&m, "linux/arm/v5", &r, NULL);
    assert_int_equal(r, -ENOENT);
    registry_manifest_free(&m);
}

#define MANIFEST_HEAD "{\"schemaVersion\": 2, \"mediaType\": \"" MT_OCI_MANIFEST "\", "
#define CONFIG_OK                                                                                  \
    "\"config\": {\"mediaType\": \"application/vnd.oci.image.config.v1+json\", \"digest\": "       \
    "\"" D1 "\", \"size\": 5}, "
#define LAYER(mt, d) "{\"mediaType\": \"" mt "\", \"digest\": \"" d "\", \"size\": 100}"

static int parse_str(const char *s, const char *ct, struct registry_manifest *m, struct err *e)
{
    return registry_manifest_parse(s, strlen(s), ct, m, e);
}

static void test_manifest_parse(void **state)
{
    (void)state;
    struct registry_manifest m;
    struct err e = {0};
    const char *good = MANIFEST_HEAD CONFIG_OK
        "\"layers\": [" LAYER("application/vnd.oci.image.layer.v1.tar+gzip", D2) ", " LAYER(
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            D3) ", " LAYER("application/vnd.oci.image.layer.v1.tar+zstd", D2) "]}";
    assert_int_equal(parse_str(good, MT_OCI_MANIFEST "; charset=utf-8", &m, &e), 0);
    assert_false(m.is_index);
    assert_int_equal(m.n_entries, 3);
    assert_string_equal(m.entries[0].digest, D2);
    assert_string_equal(m.entries[1].digest, D3);
    assert_int_equal(m.entries[0].size, 100);
    assert_string_equal(m.config.digest, D1);
    assert_false(m.entries[0].foreign);
    registry_manifest_free(&m);
    /* No mediaType in the body: the response's type, else the shape. */
    const char *bare = "{\"schemaVersion\": 2, " CONFIG_OK
                       "\"layers\": [" LAYER("application/vnd.oci.image.layer.v1.tar", D2) "]}";
    assert_int_equal(parse_str(bare, "application/json", &m, &e), 0);
    assert_false(m.is_index);
    registry_manifest_free(&m);
    /* Foreign layers: marked (refused at resolution unless allowed). */
    const char *foreign = MANIFEST_HEAD CONFIG_OK
        "\"layers\": [" LAYER("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                              D2) ", {\"mediaType\": \"application/vnd.oci.image.layer.v1.tar\", "
                                  "\"digest\": \"" D3 "\", \"size\": 1, \"urls\": "
                                  "[\"https://x/y\"]}]}";
    assert_int_equal(parse_str(foreign, NULL, &m, &e), 0);
    assert_true(m.entries[0].foreign);
    assert_true(m.entries[1].foreign);
    registry_manifest_free(&m);

    struct {
        const char *body, *ct;
        int r;
        const char *phrase;
    } bad[] = {
        {"", NULL, -EBADMSG, "not a JSON object"},
        {"[]", NULL, -EBADMSG, "not a JSON object"},
        {"{\"schemaVersion\": 1, \"fsLayers\": []}", NULL, -ENOTSUP, "schema 1"},
        {"{}", MT_DOCKER_SCHEMA1S, -ENOTSUP, "schema 1"},
        {"{\"schemaVersion\": 3}", NULL, -EBADMSG, "schemaVersion"},
        {"{\"schemaVersion\": \"2\"}", NULL, -EBADMSG, "schemaVersion"},
        {MANIFEST_HEAD CONFIG_OK "\"layers\": []}", NULL, -EBADMSG, "no layers"},
        {MANIFEST_HEAD CONFIG_OK "\"layers\": {}}", NULL, -EBADMSG, "no layers array"},
        {MANIFEST_HEAD "\"layers\": [" LAYER("application/vnd.oci.image.layer.v1.tar", D2) "]}",
         NULL, -EBADMSG, "config"},
        {MANIFEST_HEAD CONFIG_OK "\"layers\": [{\"mediaType\": \"application/vnd.oci.image."
                                 "layer.v1.tar\", \"digest\": \"sha256:12\", \"size\": 1}]}",
         NULL, -EBADMSG, "not sha256"},
        {MANIFEST_HEAD CONFIG_OK "\"layers\": [{\"mediaType\": \"application/vnd.oci.image."
                                 "layer.v1.tar\", \"digest\": \"" D2 "\", \"size\": -1}]}",
         NULL, -EBADMSG, "negative size"},
        {MANIFEST_HEAD CONFIG_OK "\"layers\": [{\"mediaType\": \"application/vnd.oci.image."
                                 "layer.v1.tar\", \"digest\": \"" D2 "\"}]}",
         NULL, -EBADMSG, "lacks"},
        {MANIFEST_HEAD CONFIG_OK "\"layers\": [" LAYER("application/x-helm-chart", D2) "]}", NULL,
         -ENOTSUP, "not an image layer"},
        {MANIFEST_HEAD "\"config\": {\"mediaType\": \"application/vnd.cncf.helm.config.v1+json\", "
                       "\"digest\": \"" D1 "\", \"size\": 5}, "
                       "\"layers\": [" LAYER("application/vnd.oci.image.layer.v1.tar", D2) "]}",
         NULL, -ENOTSUP, "not a container image"},
        {"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.example+json\"}", NULL, -ENOTSUP,
         "not an image manifest"},
        {MANIFEST_HEAD CONFIG_OK "\"layers\": []}", MT_OCI_INDEX, -EBADMSG, "the registry says"},
        {"{\"schemaVersion\": 2, \"schemaVersion\": 2}", NULL, -EBADMSG, "JSON"},
        {"{\"schemaVersion\": 2, \"mediaType\": \"" MT_OCI_INDEX "\"}", NULL, -EBADMSG,
         "no manifests array"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        err_clear(&e);
        int r = parse_str(bad[i].body, bad[i].ct, &m, &e);
        if (r != bad[i].r || !strstr(e.msg, bad[i].phrase))
            fail_msg("case %zu: %d '%s', expected %d '%s'", i, r, e.msg, bad[i].r, bad[i].phrase);
        assert_null(m.entries);
    }
}

/* Deep, wide and large hostile manifests: bounded and refused with the limit named. */
static void test_manifest_limits(void **state)
{
    (void)state;
    struct registry_manifest m;
    struct err e = {0};
    _cleanup_buf_ struct buf b = BUF_INIT;
    buf_puts(&b, MANIFEST_HEAD CONFIG_OK "\"layers\": [");
    for (unsigned i = 0; i <= source_max_layers(); i++)
        buf_printf(&b, "%s" LAYER("application/vnd.oci.image.layer.v1.tar", D2), i ? "," : "");
    buf_puts(&b, "]}");
    assert_int_equal(registry_manifest_parse(b.data, b.len, NULL, &m, &e), -EFBIG);
    assert_non_null(strstr(e.msg, "THINIMG_SOURCE_MAX_LAYERS"));
    buf_reset(&b);
    buf_puts(&b, "{\"schemaVersion\": 2, \"manifests\": [");
    for (unsigned i = 0; i <= REGISTRY_INDEX_MAX_MANIFESTS; i++)
        buf_printf(&b, "%s" LAYER(MT_OCI_MANIFEST, D2), i ? "," : "");
    buf_puts(&b, "]}");
    err_clear(&e);
    assert_int_equal(registry_manifest_parse(b.data, b.len, NULL, &m, &e), -EFBIG);
    /* Over the size limit: refused before parsing. */
    size_t big = REGISTRY_MANIFEST_MAX + 1;
    char *p = malloc(big);
    assert_non_null(p);
    memset(p, ' ', big);
    err_clear(&e);
    assert_int_equal(registry_manifest_parse(p, big, NULL, &m, &e), -EFBIG);
    free(p);
    /* Nesting deep enough to hurt a recursive parser: refused by jansson's own depth limit. */
    buf_reset(&b);
    for (int i = 0; i < 100000; i++)
        buf_puts(&b, "[");
    err_clear(&e);
    assert_int_equal(registry_manifest_parse(b.data, b.len, NULL, &m, &e), -EBADMSG);
}

static void test_config_diff_ids(void **state)
{
    (void)state;
    char **ids = NULL;
    size_t n = 0;
    const char *ok = "{\"rootfs\": {\"type\": \"layers\", \"diff_ids\": [\"" D1 "\", \"" D2
                     "\"]}, \"config\": {\"Env\": [\"A=1\"]}}";
    assert_int_equal(registry_config_diff_ids(ok, strlen(ok), &ids, &n, NULL), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ids[1], D2);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    const char *bad[] = {"{}",
                         "{\"rootfs\": {}}",
                         "{\"rootfs\": {\"diff_ids\": [7]}}",
                         "{\"rootfs\": {\"diff_ids\": [\"" D1 "\", \"sha256:x\"]}}",
                         "[]",
                         ""};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct err e = {0};
        if (registry_config_diff_ids(bad[i], strlen(bad[i]), &ids, &n, &e) != -EBADMSG)
            fail_msg("config '%s' accepted", bad[i]);
        assert_null(ids);
        assert_int_equal(n, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_parse),      cmocka_unit_test(test_open_locations),
        cmocka_unit_test(test_challenge_parse), cmocka_unit_test(test_docker_config),
        cmocka_unit_test(test_cred_helpers),    cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_platforms),       cmocka_unit_test(test_platform_select),
        cmocka_unit_test(test_manifest_parse),  cmocka_unit_test(test_manifest_limits),
        cmocka_unit_test(test_config_diff_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
