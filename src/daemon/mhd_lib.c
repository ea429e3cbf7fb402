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

/* FORWARD(ret, name, fail, (params), (args)): `ret name(params)` calling the real function
 * with args, or returning fail when libmicrohttpd cannot be loaded; VOID_FORWARD the same for
 * a function that returns nothing. */
#define FORWARD(ret, name, fail, params, args)                                                     \
    DYNLIB_FORWARD(mhd_lib, ret, name, fail, params, args)
#define VOID_FORWARD(name, params, args) DYNLIB_FORWARD_VOID(mhd_lib, name, params, args)

VOID_FORWARD(MHD_stop_daemon, (struct MHD_Daemon * daemon), (daemon))
FORWARD(MHD_socket, MHD_quiesce_daemon, MHD_INVALID_SOCKET, (struct MHD_Daemon * daemon), (daemon))
FORWARD(const char *, MHD_lookup_connection_value, NULL,
        (struct MHD_Connection * connection, enum MHD_ValueKind kind, const char *key),
        (connection, kind, key))
VOID_FORWARD(MHD_suspend_connection, (struct MHD_Connection * connection), (connection))
VOID_FORWARD(MHD_resume_connection, (struct MHD_Connection * connection), (connection))
FORWARD(struct MHD_Response *, MHD_create_response_from_buffer, NULL,
        (size_t size, void *buffer, enum MHD_ResponseMemoryMode mode), (size, buffer, mode))
FORWARD(enum MHD_Result, MHD_add_response_header, MHD_NO,
        (struct MHD_Response * response, const char *header, const char *content),
        (response, header, content))
FORWARD(enum MHD_Result, MHD_queue_response, MHD_NO,
        (struct MHD_Connection * connection, unsigned int status_code,
         struct MHD_Response *response),
        (connection, status_code, response))
VOID_FORWARD(MHD_destroy_response, (struct MHD_Response * response), (response))

/* The variadic two are written out: FORWARD cannot pass a `...` on (see the top of the file). */
struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
    typeof(&MHD_start_daemon_va) f = DYNLIB_REAL(mhd_lib, MHD_start_daemon_va);
    if (!f)
        return NULL;
    va_list ap;
    va_start(ap, dh_cls);
    struct MHD_Daemon *d = f(flags, port, apc, apc_cls, dh, dh_cls, ap);
    va_end(ap);
    return d;
}

const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *connection,
                                                        enum MHD_ConnectionInfoType info_type, ...)
{
    typeof(&MHD_get_connection_info) f = DYNLIB_REAL(mhd_lib, MHD_get_connection_info);
    return f ? f(connection, info_type) : NULL;
}
