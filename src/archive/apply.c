/*
 * apply.c: the secure layer writer. The walker (walk.c) validates each entry; this file puts
 * it into the tree under the root fd without ever leaving the root:
 *
 *   - the parent directory is resolved by the kernel with openat2(RESOLVE_IN_ROOT |
 *     RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): ".." and absolute symlinks stay inside the
 *     root (an image's /etc/alternatives links resolve inside the image), magic links fail;
 *   - the last component is created with calls that never follow it: openat(O_CREAT|O_EXCL|
 *     O_NOFOLLOW), mkdirat, symlinkat, linkat without AT_SYMLINK_FOLLOW, mknodat. An existing
 *     entry is removed first (a directory recursively, with fd-based calls), so data is never
 *     written through an existing file or hardlink;
 *   - metadata is applied on the open fd or with AT_SYMLINK_NOFOLLOW, chown before chmod
 *     (chown clears setuid); directory owners, modes, xattrs and times are applied at the end,
 *     after checking that the path still names the very directory this layer created
 *     (device and inode), so a later symlink cannot redirect them (libarchive CVE-2021-31566).
 *
 * Whiteouts remove entries of lower layers only: every path this layer creates is recorded
 * (with its ancestors) in a path set, and removal keeps those.
 *
 * The parent of the previous entry stays open: tar writers emit a directory's entries
 * together, so most entries need no path resolution at all. The cached fd is dropped whenever
 * something is removed outside it, since a removal can change what a path resolves to.
 *
 * Not atomic: on failure the root holds part of the layer; the caller discards it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "archive/internal.h"
#include "util/cleanup.h"
#include "util/fsutil.h"

/* Removal walks recurse per directory level, one open fd each: bound them well below the
 * default RLIMIT_NOFILE (1024). Deeper trees cannot be created from one layer's names. */
#define REMOVE_MAX_DEPTH 512
/* openat2 returns EAGAIN when a rename raced with RESOLVE_IN_ROOT resolution. */
#define OPENAT2_RETRIES 8

struct xattr_item {
    char *name;
    void *value;
    size_t size;
};

struct dir_meta {
    char *path;
    mode_t mode;
    uint32_t uid, gid;
    struct timespec ts[2];
    dev_t dev;
    ino_t ino;
    struct xattr_item *xattrs;
    size_t n_xattrs;
    bool live;
};

struct applier {
    int root_fd;  /* the caller's, not owned */
    int root_rfd; /* readable fd of the root (owned) */
    dev_t root_dev;
    struct archive_policy pol;
    struct layer_walk *w;
    struct pathset paths;
    /* The root held nothing a whiteout could hide (empty, or only an empty lost+found as
     * mkfs makes it) when the layer started: the set then records directories only (for
     * their deferred metadata), not every path the layer creates, and whiteouts can only
     * ever hide that lost+found (lower_lost_found) as long as the layer put nothing there. */
    bool fresh;
    bool lower_lost_found;
    bool lost_found_written;
    struct dir_meta *dirs;
    size_t n_dirs, cap_dirs;

    /* The cached parent: path, fd, and whether new entries in it get its group. */
    char *cache_path;
    size_t cache_len;
    int cache_fd;
    bool cache_setgid;
    gid_t cache_gid;
    bool root_setgid;
    gid_t root_gid;

    uid_t euid;
    gid_t egid;
    int umask; /* -1 when unknown: always fchmod */

    char *pathbuf; /* scratch for prune walks */
    size_t pathbuf_cap;

    /* archive_apply_opaque(): told of every opaque directory the layer clears (NULL: none). */
    archive_opaque_fn opaque;
    void *opaque_ud;
};

