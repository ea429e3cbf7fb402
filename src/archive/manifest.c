/*
 * manifest.c: multi-layer archives: `docker save` tars (manifest.json: [{Config, RepoTags,
 * Layers}]) and OCI image layouts in a tar (oci-layout, index.json -> manifest ->
 * layers[] by digest under blobs/sha256/). Lists the layers bottom to top and copies one
 * member out, so that each layer is stored and processed as a blob of its own.
 *
 * The outer tar is as hostile as any layer: member names are checked with the layer name
 * rules, references in JSON are resolved only to members that exist, symlinks and hardlinks
 * between members (docker save links repeated layers) are followed lexically inside the
 * archive and never out of it, JSON members are size-bounded, and every walk is bounded by
 * the default entry limit. Only the first image of a multi-image archive is listed.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive/gunzip.h"
#include "archive/internal.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/hash.h"

#define JSON_MEMBER_MAX  (4 << 20) /* manifests and indexes are KiBs; a 4 MiB one is hostile */
#define LINK_HOPS_MAX    8         /* member -> member links followed (docker save uses 1) */
#define INDEX_DEPTH_MAX  4         /* nested OCI indexes followed */
#define OUTER_READ_BYTES (1 << 20) /* read size of the outer tar */

DEFINE_POINTER_CLEANUP(struct archive, archive_read_free)

static struct archive *open_outer(const char *path, struct err *e)
{
    struct archive *a = archive_read_new();
    if (!a) {
        err_set(e, -ENOMEM, "out of memory");
        return NULL;
    }
    archive_read_support_format_tar(a);
    archive_read_support_filter_zstd(a);
    /* gzip is read by gunzip.c, like a gzip layer; zstd by libarchive's filter */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        err_set(e, neg_errno(), "%s: cannot open archive: %m", path);
        archive_read_free(a);
        return NULL;
    }
    unsigned char magic[2] = {0};
    int r;
    if (pread(fd, magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) && magic[0] == 0x1f &&
        magic[1] == 0x8b) {
        r = gunzip_archive_open_fd(a, fd, OUTER_READ_BYTES);
    } else {
        close(fd);
        r = archive_read_open_filename(a, path, OUTER_READ_BYTES);
    }
    if (r != ARCHIVE_OK) {
        err_set(e, -EBADMSG, "%s: cannot read archive: %s", path, archive_error_string(a));
        archive_read_free(a);
        return NULL;
    }
    return a;
}

/* Normalise a member name with the layer name rules; false when it breaks one. */
static bool member_name(const char *in, char *out, size_t out_size)
{
    struct archive_policy p = archive_policy_default();
    bool slash;
    uint32_t depth;
    const char *rule, *why;
    return in && archive_path_normalize(in, &p, out, out_size, &slash, &depth, &rule, &why) == 0 &&
           out[0] != '\0';
}

/* Resolve a link target (relative to the member's directory, or archive-absolute for
 * hardlinks) lexically; ".." may not leave the archive. */
