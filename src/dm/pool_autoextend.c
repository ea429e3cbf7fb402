/*
 * pool_autoextend.c: growing a filling pool before anything fails, and the watcher that checks
 * it on the pool's device-mapper events and on a slow poll; see pool_life.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dm/pool.h"
#include "dm/pool_life.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/timeutil.h"

/* One autoextend at a time in a process: the watcher and a layer's check may meet. */
static pthread_mutex_t extend_lock = PTHREAD_MUTEX_INITIALIZER;

/* The /metrics label of a trigger. */
static const char *trigger_label(enum pool_autoextend_trigger t)
{
    return t == POOL_TRIGGER_EVENT ? "event" : t == POOL_TRIGGER_POLL ? "poll" : "layer";
}

/* What the log names as the trigger (see struct pool_autoextend_result): for an event, which
 * of the kernel's reasons the status shows. */
static void trigger_name(enum pool_autoextend_trigger t, const struct pool_info *info, char *out,
                         size_t n)
{
    const struct pool_status *st = &info->status;
    if (t != POOL_TRIGGER_EVENT)
        snprintf(out, n, "%s", trigger_label(t));
    else if (st->data_total - st->data_used <= info->table.low_water_blocks)
        snprintf(out, n, "low-water event");
    else if (st->has_low_watermark && st->meta_total - st->meta_used <= st->meta_low_watermark)
        snprintf(out, n, "metadata low-water event");
    else
        snprintf(out, n, "pool event");
}

static void record(struct db *db, const char *pool, const char *kind, bool ok,
                   const struct pool_autoextend_result *res, const char *detail)
{
    struct pool_event ev = {.ok = ok,
                            .data_before = res->data_before,
                            .data_after = res->data_after,
                            .meta_before = res->meta_before,
                            .meta_after = res->meta_after};
    snprintf(ev.kind, sizeof(ev.kind), "%s", kind);
    snprintf(ev.detail, sizeof(ev.detail), "%s", detail);
    if (pool_event_add(db, pool, &ev) < 0)
        log_warn("cannot record a pool event", "pool=%s kind=%s", pool, kind);
}

static int stuck(struct db *db, const char *pool, enum pool_autoextend_trigger trigger,
                 struct pool_autoextend_result *res, const char *kind, int code, struct err *e)
{
    res->stuck = true;
    if (pool_autoextend_note_set(pool, res->note)) {
        log_warn("pool autoextend cannot grow the pool", "pool=%s trigger=%s why=\"%s\"", pool,
                 res->trigger, res->note);
        record(db, pool, kind, false, res, res->note);
        metrics_counter_add("thinimg_pool_autoextend_total", 1, "result", kind, "trigger",
                            trigger_label(trigger), NULL);
    }
    return err_set(e, code, "%s", res->note);
}

