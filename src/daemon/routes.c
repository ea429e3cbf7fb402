/*
 * routes.c: the admin API's endpoints (docs/daemon.md): request validation, the calls into
 * the pipeline, the FSM and the database, and the JSON replies (shapes from views.h).
 *
 * Quick endpoints (database reads, starting a run) answer on the server's thread. What may
 * block is deferred (server.h): devicemapper removals and health checks run as jobs on worker
 * threads; ?wait= and /wait long polls are parked until the run finishes or time runs out.
 * Reads use the daemon's read-only connection, so they never wait for a checkpoint.
 *
 * Every failure is {"error", "code", "reason"} with a 4xx/5xx status (api.h): malformed JSON,
 * a missing or unknown field, a bad name or version, an unknown image or run, a method a path
 * does not take (405 with Allow), a path that does not exist (404).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/daemon_internal.h"
#include "daemon/views.h"
#include "dm/pool.h"
#include "pipeline/backend.h"
#include "pipeline/imagedb.h"
#include "util/defaults.h"
#include "util/log.h"
#include "util/parse.h"
#include "util/timeutil.h"
#include "util/version.h"

/* Default of ?wait= on /v1/runs/V/wait when no timeout is given. */
#define ROUTES_DEFAULT_WAIT_S 30
/* POST /v1/gc "timeout": a kernel operation that needs more than an hour is stuck. */
#define API_GC_TIMEOUT_MAX_S 3600
/* Image names in paths and bodies: a name ("golang:3") or a ref (a location). */
#define ROUTES_MAX_IMAGE_LEN 4096

static bool is(const struct http_request *rq, const char *method)
{
    return !strcmp(rq->method, method);
}

static enum http_next not_allowed(const struct http_request *rq, struct http_reply *out,
                                  const char *allow)
{
    http_reply_error(out, 405, "method", "%s is not allowed on %s (allowed: %s)", rq->method,
                     rq->path, allow);
    out->allow = allow;
    return HTTP_DONE;
}

static bool image_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > ROUTES_MAX_IMAGE_LEN)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* The same words as the pipeline's refusal (pipeline/lifecycle.c), so the CLI prints the
 * same message through the daemon. */
static void reply_bad_name(struct http_reply *out, const char *name)
{
    http_reply_error(out, 400, "invalid", "invalid activation name '%s' (1-64 of [A-Za-z0-9_.-])",
                     name);
}

/* The request body as a JSON object with only the allowed fields; NULL with the reply set. */
static json_t *body_object(const struct http_request *rq, struct http_reply *out,
                           const char *const *allowed)
{
    if (rq->body_len == 0) {
        http_reply_error(out, 400, "invalid", "this request needs a JSON object body");
        return NULL;
    }
    json_error_t je;
    json_t *o = json_loadb(rq->body, rq->body_len, 0, &je);
    if (!o) {
        http_reply_error(out, 400, "invalid", "malformed JSON: %s (line %d, column %d)", je.text,
                         je.line, je.column);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        http_reply_error(out, 400, "invalid", "the body must be a JSON object");
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            ok |= !strcmp(key, allowed[i]);
        if (!ok) {
            char list[256] = "";
            for (size_t i = 0; allowed[i]; i++)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
                         allowed[i]);
            http_reply_error(out, 400, "invalid", "unknown field \"%s\" (allowed: %s)", key, list);
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* A string field: required or optional; false with the reply set when wrong. */
static bool str_field(json_t *o, const char *key, bool required, const char **val,
                      struct http_reply *out)
{
    json_t *v = json_object_get(o, key);
    *val = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            http_reply_error(out, 400, "invalid", "missing field \"%s\"", key);
        return !required;
    }
    if (!json_is_string(v) || !*json_string_value(v)) {
        http_reply_error(out, 400, "invalid", "field \"%s\" must be a non-empty string", key);
        return false;
    }
    *val = json_string_value(v);
    return true;
}

/* "2.5" seconds (0..API_MAX_WAIT_S) into ms; -1 when absent. false on a bad value. */
static bool seconds_arg(const char *s, int64_t *ms)
{
    *ms = -1;
    if (!s)
        return true;
    char *end = NULL;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v < 0 || v > API_MAX_WAIT_S)
        return false;
    *ms = (int64_t)(v * 1000.0);
    return true;
}

static bool flag_arg(const char *s, bool *out)
{
    *out = false;
    if (!s)
        return true;
    if (!strcmp(s, "1") || !strcmp(s, "true") || !*s) {
        *out = true;
        return true;
    }
    return !strcmp(s, "0") || !strcmp(s, "false");
}

/* ---- long polls ------------------------------------------------------------------------------ */

enum wait_kind { WAIT_RUN, WAIT_PROCESS, WAIT_ACTIVATE };

struct run_wait {
    struct daemon *d;
    enum wait_kind kind;
    struct fsm_id run;
    int64_t t0;
};

int daemon_run_finished(void *ctx, const struct fsm_id *run)
{
    struct daemon *d = ctx;
    int r = fsm_wait(d->m, run, 0, NULL, NULL);
    if (r == 0 || r == -ESHUTDOWN)
        return 1;
    if (r == -ETIMEDOUT)
        return 0;
    return r;
}

/* The live state of an unfinished run (phase, progress) copied into rec. */
struct live_ctx {
    struct fsm_run_record *rec;
};

