/*
 * feed.c: the monitor's data, from a daemon's API or read-only from the database. See feed.h.
 */
#include "tui/feed.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/client.h"
#include "daemon/views.h"
#include "dm/pool.h"
#include "fsm/fsm.h"
#include "pipeline/imagedb.h"
#include "source/ref.h"
#include "store/db.h"
#include "tui/loadview.h"
#include "util/timeutil.h"

struct feed {
    const struct config *cfg;
    struct api_client *api; /* live */
    struct db *ro;          /* read-only */
    uint64_t log_seq;
    char *logs[FEED_MAX_LOGS]; /* ring, oldest at log_head */
    size_t n_logs, log_head;
};

int feed_open(const struct config *cfg, struct feed **out)
{
    struct feed *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->cfg = cfg;
    *out = f;
    return 0;
}

static void logs_clear(struct feed *f)
{
    for (size_t i = 0; i < FEED_MAX_LOGS; i++) {
        free(f->logs[i]);
        f->logs[i] = NULL;
    }
    f->n_logs = f->log_head = 0;
    f->log_seq = 0;
}

void feed_close(struct feed *f)
{
    if (!f)
        return;
    api_client_free(f->api);
    if (f->ro)
        db_close(f->ro);
    logs_clear(f);
    free(f);
}

static void run_from_record(const struct fsm_run_record *r, struct feed_run *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->version, sizeof(o->version), "%s", r->version.s);
    snprintf(o->type, sizeof(o->type), "%s", r->type ? r->type : "");
    snprintf(o->action, sizeof(o->action), "%s", r->action ? r->action : "");
    view_run_label(o->type, r->resource_id, o->what, sizeof(o->what));
    snprintf(o->state, sizeof(o->state), "%s", r->state ? r->state : "");
    snprintf(o->status, sizeof(o->status), "%s", fsm_run_status_name(r->status));
    snprintf(o->phase, sizeof(o->phase), "%s", r->phase ? r->phase : "");
    o->done = r->progress_done;
    o->total = r->progress_total;
    o->attempt = r->attempt;
    if (r->status == FSM_RUN_FINISHED)
        snprintf(o->outcome, sizeof(o->outcome), "%s", fsm_outcome_name(r->outcome));
    snprintf(o->error, sizeof(o->error), "%s", r->error ? r->error : "");
    o->created_ms = r->created_ms;
    o->finished_ms = r->finished_ms;
}

/* ---- live ------------------------------------------------------------------------------------ */

static json_t *get(struct feed *f, const char *path, struct err *e)
{
    long status = 0;
    json_t *reply = NULL;
    int r = api_call(f->api, "GET", path, NULL, FEED_REQUEST_MS, &status, &reply, e);
    if (r == 0 && status != 200) {
        api_reply_error(status, reply, e);
        json_decref(reply);
        return NULL;
    }
    return r < 0 ? NULL : reply;
}

/* The queue sizing (GET /v1/queues) and the idle orphan collection (GET /v1/gc). */
static void load_from_daemon(struct feed *f, struct feed_snapshot *s, struct err *e)
{
    json_t *queues = get(f, "/v1/queues", e);
    if (queues)
        loadview_queues_line(queues, s->queues, sizeof(s->queues));
    json_decref(queues);
    json_t *gc = get(f, "/v1/gc", e);
    if (gc)
        loadview_orphans_line(gc, now_ms(), s->orphans, sizeof(s->orphans));
    json_decref(gc);
}

static size_t runs_from_json(json_t *arr, struct feed_run *v, size_t max, size_t *total)
{
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        struct fsm_run_record rec;
        if (view_run_parse(json_array_get(arr, i), &rec) < 0)
            continue;
        if (total)
            (*total)++;
        if (n < max)
            run_from_record(&rec, &v[n++]);
        fsm_run_record_free(&rec);
    }
    return n;
}

static void pool_from_json(json_t *o, struct feed_pool *p)
{
    if (!strcmp(json_string_value(json_object_get(o, "backend")) ?: "", "overlay")) {
        char du[32];
        format_bytes((uint64_t)json_integer_value(json_object_get(o, "disk_bytes")), du,
                     sizeof(du));
        snprintf(p->note, sizeof(p->note), "backend overlay: no pool; %s in layer and upper dirs",
                 du);
        return; /* not known: the monitor shows the note */
    }
    p->known = true;
    snprintf(p->mode, sizeof(p->mode), "%s", json_string_value(json_object_get(o, "mode")) ?: "");
    p->data_pct = json_number_value(json_object_get(o, "data_used_pct"));
    p->meta_pct = json_number_value(json_object_get(o, "metadata_used_pct"));
    uint64_t block = (uint64_t)json_integer_value(json_object_get(o, "block_bytes"));
    p->data_used = (uint64_t)json_integer_value(json_object_get(o, "data_used_blocks")) * block;
    p->data_total = (uint64_t)json_integer_value(json_object_get(o, "data_total_blocks")) * block;
    p->usable = json_is_true(json_object_get(o, "healthy"));
    const char *h = json_string_value(json_object_get(o, "health"));
    snprintf(p->note, sizeof(p->note), "%s", p->usable ? "" : (h ? h : ""));
}

