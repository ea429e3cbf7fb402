/*
 * walk.c: the layer walker: one libarchive read loop that checks every entry against the
 * policy and hands validated entries to a callback. archive_scan() is the walk without a
 * callback; archive_apply() is the walk with the writer in apply.c. Keeping one loop means
 * the validate step of the fetch machine and the unpack machine can never disagree about
 * what a layer is.
 *
 * What is checked here (everything that does not need the target tree):
 *   - the blob: regular file, size limit, a layer format by content (tar, gzip, zstd);
 *   - the stream: libarchive errors (bad checksums, truncation, overflowing fields), the
 *     end (at an entry boundary, see walk_stream), metadata bytes per entry, compression
 *     ratio, wall time;
 *   - each entry: name and link-target rules (path.c), type, whiteout form, owner range,
 *     hardlinks with data, device policy, file and total size, entry count.
 *
 * Names are bytes: whatever the archive holds (UTF-8 or not, NFC or NFD) is what is checked
 * and created (archive_next_header_bytes, read in the C locale: internal.h).
 *
 * libarchive reads with a 1 MiB block so that large files come out in large pieces and an
 * uncompressed tar is read with few syscalls; data a callback does not consume is skipped
 * (by seeking, for uncompressed blobs).
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive/gunzip.h"
#include "archive/internal.h"
#include "util/forklock.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/hash.h"
#include "util/timeutil.h"

#define READ_BLOCK_BYTES    (1 << 20)    /* libarchive read size: few syscalls, big pieces */
#define PROGRESS_STEP_BYTES (4ULL << 20) /* report progress every 4 MiB of blob */

static __thread archive_progress_fn tl_progress;
static __thread void *tl_progress_ud;

void archive_set_progress(archive_progress_fn fn, void *ud)
{
    tl_progress = fn;
    tl_progress_ud = ud;
}

/* The C locale object, created once and never changed or freed: the only process-wide state
 * of the module. Creating it takes glibc's locale lock, so it is created when the program
 * starts (a constructor runs before any thread exists), never in the forked child the unpack
 * machine applies layers in. */
static pthread_once_t c_once = PTHREAD_ONCE_INIT;
static locale_t c_locale;

static void c_locale_create(void)
{
    c_locale = newlocale(LC_CTYPE_MASK, "C", (locale_t)0);
}

__attribute__((constructor)) static void c_locale_init(void)
{
    pthread_once(&c_once, c_locale_create);
}

struct names_scope names_scope_begin(void)
{
    pthread_once(&c_once, c_locale_create);
    struct names_scope u = {.c = c_locale};
    if (u.c)
        u.old = uselocale(u.c);
    return u;
}

void names_scope_end(struct names_scope *u)
{
    if (u->c) {
        uselocale(u->old);
        u->c = (locale_t)0;
    }
}

int archive_read_header_shared(struct archive *a, struct archive_entry **ae)
{
    forklock_shared_enter();
    int r = archive_read_next_header(a, ae);
    forklock_shared_leave();
    return r;
}

int archive_policy_require(const struct archive_policy *p, struct err *e)
{
    char why[256];
    int r = archive_policy_check(p, why, sizeof(why));
    if (r < 0)
        return err_set(e, r, "invalid archive policy: %s", why);
    return 0;
}

int archive_next_header_bytes(struct archive *a, struct archive_entry **ae)
{
    int r = archive_read_header_shared(a, ae);
    if (r != ARCHIVE_WARN)
        return r;
    /* The tar reader's charset warnings: "Pathname can't be converted from UTF-8 to current
     * locale." (also Linkname, Uname, Gname). It then stores the original bytes. */
    const char *m = archive_error_string(a);
    if (m && strstr(m, " can't be converted from ") && archive_entry_pathname(*ae))
        return ARCHIVE_OK;
    return r;
}

struct layer_walk {
    struct archive *a;
    struct archive_policy pol;
    struct archive_stats *st;
    struct err *e;
    int64_t deadline_ms; /* 0 = none */
    uint64_t blob_size;
    bool compressed;
    const char *raw_name; /* current entry as named in the archive, for messages (points
                             to name_copy, which outlives libarchive's entry) */
    char *name_copy;
    char *path; /* normalised name of the current entry */
    char *link; /* normalised hardlink target of the current entry */
    size_t path_cap;
    bool data_done;
    uint64_t last_end; /* decompressed offset after the previous entry's data */
    uint64_t progress_at;
    uint64_t total_bytes;
    struct tar_kind *kind; /* scan_detect: names noted for format detection */
    struct layer_entry ent;
    /* archive_scan_follow: the blob is read from follow_fd as it is written */
    const struct archive_follow *follow;
    int follow_fd;
    uint64_t follow_pos; /* bytes read (and hashed) so far */
    char *follow_buf;
    enum blob_format follow_fmt; /* the layer format the first block says */
    /* A gzip blob: gz inflates it (gunzip.c, ISA-L) and feeds a (the tar reader, no
     * filter). A followed zstd blob: raw decompresses it (libarchive's "raw" format over its
     * zstd filter, the whole stream) and feeds a. Followed, every byte either gives goes into
     * diff. */
    struct gunzip *gz;
    struct archive *raw;
    struct sha256 diff;
    int source_failed; /* the error the decompressing source set (a limit, corrupt data) */
};

