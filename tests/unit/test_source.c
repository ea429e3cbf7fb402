/*
 * test_source.c: the parts of src/source/ that need no server: key validation, layer names,
 * SigV4 against AWS's published examples, the S3 XML parsers, credentials, and the dir:
 * source with references resolved over it (numeric order, gaps, escapes refused).
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
#include <unistd.h>

#include "source/httpc.h"
#include "source/ref.h"
#include "source/s3.h"
#include "source/s3_xml.h"
#include "source/source.h"
#include "testutil.h"
#include "util/buf.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/timeutil.h"

static void test_key_check(void **state)
{
    (void)state;
    struct err e = {0};
    assert_int_equal(source_key_check("images/golang/3.tar", false, &e), 0);
    assert_int_equal(source_key_check("a..b/c", false, &e), 0);
    assert_int_equal(source_key_check("images/", true, &e), 0);
    assert_int_equal(source_key_check("", true, &e), 0);
    const char *bad[] = {"", "../x", "a/../b", "a/..", "./a", "a/./b", "/abs", "a//b",
                         "a\nb", "a\tb", "a\x7f", "dir/"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        err_clear(&e);
        assert_int_equal(source_key_check(bad[i], false, &e), -EILSEQ);
        assert_true(e.msg[0] != '\0');
    }
    char longkey[SOURCE_KEY_MAX + 2];
    memset(longkey, 'a', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(source_key_check(longkey, false, &e), -EILSEQ);
    longkey[SOURCE_KEY_MAX] = '\0';
    assert_int_equal(source_key_check(longkey, false, NULL), 0);
}

static void test_layer_number(void **state)
{
    (void)state;
    unsigned n = 0;
    assert_int_equal(ref_layer_number("1.tar", &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ref_layer_number("10.tar", &n), 0);
    assert_int_equal(n, 10);
    assert_int_equal(ref_layer_number("256.tar", &n), 0);
    /* past the layer limit still a layer number: the image is refused whole, not cut */
    assert_int_equal(ref_layer_number("257.tar", &n), 0);
    assert_int_equal(n, 257);
    assert_int_equal(ref_layer_number("999999999.tar", &n), 0);
    assert_int_equal(ref_layer_number("1000000000.tar", &n), -ERANGE);
    assert_int_equal(ref_layer_number("0.tar", &n), -EDOM);
    assert_int_equal(ref_layer_number("01.tar", &n), -EDOM);
    assert_int_equal(ref_layer_number("latest.tar", &n), -EINVAL);
    assert_int_equal(ref_layer_number("1.tar.gz", &n), -EINVAL);
    assert_int_equal(ref_layer_number(".tar", &n), -EINVAL);
    assert_int_equal(ref_layer_number("-1.tar", &n), -EINVAL);
    assert_int_equal(ref_layer_number("99999999999999999999.tar", &n), -ERANGE);
}

