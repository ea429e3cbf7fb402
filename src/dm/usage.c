/*
 * usage.c: per-device exclusive and shared bytes from thin_ls, kept until the pool changes.
 * See usage.h for what the figures mean, what they cost and when they are read again.
 */
#include "dm/usage.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dm/dm.h"
#include "dm/exec.h"
#include "dm/pool_status.h"
#include "dm/thin.h"
#include "store/stmt.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/parse.h"
#include "util/timeutil.h"

const struct thin_usage_source *thin_usage_test_source;
unsigned long thin_usage_runs;
int64_t thin_usage_min_run_ms = THIN_USAGE_MIN_RUN_MS;

#define USAGE_FIELDS     4
#define USAGE_DIGITS_MAX 20 /* UINT64_MAX has 20 digits */
#define CACHE_MAGIC      "thinimg pool-usage 1\n"

/* A decimal field of [s, s+n) into *out: digits only (parse_u64), fits 64 bits. */
static bool field_u64(const char *s, size_t n, uint64_t *out)
{
    char f[USAGE_DIGITS_MAX + 1];
    if (n == 0 || n > USAGE_DIGITS_MAX)
        return false;
    memcpy(f, s, n);
    f[n] = '\0';
    return memchr(s, '\0', n) == NULL && parse_u64(f, out) == 0;
}

static int by_id(const void *a, const void *b)
{
    const struct thin_usage_dev *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Why line no (1-based) is refused, with the line's head for the operator. */
static int bad_line(struct err *e, size_t no, const char *line, size_t n, const char *why)
{
    return err_set(e, -EBADMSG, "thin_ls output line %zu (\"%.*s\"): %s", no,
                   (int)(n > 80 ? 80 : n), line, why);
}

int thin_usage_parse(const char *text, size_t len, struct thin_usage_dev **out, size_t *n,
                     struct err *e)
{
    *out = NULL;
    *n = 0;
    _cleanup_free_ struct thin_usage_dev *v = NULL;
    size_t k = 0, cap = 0, no = 0;
    for (size_t pos = 0; pos < len; no++) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ln = nl ? (size_t)(nl - line) : len - pos;
        pos += ln + 1;
        if (!nl)
            return bad_line(e, no + 1, line, ln, "no newline at its end (cut output)");
        uint64_t f[USAGE_FIELDS];
        size_t nf = 0, i = 0;
        while (i < ln) {
            while (i < ln && (line[i] == ' ' || line[i] == '\t'))
                i++;
            if (i == ln)
                break;
            size_t s = i;
            while (i < ln && line[i] != ' ' && line[i] != '\t')
                i++;
            if (nf == USAGE_FIELDS)
                return bad_line(e, no + 1, line, ln, "more than 4 fields");
            if (!field_u64(line + s, i - s, &f[nf++]))
                return bad_line(e, no + 1, line, ln, "a field is not a number of 64 bits");
        }
        if (nf != USAGE_FIELDS)
            return bad_line(e, no + 1, line, ln,
                            "not 4 fields (DEV MAPPED_BYTES EXCLUSIVE_BYTES SHARED_BYTES)");
        if (f[0] < 1 || f[0] > THIN_ID_MAX)
            return bad_line(e, no + 1, line, ln, "device id out of range");
        if (f[2] > f[1] || f[3] != f[1] - f[2])
            return bad_line(e, no + 1, line, ln, "exclusive + shared is not mapped");
        if (k == cap) {
            cap = cap ? cap * 2 : 16;
            struct thin_usage_dev *nv = realloc(v, cap * sizeof(*v));
            if (!nv)
                return -ENOMEM;
            v = nv;
        }
        v[k++] = (struct thin_usage_dev){
            .id = (uint32_t)f[0], .mapped = f[1], .exclusive = f[2], .shared = f[3]};
    }
    if (k)
        qsort(v, k, sizeof(*v), by_id);
    for (size_t i = 1; i < k; i++)
        if (v[i].id == v[i - 1].id)
            return err_set(e, -EBADMSG, "thin_ls output lists device %u twice", v[i].id);
    *out = TAKE_PTR(v);
    *n = k;
    return 0;
}

