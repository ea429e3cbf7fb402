/*
 * stubs.c: weak placeholders for commands whose module is not built yet. A cmd_<name>.c file
 * with the real command overrides the placeholder at link time (the CLI objects are linked
 * directly, not from an archive). Delete a placeholder once its command exists.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static int not_available(const char *name, int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("Usage: thinimg %s\n\nThis command is not available in this build yet.\n",
                   name);
            return EXIT_OK;
        }
    fprintf(stderr, "thinimg: %s: not available in this build yet\n", name);
    return EXIT_FAIL;
}

#define STUB(fn, name)                                                                             \
    __attribute__((weak)) int fn(struct cli *cli, int argc, char **argv)                          \
    {                                                                                              \
        (void)cli;                                                                                 \
        return not_available(name, argc, argv);                                                    \
    }

STUB(cmd_daemon, "daemon")
STUB(cmd_monitor, "monitor")
