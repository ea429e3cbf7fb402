/*
 * s3_sign.c: S3 credentials (environment, shared credentials file) and AWS Signature V4.
 * See s3.h. HMAC-SHA256 comes from OpenSSL (libcrypto, already linked for hashing).
 */
#include "source/s3.h"

#include <errno.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/hash.h"

/* A credentials file is a few lines per profile; 1 MiB is far beyond any real one. */
#define S3_CREDENTIALS_FILE_MAX (1024 * 1024)

void s3_creds_free(struct s3_creds *c)
{
    if (!c)
        return;
    if (c->secret_key)
        memset(c->secret_key, 0, strlen(c->secret_key));
    free(c->access_key);
    free(c->secret_key);
    free(c->session_token);
    *c = (struct s3_creds){0};
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static char *trim_dup(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    return strndup(s, n);
}

/* Read [profile] from an INI-style credentials file. Returns 1 when the profile exists,
 * 0 when not, negative errno on read errors. */
static int read_profile(const char *path, const char *profile, struct s3_creds *c)
{
    struct buf b = BUF_INIT;
    int r = read_file(path, S3_CREDENTIALS_FILE_MAX, &b);
    if (r < 0) {
        buf_free(&b);
        return r;
    }
    int found = 0;
    bool in = false;
    const char *p = b.data ? b.data : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        _cleanup_free_ char *line = trim_dup(p, len);
        p += len + (nl ? 1 : 0);
        if (!line) {
            r = -ENOMEM;
            break;
        }
        if (!line[0] || line[0] == '#' || line[0] == ';')
            continue;
        size_t ll = strlen(line);
        if (line[0] == '[' && line[ll - 1] == ']') {
            _cleanup_free_ char *name = trim_dup(line + 1, ll - 2);
            in = name && !strcmp(name, profile);
            if (in)
                found = 1;
            continue;
        }
        if (!in)
            continue;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        _cleanup_free_ char *k = trim_dup(line, (size_t)(eq - line));
        char *v = trim_dup(eq + 1, strlen(eq + 1));
        if (!k || !v) {
            free(v);
            r = -ENOMEM;
            break;
        }
        char **dst = !strcmp(k, "aws_access_key_id")       ? &c->access_key
                     : !strcmp(k, "aws_secret_access_key") ? &c->secret_key
                     : !strcmp(k, "aws_session_token")     ? &c->session_token
                                                           : NULL;
        if (dst) {
            free(*dst);
            *dst = v;
        } else
            free(v);
    }
    if (b.data)
        memset(b.data, 0, b.len);
    buf_free(&b);
    return r < 0 ? r : found;
}

int s3_creds_load(struct s3_creds *c, struct err *e)
{
    *c = (struct s3_creds){0};
    const char *id = env_nonempty("AWS_ACCESS_KEY_ID");
    const char *secret = env_nonempty("AWS_SECRET_ACCESS_KEY");
    if (id || secret) {
        if (!id || !secret)
            return err_set(e, -EINVAL,
                           "%s is set but %s is not; set both (or neither, for anonymous "
                           "access)",
                           id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                           id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
        const char *tok = env_nonempty("AWS_SESSION_TOKEN");
        c->access_key = strdup(id);
        c->secret_key = strdup(secret);
        c->session_token = tok ? strdup(tok) : NULL;
        if (!c->access_key || !c->secret_key || (tok && !c->session_token)) {
            s3_creds_free(c);
            return -ENOMEM;
        }
        snprintf(c->origin, sizeof(c->origin), "environment (AWS_ACCESS_KEY_ID)");
        return 0;
    }

    const char *profile_env = env_nonempty("AWS_PROFILE");
    if (!profile_env)
        profile_env = env_nonempty("AWS_DEFAULT_PROFILE");
    const char *profile = profile_env ? profile_env : "default";
    _cleanup_free_ char *path = NULL;
    const char *file = env_nonempty("AWS_SHARED_CREDENTIALS_FILE");
    if (file)
        path = strdup(file);
    else if (env_nonempty("HOME"))
        path = path_join(getenv("HOME"), ".aws/credentials");
    if (path) {
        int r = read_profile(path, profile, c);
        if (r == -ENOENT && !profile_env)
            r = 0; /* no credentials file: anonymous */
        if (r < 0) {
            s3_creds_free(c);
            return err_set(e, r, "cannot read the AWS credentials file %s: %s", path,
                           strerror(-r));
        }
        if (r == 0 && profile_env) {
            s3_creds_free(c);
            return err_set(e, -ENOENT, "AWS profile '%s' (AWS_PROFILE) not found in %s",
                           profile, path);
        }
        if (r == 1) {
            if (!c->access_key || !c->secret_key) {
                s3_creds_free(c);
                return err_set(e, -EINVAL,
                               "AWS profile '%s' in %s lacks aws_access_key_id or "
                               "aws_secret_access_key",
                               profile, path);
            }
            snprintf(c->origin, sizeof(c->origin), "profile '%s' in %s", profile, path);
            return 0;
        }
    } else if (profile_env) {
        return err_set(e, -ENOENT,
                       "AWS_PROFILE is set but there is no credentials file (set HOME or "
                       "AWS_SHARED_CREDENTIALS_FILE)");
    }
    s3_creds_free(c);
    snprintf(c->origin, sizeof(c->origin), "none (anonymous)");
    return 0;
}

/* ---- Signature V4 ------------------------------------------------------------------------ */

static int hmac(const void *key, size_t klen, const char *msg, uint8_t out[SHA256_LEN])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &len) ||
        len != SHA256_LEN)
        return -EIO;
    return 0;
}

