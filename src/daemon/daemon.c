/*
 * daemon.c: `thinimg daemon`: start-up, the signal loop, pool setup retries, and the bounded
 * shutdown. See daemon.h; the endpoints are in routes.c, the metrics in collect.c.
 */
#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/daemon_internal.h"
#include "daemon/views.h"
#include "dm/pool.h"
#include "pipeline/activate.h"
#include "pipeline/backend.h"
#include "pipeline/gc.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/timeutil.h"

/* How often the signal loop wakes up for periodic work (pool setup retries). */
#define DAEMON_TICK_MS 1000
/* How often an idle daemon looks at pool usage for automatic gc (one status ioctl and one
 * query of the runs table). */
#define DAEMON_AUTOGC_INTERVAL_MS 5000
/* The idle collection of orphans looks every quarter of the grace period (an orphan goes at
 * most a quarter late), but not more often than every tick nor less often than this: each look
 * is a guard entry (health checks) and a scan (the pool's metadata through thin_ls). */
#define DAEMON_ORPHAN_INTERVAL_MAX_MS 60000

/* ---- listening sockets ----------------------------------------------------------------------- */

int daemon_listen_unix(const char *path, mode_t mode, struct err *e)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || !*path || strlen(path) >= sizeof(sa.sun_path))
        return err_set(e, -ENAMETOOLONG, "socket path '%s' is empty or longer than %zu bytes",
                       path ? path : "", sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, path, strlen(path));
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return err_set(e, -EEXIST,
                           "%s exists and is not a socket; remove it or choose "
                           "another --socket",
                           path);
        /* A socket file: stale when nobody answers on it. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(probe);
            return err_set(e, -EADDRINUSE,
                           "another process serves %s (another daemon with another state "
                           "directory?); choose another --socket",
                           path);
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return err_set(e, -errno, "socket: %s", strerror(errno));
    /* Nobody can connect before listen(), so setting the mode between bind and listen leaves
     * no window with looser permissions. */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, mode) < 0 ||
        listen(fd, 64) < 0) {
        int r = -errno;
        close(fd);
        return err_set(e, r, "cannot listen on %s: %s", path, strerror(-r));
    }
    return fd;
}

int daemon_listen_tcp(const char *spec, struct err *e)
{
    char host[256], port[16];
    const char *colon = spec ? strrchr(spec, ':') : NULL;
    if (!colon || !colon[1] || strlen(colon + 1) >= sizeof(port) ||
        (size_t)(colon - spec) >= sizeof(host))
        return err_set(e, -EINVAL,
                       "--metrics-listen '%s': expected ADDR:PORT (127.0.0.1:9100, "
                       "[::1]:9100, :9100)",
                       spec ? spec : "");
    size_t hl = (size_t)(colon - spec);
    memcpy(host, spec, hl);
    host[hl] = '\0';
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    snprintf(port, sizeof(port), "%s", colon + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (g != 0)
        return err_set(e, -EINVAL, "--metrics-listen '%s': %s", spec, gai_strerror(g));
    int r = -EADDRNOTAVAIL;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd =
            socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            r = -errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 64) == 0) {
            freeaddrinfo(ai);
            return fd;
        }
        r = -errno;
        close(fd);
    }
    freeaddrinfo(ai);
    return err_set(e, r, "--metrics-listen '%s': cannot listen: %s", spec, strerror(-r));
}

/* ---- systemd readiness (the sd_notify protocol, without libsystemd) -------------------------- */

static void notify_systemd(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || !*path || strlen(path) >= sizeof(sa.sun_path))
        return;
    size_t n = strlen(path);
    memcpy(sa.sun_path, path, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    ssize_t w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    (void)w;
    close(fd);
}

/* ---- the pool -------------------------------------------------------------------------------- */

