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
    /* the pool's disk: looked up until the pool exists, then measured or given up (noted) */
    enum { DISK_LOOKING = 0, DISK_MEASURED, DISK_NONE } disk_state;
    struct diskio_disk disk;
    struct diskio_meter meter;
    uint64_t last_disk_bytes, last_own_bytes;
    int64_t last_disk_mono; /* 0: no sample yet */
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

/* Stop measuring the disk, saying why once. */
static void disk_none(struct loadloop *l, const char *why, const char *what, int r)
{
    l->disk_state = DISK_NONE;
    log_info("queue sizing: foreign I/O is not measured; the I/O pressure rules apply as they are",
             "why=\"%s\" on=%s error=%s", why, what, strerror(-r));
}

/* Find the pool's disk once the pool exists. */
static void find_disk(struct loadloop *l)
{
    char path[4096];
    int r = l->o.src.pool_data ? l->o.src.pool_data(l->o.src.ud, path, sizeof(path)) : -ENOSYS;
    if (r == 0)
        return; /* no pool yet: look again next time */
    if (r < 0) {
        disk_none(l, "the pool's data cannot be located", "pool", r);
        return;
    }
    r = diskio_find(l->o.src.sys_root, path, &l->disk);
    if (r < 0) {
        disk_none(l, "no block device under the pool's data (tmpfs?)", path, r);
        return;
    }
    l->disk_state = DISK_MEASURED;
    log_info("queue sizing: foreign I/O measured on the pool's disk", "disk=%s data=%s",
             l->disk.name, path);
}

/* The disk's and thinimg's bytes per second in the last interval and the foreign share (the
 * first sample has no interval: disk stays false). */
static void sample_disk(struct loadloop *l, struct loadctl_signals *s)
{
    if (l->disk_state == DISK_LOOKING)
        find_disk(l);
    if (l->disk_state != DISK_MEASURED)
        return;
    uint64_t disk, own;
    int r = diskio_disk_bytes(l->o.src.proc_root, &l->disk, &disk);
    if (r < 0) {
        disk_none(l, "the disk has no line in diskstats", l->disk.name, r);
        return;
    }
    if ((r = diskio_own_bytes(l->o.src.proc_root, &own)) < 0) {
        disk_none(l, "thinimg's own I/O counters cannot be read", "self/io", r);
        return;
    }
    int64_t now = mono_ms();
    if (l->last_disk_mono && now > l->last_disk_mono) {
        uint64_t dd = disk > l->last_disk_bytes ? disk - l->last_disk_bytes : 0;
        uint64_t od = own > l->last_own_bytes ? own - l->last_own_bytes : 0;
        uint64_t fd = diskio_meter_step(&l->meter, dd, od);
        double secs = (double)(now - l->last_disk_mono) / 1000.0;
        s->disk = true;
        s->disk_bps = (double)dd / secs;
        s->own_bps = (double)od / secs;
        s->foreign_bps = (double)fd / secs;
    }
    l->last_disk_mono = now;
    l->last_disk_bytes = disk;
    l->last_own_bytes = own;
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
    sample_disk(l, &h->base);
    h->base.host_trouble = l->o.src.host_trouble &&
                           l->o.src.host_trouble(l->o.src.ud, h->host_why, sizeof(h->host_why));
    h->pool = l->o.src.pool_trouble &&
              l->o.src.pool_trouble(l->o.src.ud, h->pool_why, sizeof(h->pool_why));
}

/* A queue's signals from the host's. */
static struct loadctl_signals queue_signals(const struct host_sample *h)
{
    struct loadctl_signals s = h->base;
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

/* One debug line per sample: what the controllers saw (the bench reads it). */
static void log_sample(const struct loadctl_signals *s)
{
    const double mib = 1024.0 * 1024.0;
    log_debug("queue sizing sample",
              "io_some=%.1f io_some_now=%.1f io_full_now=%.1f disk_mibs=%.2f own_mibs=%.2f "
              "foreign_mibs=%.2f",
              s->io_some, s->io_some_now, s->io_full_now, s->disk_bps / mib, s->own_bps / mib,
              s->foreign_bps / mib);
}

void loadloop_tick(struct loadloop *l)
{
    struct host_sample h;
    sample_host(l, &h);
    int64_t now = mono_ms();
    pthread_mutex_lock(&l->lock);
    double secs = l->last_mono ? (double)(now - l->last_mono) / 1000.0 : 0;
    l->last_mono = now;
    log_sample(&h.base);
    for (int q = 0; q < LOADLOOP_N; q++) {
        struct loadctl_signals s = queue_signals(&h);
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
                 l->disk_state == DISK_MEASURED ? l->disk.name : "");
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
        struct loadctl_signals s = queue_signals(&first);
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
