/*
 * forklock.c: see forklock.h.
 */
#include "util/forklock.h"

#include <pthread.h>
#include <unistd.h>

static pthread_rwlock_t g_forklock = PTHREAD_RWLOCK_INITIALIZER;

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
        pthread_rwlock_t fresh = PTHREAD_RWLOCK_INITIALIZER;
        g_forklock = fresh;
        return 0;
    }
    pthread_rwlock_unlock(&g_forklock);
    return pid;
}
