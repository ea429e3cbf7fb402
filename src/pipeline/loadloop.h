/*
 * loadloop.h: the thread that sizes the fetch and unpack queues to the host's load.
 *
 * Every LOADCTL_INTERVAL_MS it gathers the signals (PSI from /proc/pressure, the guard's last
 * health verdict, the pool's state for unpack, the foreign I/O on each queue's disk
 * (guard/diskio.h: the unpack queue's is the pool's, looked up once the pool exists; the fetch
 * queue's is the blob store's, where downloads are written; where a queue has none, that is
 * logged once and the pressure rules apply as they are), each queue's running/waiting runs and
 * the work they reported), steps one controller per queue (guard/loadctl.h) and sets the
 * queue's limit with fsm_queue_set_limit(). A queue whose limit the operator pinned
 * (`--unpack-queue N`) is left alone. Each change is one log line with its reason; loadloop_get()
 * reports the state for `status`, `/metrics` and the monitor.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "guard/loadctl.h"

struct fsm_manager;

enum loadloop_queue { LOADLOOP_FETCH = 0, LOADLOOP_UNPACK, LOADLOOP_N };
const char *loadloop_queue_name(enum loadloop_queue q); /* "fetch", "unpack" */

/* Signal sources, replaceable by tests. NULL = the host's own. */
struct loadloop_sources {
    /* true (and why) when the host is in trouble: the guard's last verdict by default */
    bool (*host_trouble)(void *ud, char *why, size_t n);
    /* true (and why) when the pool is in trouble: past low water, full, read-only,
     * needs_check; a host without the pool says false */
    bool (*pool_trouble)(void *ud, char *why, size_t n);
    /* > 0 and the path of the pool's data (its backing file, or its device) when the pool is
     * set up, 0 when not (yet), negative errno; NULL: foreign I/O is not measured */
    int (*pool_data)(void *ud, char *path, size_t n);
    void *ud;
    /* the blob store's directory, whose disk the fetch queue watches; NULL: not measured */
    const char *store_dir;
    const char *proc_root; /* NULL = /proc */
    const char *sys_root;  /* NULL = /sys */
};

struct loadloop_opts {
    struct fsm_manager *mgr;
    int max[LOADLOOP_N];    /* highest limit per queue (>= 1) */
    int pinned[LOADLOOP_N]; /* > 0: the operator's fixed limit; the controller leaves it */
    struct loadloop_sources src;
    int interval_ms; /* 0 = LOADCTL_INTERVAL_MS */
};

/* Default maximum of a queue from the core count: unpack min(4, cores), fetch min(8, 2 x
 * cores) (downloads wait on the network, not the CPU). */
int loadloop_default_max(enum loadloop_queue q);

struct loadloop;

int loadloop_start(const struct loadloop_opts *o, struct loadloop **out);
void loadloop_stop(struct loadloop *l);

struct loadloop_state {
    int limit;
    int max;
    bool pinned;
    char reason[200];            /* the last change, "" before the first */
    char disk[32];               /* the disk whose foreign I/O this queue watches, or "" */
    struct loadctl_signals last; /* the last sample (trouble string not kept) */
};
/* Copy of a queue's state (a consistent snapshot). */
void loadloop_get(struct loadloop *l, enum loadloop_queue q, struct loadloop_state *out);

/* One sample-and-step round, for tests that do not want to wait for the thread. */
void loadloop_tick(struct loadloop *l);
