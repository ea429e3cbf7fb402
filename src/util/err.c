/*
 * err.c: human-readable errors carried next to negative errno returns. See err.h.
 */
#include "util/err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int err_setv(struct err *e, int code, const char *fmt, va_list ap)
{
    if (code >= 0)
        code = -EIO;
    if (!e)
        return code;
    if (e->code != 0)
        return e->code;
    e->code = code;
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    return code;
}

int err_set(struct err *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_setv(e, code, fmt, ap);
    va_end(ap);
    return r;
}

int err_prefix(struct err *e, const char *fmt, ...)
{
    if (!e)
        return -EIO;
    char prefix[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    char old[ERR_MSG_MAX];
    snprintf(old, sizeof(old), "%s", err_str(e));
    snprintf(e->msg, sizeof(e->msg), "%s: %s", prefix, old);
    if (e->code == 0)
        e->code = -EIO;
    return e->code;
}

int err_errno(struct err *e, int code, const char *what)
{
    if (code >= 0)
        code = -EIO;
    return err_set(e, code, "%s: %s", what, strerror(-code));
}

void err_clear(struct err *e)
{
    if (!e)
        return;
    e->code = 0;
    e->msg[0] = '\0';
}

const char *err_str(const struct err *e)
{
    if (!e)
        return "unknown error";
    if (e->msg[0])
        return e->msg;
    if (e->code)
        return strerror(-e->code);
    return "no error";
}

enum err_kind err_kind_of(int code)
{
    switch (code < 0 ? -code : code) {
    case EINVAL:
    case EISDIR:          /* a location that names a directory, not an object */
    case EPROTONOSUPPORT: /* a URL scheme thinimg does not speak */
        return ERR_KIND_INVALID;
    case ENOENT:
    case ENXIO: return ERR_KIND_NOT_FOUND;
    case EBUSY:
    case EAGAIN: return ERR_KIND_BUSY;
    case EBADMSG:
    case EPERM:
    case ENOTSUP:
    case EILSEQ:
    case ENAMETOOLONG:
    case EFBIG:
    case ELOOP:
    case EXDEV: return ERR_KIND_REJECTED;
    case EHOSTDOWN:
    case ENODEV: /* no device-mapper driver: the host cannot do the work */
    case ELIBACC: /* a library loaded on use is missing (util/dynlib.h): likewise */
    case ENOSPC:
    case EUCLEAN: return ERR_KIND_UNHEALTHY;
    case ESHUTDOWN: return ERR_KIND_SHUTDOWN;
    case EMSGSIZE: return ERR_KIND_TOO_LARGE;
    case EACCES: return ERR_KIND_PERMISSION;
    case ETIMEDOUT:
    case ECONNREFUSED:
    case ECONNRESET:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EREMOTEIO:
    case ESTALE:
    case EPIPE: return ERR_KIND_TRANSIENT;
    case ECANCELED:
    case EINTR: return ERR_KIND_INTERRUPTED;
    case ENOTRECOVERABLE: return ERR_KIND_CORRUPT;
    case EROFS: return ERR_KIND_READ_ONLY;
    default: return ERR_KIND_OTHER;
    }
}

static const struct {
    const char *name;
    int code;
} kinds[ERR_KIND_COUNT] = {
    [ERR_KIND_OTHER] = {"internal", -EIO},
    [ERR_KIND_INVALID] = {"invalid", -EINVAL},
    [ERR_KIND_NOT_FOUND] = {"not_found", -ENOENT},
    [ERR_KIND_BUSY] = {"busy", -EBUSY},
    [ERR_KIND_REJECTED] = {"rejected", -EBADMSG},
    [ERR_KIND_UNHEALTHY] = {"unhealthy", -EHOSTDOWN},
    [ERR_KIND_SHUTDOWN] = {"shutting_down", -ESHUTDOWN},
    [ERR_KIND_TOO_LARGE] = {"too_large", -EMSGSIZE},
    [ERR_KIND_PERMISSION] = {"permission", -EACCES},
    [ERR_KIND_TRANSIENT] = {"transient", -ETIMEDOUT},
    [ERR_KIND_INTERRUPTED] = {"interrupted", -ECANCELED},
    [ERR_KIND_CORRUPT] = {"corrupt", -ENOTRECOVERABLE},
    [ERR_KIND_READ_ONLY] = {"read_only", -EROFS},
};

const char *err_kind_name(enum err_kind k)
{
    return (unsigned)k < ERR_KIND_COUNT ? kinds[k].name : kinds[ERR_KIND_OTHER].name;
}

enum err_kind err_kind_parse(const char *name)
{
    for (int k = 0; name && k < ERR_KIND_COUNT; k++)
        if (!strcmp(kinds[k].name, name))
            return (enum err_kind)k;
    return ERR_KIND_OTHER;
}

bool err_kind_deterministic(enum err_kind k)
{
    switch (k) {
    case ERR_KIND_INVALID:
    case ERR_KIND_NOT_FOUND:
    case ERR_KIND_REJECTED:
    case ERR_KIND_TOO_LARGE:
    case ERR_KIND_PERMISSION:
    case ERR_KIND_CORRUPT:
    case ERR_KIND_READ_ONLY: return true;
    default: return false;
    }
}

int err_kind_errno(enum err_kind k)
{
    return (unsigned)k < ERR_KIND_COUNT ? kinds[k].code : -EIO;
}
