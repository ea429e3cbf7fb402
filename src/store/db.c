/*
 * db.c: SQLite connection, migrations, statement cache and writer transactions. See db.h.
 *
 * The statement cache is a small linked list keyed by SQL text; the project has a few dozen
 * distinct statements, so a list scan is cheaper than hashing and keeps the code obvious.
 */
#include "store/db.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/timeutil.h"

struct stmt_cache {
    char *sql;
    sqlite3_stmt *st;
    struct stmt_cache *next;
};

struct db {
    sqlite3 *h;
    char *path;
    char *reserve_path;   /* NULL for a read-only connection */
    pthread_mutex_t lock; /* recursive */
    int tx_depth;
    bool tx_failed;
    struct stmt_cache *cache;
    int busy_timeout_ms;
    int64_t busy_gave_up_ms; /* mono_ms() when a write last found the lock held past the busy
                              * timeout, 0 since a write got it (atomic) */
};

int db_rc_to_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return -EBUSY;
    case SQLITE_CONSTRAINT: return -EEXIST;
    case SQLITE_FULL: return -ENOSPC;
    case SQLITE_NOMEM: return -ENOMEM;
    case SQLITE_READONLY: return -EROFS;
    case SQLITE_CANTOPEN: return -ENOENT;
    case SQLITE_PERM:
    case SQLITE_AUTH: return -EACCES;
    case SQLITE_TOOBIG: return -E2BIG;
    case SQLITE_INTERRUPT: return -EINTR;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return -ENOTRECOVERABLE;
    default: return -EIO;
    }
}

/* ---- failures the operator has to act on ------------------------------------------------ */

/* Where SQLite's writers hold their lock: byte 120 of the -shm file in WAL mode (the WAL write
 * lock: WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK in sqlite3.c), the PENDING and RESERVED bytes of
 * the database file in rollback-journal mode. */
#define SQLITE_WAL_WRITE_LOCK_BYTE 120LL
#define SQLITE_PENDING_BYTE        0x40000000LL
#define SQLITE_RESERVED_BYTE       (SQLITE_PENDING_BYTE + 1)
/* How much of the holder's command line a message quotes. */
#define HOLDER_CMDLINE_MAX 80

/* The last such failure in this process (db_last_failure()). */
static pthread_mutex_t note_lock = PTHREAD_MUTEX_INITIALIZER;
static struct err note;
/* The same, for the failures met by this thread since db_thread_failure_reset(). */
static _Thread_local struct err thread_note;

