/*
 * api.h: the admin API's protocol, shared by the server (server.c, routes.c) and its clients
 * (client.c: the CLI forwarding work to a daemon, the monitor).
 *
 * HTTP/1.1 over a Unix socket, JSON bodies, everything under /v1 (docs/daemon.md lists the
 * endpoints). An error is {"error": "<what failed and what to do>", "code": <HTTP status>,
 * "reason": "<token>"}; the reason says which kind of failure it was, so a client can turn it
 * back into the errno (and the CLI into the exit code) of the same failure in-process:
 *
 *   reason          status  errno (CLI exit code)
 *   invalid         400     EINVAL (2 usage)
 *   not_found       404     ENOENT (4)
 *   method          405     EINVAL (2)
 *   busy            409     EBUSY (5)
 *   too_large       413     EMSGSIZE (1)
 *   rejected        422     EBADMSG (6)
 *   internal        500     EIO (1)
 *   unhealthy       503     EHOSTDOWN (3)
 *   shutting_down   503     ESHUTDOWN (1)
 *   permission      403     EACCES (3)
 *   transient       502     ETIMEDOUT (1)
 *   interrupted     409     ECANCELED (130)
 *   corrupt         500     ENOTRECOVERABLE (7)
 *   read_only       503     EROFS (8)
 *
 * Every reason but "method" is the name of an error kind (util/err.h err_kind_name).
 */
#pragma once

#include <stdint.h>

#include "util/err.h"

/* The body of a request larger than this is refused (413): every request body is a small
 * JSON object; a big one is a mistake or an attack on the daemon's memory. */
#define API_MAX_BODY_BYTES (64 * 1024)
/* Long polls (?wait=, /wait?timeout=) are capped so a forgotten client does not hold a
 * suspended connection forever; clients poll again. */
#define API_MAX_WAIT_S 300
/* Listing runs with all=1 without a limit returns the newest this many (as `thinimg runs`). */
#define API_DEFAULT_RUNS_LIMIT 100
/* GET /v1/images and /v1/activations answer pages: this many rows unless ?limit= says
 * otherwise (at most API_MAX_LIST_LIMIT), and "next" (the key to pass as ?after=) when there
 * are more, so one answer stays small on a host with thousands of images. */
#define API_DEFAULT_LIST_LIMIT 1000
#define API_MAX_LIST_LIMIT     10000
/* How many recent log lines the daemon keeps for GET /v1/logs (the monitor shows the tail). */
#define API_LOG_LINES 1000

/* Status and reason for a negative errno, or for an error kind (a run's stored kind). */
unsigned api_status_for_errno(int r, const char **reason);
unsigned api_status_for_kind(enum err_kind k, const char **reason);
/* The negative errno a reason stands for (-EIO for unknown ones). */
int api_errno_for_reason(const char *reason);
