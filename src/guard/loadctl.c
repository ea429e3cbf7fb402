/*
 * loadctl.c: the queue-limit controller. See loadctl.h for the rule.
 */
#include "guard/loadctl.h"

#include <stdio.h>

struct loadctl_params loadctl_defaults(int max, bool watch_pool)
{
    return (struct loadctl_params){
        .max = max < 1 ? 1 : max,
        .watch_pool = watch_pool,
        /* I/O "some" above 40% of the time means the disk is the bottleneck and more writers
         * only queue behind each other; under 10% it has room. The 10..40 band is where the
         * limit stays put. */
        .some_low = 10.0,
        .some_high = 40.0,
        /* An interval's own share is not smoothed, so it needs no margin for avg10's lag:
         * a quarter of each of now_ticks intervals in a row is a competing writer, not a
         * burst (one O_DIRECT writer beside the unpacks holds it near 30%, docs/safety.md). */
        .some_now_high = 25.0,
        /* "full" stalls stop every task: 10% of the time is already felt by the VMs. */
        .full_high = 10.0,
        .mem_full_high = 5.0,
        /* 3 calm intervals (6 s) before +1, judged after 3 more (the first skipped: the new
         * worker is still starting). */
        .calm_ticks = 3,
        .probe_ticks = 3,
        .gain_min = 0.10,
        .drop_ratio = 0.5,
        /* 30 s without raises after a decrease: avg10 needs ~10 s to show the relief. */
        .hold_ticks = 15,
        /* The last interval's own I/O share counts when two intervals in a row (4 s) pass a
         * high threshold: a hog starting is acted on in 4 to 6 s rather than the 10 s or more
         * avg10 needs to climb, and one busy interval (a journal commit, an fsync) is not
         * trouble. */
        .now_ticks = 2,
        /* A competing writer moves tens of MiB/s (the bench's dd); a logging daemon or the
         * bench's samplers, kilobytes. 4 MiB/s beyond thinimg's credited own bytes is someone
         * else's bulk I/O. */
        .foreign_min_bps = 4.0 * 1024 * 1024,
        /* With foreign I/O on the measured disk the stalls are known to be shared with someone
         * else, so a lower line than some_low counts: on a disk with room a dd moving 70 to 145
         * MiB/s stalled tasks only 4 to 9% of each interval (docs/safety.md, the 21:10 boot),
         * where some_low let the queue sit at 4 beside it for up to 22 s. */
        .some_foreign = 5.0,
    };
}

void loadctl_init(struct loadctl *c, const struct loadctl_params *p, int start)
{
    *c = (struct loadctl){.p = *p};
    c->limit = start < 1 ? 1 : start > p->max ? p->max : start;
}

static enum loadctl_change set_limit(struct loadctl *c, int limit, const char *why)
{
    if (limit < 1)
        limit = 1;
    if (limit > c->p.max)
        limit = c->p.max;
    enum loadctl_change ch = limit > c->limit   ? LOADCTL_UP
                             : limit < c->limit ? LOADCTL_DOWN
                                                : LOADCTL_SAME;
    if (ch != LOADCTL_SAME)
        snprintf(c->reason, sizeof(c->reason), "%d -> %d: %s", c->limit, limit, why);
    c->limit = limit;
    return ch;
}

/* Lower to limit and hold; forget the probe and the calm streaks. */
static enum loadctl_change decrease(struct loadctl *c, int limit, const char *why)
{
    c->calm = c->idle_calm = c->idle_busy = c->base_n = 0;
    c->base_sum = 0;
    c->probe = 0;
    c->hold = c->p.hold_ticks;
    c->per_worker = 0;
    return set_limit(c, limit, why);
}

/* The disk is measured and nobody else moves bulk bytes on it: its `some` stalls are the
 * queue's own work (they keep no raise back). With the disk measured, `some` stalls lower the
 * limit only with foreign I/O (foreign_pressure): the halving rules on `some` are for hosts
 * where whose I/O it is cannot be told. */
static bool own_pressure(const struct loadctl *c, const struct loadctl_signals *s)
{
    return s->disk && s->foreign_bps < c->p.foreign_min_bps;
}

/* The `some` line under which a host is calm: some_low, or some_foreign where the disk is
 * measured and someone else moves bulk bytes on it. */
