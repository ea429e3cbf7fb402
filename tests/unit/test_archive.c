/*
 * test_archive.c: the archive module through its C interface: name rules, the xattr
 * allowlist, the path set, format detection, scan and apply results and error codes, the
 * progress callback, docker-archive and OCI-layout manifests, member copies, and apply in a
 * forked child of a threaded process. Archives are written with libarchive's writer.
 * (The hostile corpus and the tree comparisons are in tests/archive/.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "archive/archive.h"
#include "archive/internal.h"
#include "archive/limits.h"
#include "testutil.h"
#include "util/cleanup.h"
#include "util/forklock.h"
#include "util/hash.h"

/* ---- writing test archives -------------------------------------------------------------- */

struct ent {
    const char *name;
    char type;        /* f file, d dir, l symlink, h hardlink */
    const char *data; /* file content or link target */
    int mode;
};

static void add_entry(struct archive *a, const struct ent *e, const void *data, size_t len)
{
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, e->name);
    archive_entry_set_mtime(ae, 1700000000, 0);
    archive_entry_set_perm(ae, e->mode ? (mode_t)e->mode : 0644);
    switch (e->type) {
    case 'd':
        archive_entry_set_filetype(ae, AE_IFDIR);
        break;
    case 'l':
        archive_entry_set_filetype(ae, AE_IFLNK);
        archive_entry_set_symlink(ae, e->data);
        break;
    case 'h':
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_hardlink(ae, e->data);
        break;
    default:
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_size(ae, (la_int64_t)len);
    }
    assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
    if (e->type == 'f' && len)
        assert_int_equal(archive_write_data(a, data, len), (la_ssize_t)len);
    archive_entry_free(ae);
}

/* filter: 0 none, 'g' gzip, 'z' zstd */
static void write_tar(const char *path, char filter, const struct ent *ents, size_t n)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (filter == 'g')
        archive_write_add_filter_gzip(a);
    else if (filter == 'z')
        archive_write_add_filter_zstd(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++)
        add_entry(a, &ents[i], ents[i].data, ents[i].data ? strlen(ents[i].data) : 0);
    archive_write_close(a);
    archive_write_free(a);
}

/* An outer tar whose members are files given as (name, path-of-content) pairs. */
static void write_outer(const char *path, const char *const *pairs, size_t n,
                        const char *const *links /* name, target pairs, NULL-terminated */)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        char *data = tu_read_file(pairs[2 * i + 1], &len);
        assert_non_null(data);
        struct ent e = {pairs[2 * i], 'f', NULL, 0};
        add_entry(a, &e, data, len);
        free(data);
    }
    for (size_t i = 0; links && links[i]; i += 2) {
        struct ent e = {links[i], 'l', links[i + 1], 0777};
        add_entry(a, &e, NULL, 0);
    }
    archive_write_close(a);
    archive_write_free(a);
}

