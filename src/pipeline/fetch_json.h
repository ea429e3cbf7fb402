/*
 * fetch_json.h: the fetch machine's request and response formats (JSON), between its
 * transitions and the code that starts fetch runs and reads their results (fetch.h has the
 * public part: fetch_request_build(), fetch_response_parse()). Private to src/pipeline/.
 *
 * The response is one JSON object that grows along the run: download adds the digest, size,
 * path and seal, validate the format and the layers (each {"digest", "size", "format",
 * "path", "member"?, "seal"?}), check-exists writes it whole for a blob fetched before.
 */
#pragma once

#include <jansson.h>

#include "pipeline/fetch.h"

/* jansson's own cleanup (json_auto_t). */
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

/* A run's request, parsed; the strings point into root. */
struct fetch_request {
    const char *location;
    const char *etag;
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

/* One entry of the response's "layers". */
json_t *fetch_layer_json(const char *digest, uint64_t size, enum blob_format f, const char *path,
                         const char *member, const struct blob_seal *seal);

/* The userinfo a location's origin was given in this process (fetch_credentials_keep()),
 * put back into the location: only for the request to the source; never store, log or return
 * it in a message. malloc'd; NULL on ENOMEM. */
char *fetch_credentials_for_request(const char *location);
