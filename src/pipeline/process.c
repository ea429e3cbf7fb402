/*
 * process.c: the process-image machine: the durable parent run that owns the whole pipeline
 * for one image ref (unqueued: one active run per ref; a second request joins it).
 *
 *   check-active  the ref was seen before, its image is ready and the activation is active with
 *                 its dm device present: hand off at once. Only the database and one dm info
 *                 query are touched, so a repeated process-image of an active image is
 *                 near-instant (no network, no devicemapper writes).
 *   resolve       the ref becomes an image: canonical ref, name, ordered layer locations
 *                 (source/ref.h). The image row and the ref alias are recorded.
 *   fetch         one fetch child run per location (queue "fetch"), waited for; the layers'
 *                 digests give the chain ids. Layers and image_layers are recorded.
 *                 Shortcut (layers_ready): when every location is a layer blob stored before
 *                 under the same ETag and size, its file still sealed, and every chain those
 *                 layers make is ready with its device in the pool's metadata, the layers are
 *                 recorded from the store and no fetch run is started.
 *   unpack        one unpack run per chain, bottom-up, each after its parent chain's run
 *                 (queue "unpack"); chains shared with other images are unpacked once. After
 *                 the shortcut, and with every chain still ready, no run is started.
 *   activate      the activate child run for the activation name.
 *
 * Each transition that starts children first looks for the children it already started
 * (after a crash the transition runs again), so nothing is fetched or unpacked twice.
 *
 * Request (JSON): {"ref": REF as typed, "location": REF expanded to a full location,
 *                  "activation": name or null, "device_bytes": size of new base devices}
 * Response (JSON): {"image_id", "name", "canonical", "activation", "locations": [...],
 *                   "device_path", "dev_id"}
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/activate.h"
#include "dm/thin.h"
#include "pipeline/backend.h"
#include "pipeline/fetch_glue.h"
#include "pipeline/fetch_json.h"
#include "pipeline/imageconfig.h"
#include "pipeline/imagedb.h"
#include "pipeline/machine.h"
#include "pipeline/outcome.h"
#include "pipeline/process.h"
#include "pipeline/unpack.h"
#include "pipeline/updates.h"
#include "source/ref.h"
#include "store/blobfile.h"
#include "store/blobs.h"
#include "store/oci.h"
#include "pipeline/fetch_json.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/timeutil.h"

/* The run's response as a JSON object (the previous transitions' results). */
static json_t *resp_load(struct fsm_run *run)
{
    size_t len;
    const void *data = fsm_run_response(run, &len);
    json_t *o = data && len ? json_loadb(data, len, 0, NULL) : NULL;
    return o ? o : json_object();
}

static void resp_store(struct fsm_run *run, json_t *o)
{
    char *txt = json_dumps(o, JSON_COMPACT);
    if (txt)
        fsm_run_set_response(run, txt, strlen(txt));
    free(txt);
}

