/*
 * logring.h: the daemon's recent log lines, kept in memory for GET /v1/logs (the monitor's
 * log pane). Fed by the logger's hook (util/log.h), so it holds exactly the lines the daemon
 * wrote to its log, formatted the same way (logfmt or JSON), numbered by a sequence that only
 * grows: a client asks for the lines after the last number it saw.
 *
 * A fixed ring of `capacity` lines (API_LOG_LINES): the oldest go first; a line is cut at
 * LOGRING_LINE_MAX bytes. Thread-safe (one mutex; the hook copies one line and returns).
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "util/log.h"

#define LOGRING_LINE_MAX 2048

struct logring;

int logring_new(size_t capacity, struct logring **out);
void logring_free(struct logring *r);
/* The log hook (util/log.h log_set_hook(logring_hook, ring)). */
void logring_hook(enum log_level level, const char *line, void *ud);
/* Lines with seq > since, oldest first, at most limit (0: all kept):
 * {"lines": [{"seq", "level", "line"}], "next": last seq (or since)}. */
json_t *logring_json(struct logring *r, uint64_t since, size_t limit);
