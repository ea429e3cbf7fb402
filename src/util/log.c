/*
 * log.c: logfmt / JSON line logger. See log.h.
 *
 * The fields format is split on spaces into `key=conv` items. Each item is formatted with its
 * own vsnprintf; glibc's parse_printf_format() tells how many arguments (and of which types)
 * the item consumed, so the shared va_list can be advanced past them. This costs a little per
 * line, which is fine at log volume, and buys compile-time format checking at every call site.
 */
#include "util/log.h"
#include "util/redact.h"

#include <errno.h>
#include <printf.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 8192
#define LOG_VALUE_MAX 2048

static enum log_format g_format = LOG_FMT_LOGFMT;
static enum log_level g_min = LOG_LVL_INFO;
static int g_fd = 2;
static log_hook_fn g_hook;
static void *g_hook_ud;
static pthread_mutex_t g_hook_lock = PTHREAD_MUTEX_INITIALIZER;

struct ctx_field {
    char key[32];
    char value[160];
};
static __thread struct ctx_field t_ctx[LOG_CTX_MAX];
static __thread int t_nctx;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void log_setup(enum log_format format, enum log_level min_level, int fd)
{
    g_format = format;
    g_min = min_level;
    g_fd = fd;
}

enum log_level log_min_level(void)
{
    return g_min;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i <= LOG_LVL_OFF; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    if (strcmp(s, "warning") == 0) {
        *out = LOG_LVL_WARN;
        return 0;
    }
    return -EINVAL;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcmp(s, "logfmt") == 0)
        *out = LOG_FMT_LOGFMT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_FMT_JSON;
    else
        return -EINVAL;
    return 0;
}

void log_set_hook(log_hook_fn fn, void *ud)
{
    pthread_mutex_lock(&g_hook_lock);
    g_hook = fn;
    g_hook_ud = ud;
    pthread_mutex_unlock(&g_hook_lock);
}

void log_ctx_push(const char *key, const char *value)
{
    if (t_nctx >= LOG_CTX_MAX)
        return;
    snprintf(t_ctx[t_nctx].key, sizeof(t_ctx[t_nctx].key), "%s", key);
    snprintf(t_ctx[t_nctx].value, sizeof(t_ctx[t_nctx].value), "%s", value ? value : "");
    t_nctx++;
}

void log_ctx_pop(void)
{
    if (t_nctx > 0)
        t_nctx--;
}

void log_ctx_clear(void)
{
    t_nctx = 0;
}

/* A growing-but-bounded line buffer; output past the bound is cut, never overflowed. */
struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
};

static void line_putc(struct line *l, char c)
{
    if (l->len + 1 < sizeof(l->buf))
        l->buf[l->len++] = c;
}

static void line_puts(struct line *l, const char *s)
{
    while (*s)
        line_putc(l, *s++);
}

static bool logfmt_needs_quotes(const char *v)
{
    if (!*v)
        return true;
    for (const char *p = v; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p >= 0x7f)
            return true;
    return false;
}

static void put_escaped(struct line *l, const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        switch (*p) {
        case '"': line_puts(l, "\\\""); break;
        case '\\': line_puts(l, "\\\\"); break;
        case '\n': line_puts(l, "\\n"); break;
        case '\t': line_puts(l, "\\t"); break;
        case '\r': line_puts(l, "\\r"); break;
        default:
            if (*p < 0x20) {
                char hex[8];
                snprintf(hex, sizeof(hex), "\\u%04x", *p);
                line_puts(l, hex);
            } else {
                line_putc(l, (char)*p);
            }
        }
    }
}

static bool is_json_number(const char *v)
{
    const char *p = v;
    if (*p == '-')
        p++;
    if (!*p || (*p == '0' && p[1] != '\0'))
        return false;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return p - v < 19;
}

static void put_field(struct line *l, const char *key, size_t keylen, const char *value)
{
    if (g_format == LOG_FMT_JSON) {
        line_puts(l, ",\"");
        for (size_t i = 0; i < keylen; i++)
            line_putc(l, key[i]);
        line_puts(l, "\":");
        if (is_json_number(value)) {
            line_puts(l, value);
        } else {
            line_putc(l, '"');
            put_escaped(l, value);
            line_putc(l, '"');
        }
        return;
    }
    line_putc(l, ' ');
    for (size_t i = 0; i < keylen; i++)
        line_putc(l, key[i]);
    line_putc(l, '=');
    if (logfmt_needs_quotes(value)) {
        line_putc(l, '"');
        put_escaped(l, value);
        line_putc(l, '"');
    } else {
        line_puts(l, value);
    }
}

