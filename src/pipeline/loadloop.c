/*
 * loadloop.c: sampling the host and the queues, stepping the controllers. See loadloop.h.
 */
#include "pipeline/loadloop.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fsm/fsm.h"
#include "guard/diskio.h"
#include "guard/psi.h"
#include "util/log.h"
#include "util/timeutil.h"

/* Foreign I/O on one queue's disk: the disk is looked up (the pool's until the pool exists),
 * then measured or given up (said once). */
struct diskwatch {
    enum { DISK_LOOKING = 0, DISK_MEASURED, DISK_NONE } state;
    struct diskio_disk disk;
    struct diskio_meter meter;
    uint64_t last_disk_bytes, last_own_bytes;
    int64_t last_mono; /* 0: no sample yet */
    /* the last interval's rates: valid false before the second sample */
    bool valid;
    double disk_bps, own_bps, foreign_bps;
};

struct loadloop {
    struct loadloop_opts o;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
    struct loadctl ctl[LOADLOOP_N];
    struct loadloop_state st[LOADLOOP_N];
    uint64_t last_work[LOADLOOP_N];
    int64_t last_mono;
    /* I/O PSI total counters (microseconds) at the last sample, for the interval's own share */
    uint64_t last_io_some_us, last_io_full_us;
    int64_t last_psi_mono;
    /* each queue's disk (unpack: the pool's, fetch: the blob store's) */
    struct diskwatch dw[LOADLOOP_N];
};

const char *loadloop_queue_name(enum loadloop_queue q)
{
    return q == LOADLOOP_FETCH ? "fetch" : q == LOADLOOP_UNPACK ? "unpack" : "unknown";
}

int loadloop_default_max(enum loadloop_queue q)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    long m = q == LOADLOOP_UNPACK ? (cores < 4 ? cores : 4) : (2 * cores < 8 ? 2 * cores : 8);
    return (int)m;
}

/* Percent of the interval from a total counter's growth (0 when the counter went back). */
static double share(uint64_t now_us, uint64_t then_us, int64_t interval_ms)
{
    if (now_us < then_us)
        return 0;
    if (interval_ms < 1)
        interval_ms = 1; /* two samples within a millisecond (only when ticked by hand) */
    double pct = (double)(now_us - then_us) / ((double)interval_ms * 10.0);
    return pct > 100 ? 100 : pct;
}

/* The pressure signals of the last interval; psi false when the kernel has none. Keeps the
 * I/O totals for the next interval's own share (the first sample has none: 0). */
static void sample_psi(struct loadloop *l, struct loadctl_signals *s)
{
    struct psi io, mem;
    s->psi = psi_read(l->o.src.proc_root, PSI_IO, &io) == 0 &&
             psi_read(l->o.src.proc_root, PSI_MEMORY, &mem) == 0;
    if (!s->psi)
        return;
    s->io_some = io.some.avg10;
    s->io_full = io.full.present ? io.full.avg10 : 0;
    s->mem_full = mem.full.present ? mem.full.avg10 : 0;
    int64_t now = mono_ms();
    if (l->last_psi_mono) {
        s->io_some_now = share(io.some.total_us, l->last_io_some_us, now - l->last_psi_mono);
        s->io_full_now = io.full.present
                             ? share(io.full.total_us, l->last_io_full_us, now - l->last_psi_mono)
                             : 0;
    }
    l->last_psi_mono = now;
    l->last_io_some_us = io.some.total_us;
    l->last_io_full_us = io.full.total_us;
}

static const char *const disk_of[LOADLOOP_N] = {"the blob store's disk", "the pool's disk"};

/* Stop measuring queue q's disk, saying why once. */
static void disk_none(struct loadloop *l, int q, const char *why, const char *what, int r)
{
    l->dw[q].state = DISK_NONE;
    log_info("queue sizing: foreign I/O is not measured; the I/O pressure rules apply as they are",
             "queue=%s on=%s why=%s path=%s error=%s", loadloop_queue_name(q), disk_of[q], why,
             what, strerror(-r));
}

