/*
 * isal_lib.h: Intel's ISA-L (the gzip inflater, archive/gunzip.c), loaded on first use
 * (util/dynlib.h explains why and how).
 *
 * Only the commands that read a gzip layer use it (fetch, extract, process-image); linked,
 * every command paid for its symbol bindings before main() (211: Debian builds it with
 * BIND_NOW). isal_lib.c defines the ISA-L functions gunzip.c calls and forwards each to the
 * library, dlopen()ed by the soname found at build time.
 *
 * gunzip_new() loads it first and fails with -ELIBACC (the reason and the package logged once)
 * when it is missing, so no gzip stream is ever read half-way without it.
 */
#pragma once

#include <stdbool.h>

#include "util/err.h"

/* Loads ISA-L once: 0, or -ELIBACC with the reason and the package to install in e. */
int isal_lib_load(struct err *e);

/* True when ISA-L is loaded in this process. */
bool isal_lib_loaded(void);

/* The soname thinimg loads ("libisal.so.2"). */
const char *isal_lib_soname(void);
