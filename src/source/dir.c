/*
 * dir.c: the dir: source: a local folder laid out like a bucket (key "images/golang/3.tar" is
 * the file <root>/images/golang/3.tar).
 *
 * The folder is held open as an O_PATH fd and every key is opened below it with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): neither ".." nor a symlink (absolute or
 * relative) can reach outside it; symlinks that stay inside work. Only regular files are
 * objects. The ETag is made from what identifies a version of a local file (inode, size,
 * mtime in ns), so If-Match detects a file replaced or rewritten between two reads.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "source/source_impl.h"
#include "util/buf.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"

/* Read size for streaming a file to the sink. */
#define DIR_READ_CHUNK (1024 * 1024)

struct dir_src {
    int root_fd;
    char *path; /* the folder, normalised, no trailing '/' (except "/") */
};

static void dir_free_impl(void *impl)
{
    struct dir_src *d = impl;
    if (d->root_fd >= 0)
        close(d->root_fd);
    free(d->path);
    free(d);
}

static int open_beneath(int root_fd, const char *key, int flags)
{
    /* openat2(2) is strict: O_PATH takes no other flag than O_CLOEXEC (and a few more). */
    if (!(flags & O_PATH))
        flags |= O_NOCTTY;
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, root_fd, key, &how, sizeof(how));
    return fd < 0 ? neg_errno() : (int)fd;
}

static void etag_of(const struct stat *st, char *out, size_t cap)
{
    snprintf(out, cap, "\"%llx-%llx-%llx.%09ld\"", (unsigned long long)st->st_ino,
             (unsigned long long)st->st_size, (unsigned long long)st->st_mtim.tv_sec,
             st->st_mtim.tv_nsec);
}

static int key_error(struct source *s, const char *key, int r, struct err *e)
{
    if (r == -ENOENT)
        return err_set(e, -ENOENT, "%s%s: not found", s->root, key);
    if (r == -EXDEV || r == -ELOOP)
        return err_set(e, -EXDEV,
                       "%s%s: refused: the path leaves the folder (via '..' or a "
                       "symlink)",
                       s->root, key);
    if (r == -EACCES)
        return err_set(e, -EACCES, "%s%s: permission denied", s->root, key);
    if (r == -ENOSYS)
        return err_set(e, -ENOSYS,
                       "%s%s: this kernel lacks openat2(2) (Linux >= 5.6 needed "
                       "for dir: sources)",
                       s->root, key);
    return err_set(e, r, "%s%s: %s", s->root, key, strerror(-r));
}

static const char *file_type_name(mode_t m)
{
    if (S_ISDIR(m))
        return "a folder";
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISLNK(m))
        return "a symlink";
    return "not a regular file";
}

/* Open key as a regular file and stat it. The type is checked before the file is opened for
 * reading: open(2) of a FIFO blocks until a writer comes, and opening a device may act on
 * it. The read open is O_NONBLOCK (a FIFO swapped in between the two opens cannot block it)
 * and must name the same inode as the look. */
