/*
 * internal.h: what the archive module's files share and nobody else uses: the layer walker
 * (one libarchive read loop with every policy check, used by scan and apply), entry name
 * normalisation, the path set, and format sniffing.
 *
 * The walker reads entries, validates each (name, type, link target, whiteout form, owner,
 * limits) and hands the caller a `struct layer_entry` whose path is normalised: relative, no
 * "." or empty components, no trailing '/', never containing "..". Scan passes no callback;
 * apply passes one that writes. All errors name the entry and the rule:
 *     entry 'a/../x': name has a '..' component (rule: traversal)
 *
 * Fork safety: nothing here logs, locks or keeps global state (only the thread-local progress
 * callback in walk.c), so a forked child of a threaded process may run it.
 */
#pragma once

#include <locale.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "archive/archive.h"
#include "archive/limits.h"
#include "util/err.h"

struct archive;
struct archive_entry;

/* ---- names as bytes ------------------------------------------------------------------------ */

/* libarchive converts PAX names (UTF-8 by the standard) to the locale's charset. To a UTF-8
 * locale it normalises them (NFD comes out NFC): not the bytes the layer holds. In the C locale
 * the conversion to ASCII fails for every non-ASCII name and libarchive keeps the original
 * bytes, with a warning archive_next_header_bytes() accepts: names come out byte for byte, as
 * GNU tar, Docker and containerd create them. These switch the calling thread (only) to the C
 * locale for the duration of a read, whatever the process-wide locale is (the monitor sets
 * the user's). The conversion goes through iconv, which takes glibc's gconv lock: header reads
 * run under forklock_shared_enter() so that the mount child, which reads layers after a fork,
 * never inherits that lock held (util/forklock.h). */
struct names_scope {
    locale_t c, old;
};
struct names_scope names_scope_begin(void);
void names_scope_end(struct names_scope *u);

/* ---- format sniffing (sniff.c) ---------------------------------------------------------- */

/* A tar block (a header, or a piece of data); one is all the magic checks need to read. */
#define TAR_BLOCK   512
#define SNIFF_BYTES TAR_BLOCK

enum sniff_kind { SNIFF_UNKNOWN = 0, SNIFF_TAR, SNIFF_GZIP, SNIFF_ZSTD };

/* Classify the first bytes of a blob (n = bytes available, the whole file when shorter than
 * the buffer). SNIFF_UNKNOWN fills why. file_size is the whole file's size. */
enum sniff_kind archive_sniff(const unsigned char *head, size_t n, uint64_t file_size, char *why,
                              size_t why_len);

/* True when the 512-byte block is a tar header with a valid checksum (ustar, gnu or v7). */
bool tar_header_valid(const unsigned char *blk);

/* What the names of a tar say it is: a docker-archive has a top-level manifest.json that is an
 * array of objects with "Layers"; an OCI layout has an oci-layout file with
 * "imageLayoutVersion" and an index.json. Anything else is a layer. */
struct tar_kind {
    bool manifest, oci_layout, index;
    /* Names only (an apply, whose data goes to the files): a top-level manifest.json or
     * oci-layout is only noted in `named`, its data is left to the walk's callback; the
     * caller then decides by archive_detect(), whose walk reads them. */
    bool names_only, named;
};
/* Note the entry just read (the stream is at its data): reads the data of manifest.json and
 * oci-layout (bounded) and then sets *read_data (unless k->names_only: see above). */
void tar_kind_note(struct tar_kind *k, struct archive *a, struct archive_entry *ae,
                   bool *read_data);
enum blob_format tar_kind_format(const struct tar_kind *k, enum blob_format layer_fmt);

/* ---- names (path.c) --------------------------------------------------------------------- */

/* Normalise an archive name into out (out_size bytes): strip "./" and empty components and a
 * trailing '/'. Rejects empty names, absolute names, ".." components, control bytes (unless the
 * policy allows them), names longer than the policy's max_path_bytes, components longer than
 * NAME_MAX and more than max_depth components. On success returns 0, sets *trailing_slash when
 * the name ended in '/' and *depth to the component count ("" = the root, depth 0). On failure
 * returns -EPERM (or -ENAMETOOLONG for length, depth) and sets *rule and *why (static strings). */
int archive_path_normalize(const char *in, const struct archive_policy *p, char *out,
                           size_t out_size, bool *trailing_slash, uint32_t *depth,
                           const char **rule, const char **why);

/* Write a printable form of s (control and non-ASCII bytes as \xNN, at most ~160 chars then
 * "...") into out. */
void archive_name_escape(const char *s, char *out, size_t out_size);

/* ---- the path set (pathset.c) ----------------------------------------------------------- */

/* An open-addressing hash set of paths, each with flags and an int payload. A path is kept as
 * a keyed hash (pathset.c), not as a copy: 16 bytes a node. Used per layer: which
 * paths the layer created, which are ancestors of those, and where a directory's deferred
 * metadata sits. Not thread-safe (one per apply). */
#define PATHSET_CREATED  0x1u /* an entry of this layer was created at this path */
#define PATHSET_ANCESTOR 0x2u /* a path created by this layer lies below this one */