static void pool_try(struct daemon *d, bool first)
{
    const struct config *cfg = d->cfg;
    struct pool_info pi;
    struct err e = {0};
    char backend[32] = "";
    if (backend_recorded(d->db, backend, sizeof(backend)) == 1 && strcmp(backend, "dm-thin")) {
        pthread_mutex_lock(&d->pool_lock);
        d->pool_ready = true; /* a backend without a pool (docs/overlay.md) */
        pthread_mutex_unlock(&d->pool_lock);
        return;
    }
    int r = host_pool(d->db, cfg, !d->o->no_pool_setup, &pi, &e);
    pthread_mutex_lock(&d->pool_lock);
    bool was_ready = d->pool_ready, changed = strcmp(d->pool_err.msg, e.msg) != 0;
    d->pool_ready = r == 0;
    d->pool_err = e;
    d->pool_retry_mono = mono_ms() + DAEMON_POOL_RETRY_MS;
    pthread_mutex_unlock(&d->pool_lock);
    if (r == 0 && (first || !was_ready))
        log_info("thin pool ready", "pool=%s action=%s", cfg->pool_name,
                 pool_action_name(pi.action));
    else if (r < 0 && (first || changed || was_ready))
        log_warn("no usable thin pool: processing images is refused until it is fixed; "
                 "retrying",
                 "pool=%s error=%s retry_s=%d", cfg->pool_name, err_str(&e),
                 DAEMON_POOL_RETRY_MS / 1000);
}

/* ---- notification of finished runs (the observer runs on run threads) ------------------------ */

static pthread_mutex_t g_notify_lock = PTHREAD_MUTEX_INITIALIZER;
static struct daemon *g_notify_daemon; /* NULL once the API server is being stopped */

static void observer(const struct fsm_event_info *ev, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&g_notify_lock);
    daemon_observer(ev, g_notify_daemon);
    pthread_mutex_unlock(&g_notify_lock);
}

/* ---- shutdown watchdog ----------------------------------------------------------------------- */

struct watchdog {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    const char *socket_path;
};

static void *watchdog_main(void *arg)
{
    struct watchdog *w = arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += DAEMON_SHUTDOWN_HARD_MS / 1000;
    pthread_mutex_lock(&w->lock);
    while (!w->done)
        if (pthread_cond_timedwait(&w->cond, &w->lock, &ts) == ETIMEDOUT)
            break;
    bool done = w->done;
    pthread_mutex_unlock(&w->lock);
    if (!done) {
        log_error("shutdown did not finish in time; exiting anyway (state is durable: "
                  "unfinished runs resume at the next start)",
                  "limit_ms=%d", DAEMON_SHUTDOWN_HARD_MS);
        unlink(w->socket_path);
        _exit(1);
    }
    return NULL;
}

/* ---- the daemon ------------------------------------------------------------------------------ */

static void teardown(struct daemon *d)
{
    pthread_mutex_lock(&g_notify_lock);
    g_notify_daemon = NULL;
    pthread_mutex_unlock(&g_notify_lock);
    if (d->api) {
        http_server_quiesce(d->api);
        unlink(d->socket_path); /* clients see at once that nobody serves it any more */
    }
    http_server_quiesce(d->metrics);
    /* The metrics server reads the API server's counters: it goes first. */
    http_server_stop(d->metrics);
    http_server_stop(d->api);
    d->api = d->metrics = NULL;
    host_close(&d->host, DAEMON_SHUTDOWN_TIMEOUT_MS);
    d->db = NULL;
    d->p = NULL;
    d->m = NULL;
    db_close(d->ro);
    d->ro = NULL;
    log_set_hook(NULL, NULL);
    logring_free(d->logs);
    d->logs = NULL;
    pthread_mutex_destroy(&d->pool_lock);
    pthread_mutex_destroy(&d->health_lock);
    pthread_mutex_destroy(&d->orphans_lock);
    pipeline_orphan_gc_free(&d->orphans);
}

/* Reconcile at start (docs/architecture.md, docs/safety.md): the database's devices against the pool, before any run
 * resumes (nothing is in flight yet, so what looks orphaned is). Only reported: the log line
 * and a gauge say what `thinimg gc` would collect; nothing is deleted here. */
