/*
 * loop.c: loop devices through loop-control; see loop.h.
 */
#include "dm/loop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"

int loop_attach(const char *path, bool read_only, char *dev, size_t n, bool *dio, struct err *e)
{
    _cleanup_close_ int file = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (file < 0)
        return err_set(e, neg_errno(), "cannot open pool file %s: %s", path, strerror(errno));
    _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return err_set(e, neg_errno(),
                       "cannot open /dev/loop-control: %s (is the loop module loaded?)",
                       strerror(errno));
    for (int attempt = 0; attempt < LOOP_ATTACH_TRIES; attempt++) {
        int nr = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (nr < 0)
            return err_set(e, neg_errno(), "no free loop device: %s", strerror(errno));
        char p[LOOP_PATH_MAX];
        snprintf(p, sizeof(p), "/dev/loop%d", nr);
        _cleanup_close_ int fd = open(p, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
            /* No devtmpfs node yet (static /dev): make one. */
            if (mknod(p, S_IFBLK | 0660, makedev(7, (unsigned)nr)) == 0 || errno == EEXIST)
                fd = open(p, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        }
        if (fd < 0)
            return err_set(e, neg_errno(), "cannot open %s: %s", p, strerror(errno));
        struct loop_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.fd = (unsigned)file;
        cfg.info.lo_flags = LO_FLAGS_DIRECT_IO | (read_only ? LO_FLAGS_READ_ONLY : 0);
        snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", path);
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) < 0) {
            if (errno == EBUSY)
                continue; /* someone else took it between GET_FREE and CONFIGURE */
            return err_set(e, neg_errno(), "cannot bind %s to %s: %s", path, p, strerror(errno));
        }
        struct loop_info64 info;
        bool got_dio =
            ioctl(fd, LOOP_GET_STATUS64, &info) == 0 && (info.lo_flags & LO_FLAGS_DIRECT_IO);
        if (dio)
            *dio = got_dio;
        if ((size_t)snprintf(dev, n, "%s", p) >= n)
            return -ENAMETOOLONG;
        log_info("loop device attached", "dev=%s file=%s direct_io=%d", p, path, got_dio);
        return 0;
    }
    return err_set(e, -EBUSY, "no free loop device after %d tries (contention)", LOOP_ATTACH_TRIES);
}

int loop_find(const char *path, char *dev, size_t n)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return neg_errno();
    _cleanup_closedir_ DIR *d = opendir("/sys/block");
    if (!d)
        return neg_errno();
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "loop", 4) != 0)
            continue;
        char p[LOOP_PATH_MAX + 8];
        snprintf(p, sizeof(p), "/dev/%s", de->d_name);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct loop_info64 info;
        if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
            continue; /* ENXIO: unbound */
        if (info.lo_device == st.st_dev && info.lo_inode == st.st_ino) {
            if ((size_t)snprintf(dev, n, "%s", p) >= n)
                return -ENAMETOOLONG;
            return 1;
        }
    }
    return 0;
}

int block_dev_path(const char *majmin, char *out, size_t n)
{
    unsigned ma, mi;
    char tail;
    if (sscanf(majmin, "%u:%u%c", &ma, &mi, &tail) != 2)
        return -EINVAL;
    char p[96];
    snprintf(p, sizeof(p), "/sys/dev/block/%u:%u/uevent", ma, mi);
    _cleanup_buf_ struct buf b = BUF_INIT;
    int r = read_file(p, 4096, &b);
    if (r < 0)
        return r;
    const char *name = strstr(b.data ? b.data : "", "DEVNAME=");
    if (!name)
        return -ENODEV;
    name += strlen("DEVNAME=");
    size_t len = strcspn(name, "\n");
    if ((size_t)snprintf(out, n, "/dev/%.*s", (int)len, name) >= n)
        return -ENAMETOOLONG;
    return 0;
}

int loop_backing_file(const char *dev, char *out, size_t n)
{
    char path[LOOP_PATH_MAX + 32];
    if (dev[0] == '/')
        snprintf(path, sizeof(path), "%s", dev);
    else {
        int r = block_dev_path(dev, path, sizeof(path));
        if (r < 0)
            return r;
    }
    if (strncmp(path, "/dev/loop", 9) != 0)
        return -ENODEV;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    /* sysfs has the full path; lo_file_name is cut at 64 bytes. */
    char sys[96];
    snprintf(sys, sizeof(sys), "/sys/block/%s/loop/backing_file", path + 5);
    _cleanup_buf_ struct buf b = BUF_INIT;
    if (read_file(sys, 8192, &b) < 0 || !b.data)
        return -ENXIO;
    size_t len = strcspn(b.data, "\n");
    if ((size_t)snprintf(out, n, "%.*s", (int)len, b.data) >= n)
        return -ENAMETOOLONG;
    return 0;
}

int dev_size_bytes(const char *path, uint64_t *bytes)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    struct stat st;
    if (fstat(fd, &st) < 0)
        return neg_errno();
    if (S_ISREG(st.st_mode)) {
        *bytes = (uint64_t)st.st_size;
        return 0;
    }
    if (!S_ISBLK(st.st_mode))
        return -ENOTBLK;
    uint64_t b = 0;
    if (ioctl(fd, BLKGETSIZE64, &b) < 0)
        return neg_errno();
    *bytes = b;
    return 0;
}

int loop_refresh_size(const char *dev, uint64_t *bytes, struct err *e)
{
    _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, neg_errno(), "cannot open %s: %s", dev, strerror(errno));
    if (ioctl(fd, LOOP_SET_CAPACITY, 0) < 0)
        return err_set(e, neg_errno(), "cannot refresh the size of %s (LOOP_SET_CAPACITY): %s", dev,
                       strerror(errno));
    uint64_t b = 0;
    if (ioctl(fd, BLKGETSIZE64, &b) < 0)
        return err_set(e, neg_errno(), "cannot read the size of %s: %s", dev, strerror(errno));
    if (bytes)
        *bytes = b;
    log_info("loop device resized", "dev=%s bytes=%llu", dev, (unsigned long long)b);
    return 0;
}
