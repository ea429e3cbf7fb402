/*
 * registry.h: the docker:// source, an OCI distribution registry (Docker Hub, GHCR, ECR, a
 * CNCF distribution registry of one's own) read as a source of the same rank as S3.
 * Private to src/source/ (ref.c resolves docker:// references through it; the unit tests use
 * the parsers).
 *
 * References: docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]. The first path segment is a host
 * when it holds a '.' or a ':' or is "localhost"; otherwise the reference is a Docker Hub name
 * and is normalised as docker does: "docker://alpine" is docker.io/library/alpine:latest,
 * "docker://user/app:1" is docker.io/user/app:1 (spoken to at registry-1.docker.io). REPO is
 * lower-case path components ([a-z0-9] separated by '.', '_', '__' or '-'), at most 255
 * bytes; TAG is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; a digest is sha256 only. No tag and no
 * digest means "latest" (for fetch) or the repository itself (for ls).
 *
 * Keys of the source (relative to the repository): "manifests/TAG", "manifests/sha256:HEX"
 * and "blobs/sha256:HEX"; "" is the repository, whose listing is its tags (one object per
 * tag, key "manifests/TAG"). Their locations are the reference forms above, and
 * docker://HOST/REPO/blobs/sha256:HEX for a blob (a path that ends in /blobs/sha256:<64 hex>
 * names a blob, never a repository called .../blobs/sha256 with a 64-hex tag).
 *
 * Protocol: GET /v2/ (is it a registry), manifests with an Accept list of the OCI image
 * manifest and index and the Docker schema 2 manifest and manifest list (schema 1 is refused),
 * blobs by digest with Range resume (content-addressed: the digest is the validator, see
 * httpc.h immutable), redirects followed (to blob storage; libcurl sends the Authorization
 * header only to the host it was set for), tags with Link pagination.
 *
 * Auth (registry_auth.c): anonymous first; on a 401, the WWW-Authenticate challenge: Basic
 * (the credentials, if any) or Bearer realm/service/scope (a token from the realm, with the
 * credentials as Basic auth when there are any; cached per realm, service and scope until it
 * expires). Credentials: THINIMG_REGISTRY_AUTH=USER:PASSWORD (every registry), else
 * $DOCKER_CONFIG/config.json or ~/.docker/config.json: the credential helper it names for the
 * host (`credHelpers`, else `credsStore`: docker-credential-NAME get), else the host's `auths`
 * entry (base64 `auth`). They are only ever put in request headers: never in a location, a log
 * line, a message or a database row.
 *
 * Errors: as source.h, and -EBADMSG a manifest or config that is malformed or does not match
 * its digest, -ENOTSUP a schema 1 manifest or a media type that is not an image, -ENOENT no
 * manifest for the platform, -EFBIG over a limit below, -EACCES credentials refused or needed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "source/ref.h"
#include "source/source.h"
#include "util/err.h"

/* ---- limits (each with its reason) ------------------------------------------------------- */

/* A manifest or index: the distribution spec has registries accept at least 4 MiB and
 * containerd refuses larger ones; a real manifest of 256 layers is ~60 KiB. */
#define REGISTRY_MANIFEST_MAX (4 * 1024 * 1024)
/* An image config holds the history of every layer; 8 MiB is far past any built image. */
#define REGISTRY_CONFIG_MAX (8 * 1024 * 1024)
/* Entries of one index: one per platform (a dozen) plus attestations. */
#define REGISTRY_INDEX_MAX_MANIFESTS 1024
/* A token response is a JSON object with one or two JWTs: a few KiB. */
#define REGISTRY_TOKEN_BODY_MAX (64 * 1024)
/* ~/.docker/config.json: a few entries of ~100 bytes. */
#define REGISTRY_DOCKER_CONFIG_MAX (1024 * 1024)
/* Credential helpers (docker-credential-NAME get): a helper asks a keychain or a cloud API
 * (ECR: one call), seconds at most; 30 s means it hangs (or waits for a prompt). Its answer
 * is {"ServerURL","Username","Secret"}: a few KiB (ECR tokens are ~2 KiB). Names are short
 * ("ecr-login", "desktop", "pass"). */
