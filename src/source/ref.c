/*
 * ref.c: resolving image references into ordered layer locations, and grouping a listing
 * into families for `thinimg ls`. See ref.h for the rules.
 */
#include "source/ref.h"

#include <errno.h>
#include <search.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/registry.h"
#include "util/buf.h"
#include "util/cleanup.h"

const char *ref_kind_name(enum ref_kind k)
{
    switch (k) {
    case REF_FAMILY:
        return "family";
    case REF_FAMILY_KEY:
        return "family-key";
    case REF_BLOB:
        return "blob";
    case REF_REGISTRY:
        return "registry";
    }
    return "unknown";
}

int ref_layer_number(const char *b, unsigned *n)
{
    size_t len = strlen(b);
    if (len < 5 || strcmp(b + len - 4, ".tar") != 0)
        return -EINVAL;
    size_t digits = len - 4;
    for (size_t i = 0; i < digits; i++)
        if (b[i] < '0' || b[i] > '9')
            return -EINVAL;
    if (b[0] == '0')
        return -EDOM;
    if (digits > 9)
        return -ERANGE;
    unsigned long v = strtoul(b, NULL, 10);
    if (v < 1 || v > REF_LAYER_NUMBER_MAX)
        return -ERANGE;
    *n = (unsigned)v;
    return 0;
}

/* An image deeper than the limit is refused whole: a family cut to its first layers would be
 * a different image under the same name. */
static int too_deep(struct err *e, const char *what, unsigned top, unsigned max)
{
    return err_set(e, -EFBIG,
                   "%s has %u layers, more than the limit of %u; raise it with "
                   "THINIMG_SOURCE_MAX_LAYERS=N (at most %u)",
                   what, top, max, SOURCE_MAX_LAYERS_CEILING);
}

