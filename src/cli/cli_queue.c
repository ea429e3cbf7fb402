/*
 * cli_queue.c: the queue options. See cli_queue.h.
 */
#include "cli/cli_queue.h"

#include <stddef.h>
#include <stdint.h>

#include "cli/cli.h"
#include "util/parse.h"

int cli_queue_option(const char *cmd, int c, const char *arg, struct pipeline_queues *q)
{
    static const struct {
        int code;
        const char *name;
        int max;
        size_t off;
    } opts[] = {
        {CLI_OPT_FETCH_QUEUE, "fetch-queue", CLI_FETCH_QUEUE_MAX,
         offsetof(struct pipeline_queues, fetch_limit)},
        {CLI_OPT_UNPACK_QUEUE, "unpack-queue", CLI_UNPACK_QUEUE_MAX,
         offsetof(struct pipeline_queues, unpack_limit)},
        {CLI_OPT_FETCH_QUEUE_MAX, "fetch-queue-max", CLI_FETCH_QUEUE_MAX,
         offsetof(struct pipeline_queues, fetch_max)},
        {CLI_OPT_UNPACK_QUEUE_MAX, "unpack-queue-max", CLI_UNPACK_QUEUE_MAX,
         offsetof(struct pipeline_queues, unpack_max)},
    };
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (opts[i].code != c)
            continue;
        uint64_t v = 0;
        if (parse_u64(arg, &v) < 0 || v < 1 || v > (uint64_t)opts[i].max) {
            cli_usage_error(cmd, "--%s needs 1..%d, not '%s'", opts[i].name, opts[i].max, arg);
            return -1;
        }
        *(int *)((char *)q + opts[i].off) = (int)v;
        return 1;
    }
    return 0;
}
