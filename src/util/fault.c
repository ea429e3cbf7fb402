/*
 * fault.c: fault-injection points for crash tests. See fault.h.
 */
#include "util/fault.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/timeutil.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *spec;  /* THINIMG_FAULT or NULL */
static atomic_long skip;  /* THINIMG_FAULT_SKIP */
static atomic_bool stopped; /* a ":stop" point has fired: later ones pass */

static void load(void)
{
    const char *s = getenv("THINIMG_FAULT");
    spec = s && *s ? s : NULL;
    const char *k = getenv("THINIMG_FAULT_SKIP");
    atomic_store(&skip, k ? atol(k) : 0);
}

static void *kill_later(void *arg)
{
    sleep_ms((int64_t)(intptr_t)arg);
    raise(SIGKILL);
    return NULL;
}

void fault_point(const char *name)
{
    pthread_once(&once, load);
    if (!spec)
        return;
    size_t n = strlen(name);
    for (const char *p = spec; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len >= n && !strncmp(p, name, n) && (len == n || p[n] == '+' || p[n] == ':')) {
            if (atomic_fetch_sub(&skip, 1) > 0)
                return;
            if (p[n] == ':' && len - n == strlen(":stop") && !strncmp(p + n, ":stop", len - n)) {
                if (atomic_exchange(&stopped, true))
                    return;
                char msg[160];
                int k = snprintf(msg, sizeof(msg), "thinimg: fault point %s: SIGSTOP\n", name);
                if (write(2, msg, (size_t)k) < 0) {
                    /* nothing to do */
                }
                raise(SIGSTOP); /* the whole process; SIGCONT lets it go on */
                return;
            }
            long delay = len > n ? strtol(p + n + 1, NULL, 10) : 0;
            /* Tell the test which point fired: a line on stderr, unbuffered. */
            char msg[160];
            int k = snprintf(msg, sizeof(msg), "thinimg: fault point %s: SIGKILL%s\n", name,
                             delay ? " (delayed)" : "");
            if (write(2, msg, (size_t)k) < 0) {
                /* nothing to do */
            }
            if (delay <= 0)
                raise(SIGKILL);
            pthread_t t;
            pthread_create(&t, NULL, kill_later, (void *)(intptr_t)delay);
            pthread_detach(t);
            return;
        }
        p = end ? end + 1 : NULL;
    }
}