/* Record the failure as the process's last one and, when e has none yet, as e's. */
static int note_failure(struct err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int note_failure(struct err *e, int code, const char *fmt, ...)
{
    struct err m = {0};
    va_list ap;
    va_start(ap, fmt);
    err_setv(&m, code, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&note_lock);
    note = m;
    pthread_mutex_unlock(&note_lock);
    thread_note = m;
    return err_set(e, code, "%s", m.msg);
}

int db_thread_failure(struct err *e)
{
    if (thread_note.code)
        err_set(e, thread_note.code, "%s", thread_note.msg);
    return thread_note.code;
}

void db_thread_failure_reset(void)
{
    err_clear(&thread_note);
}

void db_failure_explain(const struct err *db, int code, const struct err *e, char *out, size_t n)
{
    const char *own = e && e->code ? err_str(e) : strerror(code < 0 ? -code : code);
    if (!db || !db->code || db->code != code)
        snprintf(out, n, "%s", own);
    else if (!e || !e->msg[0] || strstr(e->msg, db->msg)) /* e's words are the note's */
        snprintf(out, n, "%s", db->msg);
    else
        snprintf(out, n, "%s (%s)", db->msg, own);
}

/* e gets the process's last noted failure when that is the failure r (see db_last_failure). */
static void note_into(struct err *e, int r)
{
    struct err m = {0};
    if (db_last_failure(&m) == r && r < 0)
        err_set(e, r, "%s", m.msg);
}

int db_last_failure(struct err *e)
{
    pthread_mutex_lock(&note_lock);
    int code = note.code;
    if (code)
        err_set(e, code, "%s", note.msg);
    pthread_mutex_unlock(&note_lock);
    return code;
}

/* The pid holding a write lock on [lo, hi] of file, from /proc/locks (0 when none is visible).
 * Not F_GETLK: that needs a descriptor, and closing any descriptor of the database or its -shm
 * drops every POSIX lock this process holds on it, SQLite's own included. */
static pid_t write_lock_holder(const char *file, long long lo, long long hi)
{
    struct stat st;
    if (stat(file, &st) < 0)
        return 0;
    _cleanup_fclose_ FILE *f = fopen("/proc/locks", "re");
    char line[256];
    while (f && fgets(line, sizeof(line), f)) {
        /* "1: POSIX  ADVISORY  WRITE 25760 08:01:1234 120 120"; waiters have a "->" field
         * before the type and do not hold the lock, so they do not parse. */
        char type[16], rw[16], end[24];
        int pid;
        unsigned maj, min;
        unsigned long long ino, start;
        if (sscanf(line, "%*d: %15s %*s %15s %d %x:%x:%llu %llu %23s", type, rw, &pid, &maj, &min,
                   &ino, &start, end) != 8)
            continue;
        if (strcmp(rw, "WRITE") != 0 || maj != major(st.st_dev) || min != minor(st.st_dev) ||
            ino != (unsigned long long)st.st_ino)
            continue;
        long long last = strcmp(end, "EOF") == 0 ? -1 : atoll(end);
        if ((long long)start <= hi && (last < 0 || last >= lo) && pid > 0)
            return (pid_t)pid;
    }
    return 0;
}

/* "pid 1234 (python3 -c import sqlite3 ...)", or that nobody visible holds it. */
static void describe_writer(const char *path, char *out, size_t n)
{
    _cleanup_free_ char *shm = NULL;
    pid_t pid = 0;
    if (asprintf(&shm, "%s-shm", path) >= 0)
        pid = write_lock_holder(shm, SQLITE_WAL_WRITE_LOCK_BYTE, SQLITE_WAL_WRITE_LOCK_BYTE);
    if (!pid)
        pid = write_lock_holder(path, SQLITE_PENDING_BYTE, SQLITE_RESERVED_BYTE);
    if (!pid) {
        snprintf(out, n,
                 "a process thinimg cannot name (no holder visible in /proc/locks: "
                 "another pid namespace, or it has just let go)");
        return;
    }
    char cmd[HOLDER_CMDLINE_MAX + 4] = "";
    char file[64];
    snprintf(file, sizeof(file), "/proc/%d/cmdline", (int)pid);
    _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
    ssize_t len = fd >= 0 ? read(fd, cmd, HOLDER_CMDLINE_MAX) : -1;
    if (len > 0) {
        bool cut = len == HOLDER_CMDLINE_MAX;
        for (ssize_t i = 0; i < len; i++)
            if (cmd[i] == '\0' || cmd[i] == '\n')
                cmd[i] = ' ';
        while (len > 0 && cmd[len - 1] == ' ')
            len--;
        snprintf(cmd + len, sizeof(cmd) - (size_t)len, "%s", cut ? "..." : "");
    }
    snprintf(out, n, "pid %d (%s)", (int)pid, cmd[0] ? cmd : "command unknown");
}

/* Whether path (or, when it does not exist yet, its directory) is on a read-only mount. */
static bool on_read_only_fs(const char *path)
{
    struct statvfs v;
    if (statvfs(path, &v) == 0)
        return v.f_flag & ST_RDONLY;
    _cleanup_free_ char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (!slash)
        return false;
    slash[slash == dir] = '\0'; /* "/x" -> "/", "/a/x" -> "/a" */
    return statvfs(dir, &v) == 0 && (v.f_flag & ST_RDONLY);
}

/* The errno of a failed SQLite call on db, after the operator's part of it has been noted:
 * a write lock held past the busy timeout (naming its holder), a corrupt file, a read-only one.
 * sqlite_msg is SQLite's own words for it. */
static int db_fail(struct db *db, int rc, const char *sqlite_msg, struct err *e)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY: {
        __atomic_store_n(&db->busy_gave_up_ms, mono_ms(), __ATOMIC_SEQ_CST);
        char who[HOLDER_CMDLINE_MAX + 256];
        describe_writer(db->path, who, sizeof(who));
        return note_failure(e, -EBUSY,
                            "database is busy: %s is write-locked by %s, for longer than the "
                            "busy timeout (%d ms, THINIMG_DB_BUSY_TIMEOUT_MS); wait for it to "
                            "finish or stop it, then try again",
                            db->path, who, db->busy_timeout_ms);
    }
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return note_failure(e, -ENOTRECOVERABLE,
                            "database is corrupt: %s: %s; restore it from a backup or move it "
                            "away",
                            db->path, sqlite_msg);
    case SQLITE_READONLY:
        if (on_read_only_fs(db->path))
            return note_failure(e, -EROFS,
                                "database %s is on a read-only file system; remount it "
                                "read-write, or point --state-dir/--db at a writable place",
                                db->path);
        return -EACCES; /* a writable file system: this user may not write the file or its -shm */
    default: return db_rc_to_errno(rc);
    }
}

