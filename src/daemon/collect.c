/*
 * collect.c: the daemon's Prometheus metrics (names in docs/daemon.md).
 *
 * Two sources:
 *   events   the FSM observer counts runs and transitions by machine, state and outcome and
 *            observes their durations (histograms) as they happen; the fetch and unpack
 *            machines count bytes themselves (util/metrics.h); gc counts what it removed.
 *   scrape   gauges read when /metrics is asked for: active runs by machine and status, queue
 *            depths, rows and bytes in the blobs/layers/images/activations tables, the pool's
 *            data and metadata usage (pool_get), the last health report (per check 0 ok,
 *            1 warn, 2 fail).
 * A scrape costs a few indexed queries on the read-only connection and one dm status call.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon_internal.h"
#include "dm/pool.h"
#include "pipeline/imagedb.h"
#include "store/blobs.h"
#include "util/buf.h"
#include "util/metrics.h"
#include "util/timeutil.h"
#include "util/version.h"

#define M_RUNS_STARTED       "thinimg_fsm_runs_started_total"
#define M_RUNS_RESUMED       "thinimg_fsm_runs_resumed_total"
#define M_RUNS_FINISHED      "thinimg_fsm_runs_finished_total"
#define M_RUN_SECONDS        "thinimg_fsm_run_duration_seconds"
#define M_TRANSITIONS        "thinimg_fsm_transitions_total"
#define M_TRANSITION_SECONDS "thinimg_fsm_transition_duration_seconds"
#define M_ACTIVE_RUNS        "thinimg_fsm_active_runs"
#define M_QUEUE_RUNS         "thinimg_queue_runs"

static pthread_mutex_t g_scrape_lock = PTHREAD_MUTEX_INITIALIZER;

void daemon_metrics_describe(void)
{
    metrics_describe("thinimg_build_info", METRIC_GAUGE, "thinimg version (value 1)");
    metrics_gauge_set("thinimg_build_info", 1, "version", THINIMG_VERSION, NULL);
    metrics_describe("thinimg_daemon_start_time_seconds", METRIC_GAUGE,
                     "when the daemon started (Unix time)");
    metrics_describe(M_RUNS_STARTED, METRIC_COUNTER, "runs started, by machine (type/action)");
    metrics_describe(M_RUNS_RESUMED, METRIC_COUNTER, "runs resumed after a restart, by machine");
    metrics_describe(M_RUNS_FINISHED, METRIC_COUNTER, "runs finished, by machine and outcome");
    metrics_describe_histogram(M_RUN_SECONDS,
                               "run durations from start to finish, by machine "
                               "and outcome",
                               NULL, 0);
    metrics_describe(M_TRANSITIONS, METRIC_COUNTER,
                     "transition attempts by machine, state and outcome (ok: completed, retry: "
                     "failed and retried, else the halting outcome)");
    metrics_describe_histogram(M_TRANSITION_SECONDS,
                               "transition attempt durations, by machine, state and outcome", NULL,
                               0);
    metrics_describe(M_ACTIVE_RUNS, METRIC_GAUGE,
                     "unfinished runs by machine and status (pending, running)");
    metrics_describe(M_QUEUE_RUNS, METRIC_GAUGE,
                     "unfinished runs by queue and status (pending: waiting for a slot, a "
                     "delay or a predecessor; running); queue none: unqueued machines");
    metrics_describe("thinimg_queue_limit", METRIC_GAUGE,
                     "the queue's current limit (sized to the host's load unless pinned)");
    metrics_describe("thinimg_queue_limit_max", METRIC_GAUGE,
                     "the highest limit the queue may be sized to");
    metrics_describe("thinimg_queue_limit_pinned", METRIC_GAUGE,
                     "1 when the operator fixed the limit (--fetch-queue, --unpack-queue)");
    metrics_describe("thinimg_psi_io_some_avg10", METRIC_GAUGE,
                     "% of the last 10 s some task stalled on I/O (as the queue sizing saw it)");
    metrics_describe("thinimg_psi_io_full_avg10", METRIC_GAUGE,
                     "% of the last 10 s all tasks stalled on I/O");
    metrics_describe("thinimg_psi_memory_full_avg10", METRIC_GAUGE,
                     "% of the last 10 s all tasks stalled on memory");
    metrics_describe("thinimg_io_foreign_bytes_per_second", METRIC_GAUGE,
                     "bytes/s a queue's disk (the pool's, the blob store's) moved beyond "
                     "thinimg's own I/O (the queue sizing's competing-user signal)");
    metrics_describe(METRIC_FETCH_BYTES, METRIC_COUNTER, "bytes downloaded from sources");
    metrics_counter_add(METRIC_FETCH_BYTES, 0, NULL);
    metrics_describe(METRIC_APPLY_BYTES, METRIC_COUNTER,
                     "file bytes written into layer devices by unpack");
    metrics_counter_add(METRIC_APPLY_BYTES, 0, NULL);
    metrics_describe(METRIC_APPLY_ENTRIES, METRIC_COUNTER,
                     "archive entries applied into layer devices by unpack");
    metrics_counter_add(METRIC_APPLY_ENTRIES, 0, NULL);
    metrics_describe("thinimg_blobs", METRIC_GAUGE, "blobs stored");
    metrics_describe("thinimg_blob_bytes", METRIC_GAUGE, "bytes of the blobs stored");
    metrics_describe("thinimg_layers", METRIC_GAUGE, "layer chains by state");
    metrics_describe("thinimg_layer_bytes", METRIC_GAUGE,
                     "file bytes in layer chains (as applied), by state");
    metrics_describe("thinimg_images", METRIC_GAUGE, "images by state");
    metrics_describe("thinimg_activations", METRIC_GAUGE, "activations by state");
    metrics_describe("thinimg_pool_up", METRIC_GAUGE,
                     "1 when the thin pool is active and its status was read");
    metrics_describe("thinimg_pool_usable", METRIC_GAUGE,
                     "1 when new devices may be created (mode, flags and usage limits)");
    metrics_describe("thinimg_pool_data_used_bytes", METRIC_GAUGE, "pool data in use");
    metrics_describe("thinimg_pool_data_total_bytes", METRIC_GAUGE, "pool data size");
    metrics_describe("thinimg_pool_metadata_used_bytes", METRIC_GAUGE, "pool metadata in use");
    metrics_describe("thinimg_pool_metadata_total_bytes", METRIC_GAUGE, "pool metadata size");
    metrics_describe("thinimg_pool_mode", METRIC_GAUGE,
                     "pool mode (rw, ro, out_of_data_space, Fail, Error): 1 for the current one");
    metrics_describe("thinimg_pool_needs_check", METRIC_GAUGE, "1 when the pool needs_check");
    metrics_describe("thinimg_health_check", METRIC_GAUGE,
                     "last health report of the operation guard or GET /v1/health, per check: "
                     "0 ok, 1 warn, 2 fail (skipped checks are absent)");
    metrics_describe("thinimg_health_overall", METRIC_GAUGE,
                     "worst level of the last health report (0 ok, 1 warn, 2 fail)");
    metrics_describe("thinimg_api_waiting_requests", METRIC_GAUGE,
                     "admin API requests parked in a long poll (?wait=, /wait)");
    metrics_describe("thinimg_api_jobs", METRIC_GAUGE,
                     "admin API jobs (removals, health checks) queued or running");
    metrics_describe(METRIC_GC_RUNS, METRIC_COUNTER, "gc runs that acted (--force), by result");
    metrics_counter_add(METRIC_GC_RUNS, 0, "mode", "force", "result", "ok", NULL);
    metrics_counter_add(METRIC_GC_RUNS, 0, "mode", "force", "result", "failed", NULL);
    metrics_describe(METRIC_GC_REMOVED, METRIC_COUNTER, "orphans gc removed, by kind");
    metrics_describe(METRIC_GC_FREED_BYTES, METRIC_COUNTER, "bytes gc freed (files, devices)");
    metrics_counter_add(METRIC_GC_FREED_BYTES, 0, NULL);
    metrics_describe(METRIC_GC_LAST_RUN, METRIC_GAUGE, "when gc last acted (Unix time)");
    metrics_describe(METRIC_GC_ORPHANS_REMOVED, METRIC_COUNTER,
                     "orphans the daemon removed on its own while idle, by gc kind");
    metrics_describe(METRIC_GC_ORPHANS_WAITING, METRIC_GAUGE,
                     "removable orphans the daemon's last idle scan found");
    metrics_gauge_set(METRIC_GC_ORPHANS_WAITING, 0, NULL);
    metrics_describe(METRIC_RECONCILE_ORPHANS, METRIC_GAUGE,
                     "orphans the reconcile at the daemon's start found (gc --force removes them)");
}

/* ---- events ---------------------------------------------------------------------------------- */