static void layer_free(struct ref_layer *l)
{
    free(l->key);
    free(l->location);
    free(l->etag);
    free(l->digest);
    free(l->media_type);
    *l = (struct ref_layer){0};
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int strv_addf(char ***v, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int strv_addf(char ***v, size_t *n, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int k = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (k < 0)
        return -ENOMEM;
    char **p = realloc(*v, (*n + 1) * sizeof(*p));
    if (!p) {
        free(s);
        return -ENOMEM;
    }
    *v = p;
    p[(*n)++] = s;
    return 0;
}

void image_ref_free(struct image_ref *r)
{
    if (!r)
        return;
    free(r->canonical);
    free(r->name);
    free(r->source);
    free(r->family_prefix);
    for (size_t i = 0; i < r->n_layers; i++)
        layer_free(&r->layers[i]);
    free(r->layers);
    strv_free(r->warnings, r->n_warnings);
    free(r->manifest_digest);
    free(r->platform);
    free(r->config_digest);
    strv_free(r->diff_ids, r->n_diff_ids);
    free(r->manifest_media_type);
    free(r->manifest);
    free(r->config);
    free(r->run_config);
    *r = (struct image_ref){0};
}

static int layer_from(const struct source *s, const struct source_object *o, unsigned n,
                      struct ref_layer *out)
{
    *out = (struct ref_layer){.n = n, .size = o->size};
    out->key = strdup(o->key);
    out->location = source_location(s, o->key);
    out->etag = o->etag ? strdup(o->etag) : NULL;
    if (!out->key || !out->location || (o->etag && !out->etag)) {
        layer_free(out);
        return -ENOMEM;
    }
    return 0;
}

static const char *base_name(const char *key)
{
    const char *s = strrchr(key, '/');
    return s ? s + 1 : key;
}

/* The family name of a prefix: its last segment, or the source's last segment for "". */
static char *family_name(const struct source *s, const char *prefix)
{
    const char *src = prefix;
    size_t len = strlen(prefix);
    if (len == 0) {
        src = source_root(s);
        len = strlen(src);
    }
    while (len && src[len - 1] == '/')
        len--;
    size_t start = len;
    while (start && src[start - 1] != '/' && src[start - 1] != ':')
        start--;
    if (len == start)
        return strdup("image");
    return strndup(src + start, len - start);
}

int ref_open(const char *ref, const char *default_source, const struct source_options *o,
             struct source **src, char **key, struct err *e)
{
    if (!ref || !*ref)
        return err_set(e, -EINVAL, "empty REF");
    if (source_is_location(ref))
        return source_open(ref, o, src, key, e);
    if (!default_source || !*default_source)
        return err_set(
            e, -EINVAL,
            "'%.200s' is not a full location (s3://, dir:, http(s)://, docker://) and no "
            "default source is set; use --source or THINIMG_SOURCE",
            ref);
    int r = source_key_check(ref, true, e);
    if (r < 0)
        return err_prefix(e, "REF");
    _cleanup_free_ char *base = NULL;
    struct source *s = NULL;
    r = source_open(default_source, o, &s, &base, e);
    if (r < 0)
        return err_prefix(e, "default source");
    size_t bl = strlen(base);
    char *k = NULL;
    if (asprintf(&k, "%s%s%s", base, bl && base[bl - 1] != '/' ? "/" : "", ref) < 0) {
        source_free(s);
        return -ENOMEM;
    }
    if ((r = source_key_check(k, true, e)) < 0) {
        free(k);
        source_free(s);
        return r;
    }
    *src = s;
    *key = k;
    return 0;
}

/* ---- catalog ----------------------------------------------------------------------------- */

static int layer_cmp(const void *a, const void *b)
{
    const struct ref_layer *x = a, *y = b;
    return x->n < y->n ? -1 : x->n > y->n;
}

static void family_free(struct ref_family *f)
{
    free(f->prefix);
    free(f->name);
    for (size_t i = 0; i < f->n_layers; i++)
        layer_free(&f->layers[i]);
    free(f->layers);
    strv_free(f->warnings, f->n_warnings);
    *f = (struct ref_family){0};
}

void ref_catalog_free(struct ref_catalog *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_families; i++)
        family_free(&c->families[i]);
    free(c->families);
    for (size_t i = 0; i < c->n_objects; i++)
        layer_free(&c->objects[i]);
    free(c->objects);
    *c = (struct ref_catalog){0};
}

/* Families by prefix while a listing is grouped: glibc's hash table (hsearch_r) maps a prefix
 * to its index in c->families, so grouping N keys into F families costs O(N), not O(N x F). */
struct family_index {
    struct hsearch_data h;
    bool ready;
};

static void family_index_free(struct family_index *x)
{
    if (x->ready)
        hdestroy_r(&x->h);
}

/* The family whose prefix is prefix[0..plen), or NULL. *slot is set for family_add. */
static struct ref_family *family_find(struct ref_catalog *c, struct family_index *x,
                                      const char *prefix, size_t plen)
{
    char k[SOURCE_KEY_MAX + 1];
    if (plen > SOURCE_KEY_MAX) /* a source never lists such a key; no family has it */
        return NULL;
    memcpy(k, prefix, plen);
    k[plen] = '\0';
    ENTRY *hit = NULL;
    if (!hsearch_r((ENTRY){.key = k}, FIND, &hit, &x->h) || !hit)
        return NULL;
    return &c->families[(uintptr_t)hit->data];
}

static struct ref_family *family_get(struct ref_catalog *c, struct family_index *x,
                                     const char *prefix, size_t plen, const struct source *s)
{
    struct ref_family *found = family_find(c, x, prefix, plen);
    if (found || plen > SOURCE_KEY_MAX)
        return found;
    struct ref_family *p = realloc(c->families, (c->n_families + 1) * sizeof(*p));
    if (!p)
        return NULL;
    c->families = p;
    struct ref_family *f = &p[c->n_families];
    *f = (struct ref_family){0};
    f->prefix = strndup(prefix, plen);
    f->name = f->prefix ? family_name(s, f->prefix) : NULL;
    ENTRY *slot = NULL;
    if (!f->prefix || !f->name ||
        !hsearch_r((ENTRY){.key = f->prefix, .data = (void *)(uintptr_t)c->n_families}, ENTER,
                   &slot, &x->h)) {
        family_free(f);
        return NULL;
    }
    c->n_families++;
    return f;
}

static int add_layer(struct ref_layer **v, size_t *n, const struct source *s,
                     const struct source_object *o, unsigned num)
{
    /* Geometric growth without a capacity field: the array is reallocated when its length
     * reaches a power of two (a listing of 100,000 objects costs 17 reallocations, not
     * 100,000 copies). */
    struct ref_layer *p = *v;
    if (*n == 0 || (*n & (*n - 1)) == 0) {
        p = realloc(*v, (*n ? *n * 2 : 1) * sizeof(*p));
        if (!p)
            return -ENOMEM;
        *v = p;
    }
    int r = layer_from(s, o, num, &p[*n]);
    if (r == 0)
        (*n)++;
    return r;
}

/* Warnings of a family: gaps, and how many names that are not layers went unnamed (a folder
 * of 100,000 such names makes 4 lines, not 100,000). */
static int family_finish(struct ref_family *f)
{
    if (f->n_not_layers > SOURCE_LIST_SKIP_EXAMPLES &&
        strv_addf(&f->warnings, &f->n_warnings,
                  "%s: and %zu more names that are not layer "
                  "names; not part of the image",
                  f->name, f->n_not_layers - SOURCE_LIST_SKIP_EXAMPLES) < 0)
        return -ENOMEM;
    qsort(f->layers, f->n_layers, sizeof(f->layers[0]), layer_cmp);
    unsigned expect = 1;
    for (size_t i = 0; i < f->n_layers; i++) {
        unsigned n = f->layers[i].n;
        if (n > expect) {
            int r = n - 1 == expect ? strv_addf(&f->warnings, &f->n_warnings,
                                                "%s: gap: %u.tar is missing", f->name, expect)
                                    : strv_addf(&f->warnings, &f->n_warnings,
                                                "%s: gap: %u.tar to %u.tar are missing", f->name,
                                                expect, n - 1);
            if (r < 0)
                return r;
        }
        expect = n + 1;
    }
    unsigned max = source_max_layers();
    if (f->n_layers > 0 && f->layers[f->n_layers - 1].n > max)
        return strv_addf(&f->warnings, &f->n_warnings,
                         "%s: %u layers, more than the limit of %u; fetching it is refused "
                         "(THINIMG_SOURCE_MAX_LAYERS raises the limit)",
                         f->name, f->layers[f->n_layers - 1].n, max);
    return 0;
}

int ref_catalog_build(const struct source *s, const struct source_listing *l,
                      struct ref_catalog *out)
{
    *out = (struct ref_catalog){0};
    struct family_index x = {0};
    /* A family per key at most; the table never fills (hsearch_r cannot grow). */
    if (!hcreate_r(l->n + 1, &x.h))
        return -ENOMEM;
    x.ready = true;
    int r = 0;
    /* Pass 1: families are the folders that hold at least one N.tar. */
    /* A registry's tags are images of their own, never N.tar layers ("3.tar" is a valid tag). */
    bool families = source_kind(s) != SOURCE_REGISTRY;
    for (size_t i = 0; i < l->n && r == 0 && families; i++) {
        const char *key = l->items[i].key;
        const char *b = base_name(key);
        unsigned n;
        if (ref_layer_number(b, &n) == 0) {
            struct ref_family *f = family_get(out, &x, key, (size_t)(b - key), s);
            r = f ? add_layer(&f->layers, &f->n_layers, s, &l->items[i], n) : -ENOMEM;
        }
    }
    /* Pass 2: everything else is an object; in a family folder it is also a warning. */
    for (size_t i = 0; i < l->n && r == 0; i++) {
        const char *key = l->items[i].key;
        const char *b = base_name(key);
        unsigned n;
        int k = families ? ref_layer_number(b, &n) : -EINVAL;
        if (k == 0)
            continue;
        struct ref_family *f = family_find(out, &x, key, (size_t)(b - key));
        if (f && f->n_not_layers++ < SOURCE_LIST_SKIP_EXAMPLES)
            r = strv_addf(&f->warnings, &f->n_warnings,
                          "%s: '%s' is not a layer name "
                          "(N.tar%s); not part of the image",
                          f->name, b,
                          k == -EDOM     ? ", no leading zeros"
                          : k == -ERANGE ? ", N too large"
                                         : "");
        if (r == 0)
            r = add_layer(&out->objects, &out->n_objects, s, &l->items[i], 0);
    }
    family_index_free(&x);
    for (size_t j = 0; j < out->n_families && r == 0; j++)
        r = family_finish(&out->families[j]);
    if (r < 0)
        ref_catalog_free(out);
    return r;
}

/* ---- resolution -------------------------------------------------------------------------- */

static int take_warnings(struct image_ref *out, char ***w, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        char **p = realloc(out->warnings, (out->n_warnings + 1) * sizeof(*p));
        if (!p)
            return -ENOMEM;
        out->warnings = p;
        p[out->n_warnings++] = (*w)[i];
        (*w)[i] = NULL;
    }
    return 0;
}