static int live_one(const struct fsm_run_record *r, void *ud)
{
    struct live_ctx *c = ud;
    if (strcmp(r->version.s, c->rec->version.s) != 0)
        return 0;
    c->rec->status = r->status;
    c->rec->attempt = r->attempt;
    free(c->rec->state);
    c->rec->state = r->state ? strdup(r->state) : NULL;
    free(c->rec->phase);
    c->rec->phase = r->phase ? strdup(r->phase) : NULL;
    c->rec->progress_done = r->progress_done;
    c->rec->progress_total = r->progress_total;
    if (r->error && *r->error) {
        free(c->rec->error);
        c->rec->error = strdup(r->error);
    }
    return 1;
}

static int get_run(struct daemon *d, const struct fsm_id *v, struct fsm_run_record *rec)
{
    int r = fsm_db_get_run(d->ro, v, rec);
    if (r == 0 && rec->status != FSM_RUN_FINISHED) {
        struct live_ctx c = {rec};
        fsm_list_active(d->m, live_one, &c);
    }
    return r;
}

static void wait_done(void *ud, bool finished, struct http_reply *out)
{
    struct run_wait *w = ud;
    struct daemon *d = w->d;
    struct fsm_run_record rec;
    int r = get_run(d, &w->run, &rec);
    if (r < 0) {
        http_reply_errno(out, r, "run %s: %s", w->run.s, strerror(-r));
        return;
    }
    finished = finished && rec.status == FSM_RUN_FINISHED;
    if (w->kind == WAIT_RUN) {
        http_reply_json(
            out, 200, json_pack("{s:b, s:o}", "finished", finished, "run", view_run(&rec, false)));
        fsm_run_record_free(&rec);
        return;
    }
    if (!finished) {
        http_reply_json(out, 202,
                        json_pack("{s:s, s:b, s:s}", "run", w->run.s, "finished", 0, "state",
                                  rec.state ? rec.state : ""));
        fsm_run_record_free(&rec);
        return;
    }
    json_t *o;
    if (w->kind == WAIT_PROCESS) {
        o = view_process_result(d->ro, &rec, mono_ms() - w->t0);
    } else {
        o = json_pack("{s:s, s:s}", "run", rec.version.s, "outcome", fsm_outcome_name(rec.outcome));
        struct activation_rec a = {0};
        if (imagedb_activation_get(d->ro, rec.resource_id, &a) == 0) {
            json_object_set_new(o, "activation", view_activation(d->ro, &a));
            activation_rec_free(&a);
        }
    }
    json_object_set_new(o, "finished", json_true());
    unsigned status = 200;
    int er = pipeline_run_errno(rec.outcome, rec.error_kind);
    if (er < 0) {
        const char *reason;
        status = api_status_for_errno(er == -ECANCELED ? -EIO : er, &reason);
        json_object_set_new(o, "error", json_string(rec.error ? rec.error : ""));
        json_object_set_new(o, "code", json_integer(status));
        json_object_set_new(o, "reason", json_string(reason));
    }
    http_reply_json(out, status, o);
    fsm_run_record_free(&rec);
}

/* Park the request until run finished or wait_ms passed; then wait_done() answers. */
static enum http_next park(struct daemon *d, enum wait_kind kind, const struct fsm_id *run,
                           int64_t wait_ms, int64_t t0, struct http_reply *out,
                           struct http_deferred *def)
{
    struct run_wait *w = calloc(1, sizeof(*w));
    if (!w) {
        http_reply_errno(out, -ENOMEM, "out of memory");
        return HTTP_DONE;
    }
    *w = (struct run_wait){.d = d, .kind = kind, .run = *run, .t0 = t0};
    def->run = *run;
    def->timeout_ms = wait_ms;
    def->done = wait_done;
    def->ud = w;
    def->free_ud = free;
    return HTTP_WAIT;
}

/* Answer 202 {"run"} now, or park the request until the run finished (wait_ms >= 0). */
static enum http_next accepted(struct daemon *d, enum wait_kind kind, const struct fsm_id *run,
                               int64_t wait_ms, int64_t t0, struct http_reply *out,
                               struct http_deferred *def)
{
    if (wait_ms < 0) {
        http_reply_json(out, 202, json_pack("{s:s}", "run", run->s));
        return HTTP_DONE;
    }
    return park(d, kind, run, wait_ms, t0, out, def);
}

/* ---- jobs ------------------------------------------------------------------------------------ */

enum job_kind { JOB_DEACTIVATE, JOB_REMOVE_ACTIVATION, JOB_REMOVE_IMAGE, JOB_HEALTH, JOB_GC };

struct job {
    struct daemon *d;
    enum job_kind kind;
    char name[ROUTES_MAX_IMAGE_LEN + 1];
    struct gc_opts gc; /* JOB_GC */
    bool gc_force;
};

void daemon_pool_check(struct health_check *c, void *ud)
{
    struct daemon *d = ud;
    struct err e = {0};
    int r = pool_ensure_usable(d->cfg->pool_name, NULL, &e);
    c->level = r == 0 ? HEALTH_OK : HEALTH_FAIL;
    snprintf(c->detail, sizeof(c->detail), "%s", r == 0 ? "pool usable" : err_str(&e));
}

