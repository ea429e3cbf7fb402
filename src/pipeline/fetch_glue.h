/*
 * fetch_glue.h: how the process-image machine uses the fetch machine (fetch.h): registering it
 * with the pipeline's settings, and starting one child run per layer location, waiting for them
 * and reading the image's layers from their responses.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "fsm/fsm.h"
#include "util/err.h"
#include "util/hash.h"

struct pipeline;

/* Register the machine (pipeline_open()). */
int pipeline_register_fetch(struct pipeline *p, struct err *e);

/* One layer as the fetch step found it. */
struct fetched_layer {
    char *location;
    char digest[DIGEST_STR_LEN + 1];
    char diff_id[DIGEST_STR_LEN + 1]; /* of the uncompressed stream ("" when not known) */
    uint64_t size;
    /* The bytes of the blob this layer came from (fetch_json.h), on its first layer only (an
     * archive's other members: 0), so that a sum over the layers counts each blob once. */
    uint64_t bytes_downloaded, bytes_resumed, bytes_reused;
};
/* What to fetch: a location, with the ETag and size the listing gave (NULL/0 when unknown),
 * and the diff id its image config declares (registry images; NULL otherwise). */
struct fetch_want {
    const char *location;
    const char *etag;
    uint64_t size;
    const char *diff_id;
};
/* Fetch every location (children of run, queue "fetch"), wait for them, and return the image's
 * layers bottom-up: normally one per location; a docker-archive or OCI layout blob expands into
 * its own layers. *layers malloc'd; free with fetched_layers_free(). On failure e says which
 * location failed and why; -ECANCELED when run was cancelled or shut down. */
int pipeline_fetch_all(struct pipeline *p, struct fsm_run *run, const struct fetch_want *want,
                       size_t n, struct fetched_layer **layers, size_t *n_layers, struct err *e);
void fetched_layers_free(struct fetched_layer *v, size_t n);
