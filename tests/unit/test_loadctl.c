/*
 * test_loadctl.c: the queue-limit controller driven by scripted signals (a calm or a loaded
 * start, an idle queue, a quiet host, rising I/O pressure, memory pressure, a pool near full,
 * noisy signals, a disk that adds no throughput for more workers, a kernel without PSI; with
 * the pool's disk measured: the queue's own I/O pressure, a competing writer's foreign I/O,
 * noisy foreign I/O), and the PSI file parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "guard/loadctl.h"
#include "guard/psi.h"
#include "testutil.h"

/* A simulated host: each worker moves `per_worker` bytes/s up to `capacity` in all; the I/O
 * pressure is what the scenario says. Work is always waiting unless idle. */
struct host {
    double per_worker, capacity;
    double io_some, io_full, mem_full;
    bool idle, psi, pool_trouble, host_trouble;
    bool disk; /* the pool's disk is measured */
    double own_bps, foreign_bps;
};

static struct loadctl_signals signals(const struct loadctl *c, const struct host *h)
{
    double t = c->limit * h->per_worker;
    if (t > h->capacity)
        t = h->capacity;
    return (struct loadctl_signals){.psi = h->psi,
                                    .io_some = h->io_some,
                                    .io_full = h->io_full,
                                    .mem_full = h->mem_full,
                                    .pool_trouble = h->pool_trouble,
                                    .host_trouble = h->host_trouble,
                                    .disk = h->disk,
                                    .own_bps = h->own_bps,
                                    .foreign_bps = h->foreign_bps,
                                    .disk_bps = h->own_bps * 2 + h->foreign_bps,
                                    .throughput = h->idle ? 0 : t,
                                    .running = h->idle ? 0 : c->limit,
                                    .waiting = h->idle ? 0 : 3};
}

/* Run ticks; returns how many changes happened. */
static int run(struct loadctl *c, const struct host *h, int ticks)
{
    int changes = 0;
    for (int i = 0; i < ticks; i++) {
        struct loadctl_signals s = signals(c, h);
        changes += loadctl_step(c, &s) != LOADCTL_SAME;
    }
    return changes;
}

/* An idle queue on a busy host (pressure inside the band) neither probes nor moves. */
static void test_idle_stays(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 1);
    struct host h = {.per_worker = 100, .capacity = 1000, .io_some = 20, .psi = true, .idle = true};
    assert_int_equal(run(&c, &h, 100), 0);
    assert_int_equal(c.limit, 1);
    /* without PSI the controller cannot tell an idle disk from a busy one: no move either */
    h.psi = false;
    assert_int_equal(run(&c, &h, 100), 0);
    assert_int_equal(c.limit, 1);
}

/* Signals read before the first admission: a calm host starts at the maximum at once, so a
 * short burst runs as with the best fixed limit. */
static void test_calm_start_at_max(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 2);
    struct host h = {.per_worker = 100, .capacity = 1000, .io_some = 2, .psi = true};
    struct loadctl_signals s = signals(&c, &h);
    assert_true(loadctl_calm(&c, &s));
    assert_int_equal(loadctl_begin(&c, &s), LOADCTL_UP);
    assert_int_equal(c.limit, 4);
    assert_true(strstr(c.reason, "2 -> 4: calm at start") != NULL);
    /* it stays there while the host stays calm, busy or idle */
    assert_int_equal(run(&c, &h, 50), 0);
    h.idle = true;
    assert_int_equal(run(&c, &h, 50), 0);
    assert_int_equal(c.limit, 4);
    /* a hog starting with the burst takes it down to 1 within 10 s (intervals' own share) */
    h.idle = false;
    int at_one = -1;
    for (int i = 0; i < 10 && at_one < 0; i++) {
        s = signals(&c, &h);
        s.io_some_now = p.some_now_high + 5;
        loadctl_step(&c, &s);
        if (c.limit == 1)
            at_one = i;
    }
    assert_true(at_one >= 0 && (at_one + 1) * LOADCTL_INTERVAL_MS <= 10000);
}

