/*
 * overlay_report.c: `thinimg status` on the overlay backend (overlay_report.h).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/overlay_report.h"
#include "cli/table.h"
#include "daemon/views.h"
#include "pipeline/backend.h"
#include "pipeline/imagedb.h"
#include "util/timeutil.h"

int overlay_status(struct cli *cli, struct db *db, bool json)
{
    if (json) { /* the same object as the daemon's GET /v1/pool */
        json_t *o = view_overlay_status(db, &cli->cfg);
        if (!o)
            return cli_fail("status", -ENOMEM, NULL);
        cli_print_json(o);
        return EXIT_OK;
    }
    struct backend_usage *v = NULL;
    size_t n = 0;
    int r = backend_overlay_usage(&cli->cfg, &v, &n);
    if (r < 0)
        return cli_fail("status", r, NULL);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].bytes;
    char tot[32];
    format_bytes(total, tot, sizeof(tot));
    printf("backend overlay: %zu directories, %s on disk (du of layer diffs and activation "
           "uppers)\n\n",
           n, tot);
    struct table t = TABLE_INIT;
    table_header(&t, "KIND", "NAME", "USED", "ENTRIES", "MOUNTED", NULL);
    for (size_t i = 0; i < n; i++) {
        char used[32], entries[32], name[16];
        format_bytes(v[i].bytes, used, sizeof(used));
        snprintf(entries, sizeof(entries), "%llu", (unsigned long long)v[i].entries);
        /* A layer by the first 12 hex digits of its chain id, as list-images shows it. */
        snprintf(name, sizeof(name), "%.12s", v[i].name);
        table_row(&t, v[i].kind, strcmp(v[i].kind, "layer") ? v[i].name : name,
                  v[i].missing ? "?" : used, entries, view_overlay_mounted(db, &v[i]), NULL);
    }
    table_print(&t, stdout);
    table_free(&t);
    free(v);
    return EXIT_OK;
}
