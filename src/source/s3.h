/*
 * s3.h: the S3 parts that are worth testing on their own: credentials and AWS Signature V4.
 * The s3:// source itself is reached through source.h.
 *
 * Credentials, first match wins:
 *   1. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN) from the environment;
 *      one without the other is an error (a half-configured environment must not silently
 *      become anonymous);
 *   2. the profile AWS_PROFILE (default "default") in AWS_SHARED_CREDENTIALS_FILE (default
 *      ~/.aws/credentials): aws_access_key_id, aws_secret_access_key, aws_session_token. A
 *      profile named explicitly in AWS_PROFILE that does not exist is an error;
 *   3. none: requests are sent unsigned (anonymous), which is what public buckets need.
 *
 * Region: --region > AWS_REGION > AWS_DEFAULT_REGION > DEFAULT_S3_REGION (util/defaults.h).
 * Endpoint: --endpoint > AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL > AWS. A custom endpoint is
 * addressed path-style (http://host:port/bucket/key), as S3-compatible servers expect; AWS is
 * addressed virtual-hosted style (https://bucket.s3.region.amazonaws.com/key), except for bucket
 * names with dots, which break the TLS wildcard and go path-style.
 *
 * Signing: every request carries x-amz-date and x-amz-content-sha256 (the hash of the empty
 * body: we only send GET and HEAD) and, with a session token, x-amz-security-token; the
 * signed headers are host and those. Range and If-Match are not signed (S3 does not require
 * it, and a retry that changes the range then needs no new canonical request beyond the date).
 */
#pragma once

#include <stddef.h>

#include "util/err.h"

struct s3_creds {
    char *access_key;    /* NULL = anonymous */
    char *secret_key;
    char *session_token; /* may be NULL */
    char origin[160];    /* "environment", "profile 'x' in /path", "none (anonymous)" */
};

/* Fill c from the environment / shared credentials file. 0 also for anonymous. */
int s3_creds_load(struct s3_creds *c, struct err *e);
void s3_creds_free(struct s3_creds *c);

/* SHA-256 hex of the empty payload. */
#define S3_EMPTY_PAYLOAD_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3_sign_header {
    const char *name;  /* lowercase */
    const char *value; /* trimmed */
};

/* Compute the Authorization header value of a SigV4 request.
 *   canonical_uri    the URI path, already encoded ("/" for the root)
 *   canonical_query  "a=1&b=2", names and values encoded, sorted by name ("" for none)
 *   headers          the headers to sign, lowercase names, sorted by name, host included
 *   amz_date         "YYYYMMDDTHHMMSSZ"
 * Writes "AWS4-HMAC-SHA256 Credential=.../s3/aws4_request, SignedHeaders=..., Signature=..."
 * into out. -ENOSPC if cap is too small. */
int s3_sigv4_authorization(const struct s3_creds *c, const char *region, const char *method,
                           const char *canonical_uri, const char *canonical_query,
                           const struct s3_sign_header *headers, size_t n_headers,
                           const char *payload_hash, const char *amz_date, char *out, size_t cap);
