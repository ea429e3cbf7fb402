/*
 * cmd_ls.c: `thinimg ls [REF] [--json]`: the images under a source location: families (folders
 * of N.tar layers, numeric order) with their layers, and every other object, with sizes and the
 * digests already known from the blobs table (same location, ETag and size).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_source.h"
#include "cli/table.h"
#include "source/ref.h"
#include "util/cleanup.h"
#include "util/timeutil.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg ls [REF] [--json] [--region R] [--endpoint URL] [--no-sign-request]\n"
            "\n"
            "List the images under a source location: families (folders of layers 1.tar, 2.tar,\n"
            "... in numeric order) and single objects, with sizes and the digests of blobs\n"
            "already fetched. REF is a location (s3://bucket/prefix/, dir:/path,\n"
            "https://host/path/object) or a key under the default source (--source or\n"
            "THINIMG_SOURCE); without REF, the default source is listed. A registry\n"
            "repository (docker://HOST/REPO) lists its tags with the digest each points at.\n"
            "\n"
            "Options:\n"
            "  --json              machine-readable output\n" CLI_SOURCE_HELP
            "  -h, --help          this help\n"
            "\n"
            "Examples:\n"
            "  thinimg ls s3://flyio-platform-hiring-challenge/images/\n"
            "  thinimg --source dir:/srv/bucket ls images/golang/\n"
            "  thinimg ls docker://127.0.0.1:5000/team/app --insecure-registry 127.0.0.1:5000\n");
}

static json_t *layer_json(const struct ref_layer *l, struct db *db)
{
    _cleanup_free_ char *digest = cli_known_digest(db, l->location, l->etag, l->size);
    json_t *o = json_pack("{s:s, s:s, s:I}", "key", l->key, "location", l->location, "size",
                          (json_int_t)l->size);
    if (l->n)
        json_object_set_new(o, "n", json_integer(l->n));
    json_object_set_new(o, "etag", l->etag ? json_string(l->etag) : json_null());
    json_object_set_new(o, "digest", digest ? json_string(digest) : json_null());
    return o;
}

static json_t *strv_json(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static void short_digest(const char *d, char *out, size_t n)
{
    if (!d)
        snprintf(out, n, "-");
    else
        snprintf(out, n, "%.19s", d); /* "sha256:" + 12 hex digits */
}

/* A registry's listing is its tags. The tag list gives names only; what each tag points at
 * (its manifest's digest) costs one manifest request per tag, so it is asked for the first
 * LS_TAG_DIGESTS_MAX tags only (a repository of thousands of tags lists in one request per
 * 1000 tags, not thousands). */
#define LS_TAG_DIGESTS_MAX 32

static int print_tags(struct source *s, const struct source_listing *l, bool json)
{
    json_t *tags = json_array();
    struct table t = TABLE_INIT;
    table_header(&t, "TAG", "DIGEST", "REF", NULL);
    size_t described = 0;
    for (size_t i = 0; i < l->n; i++) {
        const struct source_object *o = &l->items[i];
        _cleanup_free_ char *loc = source_location(s, o->key);
        _cleanup_free_ char *digest = o->digest ? strdup(o->digest) : NULL;
        if (!digest && described < LS_TAG_DIGESTS_MAX) {
            struct source_object m = {0};
            struct err e = {0};
            described++;
            if (source_stat(s, o->key, &m, &e) == 0)
                digest = TAKE_PTR(m.digest);
            else
                fprintf(stderr, "warning: %s\n", err_str(&e));
            source_object_free(&m);
        }
        json_t *j = json_pack("{s:s, s:s, s:s}", "name", source_key_name(s, o->key), "key", o->key,
                              "location", loc ? loc : "");
        json_object_set_new(j, "digest", digest ? json_string(digest) : json_null());
        json_array_append_new(tags, j);
        char dig[32];
        short_digest(digest, dig, sizeof(dig));
        table_row(&t, source_key_name(s, o->key), dig, loc ? loc : "", NULL);
    }
    if (json) {
        cli_print_json(json_pack("{s:s, s:o, s:o}", "source", source_root(s), "objects", tags,
                                 "warnings", strv_json(l->warnings, l->n_warnings)));
    } else {
        json_decref(tags);
        if (l->n == 0)
            fprintf(stderr, "thinimg: ls: %s has no tags\n", source_root(s));
        else
            table_print(&t, stdout);
        if (l->n > LS_TAG_DIGESTS_MAX)
            fprintf(stderr,
                    "note: digests shown for the first %d tags; `thinimg ls %sTAG` shows "
                    "another's\n",
                    LS_TAG_DIGESTS_MAX, source_root(s));
        for (size_t i = 0; i < l->n_warnings; i++)
            fprintf(stderr, "warning: %s\n", l->warnings[i]);
    }
    table_free(&t);
    return EXIT_OK;
}

