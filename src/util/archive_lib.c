/*
 * archive_lib.c: the libarchive functions thinimg calls, forwarded to libarchive loaded on
 * first use. See archive_lib.h and util/dynlib.h.
 *
 * Each function has libarchive's own name and prototype (from <archive.h>, <archive_entry.h>)
 * and calls the real one through the address dynlib resolved: one predictable branch and an
 * indirect call, nothing next to the work of reading an entry. When libarchive cannot be
 * loaded a function returns what libarchive returns for a failure: NULL for objects and
 * strings, ARCHIVE_FATAL for operations, 0 for an entry's fields.
 */
#include "util/archive_lib.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdarg.h>
#include <stdio.h>

#include "util/dynlib.h"

#ifndef THINIMG_ARCHIVE_SONAME
#error "THINIMG_ARCHIVE_SONAME is defined by CMakeLists.txt (thinimg_loaded_on_use)"
#endif

/* Every libarchive function the tree calls. */
#define ARCHIVE_LIB_FUNCTIONS(X)                                                                   \
    X(archive_version_string)                                                                      \
    X(archive_read_new)                                                                            \
    X(archive_read_free)                                                                           \
    X(archive_read_support_filter_gzip)                                                            \
    X(archive_read_support_filter_zstd)                                                            \
    X(archive_read_support_format_raw)                                                             \
    X(archive_read_support_format_tar)                                                             \
    X(archive_read_open)                                                                           \
    X(archive_read_open_fd)                                                                        \
    X(archive_read_open_filename)                                                                  \
    X(archive_read_next_header)                                                                    \
    X(archive_read_data)                                                                           \
    X(archive_read_data_block)                                                                     \
    X(archive_read_data_skip)                                                                      \
    X(archive_filter_bytes)                                                                        \
    X(archive_errno)                                                                               \
    X(archive_error_string)                                                                        \
    X(archive_set_error)                                                                           \
    X(archive_entry_pathname)                                                                      \
    X(archive_entry_pathname_utf8)                                                                 \
    X(archive_entry_symlink)                                                                       \
    X(archive_entry_symlink_utf8)                                                                  \
    X(archive_entry_hardlink)                                                                      \
    X(archive_entry_filetype)                                                                      \
    X(archive_entry_perm)                                                                          \
    X(archive_entry_uid)                                                                           \
    X(archive_entry_gid)                                                                           \
    X(archive_entry_rdev)                                                                          \
    X(archive_entry_size)                                                                          \
    X(archive_entry_size_is_set)                                                                   \
    X(archive_entry_mtime)                                                                         \
    X(archive_entry_mtime_nsec)                                                                    \
    X(archive_entry_atime)                                                                         \
    X(archive_entry_atime_nsec)                                                                    \
    X(archive_entry_atime_is_set)                                                                  \
    X(archive_entry_xattr_reset)                                                                   \
    X(archive_entry_xattr_next)

DYNLIB_DEFINE(archive_lib, ARCHIVE_LIB_FUNCTIONS, .soname = THINIMG_ARCHIVE_SONAME,
              .used_for = "reading layers (fetch's validation, unpack, extract)",
              .package = "libarchive (Debian, Ubuntu: libarchive13; Fedora: libarchive)");

DYNLIB_ACCESSORS(archive_lib, archive_lib)

/* FORWARD(ret, name, fail, (params), (args)): `ret name(params)` calling the real function
 * with args, or returning fail when libarchive cannot be loaded. */
#define FORWARD(ret, name, fail, params, args)                                                     \
    DYNLIB_FORWARD(archive_lib, ret, name, fail, params, args)
/* ENTRY(ret, name): a field of an entry, 0 (or NULL) without libarchive. */
#define ENTRY(ret, name) FORWARD(ret, name, 0, (struct archive_entry * entry), (entry))
/* OP(name): an int operation on a struct archive, ARCHIVE_FATAL without libarchive. */
#define OP(name) FORWARD(int, name, ARCHIVE_FATAL, (struct archive * a), (a))

FORWARD(const char *, archive_version_string, NULL, (void), ())
FORWARD(struct archive *, archive_read_new, NULL, (void), ())
OP(archive_read_free)
OP(archive_read_support_filter_gzip)
OP(archive_read_support_filter_zstd)
OP(archive_read_support_format_raw)
OP(archive_read_support_format_tar)
FORWARD(int, archive_read_open, ARCHIVE_FATAL,
        (struct archive * a, void *client_data, archive_open_callback *open_cb,
         archive_read_callback *read_cb, archive_close_callback *close_cb),
        (a, client_data, open_cb, read_cb, close_cb))
FORWARD(int, archive_read_open_fd, ARCHIVE_FATAL, (struct archive * a, int fd, size_t block_size),
        (a, fd, block_size))
FORWARD(int, archive_read_open_filename, ARCHIVE_FATAL,
        (struct archive * a, const char *filename, size_t block_size), (a, filename, block_size))
FORWARD(int, archive_read_next_header, ARCHIVE_FATAL,
        (struct archive * a, struct archive_entry **entry), (a, entry))
FORWARD(la_ssize_t, archive_read_data, ARCHIVE_FATAL, (struct archive * a, void *buf, size_t size),
        (a, buf, size))
FORWARD(int, archive_read_data_block, ARCHIVE_FATAL,
        (struct archive * a, const void **buf, size_t *size, la_int64_t *offset),
        (a, buf, size, offset))
OP(archive_read_data_skip)
FORWARD(la_int64_t, archive_filter_bytes, -1, (struct archive * a, int n), (a, n))
FORWARD(int, archive_errno, 0, (struct archive * a), (a))
FORWARD(const char *, archive_error_string, NULL, (struct archive * a), (a))

/* libarchive exports no va_list form: the message is formatted here and passed as "%s". */
void archive_set_error(struct archive *a, int err, const char *fmt, ...)
{
    typeof(&archive_set_error) f = DYNLIB_REAL(archive_lib, archive_set_error);
    if (!f)
        return;
    char msg[1024]; /* libarchive keeps its own copy */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    f(a, err, "%s", msg);
}

ENTRY(const char *, archive_entry_pathname)
ENTRY(const char *, archive_entry_pathname_utf8)
ENTRY(const char *, archive_entry_symlink)
ENTRY(const char *, archive_entry_symlink_utf8)
ENTRY(const char *, archive_entry_hardlink)
ENTRY(__LA_MODE_T, archive_entry_filetype)
ENTRY(__LA_MODE_T, archive_entry_perm)
ENTRY(la_int64_t, archive_entry_uid)
ENTRY(la_int64_t, archive_entry_gid)
ENTRY(dev_t, archive_entry_rdev)
ENTRY(la_int64_t, archive_entry_size)
ENTRY(int, archive_entry_size_is_set)
ENTRY(time_t, archive_entry_mtime)
ENTRY(long, archive_entry_mtime_nsec)
ENTRY(time_t, archive_entry_atime)
ENTRY(long, archive_entry_atime_nsec)
ENTRY(int, archive_entry_atime_is_set)
FORWARD(int, archive_entry_xattr_reset, 0, (struct archive_entry * entry), (entry))
FORWARD(int, archive_entry_xattr_next, ARCHIVE_WARN,
        (struct archive_entry * entry, const char **name, const void **value, size_t *size),
        (entry, name, value, size))