static char *tmpfile_in(const char *dir, const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

/* ---- names, allowlist, path set ---------------------------------------------------------- */

static void test_normalize(void **state)
{
    (void)state;
    struct archive_policy p = archive_policy_default();
    struct {
        const char *in, *out, *rule;
    } cases[] = {
        {"etc/passwd", "etc/passwd", NULL},
        {"./etc//x/", "etc/x", NULL},
        {"./", "", NULL},
        {"a/./b", "a/b", NULL},
        {"", NULL, "name"},
        {"/etc/passwd", NULL, "absolute"},
        {"../x", NULL, "traversal"},
        {"a/../../x", NULL, "traversal"},
        {"a/..", NULL, "traversal"},
        {"a\nb", NULL, "control-char"},
        {"a\x7f", NULL, "control-char"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char out[64];
        bool slash;
        uint32_t depth;
        const char *rule = NULL, *why = NULL;
        int r =
            archive_path_normalize(cases[i].in, &p, out, sizeof(out), &slash, &depth, &rule, &why);
        if (cases[i].out) {
            assert_int_equal(r, 0);
            assert_string_equal(out, cases[i].out);
        } else {
            assert_true(r < 0);
            assert_string_equal(rule, cases[i].rule);
            assert_non_null(why);
        }
    }
    /* Depth and length limits. */
    p.max_depth = 2;
    char out[64];
    bool slash;
    uint32_t depth;
    const char *rule, *why;
    assert_int_equal(
        archive_path_normalize("a/b/c", &p, out, sizeof(out), &slash, &depth, &rule, &why),
        -ENAMETOOLONG);
    assert_string_equal(rule, "depth");
    p = archive_policy_default();
    p.max_path_bytes = 4;
    assert_int_equal(
        archive_path_normalize("abcde", &p, out, sizeof(out), &slash, &depth, &rule, &why),
        -ENAMETOOLONG);
    assert_string_equal(rule, "path-length");
    p.allow_control_chars = true;
    p.max_path_bytes = ARCHIVE_DEFAULT_MAX_PATH_BYTES;
    assert_int_equal(
        archive_path_normalize("a\tb/", &p, out, sizeof(out), &slash, &depth, &rule, &why), 0);
    assert_true(slash);
    assert_int_equal(depth, 1);
}

static void test_escape_and_allowlist(void **state)
{
    (void)state;
    char out[64];
    archive_name_escape("a\nb'\\\xff", out, sizeof(out));
    assert_string_equal(out, "a\\x0ab\\x27\\x5c\\xff");
    struct archive_policy p = archive_policy_default();
    assert_true(archive_policy_xattr_allowed(&p, "security.capability"));
    assert_true(archive_policy_xattr_allowed(&p, "user.anything"));
    assert_false(archive_policy_xattr_allowed(&p, "user."));
    assert_false(archive_policy_xattr_allowed(&p, "security.selinux"));
    assert_false(archive_policy_xattr_allowed(&p, "trusted.overlay.opaque"));
    p.xattr_allow = "";
    assert_false(archive_policy_xattr_allowed(&p, "user.x"));
    p.xattr_allow = "trusted.,security.ima";
    assert_true(archive_policy_xattr_allowed(&p, "trusted.x"));
    assert_true(archive_policy_xattr_allowed(&p, "security.ima"));
    assert_false(archive_policy_xattr_allowed(&p, "security.imax"));
}

static void test_pathset(void **state)
{
    (void)state;
    struct pathset s = {0};
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "dir/%d", i);
        struct pathset_node *n = pathset_put(&s, key, strlen(key));
        assert_non_null(n);
        assert_int_equal(n->dir_idx, -1);
        n->dir_idx = i;
        n->flags = (uint32_t)i & (PATHSET_CREATED | PATHSET_ANCESTOR);
    }
    assert_int_equal(s.n, 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "dir/%d", i);
        const struct pathset_node *n = pathset_get(&s, key, strlen(key));
        assert_non_null(n);
        assert_int_equal(n->dir_idx, i);
        assert_int_equal(n->flags, (uint32_t)i & (PATHSET_CREATED | PATHSET_ANCESTOR));
    }
    /* Memory per path is fixed, whatever the name's length: 16 bytes a node, at most 4/3
     * nodes a path (grown at 3/4 load; 8 MiB of table for a 300k-entry layer). */
    assert_int_equal(sizeof(struct pathset_node), 16);
    assert_true(s.cap * 3 >= s.n * 4 && s.cap <= 8192);
    /* A prefix of a key is a different key. */
    assert_null(pathset_get(&s, "dir/1", 4));
    assert_non_null(pathset_get(&s, "dir/12345", 5));
    pathset_free(&s);
}

/* ---- detection --------------------------------------------------------------------------- */

static enum blob_format detect_bytes(const char *dir, const void *data, size_t n, char *why)
{
    char *p = tmpfile_in(dir, "blob");
    assert_int_equal(tu_write_file(p, data, n), 0);
    enum blob_format f;
    assert_int_equal(archive_detect(p, &f, why, 160), 0);
    free(p);
    return f;
}

