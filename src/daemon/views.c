/*
 * views.c: JSON shapes of runs, events, images, activations and health reports. See views.h.
 */
#include "daemon/views.h"

#include "dm/dm.h"

#include "dm/pool.h"
#include "dm/pool_status.h"
#include "dm/thin.h"
#include "dm/usage.h"
#include "pipeline/backend.h"
#include "store/stmt.h"
#include "store/oci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Request/response bytes as JSON: embedded as is when they are JSON, else as a string when
 * they are text, else null. */
static json_t *bytes_json(const void *p, size_t n)
{
    if (!p || n == 0)
        return json_null();
    json_t *j = json_loadb(p, n, JSON_DECODE_ANY, NULL);
    if (j)
        return j;
    j = json_stringn(p, n);
    return j ? j : json_null();
}

static json_t *id_or_null(const struct fsm_id *id)
{
    return fsm_id_is_zero(id) ? json_null() : json_string(id->s);
}

static json_t *ms_or_null(int64_t ms)
{
    return ms ? json_integer(ms) : json_null();
}

void view_run_label(const char *type, const char *resource, char *out, size_t n)
{
    if (!resource)
        resource = "";
    if (!strncmp(resource, "sha256:", 7)) {
        snprintf(out, n, "%s %.12s", !strcmp(type, "unpack") ? "chain" : "blob", resource + 7);
        return;
    }
    const char *last = strrchr(resource, '/');
    if (last && last[1] == '\0') { /* a prefix ending in '/' */
        const char *p = last;
        while (p > resource && p[-1] != '/')
            p--;
        snprintf(out, n, "%s", p);
        return;
    }
    if (last) {
        const char *p = last;
        while (p > resource && p[-1] != '/')
            p--;
        snprintf(out, n, "%s", p > resource ? p : last + 1);
        return;
    }
    snprintf(out, n, "%s", resource);
}

json_t *view_run(const struct fsm_run_record *r, bool full)
{
    json_t *trans = json_array();
    for (size_t i = 0; i < r->n_transitions; i++)
        json_array_append_new(trans, json_string(r->transitions[i]));
    json_t *o = json_object();
    json_object_set_new(o, "version", json_string(r->version.s));
    json_object_set_new(o, "type", json_string(r->type));
    json_object_set_new(o, "action", json_string(r->action));
    json_object_set_new(o, "resource_id", json_string(r->resource_id));
    json_object_set_new(o, "queue", r->queue ? json_string(r->queue) : json_null());
    json_object_set_new(o, "parent", id_or_null(&r->parent));
    json_object_set_new(o, "run_after", id_or_null(&r->run_after));
    json_object_set_new(o, "status", json_string(fsm_run_status_name(r->status)));
    json_object_set_new(o, "state", json_string(r->state ? r->state : ""));
    json_object_set_new(o, "next_index", json_integer(r->next_index));
    json_object_set_new(o, "transitions", trans);
    json_object_set_new(o, "attempt", json_integer(r->attempt));
    json_object_set_new(o, "outcome",
                        r->status == FSM_RUN_FINISHED ? json_string(fsm_outcome_name(r->outcome))
                                                      : json_null());
    json_object_set_new(o, "error", json_string(r->error ? r->error : ""));
    json_object_set_new(o, "error_kind",
                        r->error && *r->error ? json_string(err_kind_name(r->error_kind))
                                              : json_null());
    json_object_set_new(o, "error_state",
                        r->error_state ? json_string(r->error_state) : json_null());
    json_object_set_new(o, "created_ms", json_integer(r->created_ms));
    json_object_set_new(o, "started_ms", ms_or_null(r->started_ms));
    json_object_set_new(o, "finished_ms", ms_or_null(r->finished_ms));
    json_object_set_new(o, "delay_until_ms", ms_or_null(r->delay_until_ms));
    json_object_set_new(o, "request_bytes", json_integer((json_int_t)r->request_len));
    json_object_set_new(o, "response_bytes", json_integer((json_int_t)r->response_len));
    if (r->phase || r->progress_done || r->progress_total) {
        json_object_set_new(o, "phase", r->phase ? json_string(r->phase) : json_null());
        json_object_set_new(o, "progress_done", json_integer((json_int_t)r->progress_done));
        json_object_set_new(o, "progress_total", json_integer((json_int_t)r->progress_total));
    }
    if (full) {
        json_object_set_new(o, "request", bytes_json(r->request, r->request_len));
        json_object_set_new(o, "response", bytes_json(r->response, r->response_len));
    }
    return o;
}

