/*
 * metrics.c: the metrics registry and its Prometheus text rendering. See metrics.h.
 *
 * Families are a linked list in creation order (rendering order); each family holds its
 * series in an array, found by their rendered label string ("k=\"v\",k2=\"v2\""), which is
 * also what is printed between the braces.
 */
#include "util/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct series {
    char *labels; /* rendered, "" when none */
    double value; /* counter/gauge value; histogram sum */
    uint64_t count;
    uint64_t buckets[METRICS_MAX_BUCKETS]; /* per bucket, not cumulative */
};

struct family {
    struct family *next;
    char *name, *help;
    enum metric_type type;
    double bounds[METRICS_MAX_BUCKETS];
    size_t n_bounds;
    struct series *series;
    size_t n, cap;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct family *g_head, *g_tail;
static double g_dropped;

static bool name_valid(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
        if (!alpha && !(p > s && ((*p >= '0' && *p <= '9') || *p == ':')))
            return false;
    }
    return true;
}

static struct family *find_family(const char *name)
{
    for (struct family *f = g_head; f; f = f->next)
        if (!strcmp(f->name, name))
            return f;
    return NULL;
}

static void set_default_bounds(struct family *f)
{
    static const double def[] = METRICS_DURATION_BUCKETS;
    f->n_bounds = sizeof(def) / sizeof(def[0]);
    memcpy(f->bounds, def, sizeof(def));
}

static struct family *family_get(const char *name, enum metric_type type)
{
    struct family *f = find_family(name);
    if (f)
        return f->type == type ? f : NULL;
    if (!name_valid(name))
        return NULL;
    f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup("");
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    f->type = type;
    if (type == METRIC_HISTOGRAM)
        set_default_bounds(f);
    if (g_tail)
        g_tail->next = f;
    else
        g_head = f;
    g_tail = f;
    return f;
}

static int describe_locked(const char *name, enum metric_type type, const char *help)
{
    struct family *f = find_family(name);
    if (f && f->type != type)
        return -EINVAL;
    if (!f && !(f = family_get(name, type)))
        return name_valid(name) ? -ENOMEM : -EINVAL;
    char *h = strdup(help ? help : "");
    if (!h)
        return -ENOMEM;
    free(f->help);
    f->help = h;
    return 0;
}

int metrics_describe(const char *name, enum metric_type type, const char *help)
{
    pthread_mutex_lock(&g_lock);
    int r = describe_locked(name, type, help);
    pthread_mutex_unlock(&g_lock);
    return r;
}

int metrics_describe_histogram(const char *name, const char *help, const double *buckets,
                               size_t n_buckets)
{
    if (buckets && (n_buckets == 0 || n_buckets > METRICS_MAX_BUCKETS))
        return -EINVAL;
    for (size_t i = 1; buckets && i < n_buckets; i++)
        if (!(buckets[i] > buckets[i - 1]))
            return -EINVAL;
    pthread_mutex_lock(&g_lock);
    int r = describe_locked(name, METRIC_HISTOGRAM, help);
    if (r == 0 && buckets) {
        struct family *f = find_family(name);
        if (f->n == 0) { /* bounds of existing series cannot change */
            memcpy(f->bounds, buckets, n_buckets * sizeof(double));
            f->n_bounds = n_buckets;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return r;
}

/* Render the (name, value) pairs of ap into out: k="v",k2="v2". Returns false on a bad name or
 * ENOMEM. */
static bool labels_render(va_list ap, struct buf *out)
{
    bool first = true;
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        if (!name_valid(k) || strchr(k, ':'))
            return false;
        if (buf_printf(out, "%s%s=\"", first ? "" : ",", k) < 0)
            return false;
        for (const char *p = v ? v : ""; *p; p++) {
            int r = *p == '\\'   ? buf_puts(out, "\\\\")
                    : *p == '"'  ? buf_puts(out, "\\\"")
                    : *p == '\n' ? buf_puts(out, "\\n")
                                 : buf_append(out, p, 1);
            if (r < 0)
                return false;
        }
        if (buf_puts(out, "\"") < 0)
            return false;
        first = false;
    }
    if (!out->data && buf_puts(out, "") < 0)
        return false;
    return true;
}

static struct series *series_get(struct family *f, const char *labels)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->series[i].labels, labels))
            return &f->series[i];
    if (f->n >= METRICS_MAX_SERIES_PER_FAMILY) {
        g_dropped++;
        return NULL;
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct series *v = realloc(f->series, cap * sizeof(*v));
        if (!v)
            return NULL;
        f->series = v;
        f->cap = cap;
    }
    struct series *s = &f->series[f->n];
    memset(s, 0, sizeof(*s));
    s->labels = strdup(labels);
    if (!s->labels)
        return NULL;
    f->n++;
    return s;
}

static void update(const char *name, enum metric_type type, double v, va_list ap)
{
    struct buf labels = BUF_INIT;
    if (!labels_render(ap, &labels)) {
        buf_free(&labels);
        return;
    }
    pthread_mutex_lock(&g_lock);
    struct family *f = family_get(name, type);
    struct series *s = f ? series_get(f, labels.data) : NULL;
    if (s) {
        switch (type) {
        case METRIC_COUNTER:
            if (v > 0)
                s->value += v;
            break;
        case METRIC_GAUGE:
            s->value = v;
            break;
        case METRIC_HISTOGRAM: {
            size_t i = 0;
            while (i < f->n_bounds && v > f->bounds[i])
                i++;
            if (i < f->n_bounds)
                s->buckets[i]++;
            s->count++;
            s->value += v;
            break;
        }
        }
    }
    pthread_mutex_unlock(&g_lock);
    buf_free(&labels);
}