sqlite3 *db_handle(struct db *db)
{
    return db->h;
}

const char *db_path(const struct db *db)
{
    return db->path;
}

const char *db_errmsg(struct db *db)
{
    return sqlite3_errmsg(db->h);
}

void db_lock(struct db *db)
{
    pthread_mutex_lock(&db->lock);
}

void db_unlock(struct db *db)
{
    pthread_mutex_unlock(&db->lock);
}

int db_exec(struct db *db, const char *sql)
{
    char *msg = NULL;
    db_lock(db);
    int rc = sqlite3_exec(db->h, sql, NULL, NULL, &msg);
    db_unlock(db);
    if (rc != SQLITE_OK) {
        log_error("sql failed", "error=%s sql=%.200s", msg ? msg : sqlite3_errstr(rc), sql);
        int r = db_fail(db, rc, msg ? msg : sqlite3_errstr(rc), NULL);
        sqlite3_free(msg);
        return r;
    }
    return 0;
}

/* The database and its companions hold everything thinimg knows (and once held URLs):
 * owner only, whatever the umask. SQLite gives the WAL and SHM files the mode of the database
 * file, so creating that one with DB_FILE_MODE is enough for new files; existing ones (made by
 * an older thinimg) are tightened. */
static int db_files_private(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, DB_FILE_MODE);
    if (fd < 0)
        return neg_errno();
    int r = fchmod(fd, DB_FILE_MODE) < 0 ? neg_errno() : 0;
    close(fd);
    static const char *const companions[] = {"-wal", "-shm", DB_RESERVE_SUFFIX};
    for (size_t i = 0; r == 0 && i < sizeof(companions) / sizeof(companions[0]); i++) {
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s%s", path, companions[i]) < 0)
            return -ENOMEM;
        if (chmod(p, DB_FILE_MODE) < 0 && errno != ENOENT)
            r = neg_errno();
    }
    return r;
}

/* Make the reserve file DB_RESERVE_BYTES long (blocks allocated), if there is room. */
static void reserve_fill(struct db *db)
{
    struct stat st;
    if (stat(db->reserve_path, &st) == 0 && (uint64_t)st.st_blocks * 512 >= DB_RESERVE_BYTES)
        return;
    int fd = open(db->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, DB_FILE_MODE);
    if (fd < 0)
        return;
    int r = posix_fallocate(fd, 0, (off_t)DB_RESERVE_BYTES);
    close(fd);
    if (r != 0) {
        unlink(db->reserve_path);
        log_warn("no room for the database's reserve; a full disk may keep a failure from "
                 "being recorded",
                 "path=%s bytes=%llu error=%s", db->reserve_path,
                 (unsigned long long)DB_RESERVE_BYTES, strerror(r));
    }
}

void db_release_reserve(struct db *db)
{
    if (db->reserve_path && unlink(db->reserve_path) == 0)
        log_warn("disk full: released the database's reserve to record what happened",
                 "path=%s bytes=%llu", db->reserve_path, (unsigned long long)DB_RESERVE_BYTES);
}

/* Process-wide SQLite settings, before its first use. Memory statistics off: nothing reads
 * them (no sqlite3_memory_used, no soft heap limit), and with them on every allocation and free
 * inside SQLite takes a global mutex (thousands per command: parsing the schema and the
 * statements allocates that often). */