int view_outcome_parse(const char *s, enum fsm_outcome *out)
{
    for (int o = FSM_OK; o <= FSM_CANCELLED; o++)
        if (s && !strcmp(s, fsm_outcome_name((enum fsm_outcome)o))) {
            *out = (enum fsm_outcome)o;
            return 0;
        }
    return -EINVAL;
}

static char *dup_str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? strdup(s) : NULL;
}

int view_run_parse(const json_t *o, struct fsm_run_record *r)
{
    memset(r, 0, sizeof(*r));
    const char *v = json_string_value(json_object_get(o, "version"));
    const char *status = json_string_value(json_object_get(o, "status"));
    if (!json_is_object(o) || !v || fsm_id_parse(v, &r->version) < 0 || !status)
        return -EBADMSG;
    const char *p = json_string_value(json_object_get(o, "parent"));
    if (p)
        fsm_id_parse(p, &r->parent);
    p = json_string_value(json_object_get(o, "run_after"));
    if (p)
        fsm_id_parse(p, &r->run_after);
    r->type = dup_str(o, "type");
    r->action = dup_str(o, "action");
    r->resource_id = dup_str(o, "resource_id");
    r->queue = dup_str(o, "queue");
    r->state = dup_str(o, "state");
    r->error = dup_str(o, "error");
    r->error_kind = err_kind_parse(json_string_value(json_object_get(o, "error_kind")));
    r->error_state = dup_str(o, "error_state");
    r->phase = dup_str(o, "phase");
    if (!r->error)
        r->error = strdup("");
    if (!r->type || !r->action || !r->resource_id || !r->state || !r->error) {
        fsm_run_record_free(r);
        return -EBADMSG;
    }
    r->status = !strcmp(status, "finished")  ? FSM_RUN_FINISHED
                : !strcmp(status, "running") ? FSM_RUN_RUNNING
                                             : FSM_RUN_PENDING;
    r->outcome = FSM_OK;
    if (r->status == FSM_RUN_FINISHED)
        view_outcome_parse(json_string_value(json_object_get(o, "outcome")), &r->outcome);
    r->attempt = (uint32_t)json_integer_value(json_object_get(o, "attempt"));
    r->next_index = (uint32_t)json_integer_value(json_object_get(o, "next_index"));
    r->created_ms = json_integer_value(json_object_get(o, "created_ms"));
    r->started_ms = json_integer_value(json_object_get(o, "started_ms"));
    r->finished_ms = json_integer_value(json_object_get(o, "finished_ms"));
    r->delay_until_ms = json_integer_value(json_object_get(o, "delay_until_ms"));
    r->progress_done = (uint64_t)json_integer_value(json_object_get(o, "progress_done"));
    r->progress_total = (uint64_t)json_integer_value(json_object_get(o, "progress_total"));
    return 0;
}

json_t *view_event(const struct fsm_event_record *ev)
{
    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer(ev->seq));
    json_object_set_new(o, "type", json_string(fsm_event_type_name(ev->type)));
    json_object_set_new(o, "state", ev->state ? json_string(ev->state) : json_null());
    json_object_set_new(o, "attempt", json_integer(ev->attempt));
    json_object_set_new(o, "outcome",
                        ev->has_outcome ? json_string(fsm_outcome_name(ev->outcome)) : json_null());
    json_object_set_new(o, "error", ev->error ? json_string(ev->error) : json_null());
    json_object_set_new(o, "ts_ms", json_integer(ev->ts_ms));
    json_object_set_new(o, "response_bytes", json_integer((json_int_t)ev->response_len));
    return o;
}

