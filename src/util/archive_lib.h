/*
 * archive_lib.h: libarchive, loaded on first use (util/dynlib.h explains why and how).
 *
 * thinimg does not link libarchive: with libxml2, ICU, libstdc++ and five compressors its tree
 * is half of what the other commands would load at start, and only the commands that read
 * layers (fetch's validation, unpack, extract) use it. archive_lib.c defines the libarchive
 * functions the tree calls (the list is there) and forwards each to the library, dlopen()ed
 * by the soname found at build time on the first call. The shim lives here, below src/archive
 * (its one user), so that module keeps calling libarchive as usual; a call to a libarchive
 * function not on the list fails at link time (undefined reference): add it to the list.
 *
 * A missing libarchive is logged once, naming the library and the package, and the forwarded
 * calls fail as libarchive fails (archive_read_new() returns NULL, the rest ARCHIVE_FATAL);
 * archive_lib_load() reports it as -ELIBACC for callers that check first.
 */
#pragma once

#include <stdbool.h>

#include "util/err.h"

/* Loads libarchive once: 0, or -ELIBACC with the reason and the package to install in e. */
int archive_lib_load(struct err *e);

/* True when libarchive is loaded in this process. */
bool archive_lib_loaded(void);

/* The soname thinimg loads ("libarchive.so.13"). */
const char *archive_lib_soname(void);