static int open_in_root(int root_fd, const char *path, uint64_t flags)
{
    struct open_how how = {
        .flags = flags | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    for (int i = 0; i < OPENAT2_RETRIES; i++) {
        long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
        if (fd >= 0)
            return (int)fd;
        if (errno != EAGAIN && errno != EINTR)
            return -errno;
    }
    return -EAGAIN;
}

/* A file-system call failed on the current entry. EPERM from the kernel becomes EACCES so
 * that it is not mistaken for a policy rejection. */
static int io_fail(struct applier *ap, int err, const char *what)
{
    int code = err == EPERM ? -EACCES : -err;
    return layer_walk_fail(ap->w, code, "io", "cannot %s: %s", what, strerror(err));
}

static void cache_drop(struct applier *ap)
{
    if (ap->cache_fd >= 0)
        close(ap->cache_fd);
    ap->cache_fd = -1;
    ap->cache_len = 0;
}

/* Make fd (owned from now on) the cached parent for path. st: its stat when the caller has
 * it, else NULL. */
static int cache_set(struct applier *ap, const char *path, size_t len, int fd,
                     const struct stat *st)
{
    struct stat sb;
    if (st) {
        sb = *st;
    } else if (fstat(fd, &sb) < 0) {
        int r = neg_errno();
        close(fd);
        return r;
    }
    cache_drop(ap);
    memcpy(ap->cache_path, path, len);
    ap->cache_path[len] = '\0';
    ap->cache_len = len;
    ap->cache_fd = fd;
    ap->cache_setgid = (sb.st_mode & S_ISGID) != 0;
    ap->cache_gid = sb.st_gid;
    return 0;
}

static int resolve_fail(struct applier *ap, int r, const char *what)
{
    switch (-r) {
    case ENOTDIR:
        return layer_walk_fail(ap->w, -EPERM, "parent", "%s is not a directory", what);
    case ELOOP:
        return layer_walk_fail(ap->w, -ELOOP, "symlink-loop",
                               "%s cannot be resolved: too many levels of symbolic links, or a "
                               "magic link",
                               what);
    case EXDEV:
        return layer_walk_fail(ap->w, -EXDEV, "mount", "%s crosses a mount point", what);
    case ENOENT:
        return layer_walk_fail(ap->w, -EPERM, "parent",
                               "%s cannot be resolved inside the root (dangling symbolic link?)",
                               what);
    default:
        return io_fail(ap, -r, "resolve the parent directory");
    }
}

/* Symlinks followed while creating missing parents, as the kernel's limit for one lookup. */
#define CREATE_PARENTS_HOPS 40

/* Create the missing directories of dir (len bytes) one by one, each resolved inside the root,
 * and return an O_PATH fd of dir. Like the kernel's RESOLVE_IN_ROOT lookup, but creating what
 * is missing: a component that is a dangling symlink is followed (its target taken inside the
 * root: "/x" from the root, "x" from the symlink's directory) and the rest is created there,
 * so `x -> /root/.ssh` then `x/authorized_keys` lands in the image's /root/.ssh. Only
 * mkdirat() on directory fds that openat2 resolved inside the root creates anything. */
static int create_parents(struct applier *ap, const char *dir, size_t len, int hops)
{
    _cleanup_free_ char *sub = malloc(len + 1);
    if (!sub)
        return -ENOMEM;
    int parent = -1; /* -1 = the root */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && dir[i] != '/')
            continue;
        if (i == start) { /* empty component */
            start = i + 1;
            continue;
        }
        memcpy(sub, dir, i);
        sub[i] = '\0';
        int pfd = parent >= 0 ? parent : ap->root_fd;
        int fd = open_in_root(ap->root_fd, sub, O_PATH | O_DIRECTORY);
        if (fd == -ENOENT) {
            char comp[NAME_MAX + 1];
            size_t clen = i - start;
            if (clen > NAME_MAX)
                fd = -ENAMETOOLONG;
            memcpy(comp, dir + start, clen > NAME_MAX ? 0 : clen);
            comp[clen > NAME_MAX ? 0 : clen] = '\0';
            if (fd == -ENOENT && mkdirat(pfd, comp, 0755) < 0) {
                if (errno != EEXIST) {
                    fd = neg_errno();
                } else {
                    /* Exists but does not resolve: a dangling symlink? Follow it. */
                    char target[PATH_MAX];
                    ssize_t tl = readlinkat(pfd, comp, target, sizeof(target) - 1);
                    if (tl > 0) {
                        if (parent >= 0)
                            close(parent);
                        if (hops >= CREATE_PARENTS_HOPS)
                            return -ELOOP;
                        target[tl] = '\0';
                        _cleanup_free_ char *next = NULL;
                        int n = asprintf(&next, "%.*s%s%s%.*s", target[0] == '/' ? 0 : (int)start,
                                         dir, target, i < len ? "/" : "",
                                         i < len ? (int)(len - i - 1) : 0, dir + i + 1);
                        if (n < 0)
                            return -ENOMEM;
                        if ((size_t)n >= PATH_MAX)
                            return -ENAMETOOLONG;
                        return create_parents(ap, next, (size_t)n, hops + 1);
                    }
                }
            }
            if (fd == -ENOENT)
                fd = open_in_root(ap->root_fd, sub, O_PATH | O_DIRECTORY);
        }
        if (parent >= 0)
            close(parent);
        if (fd < 0)
            return fd;
        parent = fd;
        start = i + 1;
    }
    return parent >= 0 ? parent : openat(ap->root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

/* The directory that holds the current entry: the root, the cached parent, or resolved now.
 * setgid and gid tell the group that new entries in it get. */
static int parent_fd(struct applier *ap, const struct layer_entry *ent, bool *setgid, gid_t *gid)
{
    size_t len = ent->base_off ? ent->base_off - 1 : 0;
    if (len == 0) {
        *setgid = ap->root_setgid;
        *gid = ap->root_gid;
        return ap->root_rfd;
    }
    if (ap->cache_fd >= 0 && ap->cache_len == len && memcmp(ap->cache_path, ent->path, len) == 0) {
        *setgid = ap->cache_setgid;
        *gid = ap->cache_gid;
        return ap->cache_fd;
    }
    char dir[len + 1];
    memcpy(dir, ent->path, len);
    dir[len] = '\0';
    int fd = open_in_root(ap->root_fd, dir, O_PATH | O_DIRECTORY);
    if (fd == -ENOENT)
        fd = create_parents(ap, dir, len, 0);
    if (fd < 0)
        return resolve_fail(ap, fd, "the parent directory");
    int r = cache_set(ap, dir, len, fd, NULL);
    if (r < 0)
        return io_fail(ap, -r, "stat the parent directory");
    *setgid = ap->cache_setgid;
    *gid = ap->cache_gid;
    return ap->cache_fd;
}

/* ---- removal ------------------------------------------------------------------------------ */

static int remove_tree(struct applier *ap, int dirfd, const char *name, int depth);

static int remove_entry(struct applier *ap, int dirfd, const char *name, int d_type, int depth)
{
    if (d_type == DT_UNKNOWN) {
        struct stat sb;
        if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
            return errno == ENOENT ? 0 : neg_errno();
        d_type = S_ISDIR(sb.st_mode) ? DT_DIR : DT_REG;
    }
    if (d_type == DT_DIR)
        return remove_tree(ap, dirfd, name, depth + 1);
    if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
        return neg_errno();
    return 0;
}

/* rm -rf of at/name with fd-based calls only; never leaves the root's file system. */
static int remove_tree(struct applier *ap, int at, const char *name, int depth)
{
    if (depth > REMOVE_MAX_DEPTH)
        return -ELOOP;
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOTDIR || errno == ELOOP) /* not a directory (any more): unlink */
            return unlinkat(at, name, 0) < 0 && errno != ENOENT ? neg_errno() : 0;
        return errno == ENOENT ? 0 : neg_errno();
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || sb.st_dev != ap->root_dev) {
        close(fd);
        return -EXDEV;
    }
    _cleanup_closedir_ DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return neg_errno();
    }
    for (int pass = 0; pass < 3; pass++) {
        struct dirent *de;
        errno = 0;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            int r = remove_entry(ap, dirfd(d), de->d_name, de->d_type, depth);
            if (r < 0)
                return r;
        }
        if (unlinkat(at, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            return 0;
        if (errno != ENOTEMPTY)
            return neg_errno();
        rewinddir(d); /* entries may be missed while the directory changes: go again */
    }
    return -ENOTEMPTY;
}

