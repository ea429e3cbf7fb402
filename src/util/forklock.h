/*
 * forklock.h: fork a child that will use glibc's lock-protected services while other threads
 * may be inside them.
 *
 * A forked child of a threaded process gets a copy of every lock in the state it had at the
 * fork: one that another thread held is held forever in the child. The mount child
 * (dm/mount.h) runs libarchive, whose name conversions call iconv, which takes glibc's gconv
 * lock; the parent's fetch threads run the same code while they scan layers. So the parent's
 * calls that may take that lock run under forklock_shared_enter()/_leave() (cheap: a shared
 * rwlock), and forklock_fork() forks while holding it exclusively: at the fork no thread is
 * inside such a call. The child starts with the lock reset.
 */
#pragma once

#include <sys/types.h>

void forklock_shared_enter(void);
void forklock_shared_leave(void);

/* fork(2) while no thread is between forklock_shared_enter and _leave. Same returns as fork. */
pid_t forklock_fork(void);
