/*
 * registry_manifest.c: what the docker:// source parses (registry.h): references (with Docker
 * Hub's normalisation), platforms, image manifests and indexes, and the config's diff ids.
 * Everything here takes untrusted bytes and refuses what is malformed or over a limit with the
 * reason; nothing here talks to the network.
 */
#include "source/registry.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "util/buf.h"
#include "util/cleanup.h"
#include "util/hash.h"

/* ---- references --------------------------------------------------------------------------- */

void registry_name_free(struct registry_name *n)
{
    if (!n)
        return;
    free(n->host);
    free(n->api_host);
    free(n->repo);
    free(n->tag);
    free(n->digest);
    *n = (struct registry_name){0};
}

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* One path component: [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)* */
static bool repo_component_ok(const char *s, size_t n)
{
    if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (is_lower_alnum(c) || c == '-')
            continue;
        if (c == '.' && is_lower_alnum(s[i + 1]))
            continue;
        if (c == '_' &&
            (is_lower_alnum(s[i + 1]) || (s[i + 1] == '_' && is_lower_alnum(s[i + 2])))) {
            i += s[i + 1] == '_';
            continue;
        }
        return false;
    }
    return true;
}

static bool repo_ok(const char *repo)
{
    size_t n = strlen(repo);
    if (n == 0 || n > REGISTRY_REPO_MAX)
        return false;
    for (const char *p = repo;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (!repo_component_ok(p, len))
            return false;
        if (!slash)
            return true;
        p = slash + 1;
    }
}

bool registry_tag_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > REGISTRY_TAG_MAX || !(isalnum((unsigned char)t[0]) || t[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)t[i]) || t[i] == '_' || t[i] == '.' || t[i] == '-'))
            return false;
    return true;
}

static bool host_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > REGISTRY_HOST_MAX)
        return false;
    const char *colon = strrchr(h, ':');
    size_t hl = colon ? (size_t)(colon - h) : n;
    if (hl == 0)
        return false;
    for (size_t i = 0; i < hl; i++)
        if (!(isalnum((unsigned char)h[i]) || h[i] == '.' || h[i] == '-'))
            return false;
    if (colon) {
        char *end = NULL;
        unsigned long port = strtoul(colon + 1, &end, 10);
        if (!colon[1] || *end || port < 1 || port > 65535 || colon[1] == '0')
            return false;
    }
    return true;
}

/* Is the first segment a host? (docker's rule: a '.', a ':', or "localhost") */
static bool looks_like_host(const char *seg, size_t n)
{
    return memchr(seg, '.', n) || memchr(seg, ':', n) || (n == 9 && !strncmp(seg, "localhost", 9));
}

