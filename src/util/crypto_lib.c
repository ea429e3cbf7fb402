/*
 * crypto_lib.c: the libcrypto functions thinimg calls, forwarded to libcrypto loaded on first
 * use. See crypto_lib.h and util/dynlib.h.
 */
#include "util/crypto_lib.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "util/dynlib.h"

#ifndef THINIMG_CRYPTO_SONAME
#error "THINIMG_CRYPTO_SONAME is defined by CMakeLists.txt (thinimg_loaded_on_use)"
#endif

/* Every libcrypto function the tree calls. */
#define CRYPTO_LIB_FUNCTIONS(X)                                                                    \
    X(EVP_sha256)                                                                                  \
    X(EVP_MD_CTX_new)                                                                              \
    X(EVP_MD_CTX_free)                                                                             \
    X(EVP_DigestInit_ex)                                                                           \
    X(EVP_DigestUpdate)                                                                            \
    X(EVP_DigestFinal_ex)                                                                          \
    X(EVP_EncodeBlock)                                                                             \
    X(EVP_DecodeBlock)                                                                             \
    X(HMAC)

DYNLIB_DEFINE(crypto_lib, CRYPTO_LIB_FUNCTIONS, .soname = THINIMG_CRYPTO_SONAME,
              .used_for = "SHA-256 digests, S3 request signing and registry credentials",
              .package = "libcrypto (Debian, Ubuntu: libssl3; Fedora: openssl-libs)");

DYNLIB_ACCESSORS(crypto_lib, crypto_lib)

/* FORWARD(ret, name, fail, (params), (args)): `ret name(params)` calling the real function
 * with args, or returning fail when libcrypto cannot be loaded. */
#define FORWARD(ret, name, fail, params, args)                                                     \
    DYNLIB_FORWARD(crypto_lib, ret, name, fail, params, args)

FORWARD(const EVP_MD *, EVP_sha256, NULL, (void), ())
FORWARD(EVP_MD_CTX *, EVP_MD_CTX_new, NULL, (void), ())
FORWARD(int, EVP_DigestInit_ex, 0, (EVP_MD_CTX * ctx, const EVP_MD *type, ENGINE *impl),
        (ctx, type, impl))
FORWARD(int, EVP_DigestUpdate, 0, (EVP_MD_CTX * ctx, const void *d, size_t cnt), (ctx, d, cnt))
FORWARD(int, EVP_DigestFinal_ex, 0, (EVP_MD_CTX * ctx, unsigned char *md, unsigned int *s),
        (ctx, md, s))
FORWARD(int, EVP_DecodeBlock, -1, (unsigned char *t, const unsigned char *from, int n),
        (t, from, n))
FORWARD(unsigned char *, HMAC, NULL,
        (const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d, size_t n,
         unsigned char *md, unsigned int *md_len),
        (evp_md, key, key_len, d, n, md, md_len))

DYNLIB_FORWARD_VOID(crypto_lib, EVP_MD_CTX_free, (EVP_MD_CTX * ctx), (ctx))

/* Without libcrypto: an empty string (the caller's buffer always holds one). */
int EVP_EncodeBlock(unsigned char *t, const unsigned char *from, int n)
{
    typeof(&EVP_EncodeBlock) real = DYNLIB_REAL(crypto_lib, EVP_EncodeBlock);
    if (real)
        return real(t, from, n);
    t[0] = '\0';
    return 0;
}