static void logs_add(struct feed *f, const char *line)
{
    size_t slot = (f->log_head + f->n_logs) % FEED_MAX_LOGS;
    if (f->n_logs == FEED_MAX_LOGS) {
        slot = f->log_head;
        f->log_head = (f->log_head + 1) % FEED_MAX_LOGS;
    } else {
        f->n_logs++;
    }
    free(f->logs[slot]);
    f->logs[slot] = strdup(line);
}

static int refresh_live(struct feed *f, struct feed_snapshot *s)
{
    struct err e = {0};
    json_t *v = get(f, "/v1/version", &e);
    if (!v) {
        snprintf(s->error, sizeof(s->error), "%s", err_str(&e));
        return -EIO;
    }
    s->live = true;
    snprintf(s->banner, sizeof(s->banner), "daemon pid %lld, socket %s",
             (long long)json_integer_value(json_object_get(v, "pid")), api_client_socket(f->api));
    json_decref(v);
    json_t *runs = get(f, "/v1/runs", &e);
    if (runs)
        s->n_active = runs_from_json(json_object_get(runs, "runs"), s->active, FEED_MAX_RUNS,
                                     &s->total_active);
    json_decref(runs);
    char path[64];
    snprintf(path, sizeof(path), "/v1/runs?all=1&limit=%d", FEED_RECENT_RUNS * 3);
    json_t *recent = get(f, path, &e);
    json_t *arr = json_object_get(recent, "runs");
    for (size_t i = 0; i < json_array_size(arr) && s->n_recent < FEED_RECENT_RUNS; i++) {
        struct fsm_run_record rec;
        if (view_run_parse(json_array_get(arr, i), &rec) < 0)
            continue;
        if (rec.status == FSM_RUN_FINISHED)
            run_from_record(&rec, &s->recent[s->n_recent++]);
        fsm_run_record_free(&rec);
    }
    json_decref(recent);
    json_t *acts = get(f, "/v1/activations?all=1", &e);
    arr = json_object_get(acts, "activations");
    for (size_t i = 0; i < json_array_size(arr) && s->n_acts < FEED_MAX_ACTS; i++) {
        json_t *a = json_array_get(arr, i);
        struct feed_act *o = &s->acts[s->n_acts++];
        snprintf(o->name, sizeof(o->name), "%s",
                 json_string_value(json_object_get(a, "name")) ?: "");
        snprintf(o->image, sizeof(o->image), "%s",
                 json_string_value(json_object_get(a, "image")) ?: "");
        snprintf(o->state, sizeof(o->state), "%s",
                 json_string_value(json_object_get(a, "state")) ?: "");
        snprintf(o->device, sizeof(o->device), "%s",
                 json_string_value(json_object_get(a, "device_path")) ?: "-");
    }
    json_decref(acts);
    load_from_daemon(f, s, &e);
    struct err pe = {0};
    json_t *pool = get(f, "/v1/pool", &pe);
    snprintf(s->pool.name, sizeof(s->pool.name), "%s", f->cfg->pool_name);
    if (pool)
        pool_from_json(pool, &s->pool);
    else
        snprintf(s->pool.note, sizeof(s->pool.note), "%s", err_str(&pe));
    json_decref(pool);
    snprintf(path, sizeof(path), "/v1/logs?since=%llu&limit=%d", (unsigned long long)f->log_seq,
             FEED_MAX_LOGS);
    json_t *logs = get(f, path, &e);
    arr = json_object_get(logs, "lines");
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *line = json_string_value(json_object_get(json_array_get(arr, i), "line"));
        if (line)
            logs_add(f, line);
    }
    if (logs)
        f->log_seq = (uint64_t)json_integer_value(json_object_get(logs, "next"));
    json_decref(logs);
    if (e.code)
        snprintf(s->error, sizeof(s->error), "%s", err_str(&e));
    return 0;
}

/* ---- read-only ------------------------------------------------------------------------------- */

struct ro_ctx {
    struct feed_snapshot *s;
    bool finished;
};

static int ro_run(const struct fsm_run_record *r, void *ud)
{
    struct ro_ctx *c = ud;
    struct feed_snapshot *s = c->s;
    if (c->finished) {
        if (r->status == FSM_RUN_FINISHED && s->n_recent < FEED_RECENT_RUNS)
            run_from_record(r, &s->recent[s->n_recent++]);
        return 0;
    }
    s->total_active++;
    if (s->n_active < FEED_MAX_RUNS)
        run_from_record(r, &s->active[s->n_active++]);
    return 0;
}

