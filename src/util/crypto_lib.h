/*
 * crypto_lib.h: OpenSSL's libcrypto, loaded on first use (util/dynlib.h explains why and how).
 *
 * thinimg uses libcrypto for SHA-256 (blob digests, diff ids), HMAC-SHA256 (S3 request
 * signing) and base64 (registry credentials): only the commands that fetch, read layers or
 * talk to a registry. Yet linked, it was two thirds of the symbol relocations every command's
 * start paid (4,191 of 6,269: Debian builds it with BIND_NOW, so each of its imports is bound
 * before main()). crypto_lib.c defines the libcrypto functions the tree calls (the list is
 * there) and forwards each to the library, dlopen()ed by the soname found at build time on the
 * first call; a call to a function not on the list fails at link time: add it to the list.
 *
 * A missing libcrypto is logged once, naming the library and the package; the forwarded calls
 * fail as libcrypto fails (NULL, 0; base64 gives an empty string). sha256_init() loads it
 * first and reports -ELIBACC with the reason.
 */
#pragma once

#include <stdbool.h>

#include "util/err.h"

/* Loads libcrypto once: 0, or -ELIBACC with the reason and the package to install in e. */
int crypto_lib_load(struct err *e);

/* True when libcrypto is loaded in this process. */
bool crypto_lib_loaded(void);

/* The soname thinimg loads ("libcrypto.so.3"). */
const char *crypto_lib_soname(void);
