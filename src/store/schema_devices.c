/*
 * schema_devices.c: thin devices and their ids (component "devices").
 *
 * devices        every thin device thinimg ever asked the pool for, by 24-bit thin id.
 *                state: creating (row committed before the create_thin/create_snap message),
 *                ready (message succeeded and confirmed), failed (an operation on it failed:
 *                left for gc, never cleaned up on the error path), deleting (gc started the
 *                pool delete), deleted (gone from the pool; the id may be reused only now).
 *                foreign: the id was allocated here but the pool already had it (create_thin
 *                or create_snap answered EEXIST: a collision with a device thinimg did not
 *                make, or a database that lost rows). The row keeps the id out of use for
 *                good; gc reports it as an orphan in the pool.
 * device_id_seq  per pool, the next id to hand out. Ids only grow, so an id is never reused
 *                while any trace of its device may exist; after 2^24-1 the allocator looks for
 *                ids whose rows are gone or 'deleted'.
 * pools          the thin pools thinimg set up or adopted, with the exact parameters of their
 *                table, so that reassembly after a reboot loads an identical table. origin:
 *                created (thinimg made the backing files) or adopted (someone else made the
 *                pool; thinimg only uses it).
 * pool_settings  per pool, the operator's lifecycle policy (`thinimg pool set`): autoextend
 *                threshold, step (percent or bytes) and cap; how many metadata backups to keep
 *                and how often to take one. No row: autoextend off, backup defaults.
 * pool_events    per pool, what happened to it (migration 2, issue 20): checks (thin_check
 *                at assembly and `pool check`), growths (`pool grow`, autoextend), autoextend
 *                stopped by its cap or the backing file system, metadata backups, repairs.
 *                Sizes before/after where they apply. Bounded: only the newest
 *                POOL_EVENTS_KEEP per pool are kept (src/dm/pool_life.h).
 */
#include <stddef.h>

#include "store/schema.h"

const struct db_migration store_devices_migrations[] = {
    {1, "devices, device_id_seq",
     "CREATE TABLE devices("
     "  pool TEXT NOT NULL,"
     "  dev_id INTEGER NOT NULL CHECK(dev_id BETWEEN 1 AND 16777215),"
     "  name TEXT NOT NULL,"
     "  kind TEXT NOT NULL CHECK(kind IN ('layer','activation','test')),"
     "  state TEXT NOT NULL"
     "    CHECK(state IN ('creating','ready','failed','deleting','deleted','foreign')),"
     "  origin_id INTEGER,"
     "  size_bytes INTEGER NOT NULL CHECK(size_bytes > 0),"
     "  error TEXT,"
     "  created_at_ms INTEGER NOT NULL,"
     "  updated_at_ms INTEGER NOT NULL,"
     "  PRIMARY KEY(pool, dev_id));"
     "CREATE UNIQUE INDEX devices_live_name ON devices(name) WHERE state != 'deleted';"
     "CREATE INDEX devices_state ON devices(state);"
     "CREATE TABLE device_id_seq("
     "  pool TEXT PRIMARY KEY,"
     "  next_id INTEGER NOT NULL CHECK(next_id BETWEEN 1 AND 16777216));"
     "CREATE TABLE pools("
     "  name TEXT PRIMARY KEY,"
     "  origin TEXT NOT NULL CHECK(origin IN ('created','adopted')),"
     "  data_file TEXT,"
     "  metadata_file TEXT,"
     "  data_bytes INTEGER NOT NULL CHECK(data_bytes > 0),"
     "  metadata_bytes INTEGER,"
     "  block_sectors INTEGER NOT NULL CHECK(block_sectors >= 128 AND block_sectors % 128 = 0),"
     "  low_water_blocks INTEGER NOT NULL CHECK(low_water_blocks >= 0),"
     "  features TEXT NOT NULL,"
     "  created_at_ms INTEGER NOT NULL,"
     "  updated_at_ms INTEGER NOT NULL);"},
    {2, "pool lifecycle: pool_settings (autoextend, backups), pool_events",
     "CREATE TABLE pool_settings("
     "  pool TEXT PRIMARY KEY,"
     "  autoextend_threshold_pct REAL NOT NULL DEFAULT 0"
     "    CHECK(autoextend_threshold_pct >= 0 AND autoextend_threshold_pct < 100),"
     "  autoextend_step_pct REAL NOT NULL DEFAULT 0 CHECK(autoextend_step_pct >= 0),"
     "  autoextend_step_bytes INTEGER NOT NULL DEFAULT 0 CHECK(autoextend_step_bytes >= 0),"
     "  autoextend_max_bytes INTEGER NOT NULL DEFAULT 0 CHECK(autoextend_max_bytes >= 0),"
     "  backup_keep INTEGER NOT NULL DEFAULT 0 CHECK(backup_keep >= 0),"
     "  backup_interval_s INTEGER NOT NULL DEFAULT -1,"
     "  updated_at_ms INTEGER NOT NULL);"
     "CREATE TABLE pool_events("
     "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  pool TEXT NOT NULL,"
     "  at_ms INTEGER NOT NULL,"
     "  kind TEXT NOT NULL,"
     "  ok INTEGER NOT NULL,"
     "  data_before INTEGER NOT NULL DEFAULT 0,"
     "  data_after INTEGER NOT NULL DEFAULT 0,"
     "  meta_before INTEGER NOT NULL DEFAULT 0,"
     "  meta_after INTEGER NOT NULL DEFAULT 0,"
     "  detail TEXT NOT NULL DEFAULT '');"
     "CREATE INDEX pool_events_pool_kind ON pool_events(pool, kind, id);"},
};
const size_t store_devices_migrations_n =
    sizeof(store_devices_migrations) / sizeof(store_devices_migrations[0]);
