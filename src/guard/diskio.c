/*
 * diskio.c: a queue's disk, its counters and thinimg's own. See diskio.h.
 */
#include "guard/diskio.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/cleanup.h"
#include "util/fsutil.h"

/* dm on md on a partition on a loop's file: deeper than any real stack. */
#define DISKIO_STACK_MAX 8
/* sysfs attribute files ("dev", "uevent", "loop/backing_file") and /proc/<pid>/io are short. */
#define DISKIO_SMALL_FILE_MAX 8192
/* The sectors /proc/diskstats counts are 512 bytes whatever the disk's block size. */
#define DISKIO_SECTOR_BYTES 512

static int read_small(const char *path, struct buf *b)
{
    int r = read_file(path, DISKIO_SMALL_FILE_MAX, b);
    if (r >= 0 && !b->data)
        return -ENODATA;
    return r;
}

/* "M:m\n" in a sysfs "dev" file */
static int read_majmin(const char *path, unsigned *ma, unsigned *mi)
{
    _cleanup_buf_ struct buf b = BUF_INIT;
    int r = read_small(path, &b);
    if (r < 0)
        return r;
    return sscanf(b.data, "%u:%u", ma, mi) == 2 ? 0 : -EINVAL;
}

/* The first entry of a sysfs directory (a dm device's "slaves"), or -ENOENT. */
static int first_entry(const char *dir, char *out, size_t n)
{
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (!d)
        return -ENOENT;
    for (struct dirent *de; (de = readdir(d));)
        if (de->d_name[0] != '.') {
            snprintf(out, n, "%s", de->d_name);
            return 0;
        }
    return -ENOENT;
}

static int resolve(const char *sys, unsigned ma, unsigned mi, int depth, struct diskio_disk *out)
{
    if (depth > DISKIO_STACK_MAX)
        return -ELOOP;
    char dir[256], p[512];
    snprintf(dir, sizeof(dir), "%s/dev/block/%u:%u", sys, ma, mi);
    struct stat st;
    if (stat(dir, &st) < 0)
        return -ENODEV;
    /* a loop device: the disk under its backing file */
    snprintf(p, sizeof(p), "%s/loop/backing_file", dir);
    _cleanup_buf_ struct buf b = BUF_INIT;
    if (read_small(p, &b) == 0) {
        b.data[strcspn(b.data, "\n")] = '\0';
        if (stat(b.data, &st) < 0)
            return -ENODEV;
        return resolve(sys, major(st.st_dev), minor(st.st_dev), depth + 1, out);
    }
    /* dm or md: the first device under it (a striped pool's share of each is alike) */
    char slave[128];
    snprintf(p, sizeof(p), "%s/slaves", dir);
    if (first_entry(p, slave, sizeof(slave)) == 0) {
        snprintf(p, sizeof(p), "%s/slaves/%s/dev", dir, slave);
        int r = read_majmin(p, &ma, &mi);
        return r < 0 ? r : resolve(sys, ma, mi, depth + 1, out);
    }
    /* a partition: its disk is the parent directory (sysfs "dev/block/M:m" links into it) */
    snprintf(p, sizeof(p), "%s/partition", dir);
    if (access(p, F_OK) == 0) {
        snprintf(p, sizeof(p), "%s/../dev", dir);
        int r = read_majmin(p, &ma, &mi);
        return r < 0 ? r : resolve(sys, ma, mi, depth + 1, out);
    }
    *out = (struct diskio_disk){.major = ma, .minor = mi};
    snprintf(p, sizeof(p), "%s/uevent", dir);
    buf_free(&b);
    const char *name = read_small(p, &b) == 0 ? strstr(b.data, "DEVNAME=") : NULL;
    if (name) {
        name += strlen("DEVNAME=");
        snprintf(out->name, sizeof(out->name), "%.*s", (int)strcspn(name, "\n"), name);
    } else
        snprintf(out->name, sizeof(out->name), "%u:%u", ma, mi);
    return 0;
}

int diskio_find(const char *sys_root, const char *path, struct diskio_disk *out)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    dev_t dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
    return diskio_find_dev(sys_root, major(dev), minor(dev), out);
}

int diskio_find_dev(const char *sys_root, unsigned ma, unsigned mi, struct diskio_disk *out)
{
    return resolve(sys_root ? sys_root : "/sys", ma, mi, 0, out);
}

int diskio_disk_bytes(const char *proc_root, const struct diskio_disk *d, uint64_t *bytes)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/diskstats", proc_root ? proc_root : "/proc");
    _cleanup_buf_ struct buf b = BUF_INIT;
    int r = read_file(path, DISKIO_DISKSTATS_MAX, &b);
    if (r < 0)
        return r;
    /* "major minor name reads merged sectors_read ms writes merged sectors_written ..." */
    for (const char *line = b.data; line && *line;) {
        unsigned ma, mi;
        unsigned long long rd, wr;
        if (sscanf(line, "%u %u %*s %*u %*u %llu %*u %*u %*u %llu", &ma, &mi, &rd, &wr) == 4 &&
            ma == d->major && mi == d->minor) {
            *bytes = (uint64_t)(rd + wr) * DISKIO_SECTOR_BYTES;
            return 0;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -ENOENT;
}

/* read_bytes + write_bytes of one <proc>/<pid>/io file */
static int io_bytes(const char *path, uint64_t *bytes)
{
    _cleanup_buf_ struct buf b = BUF_INIT;
    int r = read_small(path, &b);
    if (r < 0)
        return r;
    const char *rd = strstr(b.data, "\nread_bytes: "), *wr = strstr(b.data, "\nwrite_bytes: ");
    if (!rd || !wr)
        return -EINVAL;
    *bytes = strtoull(rd + strlen("\nread_bytes: "), NULL, 10) +
             strtoull(wr + strlen("\nwrite_bytes: "), NULL, 10);
    return 0;
}

int diskio_own_bytes(const char *proc_root, uint64_t *bytes)
{
    const char *proc = proc_root ? proc_root : "/proc";
    char path[512];
    snprintf(path, sizeof(path), "%s/self/io", proc);
    int r = io_bytes(path, bytes);
    if (r < 0)
        return r;
    /* Running children (mkfs) count when reaped; until then each is read on its own. A child
     * reaped between the listing and its read is missed for one interval at most. */
    snprintf(path, sizeof(path), "%s/self/task", proc);
    _cleanup_closedir_ DIR *tasks = opendir(path);
    for (struct dirent *t; tasks && (t = readdir(tasks));) {
        if (t->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/self/task/%s/children", proc, t->d_name);
        _cleanup_buf_ struct buf kids = BUF_INIT;
        if (read_small(path, &kids) < 0)
            continue;
        for (char *s = kids.data, *tok; (tok = strtok_r(s, " \n", &s));) {
            uint64_t child;
            snprintf(path, sizeof(path), "%s/%s/io", proc, tok);
            if (io_bytes(path, &child) == 0)
                *bytes += child;
        }
    }
    return 0;
}

uint64_t diskio_meter_step(struct diskio_meter *m, uint64_t disk, uint64_t own)
{
    /* the slot at head is the oldest: its credit expires and this interval's takes its place */
    m->credit[m->head] = (double)own * DISKIO_AMPLIFY;
    m->head = (m->head + 1) % DISKIO_CREDIT_TICKS;
    double left = (double)disk;
    for (int i = 0; i < DISKIO_CREDIT_TICKS && left > 0; i++) {
        double *c = &m->credit[(m->head + i) % DISKIO_CREDIT_TICKS];
        double use = *c < left ? *c : left;
        *c -= use;
        left -= use;
    }
    return (uint64_t)left;
}
