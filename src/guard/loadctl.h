/*
 * loadctl.h: a queue limit that follows the host's load.
 *
 * One controller per queue (fetch and unpack are controlled apart: a download is bound by the
 * network, an unpack by the disk and the dm control path). Every LOADCTL_INTERVAL_MS the
 * caller gathers the signals of the last interval and calls loadctl_step(), which returns the
 * limit to set (fsm_queue_set_limit) and says why it changed. The controller itself reads
 * nothing, so the tests drive it with scripted signals.
 *
 * The rule (additive increase, multiplicative decrease, like TCP's congestion window):
 *  - trouble halves the limit at once (floor 1) and holds it for hold_ticks: the host's health
 *    check sees tasks stuck in D state or kernel-log warnings; the pool (unpack only) is past
 *    its low-water mark, nearly full, read-only or needs_check; PSI says tasks stalled on I/O
 *    or memory more than the high thresholds, in the 10 s average or, for I/O, in each of the
 *    last now_ticks intervals (the total counters: a hog is seen in seconds, while avg10 takes
 *    ten to catch up, and one busy interval alone does not count); throughput per worker fell below
 * drop_ratio of what it was when the current limit was accepted (the disk is saturated or sick);
 *  - the limit rises by one only when work is waiting for a slot, every slot is busy, pressure
 *    has stayed under the low thresholds for calm_ticks intervals in a row, and nothing held it;
 *  - a raise is a probe: after probe_ticks intervals its throughput must beat the throughput
 *    before it by gain_min, else the raise is undone and held (more workers that add nothing
 *    only add contention);
 *  - between the low and high thresholds nothing changes: the band is the hysteresis that
 *    keeps noisy signals from flapping the limit.
 * An idle queue's limit is where its next work starts, so it follows the host rather than
 * probing: on a calm host (loadctl_calm: I/O and memory pressure under the low thresholds in
 * the 10 s average and in the last interval, no host or pool trouble) it goes to the maximum at
 * once when the controller starts (loadctl_begin) and after calm_ticks calm intervals while
 * idle (no hold pending); on a host that is not calm for calm_ticks idle intervals (a competing
 * writer alone is often in the band) it goes to 1, and on trouble to 1 at once (nothing
 * running is slowed by that). A burst on a calm host then runs at the maximum from its first
 * admission, as a fixed limit would, and the trouble rules take it down; a burst on a busy
 * host starts at 1; additive increase remains the way up while work runs.
 * Starting at the maximum leaves the throughput-per-worker rule unarmed until a probe is
 * accepted: pressure, the pool and the health check are what take such a queue down.
 * Where the queue's disk is measured (s->disk, guard/diskio.h: the pool's for unpack, the blob
 * store's for fetch), I/O pressure is told apart by
 * whose I/O the disk is doing:
 *  - foreign I/O (foreign_min_bps or more) in now_ticks intervals in a row while some task
 *    stalled on I/O (some_foreign or more, avg10 or the interval: lower than some_low, since
 *    whose the stalls are is known) is a competing user slowed by the queue: the limit goes
 *    to 1 at once and holds; with foreign I/O, calm means `some` under some_foreign too;
 *  - the `some` halving rules (avg10 over some_high, the interval share over some_now_high)
 *    do not apply: without foreign I/O the stalls are the queue's own work on a disk nobody
 *    else uses, and they neither lower the limit nor keep it from rising or an idle queue
 *    from its maximum (more workers that add nothing are undone by the probe). `full` stalls
 *    (every task waiting, the host's other work too) halve as before.
 * Without PSI (a kernel built without it, or booted with psi=0) the other signals still count;
 * the controller notes it once (loadctl.note).
 */
#pragma once

#include <stdbool.h>

/* How often the caller samples and steps: PSI's shortest average is 10 s, so a few seconds
 * see a change within one or two steps without reacting to single spikes. */
#define LOADCTL_INTERVAL_MS 2000

