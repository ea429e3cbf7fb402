/*
 * isal_lib.c: the ISA-L functions thinimg calls, forwarded to ISA-L loaded on first use. See
 * isal_lib.h and util/dynlib.h.
 */
#include "archive/isal_lib.h"

#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>

#include "util/dynlib.h"

#ifndef THINIMG_ISAL_SONAME
#error "THINIMG_ISAL_SONAME is defined by CMakeLists.txt (thinimg_loaded_on_use)"
#endif

/* Every ISA-L function the tree calls. */
#define ISAL_LIB_FUNCTIONS(X)                                                                      \
    X(isal_inflate_init)                                                                           \
    X(isal_inflate_reset)                                                                          \
    X(isal_inflate)                                                                                \
    X(crc32_gzip_refl)

DYNLIB_DEFINE(isal_lib, ISAL_LIB_FUNCTIONS, .soname = THINIMG_ISAL_SONAME,
              .used_for = "reading gzip layers (fetch, extract, process-image)",
              .package = "libisal2 (Debian, Ubuntu; Fedora: isa-l)");

DYNLIB_ACCESSORS(isal_lib, isal_lib)

/* Without ISA-L (gunzip_new() refuses first, so only a misuse gets here): an inflate error. */
DYNLIB_FORWARD(isal_lib, int, isal_inflate, ISAL_INVALID_STATE, (struct inflate_state * state),
               (state))
DYNLIB_FORWARD(isal_lib, uint32_t, crc32_gzip_refl, 0,
               (uint32_t init_crc, const unsigned char *buf, uint64_t len), (init_crc, buf, len))

DYNLIB_FORWARD_VOID(isal_lib, isal_inflate_init, (struct inflate_state * state), (state))
DYNLIB_FORWARD_VOID(isal_lib, isal_inflate_reset, (struct inflate_state * state), (state))
