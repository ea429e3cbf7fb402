/*
 * forklock.c: see forklock.h.
 */
#include "util/forklock.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>

/* Writer-preferring: with glibc's default (readers first) a steady stream of overlapping
 * header reads from the fetch threads could hold a fork off until the scans end. */
#define FORKLOCK_INITIALIZER PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP

static pthread_rwlock_t g_forklock = FORKLOCK_INITIALIZER;

/* AddressSanitizer's allocator (sanitizer builds only). clang 14's runtime installs no fork
 * handler for it: a mount child that allocates could find a size class's region lock copied
 * held by a parent thread that was refilling its cache at the fork, and wait forever (seen in
 * pipeline_overlay, about once in 30 runs). So the fork is made the way later runtimes make it
 * themselves: allocator, thread registry and stack depot locked across fork(), released in
 * both processes. The runtime's own functions, declared weak: a runtime without them (or a
 * build without ASan) leaves them NULL and nothing is locked. */
#if defined(__SANITIZE_ADDRESS__)
#define FORKLOCK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FORKLOCK_ASAN 1
#endif
#endif
#ifdef FORKLOCK_ASAN
extern void asan_lock_allocator(void) __asm__("_ZN6__lsan13LockAllocatorEv") __attribute__((weak));
extern void asan_unlock_allocator(void) __asm__("_ZN6__lsan15UnlockAllocatorEv")
    __attribute__((weak));
extern void asan_lock_threads(void) __asm__("_ZN6__lsan18LockThreadRegistryEv")
    __attribute__((weak));
extern void asan_unlock_threads(void) __asm__("_ZN6__lsan20UnlockThreadRegistryEv")
    __attribute__((weak));
extern void asan_lock_depot(void) __asm__("_ZN11__sanitizer17StackDepotLockAllEv")
    __attribute__((weak));
extern void asan_unlock_depot(void) __asm__("_ZN11__sanitizer19StackDepotUnlockAllEv")
    __attribute__((weak));
/* The quarantine of freed blocks has a lock of its own that no exported function takes. A
 * child that inherits it held (a parent thread was moving its freed blocks into the shared
 * quarantine at the fork) waits forever in a free(): about once in 2,000 forks with two
 * threads allocating without pause. Re-applying the allocator's options in the child
 * re-creates the quarantine's locks. It would also re-poison the redzones of every block in
 * the heap (0.3 s with a full quarantine): poisoning is switched off around it, the redzones
 * being intact already. The options are 20 bytes in clang 14; the buffer leaves room. */
struct asan_allocator_options {
    _Alignas(8) unsigned char bytes[64];
};
extern void asan_get_options(struct asan_allocator_options *o) __asm__(
    "_ZN6__asan19GetAllocatorOptionsEPNS_16AllocatorOptionsE") __attribute__((weak));
extern void asan_reinit_allocator(const struct asan_allocator_options *o) __asm__(
    "_ZN6__asan21ReInitializeAllocatorERKNS_16AllocatorOptionsE") __attribute__((weak));
extern bool asan_can_poison(void) __asm__("_ZN6__asan15CanPoisonMemoryEv") __attribute__((weak));
extern void asan_set_can_poison(bool on) __asm__("_ZN6__asan18SetCanPoisonMemoryEb")
    __attribute__((weak));

static bool asan_lockable(void)
{
    return asan_lock_allocator && asan_unlock_allocator && asan_lock_threads &&
           asan_unlock_threads && asan_lock_depot && asan_unlock_depot;
}

static void asan_before_fork(void)
{
    if (!asan_lockable())
        return;
    asan_lock_threads();
    asan_lock_allocator();
    asan_lock_depot();
}

static void asan_after_fork(void)
{
    if (!asan_lockable())
        return;
    asan_unlock_depot();
    asan_unlock_allocator();
    asan_unlock_threads();
}

static void asan_child_after_fork(void)
{
    if (!asan_get_options || !asan_reinit_allocator || !asan_can_poison || !asan_set_can_poison)
        return;
    struct asan_allocator_options o = {0};
    asan_get_options(&o);
    bool poison = asan_can_poison();
    asan_set_can_poison(false);
    asan_reinit_allocator(&o);
    asan_set_can_poison(poison);
}
#else
static void asan_before_fork(void)
{
}
static void asan_after_fork(void)
{
}
static void asan_child_after_fork(void)
{
}
#endif

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
    asan_before_fork();
    pid_t pid = fork();
    int saved = errno;
    asan_after_fork(); /* in both: the child's copies are its own now */
    errno = saved;
    if (pid == 0) {
        asan_child_after_fork();
        /* The copy is held by a thread that does not exist here: start afresh. */
        pthread_rwlock_t fresh = FORKLOCK_INITIALIZER;
        g_forklock = fresh;
        return 0;
    }
    pthread_rwlock_unlock(&g_forklock);
    return pid;
}