static int open_object(struct source *s, const char *key, struct stat *st, struct err *e)
{
    struct dir_src *d = s->impl;
    _cleanup_close_ int pfd = open_beneath(d->root_fd, key, O_PATH);
    if (pfd < 0)
        return key_error(s, key, pfd, e);
    if (fstat(pfd, st) < 0)
        return key_error(s, key, neg_errno(), e);
    if (!S_ISREG(st->st_mode))
        return err_set(e, S_ISDIR(st->st_mode) ? -EISDIR : -ENOENT,
                       "%s%s: refused: %s, not a regular file (only regular files are objects)",
                       s->root, key, file_type_name(st->st_mode));
    int fd = open_beneath(d->root_fd, key, O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return key_error(s, key, fd, e);
    struct stat st2;
    int flags;
    if (fstat(fd, &st2) < 0 || (flags = fcntl(fd, F_GETFL)) < 0 ||
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        int r = neg_errno();
        close(fd);
        return key_error(s, key, r, e);
    }
    if (st2.st_dev != st->st_dev || st2.st_ino != st->st_ino || !S_ISREG(st2.st_mode)) {
        close(fd);
        return err_set(e, -ESTALE, "%s%s: the file was replaced while being opened", s->root, key);
    }
    *st = st2;
    return fd;
}

static int dir_stat(struct source *s, const char *key, struct source_object *out, struct err *e)
{
    struct stat st;
    _cleanup_close_ int fd = open_object(s, key, &st, e);
    if (fd < 0)
        return fd;
    char etag[SOURCE_ETAG_MAX + 1];
    etag_of(&st, etag, sizeof(etag));
    out->key = strdup(key);
    out->etag = strdup(etag);
    out->size = (uint64_t)st.st_size;
    out->mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    /* The file's identity on this machine: the same file through another folder, a bind
     * mount or a hard link is the same blob. */
    if (asprintf(&out->identity, "dir %llu %llu %llu %lld%09ld", (unsigned long long)st.st_dev,
                 (unsigned long long)st.st_ino, (unsigned long long)st.st_size,
                 (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec) < 0)
        out->identity = NULL;
    return out->key && out->etag && out->identity ? 0 : -ENOMEM;
}

static int dir_get(struct source *s, const char *key, uint64_t offset,
                   const struct source_expect *x, source_sink_fn sink, void *ud,
                   struct source_get_info *info, struct err *e)
{
    const char *if_match = x->etag;
    struct stat st;
    _cleanup_close_ int fd = open_object(s, key, &st, e);
    if (fd < 0)
        return fd;
    if (x->has_size && (uint64_t)st.st_size != x->size)
        return err_set(e, -ESTALE, "%s%s: the file changed (%llu bytes, expected %llu)", s->root,
                       key, (unsigned long long)st.st_size, (unsigned long long)x->size);
    etag_of(&st, info->etag, sizeof(info->etag));
    info->size = (uint64_t)st.st_size;
    info->attempts = 1;
    if (if_match && strcmp(if_match, info->etag) != 0)
        return err_set(e, -ESTALE, "%s%s: the file changed (ETag %s, expected %s)", s->root, key,
                       info->etag, if_match);
    if (offset > (uint64_t)st.st_size)
        return err_set(e, -ERANGE, "%s%s: offset %llu beyond the end (%llu bytes)", s->root, key,
                       (unsigned long long)offset, (unsigned long long)st.st_size);
    _cleanup_free_ char *chunk = malloc(DIR_READ_CHUNK);
    if (!chunk)
        return -ENOMEM;
    uint64_t pos = offset;
    uint64_t stop = x->end && x->end < (uint64_t)st.st_size ? x->end : (uint64_t)st.st_size;
    while (pos < stop) {
        if (source_opt_cancelled(s))
            return err_set(e, -ECANCELED, "%s%s: cancelled", s->root, key);
        ssize_t n = pread(fd, chunk, DIR_READ_CHUNK, (off_t)pos);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return key_error(s, key, neg_errno(), e);
        }
        if (n == 0)
            return err_set(e, -ESTALE, "%s%s: the file shrank while being read", s->root, key);
        uint64_t want = stop - pos;
        size_t m = (uint64_t)n > want ? (size_t)want : (size_t)n;
        int r = sink(chunk, m, ud);
        if (r < 0)
            return r;
        pos += m;
        info->bytes += m;
        info->bytes_received += m;
    }
    /* A file rewritten in place while we read it: same inode, new mtime or size. */
    struct stat st2;
    if (fstat(fd, &st2) == 0 &&
        (st2.st_size != st.st_size || st2.st_mtim.tv_sec != st.st_mtim.tv_sec ||
         st2.st_mtim.tv_nsec != st.st_mtim.tv_nsec))
        return err_set(e, -ESTALE, "%s%s: the file changed while being read", s->root, key);
    return 0;
}

/* Walk directory fd (whose key prefix is `rel`, "" or ending in '/'), adding every regular
 * file whose key starts with `prefix`. */
static int walk(struct source *s, int dfd, const char *rel, const char *prefix, int depth,
                struct source_listing *out, struct err *e)
{
    if (depth > SOURCE_DIR_MAX_DEPTH)
        return source_listing_warn(out, "skipped %s%s: deeper than %d levels", s->root, rel,
                                   SOURCE_DIR_MAX_DEPTH);
    int dup_fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dup_fd < 0)
        return err_set(e, neg_errno(), "%s%s: cannot read the folder: %m", s->root, rel);
    _cleanup_closedir_ DIR *dir = fdopendir(dup_fd);
    if (!dir) {
        close(dup_fd);
        return -ENOMEM;
    }
    struct dirent *de;
    size_t plen = strlen(prefix), rlen = strlen(rel);
    while ((errno = 0, de = readdir(dir))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        _cleanup_free_ char *key = NULL;
        if (asprintf(&key, "%s%s", rel, de->d_name) < 0)
            return -ENOMEM;
        size_t kl = strlen(key);
        /* Prune: the key (or, for a folder, key + "/") must be compatible with the prefix. */
        size_t cmp = kl < plen ? kl : plen;
        if (strncmp(key, prefix, cmp) != 0)
            continue;
        struct stat st;
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* vanished */
        struct err ke = {0};
        if (S_ISDIR(st.st_mode)) {
            if (kl < plen && prefix[kl] != '/')
                continue;
            _cleanup_free_ char *sub = NULL;
            if (asprintf(&sub, "%s/", key) < 0)
                return -ENOMEM;
            if (source_key_check(sub, true, &ke) < 0) {
                int r = source_listing_skip(out, "folder: %s", ke.msg);
                if (r < 0)
                    return r;
                continue;
            }
            _cleanup_close_ int sfd =
                openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sfd < 0)
                continue;
            int r = walk(s, sfd, sub, prefix, depth + 1, out, e);
            if (r < 0)
                return r;
            continue;
        }
        if (kl < plen)
            continue;
        int r = source_listing_see(out);
        if (r < 0)
            return err_set(e, -EFBIG, "%s%s: more than %d files; name a narrower prefix", s->root,
                           prefix, SOURCE_LIST_MAX_KEYS);
        if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
            r = source_listing_skip(out, "'%.200s' is %s, not a regular file", key,
                                    file_type_name(st.st_mode));
            if (r < 0)
                return r;
            continue;
        }
        if (source_key_check(key, false, &ke) < 0) {
            r = source_listing_skip(out, "%s", ke.msg);
            if (r < 0)
                return r;
            continue;
        }
        if (S_ISLNK(st.st_mode)) {
            /* A symlink is listed when it resolves to a regular file inside the folder (looked
             * at with O_PATH: nothing is opened for reading). */
            struct dir_src *d = s->impl;
            _cleanup_close_ int fd = open_beneath(d->root_fd, key, O_PATH);
            if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                r = source_listing_skip(out,
                                        "'%.200s' is a symlink that does not resolve to "
                                        "a regular file inside the folder",
                                        key);
                if (r < 0)
                    return r;
                continue;
            }
        }
        char etag[SOURCE_ETAG_MAX + 1];
        etag_of(&st, etag, sizeof(etag));
        char *k = TAKE_PTR(key), *t = strdup(etag);
        r = t ? source_listing_add(out, k, (uint64_t)st.st_size, t,
                                   (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000)
              : -ENOMEM;
        if (r < 0) {
            free(k);
            free(t);
            if (r == -EFBIG)
                return err_set(e, -EFBIG, "%s%s: more than %d files; name a narrower prefix",
                               s->root, prefix, SOURCE_LIST_MAX_KEYS);
            return r;
        }
    }
    (void)rlen;
    return 0;
}

