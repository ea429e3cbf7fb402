/*
 * fetch_glue.c: how the process-image run uses the fetch machine (fetch.h): registering it
 * with the pipeline's settings, starting one child run per layer location (or finding the ones
 * it started before a crash), waiting for them, and turning their responses into the image's
 * layer list. See fetch_glue.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/fetch_glue.h"

#include "pipeline/fetch.h"
#include "pipeline/machine.h"
#include "pipeline/outcome.h"
#include "util/cleanup.h"

int pipeline_register_fetch(struct pipeline *p, struct err *e)
{
    struct fetch_config fc = {.blob_dir = p->cfg.blob_dir,
                              .tmp_dir = p->cfg.tmp_dir,
                              .source = p->source,
                              .policy = p->policy};
    int r = fetch_register(p->mgr, &fc, &p->m_fetch, &p->fetch_ctx);
    return r < 0 ? err_set(e, r, "cannot register the fetch machine") : 0;
}

void fetched_layers_free(struct fetched_layer *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].location);
    free(v);
}

int pipeline_fetch_all(struct pipeline *p, struct fsm_run *run, const struct fetch_want *want,
                       size_t n, struct fetched_layer **layers, size_t *n_layers, struct err *e)
{
    *layers = NULL;
    *n_layers = 0;
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    _cleanup_free_ struct fsm_id *children = calloc(n ? n : 1, sizeof(*children));
    if (!children)
        return -ENOMEM;
    int r = 0;
    /* Start (or find) every child first, so downloads run in parallel through the queue. */
    for (size_t i = 0; i < n && r == 0; i++) {
        if (pipeline_find_run(p, FETCH_MACHINE_TYPE, want[i].location, &info.version, false,
                              &children[i]) == 0)
            continue;
        _cleanup_free_ char *req = NULL;
        size_t len = 0;
        r = fetch_request_build(want[i].location, want[i].etag, want[i].size, want[i].diff_id, &req,
                                &len);
        if (r < 0) {
            err_set(e, r, "cannot build the fetch request for %s", want[i].location);
            break;
        }
        struct fsm_start_opts so = {.queue = FETCH_QUEUE, .parent = &info.version};
        r = fsm_start(p->mgr, p->m_fetch, want[i].location, req, len, &so, &children[i]);
        if (r < 0)
            err_set(e, r, "cannot start the fetch of %s", want[i].location);
    }
    struct fetched_layer *out = NULL;
    size_t nout = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        enum fsm_outcome oc;
        enum err_kind kind = ERR_KIND_OTHER;
        _cleanup_free_ char *error = NULL;
        r = pipeline_wait_child(run, &children[i], &oc, &kind, &error);
        if (r == -ECANCELED)
            break;
        if (r < 0) {
            err_set(e, r, "cannot wait for the fetch of %s", want[i].location);
            break;
        }
        if (!fsm_outcome_success(oc)) {
            /* The fetch's own kind (not found, rejected, ...) is the image's. */
            r = err_set(e, pipeline_run_errno(oc, kind), "%s: %s", want[i].location,
                        error && *error ? error : fsm_outcome_name(oc));
            break;
        }
        struct fsm_run_record rec = {0};
        r = fsm_db_get_run(p->db, &children[i], &rec);
        if (r < 0) {
            err_set(e, r, "cannot read the fetch of %s", want[i].location);
            break;
        }
        struct fetch_result fr = {0};
        r = fetch_response_parse(rec.response, rec.response_len, &fr, e);
        fsm_run_record_free(&rec);
        if (r < 0)
            break;
        struct fetched_layer *grown = realloc(out, (nout + fr.n_layers) * sizeof(*out));
        if (!grown) {
            fetch_result_free(&fr);
            r = -ENOMEM;
            break;
        }
        out = grown;
        for (size_t k = 0; k < fr.n_layers; k++) {
            struct fetched_layer *l = &out[nout++];
            memset(l, 0, sizeof(*l));
            if (fr.layers[k].member) {
                if (asprintf(&l->location, "%s#%s", want[i].location, fr.layers[k].member) < 0)
                    l->location = NULL;
            } else {
                l->location = strdup(want[i].location);
            }
            snprintf(l->digest, sizeof(l->digest), "%s", fr.layers[k].digest);
            snprintf(l->diff_id, sizeof(l->diff_id), "%s", fr.layers[k].diff_id);
            l->size = fr.layers[k].size;
            if (k == 0) {
                l->bytes_downloaded = fr.bytes_downloaded;
                l->bytes_resumed = fr.bytes_resumed;
                l->bytes_reused = fr.bytes_reused;
            }
        }
        fetch_result_free(&fr);
    }
    if (r < 0) {
        fetched_layers_free(out, nout);
        return r;
    }
    *layers = out;
    *n_layers = nout;
    return 0;
}
