/*
 * api.c: the error mapping of the admin API (see api.h): errno <-> HTTP status and reason.
 * The errno's kind (util/err.h err_kind_of) decides, as it decides the CLI's exit code, so a
 * failure reported by the daemon ends a forwarding CLI command with the same exit code as the
 * local path.
 */
#include "daemon/api.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "util/err.h"

static const struct {
    const char *reason;
    unsigned status;
    int err;
} reasons[] = {
    {"invalid", 400, EINVAL},        {"not_found", 404, ENOENT},
    {"method", 405, EINVAL},         {"busy", 409, EBUSY},
    {"too_large", 413, EMSGSIZE},    {"rejected", 422, EBADMSG},
    {"internal", 500, EIO},          {"unhealthy", 503, EHOSTDOWN},
    {"shutting_down", 503, ESHUTDOWN}, {"permission", 403, EACCES},
    {"transient", 502, ETIMEDOUT},   {"interrupted", 409, ECANCELED},
    {"corrupt", 500, ENOTRECOVERABLE}, {"read_only", 503, EROFS},
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

unsigned api_status_for_kind(enum err_kind k, const char **reason)
{
    /* The reasons are the kinds' own names (err_kind_name), plus "method". */
    return set(err_kind_name(k), reason);
}

unsigned api_status_for_errno(int r, const char **reason)
{
    return api_status_for_kind(err_kind_of(r), reason);
}

int api_errno_for_reason(const char *reason)
{
    for (size_t i = 0; reason && i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (!strcmp(reasons[i].reason, reason))
            return -reasons[i].err;
    return -EIO;
}
