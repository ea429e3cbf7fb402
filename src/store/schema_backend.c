/*
 * schema_backend.c: the storage backend a state directory uses (component "backend").
 *
 * storage_backend  one row at most: the backend (pipeline/backend.h) chosen when the state
 *                  directory was first used by the pipeline. Layers, activations and their
 *                  records exist in that backend's form only, so the choice is never changed
 *                  (a new state directory takes another one). A database from before this
 *                  table records dm-thin at its next use (the only backend there was).
 */
#include <stddef.h>

#include "store/schema.h"

const struct db_migration store_backend_migrations[] = {
    {1, "storage_backend: the backend of the state directory, chosen once",
     "CREATE TABLE storage_backend("
     "  id INTEGER PRIMARY KEY CHECK(id = 1),"
     "  name TEXT NOT NULL CHECK(name IN ('dm-thin','overlay')),"
     "  chosen_at_ms INTEGER NOT NULL);"},
};
const size_t store_backend_migrations_n =
    sizeof(store_backend_migrations) / sizeof(store_backend_migrations[0]);