static json_t *image_layers(struct db *db, int64_t image_id)
{
    json_t *arr = json_array();
    struct image_layer_rec *v = NULL;
    size_t n = 0;
    if (imagedb_image_layers(db, image_id, &v, &n) < 0)
        return arr;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_pack("{s:i, s:s?, s:s?, s:s?}", "index", v[i].idx, "location",
                              v[i].location, "digest", v[i].digest, "chain_id", v[i].chain_id);
        if (v[i].size >= 0)
            json_object_set_new(o, "size", json_integer(v[i].size));
        struct layer_rec l = {0};
        if (v[i].chain_id && imagedb_layer_get(db, v[i].chain_id, &l) == 0) {
            json_object_set_new(o, "layer_state", json_string(l.state));
            if (l.dev_id > 0)
                json_object_set_new(o, "device_id", json_integer(l.dev_id));
            if (l.bytes >= 0)
                json_object_set_new(o, "applied_bytes", json_integer(l.bytes));
            struct view_bytes b;
            if (view_layer_bytes(db, &l, &b)) {
                json_object_set_new(o, b.disk ? "disk_bytes" : "mapped_bytes",
                                    b.known ? json_integer((json_int_t)b.mapped) : json_null());
                view_bytes_json(o, &b);
            }
            layer_rec_free(&l);
        }
        json_array_append_new(arr, o);
    }
    imagedb_image_layers_free(v, n);
    return arr;
}

json_t *view_image(struct db *db, const struct image_rec *r)
{
    json_t *o = json_pack(
        "{s:I, s:s, s:s, s:s, s:i, s:i, s:s?, s:s?, s:I, s:I}", "id", (json_int_t)r->id, "name",
        r->name, "ref", r->ref, "state", r->state, "n_layers", r->n_layers, "active_activations",
        r->n_activations, "top_chain", r->top_chain, "error", r->error, "created_at_ms",
        (json_int_t)r->created_at_ms, "updated_at_ms", (json_int_t)r->updated_at_ms);
    json_object_set_new(o, "backend", json_string(view_backend(db)->name));
    json_object_set_new(o, "layers", image_layers(db, r->id));
    /* A registry image: its manifest, config and run settings (what a VM launcher needs). */
    struct oci_image_config c;
    if (oci_image_config_get(db, r->id, &c) == 1) {
        json_t *run = json_loads(c.config, 0, NULL);
        json_object_set_new(o, "config",
                            json_pack("{s:s, s:s, s:s?, s:o}", "manifest_digest", c.manifest_digest,
                                      "config_digest", c.config_digest, "platform", c.platform,
                                      "run", run ? run : json_object()));
        oci_image_config_free(&c);
    }
    uint64_t applied = 0, blobs = 0;
    if (view_image_sizes(db, r->id, &applied, &blobs) == 0) {
        json_object_set_new(o, "size_bytes", json_integer((json_int_t)applied));
        json_object_set_new(o, "blob_bytes", json_integer((json_int_t)blobs));
    }
    struct view_bytes b;
    view_image_bytes(db, r->id, &b);
    view_bytes_json(o, &b);
    return o;
}

int view_image_sizes(struct db *db, int64_t image_id, uint64_t *applied, uint64_t *blobs)
{
    struct image_layer_rec *v = NULL;
    size_t n = 0;
    int r = imagedb_image_layers(db, image_id, &v, &n);
    if (r < 0)
        return r;
    *applied = *blobs = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].size > 0)
            *blobs += (uint64_t)v[i].size;
        struct layer_rec l = {0};
        if (v[i].chain_id && imagedb_layer_get(db, v[i].chain_id, &l) == 0) {
            if (l.bytes > 0)
                *applied += (uint64_t)l.bytes;
            layer_rec_free(&l);
        }
    }
    imagedb_image_layers_free(v, n);
    return 0;
}

int view_activation_mapped(const struct activation_rec *a, uint64_t *bytes)
{
    if (view_activation_device_present(a) != 1)
        return -ENXIO;
    const char *slash = strrchr(a->device_path, '/');
    struct dm_target_line line;
    int r = dm_dev_status(slash ? slash + 1 : a->device_path, &line, NULL);
    if (r < 0)
        return r;
    struct thin_status ts;
    if (strcmp(line.type, "thin") || thin_status_parse(line.params, &ts) < 0 || ts.failed)
        return -EIO;
    *bytes = ts.mapped_sectors * 512;
    return 0;
}