static void health_job(struct daemon *d, struct http_reply *out)
{
    /* A report, not a gate: kernel log lines are not marked as seen (the guard does that). */
    struct health_opts ho = {.cursor_path = d->cfg->kmsg_cursor_path,
                             .advance_cursor = false,
                             .pool = daemon_pool_check,
                             .pool_ud = d};
    struct health_report rep;
    int r = health_run(&ho, &rep);
    if (r < 0) {
        http_reply_errno(out, r, "cannot run the health checks: %s", strerror(-r));
        return;
    }
    pthread_mutex_lock(&d->health_lock);
    d->health = rep;
    d->health_ms = now_ms();
    pthread_mutex_unlock(&d->health_lock);
    json_t *o = view_health(&rep);
    struct health_report last;
    guard_last_report(pipeline_guard(d->p), &last);
    json_object_set_new(o, "last_guard_report", last.n ? view_health(&last) : json_null());
    http_reply_json(out, 200, o);
}

/* POST /v1/gc: the report of `thinimg gc --json`; when removing failed, the status and the
 * error fields of that failure next to it (the CLI prints the report and exits as locally). */
static int gc_job(struct job *j, int cancel_fd, struct http_reply *out, struct err *e)
{
    struct gc_report rep;
    bool have = false;
    int r = pipeline_gc(j->d->p, &j->gc, j->gc_force, cancel_fd, &rep, &have, e);
    if (!have)
        return r;
    json_t *o = gc_report_json(&rep, j->gc_force);
    gc_report_free(&rep);
    unsigned status = 200;
    if (r < 0) {
        const char *reason;
        status = api_status_for_errno(r, &reason);
        json_object_set_new(o, "error", json_string(err_str(e)));
        json_object_set_new(o, "code", json_integer(status));
        json_object_set_new(o, "reason", json_string(reason));
    }
    http_reply_json(out, status, o);
    return 0;
}

static void run_job(void *ud, int cancel_fd, struct http_reply *out)
{
    struct job *j = ud;
    struct err e = {0};
    int r = -EINVAL;
    db_thread_failure_reset(); /* a database failure met below is this job's */
    switch (j->kind) {
    case JOB_DEACTIVATE: {
        bool was_active = false;
        r = pipeline_deactivate(j->d->p, j->name, cancel_fd, &was_active, &e);
        if (r < 0)
            break;
        http_reply_json(out, 200,
                        json_pack("{s:s, s:b, s:s}", "activation", j->name, "was_active",
                                  was_active, "state", "inactive"));
        return;
    }
    case JOB_REMOVE_ACTIVATION:
        r = pipeline_remove_activation(j->d->p, j->name, cancel_fd, &e);
        if (r < 0)
            break;
        http_reply_json(out, 200, json_pack("{s:s, s:b}", "activation", j->name, "removed", 1));
        return;
    case JOB_REMOVE_IMAGE: {
        struct pipeline_removed_image ri;
        r = pipeline_remove_image(j->d->p, j->name, cancel_fd, &ri, &e);
        if (r < 0)
            break;
        http_reply_json(out, 200,
                        json_pack("{s:s, s:b, s:i, s:i}", "image", ri.name, "removed", 1,
                                  "layers_deleted", ri.layers_deleted, "layers_kept",
                                  ri.layers_kept));
        return;
    }
    case JOB_HEALTH:
        health_job(j->d, out);
        return;
    case JOB_GC:
        r = gc_job(j, cancel_fd, out, &e);
        if (r == 0)
            return;
        break;
    }
    if (r == -ECANCELED)
        r = err_set(&e, -ESHUTDOWN, "the daemon is shutting down; nothing was removed");
    /* A locked, corrupt or read-only database: the description naming the file (and the
     * lock's holder) first, the job's own words after. */
    struct err db = {0};
    db_thread_failure(&db);
    char msg[2 * ERR_MSG_MAX];
    int code = e.code ? e.code : r;
    db_failure_explain(&db, code, &e, msg, sizeof(msg));
    http_reply_errno(out, code, "%s", msg);
}

static struct job *job_new(struct daemon *d, enum job_kind kind, const char *name,
                           struct http_reply *out)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j) {
        http_reply_errno(out, -ENOMEM, "out of memory");
        return NULL;
    }
    j->d = d;
    j->kind = kind;
    snprintf(j->name, sizeof(j->name), "%s", name ? name : "");
    return j;
}

static enum http_next defer(struct job *j, struct http_deferred *def)
{
    def->job = run_job;
    def->ud = j;
    def->free_ud = free;
    return HTTP_JOB;
}

static enum http_next defer_job(struct daemon *d, enum job_kind kind, const char *name,
                                struct http_reply *out, struct http_deferred *def)
{
    struct job *j = job_new(d, kind, name, out);
    return j ? defer(j, def) : HTTP_DONE;
}

/* {"<key>": arr} after a listing that returned r; arr is taken either way. */
static enum http_next reply_list(struct http_reply *out, int r, const char *key, json_t *arr)
{
    if (r < 0) {
        json_decref(arr);
        http_reply_errno(out, r, "cannot list %s: %s", key, strerror(-r));
    } else {
        http_reply_json(out, 200, json_pack("{s:o}", key, arr));
    }
    return HTTP_DONE;
}

/* ?limit=N&after=KEY: at most N rows (default dflt, 1..API_MAX_LIST_LIMIT) after KEY. The page
 * asks for one row more than it shows, to know whether a next page exists. false after a 400. */
static bool page_arg(const struct http_request *rq, size_t dflt, struct imagedb_page *pg,
                     struct http_reply *out)
{
    const char *l = http_query(rq, "limit");
    uint64_t n = dflt;
    if (l && (parse_u64(l, &n) < 0 || n < 1 || n > API_MAX_LIST_LIMIT)) {
        http_reply_error(out, 400, "invalid", "limit must be 1..%d, not '%s'", API_MAX_LIST_LIMIT,
                         l);
        return false;
    }
    pg->limit = (size_t)n + 1;
    pg->after = http_query(rq, "after");
    return true;
}