DEFINE_POINTER_CLEANUP(struct archive, archive_read_free)

struct archive_stats *layer_walk_stats(struct layer_walk *w)
{
    return w->st;
}

int layer_walk_fail(struct layer_walk *w, int code, const char *rule, const char *fmt, ...)
{
    char name[256], msg[ERR_MSG_MAX / 2];
    archive_name_escape(w->raw_name ? w->raw_name : "?", name, sizeof(name));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(w->e, code, "entry '%s': %s (rule: %s)", name, msg, rule);
}

/* An error about the stream rather than one entry. */
static int stream_fail(struct layer_walk *w, int code, const char *rule, const char *msg)
{
    char prev[256];
    archive_name_escape(w->raw_name ? w->raw_name : "", prev, sizeof(prev));
    if (w->raw_name)
        return err_set(w->e, code, "layer: %s, after entry #%" PRIu64 " '%s' (rule: %s)", msg,
                       w->st->entries, prev, rule);
    return err_set(w->e, code, "layer: %s (rule: %s)", msg, rule);
}

static int libarchive_fail(struct layer_walk *w, const char *what)
{
    /* The decompressing source under the tar reader stopped it: its error stands. */
    if (w->source_failed)
        return w->source_failed;
    const char *m = archive_error_string(w->a);
    char msg[512];
    /* The tar reader fails without a message only when it cannot read ahead the bytes an
     * entry's headers announce (a PAX or GNU long-name body cut short). */
    snprintf(msg, sizeof(msg), "%s: %s", what,
             m ? m : "the archive ends inside an entry's headers");
    bool trunc =
        !m || strstr(m, "runcated") || strstr(m, "nexpected EOF") || strstr(m, "Premature end");
    return stream_fail(w, -EBADMSG, trunc ? "truncated" : "malformed", msg);
}

/* Bytes of the blob read, and of the uncompressed stream decompressed, so far (with w->raw the
 * decompression is raw's, a tar reader over it only sees uncompressed bytes). */
static uint64_t stream_in(struct layer_walk *w)
{
    if (w->gz)
        return gunzip_bytes_in(w->gz);
    return (uint64_t)archive_filter_bytes(w->raw ? w->raw : w->a, -1);
}

static uint64_t stream_out(struct layer_walk *w)
{
    if (w->gz)
        return gunzip_bytes_out(w->gz);
    return (uint64_t)archive_filter_bytes(w->raw ? w->raw : w->a, 0);
}

/* Limits that depend on how much was read: time and compression ratio. */
static int check_stream_limits(struct layer_walk *w)
{
    if (w->deadline_ms && mono_ms() > w->deadline_ms) {
        char msg[128];
        snprintf(msg, sizeof(msg), "took longer than the time limit of %" PRIu64 " ms",
                 w->pol.max_time_ms);
        return stream_fail(w, -EFBIG, "time", msg);
    }
    uint64_t out = stream_out(w);
    if (w->compressed && w->pol.max_ratio && out > ARCHIVE_RATIO_FLOOR_BYTES) {
        uint64_t in = stream_in(w);
        if (in == 0 || out / in >= w->pol.max_ratio) {
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "decompressed %" PRIu64 " bytes from %" PRIu64
                     ", over the compression ratio limit of %" PRIu32,
                     out, in, w->pol.max_ratio);
            return stream_fail(w, -EFBIG, "ratio", msg);
        }
    }
    if (tl_progress) {
        uint64_t in = stream_in(w);
        if (in >= w->progress_at) {
            tl_progress(in, w->blob_size, tl_progress_ud);
            w->progress_at = in + PROGRESS_STEP_BYTES;
        }
    }
    return 0;
}

int layer_walk_data(struct layer_walk *w, layer_data_fn sink, void *ud)
{
    const void *buf;
    size_t n;
    la_int64_t off;
    w->data_done = true;
    for (;;) {
        int r = archive_read_data_block(w->a, &buf, &n, &off);
        if (r == ARCHIVE_EOF)
            return 0;
        if (r != ARCHIVE_OK)
            return libarchive_fail(w, "cannot read file data");
        if (off < 0 || (uint64_t)off + n > (uint64_t)w->ent.size)
            return layer_walk_fail(w, -EBADMSG, "malformed", "data beyond the declared size");
        r = check_stream_limits(w);
        if (r < 0)
            return r;
        if (n > 0) {
            r = sink(buf, n, off, ud);
            if (r < 0)
                return r;
        }
    }
}

