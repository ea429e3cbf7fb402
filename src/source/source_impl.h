/*
 * source_impl.h: what the kinds of source (s3.c, dir.c, http.c, registry.c) implement behind
 * source.h. Private to src/source/.
 *
 * A struct source is a small header (kind, canonical root, options) plus the kind's own state
 * in `impl`. The ops never see an unchecked key: source.c runs source_key_check() first.
 */
#pragma once

#include "source/source.h"

struct source_ops {
    int (*list)(struct source *s, const char *prefix, struct source_listing *out, struct err *e);
    int (*stat)(struct source *s, const char *key, struct source_object *out, struct err *e);
    /* x->etag is NULL unless strong (source.c drops weak and empty ones). */
    int (*get)(struct source *s, const char *key, uint64_t offset, const struct source_expect *x,
               source_sink_fn sink, void *ud, struct source_get_info *info, struct err *e);
    void (*free_impl)(void *impl);
    /* The location of a key when it is not root + key (registry: "docker://h/r:tag"); NULL
     * = root + key. */
    char *(*location)(const struct source *s, const char *key);
};

struct source {
    enum source_kind kind;
    const struct source_ops *ops;
    char *root;                /* canonical location of the base, ends in '/' */
    struct source_options opt; /* copy; region and endpoint strings owned below */
    char *opt_region, *opt_endpoint;
    void *impl;
};

/* Constructors: parse the rest of the location (after the scheme), fill s->root and s->impl,
 * and return the key the location names (malloc'd, may be ""). */
int source_s3_open(struct source *s, const char *rest, char **key_out, struct err *e);
int source_dir_open(struct source *s, const char *path, char **key_out, struct err *e);
int source_http_open(struct source *s, const char *url, char **key_out, struct err *e);
int source_registry_open(struct source *s, const char *rest, char **key_out, struct err *e);

/* source_key_check() and, for http(s), the same on the decoded key. */
int source_key_check_for(const struct source *s, const char *key, bool allow_prefix,
                         struct err *e);

/* Effective option values (option or default). */
uint32_t source_opt_connect_timeout_ms(const struct source *s);
uint32_t source_opt_low_speed_time_s(const struct source *s);
uint32_t source_opt_request_timeout_ms(const struct source *s);
uint32_t source_opt_retry_attempts(const struct source *s);
uint32_t source_opt_retry_initial_ms(const struct source *s);
uint32_t source_opt_retry_max_ms(const struct source *s);
uint32_t source_opt_list_timeout_ms(const struct source *s);
bool source_opt_cancelled(const struct source *s);

/* Listing helpers shared by the kinds: count a key the server or folder gave (accepted or
 * not: -EFBIG past SOURCE_LIST_MAX_KEYS), append an object (takes ownership of the strings on
 * success), skip a key (counted; the first SOURCE_LIST_SKIP_EXAMPLES reasons kept for the one
 * summary warning source_list() adds), add a warning, sort by key. */
int source_listing_see(struct source_listing *l);
int source_listing_add(struct source_listing *l, char *key, uint64_t size, char *etag,
                       int64_t mtime_ms);
int source_listing_skip(struct source_listing *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int source_listing_warn(struct source_listing *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void source_listing_sort(struct source_listing *l);

/* Set o->identity (source.h) to "KIND SCOPE VALIDATOR SIZE" for an HTTP-speaking kind: the
 * validator is the strong ETag (nothing is set for none or a weak one); s3 adds "md5" or
 * "multipart" before it. scope: the server that made the ETag. 0 or -ENOMEM. */
int source_identity_http(struct source_object *o, const char *kind, const char *scope);
