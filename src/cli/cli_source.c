/*
 * cli_source.c: source options and known digests for the commands that read sources.
 * See cli_source.h.
 */
#include "cli/cli_source.h"

#include <stdlib.h>

bool cli_source_option(int c, const char *arg, struct source_options *o)
{
    switch (c) {
    case CLI_OPT_REGION: o->region = arg; return true;
    case CLI_OPT_ENDPOINT: o->endpoint = arg; return true;
    case CLI_OPT_NO_SIGN: o->anonymous = true; return true;
    case CLI_OPT_PLATFORM: o->platform = arg; return true;
    case CLI_OPT_INSECURE: o->insecure_registry = arg; return true;
    default: return false;
    }
}

char *cli_known_digest(struct db *db, const char *location, const char *etag, uint64_t size)
{
    if (!db)
        return NULL;
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "SELECT s.digest FROM blob_sources s JOIN blobs b ON "
                                      "b.digest = s.digest WHERE s.location = ?1 AND "
                                      "s.etag IS ?2 AND s.size = ?3");
    char *d = NULL;
    if (st) {
        db_bind_text(st, 1, location);
        db_bind_text(st, 2, etag);
        db_bind_i64(st, 3, (int64_t)size);
        if (db_step(db, st) == 1)
            d = db_col_strdup(st, 0);
        db_done(st);
    }
    db_unlock(db);
    return d;
}