/* A page: the rows asked for, and "next" (the last row's key_field) when one more was found. */
static enum http_next reply_page(struct http_reply *out, int r, const char *key, json_t *arr,
                                 const struct imagedb_page *pg, const char *key_field)
{
    if (r == -ENOENT && pg->after) {
        json_decref(arr);
        http_reply_error(out, 404, "not_found", "after=%s: no such %s to continue after", pg->after,
                         key_field);
        return HTTP_DONE;
    }
    if (r < 0)
        return reply_list(out, r, key, arr);
    json_t *next = json_null();
    if (json_array_size(arr) == pg->limit) {
        json_array_remove(arr, pg->limit - 1);
        json_t *last = json_array_get(arr, pg->limit - 2);
        next = json_incref(json_object_get(last, key_field));
    }
    http_reply_json(out, 200, json_pack("{s:o, s:o}", key, arr, "next", next));
    return HTTP_DONE;
}

/* ---- endpoints ------------------------------------------------------------------------------- */

static enum http_next get_version(struct daemon *d, struct http_reply *out)
{
    pthread_mutex_lock(&d->pool_lock);
    json_t *o = json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:b}", "version", THINIMG_VERSION,
                          "pid", (json_int_t)getpid(), "started_ms", (json_int_t)d->started_ms,
                          "state_dir", d->cfg->state_dir, "db", d->cfg->db_path, "pool",
                          d->cfg->pool_name, "socket", d->socket_path, "pool_ready", d->pool_ready);
    json_object_set_new(o, "pool_error",
                        d->pool_ready ? json_null() : json_string(err_str(&d->pool_err)));
    pthread_mutex_unlock(&d->pool_lock);
    http_reply_json(out, 200, o);
    return HTTP_DONE;
}

/* The queues and their sizing: limit, maximum, pinned, the last change and what it saw. */
static enum http_next get_queues(struct daemon *d, struct http_reply *out)
{
    json_t *arr = json_array();
    for (int q = 0; q < LOADLOOP_N; q++) {
        struct loadloop_state st;
        pipeline_queue_state(d->p, q, &st);
        json_t *sig =
            json_pack("{s:b, s:i, s:i, s:f}", "psi", st.last.psi, "running", st.last.running,
                      "waiting", st.last.waiting, "throughput", st.last.throughput);
        if (st.last.psi) {
            json_object_set_new(sig, "io_some_avg10", json_real(st.last.io_some));
            json_object_set_new(sig, "io_full_avg10", json_real(st.last.io_full));
            json_object_set_new(sig, "memory_full_avg10", json_real(st.last.mem_full));
        }
        if (st.last.disk) {
            json_object_set_new(sig, "disk", json_string(st.disk));
            json_object_set_new(sig, "disk_io_bps", json_real(st.last.disk_bps));
            json_object_set_new(sig, "own_io_bps", json_real(st.last.own_bps));
            json_object_set_new(sig, "foreign_io_bps", json_real(st.last.foreign_bps));
        }
        json_array_append_new(arr, json_pack("{s:s, s:i, s:i, s:b, s:s?, s:o}", "queue",
                                             loadloop_queue_name(q), "limit", st.limit, "max",
                                             st.max, "pinned", st.pinned, "last_change",
                                             st.reason[0] ? st.reason : NULL, "signals", sig));
    }
    http_reply_json(out, 200, json_pack("{s:o}", "queues", arr));
    return HTTP_DONE;
}

static enum http_next get_pool(struct daemon *d, struct http_reply *out)
{
    if (view_backend(d->ro) == &backend_overlay) { /* no pool: its directories (views.h) */
        json_t *o = view_overlay_status(d->ro, d->cfg);
        if (o)
            http_reply_json(out, 200, o);
        else
            http_reply_errno(out, -ENOMEM, "cannot list the overlay directories");
        return HTTP_DONE;
    }
    struct pool_info info;
    struct err e = {0};
    int r = pool_get(d->ro, d->cfg->pool_name, &info, &e);
    if (r == -ENODEV) {
        http_reply_error(out, 503, "unhealthy", "%s", err_str(&e));
        return HTTP_DONE;
    }
    if (r < 0) {
        http_reply_err(out, r, &e);
        return HTTP_DONE;
    }
    struct err health = {0};
    int hr = pool_check_usable(d->cfg->pool_name, &info.status, NULL, &health);
    http_reply_json(out, 200, view_pool(&info, hr < 0 ? &health : NULL));
    return HTTP_DONE;
}

static int machine_one(const struct fsm_machine_def *def, void *ud)
{
    json_t *arr = ud;
    json_t *t = json_array();
    for (size_t i = 0; i < def->n_transitions; i++)
        json_array_append_new(t, json_string(def->transitions[i].name));
    json_array_append_new(arr, json_pack("{s:s, s:s, s:o, s:s}", "type", def->type, "action",
                                         def->action, "transitions", t, "end_state",
                                         def->end_state ? def->end_state : ""));
    return 0;
}

static enum http_next get_machines(struct daemon *d, struct http_reply *out)
{
    json_t *arr = json_array();
    fsm_list_machines(d->m, machine_one, arr);
    http_reply_json(out, 200, json_pack("{s:o}", "machines", arr));
    return HTTP_DONE;
}