static void sqlite_configure(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* The busy timeout when the caller does not choose one: THINIMG_DB_BUSY_TIMEOUT_MS when set
 * (an operator whose backup holds the database longer, or a test that needs no 10 s wait),
 * else DB_BUSY_TIMEOUT_MS. */
static int default_busy_timeout_ms(void)
{
    const char *v = getenv("THINIMG_DB_BUSY_TIMEOUT_MS");
    if (!v || !*v)
        return DB_BUSY_TIMEOUT_MS;
    char *end = NULL;
    long ms = strtol(v, &end, 10);
    if (*end || ms <= 0 || ms > DB_BUSY_TIMEOUT_MAX_MS) {
        log_warn("THINIMG_DB_BUSY_TIMEOUT_MS ignored: not a number of milliseconds in range",
                 "value=%s min=1 max=%d default=%d", v, DB_BUSY_TIMEOUT_MAX_MS, DB_BUSY_TIMEOUT_MS);
        return DB_BUSY_TIMEOUT_MS;
    }
    return (int)ms;
}

/* What a read-only connection opens. On a read-only file system SQLite cannot create the -shm
 * index a WAL database needs, so a database without a write-ahead log to replay there is
 * opened immutable (nobody can change it while the file system stays read-only): the readers
 * (list-images, runs, ...) keep working on a state directory mounted read-only. */
static char *readonly_target(const char *path, bool *uri)
{
    *uri = false;
    _cleanup_free_ char *wal = NULL;
    struct stat st;
    if (!on_read_only_fs(path) || asprintf(&wal, "%s-wal", path) < 0 ||
        (stat(wal, &st) == 0 && st.st_size > 0))
        return strdup(path);
    /* A URI: '%', '?' and '#' in the path are escaped. */
    size_t n = strlen(path);
    char *u = malloc(sizeof("file:") + 3 * n + sizeof("?immutable=1"));
    if (!u)
        return NULL;
    char *o = u + sprintf(u, "file:");
    for (const char *c = path; *c; c++)
        o += strchr("%?#", *c) ? sprintf(o, "%%%02X", (unsigned char)*c) : sprintf(o, "%c", *c);
    strcpy(o, "?immutable=1");
    *uri = true;
    return u;
}

/* A damaged page shows only when a statement reads it, which may be deep inside a command or
 * days into a daemon's life. Every open probes what every command reads first: the schema and
 * each table's first page (a few dozen pages, whatever the database's size: a full check at
 * every command would cost a host with thousands of images a read of the whole file each
 * time). db_check_integrity() reads every page once (PRAGMA quick_check, about 1.5 ms per MB);
 * the daemon runs it at start and `thinimg health` on demand. A damaged page elsewhere is
 * reported as corrupt by the statement that meets it. */
static int probe_not_corrupt(struct db *db, struct err *e)
{
    /* One statement reads every table's first row: "SELECT (SELECT 1 FROM "t" LIMIT 1), ...".
     * A statement per table cost each command two dozen preparations, a sixth of an
     * activate's instructions. */
    sqlite3_stmt *st = NULL;
    struct buf sql = BUF_INIT;
    int rc = sqlite3_prepare_v2(db->h,
                                "SELECT name FROM sqlite_master WHERE type = 'table' AND"
                                " name NOT LIKE 'sqlite_%'",
                                -1, &st, NULL);
    bool oom = buf_puts(&sql, "SELECT 1") < 0;
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        if ((rc = sqlite3_step(st)) != SQLITE_ROW)
            break;
        /* Table names are thinimg's own; a quote in one would be doubled all the same (%w). */
        char *quoted = sqlite3_mprintf("%w", (const char *)sqlite3_column_text(st, 0));
        oom |= !quoted || buf_printf(&sql, ", (SELECT 1 FROM \"%s\" LIMIT 1)", quoted) < 0;
        sqlite3_free(quoted);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_DONE && !oom) {
        rc = sqlite3_prepare_v2(db->h, sql.data, -1, &st, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            rc = SQLITE_DONE;
    }
    buf_free(&sql);
    int r = 0;
    if (oom && rc == SQLITE_DONE)
        r = -ENOMEM;
    else if (rc != SQLITE_DONE && rc != SQLITE_OK)
        r = db_fail(db, rc, sqlite3_errmsg(db->h), e);
    sqlite3_finalize(st);
    if (r < 0)
        err_set(e, r, "cannot check database %s: %s", db->path,
                r == -ENOMEM ? "out of memory" : sqlite3_errmsg(db->h));
    return r;
}

int db_check_integrity(struct db *db, struct err *e)
{
    sqlite3_stmt *st = NULL;
    db_lock(db);
    int rc = sqlite3_prepare_v2(db->h, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int r = 0;
    if (rc == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (v && strcmp(v, "ok") != 0) {
            /* "*** in database main ***\nPage 5: btreeInitPage() returns error code 11" */
            static const char banner[] = "*** in database main ***";
            char reason[256];
            snprintf(reason, sizeof(reason), "%s",
                     strncmp(v, banner, strlen(banner)) == 0 ? v + strlen(banner) : v);
            for (char *c = reason; *c; c++)
                if (*c == '\n')
                    *c = ' ';
            r = db_fail(db, SQLITE_CORRUPT, reason[0] == ' ' ? reason + 1 : reason, e);
        }
    } else if (rc != SQLITE_DONE) {
        r = db_fail(db, rc, sqlite3_errmsg(db->h), e);
    }
    sqlite3_finalize(st);
    if (r < 0)
        err_set(e, r, "cannot check database %s: %s", db->path, sqlite3_errmsg(db->h));
    db_unlock(db);
    return r;
}

int db_open(const char *path, const struct db_options *opt, struct db **out, struct err *e)
{
    static pthread_once_t configured = PTHREAD_ONCE_INIT;
    pthread_once(&configured, sqlite_configure);
    struct db_options o = {.readonly = false, .synchronous = DB_SYNC_FULL, .busy_timeout_ms = 0};
    if (opt)
        o = *opt;
    if (o.busy_timeout_ms <= 0)
        o.busy_timeout_ms = default_busy_timeout_ms();
    struct db *db = calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    db->path = strdup(path);
    db->busy_timeout_ms = o.busy_timeout_ms;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&db->lock, &a);
    pthread_mutexattr_destroy(&a);

    int flags = SQLITE_OPEN_FULLMUTEX | (o.readonly ? SQLITE_OPEN_READONLY
                                                    : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (!o.readonly) {
        int r = db_files_private(path);
        if (r == -EROFS)
            r = db_fail(db, SQLITE_READONLY, "", e);
        if (r < 0 || asprintf(&db->reserve_path, "%s%s", path, DB_RESERVE_SUFFIX) < 0) {
            r = r < 0 ? r : -ENOMEM;
            err_set(e, r, "cannot create database %s: %s", path, strerror(-r));
            db_close(db);
            return r;
        }
    }
    bool uri = false;
    _cleanup_free_ char *target = o.readonly ? readonly_target(path, &uri) : strdup(path);
    if (!target) {
        db_close(db);
        return err_set(e, -ENOMEM, "cannot open database %s: out of memory", path);
    }
    int rc = sqlite3_open_v2(target, &db->h, flags | (uri ? SQLITE_OPEN_URI : 0), NULL);
    if (rc != SQLITE_OK) {
        const char *why = db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc);
        int r = db_fail(db, rc, why, e);
        err_set(e, r, "cannot open database %s: %s", path, why);
        db_close(db);
        return r;
    }
    sqlite3_extended_result_codes(db->h, 1);
    sqlite3_busy_timeout(db->h, o.busy_timeout_ms);

    char pragmas[256];
    static const char *const sync_names[] = {"OFF", "NORMAL", "FULL"};
    snprintf(pragmas, sizeof(pragmas),
             "%s PRAGMA foreign_keys=ON; PRAGMA synchronous=%s; PRAGMA temp_store=MEMORY;",
             o.readonly ? "" : "PRAGMA journal_mode=WAL;", sync_names[o.synchronous]);
    char *msg = NULL;
    rc = sqlite3_exec(db->h, pragmas, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int r = db_fail(db, rc, msg ? msg : sqlite3_errmsg(db->h), e);
        err_set(e, r, "cannot configure database %s: %s", path, msg ? msg : sqlite3_errmsg(db->h));
        sqlite3_free(msg);
        db_close(db);
        return r;
    }
    int r = probe_not_corrupt(db, e);
    if (r < 0) {
        db_close(db);
        return r;
    }
    if (db->reserve_path)
        reserve_fill(db);
    *out = db;
    return 0;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    struct stmt_cache *c = db->cache;
    while (c) {
        struct stmt_cache *next = c->next;
        sqlite3_finalize(c->st);
        free(c->sql);
        free(c);
        c = next;
    }
    if (db->h)
        sqlite3_close_v2(db->h);
    pthread_mutex_destroy(&db->lock);
    free(db->path);
    free(db->reserve_path);
    free(db);
}

sqlite3_stmt *db_prepare(struct db *db, const char *sql)
{
    db_lock(db);
    for (struct stmt_cache *c = db->cache; c; c = c->next)
        if (strcmp(c->sql, sql) == 0) {
            sqlite3_reset(c->st);
            sqlite3_clear_bindings(c->st);
            db_unlock(db);
            return c->st;
        }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        log_error("sql prepare failed", "error=%s sql=%.200s", sqlite3_errmsg(db->h), sql);
        db_unlock(db);
        return NULL;
    }
    struct stmt_cache *c = calloc(1, sizeof(*c));
    if (!c || !(c->sql = strdup(sql))) {
        free(c);
        sqlite3_finalize(st);
        db_unlock(db);
        return NULL;
    }
    c->st = st;
    c->next = db->cache;
    db->cache = c;
    db_unlock(db);
    return st;
}

