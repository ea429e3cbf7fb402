/*
 * test_dm_thin.c: thin devices against real device-mapper (label dm: runs inside the VM,
 * tests/vm/run). Skips (77) where the kernel has no device-mapper.
 *
 *   - create pool -> thin -> mkfs -> private mount -> write -> unmount -> snapshot -> read the
 *     same bytes from the snapshot; the mount never shows in this process's namespace;
 *   - id allocation: the row is `creating` before the message (a crash right after the
 *     message leaves it so, and its id is never handed out again); a failed message records
 *     `failed`; an id the pool already has is a collision: `foreign`, next id used;
 *   - busy rules: snapshot of an active origin and deactivation of an open device: -EBUSY;
 *   - a full pool: the writer gets an error within seconds, status says out_of_data_space,
 *     deleting a device makes the pool usable again;
 *   - full metadata (a 1 MiB metadata device, many written snapshots): the pool goes ro, the
 *     status says so and new devices are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dm/dm.h"
#include "dm_fixture.h"
#include "dm/mount.h"
#include "dm/pool.h"
#include "dm/thin.h"
#include "store/db.h"
#include "store/schema.h"
#include "testutil.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/timeutil.h"

#define MIB (1024ull * 1024)

static struct dm_fixture fx;
static char *dir;
static char *pool = fx.pool;
static char *g_db_path = fx.db_path;
static struct db *db;

static int group_setup(void **state)
{
    (void)state;
    if (dm_fixture_setup(&fx, "dmthin", "tdm", 192 * MIB) < 0)
        return -1;
    dir = fx.dir;
    db = fx.db;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dm_fixture_teardown(&fx);
    return 0;
}

static const char *row_state(uint32_t id)
{
    static struct thin_dev d;
    if (thin_get(db, pool, id, &d) < 0)
        return "absent";
    return d.state;
}

/* ---- mount functions (run in the mount child) ------------------------------------------- */

#define PATTERN_BYTES (3 * MIB + 123)

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (unsigned char)(x >> 16);
    }
}

static int write_fn(int root_fd, void *ud, struct buf *out, struct err *e)
{
    unsigned seed = *(unsigned *)ud;
    unsigned char *p = malloc(PATTERN_BYTES);
    if (!p)
        return -ENOMEM;
    fill_pattern(p, PATTERN_BYTES, seed);
    int fd =
        openat(root_fd, "data.bin", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(p);
        return err_set(e, -errno, "create data.bin: %s", strerror(errno));
    }
    int r = write_all(fd, p, PATTERN_BYTES);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    close(fd);
    free(p);
    buf_puts(out, "written");
    return r;
}

static int read_fn(int root_fd, void *ud, struct buf *out, struct err *e)
{
    (void)ud;
    int fd = openat(root_fd, "data.bin", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, -errno, "open data.bin: %s", strerror(errno));
    char tmp[65536];
    ssize_t n;
    while ((n = read(fd, tmp, sizeof(tmp))) > 0)
        buf_append(out, tmp, (size_t)n);
    close(fd);
    return n < 0 ? -errno : 0;
}

static int failing_fn(int root_fd, void *ud, struct buf *out, struct err *e)
{
    (void)root_fd;
    (void)ud;
    (void)out;
    return err_set(e, -EBADMSG, "layer rejected: test says no");
}

static int sleepy_fn(int root_fd, void *ud, struct buf *out, struct err *e)
{
    (void)root_fd;
    (void)ud;
    (void)out;
    (void)e;
    sleep(60);
    return 0;
}

