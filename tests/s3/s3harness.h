/*
 * s3harness.h: start and drive tests/s3/harness.js (s3rver + fault-injecting proxy on
 * 127.0.0.1, random ports, a temp data dir) from C tests and benchmarks.
 *
 *     struct s3h h;
 *     s3h_start(&h, "bucket", seed_dir);       // seed_dir files become keys
 *     ... endpoint "http://127.0.0.1:<h.proxy_port>" ...
 *     s3h_fault(&h, "{\"match\":\"/k\",\"action\":\"cut\",\"after\":1000}");
 *     json_t *log = s3h_log(&h);               // requests the proxy saw
 *     s3h_stop(&h);
 *
 * The harness exits by itself when the test process dies (its stdin is our pipe).
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct s3h {
    pid_t pid;
    int stdin_fd;
    int s3_port;    /* s3rver itself */
    int proxy_port; /* the fault-injecting proxy */
    char *dir;      /* temp dir (data + whatever the test puts there) */
    char s3_url[64], proxy_url[64];
};

/* Returns 0, or -1 with a message on stderr (node or its packages missing, ...). */
int s3h_start(struct s3h *h, const char *bucket, const char *seed_dir);
/* Clears the AWS credentials, profile and endpoint variables of this process's environment
 * and points the shared credentials file nowhere: what the tests run reaches the harness
 * anonymously (its bucket's policy), whatever the developer's shell has set. */
void s3h_anonymous_env(void);
void s3h_stop(struct s3h *h);

int s3h_fault(struct s3h *h, const char *rule_json);
int s3h_reset(struct s3h *h);
/* The proxy's request log (a JSON array; json_decref it). */
json_t *s3h_log(struct s3h *h);
/* PUT an object straight into s3rver (anonymous). */
int s3h_put(struct s3h *h, const char *bucket, const char *key, const void *data, size_t n);

/* ---- helpers of the `thinimg fetch` tests ---- */

/* Start `thinimg --state-dir=STATE -q fetch REF` in the background against the proxy (stdout
 * and stderr to /dev/null), for a test that kills it. -1 when it cannot be started. */
pid_t s3h_spawn_fetch(struct s3h *h, const char *state_dir, const char *ref);
/* Size of the partial download in STATE/tmp (*.part), 0 when there is none. */
uint64_t s3h_part_size(const char *state_dir);
/* "sha256:<hex>" of a file (malloc'd), NULL when it cannot be read. */
char *s3h_digest_of(const char *path);