/* The xattr limits and the allowlist count, checked for every entry (scan and apply alike). */
static int check_xattrs(struct layer_walk *w, struct archive_entry *ae)
{
    const char *name;
    const void *value;
    size_t size;
    unsigned count = 0;
    archive_entry_xattr_reset(ae);
    while (archive_entry_xattr_next(ae, &name, &value, &size) == ARCHIVE_OK) {
        if (!name)
            continue;
        if (!archive_policy_xattr_allowed(&w->pol, name)) {
            w->st->xattrs_dropped++;
            continue;
        }
        if (++count > ARCHIVE_MAX_XATTRS_PER_ENTRY)
            return layer_walk_fail(w, -EFBIG, "xattr", "more than %u extended attributes",
                                   ARCHIVE_MAX_XATTRS_PER_ENTRY);
        if (size > ARCHIVE_MAX_XATTR_VALUE_BYTES)
            return layer_walk_fail(w, -EFBIG, "xattr",
                                   "extended attribute %s is %zu bytes, over %u", name, size,
                                   ARCHIVE_MAX_XATTR_VALUE_BYTES);
    }
    return 0;
}

int layer_entry_xattrs(struct layer_walk *w, const struct layer_entry *ent, layer_xattr_fn fn,
                       void *ud)
{
    const char *name;
    const void *value;
    size_t size;
    archive_entry_xattr_reset(ent->ae);
    while (archive_entry_xattr_next(ent->ae, &name, &value, &size) == ARCHIVE_OK) {
        if (!name || !archive_policy_xattr_allowed(&w->pol, name))
            continue;
        int r = fn(name, value, size, ud);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Check the name rules on `in` into out; on failure set the entry error. */
static int normalize(struct layer_walk *w, const char *in, char *out, bool *slash, uint32_t *depth,
                     const char *what)
{
    const char *rule = NULL, *why = NULL;
    int r = archive_path_normalize(in, &w->pol, out, w->path_cap, slash, depth, &rule, &why);
    if (r < 0) {
        if (!what)
            return layer_walk_fail(w, r, rule, "%s", why);
        char t[256];
        archive_name_escape(in, t, sizeof(t));
        bool escape = !strcmp(rule, "traversal") || !strcmp(rule, "absolute");
        return layer_walk_fail(w, r, escape ? "hardlink-escape" : rule, "%s '%s': %s", what, t,
                               why);
    }
    return 0;
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* Validate the current header into w->ent. Returns 1 for an entry to hand on, 0 to skip
 * (sockets), negative on rejection. */
static int validate_entry(struct layer_walk *w, struct archive_entry *ae)
{
    struct layer_entry *ent = &w->ent;
    memset(ent, 0, sizeof(*ent));
    ent->ae = ae;
    const char *name = archive_entry_pathname(ae);
    if (!name) { /* a conversion, possibly through iconv: under the fork lock */
        forklock_shared_enter();
        name = archive_entry_pathname_utf8(ae);
        forklock_shared_leave();
    }
    if (!name)
        return stream_fail(w, -EBADMSG, "malformed", "entry without a usable name");
    snprintf(w->name_copy, w->path_cap, "%s", name);
    w->raw_name = w->name_copy;

    bool slash;
    int r = normalize(w, name, w->path, &slash, &ent->depth, NULL);
    if (r < 0)
        return r;
    ent->path = w->path;
    const char *base = strrchr(w->path, '/');
    ent->base_off = base ? (size_t)(base - w->path) + 1 : 0;
    base = w->path + ent->base_off;

    const char *hardlink = archive_entry_hardlink(ae);
    mode_t type = archive_entry_filetype(ae);
    if (hardlink)
        ent->kind = EK_HARDLINK;
    else if (type == AE_IFREG)
        ent->kind = EK_FILE;
    else if (type == AE_IFDIR)
        ent->kind = EK_DIR;
    else if (type == AE_IFLNK)
        ent->kind = EK_SYMLINK;
    else if (type == AE_IFCHR)
        ent->kind = EK_CHR;
    else if (type == AE_IFBLK)
        ent->kind = EK_BLK;
    else if (type == AE_IFIFO)
        ent->kind = EK_FIFO;
    else if (type == AE_IFSOCK) {
        w->st->skipped++;
        return 0; /* sockets are created by the programs that listen on them */
    } else
        return layer_walk_fail(w, -EPERM, "type", "unsupported entry type 0%o", (unsigned)type);

    if (w->path[0] == '\0' && ent->kind != EK_DIR)
        return layer_walk_fail(w, -EPERM, "root", "a non-directory entry names the root itself");
    if (slash && ent->kind != EK_DIR)
        return layer_walk_fail(w, -EPERM, "name",
                               "name ends in '/' but the entry is not a "
                               "directory");

    /* OCI whiteouts. */
    if (strncmp(base, ".wh.", 4) == 0) {
        const char *victim = base + 4;
        bool opaque = !strcmp(base, ".wh..wh..opq");
        if (!opaque && (victim[0] == '\0' || !strcmp(victim, ".") || !strcmp(victim, "..") ||
                        !strncmp(victim, ".wh.", 4)))
            return layer_walk_fail(w, -EPERM, "whiteout-name",
                                   "malformed whiteout (no valid name after '.wh.')");
        if (ent->kind != EK_FILE)
            return layer_walk_fail(w, -EPERM, "whiteout-type", "whiteout is not a regular file");
        ent->kind = opaque ? EK_OPAQUE : EK_WHITEOUT;
        ent->whiteout_name = opaque ? NULL : victim;
    }

    int64_t uid = archive_entry_uid(ae), gid = archive_entry_gid(ae);
    if (uid < 0 || uid > 0xfffffffeLL || gid < 0 || gid > 0xfffffffeLL)
        return layer_walk_fail(w, -EPERM, "owner", "owner %" PRId64 ":%" PRId64 " out of range",
                               uid, gid);
    ent->uid = (uint32_t)uid;
    ent->gid = (uint32_t)gid;
    ent->mode = archive_entry_perm(ae) & 07777;
    ent->mtime.tv_sec = archive_entry_mtime(ae);
    ent->mtime.tv_nsec = archive_entry_mtime_nsec(ae);
    if (archive_entry_atime_is_set(ae)) {
        ent->atime.tv_sec = archive_entry_atime(ae);
        ent->atime.tv_nsec = archive_entry_atime_nsec(ae);
    } else {
        ent->atime = ent->mtime;
    }
    if (ent->mtime.tv_nsec < 0 || ent->mtime.tv_nsec > 999999999 || ent->atime.tv_nsec < 0 ||
        ent->atime.tv_nsec > 999999999)
        return layer_walk_fail(w, -EBADMSG, "malformed", "invalid time stamp");

    int64_t size = archive_entry_size_is_set(ae) ? archive_entry_size(ae) : 0;
    if (size < 0)
        return layer_walk_fail(w, -EBADMSG, "malformed", "negative size");
    ent->size = size;

    r = check_xattrs(w, ae);
    if (r < 0)
        return r;

    struct archive_stats *st = w->st;
    switch (ent->kind) {
    case EK_FILE:
        if (w->pol.max_file_bytes && (uint64_t)size > w->pol.max_file_bytes)
            return layer_walk_fail(w, -EFBIG, "file-size",
                                   "file size %" PRId64 " over the limit of %" PRIu64, size,
                                   w->pol.max_file_bytes);
        /* size <= INT64_MAX; saturate so that a layer without a total limit cannot wrap. */
        if (__builtin_add_overflow(w->total_bytes, (uint64_t)size, &w->total_bytes))
            w->total_bytes = UINT64_MAX;
        if (w->pol.max_total_bytes && w->total_bytes > w->pol.max_total_bytes)
            return layer_walk_fail(w, -EFBIG, "total-size",
                                   "layer content exceeds the total size limit of %" PRIu64
                                   " bytes",
                                   w->pol.max_total_bytes);
        st->files++;
        st->bytes = w->total_bytes;
        break;
    case EK_DIR:
        st->dirs++;
        break;
    case EK_SYMLINK: {
        const char *t = archive_entry_symlink(ae);
        if (!t) {
            forklock_shared_enter();
            t = archive_entry_symlink_utf8(ae);
            forklock_shared_leave();
        }
        if (!t || !*t)
            return layer_walk_fail(w, -EPERM, "symlink-target", "empty symlink target");
        if (strlen(t) > ARCHIVE_MAX_SYMLINK_TARGET_BYTES)
            return layer_walk_fail(w, -ENAMETOOLONG, "symlink-target",
                                   "symlink target longer than %u bytes",
                                   ARCHIVE_MAX_SYMLINK_TARGET_BYTES);
        if (!w->pol.allow_control_chars && has_control(t))
            return layer_walk_fail(w, -EPERM, "control-char",
                                   "symlink target contains a control character");
        ent->link = t;
        st->symlinks++;
        break;
    }
    case EK_HARDLINK: {
        if (size > 0)
            return layer_walk_fail(w, -EPERM, "hardlink-data",
                                   "hardlink entry carries %" PRId64 " bytes of data", size);
        bool tslash;
        uint32_t tdepth;
        r = normalize(w, hardlink, w->link, &tslash, &tdepth, "hardlink target");
        if (r < 0)
            return r;
        if (w->link[0] == '\0')
            return layer_walk_fail(w, -EPERM, "hardlink-escape", "hardlink target is the root");
        if (!strcmp(w->link, w->path))
            return layer_walk_fail(w, -EPERM, "hardlink-self", "hardlink to itself");
        ent->link = w->link;
        st->hardlinks++;
        break;
    }
    case EK_CHR:
    case EK_BLK:
        if (!w->pol.allow_devices)
            return layer_walk_fail(w, -EPERM, "device",
                                   "device nodes are not allowed by the policy");
        ent->rdev = archive_entry_rdev(ae);
        st->devices++;
        break;
    case EK_FIFO:
        st->devices++;
        break;
    case EK_WHITEOUT:
    case EK_OPAQUE:
        st->whiteouts++;
        break;
    }
    return 1;
}

/* The libarchive reader for a layer the first block says is k: tar, or zstd (libarchive's
 * filter); a gzip layer's tar reader reads from gunzip (open_inflated). */
static int reader_new(struct layer_walk *w, enum sniff_kind k)
{
    w->a = archive_read_new();
    if (!w->a)
        return err_set(w->e, -ENOMEM, "out of memory");
    archive_read_support_format_tar(w->a);
    if (k == SNIFF_ZSTD)
        archive_read_support_filter_zstd(w->a);
    w->compressed = k != SNIFF_TAR;
    return 0;
}

static int open_inflated(struct layer_walk *w);

static int open_layer(struct layer_walk *w, const char *path, int *fd_out)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it). */
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return err_set(w->e, neg_errno(), "cannot open layer %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return err_set(w->e, neg_errno(), "cannot stat layer %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return err_set(w->e, -ENOTSUP, "layer %s is not a regular file", path);
    w->blob_size = (uint64_t)sb.st_size;
    if (w->pol.max_blob_bytes && w->blob_size > w->pol.max_blob_bytes)
        return err_set(w->e, -EFBIG,
                       "layer: blob is %" PRIu64 " bytes, over the blob size limit of %" PRIu64
                       " (rule: blob-size)",
                       w->blob_size, w->pol.max_blob_bytes);
    unsigned char head[TAR_BLOCK];
    ssize_t n = read_full(fd, head, sizeof(head));
    if (n < 0)
        return err_set(w->e, (int)n, "cannot read layer %s", path);
    char why[160];
    enum sniff_kind k = archive_sniff(head, (size_t)n, w->blob_size, why, sizeof(why));
    if (k == SNIFF_UNKNOWN)
        return err_set(w->e, -ENOTSUP, "layer: not an image layer: %s (rule: format)", why);
    if (lseek(fd, 0, SEEK_SET) < 0)
        return err_set(w->e, neg_errno(), "cannot seek layer %s", path);

    if (k == SNIFF_GZIP) {
        if (gunzip_new_fd(&w->gz, fd, READ_BLOCK_BYTES) < 0)
            return err_set(w->e, -ENOMEM, "out of memory");
        *fd_out = TAKE_FD(fd);
        return open_inflated(w);
    }
    int r = reader_new(w, k);
    if (r < 0)
        return r;
    if (archive_read_open_fd(w->a, fd, READ_BLOCK_BYTES) != ARCHIVE_OK)
        return libarchive_fail(w, "cannot read layer");
    *fd_out = TAKE_FD(fd);
    return 0;
}

/* ---- following a blob as it is written (archive_scan_follow) ---------------------------- */

/* pread at pos, waiting in the follow's `more` while the file holds nothing there yet: > 0
 * bytes read, 0 at the blob's end, negative errno (-ECANCELED: no more will come). */
static ssize_t follow_pread(struct layer_walk *w, void *buf, size_t n, uint64_t pos)
{
    const struct archive_follow *f = w->follow;
    if (pos >= f->size)
        return 0;
    if (n > f->size - pos)
        n = (size_t)(f->size - pos);
    for (;;) {
        ssize_t k = pread(w->follow_fd, buf, n, (off_t)pos);
        if (k < 0 && errno == EINTR)
            continue;
        if (k != 0)
            return k < 0 ? neg_errno() : k;
        if (!f->more(f->ud))
            return -ECANCELED;
    }
}

/* The next block of the blob, in order, into the follow's hash: bytes, 0 at the end, a
 * negative errno. */
static ssize_t follow_next(void *ud, const void **buf)
{
    struct layer_walk *w = ud;
    ssize_t k = follow_pread(w, w->follow_buf, READ_BLOCK_BYTES, w->follow_pos);
    if (k < 0)
        return k;
    if (k > 0 && sha256_update(w->follow->hash, w->follow_buf, (size_t)k) < 0)
        return -EIO;
    w->follow_pos += (uint64_t)k;
    *buf = w->follow_buf;
    return k;
}

/* libarchive's read callback over follow_next. */
static la_ssize_t follow_read(struct archive *a, void *ud, const void **buf)
{
    ssize_t k = follow_next(ud, buf);
    if (k < 0) {
        archive_set_error(a, (int)-k, "cannot read the blob as it is written: %s",
                          strerror((int)-k));
        return -1;
    }
    return k;
}

/*
 * A gzip blob, and a followed zstd blob, are decompressed by a source under the tar reader
 * (w->a, no filter): gunzip (ISA-L) for gzip, w->raw (libarchive's "raw" format over its
 * zstd filter) for a followed zstd blob. Followed, the one decompression serves the scan and
 * the diff id both: inflated_read hashes what it hands the tar reader. The tar reader stops at
 * the end-of-archive blocks; drain_inflated reads (and hashes) the rest, the padding after
 * them, so the hash is of exactly what archive_diff_id reads, and a gzip member's trailer
 * (CRC-32, length) is checked also when the tar ends before it.
 *
 * The compression ratio and time limits are checked on every block the source gives, so a
 * bomb stops after at most a block past the limit also where the tar reader skips an entry's
 * data (it reads through a compressed stream), not only between entries.
 */
static ssize_t inflated_next(struct layer_walk *w, const void **buf, const char **why)
{
    if (w->gz) {
        ssize_t n = gunzip_read(w->gz, buf);
        *why = n < 0 ? gunzip_error(w->gz) : NULL;
        return n;
    }
    size_t n = 0;
    la_int64_t off;
    int r;
    do
        r = archive_read_data_block(w->raw, buf, &n, &off);
    while (r == ARCHIVE_OK && n == 0);
    if (r == ARCHIVE_EOF)
        return 0;
    if (r != ARCHIVE_OK) {
        *why = archive_error_string(w->raw);
        return -EBADMSG;
    }
    return (ssize_t)n;
}

/* The next uncompressed block, checked against the stream limits and hashed when followed:
 * bytes, 0 at the end, or a negative errno with the walk's error set (w->source_failed). */
static ssize_t inflated_block(struct layer_walk *w, const void **buf)
{
    const char *why = NULL;
    ssize_t n = inflated_next(w, buf, &why);
    int r;
    if (n < 0) {
        bool trunc = why && strstr(why, "runcated");
        const char *rule = n != -EBADMSG ? "io" : trunc ? "truncated" : "malformed";
        r = stream_fail(w, (int)n, rule, why && *why ? why : "cannot decompress");
    } else if ((r = check_stream_limits(w)) >= 0) {
        if (n > 0 && w->diff.ctx && sha256_update(&w->diff, *buf, (size_t)n) < 0)
            r = err_set(w->e, -EIO, "cannot hash the uncompressed stream");
    }
    if (r < 0) {
        w->source_failed = r;
        return r;
    }
    return n;
}

static la_ssize_t inflated_read(struct archive *a, void *ud, const void **buf)
{
    struct layer_walk *w = ud;
    ssize_t n = inflated_block(w, buf);
    if (n < 0) {
        archive_set_error(a, (int)-n, "%s", w->e ? w->e->msg : "cannot decompress");
        return -1;
    }
    return (la_ssize_t)n;
}

/* The uncompressed stream after the tar reader's end, under the same limits. */
static int drain_inflated(struct layer_walk *w)
{
    const void *buf;
    ssize_t n;
    while ((n = inflated_block(w, &buf)) > 0)
        ;
    return n < 0 ? (int)n : 0;
}

/* The tar reader over the source (w->gz or w->raw). */
static int open_inflated(struct layer_walk *w)
{
    int r = reader_new(w, SNIFF_TAR);
    if (r < 0)
        return r;
    w->compressed = true;
    if (archive_read_open(w->a, w, NULL, inflated_read, NULL) != ARCHIVE_OK)
        return libarchive_fail(w, "cannot read layer");
    return 0;
}

/* The readers of a followed gzip/zstd blob (k): the source over the blob, the tar reader
 * over the source. */
static int open_decompressing(struct layer_walk *w, enum sniff_kind k)
{
    if (sha256_init(&w->diff) < 0)
        return err_set(w->e, -ENOMEM, "out of memory");
    if (k == SNIFF_GZIP) {
        if (gunzip_new(&w->gz, follow_next, w) < 0)
            return err_set(w->e, -ENOMEM, "out of memory");
        return open_inflated(w);
    }
    w->raw = archive_read_new();
    if (!w->raw)
        return err_set(w->e, -ENOMEM, "out of memory");
    archive_read_support_format_raw(w->raw);
    archive_read_support_filter_zstd(w->raw);
    struct archive_entry *ae;
    if (archive_read_open(w->raw, w, NULL, follow_read, NULL) != ARCHIVE_OK ||
        archive_read_next_header(w->raw, &ae) != ARCHIVE_OK) {
        const char *m = archive_error_string(w->raw);
        return stream_fail(w, -EBADMSG, "malformed", m ? m : "cannot decompress");
    }
    return open_inflated(w);
}

/* open_layer for a blob being written: the first block (waited for) says the format. */
static int open_follow(struct layer_walk *w)
{
    w->blob_size = w->follow->size;
    if (w->pol.max_blob_bytes && w->blob_size > w->pol.max_blob_bytes)
        return err_set(w->e, -EFBIG, "layer: blob is over the blob size limit (rule: blob-size)");
    unsigned char head[TAR_BLOCK];
    size_t n = 0;
    while (n < sizeof(head)) {
        ssize_t k = follow_pread(w, head + n, sizeof(head) - n, n);
        if (k < 0)
            return err_set(w->e, (int)k, "cannot read the blob as it is written");
        if (k == 0)
            break;
        n += (size_t)k;
    }
    enum sniff_kind k = archive_sniff(head, n, w->blob_size, NULL, 0);
    if (k == SNIFF_UNKNOWN)
        return err_set(w->e, -ENOTSUP, "layer: not an image layer (rule: format)");
    w->follow_fmt = k == SNIFF_GZIP ? BLOB_TAR_GZIP : k == SNIFF_ZSTD ? BLOB_TAR_ZSTD : BLOB_TAR;
    if (k == SNIFF_TAR && w->follow->compressed_only)
        return -EAGAIN;
    w->follow_buf = malloc(READ_BLOCK_BYTES);
    if (!w->follow_buf)
        return err_set(w->e, -ENOMEM, "out of memory");
    if (k != SNIFF_TAR)
        return open_decompressing(w, k);
    int r = reader_new(w, k);
    if (r < 0)
        return r;
    if (archive_read_open(w->a, w, NULL, follow_read, NULL) != ARCHIVE_OK)
        return libarchive_fail(w, "cannot read layer");
    return 0;
}

/* The read loop (layer_walk_run sets up the walk and the thread's locale). */
static int walk_stream(struct layer_walk *w, const char *path, layer_entry_fn fn, void *ud)
{
    struct archive_stats *st = w->st;
    _cleanup_close_ int fd = -1;
    int r = w->follow ? open_follow(w) : open_layer(w, path, &fd);
    /* a reads from gz or raw: a is freed first */
    _cleanup_(gunzip_freep) struct gunzip *gz = w->gz;
    _cleanup_(archive_read_freep) struct archive *raw = w->raw;
    _cleanup_(archive_read_freep) struct archive *a = w->a;
    if (r < 0)
        return r;

    struct archive_entry *ae;
    for (;;) {
        r = check_stream_limits(w);
        if (r < 0)
            return r;
        r = archive_next_header_bytes(a, &ae);
        if (r == ARCHIVE_EOF)
            break;
        /* An extended header (PAX, GNU long name) followed by the end of the stream: the
         * tar reader says "Damaged tar archive" with ARCHIVE_FATAL (a bad checksum, the
         * other "Damaged", is ARCHIVE_RETRY). */
        const char *m = archive_error_string(a);
        if (r == ARCHIVE_FATAL && !w->source_failed && m && !strcmp(m, "Damaged tar archive"))
            return stream_fail(w, -EBADMSG, "truncated",
                               "the archive ends after an extended header (PAX or GNU long "
                               "name), before the entry it belongs to");
        if (r != ARCHIVE_OK)
            return libarchive_fail(w, "cannot read the next entry header");
        uint64_t pos = (uint64_t)archive_filter_bytes(a, 0);
        const char *hname = archive_entry_pathname(ae);
        if (hname) { /* for messages about this entry before it is validated */
            snprintf(w->name_copy, w->path_cap, "%s", hname);
            w->raw_name = w->name_copy;
        }
        if (w->pol.max_entries && st->entries + 1 > w->pol.max_entries) {
            return layer_walk_fail(w, -EFBIG, "entries",
                                   "layer has more entries than the limit of %" PRIu64,
                                   w->pol.max_entries);
        }
        st->entries++;
        if (w->pol.max_header_bytes && pos - w->last_end > w->pol.max_header_bytes) {
            return layer_walk_fail(w, -EFBIG, "header-size",
                                   "%" PRIu64 " bytes of header metadata, over the limit of "
                                   "%" PRIu64,
                                   pos - w->last_end, w->pol.max_header_bytes);
        }
        w->data_done = false;
        if (w->kind)
            tar_kind_note(w->kind, a, ae, &w->data_done);
        r = validate_entry(w, ae);
        if (r < 0)
            return r;
        if (r > 0 && fn) {
            r = fn(w, &w->ent, ud);
            if (r < 0)
                return r;
        }
        if (!w->data_done && archive_read_data_skip(a) != ARCHIVE_OK)
            return libarchive_fail(w, "cannot read file data");
        w->last_end = (uint64_t)archive_filter_bytes(a, 0);
        if (!w->compressed && w->last_end > w->blob_size)
            return stream_fail(w, -EBADMSG, "truncated",
                               "archive is truncated (an entry's data runs past the end)");
    }
    /* The end. libarchive reports EOF at the end-of-archive marker (two zero blocks, or one:
     * a second is consumed when present, whatever follows is ignored) and when the stream
     * ends exactly at an entry boundary without a marker, as GNU tar and Go's archive/tar
     * (Docker, containerd) accept it. Whether the blob is complete is for the fetch machine
     * to check (the downloaded size against the object's, a member's declared digest); a
     * stream that ends inside a header or inside an entry's data fails above (rule:
     * truncated). */
    if ((gz || raw) && (r = drain_inflated(w)) < 0)
        return r;
    st->compressed_bytes = stream_in(w);
    if (tl_progress)
        tl_progress(w->blob_size, w->blob_size, tl_progress_ud);
    return 0;
}

/* layer_walk_run with w's source set (a path, or w->follow). */
static int walk_run(struct layer_walk *w, const char *path, layer_entry_fn fn, void *ud);

int layer_walk_run(const char *path, const struct archive_policy *p, struct archive_stats *st,
                   struct err *e, layer_entry_fn fn, void *ud, struct tar_kind *kind)
{
    struct archive_stats dummy;
    if (!st)
        st = &dummy;
    memset(st, 0, sizeof(*st));
    struct layer_walk w = {
        .pol = p ? *p : archive_policy_default(),
        .st = st,
        .e = e,
        /* A scan reads the data of the members it notes; an apply notes names only. */
        .kind = fn && kind && !kind->names_only ? NULL : kind,
    };
    return walk_run(&w, path, fn, ud);
}

int archive_scan_follow(int fd, const struct archive_follow *f, const struct archive_policy *p,
                        enum blob_format *out, char diff_id[DIGEST_STR_LEN + 1],
                        struct archive_stats *st, struct err *e)
{
    *out = BLOB_UNKNOWN;
    diff_id[0] = '\0';
    struct archive_stats dummy;
    if (!st)
        st = &dummy;
    memset(st, 0, sizeof(*st));
    struct tar_kind kind = {0};
    struct layer_walk w = {
        .pol = p ? *p : archive_policy_default(),
        .st = st,
        .e = e,
        .kind = &kind,
        .follow = f,
        .follow_fd = fd,
    };
    int r = walk_run(&w, NULL, NULL, NULL);
    /* The rest of the blob after the end of the archive: hashed too, so that the caller's
     * digest covers every byte the walk could have seen. */
    while (r == 0 && w.follow_pos < f->size) {
        ssize_t k = follow_pread(&w, w.follow_buf, READ_BLOCK_BYTES, w.follow_pos);
        if (k <= 0)
            r = err_set(e, k < 0 ? (int)k : -EIO, "cannot read the end of the blob");
        else if (sha256_update(f->hash, w.follow_buf, (size_t)k) < 0)
            r = err_set(e, -EIO, "cannot hash the blob");
        else
            w.follow_pos += (uint64_t)k;
    }
    free(w.follow_buf);
    uint8_t d[SHA256_LEN];
    if (r == 0 && w.diff.ctx) {
        if (sha256_final(&w.diff, d) < 0)
            r = err_set(e, -EIO, "cannot hash the uncompressed stream");
        else
            digest_format(d, diff_id);
    }
    sha256_free(&w.diff);
    if (r == 0)
        *out = tar_kind_format(&kind, w.follow_fmt);
    return r;
}

static int walk_run(struct layer_walk *w, const char *path, layer_entry_fn fn, void *ud)
{
    struct err *e = w->e;
    int r = archive_policy_require(&w->pol, e);
    if (r < 0)
        return r;
    /* max_time_ms <= ARCHIVE_MAX_TIME_MS_LIMIT: no overflow. */
    if (w->pol.max_time_ms)
        w->deadline_ms = mono_ms() + (int64_t)w->pol.max_time_ms;
    /* Buffers for a name (and a link target) at the longest allowed length. */
    w->path_cap = archive_path_buffer_size(&w->pol);
    _cleanup_free_ char *pbuf = malloc(w->path_cap);
    _cleanup_free_ char *lbuf = malloc(w->path_cap);
    _cleanup_free_ char *nbuf = malloc(w->path_cap);
    if (!pbuf || !lbuf || !nbuf)
        return err_set(e, -ENOMEM, "out of memory");
    w->path = pbuf;
    w->link = lbuf;
    w->name_copy = nbuf;

    struct names_scope u = names_scope_begin();
    r = walk_stream(w, path, fn, ud);
    names_scope_end(&u);
    return r;
}

int archive_scan(const char *path, const struct archive_policy *p, struct archive_stats *st,
                 struct err *e)
{
    return layer_walk_run(path, p, st, e, NULL, NULL, NULL);
}
