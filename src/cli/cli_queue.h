/*
 * cli_queue.h: the queue options that process-image and the daemon share: --fetch-queue N and
 * --unpack-queue N pin a queue's limit; without them the limit follows the host's load
 * (pipeline/loadloop.h) up to --fetch-queue-max / --unpack-queue-max.
 */
#pragma once

#include <getopt.h>

#include "pipeline/pipeline.h"

/* getopt_long codes (outside the ASCII range of short options and the source options). */
enum {
    CLI_OPT_FETCH_QUEUE = 0x1100,
    CLI_OPT_UNPACK_QUEUE,
    CLI_OPT_FETCH_QUEUE_MAX,
    CLI_OPT_UNPACK_QUEUE_MAX
};

/* Ranges: more than this many downloads or unpacks at once helps no host we know of. */
#define CLI_FETCH_QUEUE_MAX  64
#define CLI_UNPACK_QUEUE_MAX 16

#define CLI_QUEUE_LONG_OPTIONS                                                                     \
    {"fetch-queue", required_argument, NULL, CLI_OPT_FETCH_QUEUE},                                 \
        {"unpack-queue", required_argument, NULL, CLI_OPT_UNPACK_QUEUE},                           \
        {"fetch-queue-max", required_argument, NULL, CLI_OPT_FETCH_QUEUE_MAX},                     \
        {"unpack-queue-max", required_argument, NULL, CLI_OPT_UNPACK_QUEUE_MAX}

#define CLI_QUEUE_HELP                                                                             \
    "  --fetch-queue N      pin parallel downloads at N (1..64); default: sized to the\n"         \
    "                       host's load, from 5, between 1 and --fetch-queue-max\n"             \
    "  --unpack-queue N     pin parallel unpacks of independent chains at N (1..16);\n"          \
    "                       default: sized to the load, from 2, up to --unpack-queue-max\n"      \
    "  --fetch-queue-max N  most parallel downloads when sized (default 2 x cores, <= 8)\n"      \
    "  --unpack-queue-max N most parallel unpacks when sized (default cores, <= 4)\n"

/* Handle one getopt result: 1 when c was a queue option, 0 when it was not, -1 for a bad value
 * (the usage error is printed; the command exits EXIT_USAGE). */
int cli_queue_option(const char *cmd, int c, const char *arg, struct pipeline_queues *q);
