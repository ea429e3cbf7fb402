/*
 * health.c: host health checks (D-state tasks, kernel log, memory and I/O pressure, pool).
 * See health.h.
 *
 * Each check runs on its own thread so that a check stuck in the kernel cannot stall the
 * caller: the runner waits up to HEALTH_CHECK_TIMEOUT_MS, then reports the check as failed and
 * abandons the thread (it frees its own context when it eventually returns). The checks read
 * /proc and /dev/kmsg only; they never touch devicemapper.
 */
#include "guard/health.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/timeutil.h"

const char *health_level_name(enum health_level l)
{
    switch (l) {
    case HEALTH_OK: return "ok";
    case HEALTH_WARN: return "warn";
    case HEALTH_FAIL: return "fail";
    case HEALTH_SKIP: return "skipped";
    }
    return "?";
}

static void setf(struct health_check *c, enum health_level l, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void setf(struct health_check *c, enum health_level l, const char *fmt, ...)
{
    c->level = l;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
    va_end(ap);
}

static void appendf(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void appendf(char *dst, size_t n, const char *fmt, ...)
{
    size_t len = strlen(dst);
    if (len + 1 >= n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst + len, n - len, fmt, ap);
    va_end(ap);
}

static const char *proc_root(const struct health_opts *o)
{
    return o->proc_root ? o->proc_root : "/proc";
}

/* ---- dstate --------------------------------------------------------------------------------- */

/* Kernel threads and tools whose D state means devicemapper/storage trouble ("sync": sync(1),
 * syncfs and fsync callers waiting on writeback that does not complete). */
static const char *const dstate_patterns[] = {"kdmflush", "kcopyd", "dm-", "dm_", "jbd2", "loop",
                                              "kworker", "ext4", "mkfs", "thin", "umount", "mount",
                                              "dmsetup", "thinimg", "kswapd", "sync", NULL};

struct dtask {
    int pid;
    char comm[64];
    long long switches; /* voluntary + involuntary context switches, -1 unknown */
};

/* The task's context switches so far (/proc/PID/status), -1 when unreadable. */
static long long task_switches(const char *proc, const char *pid)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/status", proc, pid);
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[256];
    long long sum = 0;
    int seen = 0;
    while (fgets(line, sizeof(line), f)) {
        long long v;
        if (sscanf(line, "voluntary_ctxt_switches: %lld", &v) == 1 ||
            sscanf(line, "nonvoluntary_ctxt_switches: %lld", &v) == 1) {
            sum += v;
            seen++;
        }
    }
    return seen ? sum : -1;
}

static int scan_dstate(const char *proc, struct dtask *out, int max)
{
    _cleanup_closedir_ DIR *d = opendir(proc);
    if (!d)
        return neg_errno();
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < max) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        char path[512], buf[1024];
        snprintf(path, sizeof(path), "%s/%s/stat", proc, de->d_name);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t k = read(fd, buf, sizeof(buf) - 1);
        if (k <= 0)
            continue;
        buf[k] = '\0';
        char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
        if (!lp || !rp || rp[1] != ' ' || rp[2] != 'D')
            continue;
        out[n].pid = atoi(de->d_name);
        size_t cl = (size_t)(rp - lp - 1);
        if (cl >= sizeof(out[n].comm))
            cl = sizeof(out[n].comm) - 1;
        memcpy(out[n].comm, lp + 1, cl);
        out[n].comm[cl] = '\0';
        out[n].switches = task_switches(proc, de->d_name);
        n++;
    }
    return n;
}

static bool dstate_relevant(const char *comm)
{
    for (int i = 0; dstate_patterns[i]; i++)
        if (strstr(comm, dstate_patterns[i]))
            return true;
    return false;
}

/* Is task t of the first sample still in D, the same task, and without a context switch
 * since (unknown counts count as none: the safe side)? */
static bool still_stuck(const struct dtask *t, const struct dtask *now, int n)
{
    for (int j = 0; j < n; j++)
        if (now[j].pid == t->pid && !strcmp(now[j].comm, t->comm))
            return t->switches < 0 || now[j].switches == t->switches;
    return false;
}

