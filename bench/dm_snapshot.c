/*
 * dm_snapshot.c: benchmark helper for bench/dm.sh: times thinimg's snapshot-create-and-
 * activate (thin_snapshot + thin_activate: database id allocation, create_snap message,
 * confirmation, dm create) N times against one inactive origin, and prints the seconds spent.
 * Deactivation between rounds is not timed (the shell baseline does the same).
 *
 *   dm_snapshot STATE_DB POOL N
 */
#include <stdio.h>
#include <stdlib.h>

#include "dm/thin.h"
#include "store/schema.h"
#include "util/log.h"
#include "util/timeutil.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: dm_snapshot DB POOL N\n");
        return 2;
    }
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_WARN, 2);
    const char *pool = argv[2];
    int n = atoi(argv[3]);
    struct err e = {0};
    struct db *db = NULL;
    if (db_open(argv[1], NULL, &db, &e) < 0 || store_migrate(db, &e) < 0) {
        fprintf(stderr, "db: %s\n", err_str(&e));
        return 1;
    }
    uint32_t base = 0;
    struct thin_spec spec = {
        .kind = THIN_KIND_TEST, .name_suffix = "bench-base", .size_bytes = 1ull << 30};
    if (thin_create(db, pool, &spec, &base, &e) < 0) {
        fprintf(stderr, "create: %s\n", err_str(&e));
        return 1;
    }
    double total = 0;
    for (int i = 0; i < n; i++) {
        uint32_t id = 0;
        struct thin_spec s = {.kind = THIN_KIND_ACTIVATION, .name_suffix = NULL};
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "bench-%d", i);
        s.name_suffix = suffix;
        double t0 = mono_s();
        if (thin_snapshot(db, pool, base, &s, &id, &e) < 0 ||
            thin_activate(db, pool, id, NULL, 0, &e) < 0) {
            fprintf(stderr, "round %d: %s\n", i, err_str(&e));
            return 1;
        }
        total += mono_s() - t0;
        if (thin_deactivate(db, pool, id, &e) < 0) {
            fprintf(stderr, "deactivate: %s\n", err_str(&e));
            return 1;
        }
    }
    printf("%.6f\n", total);
    db_close(db);
    return 0;
}