static int set_family_identity(struct image_ref *out, const struct source *s, const char *prefix)
{
    const struct ref_layer *top = &out->layers[out->n_layers - 1];
    _cleanup_free_ char *fam = family_name(s, prefix);
    out->family_prefix = strdup(prefix);
    out->canonical = strdup(top->location);
    if (!fam || !out->family_prefix || !out->canonical ||
        asprintf(&out->name, "%s:%u", fam, top->n) < 0)
        return -ENOMEM;
    return 0;
}

static int resolve_prefix(struct source *s, const char *prefix, struct image_ref *out,
                          struct err *e)
{
    _cleanup_free_ char *where = source_location(s, prefix);
    if (!where)
        return -ENOMEM;
    if (!source_can_list(s))
        return err_set(e, -ENOTSUP,
                       "%s: a prefix cannot be listed over plain HTTP; name the top "
                       "layer instead (e.g. %sN.tar)",
                       where, where);
    struct source_listing l = {0};
    int r = source_list(s, prefix, &l, e);
    if (r < 0)
        return r;
    struct ref_catalog c = {0};
    r = ref_catalog_build(s, &l, &c);
    if (r == 0)
        r = take_warnings(out, &l.warnings, &l.n_warnings);
    source_listing_free(&l);
    if (r < 0)
        return r;
    struct ref_family *f = NULL;
    for (size_t i = 0; i < c.n_families; i++)
        if (!strcmp(c.families[i].prefix, prefix))
            f = &c.families[i];
    if (!f) {
        if (c.n_families > 0) {
            _cleanup_buf_ struct buf names = BUF_INIT;
            for (size_t i = 0; i < c.n_families && i < 8; i++)
                buf_printf(&names, "%s%s", i ? ", " : "", c.families[i].prefix + strlen(prefix));
            r = err_set(e, -EISDIR, "%s holds %zu images (%s%s); name one of them", where,
                        c.n_families, names.data ? names.data : "",
                        c.n_families > 8 ? ", ..." : "");
        } else if (c.n_objects > 0) {
            r = err_set(e, -ENOENT,
                        "%s: no layers named N.tar here (%zu other object%s; name "
                        "one to fetch it as a single blob)",
                        where, c.n_objects, c.n_objects == 1 ? "" : "s");
        } else {
            r = err_set(e, -ENOENT, "%s: nothing there", where);
        }
        ref_catalog_free(&c);
        return r;
    }
    out->kind = REF_FAMILY;
    out->layers = TAKE_PTR(f->layers);
    out->n_layers = f->n_layers;
    f->n_layers = 0;
    r = take_warnings(out, &f->warnings, &f->n_warnings);
    if (r == 0)
        r = set_family_identity(out, s, prefix);
    ref_catalog_free(&c);
    return r;
}

