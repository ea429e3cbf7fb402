/*
 * guard.h: the operation guard around devicemapper-heavy sections.
 *
 * Safety rule 2 (docs/architecture.md), its last layer: a counting semaphore (default 1) serializes the sections that
 * create, snapshot, activate, mkfs or remove devices, and each entry first runs the health
 * checks (health.h) and refuses when the host or the pool is unhealthy. Extraction into an
 * already-mounted device is not a guarded section, so layers unpack in parallel while every
 * control-plane operation stays serialized.
 *
 *     r = guard_enter(g, "create-device", cancel_fd, &e);
 *     if (r < 0) return r;          // -EHOSTDOWN: unhealthy (e says why), -ECANCELED
 *     ... dm work ...
 *     guard_leave(g);
 *
 * A health report is reused for GUARD_HEALTH_CACHE_MS so back-to-back sections do not pay for
 * the D-state double sample each time; a failing report is never reused (the next entry checks
 * again).
 */
#pragma once

#include <stdint.h>

#include "guard/health.h"
#include "util/err.h"

#define GUARD_DEFAULT_CONCURRENCY 1
#define GUARD_HEALTH_CACHE_MS 2000

struct guard;

struct guard_opts {
    int concurrency;           /* <= 0: GUARD_DEFAULT_CONCURRENCY */
    struct health_opts health; /* copied, with its path strings; pool callback may be set later */
    bool skip_health;          /* tests and `--no-health-check` only */
};

int guard_new(const struct guard_opts *o, struct guard **out);
void guard_free(struct guard *g);
void guard_set_pool_check(struct guard *g, health_pool_fn fn, void *ud);

/* Wait for a slot (cancel_fd: readable = give up with -ECANCELED; -1 = none), then check
 * health. On -EHOSTDOWN the slot is not held. */
int guard_enter(struct guard *g, const char *what, int cancel_fd, struct err *e);
void guard_leave(struct guard *g);

/* The last health report the guard ran (for status displays). */
void guard_last_report(struct guard *g, struct health_report *out);