json_t *view_activation(struct db *db, const struct activation_rec *a)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?, s:s?, s:I}", "name", a->name, "image",
                          a->image_name ? a->image_name : "", "chain_id", a->chain_id, "state",
                          a->state, "device_path", a->device_path, "pool", a->pool, "error",
                          a->error, "created_at_ms", (json_int_t)a->created_at_ms);
    if (a->dev_id > 0)
        json_object_set_new(o, "device_id", json_integer(a->dev_id));
    json_object_set_new(o, "backend", json_string(view_backend(db)->name));
    int present = view_activation_present(db, a);
    if (present >= 0) {
        json_object_set_new(o, "device_present", json_boolean(present));
        json_object_set_new(o, "kernel_state", json_string(present ? "active" : "gone"));
    }
    struct view_bytes b;
    view_activation_bytes(db, a, &b);
    uint64_t mapped = 0;
    if (b.disk && b.known)
        json_object_set_new(o, "disk_bytes", json_integer((json_int_t)b.mapped));
    else if (present == 1 && view_activation_mapped(a, &mapped) == 0)
        json_object_set_new(o, "mapped_bytes", json_integer((json_int_t)mapped));
    view_bytes_json(o, &b);
    return o;
}

static char *usage_cache;
static char *state_dir;

void view_usage_cache_file(const char *path)
{
    free(usage_cache);
    usage_cache = path ? strdup(path) : NULL;
}

void view_state_dir(const char *dir)
{
    free(state_dir);
    state_dir = dir ? strdup(dir) : NULL;
}

const struct backend_ops *view_backend(struct db *db)
{
    char name[32];
    const struct backend_ops *b = NULL;
    if (db && backend_recorded(db, name, sizeof(name)) == 1)
        b = backend_by_name(name);
    return b ? b : &backend_dm_thin;
}

/* A backend's own measure of a directory (usage() said r, with u): 1 the figures are in out
 * (its whole du exclusive: a layer's diff or an activation's upper holds no block another
 * one holds), 0 the backend has none (dm-thin: the pool's metadata has them). */
static int measured(int r, const struct backend_du *u, struct view_bytes *out)
{
    memset(out, 0, sizeof(*out));
    if (r == 0)
        return 0;
    out->disk = true;
    if (r < 0) {
        snprintf(out->why, sizeof(out->why), "cannot measure its directory: %s", strerror(-r));
        return 1;
    }
    out->known = true;
    out->mapped = out->exclusive = u->bytes;
    return 1;
}

bool view_layer_bytes(struct db *db, const struct layer_rec *l, struct view_bytes *out)
{
    struct backend_du u = {0};
    const struct backend_ops *b = view_backend(db);
    int r = state_dir ? b->layer_usage(state_dir, l, &u) : 0;
    if (measured(r, &u, out))
        return true;
    view_device_bytes(db, l->pool, l->dev_id, out);
    return l->dev_id > 0 && l->pool;
}

void view_device_bytes(struct db *db, const char *pool, int64_t dev_id, struct view_bytes *out)
{
    memset(out, 0, sizeof(*out));
    if (!pool || dev_id <= 0 || dev_id > THIN_ID_MAX) {
        snprintf(out->why, sizeof(out->why), "no thin device yet");
        return;
    }
    struct thin_usage_dev d;
    if (thin_usage_dev_get(db, pool, usage_cache, (uint32_t)dev_id, &d, out->why,
                           sizeof(out->why)) == 1) {
        out->known = true;
        out->mapped = d.mapped;
        out->exclusive = d.exclusive;
        out->shared = d.shared;
        out->why[0] = '\0';
    }
}

void view_activation_bytes(struct db *db, const struct activation_rec *a, struct view_bytes *out)
{
    struct backend_du u = {0};
    const struct backend_ops *b = view_backend(db);
    int r = state_dir ? b->act_usage(state_dir, a, &u) : 0;
    if (!measured(r, &u, out))
        view_device_bytes(db, a->pool, a->dev_id, out);
}

int view_activation_present(struct db *db, const struct activation_rec *a)
{
    const struct backend_ops *b = view_backend(db);
    if (b == &backend_dm_thin)
        return view_activation_device_present(a);
    if (!a->state || strcmp(a->state, "active"))
        return -1;
    return b->act_up(NULL, a) ? 1 : 0;
}