static int ro_act(const struct activation_rec *a, void *ud)
{
    struct feed_snapshot *s = ud;
    if (s->n_acts >= FEED_MAX_ACTS)
        return 1;
    struct feed_act *o = &s->acts[s->n_acts++];
    snprintf(o->name, sizeof(o->name), "%s", a->name);
    snprintf(o->image, sizeof(o->image), "%s", a->image_name ? a->image_name : "");
    snprintf(o->state, sizeof(o->state), "%s", a->state);
    snprintf(o->device, sizeof(o->device), "%s", a->device_path ? a->device_path : "-");
    return 0;
}

/* A database that cannot be read (corrupt, busy, unreadable): the words and the kind the CLI
 * gives for it (cli_fail: "database is corrupt: PATH: ...; restore it from a backup or move it
 * away", kind corrupt), never an empty screen. */
static void db_trouble(struct feed_snapshot *s, int r, const struct err *e)
{
    int code = e && e->code ? e->code : r;
    struct err db = {0};
    db_last_failure(&db);
    char msg[2 * ERR_MSG_MAX];
    db_failure_explain(&db, code, e, msg, sizeof(msg));
    snprintf(s->error, sizeof(s->error), "%s", msg);
    snprintf(s->error_kind, sizeof(s->error_kind), "%s", err_kind_name(err_kind_of(code)));
}

static void refresh_readonly(struct feed *f, struct feed_snapshot *s, const char *why)
{
    snprintf(s->banner, sizeof(s->banner),
             "READ-ONLY: %s; showing %s (start `thinimg daemon` to process images from here)", why,
             f->cfg->db_path);
    if (!f->ro) {
        struct db_options o = {.readonly = true};
        struct err e = {0};
        int r = 0;
        if (access(f->cfg->db_path, F_OK) != 0 && errno == ENOENT)
            snprintf(s->error, sizeof(s->error), "no database at %s yet", f->cfg->db_path);
        else if ((r = db_open(f->cfg->db_path, &o, &f->ro, &e)) < 0)
            db_trouble(s, r, &e);
        if (r < 0)
            f->ro = NULL;
    }
    if (f->ro) {
        struct ro_ctx c = {s, false};
        struct fsm_list_filter lf = {0};
        int r = fsm_db_list_runs(f->ro, &lf, ro_run, &c);
        c.finished = true;
        struct fsm_list_filter all = {.include_finished = true, .limit = FEED_RECENT_RUNS * 3};
        if (r >= 0)
            r = fsm_db_list_runs(f->ro, &all, ro_run, &c);
        if (r >= 0)
            r = imagedb_activation_list(f->ro, 0, false, NULL, ro_act, s);
        if (r < 0) {
            /* What was read is not the database's content: show the trouble, not a part of
             * it, and open the database again at the next refresh. */
            db_trouble(s, r, NULL);
            s->n_active = s->total_active = s->n_recent = s->n_acts = 0;
            db_close(f->ro);
            f->ro = NULL;
        }
    }
    snprintf(s->pool.name, sizeof(s->pool.name), "%s", f->cfg->pool_name);
    struct pool_info info;
    struct err e = {0};
    if (pool_get(NULL, f->cfg->pool_name, &info, &e) == 0) {
        json_t *o = view_pool(&info, NULL);
        struct err he = {0};
        int hr = pool_check_usable(f->cfg->pool_name, &info.status, NULL, &he);
        pool_from_json(o, &s->pool);
        s->pool.usable = hr == 0;
        snprintf(s->pool.note, sizeof(s->pool.note), "%s", hr == 0 ? "" : err_str(&he));
        json_decref(o);
    } else {
        snprintf(s->pool.note, sizeof(s->pool.note), "%s", err_str(&e));
    }
}

/* Recent runs, the last to finish first. */
static int by_finish_desc(const void *a, const void *b)
{
    const struct feed_run *x = a, *y = b;
    return x->finished_ms < y->finished_ms ? 1 : x->finished_ms > y->finished_ms ? -1 : 0;
}

static void feed_refresh_any(struct feed *f, struct feed_snapshot *s);

void feed_refresh(struct feed *f, struct feed_snapshot *s)
{
    feed_refresh_any(f, s);
    qsort(s->recent, s->n_recent, sizeof(s->recent[0]), by_finish_desc);
}

