/*
 * api.c: the error mapping of the admin API (see api.h): errno <-> HTTP status and reason.
 * It mirrors the CLI's errno -> exit code mapping (cli/common.c), so a failure reported by
 * the daemon ends a forwarding CLI command with the same exit code as the local path.
 */
#include "daemon/api.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

static const struct {
    const char *reason;
    unsigned status;
    int err;
} reasons[] = {
    {"invalid", 400, EINVAL},   {"not_found", 404, ENOENT},   {"method", 405, EINVAL},
    {"busy", 409, EBUSY},       {"too_large", 413, EMSGSIZE}, {"rejected", 422, EBADMSG},
    {"internal", 500, EIO},     {"unhealthy", 503, EHOSTDOWN}, {"shutting_down", 503, ESHUTDOWN},
};

static unsigned set(const char *reason, const char **out)
{
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (!strcmp(reasons[i].reason, reason)) {
            if (out)
                *out = reasons[i].reason;
            return reasons[i].status;
        }
    if (out)
        *out = "internal";
    return 500;
}

unsigned api_status_for_errno(int r, const char **reason)
{
    switch (r < 0 ? -r : r) {
    case EINVAL:
    case EDOM:
    case ERANGE: return set("invalid", reason);
    case ENOENT:
    case ENXIO: return set("not_found", reason);
    case EBUSY:
    case EAGAIN:
    case EALREADY: return set("busy", reason);
    case EMSGSIZE: return set("too_large", reason);
    case EBADMSG:
    case EPERM:
    case ENOTSUP:
    case EILSEQ:
    case ENAMETOOLONG:
    case EFBIG:
    case ELOOP:
    case EXDEV: return set("rejected", reason);
    case EHOSTDOWN:
    case EROFS:
    case ENOSPC:
    case EUCLEAN: return set("unhealthy", reason);
    case ESHUTDOWN: return set("shutting_down", reason);
    default: return set("internal", reason);
    }
}

int api_errno_for_reason(const char *reason)
{
    for (size_t i = 0; reason && i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (!strcmp(reasons[i].reason, reason))
            return -reasons[i].err;
    return -EIO;
}
