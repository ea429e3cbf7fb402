/*
 * overlay_report.c: `thinimg status` on the overlay backend (overlay_report.h).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/overlay_report.h"
#include "cli/table.h"
#include "pipeline/backend.h"
#include "pipeline/imagedb.h"
#include "util/timeutil.h"

/* For an activation: "yes" when its mount is up, "no" when recorded but not mounted, "-" when
 * no record names it (an orphan upper directory: gc's business). */
static const char *mounted(struct db *db, const struct backend_usage *u)
{
    if (strcmp(u->kind, "activation") != 0)
        return "-";
    struct activation_rec a = {0};
    if (imagedb_activation_get(db, u->name, &a) < 0)
        return "-";
    bool up = backend_overlay.act_up(NULL, &a);
    activation_rec_free(&a);
    return up ? "yes" : "no";
}

int overlay_status(struct cli *cli, struct db *db, bool json)
{
    struct backend_usage *v = NULL;
    size_t n = 0;
    int r = backend_overlay_usage(&cli->cfg, &v, &n);
    if (r < 0)
        return cli_fail("status", r, NULL);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].bytes;
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I, s:I, s:b, s:s}", "kind",
                                                 v[i].kind, "name", v[i].name, "path", v[i].path,
                                                 "bytes", (json_int_t)v[i].bytes, "entries",
                                                 (json_int_t)v[i].entries, "missing", v[i].missing,
                                                 "mounted", mounted(db, &v[i])));
        cli_print_json(json_pack("{s:s, s:n, s:I, s:o}", "backend", "overlay", "pool", "disk_bytes",
                                 (json_int_t)total, "storage", arr));
    } else {
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
                      v[i].missing ? "?" : used, entries, mounted(db, &v[i]), NULL);
        }
        table_print(&t, stdout);
        table_free(&t);
    }
    free(v);
    return EXIT_OK;
}
