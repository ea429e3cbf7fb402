/*
 * schema_images.c: images, layer chains and activations (component "images").
 *
 * images          a reference the operator processed (canonical location) and its state.
 * image_layers    the ordered layers of an image: blob digest and chain id at each depth.
 * layers          one per chain id: the thin device holding the unpacked filesystem of that
 *                 chain, shared by every image whose lower layers match.
 * activations     named writable snapshots of an image's top layer (what a VM boots).
 * image_refs      every REF an operator typed that resolved to an image (expanded to a full
 *                 location), so a repeated process-image of an active image is answered from
 *                 the database alone.
 * resource_locks  per-resource locks (image, chain id) owned by a live process: pid, boot id
 *                 and process start time identify the owner, so a dead owner's lock can be
 *                 broken safely and a live one is never stolen.
 */
#include <stddef.h>

#include "store/schema.h"

const struct db_migration store_images_migrations[] = {
    {1, "images, image_layers, layers, activations, resource_locks",
     "CREATE TABLE images("
     "  id INTEGER PRIMARY KEY,"
     "  ref TEXT NOT NULL UNIQUE,"
     "  name TEXT NOT NULL,"
     "  state TEXT NOT NULL CHECK(state IN ('pending','fetching','unpacking','ready','failed')),"
     "  n_layers INTEGER NOT NULL DEFAULT 0,"
     "  top_chain TEXT,"
     "  error TEXT,"
     "  created_at_ms INTEGER NOT NULL,"
     "  updated_at_ms INTEGER NOT NULL,"
     "  last_used_ms INTEGER NOT NULL);"
     "CREATE TABLE layers("
     "  chain_id TEXT PRIMARY KEY,"
     "  parent_chain TEXT REFERENCES layers(chain_id),"
     "  digest TEXT NOT NULL,"
     "  depth INTEGER NOT NULL CHECK(depth >= 1),"
     "  pool TEXT,"
     "  dev_id INTEGER,"
     "  state TEXT NOT NULL CHECK(state IN ('pending','unpacking','ready','failed')),"
     "  entries INTEGER,"
     "  bytes INTEGER,"
     "  error TEXT,"
     "  created_at_ms INTEGER NOT NULL,"
     "  updated_at_ms INTEGER NOT NULL,"
     "  FOREIGN KEY(pool, dev_id) REFERENCES devices(pool, dev_id));"
     "CREATE TABLE image_layers("
     "  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
     "  idx INTEGER NOT NULL CHECK(idx >= 1),"
     "  location TEXT,"
     "  digest TEXT,"
     "  chain_id TEXT,"
     "  size INTEGER,"
     "  PRIMARY KEY(image_id, idx));"
     "CREATE INDEX image_layers_chain ON image_layers(chain_id);"
     "CREATE TABLE activations("
     "  name TEXT PRIMARY KEY,"
     "  image_id INTEGER NOT NULL REFERENCES images(id),"
     "  chain_id TEXT NOT NULL REFERENCES layers(chain_id),"
     "  pool TEXT,"
     "  dev_id INTEGER,"
     "  state TEXT NOT NULL CHECK(state IN ('creating','active','inactive','failed')),"
     "  device_path TEXT,"
     "  error TEXT,"
     "  created_at_ms INTEGER NOT NULL,"
     "  updated_at_ms INTEGER NOT NULL,"
     "  FOREIGN KEY(pool, dev_id) REFERENCES devices(pool, dev_id));"
     "CREATE INDEX activations_image ON activations(image_id);"
     "CREATE TABLE resource_locks("
     "  resource TEXT PRIMARY KEY,"
     "  owner_pid INTEGER NOT NULL,"
     "  owner_boot_id TEXT NOT NULL,"
     "  owner_start_ticks INTEGER NOT NULL,"
     "  purpose TEXT NOT NULL,"
     "  acquired_at_ms INTEGER NOT NULL);"},
    {2, "image_refs",
     "CREATE TABLE image_refs("
     "  ref TEXT PRIMARY KEY,"
     "  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
     "  resolved_at_ms INTEGER NOT NULL);"
     "CREATE INDEX image_refs_image ON image_refs(image_id);"},
    {3, "indexes on image_layers.digest and layers.digest: gc's unreferenced-blob scan",
     /* Without them, finding the blobs no image uses scanned both tables once per blob
      * (quadratic in the number of images). */
     "CREATE INDEX image_layers_digest ON image_layers(digest);"
     "CREATE INDEX layers_digest ON layers(digest);"},
    {4, "indexes in the order images and activations are listed: a page costs a page",
     "CREATE INDEX images_name_ref ON images(name, ref);"
     "CREATE INDEX activations_created ON activations(created_at_ms, name);"},
    /* The daemon's gauges (rows and bytes per state) read these instead of counting every row
     * at each scrape: triggers keep them exact in the same transaction as the change. */
    {5, "row_counts per state of images, layers and activations, kept by triggers",
     "CREATE TABLE IF NOT EXISTS row_counts("
     "  tbl TEXT NOT NULL,"
     "  state TEXT NOT NULL,"
     "  rows INTEGER NOT NULL,"
     "  bytes INTEGER NOT NULL,"
     "  PRIMARY KEY(tbl, state)) WITHOUT ROWID;"
     "CREATE TRIGGER images_count_insert AFTER INSERT ON images BEGIN "
     "  INSERT INTO row_counts(tbl, state, rows, bytes) VALUES('images', NEW.state, 1, 0)"
     "   ON CONFLICT(tbl, state) DO UPDATE SET rows = rows + 1, bytes = bytes + excluded.bytes;"
     "END;"
     "CREATE TRIGGER images_count_delete AFTER DELETE ON images BEGIN "
     "  UPDATE row_counts SET rows = rows - 1"
     "   WHERE tbl = 'images' AND state = OLD.state;"
     "END;"
     "CREATE TRIGGER images_count_update AFTER UPDATE OF state ON images BEGIN "
     "  UPDATE row_counts SET rows = rows - 1"
     "   WHERE tbl = 'images' AND state = OLD.state;"
     "  INSERT INTO row_counts(tbl, state, rows, bytes) VALUES('images', NEW.state, 1, 0)"
     "   ON CONFLICT(tbl, state) DO UPDATE SET rows = rows + 1, bytes = bytes + excluded.bytes;"
     "END;"
     "CREATE TRIGGER layers_count_insert AFTER INSERT ON layers BEGIN "
     "  INSERT INTO row_counts(tbl, state, rows, bytes)"
     "   VALUES('layers', NEW.state, 1, coalesce(NEW.bytes, 0))"
     "   ON CONFLICT(tbl, state) DO UPDATE SET rows = rows + 1, bytes = bytes + excluded.bytes;"
     "END;"
     "CREATE TRIGGER layers_count_delete AFTER DELETE ON layers BEGIN "
     "  UPDATE row_counts SET rows = rows - 1, bytes = bytes - coalesce(OLD.bytes, 0)"
     "   WHERE tbl = 'layers' AND state = OLD.state;"
     "END;"
     "CREATE TRIGGER layers_count_update AFTER UPDATE OF state, bytes ON layers BEGIN "
     "  UPDATE row_counts SET rows = rows - 1, bytes = bytes - coalesce(OLD.bytes, 0)"
     "   WHERE tbl = 'layers' AND state = OLD.state;"
     "  INSERT INTO row_counts(tbl, state, rows, bytes)"
     "   VALUES('layers', NEW.state, 1, coalesce(NEW.bytes, 0))"
     "   ON CONFLICT(tbl, state) DO UPDATE SET rows = rows + 1, bytes = bytes + excluded.bytes;"
     "END;"
     "CREATE TRIGGER activations_count_insert AFTER INSERT ON activations BEGIN "
     "  INSERT INTO row_counts(tbl, state, rows, bytes) VALUES('activations', NEW.state, 1, 0)"
     "   ON CONFLICT(tbl, state) DO UPDATE SET rows = rows + 1, bytes = bytes + excluded.bytes;"
     "END;"
     "CREATE TRIGGER activations_count_delete AFTER DELETE ON activations BEGIN "
     "  UPDATE row_counts SET rows = rows - 1"
     "   WHERE tbl = 'activations' AND state = OLD.state;"
     "END;"
     "CREATE TRIGGER activations_count_update AFTER UPDATE OF state ON activations BEGIN "
     "  UPDATE row_counts SET rows = rows - 1"
     "   WHERE tbl = 'activations' AND state = OLD.state;"
     "  INSERT INTO row_counts(tbl, state, rows, bytes) VALUES('activations', NEW.state, 1, 0)"
     "   ON CONFLICT(tbl, state) DO UPDATE SET rows = rows + 1, bytes = bytes + excluded.bytes;"
     "END;"
     "INSERT INTO row_counts SELECT 'images', state, count(*), 0 FROM images GROUP BY state;"
     "INSERT INTO row_counts SELECT 'layers', state, count(*), coalesce(sum(bytes), 0)"
     "  FROM layers GROUP BY state;"
     "INSERT INTO row_counts SELECT 'activations', state, count(*), 0 FROM activations"
     "  GROUP BY state;"},
};
const size_t store_images_migrations_n =
    sizeof(store_images_migrations) / sizeof(store_images_migrations[0]);
