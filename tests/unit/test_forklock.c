/*
 * test_forklock.c: a child of forklock_fork() can allocate while other threads of the parent
 * allocate and free without pause. Under AddressSanitizer (the sanitizer build) a child used
 * to inherit an allocator lock another thread held at the fork and wait forever in its first
 * malloc: about 3 forks in 500 with this load before forklock_fork() locked the runtime's
 * allocator across the fork, and about 1 in 2,000 in a free() (the quarantine's lock) before
 * it re-created the quarantine's locks in the child (util/forklock.c). Each child must exit
 * within CHILD_DEADLINE_MS; a hung one is killed and counted. Under ASan each child also
 * checks that the runtime still guards its heap after that: a block's redzone and a freed
 * block are poisoned.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/forklock.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define SPINNERS          2
#define BATCH             2000 /* objects per size class: every batch refills and drains */
#define FORKS             300
#define CHILD_DEADLINE_MS 5000

static atomic_bool g_stop;

/* Allocates and frees BATCH objects of each size class from 16 bytes to 4 KiB. */
static void churn(void **slots)
{
    for (size_t size = 16; size <= 4096; size *= 2) {
        for (int i = 0; i < BATCH; i++)
            slots[i] = malloc(size);
        for (int i = 0; i < BATCH; i++)
            free(slots[i]);
    }
}

static void *spinner(void *arg)
{
    (void)arg;
    void **slots = calloc(BATCH, sizeof(*slots));
    while (slots && !atomic_load(&g_stop))
        churn(slots);
    free(slots);
    return NULL;
}

/* In the child: 0 when the sanitizer (if any) still poisons a redzone and a freed block. */
static int heap_guarded(void)
{
#ifdef TEST_ASAN
    char *volatile p = malloc(16);
    if (!p || !__asan_address_is_poisoned(p + 16))
        return 2;
    free(p);
    if (!__asan_address_is_poisoned(p))
        return 3;
#endif
    return 0;
}

/* The child's exit status when it exited in time, -1 when it had to be killed. */
static int reap(pid_t pid)
{
    for (int ms = 0; ms < CHILD_DEADLINE_MS; ms++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void test_child_allocates_while_parent_threads_churn(void **state)
{
    (void)state;
    pthread_t t[SPINNERS];
    atomic_store(&g_stop, false);
    for (int i = 0; i < SPINNERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, spinner, NULL), 0);
    static void *child_slots[BATCH];
    int stuck = 0, unguarded = 0;
    for (int k = 0; k < FORKS; k++) {
        pid_t pid = forklock_fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            churn(child_slots);
            _exit(heap_guarded());
        }
        int r = reap(pid);
        stuck += r < 0;
        unguarded += r > 0;
    }
    atomic_store(&g_stop, true);
    for (int i = 0; i < SPINNERS; i++)
        pthread_join(t[i], NULL);
    if (stuck || unguarded)
        fail_msg("of %d forked children, %d did not finish their allocations within %d ms and "
                 "%d failed (a heap the sanitizer no longer guards, or a crash)",
                 FORKS, stuck, CHILD_DEADLINE_MS, unguarded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_allocates_while_parent_threads_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
