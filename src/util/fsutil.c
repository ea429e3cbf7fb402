/*
 * fsutil.c: file-system helpers. See fsutil.h.
 */
#include "util/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/cleanup.h"

int mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return neg_errno();
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return neg_errno();
    struct stat st;
    if (stat(tmp, &st) < 0)
        return neg_errno();
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return neg_errno();
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

ssize_t read_full(int fd, void *data, size_t n)
{
    char *p = data;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return neg_errno();
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int read_file(const char *path, size_t max, struct buf *b)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    char chunk[16384];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return neg_errno();
        }
        if (r == 0)
            break;
        if (b->len + (size_t)r > max)
            return -EFBIG;
        int k = buf_append(b, chunk, (size_t)r);
        if (k < 0)
            return k;
    }
    if (!b->data)
        return buf_append(b, "", 0);
    return 0;
}

int fsync_parent_dir(const char *path)
{
    _cleanup_free_ char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash == copy)
        dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = copy;
    }
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    if (fsync(fd) < 0)
        return neg_errno();
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t n, mode_t mode)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return neg_errno();
    int r = write_all(fd, data, n);
    if (r == 0 && fsync(fd) < 0)
        r = neg_errno();
    if (r == 0 && rename(tmp, path) < 0)
        r = neg_errno();
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    return fsync_parent_dir(path);
}

char *path_join(const char *a, const char *b)
{
    char *out = NULL;
    size_t la = strlen(a);
    int slash = la > 0 && a[la - 1] == '/';
    while (*b == '/')
        b++;
    if (asprintf(&out, "%s%s%s", a, slash ? "" : "/", b) < 0)
        return NULL;
    return out;
}

int boot_id_read(char *out, size_t n)
{
    struct buf b = BUF_INIT;
    int r = read_file("/proc/sys/kernel/random/boot_id", 128, &b);
    if (r == 0) {
        snprintf(out, n, "%.36s", b.data);
        out[strcspn(out, "\n")] = '\0';
    }
    buf_free(&b);
    return r;
}