int registry_name_parse(const char *rest, struct registry_name *out, struct err *e)
{
    *out = (struct registry_name){0};
    /* USER:PASSWORD@HOST: refused before anything echoes the reference (it holds a secret).
     * An '@' before the first '/' is that, unless a digest follows ("alpine@sha256:..."). */
    const char *userinfo = strchr(rest, '@');
    const char *first_slash = strchr(rest, '/');
    if (userinfo && (!first_slash || userinfo < first_slash) &&
        strncmp(userinfo + 1, DIGEST_PREFIX, strlen(DIGEST_PREFIX)))
        return err_set(e, -EINVAL,
                       "docker://: credentials do not go in the reference (the part before "
                       "'@' is not shown); set THINIMG_REGISTRY_AUTH=USER:PASSWORD or use "
                       "docker login");
    for (const unsigned char *p = (const unsigned char *)rest; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return err_set(e, -EINVAL, "docker://%.200s: a space, control or non-ASCII character",
                           rest);
    if (strchr(rest, '?') || strchr(rest, '#'))
        return err_set(e, -EINVAL, "docker://%.200s: no query or fragment in a reference", rest);
    const char *slash = strchr(rest, '/');
    const char *path = rest;
    /* "docker://127.0.0.1:5000" reads as Docker Hub's repository "127.0.0.1" with tag "5000"
     * (docker's grammar); what was meant is a registry without a repository. */
    const char *port = strchr(rest, ':');
    if (!slash && port && looks_like_host(rest, (size_t)(port - rest)) &&
        strspn(port + 1, "0123456789") == strlen(port + 1))
        return err_set(e, -EINVAL,
                       "docker://%.200s names a registry, not a repository: name one "
                       "(docker://%.200s/REPO); listing a registry's repositories is not "
                       "supported",
                       rest, rest);
    if (slash && looks_like_host(rest, (size_t)(slash - rest))) {
        out->host = strndup(rest, (size_t)(slash - rest));
        path = slash + 1;
    } else {
        out->host = strdup(REGISTRY_DOCKER_HUB);
    }
    if (!out->host)
        return -ENOMEM;
    if (!host_ok(out->host))
        return err_set(e, -EINVAL, "docker://%.200s: '%.100s' is not a HOST[:PORT]", rest,
                       out->host);
    out->api_host =
        strdup(!strcmp(out->host, REGISTRY_DOCKER_HUB) ? REGISTRY_DOCKER_HUB_API : out->host);
    if (!out->api_host)
        return -ENOMEM;

    _cleanup_free_ char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    /* .../blobs/sha256:HEX names a blob. */
    const char *b = strstr(p, "/blobs/");
    if (b && digest_valid(b + 7)) {
        out->blob = true;
        out->digest = strdup(b + 7);
        p[b - p] = '\0';
    } else {
        char *at = strchr(p, '@');
        if (at) {
            *at = '\0';
            if (!digest_valid(at + 1))
                return err_set(e, -EINVAL,
                               "docker://%.200s: the digest must be sha256:<64 lower-case hex>",
                               rest);
            out->digest = strdup(at + 1);
        }
        char *last = strrchr(p, '/');
        char *colon = strchr(last ? last : p, ':');
        if (colon) {
            *colon = '\0';
            if (!registry_tag_ok(colon + 1))
                return err_set(e, -EINVAL,
                               "docker://%.200s: '%.140s' is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-]"
                               ", at most %d characters)",
                               rest, colon + 1, REGISTRY_TAG_MAX);
            out->tag = strdup(colon + 1);
        }
    }
    if ((out->blob || strchr(path, '@')) && !out->digest)
        return -ENOMEM;
    /* Docker Hub's official images live under library/. */
    if (!strcmp(out->host, REGISTRY_DOCKER_HUB) && *p && !strchr(p, '/')) {
        if (asprintf(&out->repo, "library/%s", p) < 0)
            out->repo = NULL;
    } else {
        out->repo = strdup(p);
    }
    if (!out->repo || (strchr(path, ':') && !out->tag && !out->digest))
        return out->repo ? err_set(e, -EINVAL, "docker://%.200s: not a reference", rest) : -ENOMEM;
    if (!repo_ok(out->repo))
        return err_set(e, -EINVAL,
                       "docker://%.200s: '%.100s' is not a repository name (lower-case "
                       "components [a-z0-9] joined by '.', '_', '__' or '-', separated by '/', "
                       "at most %d characters)",
                       rest, out->repo, REGISTRY_REPO_MAX);
    return 0;
}

/* ---- platforms ---------------------------------------------------------------------------- */

static bool platform_part_ok(const char *s, size_t n)
{
    if (n == 0 || n >= REGISTRY_PLATFORM_PART_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

int registry_platform_parse(const char *s, struct registry_platform *out, struct err *e)
{
    *out = (struct registry_platform){0};
    char *parts[] = {out->os, out->arch, out->variant};
    const char *p = s;
    size_t i = 0;
    for (; i < ARRAY_SIZE(parts); i++) {
        size_t n = strcspn(p, "/");
        if (!platform_part_ok(p, n))
            break;
        memcpy(parts[i], p, n);
        p += n;
        if (!*p) {
            i++;
            break;
        }
        p++;
    }
    size_t n = strlen(s);
    if (i < 2 || *p || (n && s[n - 1] == '/'))
        return err_set(e, -EINVAL,
                       "platform '%.64s' is not OS/ARCH[/VARIANT] (e.g. linux/amd64, "
                       "linux/arm64, linux/arm/v7)",
                       s);
    return 0;
}

void registry_platform_host(struct registry_platform *out)
{
    static const struct {
        const char *machine, *arch, *variant;
    } map[] = {{"x86_64", "amd64", ""},   {"aarch64", "arm64", ""},   {"arm64", "arm64", ""},
               {"armv7l", "arm", "v7"},   {"armv6l", "arm", "v6"},    {"i686", "386", ""},
               {"i386", "386", ""},       {"ppc64le", "ppc64le", ""}, {"s390x", "s390x", ""},
               {"riscv64", "riscv64", ""}};
    *out = (struct registry_platform){.os = "linux"};
    struct utsname u;
    const char *m = uname(&u) == 0 ? u.machine : "x86_64";
    for (size_t i = 0; i < ARRAY_SIZE(map); i++)
        if (!strcmp(m, map[i].machine)) {
            snprintf(out->arch, sizeof(out->arch), "%s", map[i].arch);
            snprintf(out->variant, sizeof(out->variant), "%s", map[i].variant);
            return;
        }
    snprintf(out->arch, sizeof(out->arch), "%.31s", m);
}

void registry_platform_format(const struct registry_platform *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s%s%s", p->os, p->arch, p->variant[0] ? "/" : "", p->variant);
}

/* The variant an image built for arch has when it names none. */
static const char *default_variant(const char *arch)
{
    return !strcmp(arch, "arm64") ? "v8" : !strcmp(arch, "arm") ? "v7" : "";
}

static bool variant_eq(const char *arch, const char *a, const char *b)
{
    const char *d = default_variant(arch);
    return !strcmp(*a ? a : d, *b ? b : d);
}

/* ---- manifests ---------------------------------------------------------------------------- */

static bool is_manifest_type(const char *mt)
{
    return !strcmp(mt, MT_OCI_MANIFEST) || !strcmp(mt, MT_DOCKER_MANIFEST);
}

static bool is_index_type(const char *mt)
{
    return !strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST);
}

static bool is_schema1_type(const char *mt)
{
    return !strcmp(mt, MT_DOCKER_SCHEMA1) || !strcmp(mt, MT_DOCKER_SCHEMA1S);
}

/* Layer media types we can unpack; *foreign for the foreign / non-distributable ones. */
static bool layer_type_ok(const char *mt, bool *foreign)
{
    static const char *const plain[] = {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    };
    static const char *const foreign_types[] = {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    };
    *foreign = false;
    for (size_t i = 0; i < ARRAY_SIZE(plain); i++)
        if (!strcmp(mt, plain[i]))
            return true;
    for (size_t i = 0; i < ARRAY_SIZE(foreign_types); i++)
        if (!strcmp(mt, foreign_types[i]))
            return *foreign = true;
    return false;
}

static bool config_type_ok(const char *mt)
{
    return !strcmp(mt, "application/vnd.oci.image.config.v1+json") ||
           !strcmp(mt, "application/vnd.docker.container.image.v1+json");
}

static void descriptor_free(struct registry_descriptor *d)
{
    free(d->media_type);
    free(d->digest);
    *d = (struct registry_descriptor){0};
}

void registry_manifest_free(struct registry_manifest *m)
{
    if (!m)
        return;
    free(m->media_type);
    descriptor_free(&m->config);
    for (size_t i = 0; i < m->n_entries; i++)
        descriptor_free(&m->entries[i]);
    free(m->entries);
    *m = (struct registry_manifest){0};
}

static int descriptor_parse(json_t *j, const char *what, size_t i, struct registry_descriptor *d,
                            struct err *e)
{
    const char *mt = json_string_value(json_object_get(j, "mediaType"));
    const char *dg = json_string_value(json_object_get(j, "digest"));
    json_t *sz = json_object_get(j, "size");
    if (!json_is_object(j) || !mt || !dg || !json_is_integer(sz))
        return err_set(e, -EBADMSG, "%s %zu lacks mediaType, digest or size", what, i);
    if (!digest_valid(dg))
        return err_set(e, -EBADMSG, "%s %zu: digest '%.80s' is not sha256:<64 lower-case hex>",
                       what, i, dg);
    json_int_t size = json_integer_value(sz);
    if (size < 0)
        return err_set(e, -EBADMSG, "%s %zu: negative size", what, i);
    if (strlen(mt) > 255)
        return err_set(e, -EBADMSG, "%s %zu: media type longer than 255 bytes", what, i);
    d->media_type = strdup(mt);
    d->digest = strdup(dg);
    d->size = (uint64_t)size;
    json_t *urls = json_object_get(j, "urls");
    d->foreign = json_is_array(urls) && json_array_size(urls) > 0;
    json_t *pf = json_object_get(j, "platform");
    if (json_is_object(pf)) {
        const char *os = json_string_value(json_object_get(pf, "os"));
        const char *arch = json_string_value(json_object_get(pf, "architecture"));
        const char *var = json_string_value(json_object_get(pf, "variant"));
        if (os && arch && platform_part_ok(os, strlen(os)) &&
            platform_part_ok(arch, strlen(arch)) && (!var || platform_part_ok(var, strlen(var)))) {
            d->has_platform = true;
            snprintf(d->platform.os, sizeof(d->platform.os), "%s", os);
            snprintf(d->platform.arch, sizeof(d->platform.arch), "%s", arch);
            snprintf(d->platform.variant, sizeof(d->platform.variant), "%s", var ? var : "");
        }
    }
    return d->media_type && d->digest ? 0 : -ENOMEM;
}

int registry_manifest_parse(const void *body, size_t len, const char *content_type,
                            struct registry_manifest *out, struct err *e)
{
    *out = (struct registry_manifest){0};
    if (len > REGISTRY_MANIFEST_MAX)
        return err_set(e, -EFBIG, "manifest of %zu bytes, over the limit of %d bytes", len,
                       REGISTRY_MANIFEST_MAX);
    /* The response's type, without parameters ("; charset=utf-8"); only image types count
     * (servers say "application/json" for anything). */
    char ct[128] = "";
    if (content_type)
        snprintf(ct, sizeof(ct), "%.*s", (int)strcspn(content_type, "; "), content_type);
    if (is_schema1_type(ct))
        return err_set(e, -ENOTSUP,
                       "a Docker schema 1 manifest (%s): that format is deprecated and "
                       "not supported; push the image again with a current client",
                       ct);
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return err_set(e, -EBADMSG, "the manifest is not a JSON object (%s)", je.text);
    }
    int r = 0;
    json_t *sv = json_object_get(root, "schemaVersion");
    const char *bmt = json_string_value(json_object_get(root, "mediaType"));
    json_t *layers = json_object_get(root, "layers");
    json_t *manifests = json_object_get(root, "manifests");
    const char *mt = bmt                                           ? bmt
                     : (is_manifest_type(ct) || is_index_type(ct)) ? ct
                     : json_is_array(manifests)                    ? MT_OCI_INDEX
                                                                   : MT_OCI_MANIFEST;
    if ((json_is_integer(sv) && json_integer_value(sv) == 1) || is_schema1_type(mt)) {
        r = err_set(e, -ENOTSUP,
                    "a Docker schema 1 manifest: that format is deprecated and not "
                    "supported; push the image again with a current client");
        goto out;
    }
    if (!json_is_integer(sv) || json_integer_value(sv) != 2) {
        r = err_set(e, -EBADMSG, "the manifest's schemaVersion is not 2");
        goto out;
    }
    if (bmt && (is_manifest_type(ct) || is_index_type(ct)) && strcmp(bmt, ct)) {
        r = err_set(e, -EBADMSG, "the manifest says it is %.100s, the registry says %.100s", bmt,
                    ct);
        goto out;
    }
    if (!is_manifest_type(mt) && !is_index_type(mt)) {
        r = err_set(e, -ENOTSUP, "media type %.100s is not an image manifest or index", mt);
        goto out;
    }
    out->is_index = is_index_type(mt);
    if (!(out->media_type = strdup(mt))) {
        r = -ENOMEM;
        goto out;
    }
    json_t *arr = out->is_index ? manifests : layers;
    if (!json_is_array(arr)) {
        r = err_set(e, -EBADMSG, "the %s has no %s array", out->is_index ? "index" : "manifest",
                    out->is_index ? "manifests" : "layers");
        goto out;
    }
    size_t n = json_array_size(arr);
    size_t max = out->is_index ? REGISTRY_INDEX_MAX_MANIFESTS : source_max_layers();
    if (n > max) {
        r = err_set(e, -EFBIG,
                    out->is_index ? "the index has %zu entries, more than the limit of %zu"
                                  : "the image has %zu layers, more than the limit of %zu; "
                                    "raise it with THINIMG_SOURCE_MAX_LAYERS=N",
                    n, max);
        goto out;
    }
    if (!out->is_index && n == 0) {
        r = err_set(e, -EBADMSG, "the manifest has no layers");
        goto out;
    }
    out->entries = calloc(n ? n : 1, sizeof(*out->entries));
    if (!out->entries) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n && r == 0; i++) {
        r = descriptor_parse(json_array_get(arr, i), out->is_index ? "index entry" : "layer", i,
                             &out->entries[i], e);
        out->n_entries += r == 0;
    }
    if (r == 0 && !out->is_index) {
        json_t *cfg = json_object_get(root, "config");
        r = descriptor_parse(cfg, "config", 0, &out->config, e);
        if (r == 0 && !config_type_ok(out->config.media_type))
            r = err_set(e, -ENOTSUP, "config media type %.100s: an artifact, not a container image",
                        out->config.media_type);
        for (size_t i = 0; i < out->n_entries && r == 0; i++) {
            bool foreign;
            if (!layer_type_ok(out->entries[i].media_type, &foreign))
                r = err_set(e, -ENOTSUP, "layer %zu has media type %.100s, not an image layer", i,
                            out->entries[i].media_type);
            out->entries[i].foreign |= foreign;
        }
    }
out:
    json_decref(root);
    if (r < 0)
        registry_manifest_free(out);
    return r;
}