static void feed_refresh_any(struct feed *f, struct feed_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    if (!f->api) {
        struct err e = {0};
        int r = api_client_detect(f->cfg, &f->api, &e);
        if (r <= 0) {
            f->api = NULL;
            refresh_readonly(f, s, r < 0 ? err_str(&e) : "no daemon runs");
            return;
        }
        logs_clear(f);
    }
    if (refresh_live(f, s) < 0) {
        /* The daemon went away: back to read-only until one answers again. */
        char why[300];
        snprintf(why, sizeof(why), "the daemon stopped answering (%s)", s->error);
        api_client_free(f->api);
        f->api = NULL;
        memset(s, 0, sizeof(*s));
        refresh_readonly(f, s, why);
    }
}

size_t feed_logs(struct feed *f, const char **out, size_t max)
{
    size_t n = 0;
    if (!f->api)
        return 0;
    size_t skip = f->n_logs > max ? f->n_logs - max : 0;
    for (size_t i = skip; i < f->n_logs; i++)
        out[n++] = f->logs[(f->log_head + i) % FEED_MAX_LOGS];
    return n;
}

int feed_process(struct feed *f, const char *location, char *run_out, size_t n, struct err *e)
{
    if (!f->api)
        return err_set(e, -EROFS,
                       "read-only: no daemon runs, so nothing can be started from "
                       "here; start `thinimg daemon` first");
    json_t *body = json_pack("{s:s}", "ref", location);
    long status = 0;
    json_t *reply = NULL;
    int r =
        api_call(f->api, "POST", "/v1/process-image", body, FEED_REQUEST_MS, &status, &reply, e);
    json_decref(body);
    if (r == 0 && status / 100 != 2)
        r = api_reply_error(status, reply, e);
    if (r == 0)
        snprintf(run_out, n, "%s", json_string_value(json_object_get(reply, "run")) ?: "?");
    json_decref(reply);
    return r;
}

/* ---- the source browser's catalog ------------------------------------------------------------ */

void feed_catalog_free(struct feed_catalog *c)
{
    free(c->v);
    memset(c, 0, sizeof(*c));
}

void feed_catalog_load(const struct config *cfg, const struct source_options *so, const char *ref,
                       struct feed_catalog *c)
{
    feed_catalog_free(c);
    const char *what = ref ? ref : cfg->source;
    snprintf(c->source, sizeof(c->source), "%s", what ? what : "");
    if (!what) {
        snprintf(c->error, sizeof(c->error),
                 "no source to browse: start the monitor with --source LOCATION (or "
                 "THINIMG_SOURCE), e.g. s3://bucket/images/");
        return;
    }
    struct err e = {0};
    struct source *s = NULL;
    char *key = NULL;
    int r = ref ? ref_open(ref, cfg->source, so, &s, &key, &e)
                : source_open(cfg->source, so, &s, &key, &e);
    struct source_listing l = {0};
    struct ref_catalog cat = {0};
    if (r == 0)
        r = ref_catalog_list(s, &key, &l, &cat, &e);
    if (r < 0) {
        snprintf(c->error, sizeof(c->error), "cannot list %s: %s", what, err_str(&e));
    } else {
        c->v = calloc(cat.n_families + cat.n_objects + 1, sizeof(*c->v));
        for (size_t i = 0; c->v && i < cat.n_families && c->n < FEED_MAX_ENTRIES; i++) {
            const struct ref_family *fam = &cat.families[i];
            struct feed_entry *en = &c->v[c->n++];
            uint64_t total = 0;
            for (size_t k = 0; k < fam->n_layers; k++)
                total += fam->layers[k].size;
            char size[32];
            format_bytes(total, size, sizeof(size));
            snprintf(en->label, sizeof(en->label), "%s:%u", fam->name,
                     fam->n_layers ? fam->layers[fam->n_layers - 1].n : 0);
            snprintf(en->info, sizeof(en->info), "%zu layer%s, %s", fam->n_layers,
                     fam->n_layers == 1 ? "" : "s", size);
            char *loc = source_location(s, fam->prefix);
            snprintf(en->location, sizeof(en->location), "%s", loc ? loc : "");
            free(loc);
            en->family = true;
        }
        for (size_t i = 0; c->v && i < cat.n_objects && c->n < FEED_MAX_ENTRIES; i++) {
            const struct ref_layer *o = &cat.objects[i];
            struct feed_entry *en = &c->v[c->n++];
            char size[32];
            format_bytes(o->size, size, sizeof(size));
            snprintf(en->label, sizeof(en->label), "%s", source_key_name(s, o->key));
            snprintf(en->info, sizeof(en->info), "object, %s", size);
            snprintf(en->location, sizeof(en->location), "%s", o->location);
        }
        if (c->n == 0)
            snprintf(c->error, sizeof(c->error), "nothing under %s", what);
    }
    ref_catalog_free(&cat);
    source_listing_free(&l);
    free(key);
    if (s)
        source_free(s);
}
