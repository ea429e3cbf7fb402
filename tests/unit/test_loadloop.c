/*
 * test_loadloop.c: the queue-sizing loop on a real FSM manager: runs waiting in the fetch and
 * unpack queues, a fake /proc/pressure and a fake pool. The loop reads them, steps the
 * controllers and sets the manager's queue limits: at the maximum from the start on a calm
 * host, up on a quiet host with work waiting, down
 * on I/O pressure, unpack only down on pool trouble, pinned queues untouched; with a fake
 * sysfs and diskstats, the pool's disk measured: the queue's own I/O kept, foreign I/O to 1;
 * the blob store on another disk: a writer on either disk lowers only the queue that uses it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fsm_testutil.h"
#include "pipeline/loadloop.h"
#include "util/fsutil.h"

static char *dir;
static struct db *db;
static bool pool_bad;

static int setup(void **state)
{
    (void)state;
    dir = tu_mkdtemp("loadloop");
    db = ft_open_db(dir);
    pool_bad = false;
    return db ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    db_close(db);
    tu_rmrf(dir);
    free(dir);
    return 0;
}

/* The fake pressure files: I/O avg10 values and the I/O total counters (microseconds). */
static void pressure_totals(const char *io_some, const char *io_full, unsigned long long some_us,
                            unsigned long long full_us)
{
    char path[512], text[256];
    snprintf(path, sizeof(path), "%s/proc/pressure", dir);
    mkdir_p(path, 0755);
    snprintf(path, sizeof(path), "%s/proc/pressure/io", dir);
    snprintf(text, sizeof(text),
             "some avg10=%s avg60=0.00 avg300=0.00 total=%llu\n"
             "full avg10=%s avg60=0.00 avg300=0.00 total=%llu\n",
             io_some, some_us, io_full, full_us);
    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
    snprintf(path, sizeof(path), "%s/proc/pressure/memory", dir);
    const char *mem = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                      "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    assert_int_equal(tu_write_file(path, mem, strlen(mem)), 0);
}

static void pressure_at(const char *io_some, const char *io_full, unsigned long long total_us)
{
    pressure_totals(io_some, io_full, total_us, total_us);
}

static void pressure(const char *io_some, const char *io_full)
{
    pressure_at(io_some, io_full, 1);
}

static bool fake_pool(void *ud, char *why, size_t n)
{
    (void)ud;
    if (pool_bad)
        snprintf(why, n, "data 96%% used");
    return pool_bad;
}

/* n gated runs, alternately in the unpack and the fetch queue */
static void start_runs(struct fsm_manager *m, struct fsm_machine *x, struct fsm_id *v, int n)
{
    for (int i = 0; i < n; i++) {
        char res[8];
        snprintf(res, sizeof(res), "r%d", i);
        struct fsm_start_opts o = {.queue = i % 2 ? "fetch" : "unpack"};
        assert_int_equal(fsm_start(m, x, res, NULL, 0, &o, &v[i]), 0);
    }
}

static void ticks(struct loadloop *l, int n)
{
    for (int i = 0; i < n; i++)
        loadloop_tick(l);
}

/* A manager with the two queues q and n runs held at their first step by t's gate. */
static struct fsm_manager *gated_runs(struct ft *t, const struct fsm_queue_cfg *q, struct fsm_id *v,
                                      int n)
{
    ft_init(t);
    t->step[0].gate = true;
    struct fsm_manager *m = ft_open_manager(db, q, 2);
    struct fsm_machine *x = ft_register(m, t, "work", 1, NULL);
    start_runs(m, x, v, n);
    return m;
}

/* Opens the gate, waits for the n runs and closes the manager. */
static void finish_runs(struct fsm_manager *m, struct ft *t, struct fsm_id *v, int n)
{
    ft_open_gate(t);
    for (int i = 0; i < n; i++)
        assert_int_equal(fsm_wait(m, &v[i], 20000, NULL, NULL), 0);
    fsm_manager_close(m);
}