static void reconcile(struct daemon *d)
{
    pthread_mutex_lock(&d->pool_lock);
    bool ready = d->pool_ready;
    pthread_mutex_unlock(&d->pool_lock);
    if (!ready)
        return;
    struct gc_report rep = {0};
    struct err e = {0};
    int r = gc_scan(d->db, d->cfg, NULL, &rep, &e);
    /* A backend without a pool (overlay) compares its directories and mounts only. */
    bool pool = !rep.backend[0] || !strcmp(rep.backend, backend_dm_thin.name);
    if (r < 0 || (pool && !rep.pool_active)) {
        log_warn("reconcile: the pool and the database could not be compared; thinimg gc "
                 "--dry-run says why",
                 "error=\"%s\"", err_str(&e));
        gc_report_free(&rep);
        return;
    }
    size_t removable = 0;
    for (size_t i = 0; i < rep.n; i++)
        removable += rep.items[i].removable;
    metrics_gauge_set(METRIC_RECONCILE_ORPHANS, (double)removable, NULL);
    char summary[256];
    gc_report_summary(&rep, summary, sizeof(summary));
    if (removable && !d->o->no_auto_gc_orphans)
        log_warn("reconcile: orphans found; the daemon removes them once idle and past their "
                 "grace period (`thinimg gc --dry-run` lists them, `thinimg gc --force` removes "
                 "them now)",
                 "orphans=%zu summary=\"%s\" grace_s=%lld", removable, summary,
                 (long long)(d->orphans.grace_ms / 1000));
    else if (removable)
        log_warn("reconcile: orphans found; `thinimg gc --dry-run` lists them, `thinimg gc "
                 "--force` removes them (--no-auto-gc-orphans: the daemon leaves them)",
                 "orphans=%zu summary=\"%s\"", removable, summary);
    else
        log_info(pool ? "reconcile: the pool and the database agree"
                      : "reconcile: the overlay directories and the database agree",
                 "summary=\"%s\"", summary);
    gc_report_free(&rep);
}

/* What start() binds, so that a failure closes it and removes only a socket it made. */
struct listeners {
    struct daemon *d;
    int api_fd, metrics_fd;
    bool bound;
};

/* host_open's step after the database (host.h): the read-only connection, then the sockets
 * (before the slow parts: a socket in use is reported at once), the pool and the
 * reconciliation, all before any run resumes. */
static int host_opened(struct host *h, void *ud, struct err *e)
{
    struct listeners *l = ud;
    struct daemon *d = l->d;
    const struct daemon_opts *o = d->o;
    d->db = h->db;
    struct db_options ro = {.readonly = true};
    int r = db_open(d->cfg->db_path, &ro, &d->ro, e);
    if (r < 0)
        return r;
    daemon_metrics_describe();
    view_state_dir(d->cfg->state_dir); /* the overlay backend's usage figures (views.h) */
    l->api_fd = daemon_listen_unix(d->socket_path, o->socket_mode ? o->socket_mode : 0600, e);
    if (l->api_fd < 0)
        return l->api_fd;
    l->bound = true;
    if (o->metrics_listen && (l->metrics_fd = daemon_listen_tcp(o->metrics_listen, e)) < 0)
        return l->metrics_fd;
    pool_try(d, true);
    reconcile(d);
    return 0;
}

/* host_open's step before runs resume: every run's events reach the metrics. */
static void host_before_resume(struct host *h, void *ud)
{
    struct daemon *d = ((struct listeners *)ud)->d;
    d->p = h->p;
    d->m = h->mgr;
    g_notify_daemon = d;
    fsm_manager_set_observer(d->m, observer, NULL);
}

static int start_servers(struct daemon *d, struct listeners *l, struct err *e)
{
    struct http_server_opts so = {.listen_fd = l->api_fd,
                                  .name = "api",
                                  .handler = daemon_route,
                                  .ctx = d,
                                  .run_finished = daemon_run_finished};
    l->api_fd = -1;
    int r = http_server_start(&so, &d->api, e);
    if (r >= 0 && l->metrics_fd >= 0) {
        struct http_server_opts mo = {.listen_fd = l->metrics_fd,
                                      .name = "metrics",
                                      .handler = daemon_route_metrics,
                                      .ctx = d,
                                      .threads = 1,
                                      .job_workers = 1};
        l->metrics_fd = -1;
        r = http_server_start(&mo, &d->metrics, e);
    }
    return r;
}