/* The path whose disk queue q watches: > 0 found, 0 not yet (no pool), negative errno. */
static int disk_path(struct loadloop *l, int q, char *path, size_t n)
{
    if (q == LOADLOOP_FETCH) {
        if (!l->o.src.store_dir)
            return -ENOSYS;
        snprintf(path, n, "%s", l->o.src.store_dir);
        return 1;
    }
    return l->o.src.pool_data ? l->o.src.pool_data(l->o.src.ud, path, n) : -ENOSYS;
}

/* Find queue q's disk (the pool's once the pool exists). */
static void find_disk(struct loadloop *l, int q)
{
    char path[4096];
    int r = disk_path(l, q, path, sizeof(path));
    if (r == 0)
        return; /* no pool yet: look again next time */
    if (r < 0) {
        disk_none(l, q,
                  q == LOADLOOP_FETCH ? "the blob store is not known"
                                      : "the pool's data cannot be located",
                  q == LOADLOOP_FETCH ? "store" : "pool", r);
        return;
    }
    r = diskio_find(l->o.src.sys_root, path, &l->dw[q].disk);
    if (r < 0) {
        disk_none(l, q, "no block device under it (tmpfs?)", path, r);
        return;
    }
    l->dw[q].state = DISK_MEASURED;
    log_info("queue sizing: foreign I/O measured", "queue=%s on=%s disk=%s path=%s",
             loadloop_queue_name(q), disk_of[q], l->dw[q].disk.name, path);
}

/* Queue q's disk's and thinimg's bytes per second in the last interval and the foreign share
 * (the first sample has no interval: valid stays false). own is thinimg's bytes on every disk:
 * the kernel does not split a process's I/O by disk, so where the store and the pool are on
 * two disks each is credited with all of it. */
static void sample_disk(struct loadloop *l, int q, bool have_own, uint64_t own)
{
    struct diskwatch *w = &l->dw[q];
    w->valid = false;
    if (w->state == DISK_LOOKING)
        find_disk(l, q);
    if (w->state != DISK_MEASURED)
        return;
    if (!have_own) {
        disk_none(l, q, "thinimg's own I/O counters cannot be read", "self/io", -EIO);
        return;
    }
    uint64_t disk;
    int r = diskio_disk_bytes(l->o.src.proc_root, &w->disk, &disk);
    if (r < 0) {
        disk_none(l, q, "the disk has no line in diskstats", w->disk.name, r);
        return;
    }
    int64_t now = mono_ms();
    if (w->last_mono && now > w->last_mono) {
        uint64_t dd = disk > w->last_disk_bytes ? disk - w->last_disk_bytes : 0;
        uint64_t od = own > w->last_own_bytes ? own - w->last_own_bytes : 0;
        uint64_t fd = diskio_meter_step(&w->meter, dd, od);
        double secs = (double)(now - w->last_mono) / 1000.0;
        w->valid = true;
        w->disk_bps = (double)dd / secs;
        w->own_bps = (double)od / secs;
        w->foreign_bps = (double)fd / secs;
    }
    w->last_mono = now;
    w->last_disk_bytes = disk;
    w->last_own_bytes = own;
}

static void sample_disks(struct loadloop *l)
{
    uint64_t own = 0;
    bool have_own = false, any = false;
    for (int q = 0; q < LOADLOOP_N; q++)
        any |= l->dw[q].state != DISK_NONE;
    if (any)
        have_own = diskio_own_bytes(l->o.src.proc_root, &own) == 0;
    for (int q = 0; q < LOADLOOP_N; q++)
        sample_disk(l, q, have_own, own);
}

/* The host's signals (PSI, the health verdict, the pool: whether each queue watches the pool is
 * the controller's business). */
struct host_sample {
    struct loadctl_signals base;
    bool pool;
    char host_why[128], pool_why[128];
};