static int resolve_family_key(struct source *s, const char *key, unsigned top,
                              struct image_ref *out, struct err *e)
{
    const char *b = base_name(key);
    _cleanup_free_ char *prefix = strndup(key, (size_t)(b - key));
    if (!prefix)
        return -ENOMEM;
    if (top > source_max_layers()) {
        _cleanup_free_ char *where = source_location(s, key);
        return too_deep(e, where ? where : key, top, source_max_layers());
    }
    out->layers = calloc(top, sizeof(*out->layers));
    if (!out->layers)
        return -ENOMEM;
    int r = 0;
    _cleanup_buf_ struct buf missing = BUF_INIT;
    size_t n_missing = 0;
    if (source_can_list(s)) {
        struct source_listing l = {0};
        r = source_list(s, prefix, &l, e);
        if (r < 0)
            return r;
        for (size_t i = 0; i < l.n && r == 0; i++) {
            const char *kb = base_name(l.items[i].key);
            unsigned n;
            if ((size_t)(kb - l.items[i].key) != strlen(prefix) || ref_layer_number(kb, &n) < 0 ||
                n > top)
                continue;
            r = layer_from(s, &l.items[i], n, &out->layers[n - 1]);
        }
        if (r == 0) /* skipped keys (a layer that is a FIFO...) say why a layer is missing */
            r = take_warnings(out, &l.warnings, &l.n_warnings);
        source_listing_free(&l);
    } else {
        for (unsigned n = 1; n <= top && r == 0; n++) {
            _cleanup_free_ char *k = NULL;
            if (asprintf(&k, "%s%u.tar", prefix, n) < 0)
                return -ENOMEM;
            struct source_object o = {0};
            struct err se = {0};
            r = source_stat(s, k, &o, &se);
            if (r == -ENOENT) {
                r = 0;
                continue;
            }
            if (r < 0) {
                err_set(e, r, "%s", se.msg);
                break;
            }
            r = layer_from(s, &o, n, &out->layers[n - 1]);
            source_object_free(&o);
        }
    }
    out->n_layers = top;
    if (r < 0)
        return r;
    for (unsigned n = 1; n <= top; n++)
        if (!out->layers[n - 1].key && n_missing++ < 10)
            buf_printf(&missing, "%s%u.tar", n_missing > 1 ? ", " : "", n);
    if (n_missing) {
        _cleanup_free_ char *where = source_location(s, prefix);
        return err_set(e, -ENOENT, "%s%s needs layers 1..%u, but %zu %s missing: %s%s",
                       where ? where : "", b, top, n_missing, n_missing == 1 ? "is" : "are",
                       missing.data, n_missing > 10 ? ", ..." : "");
    }
    out->kind = REF_FAMILY_KEY;
    return set_family_identity(out, s, prefix);
}