/* A loaded start stays low: any one signal that is not calm keeps loadctl_init's start. */
static void test_loaded_start_stays_low(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct host h = {.per_worker = 100, .capacity = 1000, .io_some = 2, .psi = true};
    struct loadctl c;
    loadctl_init(&c, &p, 2);
    struct loadctl_signals calm = signals(&c, &h);
    struct loadctl_signals loaded[] = {calm, calm, calm, calm, calm, calm, calm, calm};
    loaded[0].io_some = p.some_low;
    loaded[1].io_some_now = p.some_low + 1;
    loaded[2].io_full_now = p.full_high / 2;
    loaded[3].mem_full = p.mem_full_high / 2;
    loaded[4].host_trouble = true;
    loaded[5].pool_trouble = true;
    loaded[6].psi = false;
    loaded[7].io_full = p.full_high / 2;
    for (size_t i = 0; i < sizeof(loaded) / sizeof(loaded[0]); i++) {
        loadctl_init(&c, &p, 2);
        assert_false(loadctl_calm(&c, &loaded[i]));
        assert_int_equal(loadctl_begin(&c, &loaded[i]), LOADCTL_SAME);
        assert_int_equal(c.limit, 2);
    }
    /* the fetch queue does not watch the pool: pool trouble alone does not keep it low */
    struct loadctl_params pf = loadctl_defaults(4, false);
    loadctl_init(&c, &pf, 2);
    assert_int_equal(loadctl_begin(&c, &loaded[5]), LOADCTL_UP);
    /* a host loaded at start (I/O some in the band) with work waiting: no raise at all */
    loadctl_init(&c, &p, 2);
    h.io_some = 25;
    assert_int_equal(run(&c, &h, 100), 0);
    assert_int_equal(c.limit, 2);
}

/* While idle, the limit is where the next work starts: trouble puts it at 1 at once, calm_ticks
 * calm intervals after the hold put it back at the maximum, calm_ticks intervals that are not
 * calm put it at 1; noise does none of these. */
static void test_idle_follows_the_host(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 4);
    struct host h = {.per_worker = 100, .capacity = 1000, .io_some = 55, .psi = true, .idle = true};
    assert_int_equal(run(&c, &h, 1), 1);
    assert_int_equal(c.limit, 1);
    assert_true(strstr(c.reason, "4 -> 1: I/O pressure") != NULL);
    /* calm again: nothing during the hold, then the maximum after calm_ticks */
    h.io_some = 2;
    assert_int_equal(run(&c, &h, p.hold_ticks + p.calm_ticks - 1), 0);
    assert_int_equal(run(&c, &h, 1), 1);
    assert_int_equal(c.limit, 4);
    assert_true(strstr(c.reason, "1 -> 4: idle on a calm host") != NULL);
    /* a competing writer alone, in the band (no trouble): 1 after calm_ticks intervals, and it
     * stays there while the writer runs */
    h.io_some = 15;
    assert_int_equal(run(&c, &h, p.calm_ticks - 1), 0);
    assert_int_equal(run(&c, &h, 1), 1);
    assert_int_equal(c.limit, 1);
    assert_true(strstr(c.reason, "4 -> 1: idle on a host that is not calm (I/O some 15.0%") !=
                NULL);
    assert_int_equal(run(&c, &h, 100), 0);
    assert_int_equal(c.limit, 1);
    /* noisy while idle: calm samples between ones in the band never make calm_ticks in a row,
     * either way */
    loadctl_init(&c, &p, 2);
    int changes = 0;
    for (int i = 0; i < 300; i++) {
        h.io_some = (i % p.calm_ticks == 0) ? 25 : 3;
        changes += run(&c, &h, 1);
    }
    assert_int_equal(changes, 0);
    assert_int_equal(c.limit, 2);
    /* calm and pressured samples alternating while idle: at most one move down per hold, and
     * never back up (no calm streak) */
    changes = 0;
    for (int i = 0; i < 300; i++) {
        h.io_some = (i % 2) ? 3 : 45;
        changes += run(&c, &h, 1);
    }
    assert_int_equal(changes, 1);
    assert_int_equal(c.limit, 1);
}