static enum http_next get_logs(struct daemon *d, const struct http_request *rq,
                               struct http_reply *out)
{
    const char *s = http_query(rq, "since"), *l = http_query(rq, "limit");
    char *end = NULL;
    unsigned long long since = 0, limit = 0;
    if (s && (since = strtoull(s, &end, 10), !*s || *end)) {
        http_reply_error(out, 400, "invalid", "since must be a line number, not '%s'", s);
        return HTTP_DONE;
    }
    if (l && (limit = strtoull(l, &end, 10), !*l || *end)) {
        http_reply_error(out, 400, "invalid", "limit must be a number, not '%s'", l);
        return HTTP_DONE;
    }
    http_reply_json(out, 200, logring_json(d->logs, since, (size_t)limit));
    return HTTP_DONE;
}

static int image_one(const struct image_rec *r, void *ud)
{
    void **c = ud;
    json_array_append_new(c[1], view_image(c[0], r));
    return 0;
}

static enum http_next images(struct daemon *d, const struct http_request *rq,
                             struct http_reply *out, struct http_deferred *def)
{
    const char *rest = rq->path + strlen("/v1/images");
    if (!*rest || !strcmp(rest, "/")) {
        if (!is(rq, "GET"))
            return not_allowed(rq, out, "GET");
        struct imagedb_page pg;
        if (!page_arg(rq, API_DEFAULT_LIST_LIMIT, &pg, out))
            return HTTP_DONE;
        json_t *arr = json_array();
        void *c[2] = {d->ro, arr};
        int r = imagedb_image_list(d->ro, &pg, image_one, c);
        return reply_page(out, r, "images", arr, &pg, "ref");
    }
    const char *name = rest + 1;
    if (!image_name_ok(name)) {
        http_reply_error(out, 400, "invalid", "invalid image name or ref");
        return HTTP_DONE;
    }
    if (is(rq, "DELETE"))
        return defer_job(d, JOB_REMOVE_IMAGE, name, out, def);
    if (!is(rq, "GET"))
        return not_allowed(rq, out, "GET, DELETE");
    struct image_rec img = {0};
    int r = imagedb_image_find(d->ro, name, &img);
    if (r == -EEXIST)
        http_reply_error(out, 400, "invalid", "image name '%s' is ambiguous; give its ref", name);
    else if (r == -ENOENT)
        http_reply_errno(out, r, "no image '%s' (see GET /v1/images)", name);
    else if (r < 0)
        http_reply_errno(out, r, "cannot read image %s: %s", name, strerror(-r));
    else
        http_reply_json(out, 200, view_image(d->ro, &img));
    if (r == 0)
        image_rec_free(&img);
    return HTTP_DONE;
}

static int activation_one(const struct activation_rec *a, void *ud)
{
    void **c = ud;
    json_array_append_new(c[1], view_activation(c[0], a));
    return 0;
}

static enum http_next post_activation(struct daemon *d, const struct http_request *rq,
                                      struct http_reply *out, struct http_deferred *def)
{
    int64_t t0 = mono_ms(), wait_ms;
    if (!seconds_arg(http_query(rq, "wait"), &wait_ms)) {
        http_reply_error(out, 400, "invalid", "wait must be seconds, 0 to %d", API_MAX_WAIT_S);
        return HTTP_DONE;
    }
    static const char *const fields[] = {"image", "name", "mount_at", NULL};
    json_t *o = body_object(rq, out, fields);
    if (!o)
        return HTTP_DONE;
    const char *image, *name, *mount_at;
    enum http_next next = HTTP_DONE;
    if (str_field(o, "image", true, &image, out) && str_field(o, "name", false, &name, out) &&
        str_field(o, "mount_at", false, &mount_at, out)) {
        if (!image_name_ok(image))
            http_reply_error(out, 400, "invalid", "invalid image name or ref");
        else if (name && !imagedb_name_valid(name))
            reply_bad_name(out, name);
        else {
            struct fsm_id run;
            struct err e = {0};
            int r = pipeline_start_activate_at(d->p, image, name, mount_at, &run, &e);
            if (r < 0)
                http_reply_err(out, r, &e);
            else
                next = accepted(d, WAIT_ACTIVATE, &run, wait_ms, t0, out, def);
        }
    }
    json_decref(o);
    return next;
}

