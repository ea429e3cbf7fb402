/*
 * imagedb.h: queries on the images domain tables (images, image_layers, layers, activations).
 *
 * The machines call these from fsm_run_on_commit() callbacks, i.e. inside the FSM checkpoint
 * transaction, so every state change of an image, a layer or an activation is committed
 * together with the transition that caused it. The CLI calls the read functions directly.
 *
 * Ownership: records returned by *_get / passed to *_list callbacks own their strings; free a
 * record from *_get with the matching *_rec_free(). Records passed to list callbacks are freed
 * by the list function after the callback returns.
 *
 * States (CHECKs in store/schema_images.c):
 *   image       pending -> fetching -> unpacking -> ready | failed
 *   layer       pending -> unpacking -> ready | failed        (one per chain id)
 *   activation  creating -> active -> inactive | failed
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "util/hash.h"

struct image_rec {
    int64_t id;
    char *ref;  /* canonical location, unique */
    char *name; /* human name, e.g. "golang:3" */
    char *state;
    int n_layers;
    char *top_chain; /* NULL until the layers are known */
    char *error;     /* NULL unless failed */
    int64_t created_at_ms, updated_at_ms, last_used_ms;
    int n_activations; /* active activations (list/get only) */
};

struct image_layer_rec {
    int idx;        /* 1 = bottom */
    char *location; /* where the blob came from */
    char *digest;   /* NULL until fetched */
    char *chain_id; /* NULL until fetched */
    int64_t size;   /* -1 when unknown */
};

struct layer_rec {
    char *chain_id;
    char *parent_chain; /* NULL for a base layer */
    char *digest;
    int depth;
    char *pool;     /* NULL until a device was allocated */
    int64_t dev_id; /* 0 until a device was allocated */
    char *state;
    int64_t entries, bytes; /* -1 when unknown */
    char *error;
    int64_t created_at_ms, updated_at_ms;
};

struct activation_rec {
    char *name;
    int64_t image_id;
    char *image_name; /* joined from images (get/list only) */
    char *chain_id;
    char *pool;
    int64_t dev_id; /* 0 until allocated */
    char *state;
    char *device_path;
    char *error;
    int64_t created_at_ms, updated_at_ms;
};

void image_rec_free(struct image_rec *r);
void image_layer_rec_free(struct image_layer_rec *r);
void layer_rec_free(struct layer_rec *r);
void activation_rec_free(struct activation_rec *r);

/* ---- images ---------------------------------------------------------------------------- */

/* Insert the image if its ref is new (state pending), else touch last_used. *id is set. */
int imagedb_image_upsert(struct db *db, const char *ref, const char *name, int64_t *id);
int imagedb_image_set_state(struct db *db, int64_t id, const char *state, const char *error);
/* Replace the image's layer list and set n_layers/top_chain (top_chain from the last layer). */
int imagedb_image_set_layers(struct db *db, int64_t id, const struct image_layer_rec *layers,
                             size_t n);
/* Look up by id, by ref or by name ("golang:3"); -ENOENT when absent. key_kind: see below. */
int imagedb_image_get(struct db *db, int64_t id, struct image_rec *out);
/* Find by ref, or by name when no ref matches; -ENOENT when absent, -EEXIST when a name is
 * ambiguous (two refs with the same name). */
int imagedb_image_find(struct db *db, const char *ref_or_name, struct image_rec *out);
int imagedb_image_layers(struct db *db, int64_t id, struct image_layer_rec **out, size_t *n);
void imagedb_image_layers_free(struct image_layer_rec *v, size_t n);
/* A page of a listing: at most limit rows (0 = all) after the row whose key is after (NULL =
 * from the start): the ref for images, the name for activations. A key that names no row is
 * -ENOENT. Pages follow the listing's order, and an index serves each (a host with thousands
 * of images answers a page at the cost of a page). */
struct imagedb_page {
    size_t limit;
    const char *after;
};
typedef int (*imagedb_image_cb)(const struct image_rec *r, void *ud);
/* By name, then ref. pg may be NULL (everything). */
int imagedb_image_list(struct db *db, const struct imagedb_page *pg, imagedb_image_cb cb,
                       void *ud);
/* Delete the image row (and its image_layers); refuses with -ENOTEMPTY while activations
 * exist (-EBUSY is a database locked by another process). */
int imagedb_image_delete(struct db *db, int64_t id);

/* Remember that ref (as typed, expanded to a full location) names image id; look it up. */
int imagedb_ref_set(struct db *db, const char *ref, int64_t image_id);
int imagedb_ref_get(struct db *db, const char *ref, int64_t *image_id);

/* ---- layers (chain ids) ------------------------------------------------------------------ */

/* Insert a pending layer unless the chain id exists. */
int imagedb_layer_ensure(struct db *db, const char *chain_id, const char *parent_chain,
                         const char *digest, int depth);
int imagedb_layer_get(struct db *db, const char *chain_id, struct layer_rec *out);
int imagedb_layer_set_device(struct db *db, const char *chain_id, const char *pool, int64_t dev_id);
int imagedb_layer_set_state(struct db *db, const char *chain_id, const char *state,
                            const char *error);
int imagedb_layer_set_stats(struct db *db, const char *chain_id, int64_t entries, int64_t bytes);
/* How many images and child layers still use this chain (0 = removable). */
int imagedb_layer_users(struct db *db, const char *chain_id, int *n);
int imagedb_layer_delete(struct db *db, const char *chain_id);

/* ---- activations ----------------------------------------------------------------------- */

int imagedb_activation_insert(struct db *db, const char *name, int64_t image_id,
                              const char *chain_id);
int imagedb_activation_get(struct db *db, const char *name, struct activation_rec *out);
int imagedb_activation_set_device(struct db *db, const char *name, const char *pool, int64_t dev_id,
                                  const char *device_path);
int imagedb_activation_set_state(struct db *db, const char *name, const char *state,
                                 const char *error);
typedef int (*imagedb_activation_cb)(const struct activation_rec *r, void *ud);
/* image_id 0 = all images; active_only = only state 'active'. Oldest first; pg may be NULL. */
int imagedb_activation_list(struct db *db, int64_t image_id, bool active_only,
                            const struct imagedb_page *pg, imagedb_activation_cb cb, void *ud);
int imagedb_activation_delete(struct db *db, const char *name);

/* Activation names and image names as dm-safe tokens: [A-Za-z0-9_.-], 1..64 chars. */
bool imagedb_name_valid(const char *name);
/* Derive a default activation name from an image name ("golang:3" -> "golang-3"). */
void imagedb_default_activation_name(const char *image_name, char *out, size_t n);

/* ---- totals ------------------------------------------------------------------------------- */

/* What imagedb_state_counts() counts. */
enum imagedb_table { IMAGEDB_IMAGES, IMAGEDB_LAYERS, IMAGEDB_ACTIVATIONS };
/* Rows of table per state: fn(state, rows, bytes, ud) for each state that has rows (bytes: the
 * layers' applied bytes; 0 for images and activations). */
typedef void (*imagedb_state_cb)(const char *state, int64_t rows, int64_t bytes, void *ud);
int imagedb_state_counts(struct db *db, enum imagedb_table table, imagedb_state_cb fn, void *ud);
