/*
 * schema.c: applies the domain migrations in dependency order (blobs and devices before the
 * images tables that reference them). See schema.h.
 */
#include "store/schema.h"

int store_migrate(struct db *db, struct err *e)
{
    int r = db_migrate(db, "blobs", store_blobs_migrations, store_blobs_migrations_n, e);
    if (r < 0)
        return r;
    r = db_migrate(db, "blob_identity", store_identity_migrations, store_identity_migrations_n, e);
    if (r < 0)
        return r;
    r = db_migrate(db, "devices", store_devices_migrations, store_devices_migrations_n, e);
    if (r < 0)
        return r;
    r = db_migrate(db, "images", store_images_migrations, store_images_migrations_n, e);
    if (r < 0)
        return r;
    r = db_migrate(db, "oci", store_oci_migrations, store_oci_migrations_n, e);
    if (r < 0)
        return r;
    return db_migrate(db, "backend", store_backend_migrations, store_backend_migrations_n, e);
}
