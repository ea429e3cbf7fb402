/*
 * err.h: an error that carries a message for a human.
 *
 * The project's one error convention is "return 0 (or a positive count) on success, a negative
 * errno on failure". Where the caller needs to tell an operator *what* failed and *what to do*
 * (a rejected archive entry, a refused pool, a 403 from S3), the function also takes a
 * `struct err *` and fills it. Passing NULL is always allowed.
 *
 *     if (size > limit)
 *         return err_set(e, -EFBIG, "entry %s: file size %zu over limit %zu", name, size, limit);
 *
 * err_set() returns its code so that the line above is a single statement. The first error set
 * wins: a later err_set() on an already-set err only keeps the code (context added by callers
 * goes through err_prefix()).
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>

#define ERR_MSG_MAX 1024

struct err {
    int code;               /* negative errno, 0 when no error is set */
    char msg[ERR_MSG_MAX];  /* NUL-terminated, "" when no error is set */
};

/* Sets the error (if e and no error is set yet) and returns code (always negative). */
int err_set(struct err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int err_setv(struct err *e, int code, const char *fmt, va_list ap);

/* Puts "prefix: " before the existing message; returns e->code. */
int err_prefix(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets the error from a code alone, with strerror() as the message, unless one is set. */
int err_errno(struct err *e, int code, const char *what);

void err_clear(struct err *e);

/* What kind of failure a negative errno is. The kind is what travels: a failing FSM
 * transition returns it with its message, the engine stores it with the run, and the CLI's exit
 * codes (cli/common.c), the admin API's statuses (daemon/api.c) and the retry decision all come
 * from it, never from the message's words. The values are stored by name (err_kind_name), so
 * their order may change; new kinds go at the end. */
enum err_kind {
    ERR_KIND_OTHER = 0,   /* anything else: an internal error (EIO, ENOMEM, ...) */
    ERR_KIND_INVALID,     /* EINVAL: a bad request or command line */
    ERR_KIND_NOT_FOUND,   /* ENOENT, ENXIO */
    ERR_KIND_BUSY,        /* EBUSY, EAGAIN: locked or in use */
    ERR_KIND_REJECTED,    /* EBADMSG, EPERM, ENOTSUP, EILSEQ, ENAMETOOLONG, EFBIG, ELOOP, EXDEV */
    ERR_KIND_UNHEALTHY,   /* EHOSTDOWN, ENODEV, ELIBACC, ENOSPC, EUCLEAN: host or pool refuses */
    ERR_KIND_SHUTDOWN,    /* ESHUTDOWN: the service is stopping */
    ERR_KIND_TOO_LARGE,   /* EMSGSIZE: a request over its size limit */
    ERR_KIND_PERMISSION,  /* EACCES: access denied (by a source, or this user lacks a privilege) */
    ERR_KIND_TRANSIENT,   /* ETIMEDOUT, ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH,
                           * EREMOTEIO, ESTALE, EPIPE: another try may succeed */
    ERR_KIND_INTERRUPTED, /* ECANCELED, EINTR: cancelled or interrupted */
    ERR_KIND_CORRUPT,     /* ENOTRECOVERABLE: the database file is damaged (store/db.h) */
    ERR_KIND_READ_ONLY,   /* EROFS: what thinimg must write is on a read-only file system */
};
#define ERR_KIND_COUNT (ERR_KIND_READ_ONLY + 1)

enum err_kind err_kind_of(int code);
/* A stable name ("not_found", "rejected", "internal" for OTHER, ...): what the database
 * stores and the API reports as its "reason". */
const char *err_kind_name(enum err_kind k);
/* The kind for a name; ERR_KIND_OTHER for NULL or an unknown name. */
enum err_kind err_kind_parse(const char *name);
/* True for the kinds another attempt cannot change (invalid, not found, rejected, too large,
 * permission, corrupt, read-only): the FSM engine ends a run at once on them instead of
 * retrying; the operator has to act (a restored database, a file system remounted read-write). */
bool err_kind_deterministic(enum err_kind k);
/* A negative errno of this kind, for interfaces that take one (e.g. cli_exit_code()). */
int err_kind_errno(enum err_kind k);

/* The message, or strerror(-code) when none was given. Never NULL. */
const char *err_str(const struct err *e);
