/*
 * test_util.c: logging, buffers, digests and chain ids, errors, config resolution.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "util/buf.h"
#include "util/config.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/log.h"

static char *capture_log(enum log_format fmt, void (*emit)(void))
{
    char path[] = "/tmp/thinimg-logXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    log_setup(fmt, LOG_LVL_DEBUG, fd);
    emit();
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_INFO, 2);
    close(fd);
    char *s = tu_read_file(path, NULL);
    unlink(path);
    return s;
}

static void emit_fields(void)
{
    log_info("layer applied", "chain=%s entries=%zu ratio=%.2f path=%s", "sha256:ab", (size_t)42,
             0.5, "a dir/with \"quotes\"");
    log_warn("no fields");
}

static void test_log_logfmt(void **state)
{
    (void)state;
    char *s = capture_log(LOG_FMT_LOGFMT, emit_fields);
    assert_non_null(s);
    assert_true(tu_contains(s, "level=info msg=\"layer applied\" chain=sha256:ab entries=42 "
                               "ratio=0.50 path=\"a dir/with \\\"quotes\\\"\"\n"));
    assert_true(tu_contains(s, "level=warn msg=\"no fields\"\n"));
    free(s);
}

static void test_log_json(void **state)
{
    (void)state;
    char *s = capture_log(LOG_FMT_JSON, emit_fields);
    assert_non_null(s);
    assert_true(tu_contains(s, "\"level\":\"info\",\"msg\":\"layer applied\",\"chain\":\"sha256:ab\","
                               "\"entries\":42,\"ratio\":\"0.50\",\"path\":\"a dir/with \\\"quotes\\\"\"}\n"));
    free(s);
}

static void emit_ctx(void)
{
    log_ctx_push("run", "01ABC");
    log_error_errno(-ENOENT, "open failed", "path=%s", "/x");
    log_ctx_pop();
    log_debug("after");
}

static void test_log_ctx_and_errno(void **state)
{
    (void)state;
    char *s = capture_log(LOG_FMT_LOGFMT, emit_ctx);
    assert_true(tu_contains(s, "msg=\"open failed\" run=01ABC path=/x error=\"No such file or directory\"\n"));
    assert_true(tu_contains(s, "level=debug msg=after\n"));
    free(s);
}

static void test_buf(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_puts(&b, "abc"), 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_printf(&b, "%d,", i), 0);
    assert_int_equal(strncmp(b.data, "abc0,1,2,", 9), 0);
    assert_int_equal(b.data[b.len], '\0');
    char *s = buf_steal(&b);
    assert_null(b.data);
    assert_int_equal(strlen(s), 3 + 3890);
    free(s);
}

static void test_digest_and_chain(void **state)
{
    (void)state;
    uint8_t d[SHA256_LEN];
    char s[DIGEST_STR_LEN + 1];
    assert_int_equal(sha256_buf("abc", 3, d), 0);
    digest_format(d, s);
    assert_string_equal(s, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_true(digest_valid(s));
    assert_false(digest_valid("sha256:BA7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    assert_false(digest_valid("sha256:ba78"));

    /* ChainID(L1) = DiffID(L1); ChainID(L1,L2) = sha256(ChainID(L1) + " " + DiffID(L2)). */
    char c1[DIGEST_STR_LEN + 1], c2[DIGEST_STR_LEN + 1];
    assert_int_equal(chain_id_next(NULL, s, c1), 0);
    assert_string_equal(c1, s);
    assert_int_equal(chain_id_next(c1, s, c2), 0);
    char joined[200];
    snprintf(joined, sizeof(joined), "%s %s", s, s);
    uint8_t e[SHA256_LEN];
    sha256_buf(joined, strlen(joined), e);
    char expect[DIGEST_STR_LEN + 1];
    digest_format(e, expect);
    assert_string_equal(c2, expect);
    assert_int_equal(chain_id_next(c1, "sha256:nothex", c2), -EINVAL);
}

static void test_err(void **state)
{
    (void)state;
    struct err e = {0};
    assert_int_equal(err_set(&e, -EFBIG, "entry %s too big", "a"), -EFBIG);
    assert_int_equal(err_set(&e, -EIO, "second"), -EFBIG); /* first error wins */
    assert_string_equal(err_str(&e), "entry a too big");
    err_prefix(&e, "layer %d", 2);
    assert_string_equal(err_str(&e), "layer 2: entry a too big");
    assert_int_equal(err_set(NULL, -EINVAL, "x"), -EINVAL);
}

static void test_config(void **state)
{
    (void)state;
    setenv("THINIMG_STATE_DIR", "/tmp/envstate", 1);
    setenv("THINIMG_POOL", "envpool", 1);
    unsetenv("THINIMG_DB");
    struct config c;
    assert_int_equal(config_resolve(&c, NULL), 0);
    assert_string_equal(c.state_dir, "/tmp/envstate");
    assert_string_equal(c.db_path, "/tmp/envstate/thinimg.db");
    assert_string_equal(c.pool_name, "envpool");
    assert_string_equal(c.blob_dir, "/tmp/envstate/blobs");
    config_free(&c);
    struct config_overrides o = {.state_dir = "/srv/x/", .db_path = "/db.sqlite"};
    assert_int_equal(config_resolve(&c, &o), 0);
    assert_string_equal(c.lock_path, "/srv/x/thinimg.lock");
    assert_string_equal(c.kmsg_cursor_path, "/srv/x/kmsg.cursor");
    assert_string_equal(c.db_path, "/db.sqlite");
    /* A copy owns its strings: every path and setting, equal and not shared. */
    struct config copy;
    assert_int_equal(config_copy(&copy, &c), 0);
    assert_string_equal(copy.kmsg_cursor_path, "/srv/x/kmsg.cursor");
    assert_string_equal(copy.socket_path, c.socket_path);
    assert_string_equal(copy.pool_name, "envpool");
    assert_ptr_not_equal(copy.state_dir, c.state_dir);
    config_free(&c);
    assert_string_equal(copy.db_path, "/db.sqlite");
    config_free(&copy);
    unsetenv("THINIMG_STATE_DIR");
    unsetenv("THINIMG_POOL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_logfmt), cmocka_unit_test(test_log_json),
        cmocka_unit_test(test_log_ctx_and_errno), cmocka_unit_test(test_buf),
        cmocka_unit_test(test_digest_and_chain), cmocka_unit_test(test_err),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
