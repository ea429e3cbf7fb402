/*
 * forklock.c: see forklock.h.
 */
#include "util/forklock.h"

#include <pthread.h>
#include <unistd.h>

/* Writer-preferring: with glibc's default (readers first) a steady stream of overlapping
 * header reads from the fetch threads could hold a fork off until the scans end. */
#define FORKLOCK_INITIALIZER PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP

static pthread_rwlock_t g_forklock = FORKLOCK_INITIALIZER;

void forklock_shared_enter(void)
{
    pthread_rwlock_rdlock(&g_forklock);
}

void forklock_shared_leave(void)
{
    pthread_rwlock_unlock(&g_forklock);
}

pid_t forklock_fork(void)
{
    pthread_rwlock_wrlock(&g_forklock);
    pid_t pid = fork();
    if (pid == 0) {
        /* The copy is held by a thread that does not exist here: start afresh. */
        pthread_rwlock_t fresh = FORKLOCK_INITIALIZER;
        g_forklock = fresh;
        return 0;
    }
    pthread_rwlock_unlock(&g_forklock);
    return pid;
}