/* Writes 2 MiB into big.bin; under a 1 MiB RLIMIT_FSIZE the write must fail with EFBIG. */
static int big_write_fn(int root_fd, void *ud, struct buf *out, struct err *e)
{
    (void)ud;
    (void)out;
    int fd =
        openat(root_fd, "big.bin", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(e, -errno, "create big.bin: %s", strerror(errno));
    static char chunk[65536];
    int r = 0;
    for (int i = 0; i < 32 && r == 0; i++)
        r = write_all(fd, chunk, sizeof(chunk));
    close(fd);
    return r < 0 ? err_set(e, r, "write big.bin: %s", strerror(-r)) : 0;
}

static bool mounted_here(const char *what)
{
    char *mi = tu_read_file("/proc/self/mountinfo", NULL);
    bool found = tu_contains(mi, what);
    free(mi);
    return found;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_names(void **state)
{
    (void)state;
    char n[DM_NAME_MAX + 1];
    assert_int_equal(dm_name_format(n, sizeof(n), "thinimg", DM_KIND_LAYER, "7"), 0);
    assert_string_equal(n, "thinimg-layer-7");
    assert_int_equal(dm_name_format(n, sizeof(n), "p", DM_KIND_ACTIVATION, "a/b"), -EINVAL);
    assert_int_equal(dm_name_format(n, sizeof(n), "p", DM_KIND_ACTIVATION, "a b"), -EINVAL);
    char longs[200];
    memset(longs, 'x', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    assert_int_equal(dm_name_format(n, sizeof(n), "p", DM_KIND_ACTIVATION, longs), -ENAMETOOLONG);
    /* A name that is not valid never reaches the kernel. */
    struct err e = {0};
    assert_int_equal(dm_dev_create("bad/name", 8, "error", "", false, &e), -EINVAL);
    assert_true(tu_contains(e.msg, "invalid device name"));
}

/* The thin pool zeroes new blocks, so mkfs writes no zeros (assume_storage_prezeroed): a
 * 2 GiB file system maps a few MiB of the pool, not its inode tables (32 MiB) and journal
 * (8 MiB); the file system is complete and clean (e2fsck -fn), written to and checked again. */
#define MKFS_TEST_DEVICE_BYTES    (2048 * MIB)
#define MKFS_PREZEROED_MAX_MAPPED (4 * MIB) /* the old zeroing mkfs mapped ~40 MiB here */

static uint64_t mapped_bytes(const char *dm_name)
{
    struct dm_target_line t;
    struct err e = {0};
    unsigned long long sectors = 0;
    assert_int_equal(dm_dev_status(dm_name, &t, &e), 0);
    assert_int_equal(sscanf(t.params, "%llu", &sectors), 1);
    return sectors * DM_SECTOR_SIZE;
}

static int fsck_clean(const char *dev)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "e2fsck -fn %s >&2", dev);
    return system(cmd);
}

static void test_mkfs_prezeroed(void **state)
{
    (void)state;
    struct err e = {0};
    uint32_t id = 0;
    struct thin_spec spec = {.kind = THIN_KIND_TEST, .size_bytes = MKFS_TEST_DEVICE_BYTES};
    assert_int_equal(thin_create(db, pool, &spec, &id, &e), 0);
    char path[256];
    assert_int_equal(thin_activate(db, pool, id, path, sizeof(path), &e), 0);
    const char *name = path + strlen("/dev/mapper/");
    assert_int_equal(dm_mkfs_ext4(path, "prezeroed", &e), 0);
    uint64_t mapped = mapped_bytes(name);
    print_message("mkfs of a %llu MiB thin device mapped %llu KiB of the pool\n",
                  (unsigned long long)(MKFS_TEST_DEVICE_BYTES / MIB),
                  (unsigned long long)(mapped / 1024));
    assert_true(mapped <= MKFS_PREZEROED_MAX_MAPPED);
    assert_int_equal(fsck_clean(path), 0);

    unsigned seed = 7;
    struct buf res = BUF_INIT;
    struct mount_spec ms = {.device = path, .mountpoint = dir, .timeout_ms = 120000};
    if (mount_run(&ms, write_fn, &seed, &res, &e) < 0)
        fail_msg("write: %s", err_str(&e));
    buf_free(&res);
    assert_int_equal(fsck_clean(path), 0);
    assert_int_equal(thin_deactivate(db, pool, id, &e), 0);
    assert_int_equal(thin_delete(db, pool, id, &e), 0);
}

static void test_thin_mkfs_mount_snapshot(void **state)
{
    (void)state;
    struct err e = {0};
    uint32_t base = 0, snap = 0;
    struct thin_spec spec = {.kind = THIN_KIND_TEST, .size_bytes = 64 * MIB};
    assert_int_equal(thin_create(db, pool, &spec, &base, &e), 0);
    assert_string_equal(row_state(base), "ready");
    char path[256];
    assert_int_equal(thin_activate(db, pool, base, path, sizeof(path), &e), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISBLK(st.st_mode));
    /* Activating again is idempotent. */
    assert_int_equal(thin_activate(db, pool, base, NULL, 0, &e), 0);
    assert_int_equal(dm_mkfs_ext4(path, "base", &e), 0);

    unsigned seed = 42;
    struct mount_spec ms = {.device = path, .mountpoint = dir, .timeout_ms = 120000};
    struct buf res = BUF_INIT;
    int r = mount_run(&ms, write_fn, &seed, &res, &e);
    if (r < 0)
        fail_msg("write: %s", err_str(&e));
    assert_string_equal(res.data, "written");
    buf_free(&res);
    assert_false(mounted_here(path + strlen("/dev/mapper/")));
    assert_false(mounted_here(dir));

    /* A snapshot of an active origin is refused; so is deactivating an open device. */
    uint32_t refused = 0;
    struct err be = {0};
    assert_int_equal(thin_snapshot(db, pool, base, &spec, &refused, &be), -EBUSY);
    assert_true(tu_contains(be.msg, "deactivate it"));
    int holder = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(holder >= 0);
    err_clear(&be);
    assert_int_equal(thin_deactivate(db, pool, base, &be), -EBUSY);
    assert_true(tu_contains(be.msg, "is open"));
    close(holder);

    assert_int_equal(thin_deactivate(db, pool, base, &e), 0);
    assert_int_equal(dm_dev_exists(path + strlen("/dev/mapper/")), 0);
    assert_int_equal(thin_snapshot(db, pool, base, &spec, &snap, &e), 0);
    struct thin_dev d;
    assert_int_equal(thin_get(db, pool, snap, &d), 0);
    assert_string_equal(d.state, "ready");
    assert_int_equal(d.origin_id, base);
    char spath[256];
    assert_int_equal(thin_activate(db, pool, snap, spath, sizeof(spath), &e), 0);
    r = mount_run(&(struct mount_spec){.device = spath, .mountpoint = dir}, read_fn, NULL, &res,
                  &e);
    if (r < 0)
        fail_msg("read: %s", err_str(&e));
    unsigned char *want = malloc(PATTERN_BYTES);
    fill_pattern(want, PATTERN_BYTES, seed);
    assert_int_equal(res.len, PATTERN_BYTES);
    assert_memory_equal(res.data, want, PATTERN_BYTES);
    free(want);
    buf_free(&res);

    /* A failing function's error comes back; the child just exits (no cleanup needed). */
    err_clear(&e);
    r = mount_run(&(struct mount_spec){.device = spath, .mountpoint = dir}, failing_fn, NULL, NULL,
                  &e);
    assert_int_equal(r, -EBADMSG);
    assert_string_equal(e.msg, "layer rejected: test says no");
    assert_false(mounted_here(dir));

    /* Limits: a timeout kills the child (its mount goes with its namespace) ... */
    err_clear(&e);
    int64_t t0 = mono_ms();
    r = mount_run(&(struct mount_spec){.device = spath, .mountpoint = dir, .timeout_ms = 3000},
                  sleepy_fn, NULL, NULL, &e);
    assert_int_equal(r, -ETIMEDOUT);
    assert_true(mono_ms() - t0 < 20000);
    assert_false(mounted_here(dir));
    /* ... so does a cancel fd becoming readable (daemon shutdown during an unpack) ... */
    int cfd = eventfd(0, EFD_CLOEXEC);
    assert_true(cfd > 0);
    uint64_t one = 1;
    assert_int_equal(write(cfd, &one, sizeof(one)), (ssize_t)sizeof(one));
    err_clear(&e);
    t0 = mono_ms();
    r = mount_run(&(struct mount_spec){.device = spath, .mountpoint = dir, .cancel_fd = cfd},
                  sleepy_fn, NULL, NULL, &e);
    assert_int_equal(r, -ECANCELED);
    assert_true(tu_contains(e.msg, "cancelled"));
    assert_true(mono_ms() - t0 < 20000);
    assert_false(mounted_here(dir));
    close(cfd);
    /* ... and rlimits apply inside it. */
    struct mount_limits lim = {.fsize_bytes = 1024 * 1024};
    err_clear(&e);
    r = mount_run(&(struct mount_spec){.device = spath, .mountpoint = dir, .limits = &lim},
                  big_write_fn, NULL, NULL, &e);
    assert_int_equal(r, -EFBIG);
    /* The device is free again: no mount is left anywhere. */
    struct dm_dev_info di;
    assert_int_equal(dm_dev_info(spath + strlen("/dev/mapper/"), &di, &e), 0);
    assert_int_equal(di.open_count, 0);

    /* Both ids are in the pool's metadata. */
    uint32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(thin_pool_metadata_ids(pool, &ids, NULL, &n, &e), 0);
    bool has_base = false, has_snap = false;
    for (size_t i = 0; i < n; i++) {
        has_base |= ids[i] == base;
        has_snap |= ids[i] == snap;
    }
    free(ids);
    assert_true(has_base && has_snap);
    assert_int_equal(thin_deactivate(db, pool, snap, &e), 0);
}

static void crash_hook(uint32_t id)
{
    (void)id;
    _exit(42); /* kill -9 between the message and the confirmation */
}

static void test_id_crash_between_message_and_confirm(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct db *cdb = NULL;
        if (db_open(g_db_path, NULL, &cdb, NULL) < 0)
            _exit(1);
        thin_test_hook_after_message = crash_hook;
        uint32_t id = 0;
        struct thin_spec spec = {
            .kind = THIN_KIND_TEST, .name_suffix = "crashed", .size_bytes = 16 * MIB};
        thin_create(cdb, pool, &spec, &id, NULL);
        _exit(2); /* the hook did not run */
    }
    int st = 0;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 42);

    char name[DM_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s-test-crashed", pool);
    struct thin_dev crashed;
    assert_int_equal(thin_find_by_name(db, name, &crashed), 0);
    assert_string_equal(crashed.state, "creating");
    /* The pool has it: the row was committed before the message. */
    uint32_t *ids = NULL;
    size_t n = 0;
    struct err e = {0};
    assert_int_equal(thin_pool_metadata_ids(pool, &ids, NULL, &n, &e), 0);
    bool in_pool = false;
    for (size_t i = 0; i < n; i++)
        in_pool |= ids[i] == crashed.id;
    free(ids);
    assert_true(in_pool);
    /* Never reused: the next allocation moves on. */
    uint32_t next = 0;
    struct thin_spec spec = {.kind = THIN_KIND_TEST, .size_bytes = 16 * MIB};
    assert_int_equal(thin_create(db, pool, &spec, &next, &e), 0);
    assert_true(next > crashed.id);
    assert_string_equal(row_state(crashed.id), "creating");
    /* The same name cannot be created twice while the creating row exists. */
    uint32_t dup = 0;
    struct err de = {0};
    struct thin_spec again = {
        .kind = THIN_KIND_TEST, .name_suffix = "crashed", .size_bytes = 16 * MIB};
    assert_int_equal(thin_create(db, pool, &again, &dup, &de), -EEXIST);
    assert_true(tu_contains(de.msg, "already exists"));
}