void daemon_observer(const struct fsm_event_info *ev, void *ud)
{
    struct daemon *d = ud;
    char machine[160];
    snprintf(machine, sizeof(machine), "%s/%s", ev->run->type, ev->run->action);
    const char *state = ev->run->state ? ev->run->state : "";
    double secs = (double)ev->duration_ms / 1000.0;
    switch (ev->type) {
    case FSM_EV_START:
        metrics_counter_add(M_RUNS_STARTED, 1, "machine", machine, NULL);
        break;
    case FSM_EV_RESUME:
        metrics_counter_add(M_RUNS_RESUMED, 1, "machine", machine, NULL);
        break;
    case FSM_EV_COMPLETE:
    case FSM_EV_ERROR: {
        const char *o = ev->type == FSM_EV_COMPLETE ? "ok" : "retry";
        metrics_counter_add(M_TRANSITIONS, 1, "machine", machine, "state", state, "outcome", o,
                            NULL);
        metrics_histogram_observe(M_TRANSITION_SECONDS, secs, "machine", machine, "state", state,
                                  "outcome", o, NULL);
        break;
    }
    case FSM_EV_HALT:
        metrics_counter_add(M_TRANSITIONS, 1, "machine", machine, "state", state, "outcome",
                            fsm_outcome_name(ev->outcome), NULL);
        break;
    case FSM_EV_FINISH:
        metrics_counter_add(M_RUNS_FINISHED, 1, "machine", machine, "outcome",
                            fsm_outcome_name(ev->outcome), NULL);
        metrics_histogram_observe(M_RUN_SECONDS, secs, "machine", machine, "outcome",
                                  fsm_outcome_name(ev->outcome), NULL);
        /* Long polls waiting for this run (or any) check again. */
        if (d)
            http_server_notify(d->api);
        break;
    }
}