static int dir_list(struct source *s, const char *prefix, struct source_listing *out, struct err *e)
{
    struct dir_src *d = s->impl;
    /* Start at the deepest folder named by the prefix ("images/go" starts in "images/"). */
    const char *slash = strrchr(prefix, '/');
    _cleanup_free_ char *start = slash ? strndup(prefix, (size_t)(slash - prefix) + 1) : strdup("");
    if (!start)
        return -ENOMEM;
    int fd;
    if (*start) {
        fd = open_beneath(d->root_fd, start, O_RDONLY | O_DIRECTORY);
        if (fd == -ENOENT || fd == -ENOTDIR)
            return 0; /* nothing under that prefix */
        if (fd < 0)
            return key_error(s, start, fd, e);
    } else {
        fd = openat(d->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return key_error(s, "", neg_errno(), e);
    }
    int depth = 0;
    for (const char *p = start; *p; p++)
        depth += *p == '/';
    int r = walk(s, fd, start, prefix, depth, out, e);
    close(fd);
    return r;
}

static const struct source_ops dir_ops = {
    .list = dir_list,
    .stat = dir_stat,
    .get = dir_get,
    .free_impl = dir_free_impl,
};

/* Lexical normalisation of an absolute path, so that one folder has one location string:
 * "//" collapsed, "." segments dropped, ".." removes the segment before it ("/a/b/../c" is
 * "/a/c", as RFC 3986's remove_dot_segments does for URLs), no trailing '/' (keeps "/").
 * A ".." above "/" is refused (NULL with *escape set). */
static char *normalise(const char *p, bool *escape)
{
    *escape = false;
    size_t n = strlen(p);
    char *o = malloc(n + 2);
    if (!o)
        return NULL;
    size_t j = 0;
    const char *q = p, *end = p + n;
    while (q < end) {
        while (q < end && *q == '/')
            q++;
        const char *seg = q;
        while (q < end && *q != '/')
            q++;
        size_t len = (size_t)(q - seg);
        if (len == 0 || (len == 1 && seg[0] == '.'))
            continue;
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            if (j == 0) {
                free(o);
                *escape = true;
                return NULL;
            }
            while (j > 0 && o[j - 1] != '/')
                j--;
            j--; /* the '/' before the dropped segment */
            continue;
        }
        o[j++] = '/';
        memcpy(o + j, seg, len);
        j += len;
    }
    if (j == 0)
        o[j++] = '/';
    o[j] = '\0';
    return o;
}

