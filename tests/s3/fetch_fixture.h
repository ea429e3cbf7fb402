/*
 * fetch_fixture.h: what the tests of `thinimg fetch` against the S3 harness share
 * (test_fetch_s3.c, test_byteonce_s3.c): a temp folder holding the bucket's seed and one state
 * folder per case, the harness started with no credentials from the environment, seeded layer
 * tars, and shell commands and fetch runs. The helpers that assert fail the test through
 * cmocka: include this after <cmocka.h>.
 *
 *     static struct fetch_fixture F;
 *     group setup:    *state = &F; fixture_init(&F, "tag"); ...fill F.seed...;
 *                     return fixture_start(&F, "bucket");
 *     a case:         char *sd = fixture_new_state(&F); fixture_fetch(&F, sd, ref, ...)
 *     cmocka_unit_test_setup(a_case, fixture_reset), and the group teardown fixture_teardown
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "s3harness.h"

/* How many environment entries fixture_fetch() adds besides the endpoint. */
#define FIXTURE_ENV_MAX 4

struct fetch_fixture {
    struct s3h h;
    char *root; /* the test's temp folder: seed/ and the state folders */
    char *seed; /* root/seed: its files are the bucket's keys (filled before fixture_start) */
    int states; /* state folders handed out so far */
};

/* Makes the temp folder (its name from tag) and sets f->seed (not created). 0, or -1. */
int fixture_init(struct fetch_fixture *f, const char *tag);
/* Starts the harness with f->seed as bucket, after clearing the credentials and endpoint
 * variables of the environment (s3h_anonymous_env()). 0, or -1. */
int fixture_start(struct fetch_fixture *f, const char *bucket);
/* Stops the harness and removes the temp folder; 0 (a cmocka group teardown's value). */
int fixture_end(struct fetch_fixture *f);
/* cmocka callbacks, with the fixture as the group's state: the group teardown
 * (fixture_end()), and a case's setup that clears the proxy's faults and log (s3h_reset()). */
int fixture_teardown(void **state);
int fixture_reset(void **state);
/* The path of a new state folder below the root (not created; malloc'd). */
char *fixture_new_state(struct fetch_fixture *f);

/* Runs a shell command; one that fails fails the test, with the command and its stderr. */
void fixture_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Writes a layer tar at path holding one file of kib KiB of pseudo-random bytes drawn from
 * seed: the same seed and size give the same bytes. */
void fixture_make_layer(const char *path, int kib, int seed);
/* s3h_spawn_fetch() (a background fetch for a test that kills it); failing to start it fails
 * the test. */
pid_t fixture_spawn(struct fetch_fixture *f, const char *state_dir, const char *ref);
/* `thinimg --state-dir=STATE fetch REF [OPTION]` through the proxy (OPTION NULL: none), with
 * env (NULL-terminated, at most FIXTURE_ENV_MAX entries; NULL: none) added to the environment.
 * The exit code; stdout and stderr malloc'd in *out and *err. */
int fixture_fetch(struct fetch_fixture *f, const char *state_dir, const char *ref,
                  const char *option, const char *const env[], char **out, char **err);
/* The files in STATE/sub (names starting with '.' left out), each printed, so that what a
 * count found is in the test's output. 0 when the folder does not exist. */
size_t fixture_files_in(const char *state_dir, const char *sub);
