/*
 * cli_source.c: source options and known digests for the commands that read sources.
 * See cli_source.h.
 */
#include "cli/cli_source.h"

#include <stdlib.h>

#include "store/blobs.h"

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
    return blobs_known_digest(db, location, etag, size);
}