/* The examples of AWS's "Signature Calculations for the Authorization Header" page. */
static void test_sigv4_vectors(void **state)
{
    (void)state;
    struct s3_creds c = {.access_key = "AKIAIOSFODNN7EXAMPLE",
                         .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"};
    char out[512];
    struct s3_sign_header get[] = {
        {"host", "examplebucket.s3.amazonaws.com"},
        {"range", "bytes=0-9"},
        {"x-amz-content-sha256", S3_EMPTY_PAYLOAD_SHA256},
        {"x-amz-date", "20130524T000000Z"},
    };
    assert_int_equal(s3_sigv4_authorization(&c, "us-east-1", "GET", "/test.txt", "", get, 4,
                                            S3_EMPTY_PAYLOAD_SHA256, "20130524T000000Z", out,
                                            sizeof(out)),
                     0);
    assert_string_equal(out, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/"
                             "us-east-1/s3/aws4_request,SignedHeaders=host;range;"
                             "x-amz-content-sha256;x-amz-date,Signature="
                             "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    struct s3_sign_header list[] = {
        {"host", "examplebucket.s3.amazonaws.com"},
        {"x-amz-content-sha256", S3_EMPTY_PAYLOAD_SHA256},
        {"x-amz-date", "20130524T000000Z"},
    };
    assert_int_equal(s3_sigv4_authorization(&c, "us-east-1", "GET", "/", "max-keys=2&prefix=J",
                                            list, 3, S3_EMPTY_PAYLOAD_SHA256,
                                            "20130524T000000Z", out, sizeof(out)),
                     0);
    assert_true(tu_contains(
        out, "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"));
    /* too small a buffer */
    assert_int_equal(s3_sigv4_authorization(&c, "us-east-1", "GET", "/", "", list, 3,
                                            S3_EMPTY_PAYLOAD_SHA256, "20130524T000000Z", out, 10),
                     -ENOSPC);
}

static void test_uri_encoding(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(httpc_uri_encode(&b, "images/a b+c~d_e.f%", true), 0);
    assert_string_equal(b.data, "images/a%20b%2Bc~d_e.f%25");
    buf_reset(&b);
    assert_int_equal(httpc_uri_encode(&b, "a/b", false), 0);
    assert_string_equal(b.data, "a%2Fb");
    buf_free(&b);
    char *d = NULL;
    assert_int_equal(httpc_uri_decode("images%2Fa+b%41", &d), 0);
    assert_string_equal(d, "images/a bA");
    free(d);
    assert_int_equal(httpc_uri_decode("bad%4", &d), -EILSEQ);
    assert_int_equal(httpc_uri_decode("bad%zz", &d), -EILSEQ);
    assert_int_equal(httpc_uri_decode("2.tar%00.evil", &d), -EILSEQ);
}

static const char LIST_XML[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
    "<Name>b</Name><Prefix>images/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>"
    "<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
    "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
    "<Contents><Key>images/golang/1.tar</Key><LastModified>2025-02-24T10:00:01.500Z</LastModified>"
    "<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>143595520</Size>"
    "<StorageClass>STANDARD</StorageClass></Contents>"
    "<Contents><Key>images/a%20b%0Ac</Key><Size>0</Size></Contents>"
    "</ListBucketResult>";

static void test_xml_list(void **state)
{
    (void)state;
    struct s3_list_page p = {0};
    struct err e = {0};
    assert_int_equal(s3_xml_parse_list(LIST_XML, strlen(LIST_XML), &p, &e), 0);
    assert_int_equal(p.n, 2);
    assert_true(p.truncated);
    assert_true(p.url_encoded);
    assert_string_equal(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    assert_string_equal(p.entries[0].key, "images/golang/1.tar");
    assert_int_equal(p.entries[0].size, 143595520);
    assert_string_equal(p.entries[0].etag, "\"0123456789abcdef0123456789abcdef\"");
    assert_int_equal(p.entries[0].mtime_ms, 1740391201500LL);
    /* decoded: a newline in a key becomes visible (and is then refused by the key check) */
    assert_string_equal(p.entries[1].key, "images/a b\nc");
    assert_null(p.entries[1].etag);
    s3_list_page_free(&p);

    const char *bad[] = {
        "",
        "<Error><Code>AccessDenied</Code></Error>",
        "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
        "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a</Key><Size>x</Size></Contents></ListBucketResult>",
        "<!DOCTYPE x [<!ENTITY a \"aaaa\">]><ListBucketResult>&a;</ListBucketResult>",
        "<ListBucketResult><Contents><Key>a</Key>",
        "<html><body>Sign in to the Wi-Fi</body></html>",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        err_clear(&e);
        assert_int_equal(s3_xml_parse_list(bad[i], strlen(bad[i]), &p, &e), -EPROTO);
        assert_true(tu_contains(e.msg, "bad ListObjectsV2 response"));
        assert_int_equal(p.n, 0);
    }
    /* a text longer than the limit */
    struct buf b = BUF_INIT;
    buf_puts(&b, "<ListBucketResult><Contents><Key>");
    for (int i = 0; i < S3_XML_MAX_TEXT + 10; i++)
        buf_puts(&b, "k");
    buf_puts(&b, "</Key></Contents></ListBucketResult>");
    /* one overlong key marks its entry invalid; the page stands */
    assert_int_equal(s3_xml_parse_list(b.data, b.len, &p, &e), 0);
    assert_int_equal(p.n, 1);
    assert_true(tu_contains(p.entries[0].invalid, "longer than"));
    s3_list_page_free(&p);
    buf_free(&b);
    /* an escaped NUL would cut the key ("2.tar%00.evil" read as "2.tar"): marked, not decoded */
    const char *nul = "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>"
                      "2.tar%00.evil</Key><Size>1</Size></Contents><Contents><Key>1.tar</Key>"
                      "<Size>1</Size></Contents></ListBucketResult>";
    assert_int_equal(s3_xml_parse_list(nul, strlen(nul), &p, &e), 0);
    assert_int_equal(p.n, 2);
    assert_true(tu_contains(p.entries[0].invalid, "escaped NUL"));
    assert_string_equal(p.entries[0].key, "2.tar%00.evil");
    assert_null(p.entries[1].invalid);
    s3_list_page_free(&p);
}

static void test_xml_error(void **state)
{
    (void)state;
    const char *x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect"
                    "</Code><Message>The bucket you are attempting to access must be addressed "
                    "using the specified endpoint.</Message><Endpoint>b.s3.eu-west-1.amazonaws"
                    ".com</Endpoint><Region>eu-west-1</Region><RequestId>R1</RequestId></Error>";
    struct s3_error er;
    assert_int_equal(s3_xml_parse_error(x, strlen(x), &er), 0);
    assert_string_equal(er.code, "PermanentRedirect");
    assert_string_equal(er.region, "eu-west-1");
    assert_string_equal(er.endpoint, "b.s3.eu-west-1.amazonaws.com");
    assert_string_equal(er.request_id, "R1");
    assert_true(tu_contains(er.message, "specified endpoint"));
    assert_int_equal(s3_xml_parse_error("<html/>", 7, &er), -EPROTO);
    assert_string_equal(er.code, "");
    assert_int_equal(s3_xml_parse_error("<Error></Error>", 15, &er), -EPROTO);
    int64_t ms;
    assert_int_equal(s3_parse_iso8601_ms("1970-01-01T00:00:01Z", &ms), 0);
    assert_int_equal(ms, 1000);
    assert_int_equal(s3_parse_iso8601_ms("1970-01-01T00:00:01.25Z", &ms), 0);
    assert_int_equal(ms, 1250);
    assert_int_equal(s3_parse_iso8601_ms("yesterday", &ms), -EINVAL);
    assert_int_equal(s3_parse_iso8601_ms("1970-13-01T00:00:01Z", &ms), -EINVAL);
}

static void clear_aws_env(void)
{
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_PROFILE");
    unsetenv("AWS_DEFAULT_PROFILE");
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
}

static void test_credentials(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = tu_mkdtemp("creds");
    clear_aws_env();
    setenv("HOME", dir, 1);
    struct s3_creds c;
    struct err e = {0};
    /* nothing: anonymous */
    assert_int_equal(s3_creds_load(&c, &e), 0);
    assert_null(c.access_key);
    assert_true(tu_contains(c.origin, "anonymous"));
    /* environment */
    setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SECRET", 1);
    setenv("AWS_SESSION_TOKEN", "TOKEN", 1);
    assert_int_equal(s3_creds_load(&c, &e), 0);
    assert_string_equal(c.access_key, "AKID");
    assert_string_equal(c.secret_key, "SECRET");
    assert_string_equal(c.session_token, "TOKEN");
    s3_creds_free(&c);
    /* half an environment is an error, not anonymous */
    unsetenv("AWS_SECRET_ACCESS_KEY");
    assert_int_equal(s3_creds_load(&c, &e), -EINVAL);
    assert_true(tu_contains(e.msg, "AWS_SECRET_ACCESS_KEY is not"));
    err_clear(&e);
    clear_aws_env();
    /* the shared credentials file, default and named profiles */
    char path[4096];
    snprintf(path, sizeof(path), "%s/.aws", dir);
    assert_int_equal(mkdir_p(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/.aws/credentials", dir);
    const char *ini = "# comment\n[default]\naws_access_key_id = DEFID\n"
                      "aws_secret_access_key=DEFSECRET\n\n[work]\r\n"
                      "aws_access_key_id = WORKID \naws_secret_access_key = WORKSECRET\n"
                      "aws_session_token = WORKTOKEN\n[broken]\naws_access_key_id = X\n";
    assert_int_equal(tu_write_file(path, ini, strlen(ini)), 0);
    assert_int_equal(s3_creds_load(&c, &e), 0);
    assert_string_equal(c.access_key, "DEFID");
    assert_string_equal(c.secret_key, "DEFSECRET");
    assert_null(c.session_token);
    assert_true(tu_contains(c.origin, "profile 'default'"));
    s3_creds_free(&c);
    setenv("AWS_PROFILE", "work", 1);
    assert_int_equal(s3_creds_load(&c, &e), 0);
    assert_string_equal(c.access_key, "WORKID");
    assert_string_equal(c.session_token, "WORKTOKEN");
    s3_creds_free(&c);
    setenv("AWS_PROFILE", "nope", 1);
    assert_int_equal(s3_creds_load(&c, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "AWS profile 'nope'"));
    err_clear(&e);
    setenv("AWS_PROFILE", "broken", 1);
    assert_int_equal(s3_creds_load(&c, &e), -EINVAL);
    err_clear(&e);
    /* AWS_SHARED_CREDENTIALS_FILE elsewhere */
    unsetenv("AWS_PROFILE");
    char other[4096];
    snprintf(other, sizeof(other), "%s/other", dir);
    const char *ini2 = "[default]\naws_access_key_id=O\naws_secret_access_key=OS\n";
    assert_int_equal(tu_write_file(other, ini2, strlen(ini2)), 0);
    setenv("AWS_SHARED_CREDENTIALS_FILE", other, 1);
    assert_int_equal(s3_creds_load(&c, &e), 0);
    assert_string_equal(c.access_key, "O");
    s3_creds_free(&c);
    clear_aws_env();
    tu_rmrf(dir);
}

static void test_open_errors(void **state)
{
    (void)state;
    clear_aws_env();
    struct source *s = NULL;
    struct err e = {0};
    assert_int_equal(source_open("ftp://x/y", NULL, &s, NULL, &e), -EINVAL);
    assert_true(tu_contains(e.msg, "is not a location"));
    err_clear(&e);
    assert_int_equal(source_open("dir:relative/path", NULL, &s, NULL, &e), -EINVAL);
    assert_true(tu_contains(e.msg, "must be absolute"));
    err_clear(&e);
    assert_int_equal(source_open("s3://b/k", NULL, &s, NULL, &e), -EINVAL);
    assert_true(tu_contains(e.msg, "bucket name"));
    err_clear(&e);
    assert_int_equal(source_open("s3://bucket/a/../b", NULL, &s, NULL, &e), -EILSEQ);
    assert_true(tu_contains(e.msg, "path traversal"));
    err_clear(&e);
    struct source_options o = {.endpoint = "ftp://host"};
    assert_int_equal(source_open("s3://bucket/", &o, &s, NULL, &e), -EINVAL);
    err_clear(&e);
    /* AWS addressing: virtual-hosted, path-style for dotted names */
    clear_aws_env();
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("AWS_ENDPOINT_URL_S3");
    setenv("HOME", "/nonexistent", 1);
    char *key = NULL;
    assert_int_equal(source_open("s3://flyio-platform-hiring-challenge/images", NULL, &s, &key, &e),
                     0);
    assert_string_equal(source_root(s), "s3://flyio-platform-hiring-challenge/");
    assert_string_equal(key, "images");
    assert_true(source_can_list(s));
    _cleanup_free_ char *loc = source_location(s, "images/golang/1.tar");
    assert_string_equal(loc, "s3://flyio-platform-hiring-challenge/images/golang/1.tar");
    free(key);
    source_free(s);
    /* http */
    assert_int_equal(source_open("https://example.com/a/b/layer.tar", NULL, &s, &key, &e), 0);
    assert_string_equal(source_root(s), "https://example.com/a/b/");
    assert_string_equal(key, "layer.tar");
    assert_false(source_can_list(s));
    free(key);
    source_free(s);
    assert_int_equal(source_open("https://example.com", NULL, &s, &key, &e), 0);
    assert_string_equal(source_root(s), "https://example.com/");
    assert_string_equal(key, "");
    free(key);
    source_free(s);
}

/* ---- dir: ------------------------------------------------------------------------------- */

static char *ROOT;

static void put(const char *rel, const char *content)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/%s", ROOT, rel);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    assert_int_equal(mkdir_p(p, 0755), 0);
    *slash = '/';
    assert_int_equal(tu_write_file(p, content, strlen(content)), 0);
}

static int dir_setup(void **state)
{
    (void)state;
    ROOT = tu_mkdtemp("dirsrc");
    char p[4096];
    put("bucket/images/golang/1.tar", "one");
    put("bucket/images/golang/2.tar", "two");
    put("bucket/images/golang/9.tar", "nine");
    put("bucket/images/golang/10.tar", "ten");
    put("bucket/images/golang/latest.tar", "L");
    put("bucket/images/golang/007.tar", "bond");
    put("bucket/images/node/1.tar", "n1");
    put("bucket/images/node/2.tar", "n2");
    put("bucket/single/alpine.tar", "a blob");
    put("secret/passwd", "root:x:0:0");
    /* escapes: an absolute and a relative symlink out of the bucket, one that stays inside */
    snprintf(p, sizeof(p), "%s/bucket/images/evil.tar", ROOT);
    char target[4096];
    snprintf(target, sizeof(target), "%s/secret/passwd", ROOT);
    assert_int_equal(symlink(target, p), 0);
    snprintf(p, sizeof(p), "%s/bucket/images/evil2.tar", ROOT);
    assert_int_equal(symlink("../../secret/passwd", p), 0);
    snprintf(p, sizeof(p), "%s/bucket/single/link.tar", ROOT);
    assert_int_equal(symlink("alpine.tar", p), 0);
    snprintf(p, sizeof(p), "%s/bucket/outside", ROOT);
    snprintf(target, sizeof(target), "%s/secret", ROOT);
    assert_int_equal(symlink(target, p), 0);
    return 0;
}

static int dir_teardown(void **state)
{
    (void)state;
    tu_rmrf(ROOT);
    free(ROOT);
    return 0;
}

static struct source *dir_open(const char *sub, char **key)
{
    char loc[4096];
    snprintf(loc, sizeof(loc), "dir:%s/%s", ROOT, sub);
    struct source *s = NULL;
    struct err e = {0};
    int r = source_open(loc, NULL, &s, key, &e);
    if (r < 0)
        fail_msg("%s: %s", loc, err_str(&e));
    return s;
}

static int collect(const void *data, size_t n, void *ud)
{
    return buf_append(ud, data, n);
}

static void test_dir_list_stat_get(void **state)
{
    (void)state;
    _cleanup_free_ char *key = NULL;
    _cleanup_source_ struct source *s = dir_open("bucket", &key);
    assert_string_equal(key, "");
    assert_true(tu_contains(source_root(s), "/bucket/"));
    assert_int_equal(strncmp(source_root(s), "dir:/", 5), 0);
    struct source_listing l = {0};
    struct err e = {0};
    assert_int_equal(source_list(s, "images/", &l, &e), 0);
    /* 8 files under images/, plus the escaping symlinks which are skipped with warnings */
    assert_int_equal(l.n, 8);
    assert_string_equal(l.items[0].key, "images/golang/007.tar");
    assert_int_equal(l.n_warnings, 1); /* one summary for every skipped key */
    assert_true(tu_contains(l.warnings[0], "skipped 2 keys"));
    for (size_t i = 0; i < l.n; i++)
        assert_null(strstr(l.items[i].key, "evil"));
    source_listing_free(&l);
    /* a partial name as prefix */
    assert_int_equal(source_list(s, "images/go", &l, &e), 0);
    assert_int_equal(l.n, 6);
    source_listing_free(&l);
    /* the whole folder: the symlinked folder "outside" is not followed */
    assert_int_equal(source_list(s, "", &l, &e), 0);
    for (size_t i = 0; i < l.n; i++)
        assert_null(strstr(l.items[i].key, "passwd"));
    bool link = false;
    for (size_t i = 0; i < l.n; i++)
        link |= !strcmp(l.items[i].key, "single/link.tar");
    assert_true(link);
    source_listing_free(&l);

    struct source_object o = {0};
    assert_int_equal(source_stat(s, "images/golang/10.tar", &o, &e), 0);
    assert_int_equal(o.size, 3);
    assert_non_null(o.etag);
    char etag[SOURCE_ETAG_MAX + 1];
    strcpy(etag, o.etag);
    source_object_free(&o);

    struct buf b = BUF_INIT;
    struct source_get_info info;
    assert_int_equal(source_get(s, "images/golang/10.tar", 1, etag, collect, &b, &info, &e), 0);
    assert_string_equal(b.data, "en");
    assert_int_equal(info.size, 3);
    buf_free(&b);
    assert_int_equal(source_get(s, "images/golang/10.tar", 3, NULL, collect, &b, &info, &e), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(source_get(s, "images/golang/10.tar", 4, NULL, collect, &b, &info, &e),
                     -ERANGE);
    err_clear(&e);
    /* the file is replaced: If-Match fails */
    sleep_ms(10);
    put("bucket/images/golang/10.tar", "TEN");
    assert_int_equal(source_get(s, "images/golang/10.tar", 0, etag, collect, &b, &info, &e),
                     -ESTALE);
    assert_int_equal(b.len, 0);
    err_clear(&e);
    /* escapes refused, inside links fine */
    assert_int_equal(source_stat(s, "images/evil.tar", &o, &e), -EXDEV);
    assert_true(tu_contains(e.msg, "leaves the folder"));
    err_clear(&e);
    assert_int_equal(source_get(s, "images/evil2.tar", 0, NULL, collect, &b, &info, &e), -EXDEV);
    err_clear(&e);
    assert_int_equal(source_stat(s, "outside/passwd", &o, &e), -EXDEV);
    err_clear(&e);
    assert_int_equal(source_stat(s, "../secret/passwd", &o, &e), -EILSEQ);
    err_clear(&e);
    assert_int_equal(source_stat(s, "single/link.tar", &o, &e), 0);
    assert_int_equal(o.size, 6);
    source_object_free(&o);
    assert_int_equal(source_stat(s, "images", &o, &e), -EISDIR);
    err_clear(&e);
    assert_int_equal(source_stat(s, "nope", &o, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "not found"));
    buf_free(&b);
}

static void test_dir_refs(void **state)
{
    (void)state;
    char src[4096], loc[4096];
    snprintf(src, sizeof(src), "dir:%s/bucket", ROOT);
    struct image_ref r = {0};
    struct err e = {0};
    assert_int_equal(ref_resolve("images/golang/", src, NULL, &r, &e), 0);
    assert_int_equal(r.kind, REF_FAMILY);
    assert_int_equal(r.n_layers, 4);
    assert_int_equal(r.layers[2].n, 9);
    assert_int_equal(r.layers[3].n, 10);
    assert_string_equal(r.name, "golang:10");
    snprintf(loc, sizeof(loc), "dir:%s/bucket/images/golang/10.tar", ROOT);
    assert_string_equal(r.canonical, loc);
    bool gap = false, latest = false, zero = false;
    for (size_t i = 0; i < r.n_warnings; i++) {
        gap |= tu_contains(r.warnings[i], "3.tar to 8.tar are missing");
        latest |= tu_contains(r.warnings[i], "'latest.tar'");
        zero |= tu_contains(r.warnings[i], "'007.tar'") && tu_contains(r.warnings[i], "leading");
    }
    assert_true(gap && latest && zero);
    image_ref_free(&r);

    /* the family key 10.tar needs 1..10: 3..8 are missing */
    assert_int_equal(ref_resolve(loc, NULL, NULL, &r, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "3.tar, 4.tar, 5.tar, 6.tar, 7.tar, 8.tar"));
    err_clear(&e);
    snprintf(loc, sizeof(loc), "dir:%s/bucket/images/golang/2.tar", ROOT);
    assert_int_equal(ref_resolve(loc, NULL, NULL, &r, &e), 0);
    assert_int_equal(r.n_layers, 2);
    assert_string_equal(r.name, "golang:2");
    image_ref_free(&r);
    /* a single blob */
    assert_int_equal(ref_resolve("single/alpine.tar", src, NULL, &r, &e), 0);
    assert_int_equal(r.kind, REF_BLOB);
    assert_string_equal(r.name, "alpine");
    assert_int_equal(r.layers[0].size, 6);
    image_ref_free(&r);
    /* a folder of families */
    assert_int_equal(ref_resolve("images", src, NULL, &r, &e), -EISDIR);
    assert_true(tu_contains(e.msg, "golang/, node/"));
    err_clear(&e);
    /* errors */
    assert_int_equal(ref_resolve("images/golang/", NULL, NULL, &r, &e), -EINVAL);
    assert_true(tu_contains(e.msg, "no default source"));
    err_clear(&e);
    assert_int_equal(ref_resolve("../secret/passwd", src, NULL, &r, &e), -EILSEQ);
    err_clear(&e);
    assert_int_equal(ref_resolve("images/python/", src, NULL, &r, &e), -ENOENT);
    err_clear(&e);
    assert_int_equal(ref_resolve("single/", src, NULL, &r, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "no layers named N.tar"));
    err_clear(&e);
}

static void test_dir_catalog(void **state)
{
    (void)state;
    _cleanup_source_ struct source *s = dir_open("bucket", NULL);
    struct source_listing l = {0};
    struct err e = {0};
    assert_int_equal(source_list(s, "", &l, &e), 0);
    struct ref_catalog c = {0};
    assert_int_equal(ref_catalog_build(s, &l, &c), 0);
    assert_int_equal(c.n_families, 2);
    assert_string_equal(c.families[0].prefix, "images/golang/");
    assert_string_equal(c.families[0].name, "golang");
    assert_int_equal(c.families[0].n_layers, 4);
    assert_string_equal(c.families[1].name, "node");
    assert_int_equal(c.families[1].n_warnings, 0);
    /* 007.tar, latest.tar, alpine.tar, link.tar */
    assert_int_equal(c.n_objects, 4);
    ref_catalog_free(&c);
    source_listing_free(&l);
}

/* A family deeper than the layer limit is refused whole (never fetched as its first 256
 * layers), as a prefix, as its top key and in `ls`; THINIMG_SOURCE_MAX_LAYERS raises it. */
static void test_dir_too_deep(void **state)
{
    (void)state;
    for (int i = 1; i <= 300; i++) {
        char k[64];
        snprintf(k, sizeof(k), "bucket/big/%d.tar", i);
        put(k, "x");
    }
    char src[4096];
    snprintf(src, sizeof(src), "dir:%s/bucket", ROOT);
    struct image_ref r = {0};
    struct err e = {0};
    unsetenv("THINIMG_SOURCE_MAX_LAYERS");
    const char *refs[] = {"big/", "big", "big/300.tar", "big/999999999.tar"};
    for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
        assert_int_equal(ref_resolve(refs[i], src, NULL, &r, &e), -EFBIG);
        assert_true(tu_contains(e.msg, "more than the limit of 256"));
        assert_true(tu_contains(e.msg, "THINIMG_SOURCE_MAX_LAYERS"));
        assert_true(tu_contains(e.msg, i == 3 ? "999999999 layers" : "300 layers"));
        err_clear(&e);
    }
    /* below the limit: the same family's key 256 is an image of 256 layers */
    assert_int_equal(ref_resolve("big/256.tar", src, NULL, &r, &e), 0);
    assert_int_equal(r.n_layers, 256);
    image_ref_free(&r);

    _cleanup_source_ struct source *s = dir_open("bucket", NULL);
    struct source_listing l = {0};
    assert_int_equal(source_list(s, "big/", &l, &e), 0);
    struct ref_catalog c = {0};
    assert_int_equal(ref_catalog_build(s, &l, &c), 0);
    assert_int_equal(c.n_families, 1);
    assert_int_equal(c.families[0].n_layers, 300);
    assert_int_equal(c.n_objects, 0);
    bool warned = false;
    for (size_t i = 0; i < c.families[0].n_warnings; i++)
        warned |= tu_contains(c.families[0].warnings[i], "300 layers, more than the limit");
    assert_true(warned);
    ref_catalog_free(&c);
    source_listing_free(&l);

    setenv("THINIMG_SOURCE_MAX_LAYERS", "300", 1);
    assert_int_equal(ref_resolve("big/", src, NULL, &r, &e), 0);
    assert_int_equal(r.n_layers, 300);
    assert_string_equal(r.name, "big:300");
    image_ref_free(&r);
    unsetenv("THINIMG_SOURCE_MAX_LAYERS");

    /* The commands: fetch exits 6 (rejected) naming the limit and stores nothing; ls lists the
     * family with the warning. */
    char cmd[8192], *out = NULL, *err = NULL;
    snprintf(cmd, sizeof(cmd), "%s --state-dir %s/state fetch %s/big/", tu_thinimg(), ROOT, src);
    assert_int_equal(tu_sh(cmd, &out, &err), 6);
    assert_true(tu_contains(err, "300 layers, more than the limit of 256"));
    free(out);
    free(err);
    snprintf(cmd, sizeof(cmd), "find %s/state/blobs -type f | wc -l", ROOT);
    assert_int_equal(tu_sh(cmd, &out, NULL), 0);
    assert_int_equal(atoi(out), 0);
    free(out);
    snprintf(cmd, sizeof(cmd), "%s ls %s/big/", tu_thinimg(), src);
    assert_int_equal(tu_sh(cmd, &out, &err), 0);
    assert_true(tu_contains(out, "big") && tu_contains(out, "300"));
    assert_true(tu_contains(err, "fetching it is refused"));
    free(out);
    free(err);

    /* clamped to the ceiling */
    setenv("THINIMG_SOURCE_MAX_LAYERS", "99999999", 1);
    assert_int_equal(source_max_layers(), SOURCE_MAX_LAYERS_CEILING);
    unsetenv("THINIMG_SOURCE_MAX_LAYERS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_check),
        cmocka_unit_test(test_layer_number),
        cmocka_unit_test(test_sigv4_vectors),
        cmocka_unit_test(test_uri_encoding),
        cmocka_unit_test(test_xml_list),
        cmocka_unit_test(test_xml_error),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test_setup_teardown(test_dir_list_stat_get, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_dir_refs, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_dir_catalog, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_dir_too_deep, dir_setup, dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