static int print_catalog(const struct source *s, const struct ref_catalog *c,
                         const struct source_listing *l, struct db *db, bool json)
{
    if (json) {
        json_t *root = json_object();
        json_object_set_new(root, "source", json_string(source_root(s)));
        json_t *fams = json_array();
        for (size_t i = 0; i < c->n_families; i++) {
            const struct ref_family *f = &c->families[i];
            uint64_t total = 0;
            json_t *layers = json_array();
            for (size_t k = 0; k < f->n_layers; k++) {
                total += f->layers[k].size;
                json_array_append_new(layers, layer_json(&f->layers[k], db));
            }
            char image[256];
            snprintf(image, sizeof(image), "%s:%u", f->name, f->layers[f->n_layers - 1].n);
            _cleanup_free_ char *loc = source_location(s, f->prefix);
            json_array_append_new(fams, json_pack("{s:s, s:s, s:s, s:s, s:I, s:o, s:o}", "name",
                                                  f->name, "image", image, "prefix", f->prefix,
                                                  "location", loc ? loc : "", "size",
                                                  (json_int_t)total, "layers", layers, "warnings",
                                                  strv_json(f->warnings, f->n_warnings)));
        }
        json_object_set_new(root, "families", fams);
        json_t *objs = json_array();
        for (size_t i = 0; i < c->n_objects; i++)
            json_array_append_new(objs, layer_json(&c->objects[i], db));
        json_object_set_new(root, "objects", objs);
        json_object_set_new(root, "warnings",
                            l ? strv_json(l->warnings, l->n_warnings) : json_array());
        cli_print_json(root);
        return EXIT_OK;
    }

    struct table t = TABLE_INIT;
    table_header(&t, "IMAGE / LAYER", "SIZE", "DIGEST", "LOCATION", NULL);
    for (size_t i = 0; i < c->n_families; i++) {
        const struct ref_family *f = &c->families[i];
        uint64_t total = 0;
        for (size_t k = 0; k < f->n_layers; k++)
            total += f->layers[k].size;
        char image[256], size[32], what[64];
        snprintf(image, sizeof(image), "%s:%u", f->name, f->layers[f->n_layers - 1].n);
        format_bytes(total, size, sizeof(size));
        snprintf(what, sizeof(what), "%zu layer%s", f->n_layers, f->n_layers == 1 ? "" : "s");
        _cleanup_free_ char *loc = source_location(s, f->prefix);
        table_row(&t, image, size, what, loc ? loc : "", NULL);
        for (size_t k = 0; k < f->n_layers; k++) {
            const struct ref_layer *ly = &f->layers[k];
            _cleanup_free_ char *d = cli_known_digest(db, ly->location, ly->etag, ly->size);
            char name[64], dig[32];
            snprintf(name, sizeof(name), "  %u.tar", ly->n);
            format_bytes(ly->size, size, sizeof(size));
            short_digest(d, dig, sizeof(dig));
            table_row(&t, name, size, dig, ly->location, NULL);
        }
    }
    if (c->n_objects) {
        if (c->n_families)
            table_row(&t, "", "", "", "", NULL);
        table_row(&t, "(objects)", "", "", "", NULL);
    }
    for (size_t i = 0; i < c->n_objects; i++) {
        const struct ref_layer *o = &c->objects[i];
        _cleanup_free_ char *d = cli_known_digest(db, o->location, o->etag, o->size);
        char name[300], size[32], dig[32];
        snprintf(name, sizeof(name), "  %s", o->key);
        format_bytes(o->size, size, sizeof(size));
        short_digest(d, dig, sizeof(dig));
        table_row(&t, name, size, dig, o->location, NULL);
    }
    if (c->n_families == 0 && c->n_objects == 0)
        fprintf(stderr, "thinimg: ls: nothing under %s\n", source_root(s));
    else
        table_print(&t, stdout);
    table_free(&t);
    for (size_t i = 0; i < c->n_families; i++)
        for (size_t k = 0; k < c->families[i].n_warnings; k++)
            fprintf(stderr, "warning: %s\n", c->families[i].warnings[k]);
    for (size_t i = 0; l && i < l->n_warnings; i++)
        fprintf(stderr, "warning: %s\n", l->warnings[i]);
    return EXIT_OK;
}

