/*
 * daemon.h: `thinimg daemon`: the long-running manager of one state directory, with its admin
 * API (docs/daemon.md).
 *
 * daemon_run() does, in order: block SIGTERM/SIGINT/SIGHUP in every thread (the main thread
 * takes them with sigtimedwait), create the state directory, take the process lock (command
 * "daemon": CLI commands that find it forward their work to the socket), open the database,
 * set up the pool (create / reassemble / adopt; a host without a usable pool still gets a
 * daemon, which says so and retries every DAEMON_POOL_RETRY_MS), open the pipeline, install
 * the FSM observer (metrics, long polls), resume every unfinished run, bind the socket (0600
 * unless socket_mode says otherwise) and serve.
 *
 * Shutdown on SIGTERM or SIGINT, bounded: stop accepting and remove the socket, answer
 * deferred requests 503, close connections, then stop the pipeline (running transitions are
 * told to stop; runs stay resumable and continue at the next start), close the database and
 * release the lock. A watchdog ends the process after DAEMON_SHUTDOWN_HARD_MS whatever hangs
 * (state is durable; the kernel releases the lock). SIGHUP reloads nothing (nothing the daemon
 * holds can be swapped safely under running runs) and says so in the log.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pipeline/pipeline.h"
#include "source/source.h"
#include "util/config.h"
#include "util/err.h"

/* Running transitions get this long to stop at shutdown (a download stops at once, an
 * extraction is killed and re-applied at the next start, mkfs finishes). */
#define DAEMON_SHUTDOWN_TIMEOUT_MS 10000
/* Past this, the process exits whatever still runs: systemd's TimeoutStopSec (45 s in
 * contrib/thinimg.service) stays well above it. */
#define DAEMON_SHUTDOWN_HARD_MS 20000
/* A daemon without a usable pool tries to set it up again this often. */
#define DAEMON_POOL_RETRY_MS 30000
/* An orphan is collected by the idle daemon once it has been one this long (--auto-gc-orphans-
 * grace): a run killed a moment ago and about to be resumed (by the operator, or by a daemon
 * start) still finds what it left, and what an operator wants to look at stays for a while. */
#define DAEMON_ORPHAN_GRACE_MS (10 * 60 * 1000)

struct daemon_opts {
    const struct config *cfg;            /* state dir, db, pool, default source, socket */
    const struct source_options *source; /* may be NULL */
    const char *socket_path;             /* NULL: cfg->socket_path */
    mode_t socket_mode;                  /* 0: 0600 (root only) */
    const char *metrics_listen;          /* "ADDR:PORT" for /metrics over TCP, or NULL */
    struct pipeline_queues queues;       /* pinned limits and maxima (pipeline.h) */
    bool no_pool_setup;                  /* use whatever pool exists; never create one */
    bool skip_health;                    /* tests only */
    bool wait_lock;                      /* wait for another thinimg process to finish */
    struct pipeline_autogc_opts autogc;  /* high_pct 0: no automatic gc */
    bool no_auto_gc_orphans;             /* do not collect orphans while idle */
    int64_t orphan_grace_ms;             /* 0: DAEMON_ORPHAN_GRACE_MS */
};

/* Serve until SIGTERM/SIGINT. 0 after a clean shutdown; a negative errno with e when the daemon
 * could not start (lock held, socket in use, database error). */
int daemon_run(const struct daemon_opts *o, struct err *e);

/* Parse "ADDR:PORT" ("127.0.0.1:9100", "[::1]:9100", ":9100" = all addresses) and bind a
 * listening TCP socket. Returns the fd or a negative errno with e. */
int daemon_listen_tcp(const char *spec, struct err *e);
/* Bind a listening Unix socket at path with mode, replacing a stale socket file (one nobody
 * answers on); -EADDRINUSE when another process serves it. Returns the fd. */
int daemon_listen_unix(const char *path, mode_t mode, struct err *e);
