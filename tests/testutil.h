/*
 * testutil.h: helpers shared by the tests (cmocka): temporary directories, running the
 * thinimg binary and capturing its output, reading files.
 *
 * Include after <cmocka.h>'s prerequisites (stdarg, stddef, stdint, setjmp).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A fresh directory under $TMPDIR (or /tmp), removed with tu_rmrf(). Returns malloc'd path. */
char *tu_mkdtemp(const char *tag);
/* rm -rf path (refuses "/" and empty paths). */
void tu_rmrf(const char *path);

/* Run argv (execvp), capture stdout and stderr (each NUL-terminated, malloc'd, may be NULL),
 * return the exit status (or 128+signal). env_extra: NULL-terminated "K=V" list or NULL. */
int tu_run(char *const argv[], char *const env_extra[], char **out, char **err);
/* Same through /bin/sh -c. */
int tu_sh(const char *cmd, char **out, char **err);
/* Path of the thinimg binary under test ($THINIMG_BIN). */
const char *tu_thinimg(void);
/* $THINIMG_SOURCE_DIR and $THINIMG_BUILD_DIR. */
const char *tu_source_dir(void);
const char *tu_build_dir(void);

/* Whole file into a malloc'd NUL-terminated buffer (NULL if missing); *len may be NULL. */
char *tu_read_file(const char *path, size_t *len);
int tu_write_file(const char *path, const void *data, size_t len);
bool tu_contains(const char *haystack, const char *needle);

/* data (n bytes) as one gzip member with a plain 10-byte header, made by libarchive's
 * writer (zlib), not by the reader under test: a malloc'd buffer, its length in *out_n. */
unsigned char *tu_gzip_member(const void *data, size_t n, size_t *out_n);

/* A fresh directory (tu_mkdtemp(tag)) holding a database with every component's schema
 * migrated in, as the commands open it. Returns 0, or -1 after printing why. */
struct db;
struct tu_db {
    char *dir;
    struct db *db;
};
int tu_db_open(const char *tag, struct tu_db *t);
void tu_db_close(struct tu_db *t);