static void check_dstate(const struct health_opts *o, struct health_check *c)
{
    enum { MAXT = 256 };
    struct dtask a[MAXT], b[MAXT];
    bool live[MAXT]; /* a[i] has stayed in D without a switch so far */
    int na = scan_dstate(proc_root(o), a, MAXT);
    if (na < 0) {
        setf(c, HEALTH_SKIP, "cannot read %s: %s", proc_root(o), strerror(-na));
        return;
    }
    /* Other tasks (not storage: a warning only) count when in D in the first two samples;
     * storage tasks are followed until each has moved on, or the window is over. */
    int left = 0, other = 0;
    for (int i = 0; i < na; i++) {
        live[i] = true;
        left += dstate_relevant(a[i].comm);
    }
    for (int t = 0; t == 0 ? na > 0 : left > 0 && t < HEALTH_DSTATE_WINDOW_MS;
         t += HEALTH_DSTATE_INTERVAL_MS) {
        sleep_ms(HEALTH_DSTATE_INTERVAL_MS);
        int nb = scan_dstate(proc_root(o), b, MAXT);
        for (int i = 0; i < na; i++) {
            if (!live[i] || still_stuck(&a[i], b, nb > 0 ? nb : 0))
                continue;
            live[i] = false;
            left -= dstate_relevant(a[i].comm);
        }
        for (int i = 0; t == 0 && i < na; i++)
            other += live[i] && !dstate_relevant(a[i].comm);
    }
    int stuck = 0, busy = 0;
    char list[400] = "";
    for (int i = 0; i < na; i++) {
        if (!dstate_relevant(a[i].comm))
            continue;
        if (!live[i]) {
            busy++;
            continue;
        }
        if (stuck++ < 6)
            appendf(list, sizeof(list), "%s%d (%s)", stuck > 1 ? ", " : "", a[i].pid, a[i].comm);
    }
    if (stuck)
        setf(c, HEALTH_FAIL,
             "%d storage task(s) stuck in D state for >%dms without waking: %s; devicemapper "
             "work could hang behind them: wait, check `dmesg`, and do not remove devices until "
             "they clear",
             stuck, HEALTH_DSTATE_WINDOW_MS, list);
    else if (other)
        setf(c, HEALTH_WARN, "%d other task(s) in D state (not storage related)", other);
    else if (busy)
        setf(c, HEALTH_OK, "no storage task stuck (%d waiting on I/O and waking: a busy disk)",
             busy);
    else
        setf(c, HEALTH_OK, "no storage tasks in D state");
}

/* ---- kmsg ---------------------------------------------------------------------------------- */

/* Kernel log lines that mean the pool, a disk or memory is in trouble (thin-pool messages from
 * drivers/md/dm-thin.c, block layer errors, hung task and OOM reports, ext4 errors). */
static const char *const kmsg_fail_patterns[] = {
    "needs_check",          "switching pool to",        "no free data space",
    "no free metadata space", "aborting current metadata transaction",
    "metadata operation",   "I/O error",                "blocked for more than",
    "Out of memory",        "oom-kill",                 "invoked oom-killer",
    "EXT4-fs error",        "Buffer I/O error",         NULL};
/* Lines that match a pattern above but are routine. */
static const char *const kmsg_ignore_patterns[] = {"reached low water mark", NULL};

static bool kmsg_is_trouble(const char *msg)
{
    for (int i = 0; kmsg_ignore_patterns[i]; i++)
        if (strstr(msg, kmsg_ignore_patterns[i]))
            return false;
    for (int i = 0; kmsg_fail_patterns[i]; i++)
        if (strstr(msg, kmsg_fail_patterns[i]))
            return true;
    return false;
}

static void read_boot_id(const struct health_opts *o, char *out, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/sys/kernel/random/boot_id", proc_root(o));
    struct buf b = BUF_INIT;
    out[0] = '\0';
    if (read_file(path, 128, &b) == 0) {
        snprintf(out, n, "%.36s", b.data);
        for (char *p = out; *p; p++)
            if (*p == '\n')
                *p = '\0';
    }
    buf_free(&b);
}