static void test_quiet_host_rises_to_max(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 1);
    struct host h = {.per_worker = 100, .capacity = 1000, .io_some = 2, .psi = true};
    /* one step at a time: calm_ticks before each raise, probe_ticks to judge it */
    int per_raise = p.calm_ticks + p.probe_ticks;
    assert_int_equal(run(&c, &h, p.calm_ticks - 1), 0);
    assert_int_equal(c.limit, 1);
    assert_int_equal(run(&c, &h, 1), 1);
    assert_int_equal(c.limit, 2);
    assert_true(strstr(c.reason, "1 -> 2: low pressure and work waiting") != NULL);
    assert_int_equal(run(&c, &h, 3 * per_raise), 2);
    assert_int_equal(c.limit, 4);
    /* at the maximum it stays */
    assert_int_equal(run(&c, &h, 50), 0);
    assert_int_equal(c.limit, 4);
}

static void test_io_pressure_drops_to_one(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 4);
    struct host h = {.per_worker = 100, .capacity = 1000, .io_some = 2, .psi = true};
    run(&c, &h, 10);
    assert_int_equal(c.limit, 4);
    /* an I/O hog starts: avg10 climbs over a few samples */
    const double rising[] = {8, 18, 35, 55, 70, 80, 80, 80};
    int at_one = -1;
    for (size_t i = 0; i < sizeof(rising) / sizeof(rising[0]); i++) {
        h.io_some = rising[i];
        h.io_full = rising[i] / 4;
        run(&c, &h, 1);
        if (c.limit == 1 && at_one < 0)
            at_one = (int)i;
    }
    /* two halvings: 4 -> 2 -> 1 within 10 s (5 intervals of LOADCTL_INTERVAL_MS) of the hog */
    assert_true(at_one >= 0 && (at_one + 1) * LOADCTL_INTERVAL_MS <= 10000);
    assert_true(strstr(c.reason, "I/O pressure") != NULL);
    /* pressure stays: no raise */
    assert_int_equal(run(&c, &h, 50), 0);
    assert_int_equal(c.limit, 1);
    /* the hog stops: after the hold, the limit climbs again */
    h.io_some = h.io_full = 1;
    run(&c, &h, p.hold_ticks + 4 * (p.calm_ticks + p.probe_ticks));
    assert_int_equal(c.limit, 4);
}

/* The interval's own I/O share (the total counters) sees a hog before avg10 climbs: two hot
 * intervals in a row halve, one alone (a journal commit) does not, and a hot interval between
 * calm ones never adds up. */
static void test_interval_share_needs_two_in_a_row(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 4);
    struct host h = {.per_worker = 100, .capacity = 1000, .io_some = 2, .psi = true};
    int changes = 0;
    for (int i = 0; i < 60; i++) {
        struct loadctl_signals s = signals(&c, &h);
        s.io_some_now = i % 2 ? 1 : p.some_high + 30; /* every other interval busy */
        changes += loadctl_step(&c, &s) != LOADCTL_SAME;
    }
    assert_int_equal(changes, 0);
    assert_int_equal(c.limit, 4);
    /* a hog: avg10 still low, the intervals' own share past its threshold (below avg10's) */
    assert_true(p.some_now_high + 5 < p.some_high);
    int at = -1;
    for (int i = 0; i < 4 && at < 0; i++) {
        struct loadctl_signals s = signals(&c, &h);
        s.io_some_now = p.some_now_high + 5;
        s.io_full_now = p.full_high / 2;
        loadctl_step(&c, &s);
        if (c.limit < 4)
            at = i;
    }
    assert_int_equal(at, p.now_ticks - 1);
    assert_int_equal(c.limit, 2);
    assert_true(strstr(c.reason, "I/O pressure: some tasks stalled") != NULL);
    /* it goes on: 1 at the next interval, within 10 s of the hog's start */
    struct loadctl_signals s = signals(&c, &h);
    s.io_some_now = p.some_now_high + 5;
    loadctl_step(&c, &s);
    assert_int_equal(c.limit, 1);
    assert_true((p.now_ticks + 1) * LOADCTL_INTERVAL_MS <= 10000);
}

