/*
 * pool_autoextend.c: growing a filling pool before anything fails, and the watcher thread that
 * checks it; see pool_life.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dm/pool.h"
#include "dm/pool_life.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/timeutil.h"

#define MIB (1ull << 20)

static uint64_t round_up_to(uint64_t v, uint64_t unit)
{
    return unit ? (v + unit - 1) / unit * unit : v;
}

void pool_autoextend_plan(const struct pool_settings *s, uint64_t data_bytes, double data_pct,
                          uint64_t meta_bytes, double meta_pct, uint64_t block_bytes,
                          struct pool_autoextend_plan *out)
{
    memset(out, 0, sizeof(*out));
    double thr = s->autoextend_threshold_pct;
    if (thr <= 0)
        return;
    /* The step as a fraction of the current size: a percent, or bytes of data. */
    double frac = s->autoextend_step_pct > 0 ? s->autoextend_step_pct / 100.0
                  : data_bytes               ? (double)s->autoextend_step_bytes / (double)data_bytes
                                             : 0;
    out->data_over = data_pct >= thr;
    if (out->data_over) {
        uint64_t step = s->autoextend_step_pct > 0 ? (uint64_t)((double)data_bytes * frac)
                                                   : s->autoextend_step_bytes;
        uint64_t target = round_up_to(data_bytes + (step ? step : block_bytes), block_bytes);
        if (s->autoextend_max_bytes && target > s->autoextend_max_bytes)
            target = s->autoextend_max_bytes / block_bytes * block_bytes;
        if (target > data_bytes)
            out->data_target = target;
        else
            out->data_capped = true;
    }
    out->meta_over = meta_pct >= thr;
    if (out->meta_over) {
        uint64_t step = (uint64_t)((double)meta_bytes * frac);
        if (step < POOL_AUTOEXTEND_META_STEP_MIN)
            step = POOL_AUTOEXTEND_META_STEP_MIN;
        uint64_t target = round_up_to(meta_bytes + step, MIB);
        if (target > POOL_META_MAX)
            target = POOL_META_MAX / MIB * MIB;
        if (target > meta_bytes)
            out->meta_target = target;
        else
            out->meta_capped = true;
    }
}

/* ---- the note of a pool that cannot grow ------------------------------------------------- */

static pthread_mutex_t note_lock = PTHREAD_MUTEX_INITIALIZER;
static char note_pool[64];
static char note_text[512];
/* One autoextend at a time in a process: the watcher and a layer's check may meet. */
static pthread_mutex_t extend_lock = PTHREAD_MUTEX_INITIALIZER;

/* The policy and block size autoextend last read for note_pool: a refusal computes the cap
 * from the status it is given, so it says so even when the pool filled between two checks. */
static struct pool_settings note_settings;
static uint64_t note_block_bytes;

/* The refusal's words when the plan is capped; "" when it is not. */
static void cap_note(const char *pool, const struct pool_settings *s,
                     const struct pool_autoextend_plan *plan, const struct pool_status *st,
                     char *out, size_t n)
{
    out[0] = '\0';
    if (!plan->data_capped && !plan->meta_capped)
        return;
    char cap[32];
    format_bytes(plan->data_capped ? s->autoextend_max_bytes : POOL_META_MAX, cap, sizeof(cap));
    snprintf(out, n,
             "autoextend reached its cap: pool \"%s\" %s is %.1f%% used at %s, the most "
             "autoextend may grow it to (raise it with `thinimg pool set --autoextend-max SIZE`, "
             "or free space with `thinimg gc --force`)",
             pool, plan->data_capped ? "data" : "metadata",
             plan->data_capped ? pool_status_data_pct(st) : pool_status_meta_pct(st), cap);
}