static void test_detect(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("detect");
    char why[160];
    assert_int_equal(detect_bytes(dir, "", 0, why), BLOB_UNKNOWN);
    assert_string_equal(why, "empty file");
    const char xml[] = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>";
    assert_int_equal(detect_bytes(dir, xml, sizeof(xml) - 1, why), BLOB_UNKNOWN);
    assert_true(tu_contains(why, "XML"));
    const char html[] = "  <html><body>oops</body></html>";
    assert_int_equal(detect_bytes(dir, html, sizeof(html) - 1, why), BLOB_UNKNOWN);
    assert_true(tu_contains(why, "HTML"));
    unsigned char png[600] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_int_equal(detect_bytes(dir, png, sizeof(png), why), BLOB_UNKNOWN);
    assert_true(tu_contains(why, "PNG"));
    unsigned char zeros[1024] = {0};
    assert_int_equal(detect_bytes(dir, zeros, sizeof(zeros), why), BLOB_TAR);

    struct ent layer[] = {{"etc/", 'd', NULL, 0755}, {"etc/hostname", 'f', "box\n", 0}};
    const char fmts[] = {0, 'g', 'z'};
    const enum blob_format want[] = {BLOB_TAR, BLOB_TAR_GZIP, BLOB_TAR_ZSTD};
    for (size_t i = 0; i < 3; i++) {
        char *p = tmpfile_in(dir, "layer");
        write_tar(p, fmts[i], layer, 2);
        enum blob_format f;
        assert_int_equal(archive_detect(p, &f, why, sizeof(why)), 0);
        assert_int_equal(f, want[i]);
        assert_true(blob_format_is_layer(f));
        free(p);
    }
    /* A truncated tar header. */
    char *p = tmpfile_in(dir, "layer");
    write_tar(p, 0, layer, 2);
    size_t len;
    char *data = tu_read_file(p, &len);
    assert_int_equal(detect_bytes(dir, data, 300, why), BLOB_UNKNOWN);
    assert_true(tu_contains(why, "truncated tar header"));
    free(data);
    free(p);
    assert_string_equal(blob_format_name(BLOB_OCI_LAYOUT), "oci-layout");
    assert_false(blob_format_is_layer(BLOB_DOCKER_ARCHIVE));
    tu_rmrf(dir);
    free(dir);
}

/* ---- scan and apply ---------------------------------------------------------------------- */

static uint64_t g_progress_done, g_progress_total;
static int g_progress_calls;

static void on_progress(uint64_t done, uint64_t total, void *ud)
{
    (void)ud;
    g_progress_done = done;
    g_progress_total = total;
    g_progress_calls++;
}