static void test_memory_pressure(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, false);
    struct loadctl c;
    loadctl_init(&c, &p, 4);
    struct host h = {.per_worker = 100, .capacity = 1000, .psi = true, .mem_full = 12};
    assert_int_equal(run(&c, &h, 1), 1);
    assert_int_equal(c.limit, 2);
    assert_true(strstr(c.reason, "memory pressure") != NULL);
    run(&c, &h, 1);
    assert_int_equal(c.limit, 1);
}

static void test_pool_trouble_unpack_only(void **state)
{
    (void)state;
    struct loadctl_params pu = loadctl_defaults(4, true), pf = loadctl_defaults(4, false);
    struct loadctl unpack, fetch;
    loadctl_init(&unpack, &pu, 4);
    loadctl_init(&fetch, &pf, 4);
    struct host h = {
        .per_worker = 100, .capacity = 1000, .io_some = 2, .psi = true, .pool_trouble = true};
    run(&unpack, &h, 3);
    run(&fetch, &h, 3);
    assert_int_equal(unpack.limit, 1);
    assert_true(strstr(unpack.reason, "pool trouble") != NULL);
    assert_int_equal(fetch.limit, 4);
    /* the host's own trouble counts for both */
    h.pool_trouble = false;
    h.host_trouble = true;
    run(&fetch, &h, 3);
    assert_int_equal(fetch.limit, 1);
    assert_true(strstr(fetch.reason, "host trouble") != NULL);
}

static void test_noisy_signals_do_not_flap(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 2);
    struct host h = {.per_worker = 100, .capacity = 1000, .psi = true};
    /* inside the band (10..40): nothing moves, whatever the noise */
    int changes = 0;
    for (int i = 0; i < 200; i++) {
        h.io_some = (i % 3 == 0) ? 12 : (i % 3 == 1) ? 38 : 25;
        changes += run(&c, &h, 1);
    }
    assert_int_equal(changes, 0);
    assert_int_equal(c.limit, 2);
    /* calm and pressured samples alternating: a calm streak never reaches calm_ticks, so the
     * limit only goes down, once per hold at most */
    changes = 0;
    for (int i = 0; i < 200; i++) {
        h.io_some = (i % 2) ? 3 : 45;
        changes += run(&c, &h, 1);
    }
    assert_true(changes <= 1);
    assert_int_equal(c.limit, 1);
}

static void test_raise_without_gain_is_undone(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 1);
    /* a disk that gives 150 bytes/s in all: a second worker adds 50%, a third nothing */
    struct host h = {.per_worker = 100, .capacity = 150, .io_some = 2, .psi = true};
    int per_raise = p.calm_ticks + p.probe_ticks;
    run(&c, &h, per_raise);
    assert_int_equal(c.limit, 2); /* accepted: +50% */
    run(&c, &h, per_raise);
    assert_int_equal(c.limit, 2); /* 3 tried and undone */
    assert_true(strstr(c.reason, "3 -> 2: the raise added no throughput") != NULL);
    /* no new probe before the hold is over, then at most one probe per hold */
    int changes = run(&c, &h, 10 * (p.hold_ticks + per_raise));
    assert_true(changes <= 2 * 10);
    assert_true(c.limit <= 3);
}

static void test_throughput_collapse(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 1);
    struct host h = {.per_worker = 100, .capacity = 1000, .io_some = 2, .psi = true};
    run(&c, &h, 2 * (p.calm_ticks + p.probe_ticks));
    assert_int_equal(c.limit, 3);
    /* the disk goes sick without PSI noticing: per-worker throughput falls to a fifth */
    h.per_worker = 20;
    run(&c, &h, 1);
    assert_int_equal(c.limit, 1);
    assert_true(strstr(c.reason, "throughput per worker fell") != NULL);
}