const struct thin_usage_dev *thin_usage_find(const struct thin_usage *u, uint32_t id)
{
    if (!u || !u->ok || !u->n)
        return NULL;
    struct thin_usage_dev key = {.id = id};
    return bsearch(&key, u->devs, u->n, sizeof(*u->devs), by_id);
}

void thin_usage_free(struct thin_usage *u)
{
    if (!u)
        return;
    free(u->devs);
    u->devs = NULL;
    u->n = 0;
}

/* ---- the kernel's side ---------------------------------------------------------------------- */

static int read_rows(sqlite3_stmt *st, void *ud)
{
    struct thin_usage_key *k = ud;
    k->rows = sqlite3_column_int64(st, 0);
    k->rows_changed_ms = sqlite3_column_int64(st, 1);
    return 0;
}

static int kernel_key(struct db *db, const char *pool, struct thin_usage_key *k, struct err *e)
{
    memset(k, 0, sizeof(*k));
    k->rows = k->rows_changed_ms = -1;
    int r = dm_available(e);
    if (r < 0)
        return r;
    struct dm_target_line t;
    r = dm_dev_status(pool, &t, e);
    if (r == -ENXIO || r == -ENODEV || r == -ENOENT)
        return err_set(e, r, "pool \"%s\" is not active", pool);
    if (r < 0)
        return r;
    struct pool_status s;
    if (strcmp(t.type, "thin-pool") != 0 || pool_status_parse(t.params, &s) < 0)
        return err_set(e, -EBADMSG, "%s is not a thin-pool with a readable status", pool);
    if (s.mode == POOL_MODE_FAIL || s.mode == POOL_MODE_ERROR)
        return err_set(e, -EIO, "pool \"%s\" is in %s mode", pool, pool_mode_name(s.mode));
    k->transaction_id = s.transaction_id;
    k->data_used = s.data_used;
    if (db) {
        r = db_query_one(db,
                         "SELECT count(*), COALESCE(max(updated_at_ms), 0) FROM devices"
                         " WHERE pool=?",
                         read_rows, k, DB_TEXT(pool));
        if (r < 0)
            return err_set(e, r, "cannot read the device rows: %s", db_errmsg(db));
    }
    return 0;
}

/* Whether a program is found in PATH (so a missing thin_ls is named as such). */
static bool in_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/sbin:/usr/bin:/sbin:/bin";
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        char full[4096];
        if (n && (size_t)snprintf(full, sizeof(full), "%.*s/%s", (int)n, p, prog) < sizeof(full) &&
            access(full, X_OK) == 0)
            return true;
        p += n;
        if (*p == ':')
            p++;
    }
    return false;
}

static int kernel_run(const char *pool, struct buf *out, struct err *e)
{
    static const char *const args[] = {"thin_ls",
                                       "--metadata-snap",
                                       "--no-headers",
                                       "-o",
                                       "DEV,MAPPED_BYTES,EXCLUSIVE_BYTES,SHARED_BYTES",
                                       NULL};
    if (!in_path(args[0]))
        return err_set(e, -ENOENT,
                       "thin_ls is not installed (install thin-provisioning-tools for exclusive "
                       "and shared bytes)");
    _cleanup_buf_ struct buf errout = BUF_INIT;
    int r = thin_metadata_snap_exec(pool, args, THIN_USAGE_TIMEOUT_MS, out, &errout, e);
    if (r < 0)
        return r;
    if (out->len >= DM_EXEC_OUTPUT_MAX)
        return err_set(e, -EFBIG, "thin_ls printed more than %zu bytes: figures left out",
                       DM_EXEC_OUTPUT_MAX);
    return 0;
}

static const struct thin_usage_source kernel_source = {kernel_key, kernel_run};

/* ---- what is kept --------------------------------------------------------------------------- */

/* The last answer for one pool: figures (ok) or why there are none. Failures are kept for
 * THIN_USAGE_RECHECK_MS too, so a listing of many rows does not ask the pool once per row. */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char pool[DM_NAME_MAX + 1]; /* "" when nothing is kept */
    bool ok;
    char why[sizeof(((struct thin_usage *)0)->why)];
    struct thin_usage_key key;
    int64_t read_ms;    /* wall clock of the thin_ls run */
    int64_t checked_ms; /* monotonic: when the key was last compared */
    int64_t ran_ms;     /* monotonic: when thin_ls last ran in this process (0: never) */
    struct thin_usage_dev *devs;
    size_t n;
} kept;

