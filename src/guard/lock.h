/*
 * lock.h: the process lock: flock(2) on <state-dir>/thinimg.lock.
 *
 * One thinimg process at a time manages a state directory (runs the FSMs, touches the pool).
 * flock is released by the kernel when the holder dies, so there are no stale locks to break
 * and a crashed holder never blocks the next start. The file holds the holder's
 * {"pid", "started_at_ms", "command"} as JSON for diagnostics ("held by pid 1234
 * (process-image, started 12s ago)"); its content is advisory, the flock is the lock.
 *
 * Ownership: a held lock is released by proc_lock_release() or by process exit. The fd is
 * O_CLOEXEC, so children started with exec do not inherit the lock; forked children that do
 * not exec share it (harmless: it is released when the last holder closes).
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

struct proc_lock {
    int fd;     /* -1 when not held */
};

struct lock_holder {
    pid_t pid;
    int64_t started_at_ms;
    char command[128];
};

#define PROC_LOCK_INIT {-1}

/* Take the lock. wait_ms: 0 = fail at once, > 0 = wait up to that long, < 0 = forever.
 * When held by another process: -EBUSY (or -ETIMEDOUT after waiting), with *holder filled when
 * not NULL and e saying who holds it and what to do. */
int proc_lock_acquire(const char *path, const char *command, int64_t wait_ms,
                      struct proc_lock *out, struct lock_holder *holder, struct err *e);
void proc_lock_release(struct proc_lock *l);

/* Who holds the lock at path: 0 and *out filled when a live process holds it, -ESRCH when
 * nobody does, -ENOENT when the file does not exist. Does not take the lock. */
int proc_lock_holder(const char *path, struct lock_holder *out);

/* "pid 1234 (process-image, started 12s ago)" */
void lock_holder_describe(const struct lock_holder *h, char *out, size_t n);
