/*
 * hash.h: SHA-256 for digests and chain ids (OpenSSL EVP underneath).
 *
 * A digest is written as "sha256:<64 lowercase hex>" (DIGEST_STR_LEN chars); the bare hex form
 * is used for file names. The streaming context must be freed with sha256_free() unless
 * sha256_final() was called (final frees it).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA256_HEX_LEN 64
#define DIGEST_PREFIX "sha256:"
#define DIGEST_STR_LEN (7 + SHA256_HEX_LEN)

struct sha256 {
    void *ctx; /* EVP_MD_CTX */
};

int sha256_init(struct sha256 *h);
int sha256_update(struct sha256 *h, const void *data, size_t n);
int sha256_final(struct sha256 *h, uint8_t out[SHA256_LEN]);
void sha256_free(struct sha256 *h);

/* One-shot helpers. */
int sha256_buf(const void *data, size_t n, uint8_t out[SHA256_LEN]);
int sha256_file(const char *path, uint8_t out[SHA256_LEN], uint64_t *size_out);

void hex_encode(const uint8_t *in, size_t n, char *out /* 2n+1 */);
/* "sha256:<hex>" into out[DIGEST_STR_LEN + 1]. */
void digest_format(const uint8_t d[SHA256_LEN], char *out);
/* True when s is "sha256:" followed by exactly 64 lowercase hex digits. */
bool digest_valid(const char *s);
/* OCI ChainID step: sha256(parent_chain + " " + digest), formatted as a digest. */
int chain_id_next(const char *parent_chain, const char *digest, char out[DIGEST_STR_LEN + 1]);