static double uptime_s(const struct health_opts *o)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/uptime", proc_root(o));
    struct buf b = BUF_INIT;
    double up = 0;
    if (read_file(path, 256, &b) == 0)
        up = strtod(b.data, NULL);
    buf_free(&b);
    return up;
}

/* A record's prefix "PRI,SEQ,TS_US[,FLAGS...];": its sequence number and time. Read by hand:
 * every command's check reads the whole log (/dev/kmsg cannot seek to a sequence number), and
 * sscanf per record was most of the check's CPU. */
static bool kmsg_prefix(const char *line, long long *seq, long long *ts_us)
{
    char *end;
    errno = 0;
    (void)strtol(line, &end, 10);
    if (end == line || *end != ',')
        return false;
    const char *p = end + 1;
    *seq = strtoll(p, &end, 10);
    if (end == p || *end != ',')
        return false;
    p = end + 1;
    *ts_us = strtoll(p, &end, 10);
    return end != p && (*end == ',' || *end == ';') && errno == 0;
}

static void check_kmsg(const struct health_opts *o, struct health_check *c)
{
    /* THINIMG_KMSG_PATH: tests of a whole process (the daemon) point it at a file. */
    const char *env = getenv("THINIMG_KMSG_PATH");
    const char *path = o->kmsg_path ? o->kmsg_path : env && *env ? env : "/dev/kmsg";
    _cleanup_close_ int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        setf(c, HEALTH_SKIP, "cannot read %s: %s", path, strerror(errno));
        return;
    }
    char boot[64];
    read_boot_id(o, boot, sizeof(boot));
    long long cursor = -1;
    if (o->cursor_path) {
        struct buf b = BUF_INIT;
        if (read_file(o->cursor_path, 256, &b) == 0) {
            char cb[64] = "";
            long long seq = -1;
            if (sscanf(b.data, "%63s %lld", cb, &seq) == 2 && !strcmp(cb, boot))
                cursor = seq;
        }
        buf_free(&b);
    }
    double min_ts = cursor < 0 ? uptime_s(o) - HEALTH_KMSG_FIRST_WINDOW_S : -1;

    /* /dev/kmsg returns one record per read; a plain file (tests) returns many lines. */
    char rec[8192];
    long long last_seq = cursor;
    int trouble = 0;
    char first[300] = "";
    struct buf pending = BUF_INIT;
    for (;;) {
        ssize_t k = read(fd, rec, sizeof(rec) - 1);
        if (k < 0) {
            if (errno == EINTR || errno == EPIPE)
                continue; /* EPIPE: records overwritten while we read; go on */
            break;        /* EAGAIN: end of the log */
        }
        if (k == 0)
            break;
        buf_append(&pending, rec, (size_t)k);
    }
    char *save = NULL;
    for (char *line = pending.data ? strtok_r(pending.data, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == ' ')
            continue; /* continuation (KEY=value) lines */
        long long seq, ts_us;
        char *semi = strchr(line, ';');
        if (!semi || !kmsg_prefix(line, &seq, &ts_us))
            continue;
        if (seq <= cursor)
            continue;
        if (seq > last_seq)
            last_seq = seq;
        if (min_ts >= 0 && (double)ts_us / 1e6 < min_ts)
            continue;
        const char *msg = semi + 1;
        if (kmsg_is_trouble(msg)) {
            if (trouble++ == 0)
                snprintf(first, sizeof(first), "%.280s", msg);
        }
    }
    buf_free(&pending);
    if (o->cursor_path && o->advance_cursor && last_seq >= 0 && boot[0]) {
        char content[128];
        int n = snprintf(content, sizeof(content), "%s %lld\n", boot, last_seq);
        write_file_atomic(o->cursor_path, content, (size_t)n, 0600);
    }
    if (trouble)
        setf(c, HEALTH_FAIL,
             "%d kernel log line(s) since the last check report storage or memory trouble, "
             "first: \"%s\"; read `dmesg`, fix the cause, then run `thinimg health` again",
             trouble, first);
    else
        setf(c, HEALTH_OK, "no storage or memory errors in the kernel log%s",
             cursor < 0 ? " (last 10 minutes)" : " since the last check");
}