void db_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Whether a write on db found the lock held past the busy timeout less than one timeout ago
 * (see db_begin()). */
static bool busy_recently(struct db *db)
{
    int64_t gave_up = __atomic_load_n(&db->busy_gave_up_ms, __ATOMIC_SEQ_CST);
    return gave_up && mono_ms() - gave_up < db->busy_timeout_ms;
}

int db_step(struct db *db, sqlite3_stmt *st)
{
    /* A write outside db_begin() (autocommit) waits for the lock here: as in db_begin(). */
    bool recent = busy_recently(db) && !sqlite3_stmt_readonly(st);
    if (recent)
        sqlite3_busy_timeout(db->h, 0);
    int rc = sqlite3_step(st);
    if (recent)
        sqlite3_busy_timeout(db->h, db->busy_timeout_ms);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    log_error("sql step failed", "error=%s sql=%.200s", sqlite3_errmsg(db->h), sqlite3_sql(st));
    int r = db_fail(db, rc, sqlite3_errmsg(db->h), NULL);
    if (r == -ENOSPC)
        db_release_reserve(db); /* so that the failure itself can be recorded */
    return r;
}

int db_begin(struct db *db)
{
    db_lock(db);
    if (db->tx_depth++ > 0)
        return 0;
    db->tx_failed = false;
    /* A write on this connection waited the whole busy timeout for the lock in vain less than
     * one timeout ago: its holder has been waited for, so look once instead of waiting again
     * (a command would otherwise take a multiple of the timeout to say it is busy, one wait per
     * thread or step). The first write that gets the lock ends this. */
    bool recent = busy_recently(db);
    if (recent)
        sqlite3_busy_timeout(db->h, 0);
    int rc = sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (recent)
        sqlite3_busy_timeout(db->h, db->busy_timeout_ms);
    if (rc == SQLITE_OK && __atomic_load_n(&db->busy_gave_up_ms, __ATOMIC_SEQ_CST))
        __atomic_store_n(&db->busy_gave_up_ms, 0, __ATOMIC_SEQ_CST);
    if (rc != SQLITE_OK) {
        log_error("sql begin failed", "error=%s", sqlite3_errmsg(db->h));
        int r = db_fail(db, rc, sqlite3_errmsg(db->h), NULL);
        db->tx_depth--;
        db_unlock(db);
        return r;
    }
    return 0;
}