/* Remove what is at dirfd/name so that the current entry can be created there. */
static int remove_existing(struct applier *ap, int dirfd, const char *name)
{
    if (dirfd != ap->cache_fd)
        cache_drop(ap); /* the removed path may be (an alias of) the cached one */
    int r = remove_entry(ap, dirfd, name, DT_UNKNOWN, 0);
    if (r < 0)
        return io_fail(ap, -r, "remove the existing entry");
    return 0;
}

/* Remove every entry below the directory open as fd (lexical path `path`, len bytes) that
 * this layer did not create; recurse into directories on the way to entries it did create. */
static int prune(struct applier *ap, int fd, size_t len, int depth)
{
    if (depth > REMOVE_MAX_DEPTH)
        return -ELOOP;
    _cleanup_closedir_ DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return neg_errno();
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        size_t nlen = strlen(de->d_name), clen = len ? len + 1 + nlen : nlen;
        const struct pathset_node *node = NULL;
        if (clen < ap->pathbuf_cap) {
            if (len)
                ap->pathbuf[len] = '/';
            memcpy(ap->pathbuf + (len ? len + 1 : 0), de->d_name, nlen + 1);
            node = pathset_get(&ap->paths, ap->pathbuf, clen);
        }
        int r;
        if (!node || !node->flags) {
            r = remove_entry(ap, dirfd(d), de->d_name, de->d_type, depth);
        } else {
            int cfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cfd < 0)
                r = (errno == ENOTDIR || errno == ELOOP) ? 0 : neg_errno(); /* kept as is */
            else
                r = prune(ap, cfd, clen, depth + 1);
        }
        if (len)
            ap->pathbuf[len] = '\0';
        if (r < 0)
            return r;
    }
    return 0;
}

#define LOST_FOUND "lost+found"