static void sample_host(struct loadloop *l, struct host_sample *h)
{
    *h = (struct host_sample){0};
    sample_psi(l, &h->base);
    sample_disks(l);
    h->base.host_trouble = l->o.src.host_trouble &&
                           l->o.src.host_trouble(l->o.src.ud, h->host_why, sizeof(h->host_why));
    h->pool = l->o.src.pool_trouble &&
              l->o.src.pool_trouble(l->o.src.ud, h->pool_why, sizeof(h->pool_why));
}

/* Queue q's signals from the host's and its disk's. */
static struct loadctl_signals queue_signals(const struct loadloop *l, int q,
                                            const struct host_sample *h)
{
    struct loadctl_signals s = h->base;
    const struct diskwatch *w = &l->dw[q];
    if (w->valid) {
        s.disk = true;
        s.disk_what = disk_of[q];
        s.disk_bps = w->disk_bps;
        s.own_bps = w->own_bps;
        s.foreign_bps = w->foreign_bps;
    }
    s.pool_trouble = h->pool;
    s.trouble = h->base.host_trouble ? h->host_why : h->pool ? h->pool_why : NULL;
    return s;
}

static void log_change(struct loadloop *l, enum loadloop_queue q)
{
    l->st[q].limit = l->ctl[q].limit;
    snprintf(l->st[q].reason, sizeof(l->st[q].reason), "%s", l->ctl[q].reason);
    log_info("queue limit follows the load", "queue=%s limit=%d reason=%s", loadloop_queue_name(q),
             l->ctl[q].limit, l->ctl[q].reason);
}

/* One debug line per sample: what the controllers saw (the bench reads it): the pool's disk
 * (the unpack queue's), then the blob store's (the fetch queue's). */
static void log_sample(const struct loadloop *l, const struct loadctl_signals *s)
{
    const double mib = 1024.0 * 1024.0;
    const struct diskwatch *u = &l->dw[LOADLOOP_UNPACK], *f = &l->dw[LOADLOOP_FETCH];
    log_debug("queue sizing sample",
              "io_some=%.1f io_some_now=%.1f io_full_now=%.1f disk_mibs=%.2f own_mibs=%.2f "
              "foreign_mibs=%.2f store_disk_mibs=%.2f store_foreign_mibs=%.2f",
              s->io_some, s->io_some_now, s->io_full_now, u->valid ? u->disk_bps / mib : 0,
              u->valid ? u->own_bps / mib : 0, u->valid ? u->foreign_bps / mib : 0,
              f->valid ? f->disk_bps / mib : 0, f->valid ? f->foreign_bps / mib : 0);
}

void loadloop_tick(struct loadloop *l)
{
    struct host_sample h;
    sample_host(l, &h);
    int64_t now = mono_ms();
    pthread_mutex_lock(&l->lock);
    double secs = l->last_mono ? (double)(now - l->last_mono) / 1000.0 : 0;
    l->last_mono = now;
    log_sample(l, &h.base);
    for (int q = 0; q < LOADLOOP_N; q++) {
        struct loadctl_signals s = queue_signals(l, q, &h);
        struct fsm_queue_stats qs;
        if (fsm_queue_stats(l->o.mgr, loadloop_queue_name(q), &qs) < 0)
            continue;
        s.running = qs.running;
        s.waiting = qs.waiting;
        s.throughput = secs > 0 ? (double)(qs.work_done - l->last_work[q]) / secs : 0;
        l->last_work[q] = qs.work_done;
        l->st[q].last = s;
        l->st[q].last.trouble = NULL;
        snprintf(l->st[q].disk, sizeof(l->st[q].disk), "%s",
                 l->dw[q].state == DISK_MEASURED ? l->dw[q].disk.name : "");
        if (l->st[q].pinned)
            continue;
        enum loadctl_change ch = loadctl_step(&l->ctl[q], &s);
        if (l->ctl[q].note[0]) {
            log_info("queue sizing", "queue=%s note=%s", loadloop_queue_name(q), l->ctl[q].note);
            l->ctl[q].note[0] = '\0';
        }
        if (ch == LOADCTL_SAME)
            continue;
        log_change(l, q);
        fsm_queue_set_limit(l->o.mgr, loadloop_queue_name(q), l->ctl[q].limit);
    }
    pthread_mutex_unlock(&l->lock);
}

