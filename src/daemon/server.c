/*
 * server.c: libmicrohttpd glue for the admin API: body collection with a size cap, JSON
 * replies, deferred replies (jobs on worker threads, long polls parked with one waiter
 * thread) through MHD's suspend/resume, and an orderly stop. See server.h.
 *
 * A connection's state (struct conn) is created on the first call of the access handler and
 * freed by the request-completed callback. While a connection is suspended, MHD does not touch
 * it: the worker or the waiter owns it until it sets the reply and resumes it, and must not
 * touch it afterwards (MHD may complete and free it at once on another thread).
 */
#include "daemon/server.h"

#include <errno.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/mhd_lib.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/timeutil.h"

enum phase { PH_NEW = 0, PH_DEFERRED, PH_READY };

struct conn {
    struct http_server *srv;
    struct MHD_Connection *mhd;
    struct buf body;
    bool too_large;
    enum phase phase;
    bool deferred; /* counted in srv->n_deferred until completed */
    bool gone;     /* the client hung up while parked: close without a reply */
    enum http_next kind;
    struct http_reply reply;
    struct http_deferred d;
    int64_t deadline; /* waits: CLOCK_MONOTONIC ms */
    int fd;           /* waits: the client's socket, polled for hang-ups */
    struct conn *next;
};

struct http_server {
    struct MHD_Daemon *mhd;
    struct http_server_opts o;
    char name[16];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct conn *jobs_head, *jobs_tail; /* queued jobs, FIFO */
    struct conn *waits;                 /* parked long polls */
    pthread_t *workers;
    int n_workers;
    pthread_t waiter;
    bool waiter_started;
    int wake_fd;   /* eventfd: the waiter re-checks */
    int cancel_fd; /* eventfd: readable once stopping (jobs give up waiting) */
    bool stopping, quiesced;
    int n_deferred;
    int n_jobs; /* queued or running */
};

/* ---- replies --------------------------------------------------------------------------------- */

void http_reply_free(struct http_reply *r)
{
    json_decref(r->json);
    free(r->text);
    memset(r, 0, sizeof(*r));
}

void http_reply_json(struct http_reply *out, unsigned status, json_t *j)
{
    http_reply_free(out);
    out->status = status;
    out->json = j ? j : json_object();
}

static void reply_errorv(struct http_reply *out, unsigned status, const char *reason,
                         const char *fmt, va_list ap)
{
    char msg[ERR_MSG_MAX];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    http_reply_json(
        out, status,
        json_pack("{s:s, s:i, s:s}", "error", msg, "code", (int)status, "reason", reason));
}

void http_reply_error(struct http_reply *out, unsigned status, const char *reason, const char *fmt,
                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_errorv(out, status, reason, fmt, ap);
    va_end(ap);
}

void http_reply_errno(struct http_reply *out, int r, const char *fmt, ...)
{
    const char *reason;
    unsigned status = api_status_for_errno(r, &reason);
    va_list ap;
    va_start(ap, fmt);
    reply_errorv(out, status, reason, fmt, ap);
    va_end(ap);
}

void http_reply_err(struct http_reply *out, int r, const struct err *e)
{
    int code = e && e->code ? e->code : r;
    http_reply_errno(out, code, "%s", e && e->code ? err_str(e) : strerror(-code));
}

const char *http_query(const struct http_request *rq, const char *key)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, key);
}

static enum MHD_Result queue_reply(struct MHD_Connection *mhd, struct http_reply *r)
{
    char *body = NULL;
    size_t len = 0;
    const char *ct = "application/json";
    if (r->json) {
        body = json_dumps(r->json, JSON_COMPACT);
        if (body) {
            len = strlen(body);
            char *b2 = realloc(body, len + 2);
            if (b2) {
                body = b2;
                body[len++] = '\n';
                body[len] = '\0';
            }
        }
    } else if (r->text) {
        body = r->text;
        r->text = NULL;
        len = r->text_len;
        ct = r->content_type ? r->content_type : "text/plain; charset=utf-8";
    }
    if (!body) {
        body = strdup("");
        len = 0;
        if (!body) {
            http_reply_free(r);
            return MHD_NO;
        }
    }
    unsigned status = r->status ? r->status : 200;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        http_reply_free(r);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ct);
    if (r->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    enum MHD_Result ret = MHD_queue_response(mhd, status, resp);
    MHD_destroy_response(resp);
    http_reply_free(r);
    return ret;
}