/* How many images list the layer chain_id (a layer two images use is not one image's alone). */
static int64_t chain_users(struct db *db, const char *chain_id)
{
    int64_t n = 0;
    if (db_query_int(db, "SELECT count(DISTINCT image_id) FROM image_layers WHERE chain_id=?", &n,
                     DB_TEXT(chain_id)) < 0)
        return -1;
    return n;
}

void view_image_bytes(struct db *db, int64_t image_id, struct view_bytes *out)
{
    memset(out, 0, sizeof(*out));
    struct image_layer_rec *v = NULL;
    size_t n = 0;
    int r = imagedb_image_layers(db, image_id, &v, &n);
    if (r < 0) {
        snprintf(out->why, sizeof(out->why), "cannot read the image's layers: %s", strerror(-r));
        return;
    }
    /* The layers come bottom first: the last one is the top, whose device maps the image. */
    bool all = n > 0;
    uint64_t excl = 0, shared_layers = 0;
    struct view_bytes top = {0};
    for (size_t i = 0; i < n && all; i++) {
        struct layer_rec l = {0};
        if (!v[i].chain_id || imagedb_layer_get(db, v[i].chain_id, &l) < 0) {
            snprintf(out->why, sizeof(out->why), "layer %d is not applied yet", v[i].idx);
            all = false;
            break;
        }
        struct view_bytes b;
        view_layer_bytes(db, &l, &b);
        if (!b.known) {
            snprintf(out->why, sizeof(out->why), "layer %d: %s", v[i].idx, b.why);
            all = false;
        } else {
            int64_t users = chain_users(db, v[i].chain_id);
            if (users < 0) {
                snprintf(out->why, sizeof(out->why), "cannot read which images use layer %d",
                         v[i].idx);
                all = false;
            } else if (users <= 1) {
                excl += b.exclusive;
            } else {
                shared_layers += b.exclusive;
            }
            out->disk = b.disk;
            if (i + 1 == n)
                top = b;
        }
        layer_rec_free(&l);
    }
    imagedb_image_layers_free(v, n);
    if (n == 0)
        snprintf(out->why, sizeof(out->why), "no layers yet");
    if (!all)
        return;
    out->known = true;
    out->exclusive = excl;
    /* A directory backend's image is its layer directories: those another image uses too. */
    out->shared = out->disk ? shared_layers : top.shared;
}

void view_bytes_json(json_t *o, const struct view_bytes *b)
{
    json_object_set_new(o, "exclusive_bytes",
                        b->known ? json_integer((json_int_t)b->exclusive) : json_null());
    json_object_set_new(o, "shared_bytes",
                        b->known ? json_integer((json_int_t)b->shared) : json_null());
    if (!b->known)
        json_object_set_new(o, "bytes_note", json_string(b->why));
}

int view_activation_device_present(const struct activation_rec *a)
{
    if (!a->state || strcmp(a->state, "active") || !a->device_path)
        return -1;
    const char *slash = strrchr(a->device_path, '/');
    const char *name = slash ? slash + 1 : a->device_path;
    if (!dm_name_valid(name) || dm_available(NULL) < 0)
        return -1;
    int r = dm_dev_exists(name);
    return r < 0 ? -1 : r;
}

const char *view_activation_state_label(const struct activation_rec *a, int present)
{
    if (present == 0)
        return "inactive (device gone; process-image or activate restores it)";
    return a->state;
}