static void *loop(void *arg)
{
    struct loadloop *l = arg;
    int interval = l->o.interval_ms > 0 ? l->o.interval_ms : LOADCTL_INTERVAL_MS;
    pthread_mutex_lock(&l->lock);
    while (!l->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += interval / 1000;
        ts.tv_nsec += (long)(interval % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&l->wake, &l->lock, &ts);
        if (l->stopping)
            break;
        pthread_mutex_unlock(&l->lock);
        loadloop_tick(l);
        pthread_mutex_lock(&l->lock);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

int loadloop_start(const struct loadloop_opts *o, struct loadloop **out)
{
    struct loadloop *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->o = *o;
    pthread_mutex_init(&l->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->wake, &ca);
    pthread_condattr_destroy(&ca);
    /* The signals as they are at start: status shows the pressure before the first interval
     * has passed, the first step measures throughput from here, and a calm host starts each
     * queue at its maximum (loadctl_begin). */
    struct host_sample first;
    sample_host(l, &first);
    l->last_mono = mono_ms();
    for (int q = 0; q < LOADLOOP_N; q++) {
        int max = o->max[q] > 0 ? o->max[q] : loadloop_default_max(q);
        struct loadctl_params p = loadctl_defaults(max, q == LOADLOOP_UNPACK);
        l->st[q].max = max;
        l->st[q].pinned = o->pinned[q] > 0;
        struct fsm_queue_stats qs;
        bool have = fsm_queue_stats(o->mgr, loadloop_queue_name(q), &qs) == 0;
        int start = have ? qs.limit : 1;
        struct loadctl_signals s = queue_signals(l, q, &first);
        if (have) {
            s.running = qs.running;
            s.waiting = qs.waiting;
        }
        l->st[q].last = s;
        l->st[q].last.trouble = NULL;
        if (have)
            l->last_work[q] = qs.work_done;
        if (o->pinned[q] > 0)
            start = o->pinned[q];
        loadctl_init(&l->ctl[q], &p, start);
        if (!l->st[q].pinned && loadctl_begin(&l->ctl[q], &s) != LOADCTL_SAME)
            log_change(l, q); /* the queue's limit is set below: it differs from start */
        /* A pinned queue runs at the operator's limit even above the maximum the controller
         * would use: report that, not the controller's clamped view. */
        l->st[q].limit = o->pinned[q] > 0 ? o->pinned[q] : l->ctl[q].limit;
        if (l->st[q].limit > l->st[q].max)
            l->st[q].max = l->st[q].limit;
        if (!l->st[q].pinned && l->ctl[q].limit != start)
            fsm_queue_set_limit(o->mgr, loadloop_queue_name(q), l->ctl[q].limit);
    }
    int r = pthread_create(&l->thread, NULL, loop, l);
    if (r != 0) {
        loadloop_stop(l);
        return -r;
    }
    l->started = true;
    *out = l;
    return 0;
}

void loadloop_stop(struct loadloop *l)
{
    if (!l)
        return;
    if (l->started) {
        pthread_mutex_lock(&l->lock);
        l->stopping = true;
        pthread_cond_signal(&l->wake);
        pthread_mutex_unlock(&l->lock);
        pthread_join(l->thread, NULL);
    }
    pthread_cond_destroy(&l->wake);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

void loadloop_get(struct loadloop *l, enum loadloop_queue q, struct loadloop_state *out)
{
    pthread_mutex_lock(&l->lock);
    *out = l->st[q];
    pthread_mutex_unlock(&l->lock);
}
