/*
 * dm_fixture.c: see dm_fixture.h.
 */
#include "dm_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "dm/dm.h"
#include "store/schema.h"
#include "util/log.h"
#include "testutil.h"

bool dm_fixture_usable(void)
{
    struct err e = {0};
    if (dm_available(&e) < 0 || geteuid() != 0) {
        printf("skipped: %s\n", e.code ? err_str(&e) : "needs root");
        return false;
    }
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_WARN, 2);
    return true;
}

int dm_fixture_setup(struct dm_fixture *f, const char *tag, const char *prefix, uint64_t data_bytes)
{
    f->dir = tu_mkdtemp(tag);
    if (!f->dir)
        return -1;
    snprintf(f->pool, sizeof(f->pool), "%s%d", prefix, (int)getpid());
    snprintf(f->db_path, sizeof(f->db_path), "%s/t.db", f->dir);
    struct err e = {0};
    if (db_open(f->db_path, NULL, &f->db, &e) < 0 || store_migrate(f->db, &e) < 0) {
        fprintf(stderr, "db: %s\n", err_str(&e));
        return -1;
    }
    struct pool_config pc = {.name = f->pool, .pool_dir = f->dir, .data_bytes = data_bytes};
    if (pool_setup(f->db, &pc, &f->info, &e) < 0) {
        fprintf(stderr, "pool_setup: %s\n", err_str(&e));
        return -1;
    }
    return 0;
}

void dm_fixture_teardown(struct dm_fixture *f)
{
    /* Every device named after the pool, also of the pools a test made beside it in the
     * fixture's directory (thin devices sort after their pool: reversed, they go first), then
     * every loop device on a file there (a loop device keeps a deleted file's blocks). */
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "for d in $(dmsetup ls | awk '{print $1}' | grep '^%s' | LC_ALL=C sort -r); do "
             "dmsetup remove $d; done; for l in $(losetup -nO NAME,BACK-FILE | "
             "awk -v d='%s/' 'index($2, d) == 1 { print $1 }'); do losetup -d $l; done",
             f->pool, f->dir);
    int rc = system(cmd);
    (void)rc;
    if (f->db)
        db_close(f->db);
    tu_rmrf(f->dir);
    free(f->dir);
}