int source_dir_open(struct source *s, const char *path, char **key_out, struct err *e)
{
    struct dir_src *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->root_fd = -1;
    s->impl = d;
    s->ops = &dir_ops;
    if (path[0] != '/')
        return err_set(e, -EINVAL, "dir:%.200s: the path must be absolute (dir:/path)", path);
    bool escape;
    _cleanup_free_ char *norm = normalise(path, &escape);
    if (!norm && escape)
        return err_set(e, -EINVAL, "dir:%.200s: '..' goes above '/'", path);
    if (!norm)
        return -ENOMEM;
    for (const char *p = norm; *p; p++)
        if ((unsigned char)*p < 0x20)
            return err_set(e, -EINVAL, "dir: path contains a control character");
    bool trailing = path[strlen(path) - 1] == '/';
    struct stat st;
    const char *key = "";
    if (stat(norm, &st) == 0 && S_ISDIR(st.st_mode)) {
        d->path = TAKE_PTR(norm);
    } else if (trailing) {
        return err_set(e, -ENOENT, "dir:%s: no such folder", norm);
    } else {
        /* A file (or a name that does not exist yet): its folder is the root. */
        char *last = strrchr(norm, '/');
        key = last + 1;
        d->path = last == norm ? strdup("/") : strndup(norm, (size_t)(last - norm));
        if (!d->path)
            return -ENOMEM;
        *key_out = strdup(key);
        if (!*key_out)
            return -ENOMEM;
        key = NULL;
    }
    if (key && !(*key_out = strdup(key)))
        return -ENOMEM;
    d->root_fd = open(d->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (d->root_fd < 0)
        return err_set(e, neg_errno(), "dir:%s: cannot open the folder: %m", d->path);
    if (asprintf(&s->root, "dir:%s%s", d->path, strcmp(d->path, "/") ? "/" : "") < 0) {
        s->root = NULL;
        return -ENOMEM;
    }
    return 0;
}