/* ---- scrape ---------------------------------------------------------------------------------- */

#define MAX_GROUPS 64
struct active_count {
    char key[2][128];
    int status;
    int n;
};
struct active_ctx {
    struct active_count machines[MAX_GROUPS], queues[MAX_GROUPS];
    size_t nm, nq;
};

static void bump(struct active_count *v, size_t *n, const char *a, const char *b, int status)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(v[i].key[0], a) && !strcmp(v[i].key[1], b) && v[i].status == status) {
            v[i].n++;
            return;
        }
    if (*n >= MAX_GROUPS)
        return;
    snprintf(v[*n].key[0], sizeof(v[*n].key[0]), "%s", a);
    snprintf(v[*n].key[1], sizeof(v[*n].key[1]), "%s", b);
    v[*n].status = status;
    v[(*n)++].n = 1;
}

static int count_active(const struct fsm_run_record *r, void *ud)
{
    struct active_ctx *c = ud;
    char machine[160];
    snprintf(machine, sizeof(machine), "%s/%s", r->type, r->action);
    bump(c->machines, &c->nm, machine, "", r->status);
    bump(c->queues, &c->nq, r->queue ? r->queue : "none", "", r->status);
    return 0;
}

static void collect_runs(struct daemon *d)
{
    struct active_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    fsm_list_active(d->m, count_active, c);
    metrics_clear(M_ACTIVE_RUNS);
    metrics_clear(M_QUEUE_RUNS);
    /* Both statuses of every configured queue appear, so a dashboard sees a zero. */
    static const char *const queues[] = {"fetch", "unpack"};
    for (size_t i = 0; i < 2; i++) {
        metrics_gauge_set(M_QUEUE_RUNS, 0, "queue", queues[i], "status", "pending", NULL);
        metrics_gauge_set(M_QUEUE_RUNS, 0, "queue", queues[i], "status", "running", NULL);
    }
    for (size_t i = 0; i < c->nm; i++)
        metrics_gauge_set(M_ACTIVE_RUNS, c->machines[i].n, "machine", c->machines[i].key[0],
                          "status", fsm_run_status_name(c->machines[i].status), NULL);
    for (size_t i = 0; i < c->nq; i++)
        metrics_gauge_set(M_QUEUE_RUNS, c->queues[i].n, "queue", c->queues[i].key[0], "status",
                          fsm_run_status_name(c->queues[i].status), NULL);
    free(c);
}