static int start(struct daemon *d, struct err *e)
{
    const struct daemon_opts *o = d->o;
    int r = logring_new(API_LOG_LINES, &d->logs);
    if (r < 0)
        return err_set(e, r, "out of memory");
    log_set_hook(logring_hook, d->logs);
    struct listeners l = {.d = d, .api_fd = -1, .metrics_fd = -1};
    struct host_opts ho = {.cfg = d->cfg,
                           .holder = "daemon",
                           .check_integrity = true,
                           .wait_lock = o->wait_lock,
                           .pool = HOST_POOL_LEAVE, /* pool_try() in host_opened, retried */
                           .pipeline = {.source = o->source,
                                        .queues = o->queues,
                                        .skip_health = o->skip_health},
                           .opened = host_opened,
                           .before_resume = host_before_resume,
                           .ud = &l};
    r = host_open(&ho, &d->host, e);
    if (r >= 0) {
        log_info("unfinished runs resumed", "runs=%d", d->host.resumed);
        int remounts = 0;
        if (pipeline_remount(d->p, &remounts) < 0)
            log_warn("cannot mount every activation again; process-image or activate does it",
                     "started=%d", remounts);
        r = start_servers(d, &l, e);
    }
    if (l.api_fd >= 0)
        close(l.api_fd);
    if (l.metrics_fd >= 0)
        close(l.metrics_fd);
    if (r < 0 && l.bound && !d->api)
        unlink(d->socket_path);
    return r < 0 ? r : 0;
}

static int count_run(const struct fsm_run_record *r, void *ud)
{
    (void)r;
    (*(size_t *)ud)++;
    return 0;
}

/* The idle collection of orphans (pipeline_collect_orphan): one at a time, back to back while
 * there are some past their grace; a refusal (the guard's verdict) is logged when its reason
 * changes, not at every look. */
static void collect_orphans(struct daemon *d)
{
    if (d->o->no_auto_gc_orphans || mono_ms() < d->orphans_next_mono)
        return;
    int64_t every = d->orphans.grace_ms / 4;
    every = every < DAEMON_TICK_MS                  ? DAEMON_TICK_MS
            : every > DAEMON_ORPHAN_INTERVAL_MAX_MS ? DAEMON_ORPHAN_INTERVAL_MAX_MS
                                                    : every;
    struct err e = {0};
    int r = pipeline_collect_orphan(d->p, &d->orphans, &e);
    d->orphans_next_mono = mono_ms() + (r > 0 ? 0 : every);
    if (r == -EHOSTDOWN) {
        if (strcmp(d->orphans_refused, err_str(&e)) != 0)
            log_warn("auto-gc: orphans are not collected while the host is not healthy",
                     "reason=%s waiting=%zu", err_str(&e), d->orphans.waiting);
        snprintf(d->orphans_refused, sizeof(d->orphans_refused), "%s", err_str(&e));
    } else if (d->orphans_refused[0]) {
        log_info("auto-gc: the host is healthy again; orphans are collected when idle");
        d->orphans_refused[0] = '\0';
    }
    if (r < 0 && r != -EHOSTDOWN)
        log_warn("auto-gc: orphan collection failed; it tries again at the next idle pass",
                 "error=%s", err_str(&e));
    pthread_mutex_lock(&d->orphans_lock);
    struct daemon_orphans_view *v = &d->orphans_view;
    v->waiting = d->orphans.waiting;
    v->next_due_ms = d->orphans.next_due_ms;
    v->last_pass_ms = now_ms();
    v->next_pass_ms = v->last_pass_ms + (d->orphans_next_mono - mono_ms());
    snprintf(v->refused, sizeof(v->refused), "%s", d->orphans_refused);
    pthread_mutex_unlock(&d->orphans_lock);
}