static void test_follows_load(void **state)
{
    (void)state;
    struct ft t;
    static const struct fsm_queue_cfg q[] = {{"fetch", 1}, {"unpack", 1}};
    struct fsm_id v[12];
    struct fsm_manager *m = gated_runs(&t, q, v, 12);
    pressure("20.00", "0.00"); /* loaded at start: the queues stay at 1 (test_calm_start) */
    char proc[512];
    snprintf(proc, sizeof(proc), "%s/proc", dir);
    struct loadloop_opts o = {.mgr = m,
                              .max = {4, 3},
                              .src = {.pool_trouble = fake_pool, .proc_root = proc},
                              .interval_ms = 3600 * 1000 /* the test ticks by hand */};
    struct loadloop *l = NULL;
    assert_int_equal(loadloop_start(&o, &l), 0);
    struct loadctl_params p = loadctl_defaults(4, false);
    int per_raise = p.calm_ticks + p.probe_ticks;
    struct loadloop_state fs, us;
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_int_equal(us.limit, 1);
    assert_string_equal(us.reason, "");
    pressure("1.00", "0.00");
    /* quiet, work waiting: both climb to their maxima, and the manager admits that many */
    ticks(l, 3 * per_raise + 2);
    loadloop_get(l, LOADLOOP_FETCH, &fs);
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_int_equal(fs.limit, 4);
    assert_int_equal(us.limit, 3);
    assert_true(strstr(us.reason, "low pressure and work waiting") != NULL);
    struct fsm_queue_stats qs;
    assert_int_equal(fsm_queue_stats(m, "unpack", &qs), 0);
    assert_int_equal(qs.limit, 3);
    assert_true(us.last.psi);
    assert_int_equal(us.last.running, 3);

    /* the pool fills: unpack drops to 1, fetch stays */
    pool_bad = true;
    ticks(l, 2);
    loadloop_get(l, LOADLOOP_FETCH, &fs);
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_int_equal(us.limit, 1);
    assert_true(strstr(us.reason, "pool trouble (data 96% used)") != NULL);
    assert_int_equal(fs.limit, 4);
    assert_int_equal(fsm_queue_stats(m, "unpack", &qs), 0);
    assert_int_equal(qs.limit, 1);
    pool_bad = false;

    /* I/O pressure: fetch halves too */
    pressure("55.00", "20.00");
    ticks(l, 2);
    loadloop_get(l, LOADLOOP_FETCH, &fs);
    assert_int_equal(fs.limit, 1);
    assert_true(strstr(fs.reason, "I/O pressure") != NULL);

    loadloop_stop(l);
    finish_runs(m, &t, v, 12);
}

static void test_pinned_and_no_psi(void **state)
{
    (void)state;
    struct ft t;
    /* pinned above the maximum the controller would use: the pin is what runs and shows */
    static const struct fsm_queue_cfg q[] = {{"fetch", 1}, {"unpack", 6}};
    struct fsm_id v[8];
    struct fsm_manager *m = gated_runs(&t, q, v, 8);
    char proc[512];
    snprintf(proc, sizeof(proc), "%s/no-proc", dir); /* no pressure files: no PSI */
    struct loadloop_opts o = {.mgr = m,
                              .max = {3, 4},
                              .pinned = {0, 6},
                              .src = {.pool_trouble = fake_pool, .proc_root = proc},
                              .interval_ms = 3600 * 1000};
    struct loadloop *l = NULL;
    assert_int_equal(loadloop_start(&o, &l), 0);
    pool_bad = true;
    ticks(l, 40);
    struct loadloop_state fs, us;
    loadloop_get(l, LOADLOOP_FETCH, &fs);
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_true(us.pinned);
    assert_int_equal(us.limit, 6); /* pinned: the pool's trouble does not move it */
    assert_int_equal(us.max, 6);
    struct fsm_queue_stats qs;
    assert_int_equal(fsm_queue_stats(m, "unpack", &qs), 0);
    assert_int_equal(qs.limit, 6);
    assert_false(fs.last.psi);
    assert_int_equal(fs.limit, 3); /* without PSI, demand and throughput still raise it */
    loadloop_stop(l);
    finish_runs(m, &t, v, 8);
}

/* The signals read when the loop starts, before it admits anything more: a calm host puts each
 * queue at its maximum at once (the manager admits that many), a loaded one leaves them. */
