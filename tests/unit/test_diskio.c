/*
 * test_diskio.c: foreign I/O on the pool's disk: the credit ledger (thinimg's own bytes, late
 * and amplified, never count as foreign; a competing writer shows within an interval or two),
 * the disk found through a fake sysfs (loop, dm, partition; none on tmpfs), and the counters
 * read from a fake /proc (diskstats, self/io and running children).
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
#include <sys/sysmacros.h>
#include <unistd.h>

#include "guard/diskio.h"
#include "testutil.h"
#include "util/fsutil.h"

#define MIB (1024ULL * 1024)

/* Own writes dirtied now reach the disk later and amplified (journal, metadata): the disk's
 * bytes stay within the credit, nothing is foreign. */
static void test_own_late_and_amplified(void **state)
{
    (void)state;
    struct diskio_meter m = {0};
    /* 10 MiB/interval dirtied for 5 intervals, nothing on the disk yet */
    for (int i = 0; i < 5; i++)
        assert_int_equal(diskio_meter_step(&m, 0, 10 * MIB), 0);
    /* writeback 20 s later: twice the bytes (amplified), spread over 10 intervals */
    for (int i = 0; i < 5; i++)
        assert_int_equal(diskio_meter_step(&m, 0, 0), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(diskio_meter_step(&m, 10 * MIB, 0), 0);
    /* the same interval, up to DISKIO_AMPLIFY times */
    struct diskio_meter n = {0};
    assert_int_equal(diskio_meter_step(&n, (uint64_t)(DISKIO_AMPLIFY * 4 * MIB), 4 * MIB), 0);
    /* noisy: own bytes bursty, the disk's lagging, never above the amplified sum */
    struct diskio_meter r = {0};
    uint64_t own_sum = 0, disk_sum = 0, lag[3] = {0};
    srand(7);
    for (int i = 0; i < 200; i++) {
        uint64_t own = (uint64_t)(rand() % 16) * MIB;
        uint64_t disk = lag[i % 3] * 2; /* what was dirtied three intervals ago, doubled */
        lag[i % 3] = own;
        own_sum += own;
        disk_sum += disk;
        assert_int_equal(diskio_meter_step(&r, disk, own), 0);
    }
    assert_true(disk_sum > own_sum); /* the disk did move the (amplified) bytes */
}

/* A writer beside the unpacks: the credit of thinimg's bytes is spent in an interval or two,
 * then all of the writer's bytes show. */
static void test_competing_writer(void **state)
{
    (void)state;
    struct diskio_meter m = {0};
    /* thinimg dirtied 20 MiB (60 MiB of credit), then writes 2 MiB/interval */
    diskio_meter_step(&m, 0, 20 * MIB);
    uint64_t f1 = diskio_meter_step(&m, 6 * MIB + 40 * MIB, 2 * MIB);
    uint64_t f2 = diskio_meter_step(&m, 6 * MIB + 40 * MIB, 2 * MIB);
    uint64_t f3 = diskio_meter_step(&m, 6 * MIB + 40 * MIB, 2 * MIB);
    assert_true(f1 < 40 * MIB);
    assert_true(f2 >= 20 * MIB);
    assert_int_equal(f3, 40 * MIB);
    /* credit expires: bytes dirtied more than DISKIO_CREDIT_TICKS intervals ago explain
     * nothing */
    struct diskio_meter e = {0};
    diskio_meter_step(&e, 0, 100 * MIB);
    for (int i = 1; i < DISKIO_CREDIT_TICKS; i++)
        diskio_meter_step(&e, 0, 0);
    assert_int_equal(diskio_meter_step(&e, 5 * MIB, 0), 5 * MIB);
}

static char *dir;

/* dir/rel, with its parent directories made */
static void made(const char *rel, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    assert_int_equal(mkdir_p(path, 0755), 0);
    *slash = '/';
}

static void put(const char *rel, const char *text)
{
    char path[1024];
    made(rel, path, sizeof(path));
    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
}

static void link_at(const char *target, const char *rel)
{
    char path[1024];
    made(rel, path, sizeof(path));
    assert_int_equal(symlink(target, path), 0);
}

/* A fake sysfs: a disk "vdq" (250:0) with a partition vdq1 that holds this test's files, a
 * loop device (7:0) backed by a file there and a dm device (253:0) on the loop. */
static void test_find_disk(void **state)
{
    (void)state;
    dir = tu_mkdtemp("diskio");
    char file[1024], text[64], rel[128];
    snprintf(file, sizeof(file), "%s/pool.data", dir);
    put("pool.data", "x");
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    unsigned fma = major(st.st_dev), fmi = minor(st.st_dev);
    /* the disk (its numbers must not be the file system's own) */
    unsigned dma = fma == 250 ? 251 : 250;
    snprintf(text, sizeof(text), "%u:0\n", dma);
    put("sys/devices/virtio/block/vdq/dev", text);
    put("sys/devices/virtio/block/vdq/uevent", "MAJOR=250\nMINOR=0\nDEVNAME=vdq\n");
    put("sys/devices/virtio/block/vdq/vdq1/partition", "1\n");
    put("sys/devices/virtio/block/vdq/vdq1/uevent", "DEVNAME=vdq1\n");
    snprintf(rel, sizeof(rel), "sys/dev/block/%u:0", dma);
    link_at("../../devices/virtio/block/vdq", rel);
    snprintf(rel, sizeof(rel), "sys/dev/block/%u:%u", fma, fmi);
    link_at("../../devices/virtio/block/vdq/vdq1", rel);
    /* loop0 on the file, dm-0 on loop0 */
    put("sys/devices/virtual/block/loop0/loop/backing_file", file);
    put("sys/devices/virtual/block/loop0/uevent", "DEVNAME=loop0\n");
    put("sys/devices/virtual/block/loop0/dev", "7:0\n");
    link_at("../../devices/virtual/block/loop0", "sys/dev/block/7:0");
    put("sys/devices/virtual/block/dm-0/uevent", "DEVNAME=dm-0\n");
    link_at("../../loop0", "sys/devices/virtual/block/dm-0/slaves/loop0");
    link_at("../../devices/virtual/block/dm-0", "sys/dev/block/253:0");
    char sys[1024];
    snprintf(sys, sizeof(sys), "%s/sys", dir);

    struct diskio_disk d;
    assert_int_equal(diskio_find(sys, file, &d), 0); /* a file: its partition's disk */
    assert_string_equal(d.name, "vdq");
    assert_int_equal(d.major, dma);
    assert_int_equal(d.minor, 0);
    memset(&d, 0, sizeof(d));
    assert_int_equal(diskio_find_dev(sys, 7, 0, &d), 0); /* the loop: its file's disk */
    assert_string_equal(d.name, "vdq");
    memset(&d, 0, sizeof(d));
    assert_int_equal(diskio_find_dev(sys, 253, 0, &d), 0); /* dm on the loop */
    assert_string_equal(d.name, "vdq");
    /* no block device under it (tmpfs, an anonymous device): none */
    assert_int_equal(diskio_find_dev(sys, 0, 45, &d), -ENODEV);
    assert_int_equal(diskio_find(sys, "/nonexistent/pool.data", &d), -ENOENT);
    /* a loop whose backing file is gone */
    put("sys/devices/virtual/block/loop1/loop/backing_file", "/nonexistent/gone\n");
    link_at("../../devices/virtual/block/loop1", "sys/dev/block/7:1");
    assert_int_equal(diskio_find_dev(sys, 7, 1, &d), -ENODEV);
    tu_rmrf(dir);
    free(dir);
}

static const char *self_io = "rchar: 900000\nwchar: 800000\nsyscr: 10\nsyscw: 20\n"
                             "read_bytes: 4096\nwrite_bytes: 1048576\n"
                             "cancelled_write_bytes: 0\n";

/* The counters: the disk's line in diskstats (sectors of 512 bytes), this process's io and
 * its running children's (a child reaped meanwhile is skipped). */
static void test_counters(void **state)
{
    (void)state;
    dir = tu_mkdtemp("diskio");
    char proc[1024];
    snprintf(proc, sizeof(proc), "%s/proc", dir);
    put("proc/diskstats", "   7       0 loop0 10 0 80 1 20 0 160 2 0 3 3 0 0 0 0\n"
                          " 250       0 vdq 100 5 2000 40 300 7 6000 90 0 120 130 0 0 0 0 0 0\n"
                          " 250       1 vdq1 99 5 1990 40 299 7 5990 90 0 120 130\n");
    struct diskio_disk d = {.major = 250, .minor = 0};
    uint64_t bytes = 0;
    assert_int_equal(diskio_disk_bytes(proc, &d, &bytes), 0);
    assert_int_equal(bytes, (2000 + 6000) * 512ULL);
    d.minor = 9;
    assert_int_equal(diskio_disk_bytes(proc, &d, &bytes), -ENOENT);
    char none[1024];
    snprintf(none, sizeof(none), "%s/no-proc", dir);
    assert_true(diskio_disk_bytes(none, &d, &bytes) < 0);

    put("proc/self/io", self_io);
    assert_int_equal(diskio_own_bytes(proc, &bytes), 0);
    assert_int_equal(bytes, 4096 + 1048576);
    /* two threads; one has a running child (mkfs) and one already reaped (no io file) */
    put("proc/self/task/100/children", "");
    put("proc/self/task/101/children", "4242 4243 \n");
    put("proc/4242/io", "rchar: 1\nwchar: 2\nread_bytes: 0\nwrite_bytes: 8192\n");
    assert_int_equal(diskio_own_bytes(proc, &bytes), 0);
    assert_int_equal(bytes, 4096 + 1048576 + 8192);
    assert_true(diskio_own_bytes(none, &bytes) < 0);
    /* the real ones can be read here too (the disk may not be: a container's overlay) */
    assert_int_equal(diskio_own_bytes(NULL, &bytes), 0);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_late_and_amplified),
        cmocka_unit_test(test_competing_writer),
        cmocka_unit_test(test_find_disk),
        cmocka_unit_test(test_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