/* Automatic gc (pipeline_auto_gc), only while no run is active: a removal never competes
 * with work, and an image a new request wants is busy (skipped) rather than half removed. */
static void auto_gc(struct daemon *d)
{
    collect_orphans(d);
    if (!d->o->autogc.high_pct || mono_ms() < d->autogc_next_mono)
        return;
    d->autogc_next_mono = mono_ms() + DAEMON_AUTOGC_INTERVAL_MS;
    pthread_mutex_lock(&d->pool_lock);
    bool ready = d->pool_ready;
    pthread_mutex_unlock(&d->pool_lock);
    size_t active = 0;
    if (!ready || fsm_list_active(d->m, count_run, &active) < 0 || active > 0)
        return;
    struct pipeline_autogc_result res;
    struct err e = {0};
    if (pipeline_auto_gc(d->p, &d->o->autogc, &res, &e) < 0)
        log_warn("auto-gc failed; it retries while the pool stays above its high-water mark",
                 "error=\"%s\"", err_str(&e));
}

int daemon_run(const struct daemon_opts *o, struct err *e)
{
    struct daemon d = {.o = o, .cfg = o->cfg, .started_ms = now_ms()};
    d.host.lock.fd = -1;
    snprintf(d.socket_path, sizeof(d.socket_path), "%s",
             o->socket_path ? o->socket_path : o->cfg->socket_path);
    pthread_mutex_init(&d.pool_lock, NULL);
    pthread_mutex_init(&d.health_lock, NULL);
    pthread_mutex_init(&d.orphans_lock, NULL);
    d.orphans.grace_ms = o->orphan_grace_ms > 0 ? o->orphan_grace_ms : DAEMON_ORPHAN_GRACE_MS;

    /* Every thread started from here on inherits the blocked set; only sigtimedwait below
     * takes these signals. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    signal(SIGPIPE, SIG_IGN);

    int r = start(&d, e);
    if (r < 0) {
        teardown(&d);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return r;
    }
    log_info("daemon ready", "pid=%d socket=%s state_dir=%s metrics=%s", (int)getpid(),
             d.socket_path, d.cfg->state_dir, o->metrics_listen ? o->metrics_listen : "-");
    notify_systemd("READY=1\nSTATUS=serving the admin API");

    int sig = 0;
    while (!sig) {
        struct timespec tick = {.tv_sec = DAEMON_TICK_MS / 1000,
                                .tv_nsec = (DAEMON_TICK_MS % 1000) * 1000000L};
        int s = sigtimedwait(&set, NULL, &tick);
        if (s == SIGTERM || s == SIGINT) {
            sig = s;
        } else if (s == SIGHUP) {
            log_info("SIGHUP: nothing is reloaded (the pipeline, the pool and the database stay "
                     "as they are under running runs); restart the daemon to apply new settings");
        } else {
            pthread_mutex_lock(&d.pool_lock);
            bool retry = !d.pool_ready && mono_ms() >= d.pool_retry_mono;
            pthread_mutex_unlock(&d.pool_lock);
            if (retry)
                pool_try(&d, false);
            else
                auto_gc(&d);
        }
    }

    int64_t t0 = mono_ms();
    notify_systemd("STOPPING=1");
    log_info("daemon stopping: no new requests; running transitions are asked to stop and "
             "resume at the next start",
             "signal=%s timeout_ms=%d", strsignal(sig), DAEMON_SHUTDOWN_TIMEOUT_MS);
    struct watchdog w = {.socket_path = d.socket_path};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    pthread_t wt;
    bool watching = pthread_create(&wt, NULL, watchdog_main, &w) == 0;
    /* teardown() frees the log ring: keep the last lines on stderr only. */
    teardown(&d);
    if (watching) {
        pthread_mutex_lock(&w.lock);
        w.done = true;
        pthread_cond_signal(&w.cond);
        pthread_mutex_unlock(&w.lock);
        pthread_join(wt, NULL);
    }
    log_info("daemon stopped", "took_ms=%lld", (long long)(mono_ms() - t0));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return 0;
}