static enum http_next activations(struct daemon *d, const struct http_request *rq,
                                  struct http_reply *out, struct http_deferred *def)
{
    const char *rest = rq->path + strlen("/v1/activations");
    if (!*rest || !strcmp(rest, "/")) {
        if (is(rq, "POST"))
            return post_activation(d, rq, out, def);
        if (!is(rq, "GET"))
            return not_allowed(rq, out, "GET, POST");
        bool all;
        if (!flag_arg(http_query(rq, "all"), &all)) {
            http_reply_error(out, 400, "invalid", "all must be 0 or 1");
            return HTTP_DONE;
        }
        int64_t image_id = 0;
        const char *image = http_query(rq, "image");
        if (image) {
            struct image_rec img = {0};
            int r = image_name_ok(image) ? imagedb_image_find(d->ro, image, &img) : -EINVAL;
            if (r < 0) {
                http_reply_errno(out, r == -EEXIST ? -EINVAL : r, "no image '%s'%s", image,
                                 r == -EEXIST ? " (ambiguous name; give its ref)" : "");
                return HTTP_DONE;
            }
            image_id = img.id;
            image_rec_free(&img);
        }
        struct imagedb_page pg;
        if (!page_arg(rq, API_DEFAULT_LIST_LIMIT, &pg, out))
            return HTTP_DONE;
        json_t *arr = json_array();
        void *c[2] = {d->ro, arr};
        int r = imagedb_activation_list(d->ro, image_id, !all, &pg, activation_one, c);
        return reply_page(out, r, "activations", arr, &pg, "name");
    }
    /* NAME or NAME/deactivate; a name with a '/' (or anything else outside [A-Za-z0-9_.-]) is
     * a bad name, not another endpoint. */
    char name[256];
    const char *tail = "/deactivate";
    size_t n = strlen(rest + 1), tl = strlen(tail);
    bool deactivate = n > tl && !strcmp(rest + 1 + n - tl, tail);
    if (deactivate)
        n -= tl;
    snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) - 1 ? n : sizeof(name) - 1),
             rest + 1);
    if (n >= sizeof(name) || !imagedb_name_valid(name)) {
        reply_bad_name(out, name);
        return HTTP_DONE;
    }
    const char *slash = deactivate ? tail : NULL;
    if (slash) {
        if (!is(rq, "POST"))
            return not_allowed(rq, out, "POST");
        return defer_job(d, JOB_DEACTIVATE, name, out, def);
    }
    if (is(rq, "DELETE"))
        return defer_job(d, JOB_REMOVE_ACTIVATION, name, out, def);
    if (!is(rq, "GET"))
        return not_allowed(rq, out, "GET, DELETE");
    struct activation_rec a = {0};
    int r = imagedb_activation_get(d->ro, name, &a);
    if (r < 0) {
        http_reply_errno(out, r, "no activation '%s' (see GET /v1/activations?all=1)", name);
        return HTTP_DONE;
    }
    http_reply_json(out, 200, view_activation(d->ro, &a));
    activation_rec_free(&a);
    return HTTP_DONE;
}

static enum http_next post_process(struct daemon *d, const struct http_request *rq,
                                   struct http_reply *out, struct http_deferred *def)
{
    if (!is(rq, "POST"))
        return not_allowed(rq, out, "POST");
    int64_t t0 = mono_ms(), wait_ms;
    if (!seconds_arg(http_query(rq, "wait"), &wait_ms)) {
        http_reply_error(out, 400, "invalid", "wait must be seconds, 0 to %d", API_MAX_WAIT_S);
        return HTTP_DONE;
    }
    static const char *const fields[] = {"ref", "name", "device_size", NULL};
    json_t *o = body_object(rq, out, fields);
    if (!o)
        return HTTP_DONE;
    const char *ref, *name;
    enum http_next next = HTTP_DONE;
    if (!str_field(o, "ref", true, &ref, out) || !str_field(o, "name", false, &name, out)) {
        json_decref(o);
        return HTTP_DONE;
    }
    uint64_t size = 0;
    json_t *sz = json_object_get(o, "device_size");
    bool size_ok = true;
    if (json_is_integer(sz))
        size_ok = json_integer_value(sz) > 0 && (size = (uint64_t)json_integer_value(sz));
    else if (json_is_string(sz))
        size_ok = parse_size(json_string_value(sz), &size) == 0;
    else if (sz && !json_is_null(sz))
        size_ok = false;
    if (!size_ok || (size && (size < PIPELINE_MIN_DEVICE_BYTES || size % 512)))
        http_reply_error(out, 400, "invalid",
                         "device_size must be bytes (or \"8G\"), at least 64 MiB, a multiple "
                         "of 512");
    else if (!image_name_ok(ref))
        http_reply_error(out, 400, "invalid", "invalid ref");
    else if (name && !imagedb_name_valid(name))
        reply_bad_name(out, name);
    else {
        struct fsm_id run;
        struct err e = {0};
        int r = pipeline_start_process(d->p, ref, name, size, &run, &e);
        if (r < 0)
            http_reply_err(out, r, &e);
        else {
            log_info("process-image requested", "ref=%s run=%s", ref, run.s);
            next = accepted(d, WAIT_PROCESS, &run, wait_ms, t0, out, def);
        }
    }
    json_decref(o);
    return next;
}

struct runs_ctx {
    json_t *arr;
    const char *type, *resource;
    size_t limit, n;
};

static int run_one(const struct fsm_run_record *r, void *ud)
{
    struct runs_ctx *c = ud;
    if ((c->type && strcmp(r->type, c->type) != 0) ||
        (c->resource && strcmp(r->resource_id, c->resource) != 0))
        return 0;
    if (c->limit && c->n >= c->limit)
        return 1;
    c->n++;
    json_array_append_new(c->arr, view_run(r, false));
    return 0;
}

static int event_one(const struct fsm_event_record *ev, void *ud)
{
    json_array_append_new(ud, view_event(ev));
    return 0;
}

static bool token_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
            return false;
    return true;
}

/* POST /v1/runs/VERSION/cancel: the run ends CANCELLED (a running transition is told through
 * its cancel hook: a download, a listing, an extraction stop). */
static enum http_next cancel_run(struct daemon *d, const struct fsm_id *v, struct http_reply *out)
{
    int r = fsm_cancel(d->m, v, "cancelled by the operator");
    if (r == -EALREADY) {
        http_reply_error(out, 409, "busy", "run %s has already finished (or is finishing)", v->s);
        return HTTP_DONE;
    }
    if (r < 0) {
        http_reply_errno(out, r, "cannot cancel run %s: %s", v->s,
                         r == -ENOENT ? "no such run" : strerror(-r));
        return HTTP_DONE;
    }
    http_reply_json(out, 202, json_pack("{s:s, s:b}", "run", v->s, "cancelled", 1));
    return HTTP_DONE;
}

