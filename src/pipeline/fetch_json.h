/*
 * fetch_json.h: the fetch machine's request and response formats (JSON), between its
 * transitions and the code that starts fetch runs and reads their results: the request a
 * caller builds (fetch_request_build()) and the response it reads (fetch_response_parse()),
 * and, for the transitions (fetch.c), the pieces they read and write a step at a time.
 *
 * The response is one JSON object that grows along the run: download adds the digest, size,
 * path and seal, validate the format and the layers (each {"digest", "diff_id", "size",
 * "format", "path", "member"?, "seal"?}), check-exists writes it whole for a blob fetched before.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive/archive.h"
#include "fsm/fsm.h"
#include "store/blobfile.h"
#include "util/err.h"
#include "util/hash.h"

/* jansson's own cleanup (json_auto_t). */
#ifndef _cleanup_json_
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#endif

/* The request for one location. etag and size (from a listing) may be NULL/0; with them the
 * check-exists step needs no request to the source. diff_id (may be NULL): the diff id the
 * layer must have (a registry image config's rootfs.diff_ids[i]); a layer whose uncompressed
 * stream hashes otherwise is rejected. *json is malloc'd. */
int fetch_request_build(const char *location, const char *etag, uint64_t size, const char *diff_id,
                        char **json, size_t *len);

struct fetch_layer {
    char digest[DIGEST_STR_LEN + 1];
    char diff_id[DIGEST_STR_LEN + 1]; /* of the uncompressed stream; "" when unknown (a
                                         response written before diff ids were kept) */
    uint64_t size;
    enum blob_format format;
    char *path;            /* blobs/sha256/<hex> */
    char *member;          /* path inside the archive it came from, NULL for the blob itself */
    struct blob_seal seal; /* the file as hashed (store/blobfile.h), when sealed */
    bool sealed;
};

/* A finished run's response. */
struct fetch_result {
    char *location;
    char *etag;                      /* NULL when the source gives none */
    char digest[DIGEST_STR_LEN + 1]; /* the blob as fetched */
    uint64_t size;
    enum blob_format format;
    char *path;
    char *repo_tag;             /* from a docker-archive/OCI manifest, or NULL */
    struct fetch_layer *layers; /* the image layers this blob gives, bottom to top:
                                   itself for a layer, its members for an archive */
    size_t n_layers;
    bool reused;           /* no GET: check-exists found it already fetched, or another
                              location's blob with the same identity was reused */
    struct blob_seal seal; /* the blob file as hashed, when sealed */
    bool sealed;
    char *identity; /* what the source calls this version (source.h), NULL when none */
    /* Where the blob's bytes came from (docs/sources.md): received from the network by the
     * download that completed, already on disk from an interrupted one (resumed), or not
     * fetched at all because a stored blob was reused. */
    uint64_t bytes_downloaded, bytes_resumed, bytes_reused;
};

int fetch_response_parse(const void *data, size_t len, struct fetch_result *out, struct err *e);
void fetch_result_free(struct fetch_result *r);

/* A run's request, parsed; the strings point into root. */
struct fetch_request {
    const char *location;
    const char *etag;
    const char *diff_id; /* the diff id the layer must have, or NULL */
    uint64_t size;
    json_t *root;
};

int fetch_request_parse(struct fsm_run *run, struct fetch_request *rq);
void fetch_request_free(struct fetch_request *rq);
#define _cleanup_request_ __attribute__((cleanup(fetch_request_free)))

/* The current response as JSON (an empty object when none yet); store it back as the run's
 * response (checkpointed with the transition). */
json_t *fetch_response_load(struct fsm_run *run);
int fetch_response_store(struct fsm_run *run, json_t *j);

/* A media type name (blob_format_name()) back to its format; BLOB_UNKNOWN for anything else. */
enum blob_format fetch_format_parse(const char *s);

/* A blob file's seal (store/blobfile.h) as it travels in the response, from the step that
 * hashed the file to the record step that writes it into the blobs row. */
json_t *fetch_seal_json(const struct blob_seal *s);
bool fetch_seal_parse(json_t *o, uint64_t size, struct blob_seal *s);

/* The response's byte counts (fetch_result): {"downloaded", "resumed", "reused"}. */
json_t *fetch_bytes_json(uint64_t downloaded, uint64_t resumed, uint64_t reused);

/* One entry of the response's "layers". */
/* One entry of the response's "layers" (diff_id may be NULL). */
json_t *fetch_layer_json(const char *digest, const char *diff_id, uint64_t size, enum blob_format f,
                         const char *path, const char *member, const struct blob_seal *seal);