/* SQLite rolls a transaction back by itself after some errors (SQLITE_FULL, SQLITE_IOERR,
 * SQLITE_NOMEM during COMMIT or a statement): a ROLLBACK then fails with "cannot rollback - no
 * transaction is active" and hides the real error. Roll back only what is still open. */
static void rollback_if_open(struct db *db)
{
    if (!sqlite3_get_autocommit(db->h))
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

int db_commit(struct db *db)
{
    int r = 0;
    if (db->tx_depth <= 0) {
        log_error("db_commit outside a transaction");
        return -EINVAL;
    }
    if (--db->tx_depth == 0) {
        if (db->tx_failed) {
            rollback_if_open(db);
            r = -ECANCELED;
        } else {
            int rc = sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
            if (rc != SQLITE_OK) {
                log_error("sql commit failed", "error=%s", sqlite3_errmsg(db->h));
                r = db_fail(db, rc, sqlite3_errmsg(db->h), NULL);
                if (r == -ENOSPC)
                    db_release_reserve(db);
                rollback_if_open(db);
            }
        }
    }
    db_unlock(db);
    return r;
}

int db_step_commit(struct db *db, sqlite3_stmt *st)
{
    int r = st ? db_step(db, st) : -EIO;
    if (st)
        db_done(st);
    if (r < 0) {
        db_rollback(db);
        return r;
    }
    return db_commit(db);
}

void db_rollback(struct db *db)
{
    if (db->tx_depth <= 0)
        return;
    if (--db->tx_depth == 0)
        rollback_if_open(db);
    else
        db->tx_failed = true;
    db_unlock(db);
}

bool db_in_tx(struct db *db)
{
    return db->tx_depth > 0;
}

int db_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    int rc = s ? sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, idx);
    return db_rc_to_errno(rc);
}

