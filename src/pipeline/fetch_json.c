/*
 * fetch_json.c: the fetch machine's request and response formats. See fetch_json.h.
 */
#include "pipeline/fetch_json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- request / response ----------------------------------------------------------------- */

int fetch_request_build(const char *location, const char *etag, uint64_t size, const char *diff_id,
                        char **json, size_t *len)
{
    _cleanup_json_ json_t *o = json_pack("{s:s}", "location", location);
    if (!o)
        return -ENOMEM;
    if (etag)
        json_object_set_new(o, "etag", json_string(etag));
    if (size)
        json_object_set_new(o, "size", json_integer((json_int_t)size));
    if (diff_id)
        json_object_set_new(o, "diff_id", json_string(diff_id));
    char *s = json_dumps(o, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    *json = s;
    *len = strlen(s);
    return 0;
}

int fetch_request_parse(struct fsm_run *run, struct fetch_request *rq)
{
    size_t len = 0;
    const void *data = fsm_run_request(run, &len);
    *rq = (struct fetch_request){0};
    rq->root = json_loadb(data, len, 0, NULL);
    if (!rq->root)
        return -EINVAL;
    rq->location = json_string_value(json_object_get(rq->root, "location"));
    rq->etag = json_string_value(json_object_get(rq->root, "etag"));
    rq->diff_id = json_string_value(json_object_get(rq->root, "diff_id"));
    if (rq->diff_id && !digest_valid(rq->diff_id))
        return -EINVAL;
    json_t *sz = json_object_get(rq->root, "size");
    rq->size = json_is_integer(sz) ? (uint64_t)json_integer_value(sz) : 0;
    return rq->location ? 0 : -EINVAL;
}

void fetch_request_free(struct fetch_request *rq)
{
    if (rq->root)
        json_decref(rq->root);
    rq->root = NULL;
}

/* The current response as JSON (an empty object when none yet). */
json_t *fetch_response_load(struct fsm_run *run)
{
    size_t len = 0;
    const void *data = fsm_run_response(run, &len);
    json_t *j = len ? json_loadb(data, len, 0, NULL) : NULL;
    return j && json_is_object(j) ? j : (j ? (json_decref(j), json_object()) : json_object());
}

int fetch_response_store(struct fsm_run *run, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    int r = fsm_run_set_response(run, s, strlen(s));
    free(s);
    return r;
}

enum blob_format fetch_format_parse(const char *s)
{
    for (int f = BLOB_UNKNOWN; f <= BLOB_OCI_LAYOUT; f++)
        if (s && !strcmp(s, blob_format_name((enum blob_format)f)))
            return (enum blob_format)f;
    return BLOB_UNKNOWN;
}

/* A blob file's seal (store/blobfile.h) as it travels in the response, from the step that
 * hashed the file to the record step that writes it into the blobs row. */
json_t *fetch_seal_json(const struct blob_seal *s)
{
    return json_pack("{s:I, s:I, s:I}", "ino", (json_int_t)s->ino, "mtime_ns",
                     (json_int_t)s->mtime_ns, "ctime_ns", (json_int_t)s->ctime_ns);
}

bool fetch_seal_parse(json_t *o, uint64_t size, struct blob_seal *s)
{
    json_t *ino = json_object_get(o, "ino"), *m = json_object_get(o, "mtime_ns"),
           *ct = json_object_get(o, "ctime_ns");
    if (!json_is_integer(ino) || !json_is_integer(m) || !json_is_integer(ct))
        return false;
    *s = (struct blob_seal){.size = size,
                            .ino = (uint64_t)json_integer_value(ino),
                            .mtime_ns = json_integer_value(m),
                            .ctime_ns = json_integer_value(ct)};
    return true;
}

json_t *fetch_bytes_json(uint64_t downloaded, uint64_t resumed, uint64_t reused)
{
    return json_pack("{s:I, s:I, s:I}", "downloaded", (json_int_t)downloaded, "resumed",
                     (json_int_t)resumed, "reused", (json_int_t)reused);
}

json_t *fetch_layer_json(const char *digest, const char *diff_id, uint64_t size, enum blob_format f,
                         const char *path, const char *member, const struct blob_seal *seal)
{
    json_t *o = json_pack("{s:s, s:I, s:s, s:s}", "digest", digest, "size", (json_int_t)size,
                          "format", blob_format_name(f), "path", path);
    if (o && diff_id && *diff_id)
        json_object_set_new(o, "diff_id", json_string(diff_id));
    if (o && member)
        json_object_set_new(o, "member", json_string(member));
    if (o && seal)
        json_object_set_new(o, "seal", fetch_seal_json(seal));
    return o;
}

void fetch_result_free(struct fetch_result *r)
{
    if (!r)
        return;
    free(r->location);
    free(r->etag);
    free(r->path);
    free(r->repo_tag);
    free(r->identity);
    for (size_t i = 0; i < r->n_layers; i++) {
        free(r->layers[i].path);
        free(r->layers[i].member);
    }
    free(r->layers);
    *r = (struct fetch_result){0};
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int fetch_response_parse(const void *data, size_t len, struct fetch_result *out, struct err *e)
{
    *out = (struct fetch_result){0};
    json_error_t je;
    _cleanup_json_ json_t *j = json_loadb(data, len, 0, &je);
    if (!j || !json_is_object(j))
        return err_set(e, -EBADMSG, "fetch response is not JSON: %s",
                       j ? "not an object" : je.text);
    const char *digest = json_string_value(json_object_get(j, "digest"));
    const char *path = json_string_value(json_object_get(j, "path"));
    const char *loc = json_string_value(json_object_get(j, "location"));
    if (!digest || !digest_valid(digest) || !path || !loc)
        return err_set(e, -EBADMSG, "fetch response lacks location, digest or path");
    snprintf(out->digest, sizeof(out->digest), "%s", digest);
    out->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
    out->format = fetch_format_parse(json_string_value(json_object_get(j, "format")));
    out->location = strdup(loc);
    out->path = strdup(path);
    out->etag = dup_or_null(json_string_value(json_object_get(j, "etag")));
    out->repo_tag = dup_or_null(json_string_value(json_object_get(j, "repo_tag")));
    out->reused = json_is_true(json_object_get(j, "reused"));
    out->sealed = fetch_seal_parse(json_object_get(j, "seal"), out->size, &out->seal);
    out->identity = dup_or_null(json_string_value(json_object_get(j, "identity")));
    json_t *bytes = json_object_get(j, "bytes");
    out->bytes_downloaded = (uint64_t)json_integer_value(json_object_get(bytes, "downloaded"));
    out->bytes_resumed = (uint64_t)json_integer_value(json_object_get(bytes, "resumed"));
    out->bytes_reused = (uint64_t)json_integer_value(json_object_get(bytes, "reused"));
    if (!out->location || !out->path)
        goto nomem;
    json_t *layers = json_object_get(j, "layers");
    size_t n = json_array_size(layers);
    if (n) {
        out->layers = calloc(n, sizeof(*out->layers));
        if (!out->layers)
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            json_t *l = json_array_get(layers, i);
            struct fetch_layer *fl = &out->layers[i];
            const char *d = json_string_value(json_object_get(l, "digest"));
            const char *p = json_string_value(json_object_get(l, "path"));
            if (!d || !digest_valid(d) || !p) {
                out->n_layers = i;
                fetch_result_free(out);
                return err_set(e, -EBADMSG, "fetch response: layer %zu is incomplete", i);
            }
            snprintf(fl->digest, sizeof(fl->digest), "%s", d);
            const char *di = json_string_value(json_object_get(l, "diff_id"));
            snprintf(fl->diff_id, sizeof(fl->diff_id), "%s", di && digest_valid(di) ? di : "");
            fl->size = (uint64_t)json_integer_value(json_object_get(l, "size"));
            fl->format = fetch_format_parse(json_string_value(json_object_get(l, "format")));
            fl->path = strdup(p);
            fl->member = dup_or_null(json_string_value(json_object_get(l, "member")));
            fl->sealed = fetch_seal_parse(json_object_get(l, "seal"), fl->size, &fl->seal);
            out->n_layers = i + 1;
            if (!fl->path)
                goto nomem;
        }
    }
    return 0;
nomem:
    fetch_result_free(out);
    return -ENOMEM;
}
