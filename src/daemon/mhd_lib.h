/*
 * mhd_lib.h: libmicrohttpd, loaded on first use (util/dynlib.h explains why and how).
 *
 * thinimg does not link libmicrohttpd: only the daemon serves HTTP, so the other commands
 * should not load it and its dependency tree. mhd_lib.c defines the MHD_* functions the daemon
 * calls (the list is there) and forwards each to the library, dlopen()ed by the soname found
 * at build time on the first call. A call to an MHD function not on the list fails at link
 * time: add it to the list. http_server_start() calls mhd_lib_load() first, so a missing
 * library is one clear error (-ELIBACC, what needs it, the package to install).
 */
#pragma once

#include <stdbool.h>

#include "util/err.h"

/* Loads libmicrohttpd once: 0, or -ELIBACC with the reason and the package to install in e. */
int mhd_lib_load(struct err *e);

/* True when libmicrohttpd is loaded in this process. */
bool mhd_lib_loaded(void);

/* The soname thinimg loads ("libmicrohttpd.so.12"). */
const char *mhd_lib_soname(void);
