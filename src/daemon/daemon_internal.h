/*
 * daemon_internal.h: what the daemon's files share (src/daemon only): the daemon's state, the
 * route handler (routes.c) and the metrics collection (collect.c).
 *
 * Fields are set before the servers start and read-only afterwards, except the pool state
 * (pool_lock), the last health report (health_lock) and the view of the idle collection of
 * orphans (orphans_lock).
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>

#include "daemon/daemon.h"
#include "daemon/logring.h"
#include "daemon/server.h"
#include "fsm/fsm.h"
#include "guard/health.h"
#include "pipeline/host.h"
#include "pipeline/pipeline.h"
#include "store/db.h"

struct daemon {
    const struct daemon_opts *o;
    const struct config *cfg;
    char socket_path[4096];
    struct host host; /* lock, database, pipeline (pipeline/host.h) */
    /* The host's, named for the routes: */
    struct db *db; /* the pipeline's connection (writes) */
    struct pipeline *p;
    struct fsm_manager *m;
    struct db *ro; /* read-only connection for the API's reads: never waits for the writer */
    struct http_server *api, *metrics;
    struct logring *logs;
    int64_t started_ms;

    pthread_mutex_t pool_lock;
    bool pool_ready;         /* the pool was set up (or adopted) */
    struct err pool_err;     /* why not, when not */
    int64_t pool_retry_mono; /* next setup attempt */

    pthread_mutex_t health_lock;
    struct health_report health; /* the last report of GET /v1/health (n == 0: none) */
    int64_t health_ms;

    int64_t autogc_next_mono;          /* main thread only */
    struct pipeline_orphan_gc orphans; /* the idle collection's state (main thread only) */
    int64_t orphans_next_mono;
    char orphans_refused[256]; /* why the last pass was refused ("" = it was not) */
    pthread_mutex_t orphans_lock;
    struct daemon_orphans_view {            /* what GET /v1/gc shows, copied after each pass */
        size_t waiting;                     /* removable orphans the last pass found */
        int64_t next_due_ms;                /* Unix ms when the next one's grace ends (0: none) */
        int64_t last_pass_ms, next_pass_ms; /* Unix ms (0: none yet) */
        char refused[256];                  /* why the last pass was refused ("": it was not) */
    } orphans_view;
};

/* The admin API (routes.c). */
enum http_next daemon_route(void *ctx, const struct http_request *rq, struct http_reply *out,
                            struct http_deferred *d);
/* /metrics over TCP: GET /metrics only. */
enum http_next daemon_route_metrics(void *ctx, const struct http_request *rq,
                                    struct http_reply *out, struct http_deferred *d);
/* For long polls: 1 finished, 0 not yet, negative errno. */
int daemon_run_finished(void *ctx, const struct fsm_id *run);

/* Metrics (collect.c): describe every family once; the FSM observer; the text for /metrics
 * (malloc'd, NUL-terminated). */
void daemon_metrics_describe(void);
void daemon_observer(const struct fsm_event_info *ev, void *ud);
char *daemon_metrics_text(struct daemon *d, size_t *len);

/* The pool check the health report runs (pool usable or not). */
void daemon_pool_check(struct health_check *c, void *ud);