void thin_usage_forget(void)
{
    pthread_mutex_lock(&kept_lock);
    free(kept.devs);
    memset(&kept, 0, sizeof(kept));
    pthread_mutex_unlock(&kept_lock);
}

static bool key_eq(const struct thin_usage_key *a, const struct thin_usage_key *b)
{
    return a->transaction_id == b->transaction_id && a->data_used == b->data_used &&
           a->rows == b->rows && a->rows_changed_ms == b->rows_changed_ms;
}

static bool fresh(int64_t read_ms)
{
    int64_t age = now_ms() - read_ms;
    return age >= 0 && age < THIN_USAGE_MAX_AGE_MS;
}

/* Keeps figures (devs owned from now on) for pool. */
static void keep(const char *pool, const struct thin_usage_key *k, int64_t read_ms,
                 struct thin_usage_dev *devs, size_t n)
{
    free(kept.devs);
    snprintf(kept.pool, sizeof(kept.pool), "%s", pool);
    kept.ok = true;
    kept.why[0] = '\0';
    kept.key = *k;
    kept.read_ms = read_ms;
    kept.checked_ms = mono_ms();
    kept.devs = devs;
    kept.n = n;
}

/* Keeps why pool has no figures now. */
static void keep_failure(const char *pool, const struct err *e, int r)
{
    free(kept.devs);
    kept.devs = NULL;
    kept.n = 0;
    snprintf(kept.pool, sizeof(kept.pool), "%s", pool);
    kept.ok = false;
    snprintf(kept.why, sizeof(kept.why), "%s", e && e->code ? err_str(e) : strerror(-r));
    kept.checked_ms = mono_ms();
}

/* out gets a copy of what is kept. */
static void copy_kept(struct thin_usage *out, bool cached)
{
    out->ok = kept.ok;
    out->cached = kept.ok && cached;
    snprintf(out->why, sizeof(out->why), "%s", kept.why);
    out->read_ms = kept.read_ms;
    if (!kept.ok || !kept.n)
        return;
    out->devs = malloc(kept.n * sizeof(*out->devs));
    if (!out->devs) {
        out->ok = false;
        snprintf(out->why, sizeof(out->why), "%s", strerror(ENOMEM));
        return;
    }
    memcpy(out->devs, kept.devs, kept.n * sizeof(*out->devs));
    out->n = kept.n;
}

static void cache_header(struct buf *b, const char *pool, const struct thin_usage_key *k,
                         int64_t read_ms)
{
    buf_printf(b,
               CACHE_MAGIC "pool=%s tx=%" PRIu64 " data=%" PRIu64 " rows=%" PRId64
                           " changed=%" PRId64 " read=%" PRId64 "\n",
               pool, k->transaction_id, k->data_used, k->rows, k->rows_changed_ms, read_ms);
}

/* The cache file's figures when they are for this pool and key and fresh: 0 with devs set;
 * anything else (no file, another key, a file that does not read back) -ENOENT. */
static int cache_load(const char *file, const char *pool, const struct thin_usage_key *k,
                      struct thin_usage_dev **devs, size_t *n, int64_t *read_ms)
{
    _cleanup_buf_ struct buf b = BUF_INIT;
    if (read_file(file, DM_EXEC_OUTPUT_MAX + 4096, &b) < 0 || !b.data)
        return -ENOENT;
    const char *nl = memchr(b.data, '\n', b.len);
    nl = nl ? memchr(nl + 1, '\n', b.len - (size_t)(nl + 1 - b.data)) : NULL;
    if (!nl)
        return -ENOENT;
    size_t head_len = (size_t)(nl + 1 - b.data);
    int64_t rd = 0;
    const char *read_at = memmem(b.data, head_len, " read=", 6);
    if (!read_at || sscanf(read_at, " read=%" SCNd64, &rd) != 1 || !fresh(rd))
        return -ENOENT;
    _cleanup_buf_ struct buf want = BUF_INIT;
    cache_header(&want, pool, k, rd);
    if (want.len != head_len || memcmp(want.data, b.data, head_len) != 0)
        return -ENOENT;
    struct err e = {0};
    if (thin_usage_parse(b.data + head_len, b.len - head_len, devs, n, &e) < 0) {
        log_warn("pool usage cache does not read back: reading the pool again", "file=%s error=%s",
                 file, err_str(&e));
        return -ENOENT;
    }
    *read_ms = rd;
    return 0;
}