int cmd_ls(struct cli *cli, int argc, char **argv)
{
    bool json = false;
    struct source_options so = {0};
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         CLI_SOURCE_LONG_OPTIONS,
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int rc = cli_common_option("ls", c, usage, &json, &so);
        if (rc != CLI_OPTION_TAKEN)
            return rc;
    }
    int operands_rc = cli_check_operands("ls", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    const char *ref = optind < argc ? argv[optind] : NULL;
    if (!ref && !cli->cfg.source)
        return cli_usage_error("ls", "name a REF (s3://bucket/prefix/, dir:/path, ...) or set a "
                                     "default source with --source or THINIMG_SOURCE");

    struct err e = {0};
    _cleanup_source_ struct source *s = NULL;
    _cleanup_free_ char *key = NULL;
    int r = ref ? ref_open(ref, cli->cfg.source, &so, &s, &key, &e)
                : source_open(cli->cfg.source, &so, &s, &key, &e);
    if (r < 0)
        return cli_fail("ls", r, &e);

    /* Known digests come from the database when there is one; listing works without. */
    _cleanup_db_ struct db *db = NULL;
    struct err dbe = {0};
    if (cli_open_db(cli, true, &db, &dbe) < 0)
        db = NULL;

    struct ref_catalog cat = {0};
    struct source_listing l = {0};
    size_t kl = strlen(key);
    bool prefix = kl == 0 || key[kl - 1] == '/';
    if (!prefix) {
        /* An object: show it alone; a name without '/' that is a folder: list it. */
        struct source_object o = {0};
        r = source_stat(s, key, &o, &e);
        if (r == 0 && source_kind(s) == SOURCE_REGISTRY && !strncmp(key, "manifests/", 10)) {
            struct source_listing one = {.items = &o, .n = 1};
            int rc = print_tags(s, &one, json);
            source_object_free(&o);
            return rc;
        }
        if (r == 0) {
            cat.objects = calloc(1, sizeof(*cat.objects));
            if (!cat.objects)
                return cli_fail("ls", -ENOMEM, NULL);
            cat.n_objects = 1;
            cat.objects[0] = (struct ref_layer){.key = strdup(o.key),
                                                .location = source_location(s, o.key),
                                                .size = o.size,
                                                .etag = o.etag ? strdup(o.etag) : NULL};
            source_object_free(&o);
            int rc = print_catalog(s, &cat, NULL, db, json);
            ref_catalog_free(&cat);
            return rc;
        }
        if ((r != -ENOENT && r != -EISDIR) || !source_can_list(s))
            return cli_fail("ls", r, &e);
        err_clear(&e);
    }
    if (source_kind(s) == SOURCE_REGISTRY) {
        r = source_list(s, key, &l, &e);
        int rc = r < 0 ? cli_fail("ls", r, &e) : print_tags(s, &l, json);
        source_listing_free(&l);
        return rc;
    }
    r = ref_catalog_list(s, &key, &l, &cat, &e);
    if (r < 0) {
        source_listing_free(&l);
        return cli_fail("ls", r, &e);
    }
    if (cat.n_families == 0 && cat.n_objects == 0 && key[0]) {
        /* A prefix that holds nothing is a family or folder that does not exist: not found, as
         * fetch says, with the whole location (not the source's root). */
        _cleanup_free_ char *loc = source_location(s, key);
        ref_catalog_free(&cat);
        source_listing_free(&l);
        return cli_failf("ls", EXIT_NOTFOUND,
                         "nothing under %s; `thinimg ls %s` shows what is there", loc ? loc : key,
                         source_root(s));
    }
    int rc = print_catalog(s, &cat, &l, db, json);
    ref_catalog_free(&cat);
    source_listing_free(&l);
    return rc;
}