static double some_line(const struct loadctl *c, const struct loadctl_signals *s)
{
    return s->disk && s->foreign_bps >= c->p.foreign_min_bps ? c->p.some_foreign : c->p.some_low;
}

/* Foreign I/O while some task stalls on I/O: a competing user the queue slows down. */
static bool foreign_pressure(const struct loadctl *c, const struct loadctl_signals *s)
{
    return s->psi && s->disk && s->foreign_bps >= c->p.foreign_min_bps &&
           (s->io_some >= c->p.some_foreign || s->io_some_now >= c->p.some_foreign);
}

/* The trouble that halves the limit (*to_one: that puts it at 1), or NULL. */
static const char *trouble(const struct loadctl *c, const struct loadctl_signals *s, char *buf,
                           size_t n, bool *to_one)
{
    *to_one = false;
    if (s->host_trouble) {
        snprintf(buf, n, "host trouble (%s)", s->trouble ? s->trouble : "health check");
        return buf;
    }
    if (c->p.watch_pool && s->pool_trouble) {
        snprintf(buf, n, "pool trouble (%s)", s->trouble ? s->trouble : "pool status");
        return buf;
    }
    if (c->foreign >= c->p.now_ticks) {
        *to_one = true;
        snprintf(buf, n,
                 "foreign I/O: %.1f MiB/s on %s beside thinimg's %.1f MiB/s for %d "
                 "s, tasks stalled %.1f%% of the last interval",
                 s->foreign_bps / (1024 * 1024), s->disk_what ? s->disk_what : "its disk",
                 s->own_bps / (1024 * 1024), c->p.now_ticks * LOADCTL_INTERVAL_MS / 1000,
                 s->io_some_now);
        return buf;
    }
    if (s->psi && s->io_full > c->p.full_high) {
        snprintf(buf, n, "I/O pressure: all tasks stalled %.1f%% of the time", s->io_full);
        return buf;
    }
    if (s->psi && !s->disk && s->io_some > c->p.some_high) {
        snprintf(buf, n, "I/O pressure: tasks stalled %.1f%% of the time", s->io_some);
        return buf;
    }
    if (s->psi && c->hot >= c->p.now_ticks) {
        snprintf(buf, n, "I/O pressure: %s tasks stalled %.1f%% of the last %d s",
                 s->io_full_now > c->p.full_high ? "all" : "some",
                 s->io_full_now > c->p.full_high ? s->io_full_now : s->io_some_now,
                 c->p.now_ticks * LOADCTL_INTERVAL_MS / 1000);
        return buf;
    }
    if (s->psi && s->mem_full > c->p.mem_full_high) {
        snprintf(buf, n, "memory pressure: all tasks stalled %.1f%% of the time", s->mem_full);
        return buf;
    }
    if (c->per_worker > 0 && s->running >= c->limit && s->running > 0 &&
        s->throughput / s->running < c->per_worker * c->p.drop_ratio) {
        snprintf(buf, n, "throughput per worker fell to %.0f%% of its level",
                 100.0 * s->throughput / s->running / c->per_worker);
        return buf;
    }
    return NULL;
}

static bool calm(const struct loadctl *c, const struct loadctl_signals *s)
{
    return !s->psi || ((own_pressure(c, s) || s->io_some < some_line(c, s)) &&
                       s->mem_full < c->p.mem_full_high / 2);
}

bool loadctl_calm(const struct loadctl *c, const struct loadctl_signals *s)
{
    double line = some_line(c, s);
    bool some_ok = own_pressure(c, s) || (s->io_some < line && s->io_some_now < line);
    return s->psi && !s->host_trouble && !(c->p.watch_pool && s->pool_trouble) && some_ok &&
           s->io_full < c->p.full_high / 2 && s->io_full_now < c->p.full_high / 2 &&
           s->mem_full < c->p.mem_full_high / 2;
}

/* Jump to the maximum: nothing to probe against, so the throughput rule waits for a probe. */
static enum loadctl_change to_max(struct loadctl *c, const char *why)
{
    c->calm = c->idle_calm = c->idle_busy = c->base_n = 0;
    c->base_sum = 0;
    c->probe = 0;
    c->per_worker = 0;
    return set_limit(c, c->p.max, why);
}

/* An idle queue (no trouble, no probe running): its limit is where the next work starts. A
 * host that is not calm for calm_ticks intervals in a row puts it at 1 (a decrease: not held);
 * a calm one for as long, once any hold is over, at the maximum. Without PSI an idle host
 * looks the same busy or not: nothing moves. */
