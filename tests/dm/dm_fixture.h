/*
 * dm_fixture.h: a test pool for the dm tests in C (label dm, inside the VM): a fresh directory,
 * a database with every schema, and a pool with its backing files in that directory.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "dm/pool.h"
#include "store/db.h"

struct dm_fixture {
    char *dir;         /* tu_mkdtemp(tag) */
    char pool[64];     /* "<prefix><pid>" */
    char db_path[512]; /* <dir>/t.db */
    struct db *db;
    struct pool_info info;
};

/* Whether this host can run the dm tests (device-mapper, root): false after printing why (the
 * test then exits 77, skipped). Sets the log up as the dm tests want it. */
bool dm_fixture_usable(void);
/* Sets f up with a pool of data_bytes; 0, or -1 after printing why. */
int dm_fixture_setup(struct dm_fixture *f, const char *tag, const char *prefix,
                     uint64_t data_bytes);
/* Removes the pool's devices (every "<pool>-*" dm device, the pool, its loop devices), closes
 * the database and removes the directory. The VM is thrown away; still, later tests in it
 * find no devices left behind. */
void dm_fixture_teardown(struct dm_fixture *f);
