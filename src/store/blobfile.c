/*
 * blobfile.c: sealing, verifying and quarantining blob files. See blobfile.h for the rule.
 */
#include "store/blobfile.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/stmt.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/timeutil.h"

char *blobfile_relpath(const char *digest)
{
    if (!digest || !digest_valid(digest))
        return NULL;
    char *p = NULL;
    if (asprintf(&p, BLOBFILE_SUBDIR "/%s", digest + strlen(DIGEST_PREFIX)) < 0)
        return NULL;
    return p;
}

char *blobfile_path(const char *blob_dir, const char *digest)
{
    _cleanup_free_ char *rel = blobfile_relpath(digest);
    return rel ? path_join(blob_dir, rel) : NULL;
}

static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static void seal_from_stat(const struct stat *st, struct blob_seal *s)
{
    *s = (struct blob_seal){.size = (uint64_t)st->st_size,
                            .ino = (uint64_t)st->st_ino,
                            .mtime_ns = ts_ns(&st->st_mtim),
                            .ctime_ns = ts_ns(&st->st_ctim)};
}

int blobfile_seal_fd(int fd, struct blob_seal *s)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return neg_errno();
    /* A chmod moves the ctime even when the mode stays: sealing an already sealed file (two
     * runs storing the same bytes at once) must not break the seal the other one recorded. */
    if ((st.st_mode & 07777) != BLOBFILE_MODE &&
        (fchmod(fd, BLOBFILE_MODE) < 0 || fstat(fd, &st) < 0))
        return neg_errno();
    seal_from_stat(&st, s);
    return 0;
}

bool blobfile_seal_matches(const struct stat *st, const struct blob_seal *s)
{
    struct blob_seal now;
    seal_from_stat(st, &now);
    return S_ISREG(st->st_mode) && now.size == s->size && now.ino == s->ino &&
           now.mtime_ns == s->mtime_ns && now.ctime_ns == s->ctime_ns;
}

struct seal_row {
    struct blob_seal *s;
    bool sealed; /* the row has a seal (the size is read either way) */
};

static int seal_read(sqlite3_stmt *st, void *ud)
{
    struct seal_row *row = ud;
    row->s->size = (uint64_t)sqlite3_column_int64(st, 0);
    row->sealed =
        sqlite3_column_type(st, 1) != SQLITE_NULL && sqlite3_column_type(st, 3) != SQLITE_NULL;
    if (row->sealed) {
        row->s->ino = (uint64_t)sqlite3_column_int64(st, 1);
        row->s->mtime_ns = sqlite3_column_int64(st, 2);
        row->s->ctime_ns = sqlite3_column_int64(st, 3);
    }
    return 0;
}

int blobfile_seal_load(struct db *db, const char *digest, struct blob_seal *s)
{
    *s = (struct blob_seal){0};
    struct seal_row row = {.s = s};
    int r = db_query_one(db,
                         "SELECT size, file_ino, file_mtime_ns, file_ctime_ns FROM blobs WHERE "
                         "digest = ?1",
                         seal_read, &row, DB_TEXT(digest));
    return r == 1 ? row.sealed : r;
}

/* One UPDATE of a blobs row's seal columns, a transaction of its own (or part of the open
 * one); s NULL clears them. */
static int seal_write(struct db *db, const char *digest, const struct blob_seal *s)
{
    return db_run_tx(db,
                     "UPDATE blobs SET file_ino = ?2, file_mtime_ns = ?3, file_ctime_ns = ?4, "
                     "verified_at_ms = ?5 WHERE digest = ?1",
                     DB_TEXT(digest), s ? DB_INT(s->ino) : DB_NULL(),
                     s ? DB_INT(s->mtime_ns) : DB_NULL(), s ? DB_INT(s->ctime_ns) : DB_NULL(),
                     s ? DB_INT(now_ms()) : DB_NULL());
}

int blobfile_seal_store(struct db *db, const char *digest, const struct blob_seal *s)
{
    return seal_write(db, digest, s);
}

struct qfile {
    char *name;
    int64_t at_ms; /* from the name's .<ms> suffix */
    uint64_t bytes;
};

static int qfile_newest_first(const void *a, const void *b)
{
    const struct qfile *x = a, *y = b;
    return x->at_ms < y->at_ms ? 1 : x->at_ms > y->at_ms ? -1 : strcmp(x->name, y->name);
}

/* Keep the newest quarantined files within BLOBFILE_QUARANTINE_KEEP_FILES and _KEEP_BYTES;
 * delete the rest and clear their rows' moved_to. Best effort: a failure is logged, the
 * quarantine itself already happened. */