static json_t *req_load(struct fsm_run *run)
{
    size_t len;
    const void *data = fsm_run_request(run, &len);
    return json_loadb(data, len, 0, NULL);
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The activation name: requested, or the image's default ("golang:3" -> "golang-3"). */
static void activation_name(json_t *req, const char *image_name, char *out, size_t n)
{
    const char *a = jstr(req, "activation");
    if (a && *a)
        snprintf(out, n, "%s", a);
    else
        imagedb_default_activation_name(image_name, out, n);
}

/* Is image id ready with activation `name` active and its dm device present? */
static bool image_active(struct pipeline *p, int64_t image_id, const char *name, char *path,
                         size_t n, uint32_t *dev_id)
{
    struct image_rec img = {0};
    if (imagedb_image_get(p->db, image_id, &img) < 0)
        return false;
    bool ready = !strcmp(img.state, "ready");
    image_rec_free(&img);
    if (!ready)
        return false;
    struct activation_rec a = {0};
    if (imagedb_activation_get(p->db, name, &a) < 0)
        return false;
    bool ok = a.image_id == image_id && !strcmp(a.state, "active") && p->backend->act_up(p, &a);
    if (ok) {
        snprintf(path, n, "%s", a.device_path ? a.device_path : "");
        *dev_id = (uint32_t)a.dev_id;
    }
    activation_rec_free(&a);
    return ok;
}

static struct fsm_result t_check_active(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    json_t *req = req_load(run);
    if (!req)
        return fsm_abort("malformed process-image request");
    const char *loc = jstr(req, "location");
    int64_t image_id = 0;
    struct fsm_result res = fsm_ok();
    if (loc && imagedb_ref_get(p->db, loc, &image_id) == 0) {
        struct image_rec img = {0};
        if (imagedb_image_get(p->db, image_id, &img) == 0) {
            char name[80], path[256];
            uint32_t dev_id = 0;
            activation_name(req, img.name, name, sizeof(name));
            if (image_active(p, image_id, name, path, sizeof(path), &dev_id)) {
                json_t *o =
                    json_pack("{s:I, s:s, s:s, s:s, s:s, s:I}", "image_id", (json_int_t)image_id,
                              "name", img.name, "canonical", img.ref, "activation", name,
                              "device_path", path, "dev_id", (json_int_t)dev_id);
                resp_store(run, o);
                json_decref(o);
                res = fsm_handoff("image %s is already active as %s (%s)", img.name, name, path);
            }
            image_rec_free(&img);
        }
    }
    json_decref(req);
    return res;
}

struct resolve_commit {
    int64_t image_id;
    char *alias;
    struct image_layer_rec *layers;
    size_t n;
    bool has_config; /* a registry image: its manifest and config blobs, its run settings */
    struct imageconfig config;
};

static int resolve_apply(struct db *db, void *ud)
{
    struct resolve_commit *c = ud;
    int r = imagedb_ref_set(db, c->alias, c->image_id);
    if (r == 0)
        r = imagedb_image_set_state(db, c->image_id, "fetching", NULL);
    if (r == 0 && c->has_config)
        r = imageconfig_record(db, c->image_id, &c->config);
    return r;
}

static void resolve_free(void *ud)
{
    struct resolve_commit *c = ud;
    if (!c)
        return;
    free(c->alias);
    imageconfig_free(&c->config);
    free(c);
}

static bool resolve_cancelled(void *ud)
{
    return fsm_run_cancelled(ud) != FSM_CANCEL_NONE;
}

static struct fsm_result t_resolve(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    _cleanup_json_ json_t *req = req_load(run);
    if (!req)
        return fsm_abort("malformed process-image request");
    struct image_ref ref = {0};
    struct err e = {0};
    fsm_run_set_progress(run, "resolve", 0, 0);
    /* A listing can be long (or hostile): it stops when the run is cancelled. */
    struct source_options so = p->source;
    so.cancelled = resolve_cancelled;
    so.cancel_ud = run;
    int r = ref_resolve(jstr(req, "ref"), p->cfg.source, &so, &ref, &e);
    if (r < 0) {
        /* A bad or missing ref ends the run (its kind says); so does network trouble, which
         * the source already retried within its budget (docs/sources.md). */
        struct fsm_result res = fsm_fail(r, "%s", err_str(&e));
        if (res.kind == ERR_KIND_TRANSIENT)
            res.outcome = FSM_ABORT;
        return res;
    }
    for (size_t i = 0; i < ref.n_warnings; i++)
        log_warn("image reference warning", "ref=%s warning=%s", ref.canonical, ref.warnings[i]);
    int64_t image_id = 0;
    r = imagedb_image_upsert(p->db, ref.canonical, ref.name, &image_id);
    if (r < 0) {
        image_ref_free(&ref);
        return fsm_retry("cannot record image: %s", strerror(-r));
    }
    char act[80];
    activation_name(req, ref.name, act, sizeof(act));
    json_t *locs = json_array();
    /* A registry image's config declares each layer's diff id: the fetch step checks it. */
    bool diff_ids = ref.n_diff_ids == ref.n_layers;
    for (size_t i = 0; i < ref.n_layers; i++)
        json_array_append_new(locs, json_pack("{s:s, s:s?, s:I, s:s?}", "location",
                                              ref.layers[i].location, "etag", ref.layers[i].etag,
                                              "size", (json_int_t)ref.layers[i].size, "diff_id",
                                              diff_ids ? ref.diff_ids[i] : NULL));
    json_t *o =
        json_pack("{s:I, s:s, s:s, s:s, s:o}", "image_id", (json_int_t)image_id, "name", ref.name,
                  "canonical", ref.canonical, "activation", act, "locations", locs);
    resp_store(run, o);
    json_decref(o);
    struct resolve_commit *c = calloc(1, sizeof(*c));
    if (!c) {
        image_ref_free(&ref);
        return fsm_retry("out of memory");
    }
    c->image_id = image_id;
    c->alias = strdup(jstr(req, "location") ? jstr(req, "location") : ref.canonical);
    /* A registry image's manifest and config go into the blob store now (outside the
     * checkpoint), their rows with the checkpoint. */
    r = imageconfig_store_files(p->db, p->cfg.blob_dir, p->cfg.tmp_dir, &ref, &c->config, &e);
    if (r < 0) {
        image_ref_free(&ref);
        resolve_free(c);
        return fsm_retry("cannot store the manifest and config of the image: %s", err_str(&e));
    }
    c->has_config = r == 1;
    fsm_run_on_commit(run, resolve_apply, c, resolve_free);
    log_info("image resolved", "ref=%s name=%s layers=%zu", ref.canonical, ref.name, ref.n_layers);
    image_ref_free(&ref);
    return fsm_ok();
}

struct layers_commit {
    int64_t image_id;
    struct image_layer_rec *v;
    size_t n;
    bool touch; /* the shortcut: mark the blobs used, as a fetch run that finds them does */
};

static int layers_apply(struct db *db, void *ud)
{
    struct layers_commit *c = ud;
    int r = imagedb_image_set_layers(db, c->image_id, c->v, c->n);
    for (size_t i = 0; r == 0 && i < c->n; i++)
        r = imagedb_layer_ensure(db, c->v[i].chain_id, i ? c->v[i - 1].chain_id : NULL,
                                 c->v[i].digest, (int)i + 1);
    int64_t now = now_ms();
    for (size_t i = 0; r == 0 && c->touch && i < c->n; i++)
        r = blobs_touch(db, c->v[i].digest, now);
    if (r == 0)
        r = imagedb_image_set_state(db, c->image_id, "unpacking", NULL);
    return r;
}

static void layers_free(void *ud)
{
    struct layers_commit *c = ud;
    if (!c)
        return;
    imagedb_image_layers_free(c->v, c->n);
    free(c);
}

/* Is chain_id recorded ready with a device of this pool? Its dev_id, or 0 when not. */
static uint32_t chain_ready_dev(struct pipeline *p, const char *chain_id)
{
    struct layer_rec l = {0};
    if (imagedb_layer_get(p->db, chain_id, &l) < 0)
        return 0;
    uint32_t dev =
        !strcmp(l.state, "ready") && l.dev_id > 0 && l.pool && !strcmp(l.pool, p->cfg.pool_name)
            ? (uint32_t)l.dev_id
            : 0;
    layer_rec_free(&l);
    return dev;
}

static bool id_listed(const uint32_t *ids, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

/* The shortcut of the fetch step (see the top of the file): 1 with the image's layers in
 * *out (n of them, one per location) when every location is a layer blob the store has under
 * the listed ETag and size, its file passes the integrity rule (one stat against its seal;
 * a file whose identity changed is hashed again, and quarantined when its bytes differ), and
 * every chain is ready with its device in the pool's metadata. 0 otherwise: the full path
 * then fetches, repairs and unpacks what is missing, exactly as before. A fetch run and an
 * unpack run per layer would find the same and cost a run each, plus one read of the pool's
 * metadata per unpack run; here the metadata is read once, in this process (the device details
 * tree of a metadata snapshot, dm/thin_meta.h: no thin_ls). */
static int layers_ready(struct pipeline *p, const struct fetch_want *want, size_t n,
                        struct image_layer_rec **out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    struct image_layer_rec *v = calloc(n, sizeof(*v));
    _cleanup_free_ uint32_t *devs = calloc(n, sizeof(*devs));
    if (!v || !devs) {
        free(v);
        return -ENOMEM;
    }
    /* The shortcut knows dm-thin's layers (a device in the pool's metadata); another backend
     * takes the full path, whose check-unpacked asks it. */
    int ok = p->backend == &backend_dm_thin ? 1 : 0;
    char parent[DIGEST_STR_LEN + 1] = "";
    for (size_t i = 0; i < n && ok == 1; i++) {
        struct blob_source k = {0};
        ok = want[i].etag ? blobs_source_get(p->db, want[i].location, &k) : 0;
        if (ok == 1 && (!k.etag || strcmp(k.etag, want[i].etag) != 0 ||
                        (want[i].size && want[i].size != k.size) ||
                        !blob_format_is_layer(fetch_format_parse(k.media_type))))
            ok = 0;
        if (ok == 1) {
            _cleanup_free_ char *path = blobfile_path(p->cfg.blob_dir, k.digest);
            ok = path ? blobs_verify(p->db, p->cfg.blob_dir, k.digest, path, NULL, 0) : -ENOMEM;
        }
        /* Chain ids are made of diff ids, as t_fetch makes them: a plain tar's is its digest,
         * a compressed layer's the one recorded when it was validated (none: the full path). */
        char did[DIGEST_STR_LEN + 1], chain[DIGEST_STR_LEN + 1];
        if (ok == 1) {
            if (fetch_format_parse(k.media_type) == BLOB_TAR)
                snprintf(did, sizeof(did), "%s", k.digest);
            else if (oci_diff_id_get(p->db, k.digest, did) != 1)
                ok = 0;
        }
        if (ok == 1 && chain_id_next(parent[0] ? parent : NULL, did, chain) < 0)
            ok = -EINVAL;
        if (ok == 1 && !(devs[i] = chain_ready_dev(p, chain)))
            ok = 0;
        if (ok == 1) {
            v[i].idx = (int)i + 1;
            v[i].location = strdup(want[i].location);
            v[i].digest = strdup(k.digest);
            v[i].chain_id = strdup(chain);
            v[i].size = (int64_t)k.blob_size;
            if (!v[i].location || !v[i].digest || !v[i].chain_id)
                ok = -ENOMEM;
            memcpy(parent, chain, sizeof(parent));
        }
        blob_source_free(&k);
    }
    if (ok == 1) {
        /* Recorded ready is not enough: a device deleted behind thinimg's back is recreated
         * by the full path (the unpack machine's check-unpacked). The pool's own figures (its
         * transaction id, used data blocks: the usage cache's key) cannot tell: a delete
         * message changes neither when the device's blocks are shared with a snapshot. */
        _cleanup_free_ uint32_t *ids = NULL;
        size_t nids = 0;
        struct err e = {0};
        ok = thin_pool_metadata_ids(p->cfg.pool_name, &ids, NULL, &nids, &e);
        for (size_t i = 0; ok == 0 && i < n; i++)
            if (!id_listed(ids, nids, devs[i]))
                ok = -ENOENT;
        ok = ok == 0 ? 1 : 0;
    }
    if (ok != 1) {
        imagedb_image_layers_free(v, n);
        return ok;
    }
    *out = v;
    return 1;
}

static struct fsm_result t_fetch(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    json_t *o = resp_load(run);
    int64_t image_id = json_integer_value(json_object_get(o, "image_id"));
    json_t *locs = json_object_get(o, "locations");
    size_t n = json_array_size(locs);
    struct fetch_want *v = calloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; v && i < n; i++) {
        json_t *l = json_array_get(locs, i);
        v[i].location = jstr(l, "location");
        v[i].etag = jstr(l, "etag");
        v[i].size = (uint64_t)json_integer_value(json_object_get(l, "size"));
        v[i].diff_id = jstr(l, "diff_id");
    }
    struct image_layer_rec *known = NULL;
    if (v && layers_ready(p, v, n, &known) == 1) {
        free(v);
        struct layers_commit *c = calloc(1, sizeof(*c));
        if (!c) {
            imagedb_image_layers_free(known, n);
            json_decref(o);
            return fsm_retry("out of memory");
        }
        *c = (struct layers_commit){.image_id = image_id, .v = known, .n = n, .touch = true};
        json_object_set_new(o, "layers_ready", json_true());
        resp_store(run, o);
        json_decref(o);
        fsm_run_on_commit(run, layers_apply, c, layers_free);
        log_info("image layers already unpacked", "image_id=%lld layers=%zu", (long long)image_id,
                 n);
        return fsm_ok();
    }
    struct fetched_layer *layers = NULL;
    size_t nl = 0;
    struct err e = {0};
    int r = v ? pipeline_fetch_all(p, run, v, n, &layers, &nl, &e) : -ENOMEM;
    free(v);
    if (r == 0) { /* what the downloads cost, for the result (docs/sources.md) */
        uint64_t down = 0, resumed = 0, reused = 0;
        for (size_t i = 0; i < nl; i++) {
            down += layers[i].bytes_downloaded;
            resumed += layers[i].bytes_resumed;
            reused += layers[i].bytes_reused;
        }
        json_object_set_new(o, "bytes", fetch_bytes_json(down, resumed, reused));
        resp_store(run, o);
    }
    json_decref(o);
    if (r == -ECANCELED)
        return fsm_retry("interrupted while waiting for downloads");
    if (r < 0)
        return fsm_with_kind(fsm_abort("%s", err_str(&e)), err_kind_of(r));

    struct layers_commit *c = calloc(1, sizeof(*c));
    if (!c) {
        fetched_layers_free(layers, nl);
        return fsm_retry("out of memory");
    }
    c->image_id = image_id;
    c->v = calloc(nl, sizeof(*c->v));
    c->n = nl;
    /* Chain ids are made of diff ids (the uncompressed streams), as OCI defines them: the same
     * layers share their devices whether they came compressed or not, from a registry, S3 or
     * a docker-archive. (A response from before diff ids were kept has none: its digest.) */
    char parent[DIGEST_STR_LEN + 1] = "";
    for (size_t i = 0; c->v && i < nl; i++) {
        char chain[DIGEST_STR_LEN + 1];
        chain_id_next(parent[0] ? parent : NULL,
                      layers[i].diff_id[0] ? layers[i].diff_id : layers[i].digest, chain);
        c->v[i].idx = (int)i + 1;
        c->v[i].location = strdup(layers[i].location);
        c->v[i].digest = strdup(layers[i].digest);
        c->v[i].chain_id = strdup(chain);
        c->v[i].size = (int64_t)layers[i].size;
        memcpy(parent, chain, sizeof(parent));
    }
    fetched_layers_free(layers, nl);
    if (!c->v) {
        layers_free(c);
        return fsm_retry("out of memory");
    }
    fsm_run_on_commit(run, layers_apply, c, layers_free);
    return fsm_ok();
}

/* After the fetch step's shortcut: is every chain of the image still ready (a resumed run may
 * come back much later)? */
static bool image_chains_ready(struct pipeline *p, int64_t image_id)
{
    struct image_layer_rec *v = NULL;
    size_t n = 0;
    if (imagedb_image_layers(p->db, image_id, &v, &n) < 0)
        return false;
    bool ok = n > 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = v[i].chain_id && chain_ready_dev(p, v[i].chain_id) != 0;
    imagedb_image_layers_free(v, n);
    return ok;
}

static struct fsm_result t_unpack(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    json_t *o = resp_load(run);
    int64_t image_id = json_integer_value(json_object_get(o, "image_id"));
    bool shortcut = json_is_true(json_object_get(o, "layers_ready"));
    json_decref(o);
    if (shortcut && image_chains_ready(p, image_id))
        return fsm_ok();
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    struct fsm_id top;
    struct err e = {0};
    json_t *req = req_load(run);
    uint64_t device_bytes =
        req ? (uint64_t)json_integer_value(json_object_get(req, "device_bytes")) : 0;
    json_decref(req);
    int r = unpack_start_image(p, image_id, &info.version, device_bytes, &top, &e);
    if (r < 0)
        return fsm_retry("%s", err_str(&e));
    if (fsm_id_is_zero(&top))
        return fsm_abort("the image has no layers");
    /* The top run waits (run-after) for the ones below it; a failed lower chain makes every
     * chain above it abort, so the top run's outcome speaks for the whole image. */
    enum fsm_outcome out;
    enum err_kind kind = ERR_KIND_OTHER;
    char *err = NULL;
    r = pipeline_wait_child(run, &top, &out, &kind, &err);
    if (r == -ECANCELED)
        return fsm_retry("interrupted while waiting for unpacking");
    if (r < 0) {
        free(err);
        return fsm_retry("cannot wait for the unpack run: %s", strerror(-r));
    }
    struct fsm_result res =
        fsm_outcome_success(out)
            ? fsm_ok()
            : fsm_with_kind(fsm_abort("unpack failed: %s", err && *err ? err : "unknown"), kind);
    free(err);
    return res;
}

static struct fsm_result t_activate(struct fsm_run *run, void *ud)
{
    struct pipeline *p = ud;
    _cleanup_json_ json_t *o = resp_load(run);
    int64_t image_id = json_integer_value(json_object_get(o, "image_id"));
    const char *act = jstr(o, "activation");
    struct image_rec img = {0};
    if (imagedb_image_get(p->db, image_id, &img) < 0 || !img.top_chain) {
        image_rec_free(&img);
        return fsm_abort("image %lld has no top layer", (long long)image_id);
    }
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    struct fsm_id child;
    int r = activate_start(p, act, image_id, img.top_chain, &info.version, &child);
    image_rec_free(&img);
    if (r < 0 && r != -EEXIST)
        return fsm_retry("cannot start the activation: %s", strerror(-r));
    enum fsm_outcome out;
    enum err_kind kind = ERR_KIND_OTHER;
    _cleanup_free_ char *err = NULL;
    r = pipeline_wait_child(run, &child, &out, &kind, &err);
    if (r == -ECANCELED)
        return fsm_retry("interrupted while waiting for the activation");
    if (r < 0 || !fsm_outcome_success(out))
        return fsm_with_kind(fsm_abort("activation %s failed: %s", act,
                                       err && *err ? err : strerror(r < 0 ? -r : EIO)),
                             r < 0 ? err_kind_of(r) : kind);
    struct activation_rec a = {0};
    if (imagedb_activation_get(p->db, act, &a) == 0) {
        json_object_set_new(o, "device_path", json_string(a.device_path ? a.device_path : ""));
        json_object_set_new(o, "dev_id", json_integer(a.dev_id));
        activation_rec_free(&a);
    }
    resp_store(run, o);
    return fsm_ok();
}

static void fin_process(struct fsm_run *run, enum fsm_outcome outcome, const char *error, void *ud)
{
    (void)ud;
    json_t *o = resp_load(run);
    int64_t image_id = json_integer_value(json_object_get(o, "image_id"));
    json_decref(o);
    if (!image_id)
        return;
    struct image_update *u =
        image_update_new(image_id, fsm_outcome_success(outcome) ? "ready" : "failed",
                         fsm_outcome_success(outcome) ? NULL : error);
    fsm_run_on_commit(run, image_update_apply, u, image_update_free);
}

int pipeline_register_process(struct pipeline *p, struct err *e)
{
    /* Waiting transitions retry only on interruption or database trouble. */
    static const struct fsm_retry_policy wait_policy = {.max_attempts = 20,
                                                        .initial_backoff_ms = 100,
                                                        .max_backoff_ms = 5000,
                                                        .multiplier = 2.0,
                                                        .jitter = 0.3,
                                                        .attempt_timeout_ms = 0,
                                                        .on_exhausted = FSM_ABORT};
    /* Resolving talks to the source: ride out a short outage. */
    static const struct fsm_retry_policy resolve_policy = {.max_attempts = 8,
                                                           .initial_backoff_ms = 500,
                                                           .max_backoff_ms = 15000,
                                                           .multiplier = 2.0,
                                                           .jitter = 0.5,
                                                           .attempt_timeout_ms = 0,
                                                           .on_exhausted = FSM_ABORT};
    static const struct fsm_transition_def t[] = {
        {"check-active", t_check_active, &wait_policy},
        {"resolve", t_resolve, &resolve_policy},
        {"fetch", t_fetch, &wait_policy},
        {"unpack", t_unpack, &wait_policy},
        {"activate", t_activate, &wait_policy},
    };
    return machine_register(p, "process-image", "process", "process-image", t, ARRAY_SIZE(t),
                            fin_process, &p->m_process, e);
}

/* REF as a full location: a location stays as it is, a relative key is joined to the default
 * source. This string names the run (one active process-image per location) and is the alias
 * recorded for the image, so it only has to be stable, not canonical. */
int pipeline_ref_expand(const char *ref, const char *default_source, char **out, struct err *e)
{
    if (strstr(ref, "://") || !strncmp(ref, "dir:", 4)) {
        *out = strdup(ref);
        return *out ? 0 : -ENOMEM;
    }
    if (!default_source || !*default_source)
        return err_set(e, -EINVAL,
                       "'%s' is not a location (s3://..., dir:..., http(s)://...) and no default "
                       "source is set (--source or THINIMG_SOURCE)",
                       ref);
    size_t n = strlen(default_source);
    bool slash = n > 0 && default_source[n - 1] == '/';
    while (*ref == '/')
        ref++;
    if (asprintf(out, "%s%s%s", default_source, slash ? "" : "/", ref) < 0)
        return -ENOMEM;
    return 0;
}

int pipeline_start_process(struct pipeline *p, const char *ref, const char *activation,
                           uint64_t device_bytes, struct fsm_id *run, struct err *e)
{
    if (!ref || !*ref)
        return err_set(e, -EINVAL, "no image reference given");
    if (activation && !imagedb_name_valid(activation))
        return err_set(e, -EINVAL, "invalid activation name '%s' (use 1-64 of [A-Za-z0-9_.-])",
                       activation);
    if (device_bytes && (device_bytes < PIPELINE_MIN_DEVICE_BYTES || device_bytes % 512))
        return err_set(e, -EINVAL,
                       "invalid device size %llu (at least 64 MiB, a multiple of 512 bytes)",
                       (unsigned long long)device_bytes);
    char *loc = NULL;
    int r = pipeline_ref_expand(ref, p->cfg.source, &loc, e);
    if (r < 0)
        return r;
    json_t *req =
        json_pack("{s:s, s:s, s:s?, s:I}", "ref", ref, "location", loc, "activation", activation,
                  "device_bytes", (json_int_t)(device_bytes ? device_bytes : p->device_bytes));
    char *txt = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    struct fsm_start_opts so = {0};
    r = fsm_start(p->mgr, p->m_process, loc, txt, strlen(txt), &so, run);
    free(txt);
    free(loc);
    if (r == -EEXIST)
        return 0; /* joined the active run for this ref */
    return r < 0 ? err_set(e, r, "cannot start process-image") : 0;
}
