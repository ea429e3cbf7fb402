/*
 * cmd_list_snapshots.c: `thinimg list-snapshots`: activations (named writable snapshots of
 * images) with their device, from the database (read-only).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/table.h"
#include "cli/usage_note.h"
#include "daemon/views.h"
#include "pipeline/imagedb.h"
#include "util/cleanup.h"
#include "util/timeutil.h"
#include <errno.h>

static void usage(FILE *out)
{
    fprintf(out, "Usage: thinimg list-snapshots [--all] [--image NAME|REF] [--json] [--limit N]\n"
                 "                              [--after NAME]\n"
                 "\n"
                 "List activations: the writable snapshots a VM boots from. USED is the pool\n"
                 "space the device has mapped (its own writes and the blocks it shares with\n"
                 "its image's layers); EXCL the part of it no other device maps (its own\n"
                 "writes: removing the activation frees it), SHARED the part other devices\n"
                 "map too (its image's layers, other activations). EXCL and SHARED come from\n"
                 "the pool's metadata (thin_ls, kept until the pool changes); '-' when they\n"
                 "cannot be read, and a note says why. With the overlay backend USED and EXCL\n"
                 "are du of the activation's upper directory (its writes), SHARED 0, DEVICE\n"
                 "its mount point. The first line names the backend.\n"
                 "\n"
                 "  --all           include inactive and failed activations (default: active)\n"
                 "  --image IMAGE   only activations of this image (name or ref)\n"
                 "  --json          machine-readable output\n"
                 "  --limit N       at most N activations (default: all), oldest first\n"
                 "  --after NAME    the activations after NAME (the last one shown; a full page\n"
                 "                  says how to ask for the next)\n");
}

struct snap_ctx {
    struct db *db;
    bool json;
    char why[512]; /* why EXCL/SHARED show '-' (the first reason) */
    json_t *arr;
    struct table t;
    struct cli_page page;
};

static int snap_row(const struct activation_rec *a, void *ud)
{
    struct snap_ctx *c = ud;
    if (!cli_page_row(&c->page, a->name))
        return 1;
    if (c->json) {
        json_array_append_new(c->arr, view_activation(c->db, a));
        return 0;
    }
    char id[32] = "-", age[32];
    if (a->dev_id > 0)
        snprintf(id, sizeof(id), "%lld", (long long)a->dev_id);
    format_duration_ms(now_ms() - a->created_at_ms, age, sizeof(age));
    /* What the kernel has, not only what was recorded: after a reboot the devices are gone
     * until process-image or activate brings them back. */
    int present = view_activation_present(c->db, a);
    struct view_bytes b;
    view_activation_bytes(c->db, a, &b);
    const char *state = b.disk && present == 0
                            ? "inactive (not mounted; process-image or activate mounts it again)"
                            : view_activation_state_label(a, present);
    char used[24] = "-";
    uint64_t mapped = 0;
    if (b.disk && b.known)
        format_bytes(b.mapped, used, sizeof(used));
    else if (present == 1 && view_activation_mapped(a, &mapped) == 0)
        format_bytes(mapped, used, sizeof(used));
    char excl[24] = "-", shared[24] = "-";
    if (b.known) {
        format_bytes(b.exclusive, excl, sizeof(excl));
        format_bytes(b.shared, shared, sizeof(shared));
    } else if (!c->why[0]) {
        snprintf(c->why, sizeof(c->why), "%s: %s", a->name, b.why);
    }
    table_row(&c->t, a->name, a->image_name, state, a->device_path ? a->device_path : "-", id, used,
              excl, shared, age, a->error ? a->error : "", NULL);
    return 0;
}

int cmd_list_snapshots(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"all", no_argument, NULL, 'a'},
                                         CLI_PAGE_LONG_OPTIONS,
                                         {"image", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct snap_ctx c = {.t = TABLE_INIT};
    bool all = false;
    const char *image = NULL;
    int o;
    while ((o = getopt_long(argc, argv, "hjai:", opts, NULL)) != -1) {
        switch (o) {
        case 'j':
            c.json = true;
            break;
        case 'a':
            all = true;
            break;
        case 'i':
            image = optarg;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default: {
            int pr = cli_page_option("list-snapshots", o, optarg, &c.page);
            if (pr != CLI_OPTION_TAKEN)
                return pr;
        }
        }
    }
    int operands_rc = cli_check_operands("list-snapshots", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    struct err e = {0};
    _cleanup_db_ struct db *db = NULL;
    int r = cli_open_db(cli, true, &db, &e);
    if (r == -ENOENT && !image) {
        if (c.json)
            printf("[]\n");
        else if (!cli->quiet)
            printf("no activations\n");
        return EXIT_OK;
    }
    if (r < 0)
        return cli_fail("list-snapshots", r, &e);
    int64_t image_id = 0;
    if (image) {
        struct image_rec img = {0};
        r = imagedb_image_find(db, image, &img);
        if (r == -EEXIST)
            return cli_failf("list-snapshots", EXIT_USAGE,
                             "image name '%s' is ambiguous; give its ref (see list-images)", image);
        if (r < 0)
            return cli_failf("list-snapshots", cli_exit_code(r), "no image '%s' (see list-images)",
                             image);
        image_id = img.id;
        image_rec_free(&img);
    }
    if (c.json)
        c.arr = json_array();
    else
        table_header(&c.t, "NAME", "IMAGE", "STATE", "DEVICE", "DEV ID", "USED", "EXCL", "SHARED",
                     "AGE", "ERROR", NULL);
    struct imagedb_page pg = {.limit = cli_page_ask(&c.page), .after = c.page.after};
    c.db = db;
    cli_usage_cache(cli);
    r = imagedb_activation_list(db, image_id, !all, &pg, snap_row, &c);
    cli_backend_line(cli, db, c.json, r);
    int rc = cli_print_page(cli, "list-snapshots", r, c.arr, &c.t,
                            all ? "no activations" : "no active activations", &c.page,
                            "activation with that name");
    cli_bytes_note(cli, rc, c.why);
    return rc;
}