/* Consume from *ap the arguments that format `item` uses, as reported by glibc. */
static void skip_args(const char *item, va_list *ap)
{
    int types[16];
    size_t n = parse_printf_format(item, 16, types);
    for (size_t i = 0; i < n && i < 16; i++) {
        int t = types[i];
        if (t & PA_FLAG_PTR) {
            (void)va_arg(*ap, void *);
            continue;
        }
        switch (t & ~PA_FLAG_MASK) {
        case PA_INT:
        case PA_CHAR:
        case PA_WCHAR:
            if (t & PA_FLAG_LONG_LONG)
                (void)va_arg(*ap, long long);
            else if (t & PA_FLAG_LONG)
                (void)va_arg(*ap, long);
            else
                (void)va_arg(*ap, int);
            break;
        case PA_STRING:
        case PA_WSTRING:
        case PA_POINTER:
            (void)va_arg(*ap, void *);
            break;
        case PA_FLOAT:
        case PA_DOUBLE:
            if (t & PA_FLAG_LONG_DOUBLE)
                (void)va_arg(*ap, long double);
            else
                (void)va_arg(*ap, double);
            break;
        default:
            (void)va_arg(*ap, void *);
        }
    }
}

static void format_time(char *out, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void log_emit(enum log_level level, const char *msg, const char *extra_key,
                     const char *extra_value, const char *fields, va_list ap_in)
{
    if (level < g_min || level >= LOG_LVL_OFF)
        return;
    int saved_errno = errno;
    struct line l = {.len = 0};
    char ts[40];
    format_time(ts, sizeof(ts));

    if (g_format == LOG_FMT_JSON) {
        line_puts(&l, "{\"time\":\"");
        line_puts(&l, ts);
        line_puts(&l, "\",\"level\":\"");
        line_puts(&l, level_names[level]);
        line_puts(&l, "\",\"msg\":\"");
        put_escaped(&l, msg);
        line_putc(&l, '"');
    } else {
        line_puts(&l, "time=");
        line_puts(&l, ts);
        line_puts(&l, " level=");
        line_puts(&l, level_names[level]);
        line_puts(&l, " msg=");
        if (logfmt_needs_quotes(msg)) {
            line_putc(&l, '"');
            put_escaped(&l, msg);
            line_putc(&l, '"');
        } else {
            line_puts(&l, msg);
        }
    }

    for (int i = 0; i < t_nctx; i++)
        put_field(&l, t_ctx[i].key, strlen(t_ctx[i].key), t_ctx[i].value);

    va_list ap;
    va_copy(ap, ap_in);
    const char *p = fields ? fields : "";
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *end = strchr(p, ' ');
        size_t itemlen = end ? (size_t)(end - p) : strlen(p);
        char item[256];
        if (itemlen >= sizeof(item))
            itemlen = sizeof(item) - 1;
        memcpy(item, p, itemlen);
        item[itemlen] = '\0';
        char *eq = strchr(item, '=');
        if (eq) {
            char value[LOG_VALUE_MAX];
            va_list vcopy;
            va_copy(vcopy, ap);
            vsnprintf(value, sizeof(value), eq + 1, vcopy);
            va_end(vcopy);
            skip_args(eq + 1, &ap);
            put_field(&l, item, (size_t)(eq - item), value);
        }
        p += itemlen;
    }
    va_end(ap);
    if (extra_key)
        put_field(&l, extra_key, strlen(extra_key), extra_value);

    if (g_format == LOG_FMT_JSON)
        line_putc(&l, '}');
    l.buf[l.len] = '\0';
    l.len = text_strip_userinfo(l.buf); /* credentials in URLs never reach a log */

    pthread_mutex_lock(&g_hook_lock);
    log_hook_fn hook = g_hook;
    void *hook_ud = g_hook_ud;
    pthread_mutex_unlock(&g_hook_lock);
    if (hook)
        hook(level, l.buf, hook_ud);

    l.buf[l.len] = '\n';
    ssize_t w = write(g_fd, l.buf, l.len + 1);
    (void)w;
    errno = saved_errno;
}

void log_writev(enum log_level level, const char *msg, const char *fields, va_list ap)
{
    log_emit(level, msg, NULL, NULL, fields, ap);
}

void log_write(enum log_level level, const char *msg, const char *fields, ...)
{
    va_list ap;
    va_start(ap, fields);
    log_writev(level, msg, fields, ap);
    va_end(ap);
}

int log_error_errno(int r, const char *msg, const char *fields, ...)
{
    va_list ap;
    va_start(ap, fields);
    log_emit(LOG_LVL_ERROR, msg, "error", strerror(r < 0 ? -r : r), fields, ap);
    va_end(ap);
    return r;
}
