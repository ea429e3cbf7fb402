/*
 * curl_lib.c: the libcurl functions thinimg calls, forwarded to libcurl loaded on first use.
 * See curl_lib.h and util/dynlib.h.
 *
 * Each function has libcurl's own name and prototype (from <curl/curl.h>) and calls the real
 * one through the address dynlib resolved. When libcurl cannot be loaded it returns what
 * libcurl returns for a failure (NULL, CURLE_FAILED_INIT) and the reason is logged once.
 *
 * The two variadic functions cannot forward a va_list (libcurl exports no va_list variants),
 * so they read their one argument with its type and pass it on, as libcurl decodes it:
 * curl_easy_setopt() by the option's number range (CURLOPTTYPE_LONG, OBJECTPOINT and
 * FUNCTIONPOINT, OFF_T, BLOB: curl/curl.h), curl_easy_getinfo() always a pointer.
 */
#define CURL_DISABLE_TYPECHECK /* the definitions below must not be rewritten by its macros */
#include "source/curl_lib.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stddef.h>

#include "util/dynlib.h"

#ifndef THINIMG_CURL_SONAME
#error "THINIMG_CURL_SONAME is defined by CMakeLists.txt (thinimg_loaded_on_use)"
#endif

/* Every libcurl function the tree calls. */
#define CURL_LIB_FUNCTIONS(X)                                                                      \
    X(curl_global_init)                                                                            \
    X(curl_easy_init)                                                                              \
    X(curl_easy_setopt)                                                                            \
    X(curl_easy_perform)                                                                           \
    X(curl_easy_getinfo)                                                                           \
    X(curl_easy_reset)                                                                             \
    X(curl_easy_cleanup)                                                                           \
    X(curl_easy_strerror)                                                                          \
    X(curl_slist_append)                                                                           \
    X(curl_slist_free_all)                                                                         \
    X(curl_getdate)

DYNLIB_DEFINE(curl_lib, CURL_LIB_FUNCTIONS, .soname = THINIMG_CURL_SONAME,
              .used_for = "the s3://, http(s):// and docker:// sources and the daemon client",
              .package = "libcurl (Debian, Ubuntu: libcurl4; Fedora: libcurl)");

DYNLIB_ACCESSORS(curl_lib, curl_lib)

/* FORWARD(ret, name, fail, (params), (args)): `ret name(params)` calling the real function
 * with args, or returning fail when libcurl cannot be loaded; VOID_FORWARD the same for a
 * function that returns nothing. */
#define FORWARD(ret, name, fail, params, args)                                                     \
    DYNLIB_FORWARD(curl_lib, ret, name, fail, params, args)
#define VOID_FORWARD(name, params, args) DYNLIB_FORWARD_VOID(curl_lib, name, params, args)

FORWARD(CURLcode, curl_global_init, CURLE_FAILED_INIT, (long flags), (flags))
FORWARD(CURL *, curl_easy_init, NULL, (void), ())
FORWARD(CURLcode, curl_easy_perform, CURLE_FAILED_INIT, (CURL * curl), (curl))
VOID_FORWARD(curl_easy_reset, (CURL * curl), (curl))
VOID_FORWARD(curl_easy_cleanup, (CURL * curl), (curl))
FORWARD(const char *, curl_easy_strerror, "libcurl is not available", (CURLcode code), (code))
FORWARD(struct curl_slist *, curl_slist_append, NULL,
        (struct curl_slist * list, const char *string), (list, string))
VOID_FORWARD(curl_slist_free_all, (struct curl_slist * list), (list))
FORWARD(time_t, curl_getdate, -1, (const char *p, const time_t *unused), (p, unused))

/* The variadic two are written out: FORWARD cannot pass a `...` on (see the top of the file). */
CURLcode(curl_easy_setopt)(CURL *curl, CURLoption option, ...)
{
    typeof(&curl_easy_setopt) f = DYNLIB_REAL(curl_lib, curl_easy_setopt);
    if (!f)
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, option);
    CURLcode rc;
    if (option < CURLOPTTYPE_OBJECTPOINT)
        rc = f(curl, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        rc = f(curl, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T)
        rc = f(curl, option, va_arg(ap, void (*)(void)));
    else if (option < CURLOPTTYPE_BLOB)
        rc = f(curl, option, va_arg(ap, curl_off_t));
    else
        rc = f(curl, option, va_arg(ap, struct curl_blob *));
    va_end(ap);
    return rc;
}

CURLcode(curl_easy_getinfo)(CURL *curl, CURLINFO info, ...)
{
    typeof(&curl_easy_getinfo) f = DYNLIB_REAL(curl_lib, curl_easy_getinfo);
    if (!f)
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, info);
    CURLcode rc = f(curl, info, va_arg(ap, void *));
    va_end(ap);
    return rc;
}