int db_bind_blob(sqlite3_stmt *st, int idx, const void *p, size_t n)
{
    int rc = p ? sqlite3_bind_blob64(st, idx, p, n, SQLITE_TRANSIENT) : sqlite3_bind_null(st, idx);
    return db_rc_to_errno(rc);
}

int db_bind_i64(sqlite3_stmt *st, int idx, int64_t v)
{
    return db_rc_to_errno(sqlite3_bind_int64(st, idx, v));
}

char *db_col_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s ? strdup((const char *)s) : NULL;
}

static const char migrations_table[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations("
    " component TEXT NOT NULL, version INTEGER NOT NULL, description TEXT NOT NULL,"
    " applied_at_ms INTEGER NOT NULL, PRIMARY KEY(component, version))";

int db_schema_version(struct db *db, const char *component, int *out)
{
    *out = 0;
    db_lock(db);
    int r = db_exec(db, migrations_table);
    if (r < 0) {
        db_unlock(db);
        return r;
    }
    sqlite3_stmt *st =
        db_prepare(db, "SELECT COALESCE(MAX(version),0) FROM schema_migrations WHERE component=?");
    if (!st) {
        db_unlock(db);
        return -EIO;
    }
    db_bind_text(st, 1, component);
    r = db_step(db, st);
    if (r == 1) {
        *out = sqlite3_column_int(st, 0);
        r = 0;
    }
    db_done(st);
    db_unlock(db);
    return r;
}

int db_migrate(struct db *db, const char *component, const struct db_migration *m, size_t n,
               struct err *e)
{
    int have = 0;
    int r = db_schema_version(db, component, &have);
    if (r < 0) {
        note_into(e, r);
        return err_set(e, r, "cannot read schema version of %s: %s", db->path, db_errmsg(db));
    }
    if (n > 0 && have > m[n - 1].version)
        return err_set(e, -EPROTO,
                       "database %s has %s schema version %d, newer than this thinimg knows (%d);"
                       " upgrade thinimg",
                       db->path, component, have, m[n - 1].version);
    for (size_t i = 0; i < n; i++) {
        if (m[i].version <= have)
            continue;
        r = db_begin(db);
        if (r < 0) {
            note_into(e, r);
            return err_set(e, r, "cannot start migration: %s", db_errmsg(db));
        }
        char *msg = NULL;
        int rc = sqlite3_exec(db->h, m[i].sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            r = db_fail(db, rc, msg ? msg : sqlite3_errstr(rc), e);
            r = err_set(e, r, "migration %s v%d (%s) failed: %s", component, m[i].version,
                        m[i].description, msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            db_rollback(db);
            return r;
        }
        sqlite3_stmt *st = db_prepare(db, "INSERT INTO schema_migrations(component, version,"
                                          " description, applied_at_ms) VALUES(?,?,?,?)");
        if (!st) {
            db_rollback(db);
            return err_set(e, -EIO, "cannot record migration: %s", db_errmsg(db));
        }
        db_bind_text(st, 1, component);
        db_bind_i64(st, 2, m[i].version);
        db_bind_text(st, 3, m[i].description);
        db_bind_i64(st, 4, now_ms());
        r = db_step(db, st);
        db_done(st);
        if (r < 0) {
            db_rollback(db);
            note_into(e, r);
            return err_set(e, r, "cannot record migration: %s", db_errmsg(db));
        }
        r = db_commit(db);
        if (r < 0) {
            note_into(e, r);
            return err_set(e, r, "cannot commit migration %s v%d: %s", component, m[i].version,
                           db_errmsg(db));
        }
        log_debug("migration applied", "component=%s version=%d", component, m[i].version);
    }
    return 0;
}
