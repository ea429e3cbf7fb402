/*
 * guard.c: semaphore + health gate for devicemapper-heavy sections. See guard.h.
 */
#include "guard/guard.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/timeutil.h"

struct guard {
    char cursor_path[4096]; /* copies of the health option strings (the caller's may go) */
    char kmsg_path[4096];
    char proc_root[4096];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int slots, in_use;
    struct guard_opts opts;
    struct health_report last;
    int64_t last_ok_ms; /* mono time of the last healthy report, 0 = none */
};

int guard_new(const struct guard_opts *o, struct guard **out)
{
    struct guard *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    if (o)
        g->opts = *o;
    /* Own copies of the paths: the options often live on the caller's stack. */
    const char **paths[] = {&g->opts.health.cursor_path, &g->opts.health.kmsg_path,
                            &g->opts.health.proc_root};
    char *copies[] = {g->cursor_path, g->kmsg_path, g->proc_root};
    for (size_t i = 0; i < 3; i++) {
        if (*paths[i]) {
            snprintf(copies[i], sizeof(g->cursor_path), "%s", *paths[i]);
            *paths[i] = copies[i];
        }
    }
    g->slots = g->opts.concurrency > 0 ? g->opts.concurrency : GUARD_DEFAULT_CONCURRENCY;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    *out = g;
    return 0;
}

void guard_free(struct guard *g)
{
    if (!g)
        return;
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    free(g);
}

void guard_set_pool_check(struct guard *g, health_pool_fn fn, void *ud)
{
    pthread_mutex_lock(&g->lock);
    g->opts.health.pool = fn;
    g->opts.health.pool_ud = ud;
    pthread_mutex_unlock(&g->lock);
}

static bool cancelled(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
}

int guard_enter(struct guard *g, const char *what, int cancel_fd, struct err *e)
{
    pthread_mutex_lock(&g->lock);
    while (g->in_use >= g->slots) {
        if (cancelled(cancel_fd)) {
            pthread_mutex_unlock(&g->lock);
            return err_set(e, -ECANCELED, "%s: cancelled while waiting for the operation guard",
                           what);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->cond, &g->lock, &ts);
    }
    g->in_use++;
    bool fresh = g->last_ok_ms && mono_ms() - g->last_ok_ms < GUARD_HEALTH_CACHE_MS;
    struct health_opts ho = g->opts.health;
    pthread_mutex_unlock(&g->lock);
    if (g->opts.skip_health || fresh)
        return 0;

    struct health_report rep;
    int r = health_run(&ho, &rep);
    pthread_mutex_lock(&g->lock);
    if (r == 0) {
        g->last = rep;
        g->last_ok_ms = rep.overall == HEALTH_FAIL ? 0 : mono_ms();
    }
    pthread_mutex_unlock(&g->lock);
    if (r < 0) {
        guard_leave(g);
        return err_set(e, r, "%s: cannot run health checks", what);
    }
    if (rep.overall == HEALTH_FAIL) {
        guard_leave(g);
        char summary[1500];
        health_report_summary(&rep, summary, sizeof(summary));
        log_warn("operation refused: host unhealthy", "operation=%s reason=%s", what, summary);
        return err_set(e, -EHOSTDOWN, "%s refused: the host is not healthy: %s", what, summary);
    }
    return 0;
}

void guard_leave(struct guard *g)
{
    pthread_mutex_lock(&g->lock);
    if (g->in_use > 0)
        g->in_use--;
    pthread_cond_signal(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

void guard_last_report(struct guard *g, struct health_report *out)
{
    pthread_mutex_lock(&g->lock);
    *out = g->last;
    pthread_mutex_unlock(&g->lock);
}