struct grouped {
    const char *count_name, *bytes_name, *label;
};

static void grouped_row(const char *state, int64_t rows, int64_t bytes, void *ud)
{
    const struct grouped *g = ud;
    metrics_gauge_set(g->count_name, (double)rows, g->label, state, NULL);
    if (g->bytes_name)
        metrics_gauge_set(g->bytes_name, (double)bytes, g->label, state, NULL);
}

/* Gauges per state of a table (imagedb_state_counts()). */
static void collect_grouped(struct db *db, enum imagedb_table table, const char *count_name,
                            const char *bytes_name, const char *label, const char *const *values)
{
    metrics_clear(count_name);
    if (bytes_name)
        metrics_clear(bytes_name);
    for (size_t i = 0; values[i]; i++) { /* every known state shows, zero or not */
        metrics_gauge_set(count_name, 0, label, values[i], NULL);
        if (bytes_name)
            metrics_gauge_set(bytes_name, 0, label, values[i], NULL);
    }
    struct grouped g = {count_name, bytes_name, label};
    imagedb_state_counts(db, table, grouped_row, &g);
}

static void collect_tables(struct daemon *d)
{
    struct db *db = d->ro ? d->ro : d->db;
    int64_t blobs = 0, bytes = 0;
    if (blobs_totals(db, &blobs, &bytes) == 0) {
        metrics_gauge_set("thinimg_blobs", (double)blobs, NULL);
        metrics_gauge_set("thinimg_blob_bytes", (double)bytes, NULL);
    }
    static const char *const layer_states[] = {"pending", "unpacking", "ready", "failed", NULL};
    collect_grouped(db, IMAGEDB_LAYERS, "thinimg_layers", "thinimg_layer_bytes", "state",
                    layer_states);
    static const char *const image_states[] = {"pending", "fetching", "unpacking",
                                               "ready",   "failed",   NULL};
    collect_grouped(db, IMAGEDB_IMAGES, "thinimg_images", NULL, "state", image_states);
    static const char *const act_states[] = {"creating", "active", "inactive", "failed", NULL};
    collect_grouped(db, IMAGEDB_ACTIVATIONS, "thinimg_activations", NULL, "state", act_states);
}

static void collect_pool(struct daemon *d)
{
    static const char *const pool_gauges[] = {"thinimg_pool_data_used_bytes",
                                              "thinimg_pool_data_total_bytes",
                                              "thinimg_pool_metadata_used_bytes",
                                              "thinimg_pool_metadata_total_bytes",
                                              "thinimg_pool_mode",
                                              "thinimg_pool_needs_check",
                                              "thinimg_pool_usable"};
    for (size_t i = 0; i < sizeof(pool_gauges) / sizeof(pool_gauges[0]); i++)
        metrics_clear(pool_gauges[i]);
    struct pool_info info;
    struct err e = {0};
    if (pool_get(NULL, d->cfg->pool_name, &info, &e) < 0) {
        metrics_gauge_set("thinimg_pool_up", 0, NULL);
        return;
    }
    metrics_gauge_set("thinimg_pool_up", 1, NULL);
    const struct pool_status *s = &info.status;
    metrics_gauge_set("thinimg_pool_mode", 1, "mode", pool_mode_name(s->mode), NULL);
    if (s->mode != POOL_MODE_FAIL && s->mode != POOL_MODE_ERROR) {
        double block = (double)info.table.block_sectors * 512.0;
        metrics_gauge_set("thinimg_pool_data_used_bytes", (double)s->data_used * block, NULL);
        metrics_gauge_set("thinimg_pool_data_total_bytes", (double)s->data_total * block, NULL);
        /* Metadata blocks are 4 KiB (the kernel's thin-pool status unit). */
        metrics_gauge_set("thinimg_pool_metadata_used_bytes", (double)s->meta_used * 4096.0, NULL);
        metrics_gauge_set("thinimg_pool_metadata_total_bytes", (double)s->meta_total * 4096.0,
                          NULL);
        metrics_gauge_set("thinimg_pool_needs_check", s->needs_check ? 1 : 0, NULL);
    }
    struct err he = {0};
    metrics_gauge_set("thinimg_pool_usable",
                      pool_check_usable(d->cfg->pool_name, s, NULL, &he) == 0 ? 1 : 0, NULL);
}

