/*
 * cmd_list_images.c: `thinimg list-images`: processed images with their state, layers and
 * activations, from the database (read-only; works while a daemon runs).
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
#include "store/oci.h"
#include "util/cleanup.h"
#include "util/timeutil.h"
#include <errno.h>

static void usage(FILE *out)
{
    fprintf(out, "Usage: thinimg list-images [--json] [--layers] [--limit N] [--after REF]\n"
                 "\n"
                 "List processed images: name, state, number of layers, active activations,\n"
                 "size (the file bytes its layers wrote; lower layers may be shared with other\n"
                 "images), exclusive and shared pool bytes, top chain id and source reference.\n"
                 "EXCL: pool bytes only this image's layers hold (removing the image frees at\n"
                 "least this). SHARED: bytes of its top layer device that another device maps\n"
                 "too (its activations, other images on the same layers, its own lower layers).\n"
                 "They come from the pool's metadata (thin_ls, kept until the pool changes);\n"
                 "'-' when they cannot be read, and a note says why. With the overlay backend\n"
                 "they are du of the layer directories: EXCL those only this image uses,\n"
                 "SHARED those another image uses too. The first line names the backend.\n"
                 "\n"
                 "  --layers   also list each image's layers: state, device id, size, the layer\n"
                 "             device's exclusive and shared bytes, chain id, digest and\n"
                 "             location; and a registry image's run settings (entrypoint,\n"
                 "             cmd, working dir, user, env)\n"
                 "  --json     machine-readable output (always includes layers)\n"
                 "  --limit N  at most N images (default: all), by name then ref\n"
                 "  --after REF the images after REF (the last one shown; a full page says\n"
                 "             how to ask for the next)\n");
}

struct list_ctx {
    struct db *db;
    bool json, layers;
    json_t *arr;
    struct table t;
    struct cli_page page;
    char why[512]; /* why EXCL/SHARED show '-' (the first reason) */
};

/* Table cells for b; the first reason figures are missing goes to why. */
static void bytes_cells(const struct view_bytes *b, const char *what, char *excl, char *shared,
                        size_t n, char *why, size_t why_n)
{
    if (b->known) {
        format_bytes(b->exclusive, excl, n);
        format_bytes(b->shared, shared, n);
        return;
    }
    snprintf(excl, n, "-");
    snprintf(shared, n, "-");
    if (!why[0])
        snprintf(why, why_n, "%s: %s", what, b->why);
}

static void short_digest(const char *d, char *out, size_t n)
{
    if (!d) {
        snprintf(out, n, "-");
        return;
    }
    const char *hex = strchr(d, ':');
    snprintf(out, n, "%.12s", hex ? hex + 1 : d);
}

/* A registry image's run settings as one line: "entrypoint [...] cmd [...] workdir /srv user
 * 1000 env 3 (linux/amd64)". */
static void config_line(const struct oci_image_config *c, char *out, size_t n)
{
    json_auto_t *run = json_loads(c->config, 0, NULL);
    _cleanup_free_ char *ep = json_dumps(json_object_get(run, "entrypoint"), JSON_COMPACT);
    _cleanup_free_ char *cmd = json_dumps(json_object_get(run, "cmd"), JSON_COMPACT);
    const char *wd = json_string_value(json_object_get(run, "working_dir"));
    const char *user = json_string_value(json_object_get(run, "user"));
    snprintf(out, n, "entrypoint %s cmd %s workdir %s user %s env %zu%s%s%s", ep ? ep : "-",
             cmd ? cmd : "-", wd && *wd ? wd : "-", user && *user ? user : "-",
             json_array_size(json_object_get(run, "env")), c->platform ? " (" : "",
             c->platform ? c->platform : "", c->platform ? ")" : "");
}