static void cache_store(const char *file, const char *pool, const struct thin_usage_key *k,
                        int64_t read_ms, const struct buf *text)
{
    _cleanup_buf_ struct buf b = BUF_INIT;
    cache_header(&b, pool, k, read_ms);
    if (text->len)
        buf_append(&b, text->data, text->len);
    int r = b.data ? write_file_atomic(file, b.data, b.len, 0600) : -ENOMEM;
    if (r < 0) /* a read-only state directory: the next listing reads the pool again */
        log_debug("cannot keep the pool usage", "file=%s error=%s", file, strerror(-r));
}

/* Brings what is kept for pool up to date (see usage.h); true when it was kept already
 * (thin_ls did not run). Called with kept_lock held. */
static bool refresh_locked(struct db *db, const char *pool, const char *cache_file)
{
    const struct thin_usage_source *src =
        thin_usage_test_source ? thin_usage_test_source : &kernel_source;
    bool same_pool = kept.pool[0] && !strcmp(kept.pool, pool);
    if (same_pool && mono_ms() - kept.checked_ms < THIN_USAGE_RECHECK_MS &&
        (!kept.ok || fresh(kept.read_ms)))
        return true;
    struct err e = {0};
    struct thin_usage_key k;
    int r = src->key(db, pool, &k, &e);
    if (r < 0) {
        keep_failure(pool, &e, r);
        return false;
    }
    if (same_pool && kept.ok && fresh(kept.read_ms) &&
        (key_eq(&k, &kept.key) ||
         (kept.ran_ms && mono_ms() - kept.ran_ms < thin_usage_min_run_ms))) {
        kept.checked_ms = mono_ms();
        return true;
    }
    struct thin_usage_dev *devs = NULL;
    size_t n = 0;
    int64_t read_ms = 0;
    if (cache_file && cache_load(cache_file, pool, &k, &devs, &n, &read_ms) == 0) {
        keep(pool, &k, read_ms, devs, n);
        return true;
    }
    _cleanup_buf_ struct buf text = BUF_INIT;
    int64_t t0 = mono_ms();
    read_ms = now_ms();
    thin_usage_runs++;
    r = src->run(pool, &text, &e);
    if (r == 0)
        r = thin_usage_parse(text.data ? text.data : "", text.len, &devs, &n, &e);
    if (r < 0) {
        keep_failure(pool, &e, r);
        log_warn("cannot read exclusive and shared bytes", "pool=%s error=%s", pool, kept.why);
        return false;
    }
    log_debug("pool usage read", "pool=%s devices=%zu ms=%lld", pool, n,
              (long long)(mono_ms() - t0));
    keep(pool, &k, read_ms, devs, n);
    kept.ran_ms = mono_ms();
    if (cache_file)
        cache_store(cache_file, pool, &k, read_ms, &text);
    return false;
}

void thin_usage_get(struct db *db, const char *pool, const char *cache_file, struct thin_usage *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&kept_lock);
    bool cached = refresh_locked(db, pool, cache_file);
    copy_kept(out, cached);
    pthread_mutex_unlock(&kept_lock);
}

int thin_usage_dev_get(struct db *db, const char *pool, const char *cache_file, uint32_t id,
                       struct thin_usage_dev *d, char *why, size_t why_n)
{
    pthread_mutex_lock(&kept_lock);
    refresh_locked(db, pool, cache_file);
    int r = -ENODATA;
    if (!kept.ok) {
        snprintf(why, why_n, "%s", kept.why);
    } else {
        struct thin_usage_dev key = {.id = id};
        const struct thin_usage_dev *f =
            kept.n ? bsearch(&key, kept.devs, kept.n, sizeof(key), by_id) : NULL;
        if (f) {
            *d = *f;
            r = 1;
        } else {
            r = 0;
            snprintf(why, why_n, "device %u is not in pool %s's metadata", id, pool);
        }
    }
    pthread_mutex_unlock(&kept_lock);
    return r;
}
