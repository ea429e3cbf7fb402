/*
 * log.h: structured logging, logfmt by default, JSON lines with --log-format json.
 *
 * Every line has time, level and msg, then fields. Fields are written as one printf-style
 * format of space-separated `key=%conv` items, checked by the compiler:
 *
 *     log_info("layer applied", "chain=%s entries=%zu", chain_id, n);
 *     log_warn("pool nearly full");
 *
 * Each item is formatted on its own, so values may contain spaces or quotes; the logfmt writer
 * quotes them and the JSON writer escapes them (integers are written as JSON numbers).
 * Keys must be literal and contain no spaces.
 *
 * A thread can carry context fields (run id, machine, chain id) that are added to every line it
 * writes: log_ctx_push()/log_ctx_pop(). Lines are written with one write(2) each, so lines from
 * threads and processes sharing the file do not interleave. A hook can observe every line
 * (the monitor and the daemon keep the recent ones).
 *
 * Thread safety: all functions may be called from any thread.
 */
#pragma once

#include <stdarg.h>

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR, LOG_LVL_OFF };
enum log_format { LOG_FMT_LOGFMT = 0, LOG_FMT_JSON };

/* Where and how to log. Defaults: logfmt, info, fd 2. */
void log_setup(enum log_format format, enum log_level min_level, int fd);
enum log_level log_min_level(void);

/* Parse "debug|info|warn|error|off" and "logfmt|json". Return 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);

/* Called with each formatted line (no trailing newline) and its level. NULL removes it. */
typedef void (*log_hook_fn)(enum log_level level, const char *line, void *ud);
void log_set_hook(log_hook_fn fn, void *ud);

/* Thread-local context fields; the value is copied. At most LOG_CTX_MAX at once. */
#define LOG_CTX_MAX 8
void log_ctx_push(const char *key, const char *value);
void log_ctx_pop(void);
void log_ctx_clear(void);

void log_write(enum log_level level, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));
void log_writev(enum log_level level, const char *msg, const char *fields, va_list ap);

/* The "" prefix lets `fields` be omitted: log_info("started"). */
#define log_debug(msg, ...) log_write(LOG_LVL_DEBUG, msg, "" __VA_ARGS__)
#define log_info(msg, ...) log_write(LOG_LVL_INFO, msg, "" __VA_ARGS__)
#define log_warn(msg, ...) log_write(LOG_LVL_WARN, msg, "" __VA_ARGS__)
#define log_error(msg, ...) log_write(LOG_LVL_ERROR, msg, "" __VA_ARGS__)

/* Logs at error level with an `error=strerror(-r)` field and returns r (a negative errno). */
int log_error_errno(int r, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));