/* ---- memory and I/O pressure --------------------------------------------------------------- */

static int psi_full_avg10(const struct health_opts *o, const char *what, double *out)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/pressure/%s", proc_root(o), what);
    struct buf b = BUF_INIT;
    int r = read_file(path, 4096, &b);
    if (r < 0) {
        buf_free(&b);
        return r;
    }
    char *full = strstr(b.data, "full avg10=");
    r = full ? 0 : -ENODATA;
    if (full)
        *out = strtod(full + strlen("full avg10="), NULL);
    buf_free(&b);
    return r;
}

static int64_t meminfo_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return -1;
    return strtoll(p + strlen(key), NULL, 10);
}

static void check_memory(const struct health_opts *o, struct health_check *c)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/meminfo", proc_root(o));
    struct buf b = BUF_INIT;
    if (read_file(path, 1 << 16, &b) < 0) {
        buf_free(&b);
        setf(c, HEALTH_SKIP, "cannot read %s", path);
        return;
    }
    int64_t total = meminfo_kb(b.data, "MemTotal:"), avail = meminfo_kb(b.data, "MemAvailable:");
    buf_free(&b);
    if (total <= 0 || avail < 0) {
        setf(c, HEALTH_SKIP, "no MemTotal/MemAvailable in %s", path);
        return;
    }
    double pct = 100.0 * (double)avail / (double)total;
    double psi = 0;
    bool have_psi = psi_full_avg10(o, "memory", &psi) == 0;
    if (pct < HEALTH_MEM_FAIL_PCT)
        setf(c, HEALTH_FAIL, "only %.1f%% of memory available (%lld MiB); free memory first",
             pct, (long long)(avail / 1024));
    else if (have_psi && psi > HEALTH_PSI_MEM_FULL_FAIL)
        setf(c, HEALTH_FAIL, "memory pressure: all tasks stalled %.1f%% of the last 10s", psi);
    else if (pct < HEALTH_MEM_WARN_PCT)
        setf(c, HEALTH_WARN, "%.1f%% of memory available (%lld MiB)", pct,
             (long long)(avail / 1024));
    else
        setf(c, HEALTH_OK, "%.0f%% of memory available%s", pct,
             have_psi ? "" : " (no PSI in this kernel)");
}

static void check_io(const struct health_opts *o, struct health_check *c)
{
    double psi = 0;
    int r = psi_full_avg10(o, "io", &psi);
    if (r < 0)
        setf(c, HEALTH_SKIP, "no I/O pressure information (%s/pressure/io)", proc_root(o));
    else if (psi > HEALTH_PSI_IO_FULL_FAIL)
        setf(c, HEALTH_FAIL,
             "I/O pressure: all tasks stalled on I/O %.1f%% of the last 10s; wait for it to "
             "settle",
             psi);
    else if (psi > HEALTH_PSI_IO_FULL_WARN)
        setf(c, HEALTH_WARN, "I/O pressure: all tasks stalled %.1f%% of the last 10s", psi);
    else
        setf(c, HEALTH_OK, "I/O pressure %.1f%% (full avg10)", psi);
}

/* ---- runner -------------------------------------------------------------------------------- */

enum check_kind { CK_DSTATE, CK_KMSG, CK_MEMORY, CK_IO, CK_POOL };

struct check_ctx {
    enum check_kind kind;
    struct health_opts opts; /* copy: the caller's may be gone if we are abandoned */
    struct health_check result;
    pthread_mutex_t lock;
    bool done, abandoned;
};