static int image_row(const struct image_rec *r, void *ud)
{
    struct list_ctx *c = ud;
    if (!cli_page_row(&c->page, r->ref))
        return 1;
    if (c->json) {
        json_array_append_new(c->arr, view_image(c->db, r));
        return 0;
    }
    char nl[16], na[16], top[16], age[32], size[24] = "-";
    snprintf(nl, sizeof(nl), "%d", r->n_layers);
    snprintf(na, sizeof(na), "%d", r->n_activations);
    short_digest(r->top_chain, top, sizeof(top));
    format_duration_ms(now_ms() - r->updated_at_ms, age, sizeof(age));
    uint64_t applied = 0, blobs = 0;
    if (view_image_sizes(c->db, r->id, &applied, &blobs) == 0 && applied > 0)
        format_bytes(applied, size, sizeof(size));
    char excl[24], shared[24];
    struct view_bytes b;
    view_image_bytes(c->db, r->id, &b);
    bytes_cells(&b, r->name, excl, shared, sizeof(excl), c->why, sizeof(c->why));
    table_row(&c->t, r->name, r->state, nl, na, size, excl, shared, top, age, r->ref, NULL);
    struct oci_image_config oc;
    if (c->layers && oci_image_config_get(c->db, r->id, &oc) == 1) {
        char line[1024], cd[16];
        config_line(&oc, line, sizeof(line));
        short_digest(oc.config_digest, cd, sizeof(cd));
        table_row(&c->t, "  config", "", "", "", "", "", "", cd, "", line, NULL);
        oci_image_config_free(&oc);
    }
    if (c->layers) {
        struct image_layer_rec *v = NULL;
        size_t n = 0;
        if (imagedb_image_layers(c->db, r->id, &v, &n) == 0) {
            for (size_t i = 0; i < n; i++) {
                char idx[32], d[16], ch[16], dev[32] = "-", lsize[24] = "-";
                snprintf(idx, sizeof(idx), "  layer %d", v[i].idx);
                short_digest(v[i].digest, d, sizeof(d));
                short_digest(v[i].chain_id, ch, sizeof(ch));
                struct layer_rec l = {0};
                const char *lstate = "-";
                char lexcl[24] = "-", lshared[24] = "-";
                if (v[i].chain_id && imagedb_layer_get(c->db, v[i].chain_id, &l) == 0) {
                    if (l.dev_id > 0)
                        snprintf(dev, sizeof(dev), "dev %lld", (long long)l.dev_id);
                    struct view_bytes lb;
                    if (view_layer_bytes(c->db, &l, &lb))
                        bytes_cells(&lb, idx + 2, lexcl, lshared, sizeof(lexcl), c->why,
                                    sizeof(c->why));
                    if (l.bytes >= 0)
                        format_bytes((uint64_t)l.bytes, lsize, sizeof(lsize));
                    lstate = l.state;
                }
                /* A layer row: its state, device id, applied bytes and its device's
                 * exclusive and shared bytes under the image's columns; digest and chain id
                 * beside them. */
                char where[600];
                snprintf(where, sizeof(where), "digest %s %s", d,
                         v[i].location ? v[i].location : "");
                table_row(&c->t, idx, lstate, dev, "", lsize, lexcl, lshared, ch, "", where, NULL);
                layer_rec_free(&l);
            }
            imagedb_image_layers_free(v, n);
        }
    }
    return 0;
}

int cmd_list_images(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"layers", no_argument, NULL, 'l'},
                                         CLI_PAGE_LONG_OPTIONS,
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct list_ctx c = {.t = TABLE_INIT};
    int o;
    while ((o = getopt_long(argc, argv, "hjl", opts, NULL)) != -1) {
        switch (o) {
        case 'j':
            c.json = true;
            break;
        case 'l':
            c.layers = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default: {
            int pr = cli_page_option("list-images", o, optarg, &c.page);
            if (pr != CLI_OPTION_TAKEN)
                return pr;
        }
        }
    }
    int operands_rc = cli_check_operands("list-images", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    struct err e = {0};
    _cleanup_db_ struct db *db = NULL;
    int r = cli_open_db(cli, true, &db, &e);
    if (r == -ENOENT) {
        /* Nothing processed yet is not an error for a listing. */
        if (c.json)
            printf("[]\n");
        else if (!cli->quiet)
            printf("no images (nothing processed yet)\n");
        return EXIT_OK;
    }
    if (r < 0)
        return cli_fail("list-images", r, &e);
    c.db = db;
    if (c.json)
        c.arr = json_array();
    else
        table_header(&c.t, "NAME", "STATE", "LAYERS", "ACTIVE", "SIZE", "EXCL", "SHARED",
                     "TOP CHAIN", "UPDATED", "REF", NULL);
    struct imagedb_page pg = {.limit = cli_page_ask(&c.page), .after = c.page.after};
    cli_usage_cache(cli);
    r = imagedb_image_list(db, &pg, image_row, &c);
    cli_backend_line(cli, db, c.json, r);
    int rc = cli_print_page(cli, "list-images", r, c.arr, &c.t, "no images (nothing processed yet)",
                            &c.page, "image with that ref");
    cli_bytes_note(cli, rc, c.why);
    return rc;
}
