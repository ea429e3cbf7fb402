/*
 * dynlib.h: a shared library loaded when it is first used, not when the process starts.
 *
 * Why: every `thinimg` command pays for the libraries the executable lists as NEEDED before
 * main() runs (the dynamic loader maps and relocates each one and its whole dependency tree).
 * libcurl (with gnutls, krb5, ldap, ssh2, rtmp, nghttp2, ...) and libmicrohttpd were about half
 * of the 52 libraries and of the start-up time of every command, yet only the s3/http(s)/docker
 * sources, the daemon client and the daemon's server use them; `activate`, `list-images` and
 * the other local commands never do. Such a library is not linked; a *shim* (one file per
 * library: src/source/curl_lib.c, src/daemon/mhd_lib.c, src/util/archive_lib.c,
 * src/util/crypto_lib.c, src/archive/isal_lib.c, src/tui/curses_lib.c) defines the functions
 * the tree calls, with the library's own names and prototypes (from its -dev package's header),
 * and each one forwards to the real function, which dynlib resolves on the first call. The call
 * sites stay as they are, and so do the headers' compile-time checks (curl's typecheck macros).
 *
 * Loading: dlopen() of the exact soname the build found (CMake reads it from the -dev
 * package's library, so the ABI is the one the headers describe), RTLD_NOW | RTLD_LOCAL, then
 * dlsym() of every listed function: a library without one of them is refused as a whole, at
 * load time, never half-used. The outcome is kept: a failed load is not retried (installing
 * the package needs a restart of a running daemon).
 *
 * Errors: a library that cannot be loaded is -ELIBACC (kind "unhealthy": the host lacks
 * something, like a missing device-mapper driver) with a message that names the library, what
 * needs it, why dlopen failed and the package to install. Entry points that can report an
 * error (opening an http source, the daemon client, the daemon's server) call dynlib_load()
 * first; a shim's function called without it still never crashes: it logs the message once
 * and returns the library's own failure value (NULL, an error code).
 *
 * Thread safety: dynlib_load() and dynlib_fn() may be called from any thread; the first load
 * is serialized, later calls read the kept outcome with one atomic load.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

#define DYNLIB_ERROR_MAX 512

struct dynlib {
    const char *soname;       /* "libcurl.so.4": the exact name, as the build found it */
    const char *used_for;     /* "the s3, http(s) and docker sources and the daemon client" */
    const char *package;      /* what to install, e.g. "libcurl4 (Debian, Ubuntu)" */
    const char *const *names; /* the functions to resolve, in the order of slots */
    void **slots;             /* their addresses, filled by the load */
    size_t count;
    /* Private: 0 not tried yet, 1 loaded, a negative errno when the load failed (kept). */
    int state;
    bool logged; /* the failure was logged by dynlib_fn() */
    char error[DYNLIB_ERROR_MAX];
};

/* Loads the library and resolves its functions, once. 0, or -ELIBACC with the message in e. */
int dynlib_load(struct dynlib *lib, struct err *e);

/* The address of function i (an index into names), loading the library first; NULL when it
 * cannot be loaded (the reason is logged once). For the shims' forwarding functions. */
void *dynlib_fn(struct dynlib *lib, size_t i);

/* True when the library is loaded already (tests, `thinimg version`); never loads it. */
bool dynlib_loaded(const struct dynlib *lib);

/* For a shim: `DYNLIB_DEFINE(var, FUNCTIONS, .soname = ..., .used_for = ..., .package = ...);`
 * defines `static struct dynlib var` for the functions an X-macro lists
 * (`#define FUNCTIONS(X) X(curl_easy_init) X(curl_easy_cleanup) ...`), and
 * DYNLIB_REAL(var, name) is the real function `name`, with the type its header declares, or
 * NULL when the library cannot be loaded. One shim per file: the indexes are file-scoped. */
#define DYNLIB_INDEX_(name) dynlib_index_##name,
#define DYNLIB_NAME_(name)  #name,
#define DYNLIB_DEFINE(var, FUNCTIONS, ...)                                                         \
    enum { FUNCTIONS(DYNLIB_INDEX_) var##_count };                                                 \
    static const char *const var##_names[] = {FUNCTIONS(DYNLIB_NAME_)};                            \
    static void *var##_slots[var##_count];                                                         \
    static struct dynlib var = {__VA_ARGS__, .names = var##_names, .slots = var##_slots,           \
                                .count = var##_count}
#define DYNLIB_REAL(var, name) ((typeof(&name))dynlib_fn(&(var), dynlib_index_##name))

/* For a shim: `DYNLIB_ACCESSORS(prefix, var)` defines prefix_load(e) (dynlib_load()),
 * prefix_loaded() (dynlib_loaded()) and prefix_soname() over the `var` DYNLIB_DEFINE made; the
 * shim's header declares them. */
#define DYNLIB_ACCESSORS(prefix, var)                                                              \
    int prefix##_load(struct err *e)                                                               \
    {                                                                                              \
        return dynlib_load(&(var), e);                                                             \
    }                                                                                              \
    bool prefix##_loaded(void)                                                                     \
    {                                                                                              \
        return dynlib_loaded(&(var));                                                              \
    }                                                                                              \
    const char *prefix##_soname(void)                                                              \
    {                                                                                              \
        return (var).soname;                                                                       \
    }

/* For a shim: `DYNLIB_FORWARD(var, ret, name, fail, (params), (args))` defines `ret
 * name(params)`, which calls the real function with args, or returns fail when the library
 * cannot be loaded (the reason logged once, see dynlib_fn()). DYNLIB_FORWARD_VOID(var, name,
 * (params), (args)) is the same for a function that returns nothing: without the library it
 * does nothing. Variadic functions cannot use either (a `...` cannot be passed on): a shim
 * writes those by hand. */
#define DYNLIB_FORWARD(var, ret, name, fail, params, args)                                         \
    ret name params                                                                                \
    {                                                                                              \
        typeof(&name) f = DYNLIB_REAL(var, name);                                                  \
        return f ? f args : (fail);                                                                \
    }
#define DYNLIB_FORWARD_VOID(var, name, params, args)                                               \
    void name params                                                                               \
    {                                                                                              \
        typeof(&name) f = DYNLIB_REAL(var, name);                                                  \
        if (f)                                                                                     \
            f args;                                                                                \
    }