static int autoextend_locked(struct db *db, const char *pool, enum pool_autoextend_trigger trigger,
                             struct pool_autoextend_result *res, struct err *e)
{
    struct pool_settings s;
    int r = pool_settings_get(db, pool, &s);
    if (r < 0)
        return err_set(e, r, "cannot read the settings of pool \"%s\"", pool);
    res->enabled = s.autoextend_threshold_pct > 0;
    if (!res->enabled) {
        pool_autoextend_note_policy(pool, &s, 0); /* off: no cap to speak of */
        return 0;
    }
    struct pool_info info;
    struct err ge = {0};
    if (pool_get(NULL, pool, &info, &ge) < 0)
        return 0; /* not active (or no device-mapper): nothing to grow */
    const struct pool_status *st = &info.status;
    trigger_name(trigger, &info, res->trigger, sizeof(res->trigger));
    if (st->mode == POOL_MODE_FAIL || st->mode == POOL_MODE_ERROR || st->needs_check)
        return 0; /* the kernel will not grow it; the usability check says what to do */
    uint64_t block_bytes = info.table.block_sectors * DM_SECTOR_SIZE;
    uint64_t meta_bytes = st->meta_total * POOL_META_BLOCK_BYTES;
    res->data_before = res->data_after = info.length_sectors * DM_SECTOR_SIZE;
    res->meta_before = res->meta_after = meta_bytes;
    pool_autoextend_note_policy(pool, &s, block_bytes);
    struct pool_autoextend_plan plan;
    pool_autoextend_plan(&s, res->data_before, pool_status_data_pct(st), meta_bytes,
                         pool_status_meta_pct(st), block_bytes, &plan);
    if (!plan.data_target && !plan.meta_target) {
        pool_autoextend_cap_note(pool, &s, &plan, st, res->note, sizeof(res->note));
        if (res->note[0])
            return stuck(db, pool, trigger, res, "autoextend-capped", -ENOSPC, e);
        pool_autoextend_note_set(pool, "");
        return 0;
    }
    struct pool_grow_request rq = {.reason = "autoextend"};
    if (plan.data_target)
        rq.data = (struct pool_size_arg){.set = true, .bytes = plan.data_target};
    if (plan.meta_target)
        rq.metadata = (struct pool_size_arg){.set = true, .bytes = plan.meta_target};
    struct pool_grow_result g;
    struct err we = {0};
    r = pool_grow(db, pool, &rq, &g, &we);
    if (r == -ENOSPC) {
        snprintf(res->note, sizeof(res->note),
                 "autoextend cannot grow pool \"%s\" (data %.1f%%, metadata %.1f%% used): the "
                 "backing file system has no room beyond its reserve: %s",
                 pool, pool_status_data_pct(st), pool_status_meta_pct(st), err_str(&we));
        return stuck(db, pool, trigger, res, "autoextend-no-room", -ENOSPC, e);
    }
    if (r < 0) { /* e.g. a pool on block devices: logged and recorded once, not every second */
        snprintf(res->note, sizeof(res->note), "autoextend cannot grow pool \"%s\": %s", pool,
                 err_str(&we));
        return stuck(db, pool, trigger, res, "autoextend-error", r, e);
    }
    res->grown = g.reloaded;
    res->data_after = g.data_after;
    res->meta_after = g.meta_after;
    pool_autoextend_note_set(pool, "");
    if (g.reloaded) {
        log_info("pool autoextended",
                 "pool=%s trigger=%s threshold=%.0f%% data_pct=%.1f meta_pct=%.1f "
                 "data_bytes=%" PRIu64 "->%" PRIu64 " metadata_bytes=%" PRIu64 "->%" PRIu64
                 " low_water_blocks=%" PRIu64 "->%" PRIu64,
                 pool, res->trigger, s.autoextend_threshold_pct, pool_status_data_pct(st),
                 pool_status_meta_pct(st), g.data_before, g.data_after, g.meta_before, g.meta_after,
                 g.low_water_before, g.low_water_after);
        metrics_counter_add("thinimg_pool_autoextend_total", 1, "result", "grown", "trigger",
                            trigger_label(trigger), NULL);
        if (g.data_after > g.data_before)
            metrics_counter_add("thinimg_pool_autoextend_bytes_total",
                                (double)(g.data_after - g.data_before), "what", "data", NULL);
        if (g.meta_after > g.meta_before)
            metrics_counter_add("thinimg_pool_autoextend_bytes_total",
                                (double)(g.meta_after - g.meta_before), "what", "metadata", NULL);
    }
    return 0;
}

int pool_autoextend(struct db *db, const char *pool, enum pool_autoextend_trigger trigger,
                    struct pool_autoextend_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    snprintf(res->trigger, sizeof(res->trigger), "%s", trigger_label(trigger));
    pthread_mutex_lock(&extend_lock);
    int r = autoextend_locked(db, pool, trigger, res, e);
    pthread_mutex_unlock(&extend_lock);
    return r;
}

/* ---- the watcher ------------------------------------------------------------------------- */