void pool_autoextend_stuck_note(const char *pool, const struct pool_status *st, char *out, size_t n)
{
    pthread_mutex_lock(&note_lock);
    out[0] = '\0';
    if (!strcmp(note_pool, pool)) {
        struct pool_autoextend_plan plan;
        pool_autoextend_plan(&note_settings, st->data_total * note_block_bytes,
                             pool_status_data_pct(st), st->meta_total * POOL_META_BLOCK_BYTES,
                             pool_status_meta_pct(st), note_block_bytes, &plan);
        cap_note(pool, &note_settings, &plan, st, out, n);
        if (!out[0])
            snprintf(out, n, "%s", note_text);
    }
    pthread_mutex_unlock(&note_lock);
}

/* Remember the policy of a pool autoextend watches (see above). */
static void note_policy(const char *pool, const struct pool_settings *s, uint64_t block_bytes)
{
    pthread_mutex_lock(&note_lock);
    if (strcmp(note_pool, pool) != 0) {
        snprintf(note_pool, sizeof(note_pool), "%s", pool);
        note_text[0] = '\0';
    }
    note_settings = *s;
    note_block_bytes = block_bytes;
    pthread_mutex_unlock(&note_lock);
}

/* Set (or clear, with ""); true when it changed (a new episode is recorded once). */
static bool note_set(const char *pool, const char *text)
{
    pthread_mutex_lock(&note_lock);
    bool changed = strcmp(note_pool, pool) != 0 || strcmp(note_text, text) != 0;
    snprintf(note_pool, sizeof(note_pool), "%s", pool);
    snprintf(note_text, sizeof(note_text), "%s", text);
    pthread_mutex_unlock(&note_lock);
    return changed;
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

static int stuck(struct db *db, const char *pool, struct pool_autoextend_result *res,
                 const char *kind, int code, struct err *e)
{
    res->stuck = true;
    if (note_set(pool, res->note)) {
        log_warn("pool autoextend cannot grow the pool", "pool=%s why=\"%s\"", pool, res->note);
        record(db, pool, kind, false, res, res->note);
        metrics_counter_add("thinimg_pool_autoextend_total", 1, "result", kind, NULL);
    }
    return err_set(e, code, "%s", res->note);
}

static int autoextend_locked(struct db *db, const char *pool, struct pool_autoextend_result *res,
                             struct err *e)
{
    struct pool_settings s;
    int r = pool_settings_get(db, pool, &s);
    if (r < 0)
        return err_set(e, r, "cannot read the settings of pool \"%s\"", pool);
    res->enabled = s.autoextend_threshold_pct > 0;
    if (!res->enabled) {
        note_policy(pool, &s, 0); /* off: no cap to speak of */
        return 0;
    }
    struct pool_info info;
    struct err ge = {0};
    if (pool_get(NULL, pool, &info, &ge) < 0)
        return 0; /* not active (or no device-mapper): nothing to grow */
    const struct pool_status *st = &info.status;
    if (st->mode == POOL_MODE_FAIL || st->mode == POOL_MODE_ERROR || st->needs_check)
        return 0; /* the kernel will not grow it; the usability check says what to do */
    uint64_t block_bytes = info.table.block_sectors * DM_SECTOR_SIZE;
    uint64_t meta_bytes = st->meta_total * POOL_META_BLOCK_BYTES;
    res->data_before = res->data_after = info.length_sectors * DM_SECTOR_SIZE;
    res->meta_before = res->meta_after = meta_bytes;
    note_policy(pool, &s, block_bytes);
    struct pool_autoextend_plan plan;
    pool_autoextend_plan(&s, res->data_before, pool_status_data_pct(st), meta_bytes,
                         pool_status_meta_pct(st), block_bytes, &plan);
    if (!plan.data_target && !plan.meta_target) {
        cap_note(pool, &s, &plan, st, res->note, sizeof(res->note));
        if (res->note[0])
            return stuck(db, pool, res, "autoextend-capped", -ENOSPC, e);
        note_set(pool, "");
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
        return stuck(db, pool, res, "autoextend-no-room", -ENOSPC, e);
    }
    if (r < 0) { /* e.g. a pool on block devices: logged and recorded once, not every second */
        snprintf(res->note, sizeof(res->note), "autoextend cannot grow pool \"%s\": %s", pool,
                 err_str(&we));
        return stuck(db, pool, res, "autoextend-error", r, e);
    }
    res->grown = g.reloaded;
    res->data_after = g.data_after;
    res->meta_after = g.meta_after;
    note_set(pool, "");
    if (g.reloaded) {
        log_info("pool autoextended",
                 "pool=%s threshold=%.0f%% data_pct=%.1f meta_pct=%.1f data_bytes=%" PRIu64
                 "->%" PRIu64 " metadata_bytes=%" PRIu64 "->%" PRIu64,
                 pool, s.autoextend_threshold_pct, pool_status_data_pct(st),
                 pool_status_meta_pct(st), g.data_before, g.data_after, g.meta_before,
                 g.meta_after);
        metrics_counter_add("thinimg_pool_autoextend_total", 1, "result", "grown", NULL);
        if (g.data_after > g.data_before)
            metrics_counter_add("thinimg_pool_autoextend_bytes_total",
                                (double)(g.data_after - g.data_before), "what", "data", NULL);
        if (g.meta_after > g.meta_before)
            metrics_counter_add("thinimg_pool_autoextend_bytes_total",
                                (double)(g.meta_after - g.meta_before), "what", "metadata", NULL);
    }
    return 0;
}

int pool_autoextend(struct db *db, const char *pool, struct pool_autoextend_result *res,
                    struct err *e)
{
    memset(res, 0, sizeof(*res));
    pthread_mutex_lock(&extend_lock);
    int r = autoextend_locked(db, pool, res, e);
    pthread_mutex_unlock(&extend_lock);
    return r;
}

/* ---- the watcher ------------------------------------------------------------------------- */

struct pool_watch {
    struct db *db;
    char pool[128];
    int interval_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
};

static void *watch_loop(void *arg)
{
    struct pool_watch *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += w->interval_ms / 1000;
        ts.tv_nsec += (long)(w->interval_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->wake, &w->lock, &ts);
        if (w->stopping)
            break;
        pthread_mutex_unlock(&w->lock);
        struct pool_autoextend_result res;
        struct err e = {0};
        int r = pool_autoextend(w->db, w->pool, &res, &e);
        if (r < 0 && !res.stuck) /* a stuck pool is logged once per episode */
            log_warn("pool autoextend check failed", "pool=%s error=\"%s\"", w->pool, err_str(&e));
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* The /metrics families of the pool's life (the daemon serves the registry). */
static void describe_metrics(void)
{
    metrics_describe("thinimg_pool_autoextend_total", METRIC_COUNTER,
                     "Autoextend outcomes: grown, autoextend-capped, autoextend-no-room (once per "
                     "episode), error");
    metrics_describe("thinimg_pool_autoextend_bytes_total", METRIC_COUNTER,
                     "Bytes autoextend added to the pool, by what (data, metadata)");
    metrics_describe("thinimg_pool_metadata_backups_total", METRIC_COUNTER,
                     "Metadata backups (thin_dump of a metadata snapshot), by result");
}

int pool_watch_start(struct db *db, const char *pool, int interval_ms, struct pool_watch **out)
{
    describe_metrics();
    struct pool_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->db = db;
    snprintf(w->pool, sizeof(w->pool), "%s", pool);
    w->interval_ms = interval_ms > 0 ? interval_ms : POOL_WATCH_INTERVAL_MS;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &ca);
    pthread_condattr_destroy(&ca);
    int r = pthread_create(&w->thread, NULL, watch_loop, w);
    if (r != 0) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return -r;
    }
    *out = w;
    return 0;
}

void pool_watch_stop(struct pool_watch *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
