/*
 * cleanup.h: scope-bound cleanup with __attribute__((cleanup)).
 *
 * Declare a resource with the matching attribute and every early `return r;` releases it:
 *
 *     _cleanup_free_ char *buf = NULL;
 *     _cleanup_close_ int fd = -1;
 *
 * Invariants: a cleanup function accepts the "empty" value (NULL, -1) and does nothing.
 * To hand a resource to the caller, move it out with TAKE_PTR()/TAKE_FD(), which leaves
 * the empty value behind so the cleanup becomes a no-op.
 */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p)
{
    free(*(void **)p);
}

static inline void closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

static inline void fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}

static inline void closedirp(DIR **d)
{
    if (*d)
        closedir(*d);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_closedir_ _cleanup_(closedirp)

/* Defines `static inline void namep(type **p)` that calls func(*p) when *p is not NULL. */
#define DEFINE_POINTER_CLEANUP(type, func)                                                         \
    static inline void func##p(type **p)                                                           \
    {                                                                                              \
        if (*p)                                                                                    \
            func(*p);                                                                              \
    }

#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _tmp_ = (p);                                                                 \
        (p) = NULL;                                                                                \
        _tmp_;                                                                                     \
    })

#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int _tmp_ = (fd);                                                                          \
        (fd) = -1;                                                                                 \
        _tmp_;                                                                                     \
    })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Negative errno of the last failed libc call, never 0 (EIO when errno was not set). */
static inline int neg_errno(void)
{
    return errno > 0 ? -errno : -EIO;
}