#define REGISTRY_CRED_HELPER_TIMEOUT_MS 30000
#define REGISTRY_CRED_HELPER_OUTPUT_MAX (64 * 1024)
#define REGISTRY_CRED_HELPER_NAME_MAX   64
/* Tags asked per page of /tags/list; the listing caps of source.h bound the whole listing. */
#define REGISTRY_TAGS_PAGE 1000
/* A token without expires_in lives 60 s (the token spec's default); it is renewed this much
 * before it expires, so that a request never leaves with a token about to die. */
#define REGISTRY_TOKEN_DEFAULT_TTL_S   60
#define REGISTRY_TOKEN_EXPIRY_MARGIN_S 10
/* Lengths of the parts of a reference (the distribution spec's own limits). */
#define REGISTRY_REPO_MAX 255
#define REGISTRY_TAG_MAX  128
#define REGISTRY_HOST_MAX 255
/* Components of a platform ("linux", "arm64", "v8"). */
#define REGISTRY_PLATFORM_PART_MAX 32

/* Docker Hub: what bare names mean, and where its API is. */
#define REGISTRY_DOCKER_HUB     "docker.io"
#define REGISTRY_DOCKER_HUB_API "registry-1.docker.io"
#define REGISTRY_DEFAULT_TAG    "latest"

/* Media types. */
#define MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_SCHEMA1  "application/vnd.docker.distribution.manifest.v1+json"
#define MT_DOCKER_SCHEMA1S "application/vnd.docker.distribution.manifest.v1+prettyjws"

/* ---- references -------------------------------------------------------------------------- */

struct registry_name {
    char *host;     /* as written ("127.0.0.1:5000", "docker.io") */
    char *api_host; /* where the API is (registry-1.docker.io for docker.io) */
    char *repo;     /* "library/alpine" */
    char *tag;      /* NULL when none was given */
    char *digest;   /* "sha256:<hex>" or NULL */
    bool blob;      /* .../blobs/sha256:HEX: digest names a blob */
};
void registry_name_free(struct registry_name *n);

/* Parse what follows "docker://". -EINVAL with the reason for anything else. */
int registry_name_parse(const char *rest, struct registry_name *out, struct err *e);
/* True for a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}). */
bool registry_tag_ok(const char *tag);

/* ---- platforms --------------------------------------------------------------------------- */

struct registry_platform {
    char os[REGISTRY_PLATFORM_PART_MAX];
    char arch[REGISTRY_PLATFORM_PART_MAX];
    char variant[REGISTRY_PLATFORM_PART_MAX]; /* "" = any (the arch's usual one preferred) */
};

/* "OS/ARCH[/VARIANT]" (lower case). -EINVAL otherwise. */
int registry_platform_parse(const char *s, struct registry_platform *out, struct err *e);
/* The host's platform in OCI words (uname: x86_64 is linux/amd64, aarch64 linux/arm64...). */
void registry_platform_host(struct registry_platform *out);
/* "os/arch[/variant]" into buf. */
void registry_platform_format(const struct registry_platform *p, char *buf, size_t cap);

/* ---- manifests --------------------------------------------------------------------------- */

struct registry_descriptor {
    char *media_type;
    char *digest;
    uint64_t size;
    bool foreign; /* has `urls` or a foreign / non-distributable media type */
    bool has_platform;
    struct registry_platform platform;
};

struct registry_manifest {
    char *media_type;                    /* the body's own, else the response's, else OCI's */
    bool is_index;                       /* an image index / manifest list */
    struct registry_descriptor config;   /* image manifests */
    struct registry_descriptor *entries; /* the layers (bottom to top), or the index entries */
    size_t n_entries;
};
void registry_manifest_free(struct registry_manifest *m);

/* Parse a manifest or an index. content_type is the response's (may be NULL or ""); the
 * body's own mediaType wins when both are given and agree, and they must agree when both are.
 * -ENOTSUP for schema 1 and for media types that are not images, -EBADMSG for the rest, -EFBIG
 * past source_max_layers() layers or REGISTRY_INDEX_MAX_MANIFESTS entries. */
int registry_manifest_parse(const void *body, size_t len, const char *content_type,
                            struct registry_manifest *out, struct err *e);

/* The entry of an index for the platform: os and arch equal, and the variant equal when one is
 * asked (else the entry without a variant, or the arch's usual one: arm64 v8, arm v7, before
 * the others). Entries of another media type than a manifest (attestations: unknown/unknown)
 * never match. -ENOENT naming the platforms the index has. */