struct pathset_node {
    uint64_t hash;       /* 94 bits of the path's keyed hash: these 64 ... */
    uint32_t check : 30; /* ... and these 30 (never 0 in a used slot: 0 and 0 = empty) */
    uint32_t flags : 2;  /* PATHSET_* */
    int32_t dir_idx;     /* index of deferred directory metadata, -1 if none */
};

struct pathset {
    struct pathset_node *slots;
    size_t cap; /* power of two, 0 before the first insert */
    size_t n;
    uint64_t key[2]; /* random, set at the first insert: hostile names cannot be made to collide */
};

struct pathset_node *pathset_get(const struct pathset *s, const char *key, size_t len);
/* Existing node or a new one (flags 0, dir_idx -1); NULL on ENOMEM. Invalidates node pointers
 * returned before. */
struct pathset_node *pathset_put(struct pathset *s, const char *key, size_t len);
void pathset_free(struct pathset *s);

/* ---- the walker (walk.c) ---------------------------------------------------------------- */

/* archive_policy_check() as an error for scan and apply: -EINVAL, "invalid archive policy:
 * max-path is 0, out of range: 1 to 4095 bytes". Run before anything is sized from it. */
int archive_policy_require(const struct archive_policy *p, struct err *e);

/* Bytes for a buffer holding a name at the (checked) policy's longest, its NUL, and one more
 * so that a longer name is seen as longer. */
static inline size_t archive_path_buffer_size(const struct archive_policy *p)
{
    return (size_t)p->max_path_bytes + 2;
}

/* archive_read_next_header(), with names as bytes: a PAX name (path, linkpath) that is not
 * valid UTF-8 makes libarchive warn that it "can't be converted" to the locale's charset and
 * keep the name's bytes as they are in the archive; that warning is not an error (GNU tar,
 * Go's archive/tar and so Docker and containerd take such names byte for byte). Every other
 * warning is returned as it is. */
int archive_next_header_bytes(struct archive *a, struct archive_entry **ae);
/* archive_read_next_header() under forklock_shared_enter() (the conversions it may make take
 * glibc's gconv lock: see struct names_scope). Every header read of the module goes through
 * one of these two. */
int archive_read_header_shared(struct archive *a, struct archive_entry **ae);

enum entry_kind {
    EK_FILE,
    EK_DIR,
    EK_SYMLINK,
    EK_HARDLINK,
    EK_CHR,
    EK_BLK,
    EK_FIFO,
    EK_WHITEOUT, /* .wh.NAME: remove NAME (whiteout_name) from lower layers */
    EK_OPAQUE,   /* .wh..wh..opq: hide the lower contents of the parent directory */
};

struct layer_entry {
    enum entry_kind kind;
    const char *path; /* normalised; "" = the root (directories only) */
    size_t base_off;  /* path + base_off is the last component; path[0..base_off-1) is the
                         parent ("" when base_off == 0) */
    uint32_t depth;
    const char *link;          /* symlink target (verbatim) or hardlink target (normalised) */
    const char *whiteout_name; /* EK_WHITEOUT: the name to remove, inside the parent */
    mode_t mode;               /* permission bits incl. setuid/setgid/sticky (07777) */
    uint32_t uid, gid;
    dev_t rdev;
    int64_t size;                 /* EK_FILE: logical size */
    struct timespec mtime, atime; /* atime == mtime when the archive has none */
    struct archive_entry *ae;     /* for xattrs (layer_entry_xattrs) */
};

struct layer_walk;

/* Called for each validated entry. Return 0 to go on, a negative errno to stop (set the error
 * with layer_walk_fail() or err_set()). Regular file data not consumed with layer_walk_data()
 * is skipped. */
typedef int (*layer_entry_fn)(struct layer_walk *w, const struct layer_entry *ent, void *ud);

/* Walk the layer blob at path. fn may be NULL (scan). st is filled (zeroed first). kind (may
 * be NULL) notes every entry with tar_kind_note, so that one pass both detects an outer tar
 * and scans a layer; with fn, only a kind with names_only is used. */
int layer_walk_run(const char *path, const struct archive_policy *p, struct archive_stats *st,
                   struct err *e, layer_entry_fn fn, void *ud, struct tar_kind *kind);

/* Stream the current regular file's data to sink (offset = position in the file; blocks come
 * in increasing offset order, holes for sparse files). Enforces limits and the deadline. */
typedef int (*layer_data_fn)(const void *buf, size_t n, int64_t offset, void *ud);
int layer_walk_data(struct layer_walk *w, layer_data_fn sink, void *ud);

/* Set the error "entry '<name>': <message> (rule: <rule>)" for the current entry; returns code. */
int layer_walk_fail(struct layer_walk *w, int code, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The stats of the walk (never NULL inside a callback). */
struct archive_stats *layer_walk_stats(struct layer_walk *w);

/* Allowed xattrs of the current entry: calls fn for each one on the allowlist. (The walker
 * has already checked the xattr limits and counted the others in stats->xattrs_dropped.) */
typedef int (*layer_xattr_fn)(const char *name, const void *value, size_t size, void *ud);
int layer_entry_xattrs(struct layer_walk *w, const struct layer_entry *ent, layer_xattr_fn fn,
                       void *ud);