/* ---- deferred replies ------------------------------------------------------------------------ */

static void wake(int fd)
{
    uint64_t one = 1;
    ssize_t w = write(fd, &one, sizeof(one));
    (void)w;
}

/* Hand a deferred connection back to MHD with its reply set (never touch c afterwards). */
static void finish(struct conn *c)
{
    c->phase = PH_READY;
    MHD_resume_connection(c->mhd);
}

static void reply_shutting_down(struct conn *c)
{
    http_reply_error(&c->reply, 503, "shutting_down",
                     "the daemon is shutting down; the request was not carried out (runs "
                     "resume at the next start)");
}

/* A list of deferred connections (linked by next) that will not be served: 503 each. */
static void answer_all_shutting_down(struct conn *c)
{
    while (c) {
        struct conn *next = c->next;
        reply_shutting_down(c);
        finish(c);
        c = next;
    }
}

static void *worker_main(void *arg)
{
    struct http_server *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->jobs_head && !s->stopping)
            pthread_cond_wait(&s->cond, &s->lock);
        if (s->stopping)
            break;
        struct conn *c = s->jobs_head;
        s->jobs_head = c->next;
        if (!s->jobs_head)
            s->jobs_tail = NULL;
        pthread_mutex_unlock(&s->lock);
        c->d.job(c->d.ud, s->cancel_fd, &c->reply);
        finish(c);
        pthread_mutex_lock(&s->lock);
        s->n_jobs--;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* The waiter: parked long polls, woken by notify, deadlines and hang-ups. */
static void *waiter_main(void *arg)
{
    struct http_server *s = arg;
    struct pollfd *pf = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        size_t n = 1;
        for (struct conn *c = s->waits; c; c = c->next)
            n++;
        if (n > cap) {
            struct pollfd *v = realloc(pf, n * sizeof(*pf));
            if (!v) {
                pthread_mutex_unlock(&s->lock);
                sleep_ms(100);
                pthread_mutex_lock(&s->lock);
                continue;
            }
            pf = v;
            cap = n;
        }
        pf[0] = (struct pollfd){s->wake_fd, POLLIN, 0};
        int64_t now = mono_ms(), next = now + 60000;
        size_t k = 1;
        for (struct conn *c = s->waits; c; c = c->next, k++) {
            /* Only hang-ups: asking for POLLIN would spin on a pipelined request. */
            pf[k] = (struct pollfd){c->fd, POLLRDHUP, 0};
            if (c->deadline < next)
                next = c->deadline;
        }
        pthread_mutex_unlock(&s->lock);
        int timeout = next > now ? (int)(next - now) : 0;
        poll(pf, n, timeout);
        if (pf[0].revents & POLLIN) {
            uint64_t v;
            ssize_t rd = read(s->wake_fd, &v, sizeof(v));
            (void)rd;
        }
        pthread_mutex_lock(&s->lock);
        if (s->stopping)
            break;
        /* Take the connections that are done out of the list (the list only grew at its head
         * meanwhile, so the first n-1 entries after the new ones match pf[1..]). */
        size_t added = 0;
        for (struct conn *c = s->waits; c; c = c->next)
            added++;
        added -= n - 1;
        struct conn *done = NULL, **pp = &s->waits;
        size_t idx = 0;
        now = mono_ms();
        while (*pp) {
            struct conn *c = *pp;
            bool old = idx >= added;
            short rev = old ? pf[1 + idx - added].revents : 0;
            idx++;
            bool gone = rev & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL);
            int fin = s->o.run_finished ? s->o.run_finished(s->o.ctx, &c->d.run) : 1;
            if (gone || fin != 0 || now >= c->deadline) {
                c->gone = gone;
                c->phase = fin != 0 ? PH_READY : PH_DEFERRED; /* remember "finished" */
                *pp = c->next;
                c->next = done;
                done = c;
            } else {
                pp = &c->next;
            }
        }
        pthread_mutex_unlock(&s->lock);
        while (done) {
            struct conn *c = done;
            done = c->next;
            if (!c->gone)
                c->d.done(c->d.ud, c->phase == PH_READY, &c->reply);
            finish(c);
        }
        pthread_mutex_lock(&s->lock);
    }
    /* Stopping: every parked poll gets its 503. */
    struct conn *c = s->waits;
    s->waits = NULL;
    pthread_mutex_unlock(&s->lock);
    answer_all_shutting_down(c);
    free(pf);
    return NULL;
}

