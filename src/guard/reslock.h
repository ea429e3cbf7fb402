/*
 * reslock.h: resource locks in the database (per image, per chain id).
 *
 * The process lock keeps two managers apart; resource locks keep two pieces of work on the same
 * resource apart even when they come from different processes over time (a CLI run and, after
 * it died, a daemon). A lock row names its owner by pid + boot id + the process start time
 * (field 22 of /proc/PID/stat), which together identify one live process: a pid reused after
 * a reboot or by another program does not match, so a dead owner's lock is broken safely and a
 * live owner's lock is never stolen.
 *
 * Resources are strings by convention: "image:<ref>", "chain:<chain id>".
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/db.h"
#include "util/err.h"

struct lock_owner {
    pid_t pid;
    char boot_id[40];
    int64_t start_ticks;
};

/* This process. */
int lock_owner_self(struct lock_owner *out);
/* True when the owner is this very process or a live process with the same start time on the
 * same boot. */
bool lock_owner_alive(const struct lock_owner *o);

/* Take resource for this process. Re-taking one's own lock succeeds. A lock held by a live
 * other process: -EBUSY with e naming the owner and purpose. A dead owner's lock is replaced
 * (logged). Runs in its own short transaction (or the caller's). */
int reslock_acquire(struct db *db, const char *resource, const char *purpose, struct err *e);
/* Release if this process holds it (-ENOENT otherwise). */
int reslock_release(struct db *db, const char *resource);
/* Locks whose owner is dead, as "resource (purpose, pid N)" lines for gc reports; and remove
 * them when remove is true. Returns the count. */
int reslock_stale(struct db *db, bool remove, void (*cb)(const char *line, void *ud), void *ud);