/* An index entry that is an image for a platform (not an attestation: unknown/unknown). */
static bool platform_entry(const struct registry_descriptor *d)
{
    return d->has_platform && is_manifest_type(d->media_type) && strcmp(d->platform.os, "unknown");
}

int registry_platform_select(const struct registry_manifest *index,
                             const struct registry_platform *want, size_t *idx, struct err *e)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < index->n_entries; i++) {
        const struct registry_descriptor *d = &index->entries[i];
        if (!platform_entry(d) || strcmp(d->platform.os, want->os) ||
            strcmp(d->platform.arch, want->arch))
            continue;
        if (want->variant[0] && !variant_eq(want->arch, want->variant, d->platform.variant))
            continue;
        /* Without a variant asked: the arch's usual one (or none) first, then any. */
        if (variant_eq(want->arch, "", d->platform.variant)) {
            best = i;
            break;
        }
        if (best == SIZE_MAX)
            best = i;
    }
    if (best != SIZE_MAX) {
        *idx = best;
        return 0;
    }
    _cleanup_buf_ struct buf have = BUF_INIT;
    size_t shown = 0;
    for (size_t i = 0; i < index->n_entries && shown < 8; i++) {
        char p[3 * REGISTRY_PLATFORM_PART_MAX];
        if (!platform_entry(&index->entries[i]))
            continue;
        registry_platform_format(&index->entries[i].platform, p, sizeof(p));
        buf_printf(&have, "%s%s", shown++ ? ", " : "", p);
    }
    char w[3 * REGISTRY_PLATFORM_PART_MAX];
    registry_platform_format(want, w, sizeof(w));
    return err_set(e, -ENOENT,
                   "the image index has no manifest for platform %s (it has: %s); choose one "
                   "with --platform OS/ARCH[/VARIANT]",
                   w, have.data ? have.data : "none");
}

