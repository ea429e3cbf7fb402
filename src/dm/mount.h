/*
 * mount.h: run a function on a device's file system, mounted privately in a child process.
 *
 * mount_run() forks a child that
 *   1. unshares its mount namespace and makes / recursively private (nothing it mounts is
 *      seen by the host or propagates anywhere),
 *   2. applies the optional rlimits,
 *   3. mounts the device on `mountpoint` (an existing, empty directory; the mount is only
 *      visible inside the child's namespace, so concurrent runs may use the same directory and
 *      nothing is created on disk) with nosuid,nodev (plus the caller's flags/options),
 *   4. opens an O_PATH|O_DIRECTORY fd of the mount root and calls fn(root_fd, ...),
 *   5. on success: syncfs, unmount (a failing unmount is an error), exit 0;
 *      on failure: just exits. Fail dumb: no cleanup; when the child's namespace dies the
 *      kernel detaches its mounts.
 * The parent receives the function's result code, its result bytes and its error message
 * through a pipe. The child runs with PR_SET_PDEATHSIG=SIGKILL and, when timeout_ms is set,
 * is killed after it (-ETIMEDOUT), or as soon as cancel_fd becomes readable (-ECANCELED):
 * both are the same as the kill -9 of the whole process that the callers already survive.
 *
 * The caller is a multi-threaded process: the child is a copy of one thread, and any lock
 * another thread held at fork time stays locked forever in the child. So fn must not touch
 * the database, libdevmapper, or the logger (its hook takes a lock); it reports through its
 * `out` buffer and `e`. malloc is fine (glibc makes it fork-safe).
 */
#pragma once

#include <stdint.h>
#include <sys/resource.h>

#include "util/buf.h"
#include "util/err.h"

/* More result bytes than this from a mount function is a bug; the parent stops reading. */
#define MOUNT_RESULT_MAX ((uint64_t)16 << 20)

/* The function run on the mounted file system. Return 0 or a negative errno; fill out (bytes
 * for the parent) and e (message). */
typedef int (*mount_fn)(int root_fd, void *ud, struct buf *out, struct err *e);

struct mount_limits {
    rlim_t as_bytes;    /* RLIMIT_AS, 0: unchanged */
    rlim_t cpu_seconds; /* RLIMIT_CPU */
    rlim_t fsize_bytes; /* RLIMIT_FSIZE (largest file the child may write) */
    rlim_t nofile;      /* RLIMIT_NOFILE */
};

struct mount_spec {
    const char *device;                /* e.g. /dev/mapper/thinimg-layer-7 */
    const char *mountpoint;            /* existing directory */
    const char *fstype;                /* NULL: "ext4" */
    unsigned long flags;               /* added to MS_NOSUID|MS_NODEV */
    const char *options;               /* file system options, may be NULL */
    const struct mount_limits *limits; /* may be NULL */
    int timeout_ms;                    /* 0: none */
    int cancel_fd;                     /* > 0: readable = kill the child, -ECANCELED (an FSM
                                        * run's cancel fd: shutdown, cancel, attempt
                                        * timeout); 0: none */
    /* Progress of fn, as the child reports it with mount_child_progress(): called on the
     * parent's thread while it waits, at most every MOUNT_PROGRESS_MS and only when the figures
     * changed. NULL: none. */
    void (*progress)(uint64_t done, uint64_t total, void *ud);
    void *progress_ud;
};

/* How often the waiting parent looks at the child's progress. */
#define MOUNT_PROGRESS_MS 500

/* For fn, in the child: report how far it is (any unit the caller's progress understands, e.g.
 * bytes of the blob read). Lock-free (a shared page written with relaxed atomics), so it is
 * safe in the forked child; a no-op when the caller asked for no progress. */
void mount_child_progress(uint64_t done, uint64_t total);

/* Returns fn's result (0 or negative errno) or the child's own failure (mount, unmount,
 * timeout, crash). result (may be NULL; initialized, e.g. BUF_INIT) is emptied, then gets
 * fn's bytes; the caller frees it with buf_free(). */
int mount_run(const struct mount_spec *spec, mount_fn fn, void *ud, struct buf *result,
              struct err *e);
