/*
 * client.h: talking to a running daemon over its Unix socket (libcurl with
 * CURLOPT_UNIX_SOCKET_PATH): what the CLI uses to forward process-image, activate, deactivate
 * and remove to the daemon that holds the state directory, and what the monitor reads.
 *
 * Detection (api_client_detect): the process lock file names its holder's command; when it is
 * "daemon" and the socket answers GET /v1/version, work goes to the daemon. When nobody holds
 * the lock, the caller does the work itself. When a daemon holds the lock but does not answer
 * (starting up, stopping, another --socket), that is an error that says so: the work can be
 * done neither here (the lock) nor there.
 *
 * Ownership: a client is one curl handle with its connection (kept alive between requests);
 * use it from one thread at a time. Replies are new JSON references (json_decref them).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "util/config.h"
#include "util/err.h"

/* How long detection waits for GET /v1/version: a daemon answers it from memory. */
#define API_CLIENT_PROBE_MS 3000

struct api_client;

/* 1 with *out: a daemon serves cfg's state directory (socket: cfg->socket_path). 0: no daemon
 * holds the lock (do the work here). Negative errno with e: a daemon holds the lock and does
 * not answer on the socket. */
int api_client_detect(const struct config *cfg, struct api_client **out, struct err *e);
/* A client for the socket at path (no request is made). */
int api_client_open(const char *socket_path, struct api_client **out);
void api_client_free(struct api_client *c);
const char *api_client_socket(const struct api_client *c);

/* One request: method, path with query ("/v1/runs?all=1"), optional JSON body. timeout_ms
 * bounds the whole exchange. 0 with *status and *reply (NULL when the body is not JSON);
 * negative errno with e when the daemon could not be reached or did not answer in time. */
int api_call(struct api_client *c, const char *method, const char *path, json_t *body,
             long timeout_ms, long *status, json_t **reply, struct err *e);

/* A non-2xx reply as the errno of its "reason" (api.h) with e set to its "error" message.
 * Returns the negative errno. */
int api_reply_error(long status, const json_t *reply, struct err *e);

/* Percent-encode s for use as one path segment or query value (malloc'd; NULL on ENOMEM). */
char *api_escape(const char *s);