static void *check_thread(void *arg)
{
    struct check_ctx *x = arg;
    struct health_check r = x->result;
    int64_t t0 = mono_ms();
    switch (x->kind) {
    case CK_DSTATE: check_dstate(&x->opts, &r); break;
    case CK_KMSG: check_kmsg(&x->opts, &r); break;
    case CK_MEMORY: check_memory(&x->opts, &r); break;
    case CK_IO: check_io(&x->opts, &r); break;
    case CK_POOL: x->opts.pool(&r, x->opts.pool_ud); break;
    }
    r.duration_ms = mono_ms() - t0;
    pthread_mutex_lock(&x->lock);
    x->result = r;
    x->done = true;
    bool abandoned = x->abandoned;
    pthread_mutex_unlock(&x->lock);
    if (abandoned) {
        pthread_mutex_destroy(&x->lock);
        free(x);
    }
    return NULL;
}

int health_run(const struct health_opts *o, struct health_report *out)
{
    static const struct health_opts none;
    if (!o)
        o = &none;
    memset(out, 0, sizeof(*out));
    static const struct {
        enum check_kind kind;
        const char *name;
    } kinds[] = {{CK_DSTATE, "dstate"}, {CK_KMSG, "kmsg"}, {CK_MEMORY, "memory"},
                 {CK_IO, "io"},         {CK_POOL, "pool"}};
    struct check_ctx *ctx[ARRAY_SIZE(kinds)] = {0};
    pthread_t th[ARRAY_SIZE(kinds)];
    bool started[ARRAY_SIZE(kinds)] = {0};
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
        if ((kinds[i].kind == CK_POOL && !o->pool) || (kinds[i].kind == CK_KMSG && o->skip_kmsg))
            continue;
        ctx[i] = calloc(1, sizeof(*ctx[i]));
        if (!ctx[i])
            return -ENOMEM;
        ctx[i]->kind = kinds[i].kind;
        ctx[i]->opts = *o;
        snprintf(ctx[i]->result.name, sizeof(ctx[i]->result.name), "%s", kinds[i].name);
        pthread_mutex_init(&ctx[i]->lock, NULL);
        started[i] = pthread_create(&th[i], NULL, check_thread, ctx[i]) == 0;
        if (!started[i])
            setf(&ctx[i]->result, HEALTH_FAIL, "cannot start check thread");
    }
    int timeout = o->timeout_ms;
    if (timeout <= 0) {
        const char *env = getenv("THINIMG_HEALTH_TIMEOUT_MS");
        timeout = env && atoi(env) > 0 ? atoi(env) : HEALTH_CHECK_TIMEOUT_MS;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout / 1000;
    deadline.tv_nsec += (timeout % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
        if (!ctx[i])
            continue;
        struct health_check *dst = &out->checks[out->n++];
        if (started[i] && pthread_timedjoin_np(th[i], NULL, &deadline) != 0) {
            pthread_mutex_lock(&ctx[i]->lock);
            bool done = ctx[i]->done;
            if (!done)
                ctx[i]->abandoned = true;
            pthread_mutex_unlock(&ctx[i]->lock);
            if (!done) {
                pthread_detach(th[i]);
                snprintf(dst->name, sizeof(dst->name), "%s", kinds[i].name);
                setf(dst, HEALTH_FAIL, "check timed out after %dms (the kernel may be stuck)",
                     timeout);
                dst->duration_ms = timeout;
                continue; /* the thread frees its context */
            }
            pthread_join(th[i], NULL);
        }
        *dst = ctx[i]->result;
        pthread_mutex_destroy(&ctx[i]->lock);
        free(ctx[i]);
    }
    out->overall = HEALTH_OK;
    for (size_t i = 0; i < out->n; i++)
        if (out->checks[i].level != HEALTH_SKIP && out->checks[i].level > out->overall)
            out->overall = out->checks[i].level;
    return 0;
}

void health_report_summary(const struct health_report *r, char *out, size_t n)
{
    out[0] = '\0';
    for (size_t i = 0; i < r->n; i++) {
        const struct health_check *c = &r->checks[i];
        if (c->level != HEALTH_FAIL && c->level != HEALTH_WARN)
            continue;
        appendf(out, n, "%s%s: %s", out[0] ? "; " : "", c->name, c->detail);
    }
    if (!out[0])
        snprintf(out, n, "healthy");
}
