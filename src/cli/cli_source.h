/*
 * cli_source.h: what the commands that read sources (ls, fetch) share: the source options
 * (--region, --endpoint, --no-sign-request, --platform, --insecure-registry) and the digest known
 * for a location.
 */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "source/source.h"
#include "store/db.h"

/* getopt_long codes for the source options (outside the ASCII range of short options). */
enum {
    CLI_OPT_REGION = 0x1000,
    CLI_OPT_ENDPOINT,
    CLI_OPT_NO_SIGN,
    CLI_OPT_PLATFORM,
    CLI_OPT_INSECURE,
    CLI_OPT_STREAMS
};

#define CLI_SOURCE_LONG_OPTIONS                                                                    \
    {"region", required_argument, NULL, CLI_OPT_REGION},                                           \
        {"endpoint", required_argument, NULL, CLI_OPT_ENDPOINT},                                   \
        {"no-sign-request", no_argument, NULL, CLI_OPT_NO_SIGN},                                   \
        {"platform", required_argument, NULL, CLI_OPT_PLATFORM},                                   \
        {"insecure-registry", required_argument, NULL, CLI_OPT_INSECURE},                          \
        {"download-streams", required_argument, NULL, CLI_OPT_STREAMS}

#define CLI_SOURCE_HELP                                                                            \
    "  --region REGION     S3 region (env AWS_REGION, default us-east-1)\n"                        \
    "  --endpoint URL      S3-compatible endpoint, path-style (env AWS_ENDPOINT_URL_S3,\n"         \
    "                      AWS_ENDPOINT_URL)\n"                                                    \
    "  --no-sign-request   anonymous S3 access even when credentials are configured\n"             \
    "  --platform OS/ARCH[/VARIANT]\n"                                                             \
    "                      the image of a docker:// index to fetch (env THINIMG_PLATFORM,\n"       \
    "                      default the host's)\n"                                                  \
    "  --insecure-registry HOST[:PORT]\n"                                                          \
    "                      plain HTTP to that registry (env THINIMG_INSECURE_REGISTRY, a\n"        \
    "                      comma-separated list); every other one is HTTPS, verified\n"            \
    "  --download-streams N\n"                                                                     \
    "                      at most N ranged GETs per object of 64 MiB or more (s3, http;\n"        \
    "                      default 4, at most 16, 1 = one GET; env\n"                              \
    "                      THINIMG_SOURCE_DOWNLOAD_STREAMS); a download starts with one\n"         \
    "                      and opens the others when it runs below 128 MiB/s\n"

/* Handle one getopt result; returns true when c was a source option. */
bool cli_source_option(int c, const char *arg, struct source_options *o);

/* The digest recorded for location with this etag and size (blob_sources), or NULL. db may be
 * NULL. Returns a malloc'd "sha256:..." string. */
char *cli_known_digest(struct db *db, const char *location, const char *etag, uint64_t size);
