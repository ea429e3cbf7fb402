/*
 * backend_overlay.c: the OverlayFS storage backend (backend.h): layers as directories, an
 * activation as an overlay mount. For hosts whose kernel has overlayfs and no device-mapper,
 * and for container hosts that want directories rather than block devices.
 *
 * Layout, under the state directory (OVERLAY_SUBDIR):
 *
 *   overlay/layers/<hex>/diff   the layer's own change set, by chain id (<hex>: the chain id's
 *                               hash), shared by every image with that chain: files the layer
 *                               adds or changes, in overlay's own form (whiteouts as character
 *                               devices 0:0, a directory made again over a removed one marked
 *                               trusted.overlay.opaque=y), so the directory is a lower layer
 *                               as it is
 *   overlay/layers/<hex>/work   overlay's work directory while the layer is applied (removed
 *                               at commit)
 *   overlay/act/<name>/upper    the activation's writes (kept by deactivate, deleted by remove)
 *   overlay/act/<name>/work     its overlay work directory
 *   overlay/act/<name>/merged   the mount point, unless --mount-at names another
 *   overlay/empty               an empty directory: the lower of a base layer's apply
 *
 * apply-layer mounts an overlay of the layer's diff (upper) over its parent chain (lower, top
 * first) privately in a child process (dm/mount.h) and applies the blob with the same secure
 * extractor as dm-thin onto the merged view. The kernel writes the layer's change set in
 * overlay's form: an OCI whiteout applied as a removal becomes a whiteout device in diff; a
 * directory removed and made again, an opaque one; a file changed or hardlinked below a lower
 * directory is copied up with its metadata. An opaque marker clears the lower entries (one
 * whiteout each); after the mount, the directory in diff is marked opaque instead
 * (mark_opaque_dirs()).
 * So the diff is what the layer changes, and the merged view is what dm-thin's snapshot holds
 * (tests/pipeline/overlay.sh compares them). Every mount has metacopy and redirect_dir off, so
 * that a diff holds whole files and plain directories and serves as a lower layer of any later
 * mount; the apply mount has the index on (copy_up_aliases()).
 *
 * Activation mounts lowerdir = the chain (top first), upperdir and workdir of its own, with the
 * new mount API (fsopen/fsconfig "lowerdir+", one layer per call: a chain of any depth) where
 * the kernel has it (6.8), else mount(2) with the option string. After a reboot the mount is
 * gone and the directories stay: check-snapshot sees it is not up and mounts it again.
 *
 * Committed layers are never written again: they are only ever mounted as lower layers, which
 * overlay never writes to.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "archive/archive.h"
#include "dm/mount.h"
#include "pipeline/backend.h"
#include "pipeline/machine.h"
#include "pipeline/updates.h"
#include "util/buf.h"
#include "util/cleanup.h"
#include "util/fault.h"
#include "util/fsutil.h"
#include "util/log.h"

/* The backend's directory under the state directory. */
#define OVERLAY_SUBDIR "overlay"
/* overlayfs' statfs f_type (linux/magic.h). */
#define OVERLAY_SUPER_MAGIC 0x794c7630
/* Directories the backend makes: only root reads them (images hold setuid files). */
#define OVERLAY_DIR_MODE 0700
/* Mount options of every overlay mount (see above): diff dirs that are plain lower layers. */
#define OVERLAY_FIXED_OPTIONS "metacopy=off,redirect_dir=off"
/* The apply mount also indexes copied-up inodes, so that a lower file's other names follow it
 * into the diff as hardlinks (copy_up_aliases()); an activation's mount does not need it. */
#define OVERLAY_APPLY_OPTIONS "index=on"
#define OVERLAY_MOUNT_OPTIONS "index=off"
/* The longest lowerdir list this backend builds (the chain's depth is capped far below by
 * source/ref.h; each entry is a path under the state directory). */
#define OVERLAY_LOWER_MAX ((size_t)256 << 10)

/* ---- paths ------------------------------------------------------------------------------- */

/* STATE/overlay/<a>/<b>/<c> (b, c may be NULL). -ENAMETOOLONG when it does not fit. */
static int ov_dir(const char *state_dir, char *out, size_t n, const char *a, const char *b,
                  const char *c)
{
    int len = snprintf(out, n, "%s/%s/%s%s%s%s%s", state_dir, OVERLAY_SUBDIR, a, b ? "/" : "",
                       b ? b : "", c ? "/" : "", c ? c : "");
    return len < 0 || (size_t)len >= n ? -ENAMETOOLONG : 0;
}

static int ov_path(const struct pipeline *p, char *out, size_t n, const char *a, const char *b,
                   const char *c)
{
    return ov_dir(p->cfg.state_dir, out, n, a, b, c);
}

/* The hash of a chain id ("sha256:<hex>" -> "<hex>"): a directory name. */
static const char *chain_hex(const char *chain_id)
{
    const char *colon = strchr(chain_id, ':');
    return colon ? colon + 1 : chain_id;
}

static int layer_path(const struct pipeline *p, const char *chain_id, const char *leaf, char *out,
                      size_t n)
{
    return ov_path(p, out, n, "layers", chain_hex(chain_id), leaf);
}

static int act_path(const struct pipeline *p, const char *name, const char *leaf, char *out,
                    size_t n)
{
    return ov_path(p, out, n, "act", name, leaf);
}

static int nftw_remove(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    int r = flag == FTW_DP ? rmdir(path) : unlink(path);
    return r < 0 && errno != ENOENT ? -1 : 0;
}