static void quarantine_trim(struct db *db, const char *qdir)
{
    _cleanup_closedir_ DIR *d = opendir(qdir);
    if (!d)
        return;
    struct qfile *v = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *dot = strrchr(de->d_name, '.');
        struct stat st;
        if (!dot || dot == de->d_name || fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
            !S_ISREG(st.st_mode))
            continue;
        struct qfile *nv = realloc(v, (n + 1) * sizeof(*v));
        if (!nv)
            break;
        v = nv;
        v[n] = (struct qfile){.name = strdup(de->d_name),
                              .at_ms = strtoll(dot + 1, NULL, 10),
                              .bytes = (uint64_t)st.st_size};
        if (!v[n].name)
            break;
        n++;
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), qfile_newest_first);
    uint64_t kept_bytes = 0;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        bool keep = i == 0 || (kept < BLOBFILE_QUARANTINE_KEEP_FILES &&
                               kept_bytes + v[i].bytes <= BLOBFILE_QUARANTINE_KEEP_BYTES);
        if (keep) {
            kept++;
            kept_bytes += v[i].bytes;
        } else if (unlinkat(dirfd(d), v[i].name, 0) == 0 || errno == ENOENT) {
            _cleanup_free_ char *full = path_join(qdir, v[i].name);
            if (full)
                db_run(db, "UPDATE blob_quarantine SET moved_to = NULL WHERE moved_to = ?1",
                       DB_TEXT(full));
            log_info("old quarantined blob file deleted", "file=%s/%s bytes=%" PRIu64, qdir,
                     v[i].name, v[i].bytes);
        } else
            log_warn("cannot delete an old quarantined blob file", "file=%s/%s error=%s", qdir,
                     v[i].name, strerror(errno));
        free(v[i].name);
    }
    free(v);
}

int blobfile_quarantine(struct db *db, const char *blob_dir, const char *digest, const char *path,
                        const char *why)
{
    _cleanup_free_ char *qdir = path_join(blob_dir, BLOBFILE_QUARANTINE_SUBDIR);
    _cleanup_free_ char *dest = NULL;
    if (!qdir ||
        asprintf(&dest, "%s/%s.%" PRId64, qdir, digest + strlen(DIGEST_PREFIX), now_ms()) < 0)
        return -ENOMEM;
    const char *moved = dest;
    if (mkdir_p(qdir, 0700) < 0 || rename(path, dest) < 0) {
        /* Keeping a bad file where it would be used is worse than losing the evidence. */
        if (unlink(path) < 0 && errno != ENOENT)
            return neg_errno();
        moved = NULL;
    }
    log_warn("blob quarantined", "digest=%s path=%s moved_to=%s reason=%s", digest, path,
             moved ? moved : "(deleted)", why);
    int r = seal_write(db, digest, NULL);
    if (r < 0)
        return r;
    r = db_run(db,
               "INSERT INTO blob_quarantine(digest, moved_to, reason, at_ms) VALUES(?1, ?2, ?3, "
               "?4)",
               DB_TEXT(digest), DB_TEXT(moved), DB_TEXT(why), DB_INT(now_ms()));
    if (r < 0)
        return r;
    if (moved)
        quarantine_trim(db, qdir);
    return 0;
}

int blobfile_verify(struct db *db, const char *blob_dir, const char *digest, uint64_t size,
                    const char *path, struct blob_seal *seal_out, char *why, size_t why_len)
{
    char scratch[256];
    if (!why) {
        why = scratch;
        why_len = sizeof(scratch);
    }
    why[0] = '\0';
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno != ENOENT)
            return neg_errno();
        snprintf(why, why_len, "%s is missing", path);
        return 0;
    }
    struct blob_seal rec;
    int r = blobfile_seal_load(db, digest, &rec);
    if (r < 0)
        return r;
    if (!size)
        size = rec.size;
    if (r == 1 && (!size || rec.size == size) && blobfile_seal_matches(&st, &rec)) {
        if (seal_out)
            *seal_out = rec;
        return 1;
    }
    /* No seal, or the file is not what was sealed: only its bytes can tell. */
    if (!S_ISREG(st.st_mode))
        snprintf(why, why_len, "%s is not a regular file", path);
    else if (size && (uint64_t)st.st_size != size)
        snprintf(why, why_len, "%s has %" PRIu64 " bytes, the blob %" PRIu64, path,
                 (uint64_t)st.st_size, size);
    else {
        uint8_t h[SHA256_LEN];
        uint64_t n = 0;
        r = sha256_file(path, h, &n);
        if (r < 0)
            return r;
        char d[DIGEST_STR_LEN + 1];
        digest_format(h, d);
        if (strcmp(d, digest) != 0)
            snprintf(why, why_len, "the bytes of %s hash to %s, not to its name", path, d);
    }
    if (why[0]) {
        r = blobfile_quarantine(db, blob_dir, digest, path, why);
        return r < 0 ? r : 0;
    }
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return neg_errno();
    struct blob_seal s;
    r = blobfile_seal_fd(fd, &s);
    if (r < 0)
        return r;
    r = blobfile_seal_store(db, digest, &s);
    if (r < 0)
        log_warn("cannot record a blob's seal (it is hashed again next time)",
                 "digest=%s "
                 "error=%s",
                 digest, strerror(-r));
    log_info("blob verified by hashing", "digest=%s sealed=%s", digest,
             rec.size || r == 0 ? "yes" : "no");
    if (seal_out)
        *seal_out = s;
    return 1;
}