void metrics_counter_add(const char *name, double v, ...)
{
    va_list ap;
    va_start(ap, v);
    update(name, METRIC_COUNTER, v, ap);
    va_end(ap);
}

void metrics_gauge_set(const char *name, double v, ...)
{
    va_list ap;
    va_start(ap, v);
    update(name, METRIC_GAUGE, v, ap);
    va_end(ap);
}

void metrics_histogram_observe(const char *name, double v, ...)
{
    va_list ap;
    va_start(ap, v);
    update(name, METRIC_HISTOGRAM, v, ap);
    va_end(ap);
}

static void series_free_all(struct family *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->series[i].labels);
    f->n = 0;
}

void metrics_clear(const char *name)
{
    pthread_mutex_lock(&g_lock);
    struct family *f = find_family(name);
    if (f)
        series_free_all(f);
    pthread_mutex_unlock(&g_lock);
}

int metrics_get(const char *name, double *out, ...)
{
    struct buf labels = BUF_INIT;
    va_list ap;
    va_start(ap, out);
    bool ok = labels_render(ap, &labels);
    va_end(ap);
    if (!ok) {
        buf_free(&labels);
        return -EINVAL;
    }
    int r = -ENOENT;
    pthread_mutex_lock(&g_lock);
    struct family *f = find_family(name);
    for (size_t i = 0; f && i < f->n; i++)
        if (!strcmp(f->series[i].labels, labels.data)) {
            *out = f->type == METRIC_HISTOGRAM ? (double)f->series[i].count : f->series[i].value;
            r = 0;
        }
    pthread_mutex_unlock(&g_lock);
    buf_free(&labels);
    return r;
}

/* Prometheus floats: integers without a fraction, +Inf/-Inf/NaN spelled its way. */
static void fmt_value(double v, char *out, size_t n)
{
    if (isnan(v))
        snprintf(out, n, "NaN");
    else if (isinf(v))
        snprintf(out, n, "%sInf", v > 0 ? "+" : "-");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(out, n, "%.0f", v);
    else /* 15 digits: sums of durations do not print as 0.026000000000000002 */
        snprintf(out, n, "%.15g", v);
}

static int render_help(struct buf *out, const struct family *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    int r = buf_printf(out, "# HELP %s ", f->name);
    for (const char *p = f->help; r == 0 && *p; p++)
        r = *p == '\\'   ? buf_puts(out, "\\\\")
            : *p == '\n' ? buf_puts(out, "\\n")
                         : buf_append(out, p, 1);
    if (r == 0)
        r = buf_printf(out, "\n# TYPE %s %s\n", f->name, types[f->type]);
    return r;
}

static int render_histogram(struct buf *out, const struct family *f, const struct series *s)
{
    const char *sep = s->labels[0] ? "," : "";
    uint64_t cum = 0;
    char v[64], le[64];
    int r = 0;
    for (size_t i = 0; r == 0 && i < f->n_bounds; i++) {
        cum += s->buckets[i];
        fmt_value(f->bounds[i], le, sizeof(le));
        r = buf_printf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, s->labels, sep, le,
                       (unsigned long long)cum);
    }
    fmt_value(s->value, v, sizeof(v));
    if (r == 0)
        r = buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", f->name, s->labels, sep,
                       (unsigned long long)s->count);
    if (r == 0)
        r = buf_printf(out, "%s_sum%s%s%s %s\n%s_count%s%s%s %llu\n", f->name,
                       s->labels[0] ? "{" : "", s->labels, s->labels[0] ? "}" : "", v, f->name,
                       s->labels[0] ? "{" : "", s->labels, s->labels[0] ? "}" : "",
                       (unsigned long long)s->count);
    return r;
}

int metrics_render(struct buf *out)
{
    int r = 0;
    pthread_mutex_lock(&g_lock);
    for (struct family *f = g_head; r == 0 && f; f = f->next) {
        r = render_help(out, f);
        for (size_t i = 0; r == 0 && i < f->n; i++) {
            const struct series *s = &f->series[i];
            if (f->type == METRIC_HISTOGRAM) {
                r = render_histogram(out, f, s);
                continue;
            }
            char v[64];
            fmt_value(s->value, v, sizeof(v));
            r = buf_printf(out, "%s%s%s%s %s\n", f->name, s->labels[0] ? "{" : "", s->labels,
                           s->labels[0] ? "}" : "", v);
        }
    }
    if (r == 0)
        r = buf_printf(out,
                       "# HELP thinimg_metrics_dropped_series_total label sets dropped because a "
                       "family had too many series\n# TYPE thinimg_metrics_dropped_series_total "
                       "counter\nthinimg_metrics_dropped_series_total %.0f\n",
                       g_dropped);
    pthread_mutex_unlock(&g_lock);
    return r < 0 ? -ENOMEM : 0;
}

void metrics_reset(void)
{
    pthread_mutex_lock(&g_lock);
    while (g_head) {
        struct family *f = g_head;
        g_head = f->next;
        series_free_all(f);
        free(f->series);
        free(f->name);
        free(f->help);
        free(f);
    }
    g_tail = NULL;
    g_dropped = 0;
    pthread_mutex_unlock(&g_lock);
}