static void test_failed_message_recorded(void **state)
{
    (void)state;
    /* An origin the database believes in but the pool does not have: create_snap fails. */
    uint32_t ghost = 900000;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO devices(pool, dev_id, name, kind, state, size_bytes, created_at_ms,"
             " updated_at_ms) VALUES('%s', %u, '%s-test-ghost', 'test', 'ready', %llu, 0, 0)",
             pool, ghost, pool, (unsigned long long)(16 * MIB));
    assert_int_equal(db_exec(db, sql), 0);
    uint32_t id = 0;
    struct err e = {0};
    struct thin_spec spec = {.kind = THIN_KIND_TEST, .name_suffix = "of-ghost"};
    int r = thin_snapshot(db, pool, ghost, &spec, &id, &e);
    assert_true(r < 0);
    assert_true(tu_contains(e.msg, "create_snap"));
    char name[DM_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s-test-of-ghost", pool);
    struct thin_dev d;
    assert_int_equal(thin_find_by_name(db, name, &d), 0);
    assert_string_equal(d.state, "failed");
    assert_true(tu_contains(d.error, "create_snap"));
}

static void test_collision(void **state)
{
    (void)state;
    /* Someone else creates the id the sequence will hand out next. */
    int64_t next = 0;
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "SELECT next_id FROM device_id_seq WHERE pool=?");
    db_bind_text(st, 1, pool);
    assert_int_equal(db_step(db, st), 1);
    next = sqlite3_column_int64(st, 0);
    db_done(st);
    db_unlock(db);
    char msg[64];
    snprintf(msg, sizeof(msg), "create_thin %lld", (long long)next);
    struct err e = {0};
    assert_int_equal(dm_dev_message(pool, msg, NULL, &e), 0);
    /* Sending it again shows the kernel's answer for a used id. */
    assert_int_equal(dm_dev_message(pool, msg, NULL, NULL), -EEXIST);

    uint32_t id = 0;
    struct thin_spec spec = {.kind = THIN_KIND_TEST, .size_bytes = 16 * MIB};
    assert_int_equal(thin_create(db, pool, &spec, &id, &e), 0);
    assert_int_equal(id, next + 1);
    assert_string_equal(row_state((uint32_t)next), "foreign");
    assert_string_equal(row_state(id), "ready");
}

