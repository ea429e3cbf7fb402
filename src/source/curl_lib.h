/*
 * curl_lib.h: libcurl, loaded on first use (util/dynlib.h explains why and how).
 *
 * thinimg does not link libcurl: curl_lib.c defines the libcurl functions the tree calls
 * (the list is in curl_lib.c) and forwards each to the library, which it dlopen()s by the
 * soname found at build time on the first call. Code keeps calling curl_easy_init() and the
 * rest with <curl/curl.h> as usual; calling a libcurl function that is not on the list fails
 * at link time (undefined reference): add it to the list.
 *
 * Entry points that can report an error call curl_lib_load() before their first libcurl call,
 * so that a missing libcurl is one clear message (what needs it, the package to install) and
 * -ELIBACC, not a NULL handle read as "out of memory".
 */
#pragma once

#include <stdbool.h>

#include "util/err.h"

/* Loads libcurl once: 0, or -ELIBACC with the reason and the package to install in e. */
int curl_lib_load(struct err *e);

/* True when libcurl is loaded in this process (tests: a local command must not load it). */
bool curl_lib_loaded(void);

/* The soname thinimg loads ("libcurl.so.4"). */
const char *curl_lib_soname(void);