static void test_without_psi(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(3, true);
    struct loadctl c;
    loadctl_init(&c, &p, 1);
    struct host h = {.per_worker = 100, .capacity = 1000, .io_some = 99, .psi = false};
    run(&c, &h, 1);
    assert_true(strstr(c.note, "no pressure stall information") != NULL);
    c.note[0] = '\0';
    /* pressure fields are ignored; throughput and demand raise it */
    run(&c, &h, 2 * (p.calm_ticks + p.probe_ticks));
    assert_int_equal(c.limit, 3);
    assert_int_equal(c.note[0], '\0'); /* said once */
    h.pool_trouble = true;
    run(&c, &h, 1);
    assert_int_equal(c.limit, 1);
}

#define MIBS (1024.0 * 1024.0)

/* A step with the host's signals and the interval's own I/O shares. */
static enum loadctl_change step_now(struct loadctl *c, const struct host *h, double some_now,
                                    double full_now)
{
    struct loadctl_signals s = signals(c, h);
    s.io_some_now = some_now;
    s.io_full_now = full_now;
    return loadctl_step(c, &s);
}

/* The unpacks' own stalls on a disk nobody else uses (a quiet host's burst, as the bench saw:
 * 55-84% of 2 s intervals, `full` under 10%): with the disk measured and no foreign I/O they
 * do not halve the queue; without the disk measured the same sequence does (the rule as it
 * was). */
static void test_own_pressure_keeps_the_limit(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    for (int measured = 1; measured >= 0; measured--) {
        struct loadctl c;
        loadctl_init(&c, &p, 4);
        struct host h = {.per_worker = 100,
                         .capacity = 1000,
                         .psi = true,
                         .disk = measured,
                         .own_bps = 8 * MIBS,
                         .foreign_bps = 0.5 * MIBS}; /* the samplers, a journal: noise */
        int changes = 0;
        for (int i = 0; i < 60; i++) {
            h.io_some = 30 + (i % 5) * 12; /* 30..78 */
            h.io_full = (i % 4) * 2.0;     /* 0..6 */
            changes += step_now(&c, &h, 55 + (i % 4) * 9, (i % 3) * 3.0) != LOADCTL_SAME;
        }
        if (measured) {
            assert_int_equal(changes, 0);
            assert_int_equal(c.limit, 4);
        } else {
            assert_int_equal(c.limit, 1);
            assert_true(strstr(c.reason, "I/O pressure") != NULL);
        }
    }
    /* `full` stalls (every task waiting) still halve: the host's other work waits too */
    struct loadctl c;
    loadctl_init(&c, &p, 4);
    struct host h = {.per_worker = 100,
                     .capacity = 1000,
                     .psi = true,
                     .disk = true,
                     .own_bps = 8 * MIBS,
                     .io_some = 60,
                     .io_full = p.full_high + 5};
    assert_int_equal(step_now(&c, &h, 60, p.full_high + 5), LOADCTL_DOWN);
    assert_int_equal(c.limit, 2);
}

/* A writer starts beside the running unpacks: its bytes are foreign, the pressure rises; two
 * intervals in a row put the queue at 1 (not half), within 10 s. It holds while the writer
 * goes on; once it stops, the queue climbs again although its own pressure stays. */
