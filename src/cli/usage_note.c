/*
 * usage_note.c: see usage_note.h.
 */
#include "cli/usage_note.h"

#include <stdio.h>
#include <stdlib.h>

#include "daemon/views.h"
#include "dm/usage.h"
#include "pipeline/backend.h"
#include "util/fsutil.h"

void cli_usage_cache(struct cli *cli)
{
    char *path = path_join(cli->cfg.state_dir, THIN_USAGE_CACHE_FILE);
    view_usage_cache_file(path);
    free(path);
    view_state_dir(cli->cfg.state_dir);
}

void cli_backend_line(struct cli *cli, struct db *db, bool json, int r)
{
    if (!json && r >= 0 && !cli->quiet)
        printf("backend %s\n", view_backend(db)->name);
}

void cli_bytes_note(struct cli *cli, int rc, const char *why)
{
    if (rc == EXIT_OK && why && *why && !cli->quiet)
        fprintf(stderr, "note: EXCL and SHARED show '-' where they cannot be read: %s\n", why);
}