/* ---- MHD callbacks --------------------------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mhd, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct http_server *s = cls;
    struct conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        c->srv = s;
        c->mhd = mhd;
        c->fd = -1;
        const char *cl =
            MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > API_MAX_BODY_BYTES)
            c->too_large = true;
        *con_cls = c;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!c->too_large && c->body.len + *upload_size > API_MAX_BODY_BYTES) {
            c->too_large = true;
            buf_free(&c->body);
        }
        if (!c->too_large && buf_append(&c->body, upload, *upload_size) < 0)
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->phase == PH_READY)
        return c->gone ? MHD_NO : queue_reply(mhd, &c->reply);
    if (c->phase == PH_DEFERRED)
        return MHD_YES; /* not resumed yet (does not happen: suspended connections are idle) */
    if (c->too_large) {
        http_reply_error(&c->reply, 413, "too_large", "request body over %d bytes",
                         API_MAX_BODY_BYTES);
        return queue_reply(mhd, &c->reply);
    }
    struct http_request rq = {.method = method,
                              .path = url,
                              .body = c->body.data ? c->body.data : "",
                              .body_len = c->body.len,
                              .conn = mhd};
    struct http_deferred d = {0};
    enum http_next next = s->o.handler(s->o.ctx, &rq, &c->reply, &d);
    if (next == HTTP_DONE || (next == HTTP_JOB && (!d.job || !s->n_workers)) ||
        (next == HTTP_WAIT && (!d.done || !s->o.run_finished))) {
        if (next != HTTP_DONE) {
            if (d.free_ud)
                d.free_ud(d.ud);
            http_reply_error(&c->reply, 500, "internal", "this server cannot defer replies");
        }
        return queue_reply(mhd, &c->reply);
    }
    c->d = d;
    c->kind = next;
    c->phase = PH_DEFERRED;
    MHD_suspend_connection(mhd);
    pthread_mutex_lock(&s->lock);
    c->deferred = true;
    s->n_deferred++;
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        reply_shutting_down(c);
        finish(c);
        return MHD_YES;
    }
    if (next == HTTP_JOB) {
        if (s->jobs_tail)
            s->jobs_tail->next = c;
        else
            s->jobs_head = c;
        s->jobs_tail = c;
        s->n_jobs++;
        pthread_cond_signal(&s->cond);
    } else {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        int64_t t = d.timeout_ms < 0 ? 0 : d.timeout_ms;
        c->deadline = mono_ms() + t;
        c->next = s->waits;
        s->waits = c;
        wake(s->wake_fd);
    }
    pthread_mutex_unlock(&s->lock);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *mhd, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)mhd;
    (void)toe;
    struct http_server *s = cls;
    struct conn *c = *con_cls;
    if (!c)
        return;
    *con_cls = NULL;
    buf_free(&c->body);
    http_reply_free(&c->reply);
    if (c->d.free_ud)
        c->d.free_ud(c->d.ud);
    if (c->deferred) {
        pthread_mutex_lock(&s->lock);
        s->n_deferred--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    free(c);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct http_server *s = cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_debug("http server", "server=%s detail=%s", s->name, msg);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

int http_server_start(const struct http_server_opts *o, struct http_server **out, struct err *e)
{
    int lr = mhd_lib_load(e); /* libmicrohttpd is loaded on first use (mhd_lib.h) */
    if (lr < 0) {
        close(o->listen_fd);
        return lr;
    }
    struct http_server *s = calloc(1, sizeof(*s));
    if (!s) {
        close(o->listen_fd);
        return -ENOMEM;
    }
    s->o = *o;
    snprintf(s->name, sizeof(s->name), "%s", o->name ? o->name : "http");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->wake_fd < 0 || s->cancel_fd < 0) {
        int r = -errno;
        close(o->listen_fd);
        http_server_stop(s);
        return err_set(e, r, "eventfd: %s", strerror(-r));
    }
    int threads = o->threads > 0 ? o->threads : HTTP_THREADS;
    unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    /* A pool of one is no pool (MHD says so on stderr): then the polling thread serves. */
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, o->listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(threads > 1 ? threads : 0),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_CONNECTION_TIMEOUT_S,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_END);
    if (!s->mhd) {
        close(o->listen_fd);
        http_server_stop(s);
        return err_set(e, -EIO, "cannot start the %s HTTP server (libmicrohttpd)",
                       o->name ? o->name : "");
    }
    if (o->run_finished) {
        if (pthread_create(&s->waiter, NULL, waiter_main, s) != 0) {
            http_server_stop(s);
            return err_set(e, -EAGAIN, "cannot start the waiter thread");
        }
        s->waiter_started = true;
    }
    int nw = o->job_workers > 0 ? o->job_workers : HTTP_JOB_WORKERS;
    s->workers = calloc((size_t)nw, sizeof(*s->workers));
    for (int i = 0; s->workers && i < nw; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0)
            break;
        s->n_workers++;
    }
    *out = s;
    return 0;
}

