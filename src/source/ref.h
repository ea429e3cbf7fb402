/*
 * ref.h: image references. What the operator types after `thinimg fetch` / `process-image`,
 * and what it names.
 *
 * A REF is a full location (s3://bucket/images/golang/, dir:/srv/bucket/images/golang/3.tar,
 * https://host/path/layer.tar) or a key relative to the default source (--source /
 * THINIMG_SOURCE; the default source's own key, if any, is a prefix: --source
 * s3://bucket/images plus REF golang/3.tar is s3://bucket/images/golang/3.tar).
 *
 * What a REF names (decided by the key, never by content):
 *   family prefix   "images/golang/" (or "images/golang" when no such object exists but keys
 *                   exist below it): every N.tar directly under it, in numeric order (10 after
 *                   9). Gaps and names that are not N.tar are reported as warnings.
 *   family key      ".../N.tar": the family's layers 1..N; any missing one is an error.
 *   blob            any other single object: one blob whose content decides what it is (a
 *                   layer is a one-layer image; a docker-archive or OCI layout lists its own
 *                   layers, which the fetch machine finds when it validates the blob).
 *
 * Canonical ref: the location of the image's top key (for a family prefix, the highest N.tar:
 * `images/golang/` and `images/golang/5.tar` are the same image), or the blob's location. The
 * human name is "<family>:<N>" ("golang:3"), or the blob's file name without its extension.
 *
 * N.tar: N is decimal without leading zeros, 1 <= N <= REF_LAYER_NUMBER_MAX. An image deeper
 * than the layer limit (SOURCE_MAX_LAYERS, raised by THINIMG_SOURCE_MAX_LAYERS up to
 * SOURCE_MAX_LAYERS_CEILING) is refused whole (-EFBIG), never cut down to its first layers.
 *
 * docker:// references (registry.h) name one image of a registry: its layers are the layers of
 * its manifest (chosen from an index for the platform), each a blob named by its digest.
 * Canonical ref: docker://HOST/REPO@sha256:<manifest digest> (a moved tag is another image);
 * the human name is "REPO:TAG" (or "REPO@sha256:<first 12>").
 *
 * Ownership: every struct here owns its strings and arrays; free with the *_free() function.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "source/source.h"
#include "util/err.h"

/* N.tar parses for N up to nine digits, so that a family deeper than the limit is seen (and
 * refused) instead of its upper keys passing for other objects. */
#define REF_LAYER_NUMBER_MAX 999999999u

enum ref_kind {
    REF_FAMILY = 1, /* a family prefix */
    REF_FAMILY_KEY, /* a family key N.tar */
    REF_BLOB,       /* any other object */
    REF_REGISTRY,   /* an image of a registry (docker://) */
};
/* "family", "family-key", "blob", "registry" */
const char *ref_kind_name(enum ref_kind k);

struct ref_layer {
    unsigned n;     /* N of N.tar; 0 for an object that is not a family member */
    char *key;      /* key in the source */
    char *location; /* canonical location */
    uint64_t size;
    char *etag; /* NULL when the source gives none */
    /* Known before the download (registry layers; NULL otherwise): the blob's digest
     * ("sha256:<hex>", verified as it arrives) and its media type. */
    char *digest;
    char *media_type;
};

struct image_ref {
    enum ref_kind kind;
    char *canonical;          /* canonical ref (see above) */
    char *name;               /* human name, e.g. "golang:3" */
    char *source;             /* source root, e.g. "s3://bucket/" */
    char *family_prefix;      /* key prefix of the family ("images/golang/"), NULL for a blob */
    struct ref_layer *layers; /* bottom to top */
    size_t n_layers;
    char **warnings;
    size_t n_warnings;
    /* Registry images (NULL / 0 otherwise): the manifest's digest, the platform it was chosen
     * for ("linux/amd64"), the config blob's digest and its rootfs.diff_ids (one per layer). */
    char *manifest_digest;
    char *platform;
    char *config_digest;
    char **diff_ids;
    size_t n_diff_ids;
    /* ... and the manifest and config themselves, as fetched and digest-checked (bounded by
     * the registry's manifest and config limits), so they can be stored as blobs, and the
     * config's run settings (registry_config_summary(): entrypoint, env, ...) as JSON. */
    char *manifest_media_type;
    void *manifest;
    size_t manifest_len;
    void *config;
    size_t config_len;
    char *run_config;
};

/* Resolve ref (see above). default_source may be NULL (then ref must be a full location).
 * Errors: -EINVAL (bad REF, no default source), -EILSEQ (invalid key), -ENOENT (nothing there,
 * or a layer of 1..N missing), -ENOTSUP (a prefix over plain HTTP), -EFBIG (too many layers),
 * and the source's errors (registry.h for docker:// references). */
int ref_resolve(const char *ref, const char *default_source, const struct source_options *o,
                struct image_ref *out, struct err *e);
void image_ref_free(struct image_ref *r);

/* Open the source of ref and return the key it names (the same rules as ref_resolve). */
int ref_open(const char *ref, const char *default_source, const struct source_options *o,
             struct source **src, char **key, struct err *e);

/* "N.tar" -> N (1..REF_LAYER_NUMBER_MAX). -EINVAL for other names; -ERANGE for N out of range;
 * -EDOM for leading zeros. */
int ref_layer_number(const char *basename, unsigned *n);

/* ---- catalog: what `thinimg ls` shows ------------------------------------------------- */

struct ref_family {
    char *prefix;             /* key prefix, "" or ending in '/' */
    char *name;               /* family name ("golang") */
    struct ref_layer *layers; /* numeric order */
    size_t n_layers;
    char **warnings; /* gaps, names that are not N.tar (the first SOURCE_LIST_SKIP_EXAMPLES,
                        then one line with the count of the rest), too many layers */
    size_t n_warnings;
    size_t n_not_layers; /* objects in the folder whose name is not N.tar */
};

struct ref_catalog {
    struct ref_family *families; /* sorted by prefix */
    size_t n_families;
    struct ref_layer *objects; /* every other object, sorted by key */
    size_t n_objects;
};

/* Group a listing of the source into families (folders with N.tar files) and other objects.
 * Objects in a family folder that are not N.tar are listed as objects too (and warned about
 * in the family). */
int ref_catalog_build(const struct source *s, const struct source_listing *l,
                      struct ref_catalog *out);
void ref_catalog_free(struct ref_catalog *c);
/* The catalog of the folder *key names, what `thinimg ls` and the monitor's browser show: a
 * '/' is added to *key (malloc'd) when it lacks one, the listing stays in *l (its warnings,
 * free it with source_listing_free()) and *cat is built from it. On failure e says why. */
int ref_catalog_list(struct source *s, char **key, struct source_listing *l,
                     struct ref_catalog *cat, struct err *e);