int registry_platform_select(const struct registry_manifest *index,
                             const struct registry_platform *want, size_t *idx, struct err *e);

/* The run settings of an image config as a compact JSON object (*json malloc'd): entrypoint,
 * cmd, env (arrays of strings), working_dir, user, stop_signal, os, architecture, variant,
 * exposed_ports, each present only when the config has it with the right type. -EBADMSG when
 * the config is not a JSON object. */
int registry_config_summary(const void *body, size_t len, char **json, struct err *e);

/* rootfs.diff_ids of an image config (sha256 digests, in layer order). -EBADMSG when missing
 * or malformed. */
int registry_config_diff_ids(const void *body, size_t len, char ***ids, size_t *n, struct err *e);

/* ---- auth (registry_auth.c) -------------------------------------------------------------- */

enum registry_auth_scheme { REGISTRY_AUTH_NONE = 0, REGISTRY_AUTH_BASIC, REGISTRY_AUTH_BEARER };

struct registry_challenge {
    enum registry_auth_scheme scheme;
    char *realm, *service, *scope; /* Bearer parameters (NULL when absent) */
};
void registry_challenge_free(struct registry_challenge *c);

/* A WWW-Authenticate value: `Bearer realm="...",service="...",scope="..."` or `Basic
 * realm="..."` (scheme case-insensitive, quoted or token values, backslash escapes). -EBADMSG
 * for anything else (another scheme, a Bearer challenge without a realm). */
int registry_challenge_parse(const char *header, struct registry_challenge *out);

/* The "USER:PASSWORD" of host in a docker config.json (its `auths`, keys "host",
 * "https://host", "https://host/v1/"...; the base64 `auth`, else `username` + `password`).
 * 1 found, 0 none, -EBADMSG malformed. Docker Hub's entry is "https://index.docker.io/v1/". */
int registry_docker_config_auth(const char *json, size_t len, const char *host, char **userpass,
                                struct err *e);

/* The credential helper a docker config.json names for host: its `credHelpers` entry, else
 * `credsStore`. 1 with *helper (the NAME of docker-credential-NAME; malloc'd), 0 none,
 * -EBADMSG malformed JSON, -EINVAL a name that is not [A-Za-z0-9_.-]. */
int registry_docker_config_helper(const char *json, size_t len, const char *host, char **helper,
                                  struct err *e);
/* Run `docker-credential-HELPER get` (looked up in PATH) with host's server URL on its stdin
 * (Docker Hub's is https://index.docker.io/v1/), its stderr discarded, bounded by
 * REGISTRY_CRED_HELPER_TIMEOUT_MS and _OUTPUT_MAX. 1 with *userpass ("Username:Secret", free
 * with registry_secret_free), 0 when the helper has no credentials for host ("credentials not
 * found"), -EACCES with the reason (not installed, failed, timed out, an identity token) and
 * never the secret. */
int registry_cred_helper_get(const char *helper, const char *host, char **userpass, struct err *e);

/* The credentials for host: THINIMG_REGISTRY_AUTH, else the docker config: a credential
 * helper (credHelpers, credsStore), else its `auths` entry (see the top). 1 found (*userpass
 * to be freed with registry_secret_free), 0 none. */
int registry_credentials(const char *host, char **userpass, struct err *e);
/* Wipe and free a secret. */
void registry_secret_free(char *s);

/* Tokens by (realm, service, scope), process-wide (every source opened for a run shares
 * them). registry_token_get copies a live one (1) or says there is none (0). */
int registry_token_get(const char *realm, const char *service, const char *scope, char **token);
int registry_token_put(const char *realm, const char *service, const char *scope, const char *token,
                       int64_t expires_in_s);
/* Forget every token (tests). */
void registry_token_forget(void);
/* Parse a token response ({"token"|"access_token", "expires_in"}). */
int registry_token_parse(const void *body, size_t len, char **token, int64_t *expires_in_s,
                         struct err *e);

/* ---- resolution (ref.c) ------------------------------------------------------------------ */

/* Resolve a docker:// reference (the source s and the key source_open gave) into an image:
 * the manifest (through the index for the platform), its layers bottom to top with their
 * blob locations, sizes, digests and media types, and the config's digest and diff ids. */
int registry_resolve(struct source *s, const char *key, struct image_ref *out, struct err *e);