static enum http_next runs(struct daemon *d, const struct http_request *rq, struct http_reply *out,
                           struct http_deferred *def)
{
    const char *rest = rq->path + strlen("/v1/runs");
    const char *tail = strrchr(rest, '/');
    bool cancel = tail && tail != rest && !strcmp(tail, "/cancel");
    if (cancel ? !is(rq, "POST") : !is(rq, "GET"))
        return not_allowed(rq, out, cancel ? "POST" : "GET");
    if (!*rest || !strcmp(rest, "/")) {
        bool all;
        struct runs_ctx c = {.type = http_query(rq, "type"),
                             .resource = http_query(rq, "resource")};
        const char *l = http_query(rq, "limit"), *after = http_query(rq, "after");
        char *end = NULL;
        long long lim = l ? strtoll(l, &end, 10) : -1;
        struct fsm_id after_id = {0};
        if (!flag_arg(http_query(rq, "all"), &all) || (c.type && !token_ok(c.type)) ||
            (l && (!*l || *end || lim < 0)) || (after && fsm_id_parse(after, &after_id) < 0)) {
            http_reply_error(out, 400, "invalid",
                             "query: all=0|1, type=a machine type (e.g. fetch), resource=ID, "
                             "limit=N >= 0, after=a run version (with all=1)");
            return HTTP_DONE;
        }
        c.arr = json_array();
        int r;
        if (all) {
            /* A page, newest first: one run more than shown says whether there is a next. */
            struct imagedb_page pg = {.limit = (l ? (size_t)lim : API_DEFAULT_RUNS_LIMIT) + 1};
            struct fsm_list_filter f = {.include_finished = true,
                                        .type = c.type,
                                        .resource_id = c.resource,
                                        .after = after ? &after_id : NULL,
                                        .limit = l && lim == 0 ? 0 : pg.limit};
            r = fsm_db_list_runs(d->ro, &f, run_one, &c);
            if (l && lim == 0) /* limit=0: every run, as before */
                return reply_list(out, r, "runs", c.arr);
            return reply_page(out, r, "runs", c.arr, &pg, "version");
        } else {
            c.limit = l ? (size_t)lim : 0;
            r = fsm_list_active(d->m, run_one, &c);
        }
        return reply_list(out, r, "runs", c.arr);
    }
    char vs[FSM_ID_LEN + 8];
    const char *slash = strchr(rest + 1, '/');
    size_t n = slash ? (size_t)(slash - rest - 1) : strlen(rest + 1);
    struct fsm_id v;
    if (n >= sizeof(vs) || (memcpy(vs, rest + 1, n), vs[n] = '\0', fsm_id_parse(vs, &v) < 0)) {
        http_reply_error(out, 400, "invalid",
                         "'%.*s' is not a run version (26 characters, see GET /v1/runs?all=1)",
                         (int)(n < 64 ? n : 64), rest + 1);
        return HTTP_DONE;
    }
    if (cancel && !strcmp(slash, "/cancel"))
        return cancel_run(d, &v, out);
    if (slash && strcmp(slash, "/wait") != 0) {
        http_reply_error(out, 404, "not_found", "no such endpoint: %s %s (see docs/daemon.md)",
                         rq->method, rq->path);
        return HTTP_DONE;
    }
    struct fsm_run_record rec;
    int r = get_run(d, &v, &rec);
    if (r < 0) {
        http_reply_errno(out, r,
                         "no run %s (finished runs are pruned after the retention "
                         "period)",
                         v.s);
        return HTTP_DONE;
    }
    if (slash) {
        fsm_run_record_free(&rec);
        int64_t ms;
        if (!seconds_arg(http_query(rq, "timeout"), &ms)) {
            http_reply_error(out, 400, "invalid", "timeout must be seconds, 0 to %d",
                             API_MAX_WAIT_S);
            return HTTP_DONE;
        }
        return park(d, WAIT_RUN, &v, ms < 0 ? ROUTES_DEFAULT_WAIT_S * 1000 : ms, mono_ms(), out,
                    def);
    }
    json_t *o = view_run(&rec, true);
    json_t *evs = json_array();
    fsm_db_list_events(d->ro, &v, event_one, evs);
    fsm_run_record_free(&rec);
    http_reply_json(out, 200, json_pack("{s:o, s:o}", "run", o, "events", evs));
    return HTTP_DONE;
}

static enum http_next metrics(struct daemon *d, const struct http_request *rq,
                              struct http_reply *out)
{
    if (!is(rq, "GET"))
        return not_allowed(rq, out, "GET");
    size_t len = 0;
    char *text = daemon_metrics_text(d, &len);
    if (!text) {
        http_reply_errno(out, -ENOMEM, "out of memory");
        return HTTP_DONE;
    }
    out->status = 200;
    out->text = text;
    out->text_len = len;
    out->content_type = "text/plain; version=0.0.4; charset=utf-8";
    return HTTP_DONE;
}

/* A boolean field (absent: false); false with the reply set when it is not a boolean. */
static bool bool_field(json_t *o, const char *key, bool *val, struct http_reply *out)
{
    json_t *v = json_object_get(o, key);
    *val = json_is_true(v);
    if (!v || json_is_boolean(v))
        return true;
    http_reply_error(out, 400, "invalid", "field \"%s\" must be true or false", key);
    return false;
}