static void test_calm_start(void **state)
{
    (void)state;
    struct ft t;
    static const struct fsm_queue_cfg q[] = {{"fetch", 1}, {"unpack", 1}};
    struct fsm_id v[12];
    struct fsm_manager *m = gated_runs(&t, q, v, 12);
    char proc[512];
    snprintf(proc, sizeof(proc), "%s/proc", dir);
    struct loadloop_opts o = {.mgr = m,
                              .max = {4, 3},
                              .src = {.pool_trouble = fake_pool, .proc_root = proc},
                              .interval_ms = 3600 * 1000};
    for (int loaded = 1; loaded >= 0; loaded--) {
        pressure(loaded ? "12.00" : "1.00", "0.00");
        struct loadloop *l = NULL;
        assert_int_equal(loadloop_start(&o, &l), 0);
        struct loadloop_state fs, us;
        loadloop_get(l, LOADLOOP_FETCH, &fs);
        loadloop_get(l, LOADLOOP_UNPACK, &us);
        struct fsm_queue_stats qs;
        assert_int_equal(fsm_queue_stats(m, "unpack", &qs), 0);
        assert_int_equal(fs.limit, loaded ? 1 : 4);
        assert_int_equal(us.limit, loaded ? 1 : 3);
        assert_int_equal(qs.limit, us.limit);
        assert_int_equal(qs.running, us.limit);
        if (!loaded)
            assert_true(strstr(us.reason, "1 -> 3: calm at start") != NULL);
        loadloop_stop(l);
    }
    finish_runs(m, &t, v, 12);
}

/* A hog seen in the total counters before avg10 moves: the first hot interval alone changes
 * nothing, the second in a row halves the limit. Each interval's counter grows by 10 s of
 * stall, more than any interval here lasts (the share is capped at 100%), so a slow machine
 * still sees it as hot. */
static void test_interval_share(void **state)
{
    (void)state;
    struct ft t;
    static const struct fsm_queue_cfg q[] = {{"fetch", 1}, {"unpack", 4}};
    struct fsm_id v[4];
    struct fsm_manager *m = gated_runs(&t, q, v, 4);
    unsigned long long total = 1000;
    pressure_at("1.00", "0.00", total);
    char proc[512];
    snprintf(proc, sizeof(proc), "%s/proc", dir);
    struct loadloop_opts o = {.mgr = m,
                              .max = {1, 4},
                              .src = {.pool_trouble = fake_pool, .proc_root = proc},
                              .interval_ms = 3600 * 1000};
    struct loadloop *l = NULL;
    assert_int_equal(loadloop_start(&o, &l), 0);
    struct loadloop_state us;
    ticks(l, 2); /* quiet: the counter does not move */
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_int_equal(us.limit, 4);
    total += 10ULL * 1000 * 1000;
    pressure_at("1.00", "0.00", total);
    ticks(l, 1);
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_int_equal(us.limit, 4); /* one hot interval: not yet */
    assert_true(us.last.io_some_now > 40);
    total += 10ULL * 1000 * 1000;
    pressure_at("1.00", "0.00", total);
    ticks(l, 1);
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_int_equal(us.limit, 2);
    assert_true(strstr(us.reason, "I/O pressure: all tasks stalled 100.0% of the last 4 s") !=
                NULL);
    loadloop_stop(l);
    finish_runs(m, &t, v, 4);
}

static char pool_file[1024];

