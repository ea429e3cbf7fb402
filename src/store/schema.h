/*
 * schema.h: the domain schema of the thinimg database, one migration list per component.
 *
 * The FSM engine owns its own tables (fsm_runs, fsm_events; see fsm/fsm.h). The domain tables
 * are split by the module that writes them, so each module's migrations evolve on their own:
 *
 *   component  tables                                   written by
 *   blobs      blobs, blob_sources, downloads           source/ + the fetch machine
 *   blob_identity  blob_identities, downloads.boot_id   the fetch machine
 *   devices    devices, device_id_seq                   dm/ (ids allocated here)
 *   images     images, image_layers, layers,            pipeline/
 *              activations, resource_locks
 *   oci        layer_diff_ids, image_configs            the fetch machine, process-image
 *   backend    storage_backend                          pipeline/backend.c (once per state dir)
 *
 * Rules: a released migration is never edited, only followed by a new one; every timestamp is
 * Unix milliseconds (INTEGER, *_ms); every state column has a CHECK listing its values.
 */
#pragma once

#include "store/db.h"

extern const struct db_migration store_blobs_migrations[];
extern const size_t store_blobs_migrations_n;
extern const struct db_migration store_identity_migrations[];
extern const size_t store_identity_migrations_n;
extern const struct db_migration store_devices_migrations[];
extern const size_t store_devices_migrations_n;
extern const struct db_migration store_images_migrations[];
extern const size_t store_images_migrations_n;
extern const struct db_migration store_oci_migrations[];
extern const size_t store_oci_migrations_n;
extern const struct db_migration store_backend_migrations[];
extern const size_t store_backend_migrations_n;

/* Apply every domain component's migrations (not the FSM's). */
int store_migrate(struct db *db, struct err *e);
