/*
 * fsutil.h: small file-system helpers that every module needs. All return 0 (or a count) on
 * success and a negative errno on failure; none of them follows a caller-supplied path through
 * untrusted content (the archive module has its own fd-based code for that).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/buf.h"

/* mkdir -p with `mode` for the directories it creates. */
int mkdir_p(const char *path, mode_t mode);

/* write(2)/read(2) loops that retry on EINTR and short counts. read_full returns bytes read
 * (less than n only at end of file). */
int write_all(int fd, const void *data, size_t n);
ssize_t read_full(int fd, void *data, size_t n);

/* Read a whole file (at most max bytes; -EFBIG beyond) into b. */
int read_file(const char *path, size_t max, struct buf *b);

/* Write a file atomically: temp file in the same directory, fsync, rename, fsync the dir. */
int write_file_atomic(const char *path, const void *data, size_t n, mode_t mode);

/* fsync the directory that contains path (after a rename or create in it). */
int fsync_parent_dir(const char *path);

/* "a" + "/" + "b" into a newly allocated string (NULL on ENOMEM). */
char *path_join(const char *a, const char *b);

/* The kernel's boot id (/proc/sys/kernel/random/boot_id, 36 characters): it changes at every
 * boot, so what a process recorded with it is known to be from this boot or not. */
#define BOOT_ID_MAX 40
int boot_id_read(char *out, size_t n);