/* An integer field from lo to hi (absent: *val unchanged). */
static bool int_field(json_t *o, const char *key, json_int_t lo, json_int_t hi, json_int_t *val,
                      struct http_reply *out)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return true;
    if (json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi) {
        *val = json_integer_value(v);
        return true;
    }
    http_reply_error(out, 400, "invalid", "field \"%s\" must be an integer from %lld to %lld", key,
                     (long long)lo, (long long)hi);
    return false;
}

/* GET /v1/gc: the idle collection of orphans: on or off, its grace, what waits, when. */
static enum http_next get_gc(struct daemon *d, struct http_reply *out)
{
    pthread_mutex_lock(&d->orphans_lock);
    struct daemon_orphans_view v = d->orphans_view;
    pthread_mutex_unlock(&d->orphans_lock);
    json_t *ms[] = {v.next_due_ms ? json_integer(v.next_due_ms) : json_null(),
                    v.last_pass_ms ? json_integer(v.last_pass_ms) : json_null(),
                    v.next_pass_ms ? json_integer(v.next_pass_ms) : json_null()};
    json_t *o =
        json_pack("{s:b, s:I, s:I, s:o, s:o, s:o, s:o}", "enabled", !d->o->no_auto_gc_orphans,
                  "grace_ms", (json_int_t)d->orphans.grace_ms, "waiting", (json_int_t)v.waiting,
                  "next_due_ms", ms[0], "last_pass_ms", ms[1], "next_pass_ms", ms[2], "refused",
                  v.refused[0] ? json_string(v.refused) : json_null());
    http_reply_json(out, 200, json_pack("{s:o}", "auto_gc_orphans", o));
    return HTTP_DONE;
}

/* POST /v1/gc {"force", "blobs", "include_foreign", "history_days", "timeout"}: `thinimg gc`
 * run by the daemon under its guard (pipeline_gc), as a job: it waits for the guard. */
static enum http_next post_gc(struct daemon *d, const struct http_request *rq,
                              struct http_reply *out, struct http_deferred *def)
{
    if (is(rq, "GET"))
        return get_gc(d, out);
    if (!is(rq, "POST"))
        return not_allowed(rq, out, "GET, POST");
    static const char *const fields[] = {"force",        "blobs",   "include_foreign",
                                         "history_days", "timeout", NULL};
    json_t *o = rq->body_len ? body_object(rq, out, fields) : json_object();
    if (!o)
        return HTTP_DONE;
    bool force, blobs, foreign;
    json_int_t days = DEFAULT_HISTORY_RETENTION_DAYS, timeout_s = 0;
    bool ok = bool_field(o, "force", &force, out) && bool_field(o, "blobs", &blobs, out) &&
              bool_field(o, "include_foreign", &foreign, out) &&
              int_field(o, "history_days", 0, GC_HISTORY_DAYS_MAX, &days, out) &&
              int_field(o, "timeout", 1, API_GC_TIMEOUT_MAX_S, &timeout_s, out);
    json_decref(o);
    if (!ok)
        return HTTP_DONE;
    struct job *j = job_new(d, JOB_GC, NULL, out);
    if (!j)
        return HTTP_DONE;
    j->gc_force = force;
    j->gc = (struct gc_opts){.include_blobs = blobs,
                             .include_foreign_ids = foreign,
                             .history_days = (uint32_t)days,
                             .op_timeout_ms = (int)timeout_s * 1000};
    log_info("gc requested", "force=%d blobs=%d", force, blobs);
    return defer(j, def);
}

static bool under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return !strncmp(path, prefix, n) && (path[n] == '\0' || path[n] == '/');
}

enum http_next daemon_route(void *ctx, const struct http_request *rq, struct http_reply *out,
                            struct http_deferred *d)
{
    struct daemon *dm = ctx;
    const char *p = rq->path;
    if (!strcmp(p, "/metrics"))
        return metrics(dm, rq, out);
    if (!strcmp(p, "/v1/process-image"))
        return post_process(dm, rq, out, d);
    if (under(p, "/v1/activations"))
        return activations(dm, rq, out, d);
    if (under(p, "/v1/images"))
        return images(dm, rq, out, d);
    if (under(p, "/v1/runs"))
        return runs(dm, rq, out, d);
    if (!strcmp(p, "/v1/gc"))
        return post_gc(dm, rq, out, d);
    static const char *const gets[] = {"/v1/version", "/v1/health", "/v1/pool", "/v1/machines",
                                       "/v1/logs",    "/v1/queues", NULL};
    for (size_t i = 0; gets[i]; i++) {
        if (strcmp(p, gets[i]) != 0)
            continue;
        if (!is(rq, "GET"))
            return not_allowed(rq, out, "GET");
        switch (i) {
        case 0:
            return get_version(dm, out);
        case 1:
            return defer_job(dm, JOB_HEALTH, NULL, out, d);
        case 2:
            return get_pool(dm, out);
        case 3:
            return get_machines(dm, out);
        case 4:
            return get_logs(dm, rq, out);
        default:
            return get_queues(dm, out);
        }
    }
    http_reply_error(out, 404, "not_found", "no such endpoint: %s %s (see docs/daemon.md)",
                     rq->method, p);
    return HTTP_DONE;
}

enum http_next daemon_route_metrics(void *ctx, const struct http_request *rq,
                                    struct http_reply *out, struct http_deferred *d)
{
    (void)d;
    if (!strcmp(rq->path, "/metrics"))
        return metrics(ctx, rq, out);
    http_reply_error(out, 404, "not_found",
                     "only /metrics is served here; the admin API is on the Unix socket");
    return HTTP_DONE;
}