static void test_fill_pool_fails_fast(void **state)
{
    (void)state;
    /* A pool of its own: 16 MiB of data, a 64 MiB device. */
    char fpool[80];
    snprintf(fpool, sizeof(fpool), "%sfill", pool);
    struct err e = {0};
    struct pool_config pc = {.name = fpool, .pool_dir = dir, .data_bytes = 16 * MIB};
    struct pool_info info;
    assert_int_equal(pool_setup(db, &pc, &info, &e), 0);
    assert_true(info.status.error_if_no_space);
    uint32_t id = 0, id2 = 0;
    struct thin_spec spec = {.kind = THIN_KIND_TEST, .size_bytes = 64 * MIB};
    assert_int_equal(thin_create(db, fpool, &spec, &id, &e), 0);
    char path[256];
    assert_int_equal(thin_activate(db, fpool, id, path, sizeof(path), &e), 0);
    int fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    assert_true(fd >= 0);
    size_t chunk = MIB;
    void *p = NULL;
    assert_int_equal(posix_memalign(&p, 4096, chunk), 0);
    memset(p, 0xab, chunk);
    int64_t t0 = mono_ms(), worst = 0;
    ssize_t w = 0;
    int err_no = 0;
    for (int i = 0; i < 64; i++) {
        int64_t c0 = mono_ms();
        w = pwrite(fd, p, chunk, (off_t)i * (off_t)chunk);
        int64_t dt = mono_ms() - c0;
        if (dt > worst)
            worst = dt;
        if (w < 0) {
            err_no = errno;
            break;
        }
    }
    int64_t total = mono_ms() - t0;
    free(p);
    close(fd);
    print_message("fill: writer error %s after %lld ms (slowest write %lld ms)\n", strerror(err_no),
                  (long long)total, (long long)worst);
    assert_true(w < 0);
    assert_true(err_no == EIO || err_no == ENOSPC);
    assert_true(worst < 5000);
    assert_int_equal(pool_get(db, fpool, &info, &e), 0);
    assert_int_equal(info.status.mode, POOL_MODE_OUT_OF_DATA_SPACE);
    assert_int_equal(info.status.data_used, info.status.data_total);
    struct err ue = {0};
    assert_int_equal(pool_check_usable(fpool, &info.status, NULL, &ue), -ENOSPC);
    assert_true(tu_contains(ue.msg, "out of data space"));
    /* New devices are refused while full. */
    err_clear(&ue);
    assert_int_equal(pool_ensure_usable(fpool, NULL, &ue), -ENOSPC);

    /* Deleting the device frees the pool. */
    assert_int_equal(thin_deactivate(db, fpool, id, &e), 0);
    assert_int_equal(thin_delete(db, fpool, id, &e), 0);
    struct thin_dev d;
    assert_int_equal(thin_get(db, fpool, id, &d), 0);
    assert_string_equal(d.state, "deleted");
    assert_int_equal(pool_get(db, fpool, &info, &e), 0);
    assert_int_equal(info.status.mode, POOL_MODE_RW);
    assert_int_equal(info.status.data_used, 0);
    assert_int_equal(pool_ensure_usable(fpool, NULL, &e), 0);
    assert_int_equal(thin_create(db, fpool, &spec, &id2, &e), 0);
    assert_int_equal(id2, id + 1);
    /* Delete is idempotent for an id the pool no longer has. */
    assert_int_equal(thin_delete(db, fpool, id, &e), 0);

    int rc = system("true");
    (void)rc;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "dmsetup remove %s", fpool);
    rc = system(cmd);
    (void)rc;
}

