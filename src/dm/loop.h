/*
 * loop.h: loop devices for file-backed thin pools, through the loop-control ioctls (no
 * `losetup` parsing).
 *
 * loop_attach() takes a free device with LOOP_CTL_GET_FREE and binds the file with one
 * LOOP_CONFIGURE (kernel >= 5.8), asking for direct I/O so the pool's blocks are not cached
 * twice (once in the loop device, once in the backing file). The kernel silently falls back to
 * buffered I/O when the backing file system cannot do direct I/O (tmpfs before 6.6); *dio
 * reports what it got. Loops are attached without autoclear: they must outlive thinimg,
 * since the pool holds them.
 *
 * loop_find() looks for a loop device already bound to the same file (same st_dev and
 * st_ino), so reassembly after a restart reuses it instead of binding a second one.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* "/dev/loopNNN" fits. */
#define LOOP_PATH_MAX 32
/* LOOP_CTL_GET_FREE can race with another process binding the same device; retry this often. */
#define LOOP_ATTACH_TRIES 16

/* Bind path to a free loop device; its path goes to dev (LOOP_PATH_MAX). */
int loop_attach(const char *path, bool read_only, char *dev, size_t n, bool *dio, struct err *e);
/* 1 and dev filled when a loop device is bound to path, 0 when none, negative errno. */
int loop_find(const char *path, char *dev, size_t n);
/* Path of the file bound to a loop device given as "major:minor" or "/dev/loopN", into out.
 * -ENXIO when nothing is bound, -ENODEV when it is not a loop device. */
int loop_backing_file(const char *dev, char *out, size_t n);
/* Resolve "major:minor" to its /dev node name (via /sys/dev/block/M:m/uevent DEVNAME). */
int block_dev_path(const char *majmin, char *out, size_t n);
/* Make a loop device pick up its backing file's new size (LOOP_SET_CAPACITY, what `losetup
 * -c` does) and put the device's size in bytes afterwards into *bytes (NULL: not wanted). */
int loop_refresh_size(const char *dev, uint64_t *bytes, struct err *e);
/* Size in bytes of a block device (BLKGETSIZE64) or a regular file. */
int dev_size_bytes(const char *path, uint64_t *bytes);