static void test_foreign_io_drops_to_one(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 4);
    struct host h = {.per_worker = 100,
                     .capacity = 1000,
                     .psi = true,
                     .disk = true,
                     .own_bps = 6 * MIBS,
                     .io_some = 35};
    assert_int_equal(step_now(&c, &h, 40, 2), LOADCTL_SAME);
    /* the writer: 30 MiB/s foreign, stalls 30% of each interval (no more than the unpacks'
     * own: pressure alone does not tell them apart) */
    h.foreign_bps = 30 * MIBS;
    int at = -1;
    for (int i = 0; i < 5 && at < 0; i++) {
        step_now(&c, &h, 30, 3);
        if (c.limit < 4)
            at = i;
    }
    assert_int_equal(at, p.now_ticks - 1);
    assert_int_equal(c.limit, 1);
    assert_true((at + 1) * LOADCTL_INTERVAL_MS <= 10000);
    assert_true(strstr(c.reason, "4 -> 1: foreign I/O: 30.0 MiB/s on its disk") != NULL);
    for (int i = 0; i < 50; i++)
        assert_int_equal(step_now(&c, &h, 30, 3), LOADCTL_SAME);
    assert_int_equal(c.limit, 1);
    /* the writer stops; the unpacks' own stalls remain */
    h.foreign_bps = 0.2 * MIBS;
    for (int i = 0; i < p.hold_ticks + 4 * (p.calm_ticks + p.probe_ticks); i++)
        step_now(&c, &h, 45, 2);
    assert_int_equal(c.limit, 4);
}

/* Foreign I/O that comes and goes every other interval, or that stalls nobody (pressure
 * under the calm line), moves nothing. */
static void test_foreign_noise(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 4);
    struct host h = {
        .per_worker = 100, .capacity = 1000, .psi = true, .disk = true, .own_bps = 6 * MIBS};
    int changes = 0;
    for (int i = 0; i < 100; i++) {
        h.foreign_bps = i % 2 ? 50 * MIBS : 1 * MIBS;
        h.io_some = 20 + (i % 3) * 5;
        changes += step_now(&c, &h, 35, 2) != LOADCTL_SAME;
    }
    assert_int_equal(changes, 0);
    h.foreign_bps = 50 * MIBS;
    h.io_some = 2;
    changes = 0;
    for (int i = 0; i < 100; i++)
        changes += step_now(&c, &h, p.some_foreign - 2, 0) != LOADCTL_SAME;
    assert_int_equal(changes, 0);
    assert_int_equal(c.limit, 4);
}

/* A competing writer on a disk with room (the 21:10 boot's scratch disk: dd moving 33 to 145
 * MiB/s, some task stalled 3 to 13% of each interval, under some_low as often as not): the
 * stalls over some_foreign beside it put a busy queue at 1 in two intervals, and an idle queue
 * too, where it stays while the writer runs (no return to the maximum: calm beside foreign
 * I/O means stalls under some_foreign). */
static void test_foreign_fast_disk(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    static const double mibs[] = {33.6, 54.9, 55.1, 44.0, 7.1, 30.1, 39.1};
    static const double some_now[] = {3.1, 12.2, 8.9, 12.7, 1.9, 19.3, 15.3};
    struct loadctl c;
    loadctl_init(&c, &p, 4);
    struct host h = {.per_worker = 100,
                     .capacity = 1000,
                     .psi = true,
                     .disk = true,
                     .io_some = 4,
                     .own_bps = 1 * MIBS};
    int i = 0;
    for (; i < 7 && c.limit > 1; i++) {
        h.foreign_bps = mibs[i] * MIBS;
        step_now(&c, &h, some_now[i], 0);
    }
    assert_int_equal(c.limit, 1);
    assert_int_equal(i, 3); /* 12.2% then 8.9%: the 4 s after the first quiet interval */
    assert_true(strstr(c.reason, "4 -> 1: foreign I/O") != NULL);

    /* idle beside the writer (the hog running before the images came) */
    static const double idle_now[] = {4.3, 8.2, 8.0, 7.6, 6.2, 5.1, 7.7, 8.9};
    loadctl_init(&c, &p, 4);
    h.idle = true;
    h.own_bps = 0;
    int changes = 0;
    for (int k = 0; k < 40; k++) {
        h.foreign_bps = (70 + k % 5 * 15) * MIBS;
        h.io_some = 5.5;
        changes += step_now(&c, &h, idle_now[k % 8], 0) != LOADCTL_SAME;
        if (k == 2)
            assert_int_equal(c.limit, 1); /* by the second sample */
    }
    assert_int_equal(c.limit, 1);
    assert_int_equal(changes, 1);
}