static enum loadctl_change idle_step(struct loadctl *c, const struct loadctl_signals *s)
{
    c->calm = c->base_n = 0;
    c->base_sum = 0;
    if (!s->psi)
        return LOADCTL_SAME;
    if (!loadctl_calm(c, s)) {
        c->idle_calm = 0;
        if (c->limit > 1 && ++c->idle_busy >= c->p.calm_ticks) {
            char why[128];
            snprintf(why, sizeof(why),
                     "idle on a host that is not calm (I/O some %.1f%%, %.1f%% of the last "
                     "interval): the next work starts at 1",
                     s->io_some, s->io_some_now);
            return decrease(c, 1, why);
        }
        if (c->hold > 0)
            c->hold--;
        return LOADCTL_SAME;
    }
    c->idle_busy = 0;
    if (c->hold > 0) {
        c->hold--;
        return LOADCTL_SAME;
    }
    if (c->limit < c->p.max && ++c->idle_calm >= c->p.calm_ticks)
        return to_max(c, "idle on a calm host: the next work starts at the maximum");
    return LOADCTL_SAME;
}

enum loadctl_change loadctl_begin(struct loadctl *c, const struct loadctl_signals *s)
{
    if (c->limit >= c->p.max || !loadctl_calm(c, s))
        return LOADCTL_SAME;
    return to_max(c, "calm at start: the first work runs at the maximum");
}

enum loadctl_change loadctl_step(struct loadctl *c, const struct loadctl_signals *s)
{
    if (!s->psi && !c->psi_noted) {
        c->psi_noted = true;
        snprintf(c->note, sizeof(c->note),
                 "no pressure stall information (PSI) in this kernel: the queue limit follows "
                 "the health checks, the pool and throughput only");
    }
    bool hot = s->psi && (s->io_full_now > c->p.full_high ||
                          (!s->disk && s->io_some_now > c->p.some_now_high));
    c->hot = hot ? c->hot + 1 : 0;
    c->foreign = foreign_pressure(c, s) ? c->foreign + 1 : 0;
    bool idle = s->running == 0 && s->waiting == 0;
    if (!idle)
        c->idle_calm = c->idle_busy = 0;
    char why[160];
    bool to_one;
    const char *t = trouble(c, s, why, sizeof(why), &to_one);
    if (t) {
        /* An idle queue's limit is only where its next work starts: 1 at once. */
        if (c->limit > 1)
            return decrease(c, idle || to_one ? 1 : c->limit / 2, t);
        c->idle_calm = c->idle_busy = 0;
        c->hold = c->p.hold_ticks;
        return LOADCTL_SAME;
    }

    if (c->probe > 0) {
        /* The first interval of a probe is skipped: the new worker is still starting. */
        if (c->probe < c->p.probe_ticks) {
            c->probe_sum += s->throughput;
            c->probe_n++;
        }
        if (--c->probe > 0)
            return LOADCTL_SAME;
        double after = c->probe_n ? c->probe_sum / c->probe_n : 0;
        if (after < c->base * (1 + c->p.gain_min)) {
            c->hold = c->p.hold_ticks;
            snprintf(why, sizeof(why), "the raise added no throughput (%.0f%% of before)",
                     c->base > 0 ? 100.0 * after / c->base : 0.0);
            c->per_worker = c->limit > 1 ? c->base / (c->limit - 1) : 0;
            return set_limit(c, c->limit - 1, why);
        }
        c->per_worker = after / c->limit;
        return LOADCTL_SAME;
    }
    if (idle)
        return idle_step(c, s);
    if (c->hold > 0) {
        c->hold--;
        return LOADCTL_SAME;
    }
    if (s->waiting > 0 && s->running >= c->limit && c->limit < c->p.max && calm(c, s)) {
        c->base_sum += s->throughput;
        c->base_n++;
        if (++c->calm < c->p.calm_ticks)
            return LOADCTL_SAME;
        c->base = c->base_sum / c->base_n;
        c->calm = c->base_n = 0;
        c->base_sum = 0;
        c->probe = c->p.probe_ticks;
        c->probe_sum = 0;
        c->probe_n = 0;
        return set_limit(c, c->limit + 1, "low pressure and work waiting");
    }
    c->calm = c->base_n = 0;
    c->base_sum = 0;
    return LOADCTL_SAME;
}