void http_server_notify(struct http_server *s)
{
    if (s && s->wake_fd >= 0)
        wake(s->wake_fd);
}

void http_server_stats(struct http_server *s, int *waiting, int *jobs)
{
    *waiting = *jobs = 0;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    for (struct conn *c = s->waits; c; c = c->next)
        (*waiting)++;
    *jobs = s->n_jobs;
    pthread_mutex_unlock(&s->lock);
}

void http_server_quiesce(struct http_server *s)
{
    if (!s || !s->mhd)
        return;
    pthread_mutex_lock(&s->lock);
    bool already = s->quiesced;
    s->quiesced = true;
    pthread_mutex_unlock(&s->lock);
    if (already)
        return;
    MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void http_server_stop(struct http_server *s)
{
    if (!s)
        return;
    http_server_quiesce(s);
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->cancel_fd >= 0)
        wake(s->cancel_fd);
    if (s->wake_fd >= 0)
        wake(s->wake_fd);
    if (s->waiter_started)
        pthread_join(s->waiter, NULL);
    for (int i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    /* Jobs that never started get their 503. */
    pthread_mutex_lock(&s->lock);
    struct conn *c = s->jobs_head;
    s->jobs_head = s->jobs_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    answer_all_shutting_down(c);
    /* Let the deferred replies go out before the connections are closed. */
    if (s->mhd) {
        int64_t deadline = mono_ms() + HTTP_DRAIN_MS;
        pthread_mutex_lock(&s->lock);
        while (s->n_deferred > 0 && mono_ms() < deadline) {
            pthread_mutex_unlock(&s->lock);
            sleep_ms(10);
            pthread_mutex_lock(&s->lock);
        }
        pthread_mutex_unlock(&s->lock);
        MHD_stop_daemon(s->mhd);
    }
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    if (s->cancel_fd >= 0)
        close(s->cancel_fd);
    free(s->workers);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