/* Whether path is lost+found at the root or below it. */
static bool in_lost_found(const char *path)
{
    size_t n = strlen(LOST_FOUND);
    return strncmp(path, LOST_FOUND, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* A whiteout or opaque marker on a fresh root: the only lower entry is an empty lost+found at
 * the root, hidden by `.wh.lost+found` or an opaque root unless the layer wrote there. */
static int apply_whiteout_fresh(struct applier *ap, const struct layer_entry *ent)
{
    if (ent->base_off != 0 || !ap->lower_lost_found || ap->lost_found_written)
        return 0;
    if (ent->kind == EK_WHITEOUT && strcmp(ent->whiteout_name, LOST_FOUND) != 0)
        return 0;
    cache_drop(ap);
    ap->lower_lost_found = false;
    int r = remove_entry(ap, ap->root_rfd, LOST_FOUND, DT_UNKNOWN, 0);
    return r < 0 ? io_fail(ap, -r, "remove the whited-out entry") : 0;
}

static int apply_whiteout(struct applier *ap, const struct layer_entry *ent)
{
    if (ap->fresh)
        return apply_whiteout_fresh(ap, ent);
    cache_drop(ap);
    size_t dlen = ent->base_off ? ent->base_off - 1 : 0;
    char dir[dlen + 2];
    memcpy(dir, ent->path, dlen);
    dir[dlen] = '\0';
    _cleanup_close_ int pfd = open_in_root(ap->root_fd, dlen ? dir : ".", O_RDONLY | O_DIRECTORY);
    if (pfd == -ENOENT || pfd == -ENOTDIR)
        return 0; /* nothing below to hide */
    if (pfd < 0)
        return resolve_fail(ap, pfd, "the whiteout's directory");

    memcpy(ap->pathbuf, dir, dlen + 1);
    if (ent->kind == EK_OPAQUE) {
        int r = prune(ap, TAKE_FD(pfd), dlen, 0);
        if (r < 0)
            return io_fail(ap, -r, "clear the opaque directory");
        if (ap->opaque)
            ap->opaque(dir, ap->opaque_ud);
        return 0;
    }

    const char *victim = ent->whiteout_name;
    size_t vlen = strlen(victim), plen = dlen ? dlen + 1 + vlen : vlen;
    if (plen >= ap->pathbuf_cap)
        return 0; /* longer than any name: cannot exist */
    if (dlen)
        ap->pathbuf[dlen] = '/';
    memcpy(ap->pathbuf + (dlen ? dlen + 1 : 0), victim, vlen + 1);
    const struct pathset_node *node = pathset_get(&ap->paths, ap->pathbuf, plen);
    uint32_t flags = node ? node->flags : 0;
    if (flags & PATHSET_CREATED)
        return 0; /* created by this layer: whiteouts only hide lower layers */
    int r;
    if (flags & PATHSET_ANCESTOR) {
        int cfd = openat(pfd, victim, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        r = cfd < 0 ? 0 : prune(ap, cfd, plen, 0);
    } else {
        r = remove_entry(ap, pfd, victim, DT_UNKNOWN, 0);
    }
    return r < 0 ? io_fail(ap, -r, "remove the whited-out entry") : 0;
}

/* ---- bookkeeping ------------------------------------------------------------------------ */

/* Record the path as created by this layer, and its ancestors. Returns its node's dir_idx
 * slot (to attach or clear deferred directory metadata) through *idx_out. */
static int mark_created(struct applier *ap, const struct layer_entry *ent, bool is_dir,
                        int32_t new_dir_idx)
{
    size_t len = strlen(ent->path);
    if (ap->fresh) {
        if (ap->lower_lost_found && in_lost_found(ent->path))
            ap->lost_found_written = true;
        if (!is_dir) { /* only a directory's deferred metadata is recorded here */
            struct pathset_node *d = pathset_get(&ap->paths, ent->path, len);
            if (d && d->dir_idx >= 0) {
                ap->dirs[d->dir_idx].live = false;
                d->dir_idx = -1;
            }
            return 0;
        }
    }
    struct pathset_node *n = pathset_put(&ap->paths, ent->path, len);
    if (!n)
        return layer_walk_fail(ap->w, -ENOMEM, "io", "out of memory");
    n->flags |= PATHSET_CREATED;
    if (n->dir_idx >= 0 && (!is_dir || new_dir_idx >= 0)) {
        ap->dirs[n->dir_idx].live = false;
        n->dir_idx = -1;
    }
    if (is_dir && new_dir_idx >= 0)
        n->dir_idx = new_dir_idx;
    while (!ap->fresh && len > 0) {
        while (len > 0 && ent->path[len - 1] != '/')
            len--;
        if (len == 0)
            break;
        len--; /* drop the '/' */
        n = pathset_put(&ap->paths, ent->path, len);
        if (!n)
            return layer_walk_fail(ap->w, -ENOMEM, "io", "out of memory");
        if (n->flags & PATHSET_ANCESTOR)
            break;
        n->flags |= PATHSET_ANCESTOR;
    }
    return 0;
}

static bool need_chown(const struct applier *ap, const struct layer_entry *ent, bool setgid,
                       gid_t pgid)
{
    if (!ap->pol.preserve_owner)
        return false;
    gid_t g = setgid ? pgid : ap->egid;
    return ent->uid != ap->euid || ent->gid != g;
}

/* Whether the mode given at creation (perm & 0777, masked by the umask) is already right. */
static bool need_chmod(const struct applier *ap, mode_t mode)
{
    return ap->umask < 0 || (mode & 07000) || (mode & (mode_t)ap->umask);
}

/* ---- entries ------------------------------------------------------------------------------ */

struct file_sink {
    struct applier *ap;
    int fd;
    int64_t pos;
};

/* Data blocks come in increasing offsets; a gap is a hole of a sparse file (left unwritten;
 * the final size is set after the last block). */
static int file_write(const void *buf, size_t n, int64_t off, void *ud)
{
    struct file_sink *s = ud;
    const char *p = buf;
    while (n > 0) {
        ssize_t k = pwrite(s->fd, p, n, off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return io_fail(s->ap, errno, "write the file");
        }
        p += k;
        n -= (size_t)k;
        off += k;
    }
    if (off > s->pos)
        s->pos = off;
    return 0;
}

struct xattr_target {
    struct applier *ap;
    int fd;
};

static int set_fd_xattr(const char *name, const void *value, size_t size, void *ud)
{
    struct xattr_target *t = ud;
    if (fsetxattr(t->fd, name, value, size, 0) < 0) {
        char what[300];
        snprintf(what, sizeof(what), "set extended attribute %s", name);
        return io_fail(t->ap, errno, what);
    }
    return 0;
}

static int count_unapplied_xattr(const char *name, const void *value, size_t size, void *ud)
{
    (void)name, (void)value, (void)size;
    ((struct archive_stats *)ud)->xattrs_dropped++;
    return 0;
}

static int apply_file(struct applier *ap, const struct layer_entry *ent, int pfd, bool setgid,
                      gid_t pgid)
{
    const char *base = ent->path + ent->base_off;
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    _cleanup_close_ int fd = openat(pfd, base, flags, ent->mode & 0777);
    if (fd < 0 && errno == EEXIST) {
        int r = remove_existing(ap, pfd, base);
        if (r < 0)
            return r;
        fd = openat(pfd, base, flags, ent->mode & 0777);
    }
    if (fd < 0)
        return io_fail(ap, errno, "create the file");

    struct file_sink sink = {.ap = ap, .fd = fd, .pos = 0};
    int r = layer_walk_data(ap->w, file_write, &sink);
    if (r < 0)
        return r;
    if (sink.pos < ent->size && ftruncate(fd, ent->size) < 0)
        return io_fail(ap, errno, "size the file");
    if (need_chown(ap, ent, setgid, pgid) && fchown(fd, ent->uid, ent->gid) < 0)
        return io_fail(ap, errno, "set the owner");
    if (need_chmod(ap, ent->mode) && fchmod(fd, ent->mode) < 0)
        return io_fail(ap, errno, "set the mode");
    struct xattr_target xt = {.ap = ap, .fd = fd};
    r = layer_entry_xattrs(ap->w, ent, set_fd_xattr, &xt);
    if (r < 0)
        return r;
    struct timespec ts[2] = {ent->atime, ent->mtime};
    if (futimens(fd, ts) < 0)
        return io_fail(ap, errno, "set the times");
    return mark_created(ap, ent, false, -1);
}

static int copy_xattr(const char *name, const void *value, size_t size, void *ud)
{
    struct dir_meta *m = ud;
    struct xattr_item *n = realloc(m->xattrs, (m->n_xattrs + 1) * sizeof(*n));
    if (!n)
        return -ENOMEM;
    m->xattrs = n;
    struct xattr_item *x = &n[m->n_xattrs];
    x->name = strdup(name);
    x->value = malloc(size ? size : 1);
    x->size = size;
    if (!x->name || !x->value) {
        free(x->name);
        free(x->value);
        return -ENOMEM;
    }
    memcpy(x->value, value, size);
    m->n_xattrs++;
    return 0;
}

static void dir_meta_clear(struct dir_meta *m)
{
    for (size_t i = 0; i < m->n_xattrs; i++) {
        free(m->xattrs[i].name);
        free(m->xattrs[i].value);
    }
    free(m->xattrs);
    free(m->path);
    memset(m, 0, sizeof(*m));
}

static int apply_dir(struct applier *ap, const struct layer_entry *ent, int pfd)
{
    const char *base = ent->path + ent->base_off;
    int fd;
    if (ent->path[0] == '\0') {
        fd = openat(ap->root_rfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    } else {
        /* Created writable for us (the final mode comes at the end); usually already the
         * final mode, so the deferred chmod is skipped. */
        mode_t cmode = (ent->mode & 0777) | 0700;
        if (mkdirat(pfd, base, cmode) < 0) {
            if (errno != EEXIST)
                return io_fail(ap, errno, "create the directory");
            struct stat sb;
            if (fstatat(pfd, base, &sb, AT_SYMLINK_NOFOLLOW) < 0)
                return io_fail(ap, errno, "stat the existing entry");
            if (!S_ISDIR(sb.st_mode)) { /* type change: replace */
                int r = remove_existing(ap, pfd, base);
                if (r < 0)
                    return r;
                if (mkdirat(pfd, base, cmode) < 0)
                    return io_fail(ap, errno, "create the directory");
            }
        }
        fd = openat(pfd, base, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return io_fail(ap, errno, "open the directory");
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int err = errno;
        close(fd);
        return io_fail(ap, err, "stat the directory");
    }

    /* Its entries usually follow: keep it as the cached parent. */
    if (ent->path[0] != '\0') {
        int r = cache_set(ap, ent->path, strlen(ent->path), fd, &sb);
        if (r < 0)
            return io_fail(ap, -r, "stat the directory");
    } else {
        close(fd);
    }

    if (ap->n_dirs == ap->cap_dirs) {
        size_t cap = ap->cap_dirs ? ap->cap_dirs * 2 : 256;
        struct dir_meta *n = realloc(ap->dirs, cap * sizeof(*n));
        if (!n)
            return layer_walk_fail(ap->w, -ENOMEM, "io", "out of memory");
        ap->dirs = n;
        ap->cap_dirs = cap;
    }
    struct dir_meta *m = &ap->dirs[ap->n_dirs];
    memset(m, 0, sizeof(*m));
    m->path = strdup(ent->path);
    if (!m->path)
        return layer_walk_fail(ap->w, -ENOMEM, "io", "out of memory");
    m->mode = ent->mode;
    m->uid = ent->uid;
    m->gid = ent->gid;
    m->ts[0] = ent->atime;
    m->ts[1] = ent->mtime;
    m->dev = sb.st_dev;
    m->ino = sb.st_ino;
    m->live = true;
    ap->n_dirs++;
    int r = layer_entry_xattrs(ap->w, ent, copy_xattr, m);
    if (r == -ENOMEM)
        return layer_walk_fail(ap->w, r, "io", "out of memory");
    if (r < 0)
        return r;
    return mark_created(ap, ent, true, (int32_t)(ap->n_dirs - 1));
}

/* After creating a non-directory named base in pfd: owner, mode (for nodes), times. */
static int finish_node(struct applier *ap, const struct layer_entry *ent, int pfd, bool setgid,
                       gid_t pgid, bool chmod_it)
{
    const char *base = ent->path + ent->base_off;
    if (need_chown(ap, ent, setgid, pgid) &&
        fchownat(pfd, base, ent->uid, ent->gid, AT_SYMLINK_NOFOLLOW) < 0)
        return io_fail(ap, errno, "set the owner");
    if (chmod_it && need_chmod(ap, ent->mode)) {
        /* glibc does this without following (O_PATH + /proc); without /proc it refuses, and
         * the node was just created by mknodat in a directory only this process writes. */
        if (fchmodat(pfd, base, ent->mode, AT_SYMLINK_NOFOLLOW) < 0) {
            struct stat sb;
            if ((errno != EOPNOTSUPP && errno != ENOSYS) ||
                fstatat(pfd, base, &sb, AT_SYMLINK_NOFOLLOW) < 0 || S_ISLNK(sb.st_mode) ||
                fchmodat(pfd, base, ent->mode, 0) < 0)
                return io_fail(ap, errno, "set the mode");
        }
    }
    int r = layer_entry_xattrs(ap->w, ent, count_unapplied_xattr, layer_walk_stats(ap->w));
    if (r < 0)
        return r;
    struct timespec ts[2] = {ent->atime, ent->mtime};
    if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return io_fail(ap, errno, "set the times");
    return mark_created(ap, ent, false, -1);
}

static int apply_symlink(struct applier *ap, const struct layer_entry *ent, int pfd, bool setgid,
                         gid_t pgid)
{
    const char *base = ent->path + ent->base_off;
    if (symlinkat(ent->link, pfd, base) < 0) {
        if (errno != EEXIST)
            return io_fail(ap, errno, "create the symbolic link");
        int r = remove_existing(ap, pfd, base);
        if (r < 0)
            return r;
        if (symlinkat(ent->link, pfd, base) < 0)
            return io_fail(ap, errno, "create the symbolic link");
    }
    return finish_node(ap, ent, pfd, setgid, pgid, false);
}

static int apply_node(struct applier *ap, const struct layer_entry *ent, int pfd, bool setgid,
                      gid_t pgid)
{
    const char *base = ent->path + ent->base_off;
    mode_t type = ent->kind == EK_CHR ? S_IFCHR : ent->kind == EK_BLK ? S_IFBLK : S_IFIFO;
    dev_t rdev = ent->kind == EK_FIFO ? 0 : ent->rdev;
    if (mknodat(pfd, base, type | (ent->mode & 0777), rdev) < 0) {
        // A character device 0:0 is overlayfs's whiteout: an overlay mount (the overlay
        // backend's apply) refuses to create one with EPERM, whatever the capabilities.
        bool whiteout_form = ent->kind == EK_CHR && rdev == 0;
        if (errno != EEXIST)
            return io_fail(ap, errno,
                           ent->kind == EK_FIFO ? "create the FIFO"
                           : whiteout_form
                               ? "create the character device 0:0 (needs CAP_MKNOD; and "
                                 "never possible on the overlay backend, where 0:0 is "
                                 "overlay's whiteout form: use dm-thin for this image)"
                               : "create the device node (needs CAP_MKNOD; or use --no-devices)");
        int r = remove_existing(ap, pfd, base);
        if (r < 0)
            return r;
        if (mknodat(pfd, base, type | (ent->mode & 0777), rdev) < 0)
            return io_fail(ap, errno, "create the node");
    }
    return finish_node(ap, ent, pfd, setgid, pgid, true);
}

static int apply_hardlink(struct applier *ap, const struct layer_entry *ent, int pfd)
{
    const char *base = ent->path + ent->base_off;
    const char *tslash = strrchr(ent->link, '/');
    const char *tbase = tslash ? tslash + 1 : ent->link;
    size_t tdlen = tslash ? (size_t)(tslash - ent->link) : 0;
    size_t dlen = ent->base_off ? ent->base_off - 1 : 0;
    _cleanup_close_ int own = -1;
    int tfd;
    if (tdlen == dlen && memcmp(ent->link, ent->path, dlen) == 0) {
        tfd = pfd;
    } else if (tdlen == 0) {
        tfd = ap->root_rfd;
    } else {
        char tdir[tdlen + 1];
        memcpy(tdir, ent->link, tdlen);
        tdir[tdlen] = '\0';
        own = open_in_root(ap->root_fd, tdir, O_PATH | O_DIRECTORY);
        if (own == -ENOENT || own == -ENOTDIR)
            return layer_walk_fail(ap->w, -EPERM, "hardlink-missing",
                                   "hardlink target does not exist");
        if (own < 0)
            return resolve_fail(ap, own, "the hardlink target's directory");
        tfd = own;
    }
    struct stat tsb;
    if (fstatat(tfd, tbase, &tsb, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return layer_walk_fail(ap->w, -EPERM, "hardlink-missing",
                                   "hardlink target does not exist");
        return io_fail(ap, errno, "stat the hardlink target");
    }
    if (S_ISDIR(tsb.st_mode))
        return layer_walk_fail(ap->w, -EPERM, "hardlink-dir", "hardlink target is a directory");
    if (linkat(tfd, tbase, pfd, base, 0) < 0) {
        if (errno != EEXIST)
            return io_fail(ap, errno, "create the hardlink");
        struct stat sb;
        if (fstatat(pfd, base, &sb, AT_SYMLINK_NOFOLLOW) == 0 && sb.st_dev == tsb.st_dev &&
            sb.st_ino == tsb.st_ino)
            return mark_created(ap, ent, false, -1); /* already that file */
        int r = remove_existing(ap, pfd, base);
        if (r < 0)
            return r;
        if (linkat(tfd, tbase, pfd, base, 0) < 0)
            return errno == ENOENT ? layer_walk_fail(ap->w, -EPERM, "hardlink-missing",
                                                     "hardlink target does not exist")
                                   : io_fail(ap, errno, "create the hardlink");
    }
    return mark_created(ap, ent, false, -1);
}

static int apply_entry(struct layer_walk *w, const struct layer_entry *ent, void *ud)
{
    struct applier *ap = ud;
    ap->w = w;
    if (ent->kind == EK_WHITEOUT || ent->kind == EK_OPAQUE)
        return apply_whiteout(ap, ent);
    bool setgid = false;
    gid_t pgid = 0;
    int pfd = ent->path[0] ? parent_fd(ap, ent, &setgid, &pgid) : ap->root_rfd;
    if (pfd < 0)
        return pfd;
    switch (ent->kind) {
    case EK_FILE:
        return apply_file(ap, ent, pfd, setgid, pgid);
    case EK_DIR:
        return apply_dir(ap, ent, pfd);
    case EK_SYMLINK:
        return apply_symlink(ap, ent, pfd, setgid, pgid);
    case EK_HARDLINK:
        return apply_hardlink(ap, ent, pfd);
    case EK_CHR:
    case EK_BLK:
    case EK_FIFO:
        return apply_node(ap, ent, pfd, setgid, pgid);
    case EK_WHITEOUT:
    case EK_OPAQUE:
        break;
    }
    return 0;
}

/* Directory metadata, children before parents, on the very directories this layer made. */
static int finish_dirs(struct applier *ap, struct err *e)
{
    for (size_t i = ap->n_dirs; i-- > 0;) {
        struct dir_meta *m = &ap->dirs[i];
        if (!m->live)
            continue;
        int fd = m->path[0]
                     ? open_in_root(ap->root_fd, m->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
                     : openat(ap->root_rfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            continue; /* replaced or removed later in the layer: the later entry won */
        _cleanup_close_ int dfd = fd;
        struct stat sb;
        if (fstat(dfd, &sb) < 0)
            return err_set(e, neg_errno(), "directory '%s': cannot stat: %s", m->path,
                           strerror(errno));
        if (sb.st_dev != m->dev || sb.st_ino != m->ino)
            continue; /* the path now leads elsewhere: not the directory this layer made */
        const char *what = NULL;
        if (ap->pol.preserve_owner && (sb.st_uid != m->uid || sb.st_gid != m->gid) &&
            fchown(dfd, m->uid, m->gid) < 0)
            what = "set the owner";
        else if ((sb.st_mode & 07777) != m->mode && fchmod(dfd, m->mode) < 0)
            what = "set the mode";
        for (size_t x = 0; !what && x < m->n_xattrs; x++)
            if (fsetxattr(dfd, m->xattrs[x].name, m->xattrs[x].value, m->xattrs[x].size, 0) < 0)
                what = "set an extended attribute";
        if (!what && futimens(dfd, m->ts) < 0)
            what = "set the times";
        if (what) {
            char name[256];
            int err = errno;
            archive_name_escape(m->path, name, sizeof(name));
            return err_set(e, err == EPERM ? -EACCES : -err,
                           "directory '%s': cannot %s: %s (rule: io)", name, what, strerror(err));
        }
    }
    return 0;
}

/* Whether the directory name in at has no entries but those accept() takes (NULL: none). */
static bool dir_holds_only(int at, const char *name, bool (*accept)(int dfd, const char *entry))
{
    int dfd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return false;
    _cleanup_closedir_ DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return false;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            (!accept || !accept(dfd, de->d_name)))
            return false;
    return true;
}

static bool empty_lost_found(int dfd, const char *entry)
{
    return !strcmp(entry, LOST_FOUND) && dir_holds_only(dfd, LOST_FOUND, NULL);
}

/* Whether the root (open as fd) holds nothing a whiteout could hide: no entries, or only an
 * empty directory lost+found (*lost_found set). Anything unreadable counts as not fresh. */
static bool root_is_fresh(int fd, bool *lost_found)
{
    *lost_found = false;
    if (!dir_holds_only(fd, ".", empty_lost_found))
        return false;
    *lost_found = faccessat(fd, LOST_FOUND, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
    return true;
}

/* The process umask, read without changing it (umask(2) would race with other threads). */
static int read_umask(void)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return -1;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "Umask:", 6) != 0)
            continue;
        char *end;
        unsigned long m = strtoul(line + 6, &end, 8);
        return end != line + 6 && m <= 0777 ? (int)m : -1;
    }
    return -1;
}

/* archive_apply(); kind (names_only, may be NULL) notes the names that make an outer tar;
 * opaque (may be NULL) hears of every opaque directory cleared. */
static int apply_noting(int root_fd, const char *path, const struct archive_policy *p,
                        struct archive_stats *st, struct err *e, struct tar_kind *kind,
                        archive_opaque_fn opaque, void *opaque_ud)
{
    struct applier ap = {
        .opaque = opaque,
        .opaque_ud = opaque_ud,
        .root_fd = root_fd,
        .root_rfd = -1,
        .cache_fd = -1,
        .pol = p ? *p : archive_policy_default(),
        .euid = geteuid(),
        .egid = getegid(),
        .umask = read_umask(),
    };
    int r = archive_policy_require(&ap.pol, e);
    if (r < 0)
        return r;
    size_t cap = archive_path_buffer_size(&ap.pol);
    ap.cache_path = malloc(cap);
    ap.pathbuf = malloc(cap);
    ap.pathbuf_cap = cap;
    if (!ap.cache_path || !ap.pathbuf) {
        r = err_set(e, -ENOMEM, "out of memory");
        goto out;
    }
    ap.root_rfd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat sb;
    if (ap.root_rfd < 0 || fstat(ap.root_rfd, &sb) < 0) {
        r = err_set(e, neg_errno(), "cannot open the root directory: %s", strerror(errno));
        goto out;
    }
    ap.root_dev = sb.st_dev;
    ap.fresh = root_is_fresh(ap.root_rfd, &ap.lower_lost_found);
    ap.root_setgid = (sb.st_mode & S_ISGID) != 0;
    ap.root_gid = sb.st_gid;

    r = layer_walk_run(path, p, st, e, apply_entry, &ap, kind);
    cache_drop(&ap);
    if (r >= 0)
        r = finish_dirs(&ap, e);
out:
    cache_drop(&ap);
    if (ap.root_rfd >= 0)
        close(ap.root_rfd);
    for (size_t i = 0; i < ap.n_dirs; i++)
        dir_meta_clear(&ap.dirs[i]);
    free(ap.dirs);
    pathset_free(&ap.paths);
    free(ap.cache_path);
    free(ap.pathbuf);
    return r;
}

int archive_apply(int root_fd, const char *path, const struct archive_policy *p,
                  struct archive_stats *st, struct err *e)
{
    return apply_noting(root_fd, path, p, st, e, NULL, NULL, NULL);
}

int archive_apply_opaque(int root_fd, const char *path, const struct archive_policy *p,
                         archive_opaque_fn opaque, void *ud, struct archive_stats *st,
                         struct err *e)
{
    return apply_noting(root_fd, path, p, st, e, NULL, opaque, ud);
}

/* Remove every entry of the directory open as fd (remove_entry: fd-based, never following a
 * link or leaving the root's file system); the entry named keep (may be NULL) is emptied the
 * same way but kept. */
static int clear_dir(struct applier *ap, int fd, const char *keep)
{
    int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return neg_errno();
    _cleanup_closedir_ DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return neg_errno();
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        int r;
        if (keep && !strcmp(de->d_name, keep)) {
            _cleanup_close_ int k =
                openat(dirfd(d), keep, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            r = k < 0 ? neg_errno() : clear_dir(ap, k, NULL);
        } else {
            r = remove_entry(ap, dirfd(d), de->d_name, de->d_type, 0);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

int archive_apply_detect(int root_fd, const char *path, const struct archive_policy *p,
                         enum blob_format *out, char *why, size_t why_len, struct archive_stats *st,
                         struct err *e)
{
    *out = BLOB_UNKNOWN;
    enum blob_format layer_fmt;
    int r = archive_detect_head(path, &layer_fmt, why, why_len);
    if (r < 0 || layer_fmt == BLOB_UNKNOWN)
        return r;
    _cleanup_close_ int rfd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat sb;
    if (rfd < 0 || fstat(rfd, &sb) < 0)
        return err_set(e, neg_errno(), "cannot open the root directory: %m");
    bool lost_found;
    if (!root_is_fresh(rfd, &lost_found)) {
        /* Something is there already: an outer tar applied as a layer could overwrite it, so
         * the format is known before anything is written (a second read of the blob). */
        r = archive_detect(path, out, why, why_len);
        if (r < 0 || !blob_format_is_layer(*out))
            return r;
        return archive_apply(root_fd, path, p, st, e);
    }
    struct tar_kind kind = {.names_only = true};
    r = apply_noting(root_fd, path, p, st, e, &kind, NULL, NULL);
    if (r == 0 && !kind.named) {
        *out = layer_fmt;
        return 0;
    }
    /* A name an outer tar has (manifest.json, oci-layout), or a rejection that may have come
     * before such a name: the header walk decides (rare: a second read of the blob). What an
     * outer tar (or a blob detection calls no archive at all) put in the root is removed
     * again, leaving it as fresh as it was. */
    enum blob_format f;
    char fwhy[256] = "";
    if (archive_detect(path, &f, fwhy, sizeof(fwhy)) == 0 && !blob_format_is_layer(f)) {
        struct applier ap = {.root_dev = sb.st_dev, .cache_fd = -1, .root_rfd = -1};
        int c = clear_dir(&ap, rfd, lost_found ? LOST_FOUND : NULL);
        if (c < 0)
            return err_set(e, c,
                           "a blob that is not a layer (%s) was applied as one and its "
                           "entries cannot be removed again (%s); empty the directory and "
                           "run again",
                           blob_format_name(f), strerror(-c));
        err_clear(e);
        if (st)
            memset(st, 0, sizeof(*st));
        *out = f;
        if (why && why_len)
            snprintf(why, why_len, "%s", fwhy);
        return 0;
    }
    *out = layer_fmt;
    return r;
}