/* The run settings of an image config: its "config" object's fields under our names. */
int registry_config_summary(const void *body, size_t len, char **json, struct err *e)
{
    *json = NULL;
    json_t *root = json_loadb(body, len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(e, -EBADMSG, "the image config is not a JSON object");
    }
    json_t *c = json_object_get(root, "config");
    static const struct {
        const char *from, *to;
        bool array;
    } fields[] = {
        {"Entrypoint", "entrypoint", true},
        {"Cmd", "cmd", true},
        {"Env", "env", true},
        {"WorkingDir", "working_dir", false},
        {"User", "user", false},
        {"StopSignal", "stop_signal", false},
    };
    json_t *out = json_object();
    int r = out ? 0 : -ENOMEM;
    for (size_t i = 0; r == 0 && i < sizeof(fields) / sizeof(fields[0]); i++) {
        json_t *v = json_object_get(c, fields[i].from);
        bool ok = fields[i].array ? json_is_array(v) : json_is_string(v);
        /* Arrays of strings only: anything else in a hostile config is dropped. */
        for (size_t k = 0; ok && fields[i].array && k < json_array_size(v); k++)
            ok = json_is_string(json_array_get(v, k));
        if (ok)
            r = json_object_set(out, fields[i].to, v) < 0 ? -ENOMEM : 0;
    }
    for (size_t i = 0; r == 0 && i < 3; i++) {
        static const char *const top[] = {"os", "architecture", "variant"};
        json_t *v = json_object_get(root, top[i]);
        if (json_is_string(v))
            r = json_object_set(out, top[i], v) < 0 ? -ENOMEM : 0;
    }
    json_t *ports = json_object_get(c, "ExposedPorts");
    if (r == 0 && json_is_object(ports)) {
        json_t *a = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(ports, k, v) json_array_append_new(a, json_string(k));
        r = json_object_set_new(out, "exposed_ports", a) < 0 ? -ENOMEM : 0;
    }
    if (r == 0 && !(*json = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS)))
        r = -ENOMEM;
    json_decref(out);
    json_decref(root);
    return r;
}

int registry_config_diff_ids(const void *body, size_t len, char ***ids, size_t *n, struct err *e)
{
    *ids = NULL;
    *n = 0;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *rootfs = json_object_get(root, "rootfs");
    json_t *d = json_object_get(rootfs, "diff_ids");
    int r = 0;
    if (!json_is_object(root) || !json_is_array(d)) {
        r = err_set(e, -EBADMSG, "the image config has no rootfs.diff_ids");
        goto out;
    }
    size_t k = json_array_size(d);
    if (k > source_max_layers()) {
        r = err_set(e, -EFBIG, "the image config lists %zu diff ids, over the layer limit", k);
        goto out;
    }
    *ids = calloc(k ? k : 1, sizeof(**ids));
    if (!*ids) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < k && r == 0; i++) {
        const char *s = json_string_value(json_array_get(d, i));
        if (!s || !digest_valid(s))
            r = err_set(e, -EBADMSG, "diff id %zu of the image config is not a sha256 digest", i);
        else if (!((*ids)[i] = strdup(s)))
            r = -ENOMEM;
        else
            (*n)++;
    }
out:
    json_decref(root);
    if (r < 0) {
        for (size_t i = 0; i < *n; i++)
            free((*ids)[i]);
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return r;
}