/*
 * Metadata full: a 1 MiB metadata device and many snapshots of one origin, each written once
 * (every write to a shared mapping copies btree nodes). The kernel switches the pool to
 * read-only before the metadata is exhausted; new devices are refused from then on.
 */
static void test_metadata_exhaustion_goes_ro(void **state)
{
    (void)state;
    char mpool[80], meta[600], data[600];
    snprintf(mpool, sizeof(mpool), "%smeta", pool);
    snprintf(meta, sizeof(meta), "%s/%s-meta.img", dir, mpool);
    snprintf(data, sizeof(data), "%s/%s-data.img", dir, mpool);
    /* Below what setup-pool creates (2 MiB): made by hand, then reassembled from its files. */
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "fallocate -l 1M %s && fallocate -l 64M %s", meta, data);
    assert_int_equal(system(cmd), 0);
    struct err e = {0};
    struct pool_config pc = {
        .name = mpool, .pool_dir = dir, .data_file = data, .metadata_file = meta};
    struct pool_info info;
    int r = pool_setup(db, &pc, &info, &e);
    if (r < 0)
        fail_msg("pool_setup: %s", err_str(&e));
    assert_int_equal(info.action, POOL_ACTION_REASSEMBLED);
    uint64_t meta_total = info.status.meta_total;

    uint32_t base = 0;
    struct thin_spec spec = {.kind = THIN_KIND_TEST, .size_bytes = 16 * MIB};
    assert_int_equal(thin_create(db, mpool, &spec, &base, &e), 0);
    char path[256];
    assert_int_equal(thin_activate(db, mpool, base, path, sizeof(path), &e), 0);
    void *p = NULL;
    assert_int_equal(posix_memalign(&p, 4096, 64 * 1024), 0);
    memset(p, 0x5a, 64 * 1024);
    int fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    assert_true(fd >= 0);
    for (int i = 0; i < 256; i++) /* 16 MiB: a full mapping tree to share */
        assert_int_equal(pwrite(fd, p, 64 * 1024, (off_t)i * 64 * 1024), 64 * 1024);
    close(fd);
    assert_int_equal(thin_deactivate(db, mpool, base, &e), 0);

    int rounds = 0, refused_at = -1;
    int64_t deadline = mono_ms() + 240000;
    for (; rounds < 5000 && mono_ms() < deadline; rounds++) {
        uint32_t id = 0;
        err_clear(&e);
        if (pool_ensure_usable(mpool, &(struct pool_limits){.max_meta_pct = 100.0}, &e) < 0) {
            refused_at = rounds;
            break;
        }
        if (thin_snapshot(db, mpool, base, &(struct thin_spec){.kind = THIN_KIND_TEST}, &id, &e) <
            0) {
            refused_at = rounds;
            break;
        }
        char spath[256];
        if (thin_activate(db, mpool, id, spath, sizeof(spath), &e) < 0) {
            refused_at = rounds;
            break;
        }
        fd = open(spath, O_WRONLY | O_DIRECT | O_CLOEXEC);
        if (fd >= 0) {
            /* Three writes spread over the tree: three leaves copied per snapshot. */
            for (int k = 0; k < 3; k++)
                if (pwrite(fd, p, 4096, (off_t)((k * 97 + rounds) % 256) * 64 * 1024) < 0)
                    break;
            close(fd);
        }
        thin_deactivate(db, mpool, id, NULL);
    }
    free(p);
    assert_int_equal(pool_get(db, mpool, &info, &e), 0);
    print_message("metadata: %d snapshots before refusal, status %s, metadata %llu/%llu "
                  "blocks\n",
                  refused_at, pool_mode_name(info.status.mode),
                  (unsigned long long)info.status.meta_used,
                  (unsigned long long)info.status.meta_total);
    assert_true(refused_at > 0);
    assert_int_equal(info.status.meta_total, meta_total);
    assert_int_equal(info.status.mode, POOL_MODE_RO);
    struct err ue = {0};
    r = pool_check_usable(mpool, &info.status, NULL, &ue);
    assert_true(r == -EHOSTDOWN || r == -EUCLEAN);
    assert_true(tu_contains(ue.msg, "read-only") || tu_contains(ue.msg, "needs_check"));
    /* And the pool refuses to create devices: the message fails, the row records it. */
    uint32_t id = 0;
    err_clear(&e);
    assert_true(thin_create(db, mpool, &spec, &id, &e) < 0);
    snprintf(cmd, sizeof(cmd), "dmsetup remove %s", mpool);
    r = system(cmd);
    (void)r;
}

int main(void)
{
    if (!dm_fixture_usable())
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_thin_mkfs_mount_snapshot),
        cmocka_unit_test(test_mkfs_prezeroed),
        cmocka_unit_test(test_id_crash_between_message_and_confirm),
        cmocka_unit_test(test_failed_message_recorded),
        cmocka_unit_test(test_collision),
        cmocka_unit_test(test_fill_pool_fails_fast),
        cmocka_unit_test(test_metadata_exhaustion_goes_ro),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
