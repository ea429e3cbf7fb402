/*
 * open.c: source_open(): a location's scheme picks the kind of source (s3.c, dir.c, http.c,
 * registry.c), which parses the rest; the key it names is checked (source.c). See source.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "source/curl_lib.h"
#include "source/source.h"
#include "source/source_impl.h"
#include "util/cleanup.h"

/* The s3, http(s) and docker sources speak through libcurl, which is loaded on first use
 * (curl_lib.h): load it here, so a missing library is reported as such, with its package. */
static int network_source_open(int (*open_kind)(struct source *, const char *, char **,
                                                struct err *),
                               struct source *s, const char *rest, char **key_out, struct err *e)
{
    int r = curl_lib_load(e);
    return r < 0 ? r : open_kind(s, rest, key_out, e);
}

int source_open(const char *location, const struct source_options *o, struct source **out,
                char **key_out, struct err *e)
{
    _cleanup_free_ char *key = NULL;
    int r;
    struct source *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    if (o)
        s->opt = *o;
    s->opt_region = s->opt.region ? strdup(s->opt.region) : NULL;
    s->opt_endpoint = s->opt.endpoint ? strdup(s->opt.endpoint) : NULL;
    if ((s->opt.region && !s->opt_region) || (s->opt.endpoint && !s->opt_endpoint)) {
        source_free(s);
        return -ENOMEM;
    }
    s->opt.region = s->opt_region;
    s->opt.endpoint = s->opt_endpoint;

    if (!strncmp(location, "s3://", 5)) {
        s->kind = SOURCE_S3;
        r = network_source_open(source_s3_open, s, location + 5, &key, e);
    } else if (!strncmp(location, "dir:", 4)) {
        s->kind = SOURCE_DIR;
        r = source_dir_open(s, location + 4, &key, e);
    } else if (!strncmp(location, "http://", 7) || !strncmp(location, "https://", 8)) {
        s->kind = SOURCE_HTTP;
        r = network_source_open(source_http_open, s, location, &key, e);
    } else if (!strncmp(location, "docker://", 9)) {
        s->kind = SOURCE_REGISTRY;
        r = network_source_open(source_registry_open, s, location + 9, &key, e);
    } else {
        r = err_set(e, -EINVAL,
                    "'%.128s' is not a location: use s3://bucket/key, dir:/path, "
                    "http(s)://host/path or docker://host/repository:tag",
                    location);
    }
    if (r < 0) {
        source_free(s);
        return r;
    }
    if (key && (r = source_key_check_for(s, key, true, e)) < 0) {
        err_prefix(e, "%.256s", location);
        source_free(s);
        return r;
    }
    if (key_out)
        *key_out = key ? TAKE_PTR(key) : strdup("");
    *out = s;
    return 0;
}
