/*
 * cli_source.c: source options and known digests for the commands that read sources.
 * See cli_source.h.
 */
#include "cli/cli_source.h"

#include <stdlib.h>

#include "store/blobs.h"

/* --download-streams: 1..SOURCE_DOWNLOAD_STREAMS_MAX; anything else is clamped into it. */
static uint32_t streams_arg(const char *arg)
{
    long v = strtol(arg, NULL, 10);
    return v < 1 ? 1 : v > SOURCE_DOWNLOAD_STREAMS_MAX ? SOURCE_DOWNLOAD_STREAMS_MAX : (uint32_t)v;
}

// clang-format off
bool cli_source_option(int c, const char *arg, struct source_options *o)
{
    switch (c) {
    case CLI_OPT_REGION: o->region = arg; return true;
    case CLI_OPT_ENDPOINT: o->endpoint = arg; return true;
    case CLI_OPT_NO_SIGN: o->anonymous = true; return true;
    case CLI_OPT_PLATFORM: o->platform = arg; return true;
    case CLI_OPT_INSECURE: o->insecure_registry = arg; return true;
    case CLI_OPT_STREAMS: o->download_streams = streams_arg(arg); return true;
    default: return false;
    }
}
// clang-format on

char *cli_known_digest(struct db *db, const char *location, const char *etag, uint64_t size)
{
    return blobs_known_digest(db, location, etag, size);
}