int s3_sigv4_authorization(const struct s3_creds *c, const char *region, const char *method,
                           const char *canonical_uri, const char *canonical_query,
                           const struct s3_sign_header *headers, size_t n_headers,
                           const char *payload_hash, const char *amz_date, char *out, size_t cap)
{
    if (!c->access_key || !c->secret_key || strlen(amz_date) != 16)
        return -EINVAL;
    char date[9];
    memcpy(date, amz_date, 8);
    date[8] = '\0';

    _cleanup_buf_ struct buf creq = BUF_INIT;
    _cleanup_buf_ struct buf signed_headers = BUF_INIT;
    int r = buf_printf(&creq, "%s\n%s\n%s\n", method, canonical_uri, canonical_query);
    for (size_t i = 0; i < n_headers && r == 0; i++) {
        r = buf_printf(&creq, "%s:%s\n", headers[i].name, headers[i].value);
        if (r == 0)
            r = buf_printf(&signed_headers, "%s%s", i ? ";" : "", headers[i].name);
    }
    if (r == 0)
        r = buf_printf(&creq, "\n%s\n%s", signed_headers.data ? signed_headers.data : "",
                       payload_hash);
    if (r < 0)
        return r;

    uint8_t h[SHA256_LEN];
    char creq_hex[SHA256_HEX_LEN + 1];
    if ((r = sha256_buf(creq.data, creq.len, h)) < 0)
        return r;
    hex_encode(h, SHA256_LEN, creq_hex);

    char scope[128];
    snprintf(scope, sizeof(scope), "%s/%s/s3/aws4_request", date, region);
    _cleanup_buf_ struct buf sts = BUF_INIT;
    if ((r = buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s\n%s", amz_date, scope, creq_hex)) < 0)
        return r;

    _cleanup_buf_ struct buf k0 = BUF_INIT;
    if ((r = buf_printf(&k0, "AWS4%s", c->secret_key)) < 0)
        return r;
    uint8_t kd[SHA256_LEN], kr[SHA256_LEN], ks[SHA256_LEN], kn[SHA256_LEN], sig[SHA256_LEN];
    r = hmac(k0.data, k0.len, date, kd);
    memset(k0.data, 0, k0.len);
    if (r == 0)
        r = hmac(kd, SHA256_LEN, region, kr);
    if (r == 0)
        r = hmac(kr, SHA256_LEN, "s3", ks);
    if (r == 0)
        r = hmac(ks, SHA256_LEN, "aws4_request", kn);
    if (r == 0)
        r = hmac(kn, SHA256_LEN, sts.data, sig);
    if (r < 0)
        return r;
    char sig_hex[SHA256_HEX_LEN + 1];
    hex_encode(sig, SHA256_LEN, sig_hex);
    int n = snprintf(out, cap, "AWS4-HMAC-SHA256 Credential=%s/%s,SignedHeaders=%s,Signature=%s",
                     c->access_key, scope, signed_headers.data ? signed_headers.data : "",
                     sig_hex);
    return n < 0 || (size_t)n >= cap ? -ENOSPC : 0;
}