static char *blob_name(const char *key)
{
    const char *b = base_name(key);
    static const char *const exts[] = {".tar.gz", ".tar.zst", ".tgz", ".tar", ".oci", NULL};
    size_t n = strlen(b);
    for (int i = 0; exts[i]; i++) {
        size_t el = strlen(exts[i]);
        if (n > el && !strcmp(b + n - el, exts[i])) {
            n -= el;
            break;
        }
    }
    return strndup(b, n);
}

int ref_resolve(const char *ref, const char *default_source, const struct source_options *o,
                struct image_ref *out, struct err *e)
{
    *out = (struct image_ref){0};
    _cleanup_source_ struct source *s = NULL;
    _cleanup_free_ char *key = NULL;
    int r = ref_open(ref, default_source, o, &s, &key, e);
    if (r < 0)
        return r;
    out->source = strdup(source_root(s));
    if (!out->source)
        return -ENOMEM;
    size_t kl = strlen(key);
    if (source_kind(s) == SOURCE_REGISTRY) {
        r = registry_resolve(s, key, out, e);
    } else if (kl == 0 || key[kl - 1] == '/') {
        r = resolve_prefix(s, key, out, e);
    } else {
        unsigned top;
        if (ref_layer_number(base_name(key), &top) == 0) {
            r = resolve_family_key(s, key, top, out, e);
        } else {
            struct source_object obj = {0};
            struct err se = {0};
            r = source_stat(s, key, &obj, &se);
            if (r == 0) {
                out->kind = REF_BLOB;
                out->layers = calloc(1, sizeof(*out->layers));
                out->n_layers = out->layers ? 1 : 0;
                r = out->layers ? layer_from(s, &obj, 0, &out->layers[0]) : -ENOMEM;
                if (r == 0) {
                    out->canonical = strdup(out->layers[0].location);
                    out->name = blob_name(key);
                    if (!out->canonical || !out->name)
                        r = -ENOMEM;
                }
                source_object_free(&obj);
            } else if ((r == -ENOENT || r == -EISDIR) && source_can_list(s)) {
                /* Not an object: maybe a prefix without its trailing '/'. */
                _cleanup_free_ char *pfx = NULL;
                if (asprintf(&pfx, "%s/", key) < 0)
                    return -ENOMEM;
                struct source_listing l = {0};
                struct err le = {0};
                int lr = source_list(s, pfx, &l, &le);
                bool any = lr == 0 && l.n > 0;
                source_listing_free(&l);
                if (any)
                    r = resolve_prefix(s, pfx, out, e);
                else
                    r = err_set(e, -ENOENT, "%s", se.msg);
            } else {
                err_set(e, r, "%s", se.msg);
            }
        }
    }
    if (r == 0 && out->n_layers > 0 && out->layers[out->n_layers - 1].n > source_max_layers())
        r = too_deep(e, out->canonical, out->layers[out->n_layers - 1].n, source_max_layers());
    if (r < 0)
        image_ref_free(out);
    return r;
}

int ref_catalog_list(struct source *s, char **key, struct source_listing *l,
                     struct ref_catalog *cat, struct err *e)
{
    size_t kl = strlen(*key);
    if (kl && (*key)[kl - 1] != '/') {
        char *k2 = NULL;
        if (asprintf(&k2, "%s/", *key) < 0)
            return err_set(e, -ENOMEM, "out of memory");
        free(*key);
        *key = k2;
    }
    int r = source_list(s, *key, l, e);
    if (r == 0)
        r = ref_catalog_build(s, l, cat);
    return r;
}
