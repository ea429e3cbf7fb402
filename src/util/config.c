/*
 * config.c: flag > environment > default resolution of shared settings. See config.h.
 */
#include "util/config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/defaults.h"
#include "util/fsutil.h"

static const char *pick(const char *flag, const char *env)
{
    if (flag && *flag)
        return flag;
    const char *v = getenv(env);
    return v && *v ? v : NULL;
}

/* An absolute path for p: relative paths are taken from the working directory now, once.
 * Everything derived from the state directory (database, blobs, lock, socket) is stored or
 * passed on as an absolute path, so that a process started in another directory (gc, the
 * daemon) finds the same files. */
static char *absolute(const char *p)
{
    if (p[0] == '/')
        return strdup(p);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        return NULL;
    const char *rest = p;
    while (rest[0] == '.' && rest[1] == '/')
        rest += 2;
    if (!strcmp(rest, "."))
        rest = "";
    return *rest ? path_join(cwd, rest) : strdup(cwd);
}

static int set_path(char **dst, const char *explicit_value, const char *dir, const char *name)
{
    *dst = explicit_value ? absolute(explicit_value) : path_join(dir, name);
    return *dst ? 0 : -ENOMEM;
}

int config_resolve(struct config *c, const struct config_overrides *o)
{
    static const struct config_overrides none;
    if (!o)
        o = &none;
    memset(c, 0, sizeof(*c));
    const char *state = pick(o->state_dir, "THINIMG_STATE_DIR");
    c->state_dir = absolute(state ? state : DEFAULT_STATE_DIR);
    if (!c->state_dir)
        return -ENOMEM;
    int r = 0;
    r |= set_path(&c->db_path, pick(o->db_path, "THINIMG_DB"), c->state_dir, DEFAULT_DB_NAME);
    r |= set_path(&c->blob_dir, NULL, c->state_dir, DEFAULT_BLOB_SUBDIR);
    r |= set_path(&c->tmp_dir, NULL, c->state_dir, DEFAULT_TMP_SUBDIR);
    r |= set_path(&c->mount_dir, NULL, c->state_dir, DEFAULT_MOUNT_SUBDIR);
    r |= set_path(&c->pool_dir, NULL, c->state_dir, DEFAULT_POOL_SUBDIR);
    r |= set_path(&c->lock_path, NULL, c->state_dir, DEFAULT_LOCK_NAME);
    r |= set_path(&c->kmsg_cursor_path, NULL, c->state_dir, DEFAULT_KMSG_CURSOR_NAME);
    r |= set_path(&c->socket_path, pick(o->socket_path, "THINIMG_SOCKET"), c->state_dir,
                  DEFAULT_SOCKET_NAME);
    const char *pool = pick(o->pool_name, "THINIMG_POOL");
    c->pool_name = strdup(pool ? pool : DEFAULT_POOL_NAME);
    const char *src = pick(o->source, "THINIMG_SOURCE");
    c->source = src ? strdup(src) : NULL;
    const char *backend = pick(o->backend, "THINIMG_BACKEND");
    c->backend = backend ? strdup(backend) : NULL;
    if (r || !c->pool_name || (src && !c->source) || (backend && !c->backend)) {
        config_free(c);
        return -ENOMEM;
    }
    return 0;
}

/* Every string of a config, for copying and freeing. */
#define CONFIG_FIELDS(c)                                                                           \
    {                                                                                              \
        &(c)->state_dir, &(c)->db_path, &(c)->blob_dir, &(c)->tmp_dir, &(c)->mount_dir,            \
            &(c)->pool_dir, &(c)->lock_path, &(c)->kmsg_cursor_path, &(c)->socket_path,            \
            &(c)->pool_name, &(c)->source, &(c)->backend                                           \
    }

void config_free(struct config *c)
{
    char **fields[] = CONFIG_FIELDS(c);
    for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

int config_copy(struct config *dst, const struct config *src)
{
    memset(dst, 0, sizeof(*dst));
    char **to[] = CONFIG_FIELDS(dst);
    char *const *from[] = CONFIG_FIELDS(src);
    for (size_t i = 0; i < ARRAY_SIZE(to); i++) {
        if (*from[i] && !(*to[i] = strdup(*from[i]))) {
            config_free(dst);
            return -ENOMEM;
        }
    }
    return 0;
}

/* The error of a directory that could not be made or tightened: for one that exists but is not
 * this user's to change, say so (thinimg runs as root), with kind "permission". */
static int dir_error(const char *dir, int r, struct err *e)
{
    struct stat st;
    /* The directory, or (when this user cannot even look inside it) the nearest one above it
     * that exists: "STATE exists", not "cannot create STATE/blobs". */
    char at[PATH_MAX];
    snprintf(at, sizeof(at), "%s", dir);
    while ((r == -EACCES || r == -EPERM) && stat(at, &st) < 0 && errno == EACCES) {
        char *slash = strrchr(at, '/');
        if (!slash || slash == at)
            break;
        *slash = '\0';
    }
    if ((r == -EACCES || r == -EPERM) && stat(at, &st) == 0)
        return err_set(e, -EACCES,
                       "%s exists but is not writable by this user (uid %u); thinimg runs as "
                       "root (or as the user that owns the state directory and its files)",
                       at, (unsigned)geteuid());
    if (r == -EROFS) /* its own kind (read_only): the disk is not full nor the host unhealthy */
        return err_set(e, r,
                       "%s is on a read-only file system: thinimg keeps its state there and "
                       "must write it; remount it read-write, or point --state-dir at a "
                       "writable directory",
                       dir);
    return err_set(e, r, "cannot create %s: %s", dir, strerror(-r));
}

int config_ensure_dirs(const struct config *c, struct err *e)
{
    int r = mkdir_p(c->state_dir, 0700);
    if (r < 0)
        return dir_error(c->state_dir, r, e);
    const char *dirs[] = {c->blob_dir, c->tmp_dir, c->mount_dir, c->pool_dir};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        r = mkdir_p(dirs[i], 0700);
        if (r < 0)
            return dir_error(dirs[i], r, e);
    }
    /* The blob store and temp files are owner only, also when an older thinimg (or a umask)
     * made them wider. */
    const char *private_dirs[] = {c->blob_dir, c->tmp_dir};
    for (size_t i = 0; i < sizeof(private_dirs) / sizeof(private_dirs[0]); i++)
        if (chmod(private_dirs[i], 0700) < 0)
            return dir_error(private_dirs[i], neg_errno(), e);
    return 0;
}