static bool resolve_link(const char *member, const char *target, bool hardlink, char *out,
                         size_t out_size)
{
    char joined[8192];
    if (!target || target[0] == '/')
        return false;
    if (hardlink) {
        snprintf(joined, sizeof(joined), "%s", target);
    } else {
        const char *slash = strrchr(member, '/');
        int dl = slash ? (int)(slash - member) : 0;
        snprintf(joined, sizeof(joined), "%.*s%s%s", dl, member, dl ? "/" : "", target);
    }
    /* Canonicalise: a stack of components. */
    size_t o = 0;
    char *save = NULL;
    for (char *c = strtok_r(joined, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (!strcmp(c, "."))
            continue;
        if (!strcmp(c, "..")) {
            if (o == 0)
                return false;
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
            continue;
        }
        size_t l = strlen(c);
        if (o + l + 2 > out_size)
            return false;
        if (o)
            out[o++] = '/';
        memcpy(out + o, c, l);
        o += l;
    }
    out[o] = '\0';
    return o > 0;
}

/* Walk to member `want`; follow links. On success the archive is positioned at the member's
 * data and *size is its size. */
static int seek_member(const char *path, const char *want_in, struct archive **out, int64_t *size,
                       struct err *e)
{
    char want[4096], name[4096];
    if (!member_name(want_in, want, sizeof(want)))
        return err_set(e, -EPERM, "%s: invalid member name '%s' (rule: traversal)", path, want_in);
    for (int hop = 0; hop <= LINK_HOPS_MAX; hop++) {
        struct archive *a = open_outer(path, e);
        if (!a)
            return e ? e->code : -EBADMSG;
        struct archive_entry *ae;
        int r;
        uint64_t n = 0;
        bool relinked = false;
        while ((r = archive_next_header_bytes(a, &ae)) == ARCHIVE_OK) {
            if (++n > ARCHIVE_DEFAULT_MAX_ENTRIES)
                break;
            if (!member_name(archive_entry_pathname(ae), name, sizeof(name)) ||
                strcmp(name, want) != 0)
                continue;
            const char *hl = archive_entry_hardlink(ae);
            if (hl || archive_entry_filetype(ae) == AE_IFLNK) {
                char next[4096];
                if (!resolve_link(name, hl ? hl : archive_entry_symlink(ae), hl != NULL, next,
                                  sizeof(next))) {
                    archive_read_free(a);
                    return err_set(e, -EPERM,
                                   "%s: member '%s' links outside the archive (rule: "
                                   "hardlink-escape)",
                                   path, want);
                }
                snprintf(want, sizeof(want), "%s", next);
                relinked = true;
                break;
            }
            if (archive_entry_filetype(ae) != AE_IFREG) {
                archive_read_free(a);
                return err_set(e, -EBADMSG, "%s: member '%s' is not a regular file", path, want);
            }
            *size = archive_entry_size(ae);
            *out = a;
            return 0;
        }
        if (!relinked) {
            int code = r == ARCHIVE_EOF ? -ENOENT : -EBADMSG;
            if (r != ARCHIVE_EOF && r != ARCHIVE_OK)
                err_set(e, code, "%s: cannot read archive: %s", path, archive_error_string(a));
            archive_read_free(a);
            return err_set(e, code, "%s: member '%s' not found", path, want);
        }
        archive_read_free(a);
    }
    return err_set(e, -ELOOP, "%s: member '%s': too many links between members", path, want_in);
}

static int member_copy(const char *path, const char *member, int out_fd, uint64_t max_bytes,
                       struct err *e)
{
    struct archive *a0 = NULL;
    int64_t size = 0;
    int r = seek_member(path, member, &a0, &size, e);
    if (r < 0)
        return r;
    _cleanup_(archive_read_freep) struct archive *a = a0;
    if (size < 0 || (max_bytes && (uint64_t)size > max_bytes))
        return err_set(e, -EFBIG,
                       "%s: member '%s' is %lld bytes, over the limit of %llu (rule: "
                       "blob-size)",
                       path, member, (long long)size, (unsigned long long)max_bytes);
    const void *buf;
    size_t n;
    la_int64_t off;
    int64_t pos = 0;
    for (;;) {
        int k = archive_read_data_block(a, &buf, &n, &off);
        if (k == ARCHIVE_EOF)
            break;
        if (k != ARCHIVE_OK)
            return err_set(e, -EBADMSG, "%s: member '%s': %s (rule: truncated)", path, member,
                           archive_error_string(a));
        if (off != pos && lseek(out_fd, off, SEEK_SET) < 0)
            return err_set(e, neg_errno(), "cannot seek the output");
        if ((r = write_all(out_fd, buf, n)) < 0)
            return err_set(e, r, "cannot write the output: %s", strerror(-r));
        pos = off + (int64_t)n;
    }
    if (pos < size && ftruncate(out_fd, size) < 0)
        return err_set(e, neg_errno(), "cannot size the output");
    return 0;
}

int archive_member_copy(const char *path, const char *member, int out_fd, uint64_t max_bytes,
                        struct err *e)
{
    struct names_scope u = names_scope_begin();
    int r = member_copy(path, member, out_fd, max_bytes, e);
    names_scope_end(&u);
    return r;
}

/* A member the manifest names but the archive lacks makes the archive malformed. */
static int missing_member(const char *path, const char *member, int r, struct err *e)
{
    if (r != -ENOENT)
        return r;
    err_clear(e);
    return err_set(e, -EBADMSG,
                   "%s: member '%s' named by the manifest is missing (rule: "
                   "malformed)",
                   path, member);
}

/* Read a JSON member (bounded). */
static int read_json(const char *path, const char *member, json_t **out, struct err *e)
{
    struct archive *a0 = NULL;
    int64_t size = 0;
    int r = seek_member(path, member, &a0, &size, e);
    if (r < 0)
        return missing_member(path, member, r, e);
    _cleanup_(archive_read_freep) struct archive *a = a0;
    if (size <= 0 || size > JSON_MEMBER_MAX)
        return err_set(e, -EFBIG, "%s: member '%s' has an implausible size for JSON (%lld)", path,
                       member, (long long)size);
    _cleanup_free_ char *buf = malloc((size_t)size);
    if (!buf)
        return err_set(e, -ENOMEM, "out of memory");
    if (archive_read_data(a, buf, (size_t)size) != size)
        return err_set(e, -EBADMSG, "%s: member '%s' is truncated", path, member);
    json_error_t je;
    *out = json_loadb(buf, (size_t)size, JSON_REJECT_DUPLICATES, &je);
    if (!*out)
        return err_set(e, -EBADMSG, "%s: member '%s' is not valid JSON: %s (line %d)", path, member,
                       je.text, je.line);
    return 0;
}

static int add_layer(struct archive_manifest *m, const char *member, const char *digest,
                     struct err *e)
{
    struct archive_layer_ref *n = realloc(m->layers, (m->n_layers + 1) * sizeof(*n));
    if (!n)
        return err_set(e, -ENOMEM, "out of memory");
    m->layers = n;
    struct archive_layer_ref *l = &n[m->n_layers];
    memset(l, 0, sizeof(*l));
    l->member = strdup(member);
    l->digest = digest ? strdup(digest) : NULL;
    if (!l->member || (digest && !l->digest)) {
        free(l->member);
        free(l->digest);
        return err_set(e, -ENOMEM, "out of memory");
    }
    m->n_layers++;
    return 0;
}

/* "blobs/sha256/<hex>" for a valid digest, else NULL (rule: digest). */
static bool blob_member(const char *digest, char *out, size_t out_size)
{
    if (!digest || !digest_valid(digest))
        return false;
    snprintf(out, out_size, "blobs/sha256/%s", digest + strlen(DIGEST_PREFIX));
    return true;
}

static int read_docker(const char *path, struct archive_manifest *m, struct err *e)
{
    _cleanup_(json_decrefp) json_t *j = NULL;
    int r = read_json(path, "manifest.json", &j, e);
    if (r < 0)
        return r;
    json_t *img = json_is_array(j) ? json_array_get(j, 0) : NULL;
    json_t *layers = json_object_get(img, "Layers");
    if (!json_is_array(layers) || json_array_size(layers) == 0)
        return err_set(e, -EBADMSG, "%s: manifest.json has no Layers list", path);
    json_t *tags = json_object_get(img, "RepoTags");
    if (json_is_array(tags) && json_is_string(json_array_get(tags, 0)))
        m->repo_tag = strdup(json_string_value(json_array_get(tags, 0)));
    size_t i;
    json_t *v;
    json_array_foreach(layers, i, v)
    {
        char name[4096];
        if (!json_is_string(v) || !member_name(json_string_value(v), name, sizeof(name)))
            return err_set(e, -EPERM,
                           "%s: manifest.json: layer %zu is not a valid member name (rule: "
                           "traversal)",
                           path, i);
        /* New-style docker save names layers by digest. */
        const char *digest = NULL;
        char dbuf[DIGEST_STR_LEN + 1];
        if (!strncmp(name, "blobs/sha256/", 13)) {
            snprintf(dbuf, sizeof(dbuf), "sha256:%s", name + 13);
            if (digest_valid(dbuf))
                digest = dbuf;
        }
        r = add_layer(m, name, digest, e);
        if (r < 0)
            return r;
    }
    return 0;
}

static int read_oci(const char *path, struct archive_manifest *m, struct err *e)
{
    _cleanup_(json_decrefp) json_t *layout = NULL;
    int r = read_json(path, "oci-layout", &layout, e);
    if (r < 0)
        return r;
    if (!json_is_string(json_object_get(layout, "imageLayoutVersion")))
        return err_set(e, -EBADMSG, "%s: oci-layout has no imageLayoutVersion", path);

    json_t *cur = NULL;
    r = read_json(path, "index.json", &cur, e);
    if (r < 0)
        return r;
    for (int depth = 0;; depth++) {
        _cleanup_(json_decrefp) json_t *idx = cur;
        cur = NULL;
        json_t *desc = json_array_get(json_object_get(idx, "manifests"), 0);
        if (!json_is_object(desc))
            return err_set(e, -EBADMSG, "%s: image index has no manifests", path);
        json_t *ann = json_object_get(desc, "annotations");
        const char *ref =
            json_string_value(json_object_get(ann, "org.opencontainers.image.ref.name"));
        if (!ref)
            ref = json_string_value(json_object_get(ann, "io.containerd.image.name"));
        if (ref && !m->repo_tag)
            m->repo_tag = strdup(ref);
        char member[128];
        if (!blob_member(json_string_value(json_object_get(desc, "digest")), member,
                         sizeof(member)))
            return err_set(e, -EBADMSG,
                           "%s: manifest descriptor has an invalid digest (rule: "
                           "digest)",
                           path);
        json_t *next = NULL;
        r = read_json(path, member, &next, e);
        if (r < 0)
            return r;
        if (json_is_array(json_object_get(next, "manifests"))) { /* a nested index */
            if (depth + 1 >= INDEX_DEPTH_MAX) {
                json_decref(next);
                return err_set(e, -EBADMSG, "%s: image indexes nested too deep", path);
            }
            cur = next;
            continue;
        }
        _cleanup_(json_decrefp) json_t *man = next;
        json_t *layers = json_object_get(man, "layers");
        if (!json_is_array(layers) || json_array_size(layers) == 0)
            return err_set(e, -EBADMSG, "%s: image manifest %s has no layers", path, member);
        size_t i;
        json_t *l;
        json_array_foreach(layers, i, l)
        {
            const char *digest = json_string_value(json_object_get(l, "digest"));
            char lm[128];
            if (!blob_member(digest, lm, sizeof(lm)))
                return err_set(e, -EBADMSG, "%s: layer %zu has an invalid digest (rule: digest)",
                               path, i);
            r = add_layer(m, lm, digest, e);
            if (r < 0)
                return r;
            json_t *sz = json_object_get(l, "size");
            if (json_is_integer(sz))
                m->layers[m->n_layers - 1].size = (uint64_t)json_integer_value(sz);
        }
        return 0;
    }
}

/* Check every layer member exists; fill its size and format from its first bytes. */
static int probe_layers(const char *path, struct archive_manifest *m, struct err *e)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        struct archive_layer_ref *l = &m->layers[i];
        struct archive *a0 = NULL;
        int64_t size = 0;
        int r = seek_member(path, l->member, &a0, &size, e);
        if (r < 0)
            return missing_member(path, l->member, r, e);
        _cleanup_(archive_read_freep) struct archive *a = a0;
        if (l->size && (uint64_t)size != l->size)
            return err_set(e, -EBADMSG, "%s: layer '%s' is %lld bytes, the manifest says %llu",
                           path, l->member, (long long)size, (unsigned long long)l->size);
        l->size = (uint64_t)size;
        unsigned char head[SNIFF_BYTES];
        la_ssize_t n = archive_read_data(a, head, sizeof(head));
        if (n < 0)
            return err_set(e, -EBADMSG, "%s: layer '%s': %s", path, l->member,
                           archive_error_string(a));
        switch (archive_sniff(head, (size_t)n, (uint64_t)size, NULL, 0)) {
        case SNIFF_TAR:
            l->format = BLOB_TAR;
            break;
        case SNIFF_GZIP:
            l->format = BLOB_TAR_GZIP;
            break;
        case SNIFF_ZSTD:
            l->format = BLOB_TAR_ZSTD;
            break;
        case SNIFF_UNKNOWN:
            l->format = BLOB_UNKNOWN;
            break;
        }
    }
    return 0;
}

static int manifest_read(const char *path, struct archive_manifest *out, struct err *e)
{
    enum blob_format f;
    char why[160];
    int r = archive_detect(path, &f, why, sizeof(why));
    if (r < 0)
        return err_set(e, r, "%s: %s", path, strerror(-r));
    if (f == BLOB_DOCKER_ARCHIVE)
        r = read_docker(path, out, e);
    else if (f == BLOB_OCI_LAYOUT)
        r = read_oci(path, out, e);
    else
        r = err_set(e, -ENOTSUP, "%s: not a docker-archive or OCI layout (%s)", path,
                    f == BLOB_UNKNOWN ? why : blob_format_name(f));
    if (r >= 0)
        r = probe_layers(path, out, e);
    if (r < 0)
        archive_manifest_free(out);
    return r;
}

int archive_manifest_read(const char *path, struct archive_manifest *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    struct names_scope u = names_scope_begin();
    int r = manifest_read(path, out, e);
    names_scope_end(&u);
    return r;
}

void archive_manifest_free(struct archive_manifest *m)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        free(m->layers[i].member);
        free(m->layers[i].digest);
    }
    free(m->layers);
    free(m->repo_tag);
    memset(m, 0, sizeof(*m));
}