/* What the host and the queue did in the last interval. */
struct loadctl_signals {
    bool psi;            /* PSI was readable; the pressure fields are valid */
    double io_some;      /* % of time some task stalled on I/O (avg10) */
    double io_full;      /* % of time all tasks stalled on I/O (avg10) */
    double mem_full;     /* % of time all tasks stalled on memory (avg10) */
    double io_some_now;  /* % of the last interval some task stalled on I/O (total counter) */
    double io_full_now;  /* % of the last interval all tasks stalled on I/O (total counter) */
    bool host_trouble;   /* the health check's verdict: D-state tasks, kernel-log warnings */
    bool pool_trouble;   /* pool past low water, nearly full, read-only or needs_check */
    const char *trouble; /* what the trouble is, for the reason (may be NULL) */
    bool disk;           /* the queue's disk is known and measured: the three rates are valid */
    const char *disk_what; /* which disk, for the reason ("the pool's disk"); NULL: "its disk" */
    double disk_bps;       /* bytes/s the disk read and wrote in the interval */
    double own_bps;      /* bytes/s thinimg (and its children) read and wrote */
    double foreign_bps;  /* bytes/s of the disk's beyond what thinimg's explain (diskio.h) */
    double throughput;   /* units (bytes) the queue finished per second in the interval */
    int running;         /* runs holding a slot */
    int waiting;         /* runs waiting for a slot */
};

struct loadctl_params {
    int max;                /* the highest limit (>= 1); the floor is 1 */
    bool watch_pool;        /* the pool's state counts (unpack: yes; fetch: no) */
    double some_low;        /* raise only while io_some is below this */
    double some_high;       /* halve when io_some is above this */
    double some_now_high;   /* halve when now_ticks intervals' own io_some share is above this */
    double full_high;       /* halve when io_full is above this */
    double mem_full_high;   /* halve when mem_full is above this */
    int calm_ticks;         /* calm intervals with waiting work before a raise */
    int probe_ticks;        /* intervals a raise runs before its throughput is judged */
    double gain_min;        /* a raise must add this share of throughput (0.10 = 10%) */
    double drop_ratio;      /* halve when throughput per worker falls below this share */
    int hold_ticks;         /* after a decrease or an undone raise: no raise for this long */
    int now_ticks;          /* intervals in a row whose own share must pass a high threshold */
    double foreign_min_bps; /* foreign I/O at this rate is a competing user of the disk */
    double some_foreign;    /* beside foreign I/O, io_some from this is contention */
};

/* Defaults for a queue whose maximum is max (see loadctl.c for the reasons of each). */
struct loadctl_params loadctl_defaults(int max, bool watch_pool);

enum loadctl_change { LOADCTL_SAME = 0, LOADCTL_UP, LOADCTL_DOWN };

struct loadctl {
    struct loadctl_params p;
    int limit;
    char reason[200]; /* why the last change happened */
    char note[160];   /* a one-time remark (PSI absent), cleared by the caller after logging */
    /* state */
    int calm;        /* consecutive calm intervals with waiting work */
    int idle_calm;   /* consecutive calm intervals with the queue idle */
    int idle_busy;   /* consecutive intervals not calm with the queue idle */
    int hold;        /* intervals left in which no raise happens */
    int hot;         /* consecutive intervals whose own I/O share passed a high threshold */
    int foreign;     /* consecutive intervals with foreign I/O and I/O pressure */
    int probe;       /* > 0: intervals left in the probe of the last raise */
    double base_sum; /* throughput summed over the calm intervals before a raise */
    int base_n;
    double base;      /* throughput before the raise being probed */
    double probe_sum; /* throughput summed over the probe (its first interval skipped) */
    int probe_n;
    double per_worker; /* throughput per worker when the current limit was accepted, 0 none */
    bool psi_noted;
};

/* A controller starting at limit start (clamped to 1..p.max). */
void loadctl_init(struct loadctl *c, const struct loadctl_params *p, int start);

/* The host is calm enough for a queue to start at its maximum: PSI present (without it the
 * controller cannot tell a busy disk from an idle one), I/O "some" under some_low in the 10 s
 * average and in the last interval, I/O "full" of the last interval under half of full_high,
 * memory "full" under half of mem_full_high, no host trouble and (when the pool is watched) no
 * pool trouble. */
bool loadctl_calm(const struct loadctl *c, const struct loadctl_signals *s);

/* The start: with the signals read before the first admission, a calm host puts the limit at
 * the maximum (reason "calm at start"); otherwise it stays at loadctl_init's start. */
enum loadctl_change loadctl_begin(struct loadctl *c, const struct loadctl_signals *s);

/* One interval's step: updates c->limit and, on a change, c->reason. */
enum loadctl_change loadctl_step(struct loadctl *c, const struct loadctl_signals *s);
