/*
 * server.h: the HTTP machinery of the admin API: libmicrohttpd serving a listening socket the
 * caller bound (a Unix socket for the API, optionally TCP for /metrics), JSON replies, and two
 * ways to answer later without tying up a thread of the server:
 *
 *   jobs   work that may block (a devicemapper removal waits for the operation guard, which
 *          an mkfs may hold for a minute): the connection is suspended, a worker thread runs
 *          the job, the connection is resumed with its reply.
 *   waits  long polls on a run (?wait=S, /wait?timeout=S): the connection is suspended and
 *          parked with one waiter thread that wakes when a run finishes (http_server_notify,
 *          called from the FSM observer), when the deadline passes, or when the client hangs
 *          up (POLLRDHUP on the parked socket: the connection is dropped at once).
 *
 * So a slow client never blocks anyone: request parsing is event-driven in a small thread
 * pool, a client that sends half a request and stalls is dropped by the connection timeout,
 * and nothing waits for a client while holding a lock.
 *
 * Ownership: the server owns the listening fd from http_server_start() on. Replies own their
 * JSON/text. Deferred `ud` pointers are freed with free_ud after done/job ran (or the server
 * stopped). Handlers run on the server's threads and must be thread-safe.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsm/fsm.h"
#include "util/err.h"

struct MHD_Connection;
struct http_server;

/* Threads parsing requests and running quick handlers (database reads): requests are short,
 * slow ones are deferred, so a few threads serve many clients. */
#define HTTP_THREADS 4
/* Workers for jobs (devicemapper removals). They serialize on the operation guard anyway;
 * more than one lets a removal that is refused fast overtake one that waits. */
#define HTTP_JOB_WORKERS 2
/* A connection that sends nothing for this long is closed (a stalled half request). */
#define HTTP_CONNECTION_TIMEOUT_S 15
/* At most this many connections at once (each costs a little memory, never a thread). */
#define HTTP_MAX_CONNECTIONS 256
/* On stop, deferred replies (503) get this long to be written before connections close. */
#define HTTP_DRAIN_MS 1000

struct http_request {
    const char *method;
    const char *path; /* decoded, without the query */
    const char *body; /* NUL-terminated, "" when none */
    size_t body_len;
    struct MHD_Connection *conn;
};
/* A query argument, or NULL. */
const char *http_query(const struct http_request *rq, const char *key);

struct http_reply {
    unsigned status;
    json_t *json; /* body, or */
    char *text;   /* text body (malloc'd) */
    size_t text_len;
    const char *content_type; /* for text; default text/plain */
    const char *allow;        /* Allow header (405) */
};
/* Set the reply (taking the json reference). */
void http_reply_json(struct http_reply *out, unsigned status, json_t *j);
/* {"error", "code", "reason"} from a negative errno (api.h), message printf-style. */
void http_reply_errno(struct http_reply *out, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same from a struct err (its message; its code, else r). */
void http_reply_err(struct http_reply *out, int r, const struct err *e);
/* An error with an explicit status and reason. */
void http_reply_error(struct http_reply *out, unsigned status, const char *reason, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
void http_reply_free(struct http_reply *r);

enum http_next {
    HTTP_DONE = 0, /* the reply is set */
    HTTP_JOB,      /* run deferred.job on a worker */
    HTTP_WAIT,     /* wait for deferred.run, then deferred.done */
};

struct http_deferred {
    /* HTTP_JOB: fill out; cancel_fd becomes readable when the server stops (give up waiting). */
    void (*job)(void *ud, int cancel_fd, struct http_reply *out);
    /* HTTP_WAIT: the run, how long at most, and the reply once it finished (finished true) or
     * the time ran out (false). */
    struct fsm_id run;
    int64_t timeout_ms;
    void (*done)(void *ud, bool finished, struct http_reply *out);
    void *ud;
    void (*free_ud)(void *ud);
};

typedef enum http_next (*http_handler_fn)(void *ctx, const struct http_request *rq,
                                          struct http_reply *out, struct http_deferred *d);
/* For waits: 1 when the run finished, 0 when not yet, negative errno when unknown. */
typedef int (*http_run_finished_fn)(void *ctx, const struct fsm_id *run);

struct http_server_opts {
    int listen_fd;    /* bound and listening; owned by the server from now on */
    const char *name; /* for logs: "api", "metrics" */
    http_handler_fn handler;
    void *ctx;
    http_run_finished_fn run_finished; /* NULL: HTTP_WAIT is not used */
    int threads;                       /* 0: HTTP_THREADS */
    int job_workers;                   /* 0: HTTP_JOB_WORKERS; jobs need them */
};

int http_server_start(const struct http_server_opts *o, struct http_server **out, struct err *e);
/* A run finished somewhere: parked waits check their runs. Cheap; never blocks. */
void http_server_notify(struct http_server *s);
/* Requests parked in long polls, and jobs queued or running, right now (for /metrics). */
void http_server_stats(struct http_server *s, int *waiting, int *jobs);
/* Stop accepting connections (the listening socket is closed); requests in progress go on. */
void http_server_quiesce(struct http_server *s);
/* Quiesce, answer every deferred request 503 (shutting_down), give the replies HTTP_DRAIN_MS,
 * close every connection, join the threads, free. NULL is fine. */
void http_server_stop(struct http_server *s);
