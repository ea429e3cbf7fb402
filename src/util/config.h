/*
 * config.h: resolved paths and settings shared by the CLI, the daemon and the pipeline.
 *
 * Precedence for every setting: command-line flag > environment variable > default derived
 * from the state directory. config_resolve() fills every field; the strings are owned by the
 * struct and freed by config_free().
 *
 *   setting     flag          environment          default
 *   state dir   --state-dir   THINIMG_STATE_DIR    /var/lib/thinimg
 *   database    --db          THINIMG_DB           <state>/thinimg.db
 *   pool name   --pool        THINIMG_POOL         thinimg
 *   source      --source      THINIMG_SOURCE       (none)
 *   socket      --socket      THINIMG_SOCKET       <state>/thinimg.sock
 *   backend     --backend     THINIMG_BACKEND      (none: the one the state dir records,
 *                                                   dm-thin for a new one)
 */
#pragma once

#include "util/err.h"

struct config {
    char *state_dir;
    char *db_path;
    char *blob_dir;   /* <state>/blobs */
    char *tmp_dir;    /* <state>/tmp */
    char *mount_dir;  /* <state>/mnt */
    char *pool_dir;   /* <state>/pool */
    char *lock_path;  /* <state>/thinimg.lock */
    char *kmsg_cursor_path; /* <state>/kmsg.cursor: the health check's place in the kernel log */
    char *socket_path;
    char *pool_name;
    char *source;     /* default source for relative refs, may be NULL */
    char *backend;    /* storage backend asked for ("dm-thin", "overlay"), NULL: not asked */
};

/* Overrides: any field may be NULL (= not given on the command line). */
struct config_overrides {
    const char *state_dir;
    const char *db_path;
    const char *pool_name;
    const char *source;
    const char *socket_path;
    const char *backend;
};

int config_resolve(struct config *c, const struct config_overrides *o);
/* A deep copy of src into dst (-ENOMEM: dst is left empty). */
int config_copy(struct config *dst, const struct config *src);
void config_free(struct config *c);
/* Create the state directory layout (0700 for the state dir). A directory that exists but is
 * not this user's to change fails with -EACCES and a message that says so. */
int config_ensure_dirs(const struct config *c, struct err *e);
