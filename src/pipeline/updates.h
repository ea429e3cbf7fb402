/*
 * updates.h: domain writes the machines hand to the FSM engine (fsm_run_on_commit), so they
 * are committed in the same transaction as the transition that caused them.
 *
 * Each update is a small heap object: create it with *_new(), set the fields to change, pass
 * it with its *_apply and *_free functions to fsm_run_on_commit(); the engine frees it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "store/db.h"
#include "util/hash.h"

struct layer_update {
    char chain_id[DIGEST_STR_LEN + 1];
    bool set_state;
    char state[16];
    char *error;              /* with set_state; NULL clears it */
    bool only_if_not_ready;   /* never downgrade a ready layer (another run finished it) */
    bool set_device;
    char pool[128];           /* "" with dev_id 0: no device */
    uint32_t dev_id;
    bool set_stats;
    int64_t entries, bytes;
};
struct layer_update *layer_update_new(const char *chain_id);
int layer_update_apply(struct db *db, void *ud);
void layer_update_free(void *ud);

/* Record a device's state (failed, deleted) in the devices table: bookkeeping only, never a
 * devicemapper operation. */
struct device_mark {
    char pool[128];
    uint32_t dev_id;
    char state[16];
    char *error;
    bool only_if_ready;       /* leave creating/deleting/deleted rows alone */
};
struct device_mark *device_mark_new(const char *pool, uint32_t dev_id, const char *state,
                                    const char *error);
int device_mark_apply(struct db *db, void *ud);
void device_mark_free(void *ud);

struct image_update {
    int64_t image_id;
    char state[16];
    char *error;
};
struct image_update *image_update_new(int64_t image_id, const char *state, const char *error);
int image_update_apply(struct db *db, void *ud);
void image_update_free(void *ud);

struct activation_update {
    char name[80];
    bool insert;              /* create the row (creating) if it does not exist */
    int64_t image_id;
    char chain_id[DIGEST_STR_LEN + 1];
    bool set_device;
    char pool[128];
    uint32_t dev_id;
    char device_path[256];
    bool set_state;
    char state[16];
    char *error;
};
struct activation_update *activation_update_new(const char *name);
int activation_update_apply(struct db *db, void *ud);
void activation_update_free(void *ud);