json_t *view_process_result(struct db *db, const struct fsm_run_record *rec, int64_t elapsed_ms)
{
    json_t *resp = rec->response ? json_loadb(rec->response, rec->response_len, 0, NULL) : NULL;
    if (!resp)
        resp = json_object();
    int64_t image_id = json_integer_value(json_object_get(resp, "image_id"));
    json_t *o = json_pack("{s:s, s:s, s:I}", "run", rec->version.s, "outcome",
                          fsm_outcome_name(rec->outcome), "elapsed_ms", (json_int_t)elapsed_ms);
    struct image_rec img = {0};
    if (image_id && imagedb_image_get(db, image_id, &img) == 0) {
        json_object_set_new(o, "image", json_string(img.name));
        json_object_set_new(o, "ref", json_string(img.ref));
        json_object_set_new(o, "state", json_string(img.state));
        image_rec_free(&img);
    }
    const char *act = json_string_value(json_object_get(resp, "activation"));
    if (act) {
        json_object_set_new(o, "activation", json_string(act));
        struct activation_rec a = {0};
        if (imagedb_activation_get(db, act, &a) == 0) {
            if (a.device_path)
                json_object_set_new(o, "device_path", json_string(a.device_path));
            if (a.dev_id)
                json_object_set_new(o, "device_id", json_integer(a.dev_id));
            activation_rec_free(&a);
        }
    }
    json_t *layers = json_array();
    struct image_layer_rec *v = NULL;
    size_t n = 0;
    if (image_id && imagedb_image_layers(db, image_id, &v, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            json_t *l = json_pack("{s:i, s:s?, s:s?, s:s?}", "index", v[i].idx, "location",
                                  v[i].location, "digest", v[i].digest, "chain_id", v[i].chain_id);
            struct layer_rec lr = {0};
            if (v[i].chain_id && imagedb_layer_get(db, v[i].chain_id, &lr) == 0) {
                if (lr.dev_id)
                    json_object_set_new(l, "device_id", json_integer(lr.dev_id));
                json_object_set_new(l, "state", json_string(lr.state));
                layer_rec_free(&lr);
            }
            if (v[i].size >= 0)
                json_object_set_new(l, "size", json_integer(v[i].size));
            json_array_append_new(layers, l);
        }
        imagedb_image_layers_free(v, n);
    }
    json_object_set_new(o, "layers", layers);
    json_t *bytes = json_object_get(resp, "bytes"); /* the fetch step's (docs/sources.md) */
    if (json_is_object(bytes))
        json_object_set(o, "bytes", bytes);
    json_decref(resp);
    return o;
}

const char *view_overlay_mounted(struct db *db, const struct backend_usage *u)
{
    if (strcmp(u->kind, "activation") != 0)
        return "-";
    struct activation_rec a = {0};
    if (imagedb_activation_get(db, u->name, &a) < 0)
        return "-";
    bool up = backend_overlay.act_up(NULL, &a);
    activation_rec_free(&a);
    return up ? "yes" : "no";
}

json_t *view_overlay_status(struct db *db, const struct config *cfg)
{
    struct backend_usage *v = NULL;
    size_t n = 0;
    if (backend_overlay_usage(cfg, &v, &n) < 0)
        return NULL;
    uint64_t total = 0;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        total += v[i].bytes;
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I, s:I, s:b, s:s}", "kind",
                                             v[i].kind, "name", v[i].name, "path", v[i].path,
                                             "bytes", (json_int_t)v[i].bytes, "entries",
                                             (json_int_t)v[i].entries, "missing", v[i].missing,
                                             "mounted", view_overlay_mounted(db, &v[i])));
    }
    free(v);
    return json_pack("{s:s, s:n, s:I, s:o}", "backend", backend_overlay.name, "pool", "disk_bytes",
                     (json_int_t)total, "storage", arr);
}