/* rm -rf path, staying on its file system (FTW_MOUNT: a mount below is not entered). */
static int remove_tree(const char *path, struct err *e)
{
    struct stat sb;
    if (lstat(path, &sb) < 0)
        return errno == ENOENT ? 0
                               : err_set(e, -errno, "cannot stat %s: %s", path, strerror(errno));
    if (nftw(path, nftw_remove, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
        return err_set(e, errno ? -errno : -EIO, "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

static int make_dir(const char *path, struct err *e)
{
    int r = mkdir_p(path, OVERLAY_DIR_MODE);
    return r < 0 ? err_set(e, r, "cannot create directory %s: %s", path, strerror(-r)) : 0;
}

static bool is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The mode of a new layer's root with no parent: what mkfs.ext4 gives dm-thin's base layer (the
 * layer's own "./" entry, if it has one, sets it). */
#define OVERLAY_BASE_ROOT_MODE 0755

/* A new upper directory (a layer's diff, an activation's upper) is the merged view's root: it
 * starts as the root below it (from: the parent layer's diff, NULL for a base layer) so that
 * what the layer does not change stays as the lower layers have it. */
static int init_root(const char *dir, const char *from, struct err *e)
{
    struct stat sb = {.st_mode = OVERLAY_BASE_ROOT_MODE};
    if (from && stat(from, &sb) < 0)
        return err_set(e, -errno, "cannot stat %s: %s", from, strerror(errno));
    struct timespec ts[2] = {sb.st_atim, sb.st_mtim};
    if (chown(dir, sb.st_uid, sb.st_gid) < 0 || chmod(dir, sb.st_mode & 07777) < 0 ||
        (from && utimensat(AT_FDCWD, dir, ts, 0) < 0))
        return err_set(e, -errno, "cannot set the owner, mode and times of %s: %s", dir,
                       strerror(errno));
    return 0;
}

/* The suffix of a new root directory while init_root() gives it its metadata. */
#define OVERLAY_NEW_SUFFIX ".new"

/* A root directory (a layer's diff, an activation's upper) that exists keeps what it holds; a
 * new one is made under a temporary name, given init_root(from)'s metadata, and renamed into
 * place, so that a kill between the mkdir and the metadata leaves no 0700 root behind for the
 * next attempt to take as made (what such a kill left under the temporary name goes first). */
static int make_root(const char *dir, const char *from, struct err *e)
{
    if (is_dir(dir))
        return 0;
    char tmp[4096];
    int len = snprintf(tmp, sizeof(tmp), "%s%s", dir, OVERLAY_NEW_SUFFIX);
    if (len < 0 || (size_t)len >= sizeof(tmp))
        return err_set(e, -ENAMETOOLONG, "the path %s is too long", dir);
    int r = remove_tree(tmp, e);
    if (r == 0)
        r = make_dir(tmp, e);
    fault_point("overlay.make-root"); /* the window a kill must not leave a root in */
    if (r == 0)
        r = init_root(tmp, from, e);
    if (r == 0 && rename(tmp, dir) < 0)
        r = err_set(e, -errno, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
    return r;
}

/* The diff dirs of chain_id and its ancestors, top first, each through add(). */
static int for_chain(struct pipeline *p, const char *chain_id,
                     int (*add)(const char *dir, void *ud), void *ud, struct err *e)
{
    char chain[DIGEST_STR_LEN + 1];
    snprintf(chain, sizeof(chain), "%s", chain_id);
    for (int depth = 0; chain[0]; depth++) {
        struct layer_rec l = {0};
        int r = imagedb_layer_get(p->db, chain, &l);
        if (r < 0)
            return err_set(e, r, "layer %.19s of the chain is not recorded", chain);
        snprintf(chain, sizeof(chain), "%s", l.parent_chain ? l.parent_chain : "");
        char dir[4096];
        r = layer_path(p, l.chain_id, "diff", dir, sizeof(dir));
        bool ready = !strcmp(l.state, "ready");
        layer_rec_free(&l);
        if (r < 0)
            return err_set(e, r, "the state directory's path is too long");
        if (!ready || !is_dir(dir))
            return err_set(e, -ENOENT, "layer directory %s is missing or not committed", dir);
        if ((r = add(dir, ud)) < 0)
            return err_set(e, r, "cannot add lower layer %s", dir);
    }
    return 0;
}

/* lowerdir=a:b:c as a mount(2) option (the option page limits its length). */
static int add_lower_option(const char *dir, void *ud)
{
    struct buf *b = ud;
    if (strpbrk(dir, ":,\\"))
        return -EINVAL; /* the option syntax has no escape we rely on */
    if (b->len + strlen(dir) + 1 > OVERLAY_LOWER_MAX)
        return -E2BIG;
    int r = b->len ? buf_append(b, ":", 1) : 0;
    return r < 0 ? r : buf_append(b, dir, strlen(dir));
}

/* The option string of an overlay of upper/work over the chain of chain_id ("": over the empty
 * directory), in out (buf_free() it). */
static int mount_options(struct pipeline *p, const char *chain_id, const char *upper,
                         const char *work, const char *extra, struct buf *out, struct err *e)
{
    struct buf lower = BUF_INIT;
    int r = 0;
    if (chain_id && chain_id[0]) {
        r = for_chain(p, chain_id, add_lower_option, &lower, e);
    } else {
        char empty[4096];
        r = ov_path(p, empty, sizeof(empty), "empty", NULL, NULL);
        if (r == 0)
            r = make_dir(empty, e);
        if (r == 0)
            r = add_lower_option(empty, &lower);
    }
    if (r == 0)
        r = buf_printf(out, "lowerdir=%.*s,upperdir=%s,workdir=%s,%s,%s", (int)lower.len,
                       (const char *)lower.data, upper, work, OVERLAY_FIXED_OPTIONS, extra);
    buf_free(&lower);
    if (r < 0) /* kept when for_chain() said why */
        err_set(e, r, "cannot build the overlay options");
    return r;
}

/* ---- layers ------------------------------------------------------------------------------ */

static bool ov_layer_recorded(const struct layer_rec *l)
{
    (void)l;
    return true; /* the directory is named by the chain id */
}

/* nftw callback of copy_up_aliases(): a setattr that changes nothing copies the file up; with
 * the index, a lower file whose other name the layer copied up becomes a hardlink to it. */
static int copy_up_alias(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag != FTW_F || S_ISDIR(sb->st_mode) || sb->st_nlink < 2)
        return 0;
    return lchown(path, sb->st_uid, sb->st_gid) < 0 ? -1 : 0;
}

/*
 * After the apply (in the mount child): a hardlink the layer made to a lower file copied that
 * file up, and the file's other names still lead to the lower inode, which a later mount
 * without this index shows as another file: the hardlink group would be split. Every name of a
 * multiply-linked file is copied up here, which the index turns into hardlinks of the copy.
 * Only a layer with hardlink entries pays for the walk.
 */
static int copy_up_aliases(const char *mountpoint, const struct archive_stats *st, struct err *e)
{
    if (!st->hardlinks)
        return 0;
    if (nftw(mountpoint, copy_up_alias, 16, FTW_PHYS | FTW_MOUNT) < 0)
        return err_set(e, errno ? -errno : -EIO,
                       "cannot copy up the names of hardlinked "
                       "files: %s",
                       strerror(errno));
    return 0;
}

/* overlay's mark of an opaque directory (the kernel sets it on a directory made over a
 * whiteout); the trusted namespace, as the mounts have no userxattr. */
#define OVERLAY_OPAQUE_XATTR "trusted.overlay.opaque"
/* Deeper than any layer's tree (the archive policy caps path depth far below). */
#define OVERLAY_WALK_MAX_DEPTH 4096

/* A whiteout in overlay's form: a character device 0:0. */
static bool is_whiteout(const struct stat *sb)
{
    return S_ISCHR(sb->st_mode) && sb->st_rdev == makedev(0, 0);
}

/* Delete every whiteout below the directory open as fd (closed here), which is on the diff's
 * file system: no symlink is followed, no mount entered. */
static int drop_whiteouts(int fd, dev_t dev, int depth)
{
    if (depth > OVERLAY_WALK_MAX_DEPTH) {
        close(fd);
        return -ELOOP;
    }
    /* The directory's times are the layer's (the extractor set them): deleting entries would
     * move its mtime to now, so they are put back after. */
    struct stat dsb;
    if (fstat(fd, &dsb) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    _cleanup_closedir_ DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    bool changed = false;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (de->d_type != DT_UNKNOWN && de->d_type != DT_CHR && de->d_type != DT_DIR)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
            return -errno;
        if (is_whiteout(&sb)) {
            if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                return -errno;
            changed = true;
        } else if (S_ISDIR(sb.st_mode) && sb.st_dev == dev) {
            int cfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int r = cfd < 0 ? -errno : drop_whiteouts(cfd, dev, depth + 1);
            if (r < 0)
                return r;
        }
    }
    const struct timespec times[2] = {dsb.st_atim, dsb.st_mtim};
    if (changed && futimens(dirfd(d), times) < 0)
        return -errno;
    return 0;
}

/*
 * After the apply (the overlay is unmounted: its namespace is gone), each directory the layer
 * marked opaque, in overlay's own form. On the merged view the extractor removed the
 * directory's lower entries one by one, which the kernel recorded as a whiteout each in the
 * diff; the directory in the diff is now marked opaque (what the kernel does to a directory
 * made again over a removed one) and those whiteouts, below it at any depth, are deleted: an
 * opaque directory hides every lower entry, so they are redundant. What the layer itself
 * wrote there (before or after the marker in the tar) stays. Paths are resolved below diff
 * without following a symlink; a directory that is not in the diff (nothing below was hidden)
 * or is reached through a symlink keeps the kernel's form, and so does the root: overlay never
 * reads the opaque mark of a layer's root. Marking first and then deleting converges when
 * interrupted (the next attempt applies the layer again). Cost: a walk of the diff below each
 * opaque directory, i.e. of what this layer wrote there.
 */
static int mark_opaque_dirs(const char *diff, const struct buf *list, struct err *e)
{
    if (!list->len)
        return 0;
    _cleanup_close_ int root = open(diff, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat rsb;
    if (root < 0 || fstat(root, &rsb) < 0)
        return err_set(e, -errno, "cannot open %s: %s", diff, strerror(errno));
    for (size_t off = 0; off < list->len;) {
        const char *dir = list->data + off;
        off += strnlen(dir, list->len - off) + 1;
        if (!dir[0])
            continue;
        struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
                                          RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
        long fd = syscall(SYS_openat2, root, dir, &how, sizeof(how));
        if (fd < 0 && (errno == ENOENT || errno == ENOTDIR || errno == ELOOP || errno == EXDEV))
            continue; /* not in the diff as a directory: the kernel's form stays */
        if (fd < 0)
            return err_set(e, -errno, "cannot open %s/%s: %s", diff, dir, strerror(errno));
        int dfd = (int)fd;
        int r = fsetxattr(dfd, OVERLAY_OPAQUE_XATTR, "y", 1, 0) < 0 ? -errno : 0;
        if (r < 0) {
            close(dfd);
            return err_set(e, r, "cannot mark %s/%s opaque: %s", diff, dir, strerror(-r));
        }
        r = drop_whiteouts(dfd, rsb.st_dev, 0);
        if (r < 0)
            return err_set(e, r, "cannot delete the whiteouts below opaque %s/%s: %s", diff, dir,
                           strerror(-r));
    }
    return 0;
}

static int ov_layer_check(struct pipeline *p, struct fsm_run *run, const char *chain_id,
                          const struct layer_rec *l, struct err *e)
{
    (void)l;
    char diff[4096];
    int r = layer_path(p, chain_id, "diff", diff, sizeof(diff));
    if (r < 0)
        return err_set(e, r, "the state directory's path is too long");
    if (is_dir(diff))
        return 1;
    log_warn("layer directory missing; unpacking the layer again", "chain=%s dir=%s", chain_id,
             diff);
    struct layer_update *u = layer_update_new(chain_id);
    u->set_state = true;
    snprintf(u->state, sizeof(u->state), "pending");
    u->error = strdup("layer directory removed behind thinimg's back; recreated");
    fsm_run_on_commit(run, layer_update_apply, u, layer_update_free);
    return 0;
}

static struct fsm_result ov_layer_prepare(struct fsm_run *run, struct pipeline *p,
                                          const struct backend_layer_req *q,
                                          struct backend_layer *s)
{
    (void)run;
    struct err e = {0};
    char diff[4096], work[4096];
    int r = layer_path(p, q->chain_id, "diff", diff, sizeof(diff));
    if (r == 0)
        r = layer_path(p, q->chain_id, "work", work, sizeof(work));
    if (r < 0)
        return fsm_abort("the state directory's path is too long for layer %.19s", q->chain_id);
    /* What an interrupted attempt left is applied again: the extractor converges. */
    char parent[4096] = "";
    if (q->parent_chain[0] && layer_path(p, q->parent_chain, "diff", parent, sizeof(parent)) < 0)
        return fsm_abort("the state directory's path is too long for layer %.19s", q->chain_id);
    if ((r = make_root(diff, parent[0] ? parent : NULL, &e)) < 0 || (r = make_dir(work, &e)) < 0)
        return fsm_with_kind(fsm_abort("layer %.19s: %s", q->chain_id, err_str(&e)),
                             err_kind_of(r));
    snprintf(s->device_path, sizeof(s->device_path), "%s", diff);
    log_info("layer directory ready", "chain=%.19s dir=%s", q->chain_id, diff);
    return fsm_ok();
}

static void ov_no_device(struct pipeline *p, const void *s, char *pool, size_t pool_len,
                         uint32_t *dev_id)
{
    (void)p;
    (void)s;
    snprintf(pool, pool_len, "%s", "");
    *dev_id = 0;
}

static void ov_layer_device(struct pipeline *p, const struct backend_layer *s, char *pool,
                            size_t pool_len, uint32_t *dev_id)
{
    ov_no_device(p, s, pool, pool_len, dev_id);
}

static struct fsm_result ov_layer_apply(struct fsm_run *run, struct pipeline *p,
                                        const struct backend_layer_req *q, struct backend_layer *s)
{
    struct err e = {0};
    char diff[4096], work[4096];
    if (layer_path(p, q->chain_id, "diff", diff, sizeof(diff)) < 0 ||
        layer_path(p, q->chain_id, "work", work, sizeof(work)) < 0)
        return fsm_abort("the state directory's path is too long for layer %.19s", q->chain_id);
    if (!is_dir(diff) || !is_dir(work))
        return fsm_abort("layer directory %s is missing (removed behind thinimg's back?)", diff);
    struct buf opts = BUF_INIT;
    int r = mount_options(p, q->parent_chain, diff, work, OVERLAY_APPLY_OPTIONS, &opts, &e);
    if (r < 0) {
        buf_free(&opts);
        return fsm_abort("layer %.19s: %s", q->chain_id, err_str(&e));
    }
    struct archive_stats st = {0};
    struct mount_spec spec = {.device = "overlay",
                              .mountpoint = p->cfg.mount_dir,
                              .fstype = "overlay",
                              .flags = MS_NOATIME,
                              .options = (const char *)opts.data};
    struct buf opaque = BUF_INIT;
    r = backend_apply_mounted(run, p, q, &spec, copy_up_aliases, &st, &opaque, &e);
    buf_free(&opts);
    if (r == 0)
        r = mark_opaque_dirs(diff, &opaque, &e);
    buf_free(&opaque);
    if (r == -ECANCELED)
        return fsm_retry("apply layer %.19s interrupted: %s", q->chain_id, err_str(&e));
    /* With the index on, overlay refuses (EBUSY) an upper dir that another mount still holds:
     * after a kill -9, the mount child of the interrupted attempt is killed with its process
     * (PR_SET_PDEATHSIG), and its mount goes with its namespace a moment later. Only that
     * mount can hold the diff (the chain lock keeps other runs off it): wait for it to go. */
    if (r == -EBUSY)
        return fsm_retry("layer %.19s: directory %s is still held by another overlay mount (an "
                         "interrupted attempt's, going away): %s",
                         q->chain_id, diff, err_str(&e));
    if (r < 0)
        return fsm_with_kind(
            fsm_abort("apply layer %.19s into %s: %s", q->chain_id, diff, err_str(&e)),
            err_kind_of(r));
    s->entries = (int64_t)st.entries;
    s->bytes = (int64_t)st.bytes;
    snprintf(s->device_path, sizeof(s->device_path), "%s", diff);
    log_info("layer applied", "chain=%.19s dir=%s entries=%lld bytes=%lld", q->chain_id, diff,
             (long long)s->entries, (long long)s->bytes);
    return fsm_ok();
}

static struct fsm_result ov_layer_verify(struct fsm_run *run, struct pipeline *p,
                                         const struct backend_layer_req *q, struct backend_layer *s)
{
    (void)run;
    (void)s;
    char diff[4096];
    if (layer_path(p, q->chain_id, "diff", diff, sizeof(diff)) < 0 || !is_dir(diff))
        return fsm_abort("layer directory of %.19s vanished while the layer was applied",
                         q->chain_id);
    return fsm_ok();
}

static struct fsm_result ov_layer_commit(struct fsm_run *run, struct pipeline *p,
                                         const struct backend_layer_req *q, struct backend_layer *s)
{
    (void)run;
    (void)s;
    struct err e = {0};
    char work[4096];
    if (layer_path(p, q->chain_id, "work", work, sizeof(work)) < 0)
        return fsm_abort("the state directory's path is too long for layer %.19s", q->chain_id);
    /* The work directory is overlay's scratch space of the apply mount; a lower layer has
     * none. Removing it again after a crash is a no-op. */
    int r = remove_tree(work, &e);
    if (r < 0)
        return fsm_retry("layer %.19s: %s", q->chain_id, err_str(&e));
    log_info("layer committed", "chain=%.19s", q->chain_id);
    return fsm_ok();
}

static void ov_layer_failed(struct fsm_run *run, struct pipeline *p, const struct backend_layer *s,
                            const char *error)
{
    /* The directory stays as it is (fail dumb); the next run applies the layer again. */
    (void)run;
    (void)p;
    (void)s;
    (void)error;
}

/* ---- activations ------------------------------------------------------------------------- */

static bool ov_act_recorded(const struct activation_rec *a)
{
    return a->device_path && a->device_path[0];
}

/* Is path the root of an overlay mount? */
static bool overlay_mounted(const char *path)
{
    struct statfs fs;
    struct statx stx;
    if (statfs(path, &fs) < 0 || fs.f_type != OVERLAY_SUPER_MAGIC)
        return false;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0)
        return false;
    return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
           (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

static bool ov_act_up(struct pipeline *p, const struct activation_rec *a)
{
    (void)p;
    return ov_act_recorded(a) && overlay_mounted(a->device_path);
}

static int ov_act_check(struct pipeline *p, struct fsm_run *run, const struct activation_rec *a,
                        struct err *e)
{
    (void)run;
    bool active = !strcmp(a->state, "active");
    if (active && ov_act_up(p, a))
        return 1;
    char upper[4096];
    if (act_path(p, a->name, "upper", upper, sizeof(upper)) < 0)
        return err_set(e, -ENAMETOOLONG, "the state directory's path is too long");
    if (is_dir(upper)) {
        if (active)
            log_warn("activation not mounted; mounting it again", "activation=%s mount=%s", a->name,
                     a->device_path);
        return 0;
    }
    log_warn("activation's upper directory is gone; making a new one", "activation=%s dir=%s",
             a->name, upper);
    return err_set(e, -ENOENT, "upper directory removed behind thinimg's back; recreated");
}

/* The new mount API: one fsconfig call per lower layer ("lowerdir+", Linux 6.8). */
struct fsctx {
    int fd;
};

static int add_lower_fsconfig(const char *dir, void *ud)
{
    struct fsctx *c = ud;
    return fsconfig(c->fd, FSCONFIG_SET_STRING, "lowerdir+", dir, 0) < 0 ? -errno : 0;
}

/* Mount the overlay of the chain with upper/work at target through fsopen. -EINVAL from the
 * first lower layer: the kernel has no "lowerdir+" (the caller falls back to mount(2)). */
static int mount_new_api(struct pipeline *p, const char *chain_id, const char *upper,
                         const char *work, const char *target, struct err *e)
{
    int fd = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fd < 0)
        return err_set(e, -errno, "fsopen(overlay): %s", strerror(errno));
    _cleanup_close_ int fsfd = fd;
    struct fsctx c = {.fd = fsfd};
    int r = for_chain(p, chain_id, add_lower_fsconfig, &c, e);
    if (r < 0)
        return r;
    static const char *const fixed[][2] = {
        {"index", "off"}, {"metacopy", "off"}, {"redirect_dir", "off"}};
    if (fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
        fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", work, 0) < 0)
        return err_set(e, -errno, "overlay upper/work %s, %s: %s", upper, work, strerror(errno));
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        if (fsconfig(fsfd, FSCONFIG_SET_STRING, fixed[i][0], fixed[i][1], 0) < 0)
            return err_set(e, -errno, "overlay option %s=%s: %s", fixed[i][0], fixed[i][1],
                           strerror(errno));
    if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return err_set(e, -errno, "cannot create the overlay of %s: %s", upper, strerror(errno));
    int m = fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (m < 0)
        return err_set(e, -errno, "fsmount(overlay): %s", strerror(errno));
    _cleanup_close_ int mfd = m;
    if (move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return err_set(e, -errno, "cannot mount the overlay on %s: %s", target, strerror(errno));
    return 0;
}

static int mount_activation(struct pipeline *p, const char *chain_id, const char *upper,
                            const char *work, const char *target, struct err *e)
{
    struct err ne = {0};
    int r = mount_new_api(p, chain_id, upper, work, target, &ne);
    if (r != -EINVAL && r != -ENOSYS) {
        if (r < 0)
            err_set(e, r, "%s", err_str(&ne));
        return r;
    }
    log_info("the kernel's overlay has no lowerdir+; mounting with an option string",
             "error=\"%s\"", err_str(&ne));
    struct buf opts = BUF_INIT;
    r = mount_options(p, chain_id, upper, work, OVERLAY_MOUNT_OPTIONS, &opts, e);
    if (r == 0 &&
        mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV, (const char *)opts.data) < 0)
        r = err_set(e, -errno, "cannot mount the overlay on %s: %s", target, strerror(errno));
    buf_free(&opts);
    return r;
}

static struct fsm_result ov_act_create(struct fsm_run *run, struct pipeline *p,
                                       const struct backend_act_req *q, struct backend_act *s)
{
    (void)run;
    struct err e = {0};
    char upper[4096], work[4096], target[4096];
    if (act_path(p, q->name, "upper", upper, sizeof(upper)) < 0 ||
        act_path(p, q->name, "work", work, sizeof(work)) < 0)
        return fsm_abort("the state directory's path is too long for activation %s", q->name);
    if (s->reactivate && s->device_path[0])
        snprintf(target, sizeof(target), "%s", s->device_path);
    else if (q->mount_at[0])
        snprintf(target, sizeof(target), "%s", q->mount_at);
    else if (act_path(p, q->name, "merged", target, sizeof(target)) < 0)
        return fsm_abort("the state directory's path is too long for activation %s", q->name);
    if (strlen(target) >= sizeof(s->device_path))
        return fsm_abort("mount point %s is too long", target);
    char top[4096];
    if (layer_path(p, q->chain_id, "diff", top, sizeof(top)) < 0)
        return fsm_abort("the state directory's path is too long for activation %s", q->name);
    int r = 0;
    if ((r = make_root(upper, top, &e)) < 0 || (r = make_dir(work, &e)) < 0 ||
        (r = mkdir_p(target, OVERLAY_DIR_MODE)) < 0) {
        err_set(&e, r, "cannot create mount point %s: %s", target, strerror(-r));
        return fsm_with_kind(fsm_abort("activation %s: %s", q->name, err_str(&e)), err_kind_of(r));
    }
    /* An earlier attempt may have mounted it and died before its checkpoint. */
    if (!overlay_mounted(target) &&
        (r = mount_activation(p, q->chain_id, upper, work, target, &e)) < 0)
        return fsm_with_kind(fsm_abort("activation %s: %s", q->name, err_str(&e)), err_kind_of(r));
    snprintf(s->device_path, sizeof(s->device_path), "%s", target);
    log_info("activation mounted", "activation=%s mount=%s", q->name, target);
    return fsm_ok();
}

static void ov_act_device(struct pipeline *p, const struct backend_act *s, char *pool,
                          size_t pool_len, uint32_t *dev_id)
{
    ov_no_device(p, s, pool, pool_len, dev_id);
}

static void ov_act_failed(struct fsm_run *run, struct pipeline *p, const struct backend_act *s,
                          const char *error)
{
    (void)run;
    (void)p;
    (void)s;
    (void)error; /* the directories stay (fail dumb); gc finds them */
}

/* ---- life cycle -------------------------------------------------------------------------- */

static int ov_act_down(struct pipeline *p, const struct activation_rec *a, bool remove,
                       struct err *e)
{
    if (overlay_mounted(a->device_path) && umount2(a->device_path, UMOUNT_NOFOLLOW) < 0)
        return err_set(e, -errno, "cannot unmount %s: %s", a->device_path, strerror(errno));
    if (!remove)
        return 0;
    char dir[4096];
    if (act_path(p, a->name, NULL, dir, sizeof(dir)) < 0)
        return err_set(e, -ENAMETOOLONG, "the state directory's path is too long");
    return remove_tree(dir, e);
}

static int ov_layer_remove(struct pipeline *p, const struct layer_rec *l, struct err *e)
{
    char dir[4096];
    if (layer_path(p, l->chain_id, NULL, dir, sizeof(dir)) < 0)
        return err_set(e, -ENAMETOOLONG, "the state directory's path is too long");
    return remove_tree(dir, e);
}

/* ---- usage ------------------------------------------------------------------------------- */

/*
 * du's count: allocated blocks (st_blocks), each inode once. A file with more than one name
 * is noted (device, inode, blocks) and summed after the walk once per inode (sorted), so a
 * hardlink group counts once: O(n) lstat calls for n entries plus O(h log h) for h names of
 * multiply-linked files, memory 24 bytes per such name. nftw passes no user data, so the
 * sums live in thread-local state for the walk (the daemon's threads each have their own).
 */
struct du_link {
    dev_t dev;
    ino_t ino;
    uint64_t bytes;
};
static _Thread_local struct du_state {
    uint64_t bytes, entries;
    struct du_link *links;
    size_t n, cap;
    bool oom;
} du;

static int du_visit(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path;
    (void)flag;
    (void)ftw;
    uint64_t bytes = (uint64_t)sb->st_blocks * 512;
    if (S_ISDIR(sb->st_mode) || sb->st_nlink < 2) {
        du.bytes += bytes;
        du.entries++;
        return 0;
    }
    if (du.n == du.cap) {
        size_t cap = du.cap ? du.cap * 2 : 64;
        struct du_link *v = realloc(du.links, cap * sizeof(*v));
        if (!v) {
            du.oom = true;
            return -1;
        }
        du.links = v;
        du.cap = cap;
    }
    du.links[du.n++] = (struct du_link){sb->st_dev, sb->st_ino, bytes};
    return 0;
}

static int du_link_cmp(const void *a, const void *b)
{
    const struct du_link *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* du of the tree at path (FTW_MOUNT: a mount below is not entered). */
static int du_tree(const char *path, uint64_t *bytes, uint64_t *entries)
{
    du = (struct du_state){0};
    int r = nftw(path, du_visit, 16, FTW_PHYS | FTW_MOUNT) < 0
                ? (du.oom ? -ENOMEM : -(errno ? errno : EIO))
                : 0;
    if (du.n)
        qsort(du.links, du.n, sizeof(*du.links), du_link_cmp);
    for (size_t i = 0; i < du.n; i++)
        if (i == 0 || du_link_cmp(&du.links[i - 1], &du.links[i]) != 0) {
            du.bytes += du.links[i].bytes;
            du.entries++;
        }
    *bytes = du.bytes;
    *entries = du.entries;
    free(du.links);
    du = (struct du_state){0};
    return r;
}

/*
 * A committed layer's diff never changes (backend.h), so its du is kept for the process's
 * life, by chain hash and the diff directory's identity (a layer removed and unpacked again is
 * a new directory): a listing that shows a layer under every image using it walks it once,
 * and a daemon once at all. An upper directory changes with every write: never kept.
 */
#define OVERLAY_DU_CACHE_MAX 1024
struct du_cached {
    char hex[DIGEST_STR_LEN + 1];
    dev_t dev;
    ino_t ino;
    struct timespec ctime;
    struct backend_du u;
};
static struct du_cached du_cache[OVERLAY_DU_CACHE_MAX];
static size_t du_cache_n, du_cache_next;
static pthread_mutex_t du_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static bool du_cache_match(const struct du_cached *c, const char *hex, const struct stat *sb)
{
    return !strcmp(c->hex, hex) && c->dev == sb->st_dev && c->ino == sb->st_ino &&
           c->ctime.tv_sec == sb->st_ctim.tv_sec && c->ctime.tv_nsec == sb->st_ctim.tv_nsec;
}

static int ov_layer_usage(const char *state_dir, const struct layer_rec *l, struct backend_du *u)
{
    char dir[4096];
    const char *hex = chain_hex(l->chain_id);
    if (ov_dir(state_dir, dir, sizeof(dir), "layers", hex, "diff") < 0 ||
        strlen(hex) > DIGEST_STR_LEN)
        return -ENAMETOOLONG;
    struct stat sb;
    if (stat(dir, &sb) < 0)
        return -errno;
    bool committed = l->state && !strcmp(l->state, "ready");
    pthread_mutex_lock(&du_cache_lock);
    for (size_t i = 0; committed && i < du_cache_n; i++)
        if (du_cache_match(&du_cache[i], hex, &sb)) {
            *u = du_cache[i].u;
            pthread_mutex_unlock(&du_cache_lock);
            return 1;
        }
    pthread_mutex_unlock(&du_cache_lock);
    int r = du_tree(dir, &u->bytes, &u->entries);
    if (r < 0)
        return r;
    if (committed) {
        pthread_mutex_lock(&du_cache_lock);
        struct du_cached *c = &du_cache[du_cache_next];
        du_cache_next = (du_cache_next + 1) % OVERLAY_DU_CACHE_MAX;
        if (du_cache_n < OVERLAY_DU_CACHE_MAX)
            du_cache_n++;
        *c = (struct du_cached){.dev = sb.st_dev, .ino = sb.st_ino, .ctime = sb.st_ctim, .u = *u};
        snprintf(c->hex, sizeof(c->hex), "%s", hex);
        pthread_mutex_unlock(&du_cache_lock);
    }
    return 1;
}

static int ov_act_usage(const char *state_dir, const struct activation_rec *a, struct backend_du *u)
{
    char dir[4096];
    if (ov_dir(state_dir, dir, sizeof(dir), "act", a->name, "upper") < 0)
        return -ENAMETOOLONG;
    int r = du_tree(dir, &u->bytes, &u->entries);
    return r < 0 ? r : 1;
}

int backend_overlay_usage(const struct config *cfg, struct backend_usage **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    static const struct {
        const char *sub, *leaf, *kind;
    } kinds[] = {{"layers", "diff", "layer"}, {"act", "upper", "activation"}};
    struct backend_usage *v = NULL;
    size_t cnt = 0;
    for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/%s/%s", cfg->state_dir, OVERLAY_SUBDIR, kinds[k].sub);
        _cleanup_closedir_ DIR *d = opendir(dir);
        if (!d)
            continue; /* nothing of that kind yet */
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            struct backend_usage *nv = realloc(v, (cnt + 1) * sizeof(*v));
            if (!nv) {
                free(v);
                return -ENOMEM;
            }
            v = nv;
            struct backend_usage *u = &v[cnt++];
            *u = (struct backend_usage){.kind = kinds[k].kind};
            snprintf(u->name, sizeof(u->name), "%s", de->d_name);
            snprintf(u->path, sizeof(u->path), "%s/%s/%s", dir, de->d_name, kinds[k].leaf);
            u->missing = du_tree(u->path, &u->bytes, &u->entries) < 0;
        }
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* ---- orphans (gc) ------------------------------------------------------------------------ */

int backend_overlay_orphans(struct db *db, const struct config *cfg, backend_orphan_fn fn, void *ud)
{
    static const struct {
        const char *sub, *leaf, *why;
    } kinds[] = {{"layers", "diff", "layer directory no layer record names"},
                 {"act", "upper", "activation directory no activation record names"}};
    for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/%s/%s", cfg->state_dir, OVERLAY_SUBDIR, kinds[k].sub);
        _cleanup_closedir_ DIR *d = opendir(dir);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            int r;
            if (k == 0) {
                char chain[DIGEST_STR_LEN + 16];
                snprintf(chain, sizeof(chain), "sha256:%s", de->d_name);
                struct layer_rec l = {0};
                r = imagedb_layer_get(db, chain, &l);
                if (r == 0)
                    layer_rec_free(&l);
            } else {
                struct activation_rec a = {0};
                r = imagedb_activation_get(db, de->d_name, &a);
                if (r == 0)
                    activation_rec_free(&a);
            }
            if (r != -ENOENT)
                continue; /* recorded, or the database could not say: kept */
            char path[4096], leaf[4096];
            struct stat sb = {0};
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            snprintf(leaf, sizeof(leaf), "%s/%s", path, kinds[k].leaf);
            uint64_t bytes = 0, entries = 0;
            du_tree(leaf, &bytes, &entries);
            lstat(path, &sb);
            char merged[4096];
            snprintf(merged, sizeof(merged), "%s/merged", path);
            fn(path, kinds[k].why, bytes, (int64_t)sb.st_mtim.tv_sec * 1000,
               k == 1 && overlay_mounted(merged), ud);
        }
    }
    return 0;
}

/* Whether the mount at path is an overlay whose upper dir is upper (/proc/self/mountinfo: the
 * mount point, field 5, and the super options after " - overlay SOURCE"). Paths with
 * characters mountinfo escapes never match: not ours, as far as this check can tell. */
static bool overlay_upper_is(const char *path, const char *upper)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return false;
    char want[4096 + 16];
    snprintf(want, sizeof(want), "upperdir=%s", upper);
    size_t wl = strlen(want);
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    while (!found && getline(&line, &cap, f) > 0) {
        char point[4096];
        if (sscanf(line, "%*s %*s %*s %*s %4095s", point) != 1 || strcmp(point, path) != 0)
            continue;
        const char *sep = strstr(line, " - overlay ");
        for (const char *o = sep ? strstr(sep, want) : NULL; o && !found; o = strstr(o + 1, want))
            found = (o[-1] == ',' || o[-1] == ' ') && (o[wl] == ',' || o[wl] == '\n');
    }
    free(line);
    return found;
}

struct stale_ctx {
    const struct config *cfg;
    backend_mount_fn fn;
    void *ud;
};

static int stale_one(const struct activation_rec *a, void *ud)
{
    struct stale_ctx *c = ud;
    if (!strcmp(a->state, "active") || !ov_act_recorded(a) || !overlay_mounted(a->device_path))
        return 0;
    char upper[4096];
    if (ov_dir(c->cfg->state_dir, upper, sizeof(upper), "act", a->name, "upper") == 0 &&
        overlay_upper_is(a->device_path, upper))
        c->fn(a->device_path, a->name, a->state, c->ud);
    return 0;
}

int backend_overlay_stale_mounts(struct db *db, const struct config *cfg, backend_mount_fn fn,
                                 void *ud)
{
    struct stale_ctx c = {cfg, fn, ud};
    return imagedb_activation_list(db, 0, false, NULL, stale_one, &c);
}

int backend_overlay_remove_dir(const char *path, struct err *e)
{
    char merged[4096];
    snprintf(merged, sizeof(merged), "%s/merged", path);
    if (overlay_mounted(merged) && umount2(merged, UMOUNT_NOFOLLOW) < 0)
        return err_set(e, -errno, "cannot unmount %s: %s", merged, strerror(errno));
    return remove_tree(path, e);
}

const struct backend_ops backend_overlay = {
    .name = "overlay",
    .layer_recorded = ov_layer_recorded,
    .layer_check = ov_layer_check,
    .layer_prepare = ov_layer_prepare,
    .layer_device = ov_layer_device,
    .layer_apply = ov_layer_apply,
    .layer_verify = ov_layer_verify,
    .layer_commit = ov_layer_commit,
    .layer_failed = ov_layer_failed,
    .act_recorded = ov_act_recorded,
    .act_up = ov_act_up,
    .act_check = ov_act_check,
    .act_create = ov_act_create,
    .act_device = ov_act_device,
    .act_failed = ov_act_failed,
    .act_down = ov_act_down,
    .layer_remove = ov_layer_remove,
    .layer_usage = ov_layer_usage,
    .act_usage = ov_act_usage,
};