struct pool_watch {
    struct db *db;
    char pool[DM_NAME_MAX + 1];
    int poll_ms;
    pthread_t checker, waiter;
    bool waiter_started;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* broadcast: stopping, an event, the waiter's exit */
    bool stopping;
    bool event_pending; /* the waiter saw an event the checker has not checked yet */
    bool waiter_done;
};

/* The poll interval: the caller's, else THINIMG_POOL_POLL_MS when it is a number in range,
 * else POOL_WATCH_POLL_MS. */
static int poll_interval_ms(int asked)
{
    if (asked > 0)
        return asked;
    const char *v = getenv(POOL_WATCH_POLL_ENV);
    if (!v || !*v)
        return POOL_WATCH_POLL_MS;
    char *end = NULL;
    long ms = strtol(v, &end, 10);
    if (*end || ms < POOL_WATCH_POLL_MIN_MS || ms > POOL_WATCH_POLL_MAX_MS) {
        log_warn(POOL_WATCH_POLL_ENV " ignored: not a number of milliseconds in range",
                 "value=%s min=%d max=%d default=%d", v, POOL_WATCH_POLL_MIN_MS,
                 POOL_WATCH_POLL_MAX_MS, POOL_WATCH_POLL_MS);
        return POOL_WATCH_POLL_MS;
    }
    return (int)ms;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* The checking thread: pool_autoextend() on every event the waiter reports, and every poll_ms
 * without one. */
static void *check_loop(void *arg)
{
    struct pool_watch *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        struct timespec until;
        deadline_in(&until, w->poll_ms);
        int tr = 0;
        while (!w->stopping && !w->event_pending && tr != ETIMEDOUT)
            tr = pthread_cond_timedwait(&w->wake, &w->lock, &until);
        if (w->stopping)
            break;
        enum pool_autoextend_trigger trigger =
            w->event_pending ? POOL_TRIGGER_EVENT : POOL_TRIGGER_POLL;
        w->event_pending = false;
        pthread_mutex_unlock(&w->lock);
        struct pool_autoextend_result res;
        struct err e = {0};
        int r = pool_autoextend(w->db, w->pool, trigger, &res, &e);
        if (r < 0 && !res.stuck) /* a stuck pool is logged once per episode */
            log_warn("pool autoextend check failed", "pool=%s trigger=%s error=\"%s\"", w->pool,
                     res.trigger, err_str(&e));
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void on_wake_signal(int sig)
{
    (void)sig; /* only there to interrupt the wait (EINTR) */
}

void pool_watch_claim_signal(void)
{
    sigset_t wake;
    sigemptyset(&wake);
    sigaddset(&wake, POOL_WATCH_WAKE_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &wake, NULL);
}

static void install_wake_handler(void)
{
    struct sigaction sa = {.sa_handler = on_wake_signal}; /* no SA_RESTART: the ioctl returns */
    sigemptyset(&sa.sa_mask);
    sigaction(POOL_WATCH_WAKE_SIGNAL, &sa, NULL);
}

/* Sleep up to ms unless stopping. Caller holds the lock. */
static void pause_locked(struct pool_watch *w, int ms)
{
    struct timespec until;
    deadline_in(&until, ms);
    int tr = 0;
    while (!w->stopping && tr != ETIMEDOUT)
        tr = pthread_cond_timedwait(&w->wake, &w->lock, &until);
}

/* The waiting thread: the pool's event counter, then a blocking wait for it to change; each
 * change wakes the checker. A pool that is not active, or a wait that fails (a kernel or a
 * sandbox without it), is asked again after POOL_WATCH_EVENT_RETRY_MS: the poll covers it
 * meanwhile. The wake signal is unblocked only around the wait. */
static void *wait_loop(void *arg)
{
    struct pool_watch *w = arg;
    sigset_t wake;
    sigemptyset(&wake);
    sigaddset(&wake, POOL_WATCH_WAKE_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &wake, NULL);
    uint32_t event_nr = 0;
    bool have_nr = false, said = false;
    /* No device-mapper here (or not root): nothing to wait for, and nothing to say. */
    struct err de = {0};
    bool no_dm = dm_available(&de) < 0;
    if (no_dm)
        log_debug("no pool events to wait for", "pool=%s why=%s", w->pool, err_str(&de));
    pthread_mutex_lock(&w->lock);
    while (!w->stopping && !no_dm) {
        pthread_mutex_unlock(&w->lock);
        int r = 0;
        struct err e = {0};
        if (!have_nr) {
            struct dm_dev_info di;
            r = dm_dev_info(w->pool, &di, &e);
            if (r == 0 && !di.exists)
                r = -ENXIO;
            have_nr = r == 0;
            event_nr = di.event_nr;
        }
        if (have_nr) {
            pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
            r = dm_dev_wait_event(w->pool, &event_nr, &e);
            pthread_sigmask(SIG_BLOCK, &wake, NULL);
        }
        pthread_mutex_lock(&w->lock);
        if (r == 0) {
            w->event_pending = true;
            pthread_cond_broadcast(&w->wake);
        } else if (r != -EINTR) {
            if (r != -ENXIO && !said) /* once: the poll goes on watching */
                log_warn("cannot wait for the pool's device-mapper events; autoextend polls "
                         "every few seconds instead",
                         "pool=%s error=%s poll_ms=%d", w->pool, err_str(&e), w->poll_ms);
            said = said || r != -ENXIO;
            have_nr = false;
            pause_locked(w, POOL_WATCH_EVENT_RETRY_MS);
        }
    }
    w->waiter_done = true;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* The /metrics families of the pool's life (the daemon serves the registry). */
static void describe_metrics(void)
{
    metrics_describe("thinimg_pool_autoextend_total", METRIC_COUNTER,
                     "Autoextend outcomes by result (grown; autoextend-capped, -no-room, -error "
                     "once per episode) and trigger (event: the pool's low-water or other "
                     "device-mapper event; poll: the watcher's fallback poll; layer: the check "
                     "before a layer)");
    metrics_describe("thinimg_pool_autoextend_bytes_total", METRIC_COUNTER,
                     "Bytes autoextend added to the pool, by what (data, metadata)");
    metrics_describe("thinimg_pool_metadata_backups_total", METRIC_COUNTER,
                     "Metadata backups (thin_dump of a metadata snapshot), by result");
}

int pool_watch_start(struct db *db, const char *pool, int poll_ms, struct pool_watch **out)
{
    describe_metrics();
    static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
    pthread_once(&handler_once, install_wake_handler);
    struct pool_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->db = db;
    snprintf(w->pool, sizeof(w->pool), "%s", pool);
    w->poll_ms = poll_interval_ms(poll_ms);
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &ca);
    pthread_condattr_destroy(&ca);
    int r = pthread_create(&w->checker, NULL, check_loop, w);
    if (r != 0) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return -r;
    }
    /* Without the waiter the poll still watches: slower, never wrong. */
    w->waiter_started = pthread_create(&w->waiter, NULL, wait_loop, w) == 0;
    if (!w->waiter_started)
        log_warn("cannot start the pool event thread; autoextend polls only", "pool=%s poll_ms=%d",
                 pool, w->poll_ms);
    log_debug("pool watcher started", "pool=%s poll_ms=%d events=%d", pool, w->poll_ms,
              w->waiter_started);
    *out = w;
    return 0;
}

void pool_watch_stop(struct pool_watch *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->wake);
    /* Interrupt the waiter's blocking wait, again until it has left (see
     * POOL_WATCH_STOP_RESEND_MS). */
    while (w->waiter_started && !w->waiter_done) {
        pthread_kill(w->waiter, POOL_WATCH_WAKE_SIGNAL);
        struct timespec until;
        deadline_in(&until, POOL_WATCH_STOP_RESEND_MS);
        pthread_cond_timedwait(&w->wake, &w->lock, &until);
    }
    pthread_mutex_unlock(&w->lock);
    if (w->waiter_started)
        pthread_join(w->waiter, NULL);
    pthread_join(w->checker, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