json_t *view_pool(const struct pool_info *i, const struct err *health)
{
    const struct pool_status *s = &i->status;
    json_t *feats = json_array();
    for (unsigned k = 0; k < i->table.n_features; k++)
        json_array_append_new(feats, json_string(i->table.features[k]));
    json_t *o = json_pack("{s:s, s:s, s:b, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:o}", "name",
                          i->name, "action", pool_action_name(i->action), "active", i->active,
                          "origin", i->origin, "data_dev", i->data_dev, "data_file", i->data_file,
                          "metadata_dev", i->metadata_dev, "metadata_file", i->metadata_file,
                          "length_bytes", (json_int_t)i->length_sectors * 512, "block_bytes",
                          (json_int_t)i->table.block_sectors * 512, "low_water_blocks",
                          (json_int_t)i->table.low_water_blocks, "features", feats);
    json_object_set_new(o, "backend", json_string(backend_dm_thin.name));
    json_object_set_new(o, "mode", json_string(pool_mode_name(s->mode)));
    if (s->mode != POOL_MODE_FAIL && s->mode != POOL_MODE_ERROR) {
        json_object_set_new(o, "transaction_id", json_integer((json_int_t)s->transaction_id));
        json_object_set_new(o, "data_used_blocks", json_integer((json_int_t)s->data_used));
        json_object_set_new(o, "data_total_blocks", json_integer((json_int_t)s->data_total));
        json_object_set_new(o, "metadata_used_blocks", json_integer((json_int_t)s->meta_used));
        json_object_set_new(o, "metadata_total_blocks", json_integer((json_int_t)s->meta_total));
        json_object_set_new(o, "data_used_pct", json_real(pool_status_data_pct(s)));
        json_object_set_new(o, "metadata_used_pct", json_real(pool_status_meta_pct(s)));
        json_object_set_new(o, "needs_check", json_boolean(s->needs_check));
        json_object_set_new(o, "error_if_no_space", json_boolean(s->error_if_no_space));
        json_object_set_new(o, "discard", json_string(pool_discard_name(s->discard)));
        json_object_set_new(o, "held_metadata_root",
                            s->has_held_root ? json_integer((json_int_t)s->held_root)
                                             : json_null());
    }
    json_object_set_new(o, "healthy", json_boolean(!(health && health->code)));
    json_object_set_new(o, "health", json_string(health && health->code ? err_str(health) : "ok"));
    return o;
}

json_t *view_health(const struct health_report *rep)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < rep->n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I}", "name", rep->checks[i].name,
                                             "level", health_level_name(rep->checks[i].level),
                                             "detail", rep->checks[i].detail, "duration_ms",
                                             (json_int_t)rep->checks[i].duration_ms));
    return json_pack("{s:b, s:s, s:o}", "healthy", rep->overall != HEALTH_FAIL, "overall",
                     health_level_name(rep->overall), "checks", arr);
}

static bool name_listed(char **names, int n, const char *name)
{
    for (int k = 0; names && k < n; k++)
        if (!strcmp(names[k], name))
            return true;
    return false;
}

int view_devices(struct db *db, const char *pool, struct view_device **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct thin_dev *rows = NULL;
    size_t nrows = 0;
    if (db && thin_list(db, pool, false, &rows, &nrows) < 0) {
        rows = NULL;
        nrows = 0;
    }
    char **names = NULL;
    int nn = dm_available(NULL) == 0 ? dm_dev_list(&names, NULL) : 0;
    if (nn < 0)
        nn = 0;
    struct view_device *v = calloc(nrows + (size_t)nn + 1, sizeof(*v));
    if (!v) {
        free(rows);
        dm_names_free(names);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < nrows; i++, k++) {
        snprintf(v[k].name, sizeof(v[k].name), "%s", rows[i].name);
        snprintf(v[k].kind, sizeof(v[k].kind), "%s", thin_kind_db_name(rows[i].kind));
        snprintf(v[k].state, sizeof(v[k].state), "%s", rows[i].state);
        v[k].id = rows[i].id;
        v[k].origin_id = rows[i].origin_id;
        v[k].size_bytes = rows[i].size_bytes;
        v[k].known = true;
        v[k].active = name_listed(names, nn, rows[i].name);
    }
    for (int d = 0; names && d < nn; d++) {
        /* Not "<pool>-": pool "tp-b" is not ours. */
        if (!dm_name_match(names[d], pool, NULL))
            continue;
        bool known = false;
        for (size_t i = 0; i < nrows && !known; i++)
            known = !strcmp(names[d], rows[i].name);
        if (known)
            continue;
        snprintf(v[k].name, sizeof(v[k].name), "%s", names[d]);
        snprintf(v[k].kind, sizeof(v[k].kind), "-");
        snprintf(v[k].state, sizeof(v[k].state), "unknown");
        v[k++].active = true;
    }
    free(rows);
    dm_names_free(names);
    *out = v;
    *n = k;
    return 0;
}

json_t *view_device(const struct view_device *d)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:b}", "name", d->name, "kind", d->kind, "state",
                          d->state, "active", d->active);
    json_object_set_new(o, "id", d->id ? json_integer(d->id) : json_null());
    json_object_set_new(o, "origin_id", d->origin_id ? json_integer(d->origin_id) : json_null());
    if (d->known)
        json_object_set_new(o, "size_bytes", json_integer((json_int_t)d->size_bytes));
    return o;
}