/* The queue sizing's state: each queue's limit, maximum and whether it is pinned, and the
 * pressure it last saw (absent when the kernel has no PSI). */
static void collect_queues(struct daemon *d)
{
    metrics_clear("thinimg_psi_io_some_avg10");
    metrics_clear("thinimg_psi_io_full_avg10");
    metrics_clear("thinimg_psi_memory_full_avg10");
    metrics_clear("thinimg_io_foreign_bytes_per_second");
    for (int q = 0; q < LOADLOOP_N; q++) {
        struct loadloop_state st;
        pipeline_queue_state(d->p, q, &st);
        const char *name = loadloop_queue_name(q);
        metrics_gauge_set("thinimg_queue_limit", st.limit, "queue", name, NULL);
        metrics_gauge_set("thinimg_queue_limit_max", st.max, "queue", name, NULL);
        metrics_gauge_set("thinimg_queue_limit_pinned", st.pinned ? 1 : 0, "queue", name, NULL);
        if (q == LOADLOOP_UNPACK && st.last.psi) {
            metrics_gauge_set("thinimg_psi_io_some_avg10", st.last.io_some, NULL);
            metrics_gauge_set("thinimg_psi_io_full_avg10", st.last.io_full, NULL);
            metrics_gauge_set("thinimg_psi_memory_full_avg10", st.last.mem_full, NULL);
        }
        if (st.last.disk) /* a disk both queues watch is one series */
            metrics_gauge_set("thinimg_io_foreign_bytes_per_second", st.last.foreign_bps, "disk",
                              st.disk, NULL);
    }
}

static void collect_health(struct daemon *d)
{
    struct health_report rep;
    guard_last_report(pipeline_guard(d->p), &rep);
    if (rep.n == 0) {
        pthread_mutex_lock(&d->health_lock);
        rep = d->health;
        pthread_mutex_unlock(&d->health_lock);
    }
    metrics_clear("thinimg_health_check");
    metrics_clear("thinimg_health_overall");
    if (rep.n == 0)
        return;
    for (size_t i = 0; i < rep.n; i++)
        if (rep.checks[i].level != HEALTH_SKIP)
            metrics_gauge_set("thinimg_health_check", (double)rep.checks[i].level, "check",
                              rep.checks[i].name, NULL);
    metrics_gauge_set("thinimg_health_overall", (double)rep.overall, NULL);
}

char *daemon_metrics_text(struct daemon *d, size_t *len)
{
    pthread_mutex_lock(&g_scrape_lock);
    metrics_gauge_set("thinimg_daemon_start_time_seconds", (double)d->started_ms / 1000.0, NULL);
    collect_runs(d);
    collect_tables(d);
    collect_pool(d);
    collect_queues(d);
    collect_health(d);
    int waiting = 0, jobs = 0;
    http_server_stats(d->api, &waiting, &jobs);
    metrics_gauge_set("thinimg_api_waiting_requests", waiting, NULL);
    metrics_gauge_set("thinimg_api_jobs", jobs, NULL);
    struct buf b = BUF_INIT;
    int r = metrics_render(&b);
    pthread_mutex_unlock(&g_scrape_lock);
    if (r < 0) {
        buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return buf_steal(&b);
}
