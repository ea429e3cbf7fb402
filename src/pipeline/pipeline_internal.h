/*
 * pipeline_internal.h: what the pipeline machines share (the pipeline folder only).
 *
 * The struct pipeline is the `ud` of every machine; its fields are set once by
 * pipeline_open() and read-only afterwards, so machines on different threads may read them
 * without locking. The database, the guard and the manager are thread-safe on their own.
 */
#pragma once

#include <pthread.h>

#include "pipeline/imagedb.h"
#include "pipeline/pipeline.h"

struct pipeline {
    struct db *db;
    struct fsm_manager *mgr;
    struct guard *guard;
    struct config cfg;
    struct source_options source;
    struct archive_policy policy;
    uint64_t device_bytes;
    struct fsm_machine *m_fetch, *m_unpack, *m_activate, *m_process;
    struct fetch_context *fetch_ctx; /* owned; freed after the manager is closed */
    pthread_mutex_t lifecycle_lock;  /* one deactivate/remove at a time (lifecycle.c) */
};

/* Start the unpack run of each chain of image_id bottom-up (or find the active one), chaining
 * them with run-after. *top gets the run of the top chain (zero if every layer is ready).
 * device_bytes: size of a new base layer device (0: the pipeline's default). */
int pipeline_start_unpacks(struct pipeline *p, int64_t image_id, const struct fsm_id *parent,
                           uint64_t device_bytes, struct fsm_id *top, struct err *e);

/* An image by name or ref, for an operation on it: 0 with *out (image_rec_free() it), or
 * -EINVAL (an ambiguous name) / -ENOENT / a database error, with e saying so and, for a missing
 * image, what to do (`what_to_do`, e.g. "see list-images"). */
int pipeline_image_lookup(struct pipeline *p, const char *image, const char *what_to_do,
                          struct image_rec *out, struct err *e);

/* Wait for a child run while honouring the waiter's cancellation. Returns 0 with the outcome,
 * the kind of its error (may be NULL) and the error, or -ECANCELED when run was cancelled/shut
 * down first. A parent that fails because its child did passes the child's kind on. */
int pipeline_wait_child(struct fsm_run *run, const struct fsm_id *child, enum fsm_outcome *outcome,
                        enum err_kind *kind, char **error);

int pipeline_register_unpack(struct pipeline *p, struct err *e);
int pipeline_register_activate(struct pipeline *p, struct err *e);
int pipeline_register_process(struct pipeline *p, struct err *e);

/* The newest run of type with resource_id (optionally a child of parent, optionally only
 * unfinished ones). 0 and *out set, or -ENOENT. */
int pipeline_find_run(struct pipeline *p, const char *type, const char *resource_id,
                      const struct fsm_id *parent, bool unfinished, struct fsm_id *out);

/* ---- fetch glue (fetch_glue.c) ---------------------------------------------------------- */

int pipeline_register_fetch(struct pipeline *p, struct err *e);
/* Local path of a stored blob (blobs table), -ENOENT when it is not stored. */
int pipeline_blob_path(struct pipeline *p, const char *digest, char *out, size_t n);
/* The integrity rule (store/blobfile.h) before a blob is applied: 1 usable; 0 not (missing,
 * or its bytes do not match: quarantined, *why says what), negative on error. */
int pipeline_blob_verify(struct pipeline *p, const char *digest, const char *path, char *why,
                         size_t n);

/* One layer as the fetch step found it. */
struct fetched_layer {
    char *location;
    char digest[DIGEST_STR_LEN + 1];
    uint64_t size;
};
/* What to fetch: a location, with the ETag and size the listing gave (NULL/0 when unknown). */
struct fetch_want {
    const char *location;
    const char *etag;
    uint64_t size;
};
/* Fetch every location (children of run, queue "fetch"), wait for them, and return the image's
 * layers bottom-up: normally one per location; a docker-archive or OCI layout blob expands into
 * its own layers. *layers malloc'd; free with fetched_layers_free(). On failure e says which
 * location failed and why; -ECANCELED when run was cancelled or shut down. */
int pipeline_fetch_all(struct pipeline *p, struct fsm_run *run, const struct fetch_want *want,
                       size_t n, struct fetched_layer **layers, size_t *n_layers, struct err *e);
void fetched_layers_free(struct fetched_layer *v, size_t n);

/* Enter the operation guard for a devicemapper section of a transition. false with *refused
 * set when the guard said no: RETRY when the run was cancelled or shut down while waiting,
 * ABORT with the health report otherwise (retrying in a few seconds would not heal the host). */
bool pipeline_guard_enter(struct pipeline *p, struct fsm_run *run, const char *what,
                          struct fsm_result *refused);