/* An idle queue: pressure left over from its own burst (avg10 decays over tens of seconds)
 * does not keep it at 1 when nobody else uses the disk; foreign I/O with pressure puts it at
 * 1 at once. */
static void test_idle_with_the_disk_measured(void **state)
{
    (void)state;
    struct loadctl_params p = loadctl_defaults(4, true);
    struct loadctl c;
    loadctl_init(&c, &p, 1);
    struct host h = {.per_worker = 100,
                     .capacity = 1000,
                     .psi = true,
                     .idle = true,
                     .disk = true,
                     .io_some = 30,
                     .own_bps = 3 * MIBS};
    for (int i = 0; i < p.calm_ticks; i++)
        step_now(&c, &h, 20, 0);
    assert_int_equal(c.limit, 4);
    assert_true(strstr(c.reason, "idle on a calm host") != NULL);
    h.foreign_bps = 20 * MIBS;
    h.io_some = 12;
    assert_int_equal(step_now(&c, &h, 15, 0), LOADCTL_SAME);
    assert_int_equal(step_now(&c, &h, 15, 0), LOADCTL_DOWN);
    assert_int_equal(c.limit, 1);
    assert_true(strstr(c.reason, "foreign I/O") != NULL);
}

static void test_psi_parse(void **state)
{
    (void)state;
    struct psi v;
    assert_int_equal(psi_parse("some avg10=1.16 avg60=2.21 avg300=2.48 total=152727236\n"
                               "full avg10=0.50 avg60=0.00 avg300=0.00 total=22667518\n",
                               &v),
                     0);
    assert_true(v.some.present && v.full.present);
    assert_true(v.some.avg10 > 1.15 && v.some.avg10 < 1.17);
    assert_true(v.full.avg10 > 0.49 && v.full.avg10 < 0.51);
    assert_int_equal(v.some.total_us, 152727236);
    /* cpu before 5.13: no full line */
    assert_int_equal(psi_parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", &v), 0);
    assert_false(v.full.present);
    assert_int_equal(psi_parse("", &v), -ENODATA);
    assert_int_equal(psi_parse("garbage\nmore", &v), -ENODATA);
    assert_int_equal(psi_parse("some avg10=x", &v), -ENODATA);
    /* a fake /proc without pressure files: no PSI */
    char *dir = tu_mkdtemp("psi");
    assert_true(psi_read(dir, PSI_IO, &v) < 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/pressure", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/pressure/io", dir);
    const char *io = "some avg10=42.00 avg60=1.00 avg300=0.00 total=5\n"
                     "full avg10=7.00 avg60=0.00 avg300=0.00 total=3\n";
    assert_int_equal(tu_write_file(path, io, strlen(io)), 0);
    assert_int_equal(psi_read(dir, PSI_IO, &v), 0);
    assert_true(v.some.avg10 > 41.9 && v.full.avg10 > 6.9);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_stays),
        cmocka_unit_test(test_calm_start_at_max),
        cmocka_unit_test(test_loaded_start_stays_low),
        cmocka_unit_test(test_idle_follows_the_host),
        cmocka_unit_test(test_quiet_host_rises_to_max),
        cmocka_unit_test(test_io_pressure_drops_to_one),
        cmocka_unit_test(test_interval_share_needs_two_in_a_row),
        cmocka_unit_test(test_memory_pressure),
        cmocka_unit_test(test_pool_trouble_unpack_only),
        cmocka_unit_test(test_noisy_signals_do_not_flap),
        cmocka_unit_test(test_raise_without_gain_is_undone),
        cmocka_unit_test(test_throughput_collapse),
        cmocka_unit_test(test_without_psi),
        cmocka_unit_test(test_own_pressure_keeps_the_limit),
        cmocka_unit_test(test_foreign_io_drops_to_one),
        cmocka_unit_test(test_foreign_noise),
        cmocka_unit_test(test_foreign_fast_disk),
        cmocka_unit_test(test_idle_with_the_disk_measured),
        cmocka_unit_test(test_psi_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