static void test_scan_apply(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("apply");
    char *blob = tmpfile_in(dir, "l.tar");
    struct ent ents[] = {
        {"./", 'd', NULL, 0755},           {"bin/", 'd', NULL, 0755},
        {"bin/busybox", 'f', "ELF", 0755}, {"bin/sh", 'h', "bin/busybox", 0},
        {"bin/ash", 'l', "busybox", 0777}, {"etc/", 'd', NULL, 0500},
        {"etc/motd", 'f', "hi\n", 0444},
    };
    write_tar(blob, 'g', ents, ARRAY_SIZE(ents));

    struct archive_stats st;
    struct err e = {0};
    archive_set_progress(on_progress, NULL);
    assert_int_equal(archive_scan(blob, NULL, &st, &e), 0);
    archive_set_progress(NULL, NULL);
    assert_int_equal(st.entries, 7);
    assert_int_equal(st.files, 2);
    assert_int_equal(st.dirs, 3);
    assert_int_equal(st.hardlinks, 1);
    assert_int_equal(st.symlinks, 1);
    assert_int_equal(st.bytes, 6);
    assert_true(g_progress_calls >= 1);
    assert_int_equal(g_progress_done, g_progress_total);
    struct stat sb;
    assert_int_equal(stat(blob, &sb), 0);
    assert_int_equal(g_progress_total, (uint64_t)sb.st_size);

    /* Detection and the scan in one pass: the same format and counts. */
    enum blob_format f = BLOB_UNKNOWN;
    char why[160];
    struct archive_stats st1;
    assert_int_equal(archive_scan_detect(blob, NULL, &f, why, sizeof(why), &st1, &e), 0);
    assert_int_equal(f, BLOB_TAR_GZIP);
    assert_memory_equal(&st1, &st, sizeof(st));

    char *root = tmpfile_in(dir, "root");
    assert_int_equal(mkdir(root, 0755), 0);
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    assert_true(rfd >= 0);
    assert_int_equal(archive_apply(rfd, blob, NULL, &st, &e), 0);
    char *motd = tmpfile_in(root, "etc/motd");
    char *got = tu_read_file(motd, NULL);
    assert_string_equal(got, "hi\n");
    free(got);
    assert_int_equal(lstat(motd, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0444);
    assert_int_equal(sb.st_mtime, 1700000000);
    char *etc = tmpfile_in(root, "etc");
    assert_int_equal(lstat(etc, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0500);
    char link[64] = {0};
    char *ash = tmpfile_in(root, "bin/ash");
    assert_int_equal(readlink(ash, link, sizeof(link) - 1), 7);
    assert_string_equal(link, "busybox");
    char *sh = tmpfile_in(root, "bin/sh"), *bb = tmpfile_in(root, "bin/busybox");
    struct stat s1, s2;
    assert_int_equal(stat(sh, &s1), 0);
    assert_int_equal(stat(bb, &s2), 0);
    assert_int_equal(s1.st_ino, s2.st_ino);

    /* Rejections: the rule and the code. */
    struct ent bad[] = {{"../x", 'f', "x", 0}};
    write_tar(blob, 0, bad, 1);
    err_clear(&e);
    assert_int_equal(archive_apply(rfd, blob, NULL, &st, &e), -EPERM);
    assert_true(tu_contains(e.msg, "(rule: traversal)"));
    assert_true(tu_contains(e.msg, "entry '../x'"));
    err_clear(&e);
    assert_int_equal(archive_scan_detect(blob, NULL, &f, why, sizeof(why), &st1, &e), -EPERM);
    assert_int_equal(f, BLOB_TAR);
    assert_true(tu_contains(e.msg, "(rule: traversal)"));

    struct archive_policy p = archive_policy_default();
    p.max_entries = 1;
    write_tar(blob, 0, ents, ARRAY_SIZE(ents));
    err_clear(&e);
    assert_int_equal(archive_scan(blob, &p, &st, &e), -EFBIG);
    assert_true(tu_contains(e.msg, "(rule: entries)"));

    size_t len;
    char *data = tu_read_file(blob, &len);
    assert_int_equal(tu_write_file(blob, data, 700), 0); /* cut inside the second entry */
    free(data);
    err_clear(&e);
    assert_int_equal(archive_scan(blob, NULL, &st, &e), -EBADMSG);
    assert_true(tu_contains(e.msg, "(rule: truncated)"));

    assert_int_equal(tu_write_file(blob, "<html>", 6), 0);
    err_clear(&e);
    assert_int_equal(archive_scan(blob, NULL, &st, &e), -ENOTSUP);
    assert_true(tu_contains(e.msg, "not an image layer"));
    assert_int_equal(archive_scan_detect(blob, NULL, &f, why, sizeof(why), &st1, &e), 0);
    assert_int_equal(f, BLOB_UNKNOWN);
    assert_true(tu_contains(why, "HTML"));

    close(rfd);
    free(motd), free(etc), free(ash), free(sh), free(bb), free(root), free(blob);
    tu_rmrf(dir);
    free(dir);
}

/* ---- limits: ranges checked when parsed and before a walk ---------------------------------- */

static void test_policy_limits(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("limits");
    char *blob = tmpfile_in(dir, "l.tar");
    const struct ent ents[] = {{"a", 'f', "x", 0}};
    write_tar(blob, 0, ents, ARRAY_SIZE(ents));
    struct archive_stats st;
    struct err e = {0};
    int rfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(rfd >= 0);

    /* A path limit that used to wrap the 32-bit buffer size (4294967294 + 2 = 0), and limits
     * that have no "no limit" value: refused before anything is sized or read. */
    struct {
        size_t off;
        uint32_t v;
        const char *name;
    } bad[] = {
        {offsetof(struct archive_policy, max_path_bytes), 4294967294U, "max-path is 4294967294"},
        {offsetof(struct archive_policy, max_path_bytes), 0, "max-path is 0"},
        {offsetof(struct archive_policy, max_path_bytes), 4096, "max-path is 4096"},
        {offsetof(struct archive_policy, max_depth), 0, "max-depth is 0"},
        {offsetof(struct archive_policy, max_depth), 2049, "max-depth is 2049"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct archive_policy p = archive_policy_default();
        memcpy((char *)&p + bad[i].off, &bad[i].v, sizeof(uint32_t));
        err_clear(&e);
        assert_int_equal(archive_scan(blob, &p, &st, &e), -EINVAL);
        assert_true(tu_contains(e.msg, bad[i].name));
        err_clear(&e);
        assert_int_equal(archive_apply(rfd, blob, &p, &st, &e), -EINVAL);
        assert_true(tu_contains(e.msg, "invalid archive policy"));
    }
    struct archive_policy p = archive_policy_default();
    p.max_time_ms = ARCHIVE_MAX_TIME_MS_LIMIT + 1;
    err_clear(&e);
    assert_int_equal(archive_scan(blob, &p, &st, &e), -EINVAL);
    p = archive_policy_default();
    p.max_header_bytes = ARCHIVE_MIN_HEADER_BYTES_LIMIT - 1;
    assert_int_equal(archive_scan(blob, &p, &st, &e), -EINVAL);

    /* The parser: ranges, suffixes, overflow in the unit conversion. */
    char why[256];
    p = archive_policy_default();
    assert_int_equal(archive_limit_set(&p, "max-path", "4095", why, sizeof(why)), 0);
    assert_int_equal(p.max_path_bytes, 4095);
    assert_int_equal(archive_limit_set(&p, "max-path", "4294967294", why, sizeof(why)), -EINVAL);
    assert_true(tu_contains(why, "--max-path: '4294967294' is out of range: 1 to 4095 bytes"));
    assert_int_equal(p.max_path_bytes, 4095); /* unchanged */
    assert_int_equal(archive_limit_set(&p, "max-file-size", "2G", why, sizeof(why)), 0);
    assert_int_equal(p.max_file_bytes, 2ULL << 30);
    assert_int_equal(archive_limit_set(&p, "max-file-size", "0", why, sizeof(why)), 0);
    assert_int_equal(p.max_file_bytes, 0);
    assert_int_equal(archive_limit_set(&p, "max-time", "20ms", why, sizeof(why)), 0);
    assert_int_equal(p.max_time_ms, 20);
    assert_int_equal(archive_limit_set(&p, "max-time", "18446744073709552", why, sizeof(why)),
                     -EINVAL);
    assert_int_equal(archive_limit_set(&p, "max-ratio", "4294967296", why, sizeof(why)), -EINVAL);
    assert_int_equal(archive_limit_set(&p, "max-entries", "-1", why, sizeof(why)), -EINVAL);
    assert_true(tu_contains(why, "is not a whole number"));
    assert_int_equal(archive_limit_set(&p, "max-nothing", "1", why, sizeof(why)), -ENOENT);
    assert_int_equal(archive_policy_check(&p, why, sizeof(why)), 0);

    close(rfd);
    free(blob);
    tu_rmrf(dir);
    free(dir);
}

/* ---- apply in a forked child of a threaded process --------------------------------------- */

static volatile int g_spin = 1;

/* Keeps the allocator's locks busy across the fork: glibc's malloc resets them in the child,
 * and under AddressSanitizer forklock_fork() does what its runtime does not (util/forklock.c). */
static void *spinner(void *arg)
{
    (void)arg;
    while (g_spin) {
        void *p = malloc(64);
        free(p);
    }
    return NULL;
}

static void test_apply_in_fork_child(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("fork");
    char *blob = tmpfile_in(dir, "l.tar");
    struct ent ents[] = {{"a/", 'd', NULL, 0755}, {"a/f", 'f', "forked", 0}};
    write_tar(blob, 'z', ents, ARRAY_SIZE(ents));
    char *root = tmpfile_in(dir, "root");
    assert_int_equal(mkdir(root, 0755), 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, spinner, NULL), 0);
    for (int round = 0; round < 20; round++) {
        pid_t pid = forklock_fork(); /* as the mount child is made (dm/mount.c) */
        assert_true(pid >= 0);
        if (pid == 0) {
            alarm(20);
            int rfd = open(root, O_RDONLY | O_DIRECTORY);
            struct err e = {0};
            _exit(rfd >= 0 && archive_apply(rfd, blob, NULL, NULL, &e) == 0 ? 0 : 1);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    g_spin = 0;
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    char *f = tmpfile_in(root, "a/f");
    char *got = tu_read_file(f, NULL);
    assert_string_equal(got, "forked");
    free(got), free(f), free(root), free(blob);
    tu_rmrf(dir);
    free(dir);
}

/* A root with nothing a whiteout could hide (empty, or the empty lost+found mkfs leaves):
 * apply records directories only, and whiteouts act exactly as with the full record: a
 * same-layer entry is spared, the lower lost+found is hidden unless the layer wrote into it. */
static void test_whiteouts_on_fresh_root(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("fresh");
    char *blob = tmpfile_in(dir, "l.tar");
    struct ent spare[] = {{"a/", 'd', NULL, 0755},       {"a/x", 'f', "x", 0644},
                          {"a/.wh.x", 'f', "", 0},       {"b", 'f', "b", 0644},
                          {".wh.b", 'f', "", 0},         {"a/.wh..wh..opq", 'f', "", 0},
                          {".wh.lost+found", 'f', "", 0}};
    struct ent wrote[] = {{"lost+found/kept", 'f', "k", 0644}, {".wh.lost+found", 'f', "", 0}};
    struct {
        const struct ent *ents;
        size_t n;
        bool lost_found_left;
    } cases[] = {{spare, ARRAY_SIZE(spare), false}, {wrote, ARRAY_SIZE(wrote), true}};
    for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
        write_tar(blob, 0, cases[c].ents, cases[c].n);
        char name[32];
        snprintf(name, sizeof(name), "root%zu", c);
        char *root = tmpfile_in(dir, name);
        assert_int_equal(mkdir(root, 0755), 0);
        char *lf = tmpfile_in(root, "lost+found");
        assert_int_equal(mkdir(lf, 0700), 0);
        int rfd = open(root, O_RDONLY | O_DIRECTORY);
        assert_true(rfd >= 0);
        struct err e = {0};
        assert_int_equal(archive_apply(rfd, blob, NULL, NULL, &e), 0);
        close(rfd);
        struct stat sb;
        assert_int_equal(lstat(lf, &sb) == 0, cases[c].lost_found_left);
        if (c == 0) {
            char *ax = tmpfile_in(root, "a/x"), *b = tmpfile_in(root, "b");
            assert_int_equal(lstat(ax, &sb), 0); /* same layer: spared */
            assert_int_equal(lstat(b, &sb), 0);
            free(ax), free(b);
        }
        free(lf), free(root);
    }
    free(blob);
    tu_rmrf(dir);
    free(dir);
}

/* ---- manifests --------------------------------------------------------------------------- */

static void test_docker_archive(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("docker");
    char *l1 = tmpfile_in(dir, "l1.tar"), *l2 = tmpfile_in(dir, "l2.tar.gz");
    struct ent a[] = {{"etc/", 'd', NULL, 0755}, {"etc/one", 'f', "1", 0}};
    struct ent b[] = {{"etc/two", 'f', "2", 0}};
    write_tar(l1, 0, a, 2);
    write_tar(l2, 'g', b, 1);
    char *man = tmpfile_in(dir, "manifest.json");
    const char *mj = "[{\"Config\":\"c.json\",\"RepoTags\":[\"demo:1\"],"
                     "\"Layers\":[\"aaa/layer.tar\",\"bbb/layer.tar\",\"ccc/layer.tar\"]}]";
    assert_int_equal(tu_write_file(man, mj, strlen(mj)), 0);
    char *outer = tmpfile_in(dir, "image.tar");
    const char *members[] = {"manifest.json", man, "aaa/layer.tar", l1, "bbb/layer.tar", l2};
    /* docker save links a repeated layer to the first copy. */
    const char *links[] = {"ccc/layer.tar", "../aaa/layer.tar", NULL};
    write_outer(outer, members, 3, links);

    enum blob_format f;
    assert_int_equal(archive_detect(outer, &f, NULL, 0), 0);
    assert_int_equal(f, BLOB_DOCKER_ARCHIVE);
    struct archive_manifest m;
    struct err e = {0};
    /* In one pass with the scan; also when the scan rejects the outer tar as a layer (here:
     * more entries than the limit) before it saw its manifest. */
    struct archive_stats st;
    assert_int_equal(archive_scan_detect(outer, NULL, &f, NULL, 0, &st, &e), 0);
    assert_int_equal(f, BLOB_DOCKER_ARCHIVE);
    struct archive_policy few = archive_policy_default();
    few.max_entries = 1;
    f = BLOB_UNKNOWN;
    assert_int_equal(archive_scan_detect(outer, &few, &f, NULL, 0, &st, &e), 0);
    assert_int_equal(f, BLOB_DOCKER_ARCHIVE);
    assert_int_equal(e.code, 0);
    assert_int_equal(archive_manifest_read(outer, &m, &e), 0);
    assert_int_equal(m.n_layers, 3);
    assert_string_equal(m.repo_tag, "demo:1");
    assert_string_equal(m.layers[0].member, "aaa/layer.tar");
    assert_int_equal(m.layers[0].format, BLOB_TAR);
    assert_int_equal(m.layers[1].format, BLOB_TAR_GZIP);
    assert_int_equal(m.layers[2].format, BLOB_TAR);
    assert_null(m.layers[0].digest);

    /* The member copy is byte-identical to the layer written into it. */
    char *copy = tmpfile_in(dir, "copy");
    int fd = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_int_equal(archive_member_copy(outer, "ccc/layer.tar", fd, 0, &e), 0);
    close(fd);
    size_t n1, n2;
    char *c1 = tu_read_file(l1, &n1), *c2 = tu_read_file(copy, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(c1, c2, n1);
    free(c1), free(c2);
    fd = open(copy, O_WRONLY | O_TRUNC);
    err_clear(&e);
    assert_int_equal(archive_member_copy(outer, "aaa/layer.tar", fd, 100, &e), -EFBIG);
    err_clear(&e);
    assert_int_equal(archive_member_copy(outer, "../etc/passwd", fd, 0, &e), -EPERM);
    close(fd);
    archive_manifest_free(&m);

    /* A manifest naming a member outside the archive. */
    const char *evil = "[{\"Layers\":[\"../../etc/shadow\"]}]";
    assert_int_equal(tu_write_file(man, evil, strlen(evil)), 0);
    write_outer(outer, members, 2, NULL);
    err_clear(&e);
    assert_int_equal(archive_manifest_read(outer, &m, &e), -EPERM);
    assert_true(tu_contains(e.msg, "traversal"));
    /* A manifest naming a missing member. */
    const char *missing = "[{\"Layers\":[\"nothere/layer.tar\"]}]";
    assert_int_equal(tu_write_file(man, missing, strlen(missing)), 0);
    write_outer(outer, members, 2, NULL);
    err_clear(&e);
    assert_int_equal(archive_manifest_read(outer, &m, &e), -EBADMSG);

    free(l1), free(l2), free(man), free(outer), free(copy);
    tu_rmrf(dir);
    free(dir);
}

static void digest_of(const char *path, char out[DIGEST_STR_LEN + 1])
{
    uint8_t d[SHA256_LEN];
    assert_int_equal(sha256_file(path, d, NULL), 0);
    digest_format(d, out);
}

static void test_oci_layout(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("oci");
    char *l1 = tmpfile_in(dir, "l1"), *cfg = tmpfile_in(dir, "cfg"), *man = tmpfile_in(dir, "man");
    char *idx = tmpfile_in(dir, "index.json"), *lay = tmpfile_in(dir, "oci-layout");
    struct ent a[] = {{"usr/", 'd', NULL, 0755}, {"usr/x", 'f', "x", 0}};
    write_tar(l1, 'z', a, 2);
    assert_int_equal(tu_write_file(cfg, "{}", 2), 0);
    char dl[DIGEST_STR_LEN + 1], dc[DIGEST_STR_LEN + 1], dm[DIGEST_STR_LEN + 1];
    digest_of(l1, dl);
    digest_of(cfg, dc);
    char buf[1024];
    int n = snprintf(buf, sizeof(buf),
                     "{\"schemaVersion\":2,\"config\":{\"digest\":\"%s\",\"size\":2},"
                     "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\","
                     "\"digest\":\"%s\"}]}",
                     dc, dl);
    assert_int_equal(tu_write_file(man, buf, (size_t)n), 0);
    digest_of(man, dm);
    n = snprintf(buf, sizeof(buf),
                 "{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"%s\",\"annotations\":"
                 "{\"org.opencontainers.image.ref.name\":\"v1\"}}]}",
                 dm);
    assert_int_equal(tu_write_file(idx, buf, (size_t)n), 0);
    assert_int_equal(tu_write_file(lay, "{\"imageLayoutVersion\":\"1.0.0\"}", 30), 0);
    char ml[128], mc[128], mm[128];
    snprintf(ml, sizeof(ml), "blobs/sha256/%s", dl + 7);
    snprintf(mc, sizeof(mc), "blobs/sha256/%s", dc + 7);
    snprintf(mm, sizeof(mm), "blobs/sha256/%s", dm + 7);
    const char *members[] = {ml, l1, mc, cfg, mm, man, "index.json", idx, "oci-layout", lay};
    char *outer = tmpfile_in(dir, "oci.tar");
    write_outer(outer, members, 5, NULL);

    enum blob_format f;
    assert_int_equal(archive_detect(outer, &f, NULL, 0), 0);
    assert_int_equal(f, BLOB_OCI_LAYOUT);
    struct archive_manifest m;
    struct err e = {0};
    assert_int_equal(archive_manifest_read(outer, &m, &e), 0);
    assert_int_equal(m.n_layers, 1);
    assert_string_equal(m.layers[0].digest, dl);
    assert_string_equal(m.layers[0].member, ml);
    assert_int_equal(m.layers[0].format, BLOB_TAR_ZSTD);
    assert_string_equal(m.repo_tag, "v1");
    archive_manifest_free(&m);

    /* An index pointing at a digest that is not in the archive. */
    n = snprintf(buf, sizeof(buf), "{\"manifests\":[{\"digest\":\"sha256:%064d\"}]}", 0);
    assert_int_equal(tu_write_file(idx, buf, (size_t)n), 0);
    write_outer(outer, members, 5, NULL);
    err_clear(&e);
    assert_int_equal(archive_manifest_read(outer, &m, &e), -EBADMSG);
    assert_true(tu_contains(e.msg, "missing"));
    /* An invalid digest is never turned into a member name. */
    n = snprintf(buf, sizeof(buf), "{\"manifests\":[{\"digest\":\"sha256:../../x\"}]}");
    assert_int_equal(tu_write_file(idx, buf, (size_t)n), 0);
    write_outer(outer, members, 5, NULL);
    err_clear(&e);
    assert_int_equal(archive_manifest_read(outer, &m, &e), -EBADMSG);
    assert_true(tu_contains(e.msg, "digest"));

    free(l1), free(cfg), free(man), free(idx), free(lay), free(outer);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),     cmocka_unit_test(test_escape_and_allowlist),
        cmocka_unit_test(test_pathset),       cmocka_unit_test(test_detect),
        cmocka_unit_test(test_scan_apply),    cmocka_unit_test(test_apply_in_fork_child),
        cmocka_unit_test(test_policy_limits), cmocka_unit_test(test_docker_archive),
        cmocka_unit_test(test_oci_layout),    cmocka_unit_test(test_whiteouts_on_fresh_root),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
