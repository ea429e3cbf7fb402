/*
 * metrics.h: process-wide metrics (counters, gauges, histograms, with labels) and their
 * rendering in the Prometheus text exposition format (version 0.0.4).
 *
 * Any module may bump a metric without knowing who exports it: the daemon serves the registry
 * on GET /metrics; in a short CLI process the numbers are simply never read. That is how the
 * fetch machine counts downloaded bytes, the unpack machine applied bytes, and gc (whichever
 * module runs it) its results (the METRIC_GC_* names below).
 *
 *     metrics_counter_add(METRIC_FETCH_BYTES, (double)n, NULL);
 *     metrics_counter_add("thinimg_fsm_transitions_total", 1, "machine", "fetch/fetch-blob",
 *                         "state", "download", "outcome", "ok", NULL);
 *
 * Labels are NULL-terminated (name, value) pairs; the order they are given in is the order
 * they are rendered in, so give them in the same order for the same family. Label values
 * are escaped on output; names must match [a-zA-Z_][a-zA-Z0-9_]*.
 *
 * Families: metrics_describe() sets the type and HELP text (idempotent). A family used before
 * it was described is created with the type of the first call and no help. A counter only
 * grows (negative adds are ignored). Gauges are usually set at scrape time by the exporter,
 * which clears a family first (metrics_gauge_clear) so vanished label sets disappear.
 *
 * Thread safety: every function may be called from any thread; one mutex, held for a lookup
 * and an add, never across I/O. Cost: series are found by a linear scan of their family
 * (tens of series, not thousands; keep label values low-cardinality: machine, state, queue,
 * outcome, never a run id or a digest).
 */
#pragma once

#include <stddef.h>

#include "util/buf.h"

enum metric_type { METRIC_COUNTER = 0, METRIC_GAUGE, METRIC_HISTOGRAM };

/* Histogram buckets for durations in seconds: a transition takes milliseconds (check-exists)
 * to many minutes (a large download or extraction under emulation). */
#define METRICS_DURATION_BUCKETS                                                                   \
    {                                                                                              \
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600            \
    }
#define METRICS_MAX_BUCKETS 24
/* More series than this in one family is a labelling bug (a run id as a label value): further
 * label sets are dropped and counted in thinimg_metrics_dropped_series_total. */
#define METRICS_MAX_SERIES_PER_FAMILY 512

/* Metric names that more than one module uses. */
#define METRIC_FETCH_BYTES   "thinimg_fetch_bytes_total" /* bytes downloaded from sources */
#define METRIC_APPLY_BYTES   "thinimg_unpack_applied_bytes_total" /* file bytes written by unpack */
#define METRIC_APPLY_ENTRIES "thinimg_unpack_applied_entries_total"
/* gc: the gc code bumps these after each run (labels in parentheses). */
#define METRIC_GC_RUNS           "thinimg_gc_runs_total"    /* (mode="dry-run"|"force", result) */
#define METRIC_GC_REMOVED        "thinimg_gc_removed_total" /* (kind="device"|"mount"|"file"|...) */
#define METRIC_GC_FREED_BYTES    "thinimg_gc_freed_bytes_total"
#define METRIC_GC_LAST_RUN       "thinimg_gc_last_run_timestamp_seconds" /* gauge, Unix time */
#define METRIC_RECONCILE_ORPHANS "thinimg_reconcile_orphans" /* gauge: at the daemon's start */
/* The daemon's idle collection (pipeline_collect_orphan): removals by gc kind, and the
 * removable orphans its last scan found (gauge). */
#define METRIC_GC_ORPHANS_REMOVED "thinimg_gc_orphans_removed_total" /* (kind) */
#define METRIC_GC_ORPHANS_WAITING "thinimg_gc_orphans_waiting"

/* Set type and help of a family (0, or -EINVAL for a bad name or a type change). buckets:
 * upper bounds, increasing, for histograms (NULL: METRICS_DURATION_BUCKETS). */
int metrics_describe(const char *name, enum metric_type type, const char *help);
int metrics_describe_histogram(const char *name, const char *help, const double *buckets,
                               size_t n_buckets);

void metrics_counter_add(const char *name, double v, ...) __attribute__((sentinel));
void metrics_gauge_set(const char *name, double v, ...) __attribute__((sentinel));
void metrics_histogram_observe(const char *name, double v, ...) __attribute__((sentinel));
/* Remove every series of a family (the family and its help stay). */
void metrics_clear(const char *name);

/* Current value of one series (counters and gauges; a histogram's count). -ENOENT if absent. */
int metrics_get(const char *name, double *out, ...) __attribute__((sentinel));

/* Append every family in the text format to out. 0 or -ENOMEM. */
int metrics_render(struct buf *out);

/* Forget everything (tests). */
void metrics_reset(void);
