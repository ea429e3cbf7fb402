/*
 * hash.c: SHA-256 helpers over OpenSSL's EVP interface. See hash.h.
 */
#include "util/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/crypto_lib.h"

int sha256_init(struct sha256 *h)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    /* libcrypto is loaded on first use (util/crypto_lib.h): a failed load was logged */
    if (!c)
        return crypto_lib_loaded() ? -ENOMEM : -ELIBACC;
    if (EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c);
        return -EIO;
    }
    h->ctx = c;
    return 0;
}

int sha256_update(struct sha256 *h, const void *data, size_t n)
{
    return EVP_DigestUpdate(h->ctx, data, n) == 1 ? 0 : -EIO;
}

int sha256_final(struct sha256 *h, uint8_t out[SHA256_LEN])
{
    unsigned int len = 0;
    int ok = EVP_DigestFinal_ex(h->ctx, out, &len);
    sha256_free(h);
    return ok == 1 && len == SHA256_LEN ? 0 : -EIO;
}

void sha256_free(struct sha256 *h)
{
    if (h->ctx)
        EVP_MD_CTX_free(h->ctx);
    h->ctx = NULL;
}

int sha256_buf(const void *data, size_t n, uint8_t out[SHA256_LEN])
{
    struct sha256 h;
    int r = sha256_init(&h);
    if (r < 0)
        return r;
    r = sha256_update(&h, data, n);
    if (r < 0) {
        sha256_free(&h);
        return r;
    }
    return sha256_final(&h, out);
}

int sha256_file(const char *path, uint8_t out[SHA256_LEN], uint64_t *size_out)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    struct sha256 h;
    int r = sha256_init(&h);
    if (r < 0)
        return r;
    static const size_t chunk = 1 << 20;
    _cleanup_free_ char *buf = malloc(chunk);
    if (!buf) {
        sha256_free(&h);
        return -ENOMEM;
    }
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = neg_errno();
            sha256_free(&h);
            return r;
        }
        if (n == 0)
            break;
        sha256_update(&h, buf, (size_t)n);
        total += (uint64_t)n;
    }
    if (size_out)
        *size_out = total;
    return sha256_final(&h, out);
}

void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void digest_format(const uint8_t d[SHA256_LEN], char *out)
{
    memcpy(out, DIGEST_PREFIX, 7);
    hex_encode(d, SHA256_LEN, out + 7);
}

bool digest_valid(const char *s)
{
    if (strncmp(s, DIGEST_PREFIX, 7) != 0)
        return false;
    s += 7;
    for (int i = 0; i < SHA256_HEX_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[SHA256_HEX_LEN] == '\0';
}

int chain_id_next(const char *parent_chain, const char *digest, char out[DIGEST_STR_LEN + 1])
{
    if (!digest_valid(digest))
        return -EINVAL;
    if (!parent_chain || !*parent_chain) {
        memcpy(out, digest, DIGEST_STR_LEN + 1);
        return 0;
    }
    if (!digest_valid(parent_chain))
        return -EINVAL;
    char joined[2 * DIGEST_STR_LEN + 2];
    int n = snprintf(joined, sizeof(joined), "%s %s", parent_chain, digest);
    uint8_t d[SHA256_LEN];
    int r = sha256_buf(joined, (size_t)n, d);
    if (r < 0)
        return r;
    digest_format(d, out);
    return 0;
}