/* A disk named name for the device of path in the fake sysfs; its numbers in *ma, *mi. */
static void fake_disk(const char *path, const char *name, unsigned *ma, unsigned *mi)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    *ma = major(st.st_dev);
    *mi = minor(st.st_dev);
    char p[1024], text[64];
    snprintf(p, sizeof(p), "%s/sys/dev/block/%u:%u", dir, *ma, *mi);
    assert_int_equal(mkdir_p(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/sys/dev/block/%u:%u/uevent", dir, *ma, *mi);
    int n = snprintf(text, sizeof(text), "DEVNAME=%s\n", name);
    assert_int_equal(tu_write_file(p, text, (size_t)n), 0);
}

static int fake_pool_data(void *ud, char *path, size_t n)
{
    (void)ud;
    snprintf(path, n, "%s", pool_file);
    return 1;
}

/* This process's byte counter (write_bytes), in the fake /proc. */
static void own_at(unsigned long long own_bytes)
{
    char path[512], text[256];
    snprintf(path, sizeof(path), "%s/proc/self", dir);
    mkdir_p(path, 0755);
    snprintf(path, sizeof(path), "%s/proc/self/io", dir);
    int n = snprintf(text, sizeof(text), "rchar: 0\nwchar: 0\nread_bytes: 0\nwrite_bytes: %llu\n",
                     own_bytes);
    assert_int_equal(tu_write_file(path, text, (size_t)n), 0);
}

/* The disk's and this process's byte counters, in a fake /proc. */
static void io_at(unsigned ma, unsigned mi, unsigned long long disk_bytes,
                  unsigned long long own_bytes)
{
    char path[512], text[256];
    snprintf(path, sizeof(path), "%s/proc/diskstats", dir);
    snprintf(text, sizeof(text), " %u %u vdq 1 0 0 1 1 0 %llu 1 0 1 1\n", ma, mi, disk_bytes / 512);
    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
    own_at(own_bytes);
}

/* The pool's data file on a disk found through a fake sysfs. The unpacks' own bytes (with
 * stalls that would halve the queue unmeasured) keep it at its maximum; a writer's bytes
 * beyond them put it at 1 on the second interval. */
static void test_foreign_io(void **state)
{
    (void)state;
    struct ft t;
    static const struct fsm_queue_cfg q[] = {{"fetch", 1}, {"unpack", 4}};
    struct fsm_id v[4];
    struct fsm_manager *m = gated_runs(&t, q, v, 4);
    snprintf(pool_file, sizeof(pool_file), "%s/pool.data", dir);
    assert_int_equal(tu_write_file(pool_file, "x", 1), 0);
    unsigned dma, dmi;
    fake_disk(pool_file, "vdq", &dma, &dmi); /* the file's block device is the disk */
    char path[1024];
    unsigned long long total = 1000, disk = 1ULL << 30, own = 1ULL << 20;
    pressure_at("1.00", "0.00", total);
    io_at(dma, dmi, disk, own);
    char proc[512], sys[512];
    snprintf(proc, sizeof(proc), "%s/proc", dir);
    snprintf(sys, sizeof(sys), "%s/sys", dir);
    struct loadloop_opts o = {.mgr = m,
                              .max = {1, 4},
                              .src = {.pool_trouble = fake_pool,
                                      .pool_data = fake_pool_data,
                                      .proc_root = proc,
                                      .sys_root = sys},
                              .interval_ms = 3600 * 1000};
    struct loadloop *l = NULL;
    assert_int_equal(loadloop_start(&o, &l), 0);
    struct loadloop_state us;
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_int_equal(us.limit, 4);
    /* the unpacks' own: 64 MiB an interval dirtied, 128 MiB on the disk, some task stalled
     * all the time (every task, never) */
    for (int i = 0; i < 6; i++) {
        usleep(2000); /* rates need time between the samples */
        total += 10ULL * 1000 * 1000;
        own += 64ULL << 20;
        disk += 128ULL << 20;
        pressure_totals("60.00", "0.00", total, 1000);
        io_at(dma, dmi, disk, own);
        loadloop_tick(l);
    }
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_int_equal(us.limit, 4);
    assert_true(us.last.disk);
    assert_string_equal(us.disk, "vdq");
    assert_true(us.last.own_bps > 0 && us.last.foreign_bps == 0);
    /* a writer: 1 GiB more an interval on the disk */
    for (int i = 0; i < 2; i++) {
        usleep(2000);
        total += 10ULL * 1000 * 1000;
        own += 64ULL << 20;
        disk += (128ULL << 20) + (1ULL << 30);
        pressure_totals("60.00", "0.00", total, 1000);
        io_at(dma, dmi, disk, own);
        loadloop_tick(l);
        loadloop_get(l, LOADLOOP_UNPACK, &us);
        assert_int_equal(us.limit, i == 0 ? 4 : 1);
    }
    assert_true(strstr(us.reason, "4 -> 1: foreign I/O") != NULL);
    loadloop_stop(l);

    /* a pool on tmpfs (no block device under its data): measured never, pressure as before */
    snprintf(path, sizeof(path), "%s/sys/dev", dir);
    tu_rmrf(path);
    assert_int_equal(loadloop_start(&o, &l), 0);
    usleep(2000);
    loadloop_tick(l);
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    assert_false(us.last.disk);
    assert_string_equal(us.disk, "");
    loadloop_stop(l);
    finish_runs(m, &t, v, 4);
}

/* Two disks' byte counters (c[0] the pool's, c[1] the store's, written sectors) and this
 * process's (c[2]). */
static void io2_at(const unsigned dev[4], const unsigned long long c[3])
{
    char path[512], text[512];
    snprintf(path, sizeof(path), "%s/proc/diskstats", dir);
    int n = snprintf(text, sizeof(text),
                     " %u %u vdq 1 0 0 1 1 0 %llu 1 0 1 1\n %u %u vdr 1 0 0 1 1 0 %llu 1 0 1 1\n",
                     dev[0], dev[1], c[0] / 512, dev[2], dev[3], c[1] / 512);
    assert_int_equal(tu_write_file(path, text, (size_t)n), 0);
    own_at(c[2]);
}

/* Three intervals of a writer moving 1 GiB on disk d (0 the pool's, 1 the store's), some task
 * stalled 100% of each (avg10 60%). */
static void writer_ticks(struct loadloop *l, const unsigned dev[4], unsigned long long *total,
                         unsigned long long c[3], int d)
{
    for (int i = 0; i < 3; i++) {
        usleep(2000); /* rates need time between the samples */
        *total += 12ULL * 1000 * 1000;
        c[d] += 1ULL << 30;
        pressure_totals("60.00", "0.00", *total, 1000);
        io2_at(dev, c);
        loadloop_tick(l);
    }
}

/* The pool on one disk (vdq), the blob store on another (vdr: /proc stands for a directory of
 * another file system): each queue watches its own disk. A writer on the pool's disk puts the
 * unpack queue at 1 and leaves the fetch queue at its maximum; one on the store's disk then
 * puts the fetch queue at 1. */
static void test_store_disk(void **state)
{
    (void)state;
    struct ft t;
    static const struct fsm_queue_cfg q[] = {{"fetch", 4}, {"unpack", 4}};
    struct fsm_id v[8];
    struct fsm_manager *m = gated_runs(&t, q, v, 8); /* 4 in each queue */
    snprintf(pool_file, sizeof(pool_file), "%s/pool.data", dir);
    assert_int_equal(tu_write_file(pool_file, "x", 1), 0);
    unsigned dev[4];
    fake_disk(pool_file, "vdq", &dev[0], &dev[1]);
    fake_disk("/proc", "vdr", &dev[2], &dev[3]);
    assert_false(dev[0] == dev[2] && dev[1] == dev[3]);
    unsigned long long total = 1000, c[3] = {1ULL << 30, 1ULL << 30, 1ULL << 20};
    pressure_at("1.00", "0.00", total);
    io2_at(dev, c);
    char proc[512], sys[512];
    snprintf(proc, sizeof(proc), "%s/proc", dir);
    snprintf(sys, sizeof(sys), "%s/sys", dir);
    struct loadloop_opts o = {.mgr = m,
                              .max = {4, 4},
                              .src = {.pool_data = fake_pool_data,
                                      .store_dir = "/proc",
                                      .proc_root = proc,
                                      .sys_root = sys},
                              .interval_ms = 3600 * 1000};
    struct loadloop *l = NULL;
    assert_int_equal(loadloop_start(&o, &l), 0);
    struct loadloop_state fs, us;
    /* a writer on the pool's disk, some task stalled 60% of the time */
    writer_ticks(l, dev, &total, c, 0);
    loadloop_get(l, LOADLOOP_UNPACK, &us);
    loadloop_get(l, LOADLOOP_FETCH, &fs);
    assert_int_equal(us.limit, 1);
    assert_true(strstr(us.reason, "on the pool's disk") != NULL);
    assert_string_equal(us.disk, "vdq");
    assert_int_equal(fs.limit, 4);
    assert_string_equal(fs.disk, "vdr");
    assert_true(fs.last.disk && fs.last.foreign_bps == 0);
    assert_true(us.last.foreign_bps > 100.0 * (1 << 20));
    /* then a writer on the store's disk */
    writer_ticks(l, dev, &total, c, 1);
    loadloop_get(l, LOADLOOP_FETCH, &fs);
    assert_int_equal(fs.limit, 1);
    assert_true(strstr(fs.reason, "on the blob store's disk") != NULL);
    loadloop_stop(l);
    finish_runs(m, &t, v, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_follows_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pinned_and_no_psi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calm_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interval_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_io, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_disk, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
