/*
 * mhd_lib.c: the libmicrohttpd functions the daemon calls, forwarded to the library loaded on
 * first use. See mhd_lib.h and util/dynlib.h.
 *
 * Each function has libmicrohttpd's own name and prototype (from <microhttpd.h>). When the
 * library cannot be loaded it returns what the library returns for a failure (NULL, MHD_NO,
 * MHD_INVALID_SOCKET) and the reason is logged once. The variadic MHD_start_daemon() forwards
 * its options to MHD_start_daemon_va(); MHD_get_connection_info() takes no argument after the
 * info type for any type this version defines, so none is passed on.
 */
#include "daemon/mhd_lib.h"

#include <microhttpd.h>
#include <stdarg.h>
#include <stddef.h>

#include "util/dynlib.h"

#ifndef THINIMG_MHD_SONAME
#error "THINIMG_MHD_SONAME is defined by CMakeLists.txt (thinimg_loaded_on_use)"
#endif

/* Every libmicrohttpd function the daemon calls (MHD_start_daemon through its _va form). */
#define MHD_LIB_FUNCTIONS(X)                                                                       \
    X(MHD_start_daemon_va)                                                                         \
    X(MHD_stop_daemon)                                                                             \
    X(MHD_quiesce_daemon)                                                                          \
    X(MHD_lookup_connection_value)                                                                 \
    X(MHD_get_connection_info)                                                                     \
    X(MHD_suspend_connection)                                                                      \
    X(MHD_resume_connection)                                                                       \
    X(MHD_create_response_from_buffer)                                                             \
    X(MHD_add_response_header)                                                                     \
    X(MHD_queue_response)                                                                          \
    X(MHD_destroy_response)

DYNLIB_DEFINE(mhd_lib, MHD_LIB_FUNCTIONS, .soname = THINIMG_MHD_SONAME,
              .used_for = "the daemon's admin API and /metrics servers",
              .package = "libmicrohttpd (Debian, Ubuntu: libmicrohttpd12; Fedora: libmicrohttpd)");

DYNLIB_ACCESSORS(mhd_lib, mhd_lib)

#define MHD_REAL(name) DYNLIB_REAL(mhd_lib, name)

struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
    typeof(&MHD_start_daemon_va) f = MHD_REAL(MHD_start_daemon_va);
    if (!f)
        return NULL;
    va_list ap;
    va_start(ap, dh_cls);
    struct MHD_Daemon *d = f(flags, port, apc, apc_cls, dh, dh_cls, ap);
    va_end(ap);
    return d;
}

void MHD_stop_daemon(struct MHD_Daemon *daemon)
{
    typeof(&MHD_stop_daemon) f = MHD_REAL(MHD_stop_daemon);
    if (f)
        f(daemon);
}

MHD_socket MHD_quiesce_daemon(struct MHD_Daemon *daemon)
{
    typeof(&MHD_quiesce_daemon) f = MHD_REAL(MHD_quiesce_daemon);
    return f ? f(daemon) : MHD_INVALID_SOCKET;
}

const char *MHD_lookup_connection_value(struct MHD_Connection *connection, enum MHD_ValueKind kind,
                                        const char *key)
{
    typeof(&MHD_lookup_connection_value) f = MHD_REAL(MHD_lookup_connection_value);
    return f ? f(connection, kind, key) : NULL;
}

const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *connection,
                                                        enum MHD_ConnectionInfoType info_type, ...)
{
    typeof(&MHD_get_connection_info) f = MHD_REAL(MHD_get_connection_info);
    return f ? f(connection, info_type) : NULL;
}

void MHD_suspend_connection(struct MHD_Connection *connection)
{
    typeof(&MHD_suspend_connection) f = MHD_REAL(MHD_suspend_connection);
    if (f)
        f(connection);
}

void MHD_resume_connection(struct MHD_Connection *connection)
{
    typeof(&MHD_resume_connection) f = MHD_REAL(MHD_resume_connection);
    if (f)
        f(connection);
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
                                                     enum MHD_ResponseMemoryMode mode)
{
    typeof(&MHD_create_response_from_buffer) f = MHD_REAL(MHD_create_response_from_buffer);
    return f ? f(size, buffer, mode) : NULL;
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *response, const char *header,
                                        const char *content)
{
    typeof(&MHD_add_response_header) f = MHD_REAL(MHD_add_response_header);
    return f ? f(response, header, content) : MHD_NO;
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *connection, unsigned int status_code,
                                   struct MHD_Response *response)
{
    typeof(&MHD_queue_response) f = MHD_REAL(MHD_queue_response);
    return f ? f(connection, status_code, response) : MHD_NO;
}

void MHD_destroy_response(struct MHD_Response *response)
{
    typeof(&MHD_destroy_response) f = MHD_REAL(MHD_destroy_response);
    if (f)
        f(response);
}
