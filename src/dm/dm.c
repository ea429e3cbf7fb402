/*
 * dm.c: libdevmapper wrapper; see dm.h.
 *
 * Every dm_task is built, run and destroyed while holding g_dm_lock, and libdevmapper's
 * log callback writes into a buffer guarded by the same lock, so the last error message of a
 * failed call can be put into the caller's struct err. The one exception is the blocking
 * DM_DEVICE_WAITEVENT of dm_dev_wait_event(): only its task is built and read under the lock.
 */
#include "dm/dm.h"

#include <errno.h>
#include <libdevmapper.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/log.h"

static pthread_mutex_t g_dm_lock = PTHREAD_MUTEX_INITIALIZER;
static bool g_dm_initialized;
static char g_dm_lasterr[512]; /* last libdevmapper error message, guarded by g_dm_lock */
/* This thread holds g_dm_lock: only then may the log callback write g_dm_lasterr (the one call
 * that runs outside the lock, dm_dev_wait_event(), reads its errno instead). */
static __thread bool t_dm_locked;

DEFINE_POINTER_CLEANUP(struct dm_task, dm_task_destroy)
#define _cleanup_dm_task_ _cleanup_(dm_task_destroyp)

/* libdevmapper's log levels (libdevmapper.h does not export them). */
#define DMLIB_LOG_ERR        3
#define DMLIB_LOG_WARN       4
#define DMLIB_LOG_LEVEL_MASK 0x0f

__attribute__((format(printf, 5, 6))) static void
dm_log_cb(int level, const char *file, int line, int dm_errno_or_class, const char *f, ...)
{
    (void)file;
    (void)line;
    (void)dm_errno_or_class;
    int lvl = level & DMLIB_LOG_LEVEL_MASK;
    if (lvl > DMLIB_LOG_WARN && log_min_level() > LOG_LVL_DEBUG)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(msg, sizeof(msg), f, ap);
    va_end(ap);
    if (lvl <= DMLIB_LOG_ERR && t_dm_locked)
        snprintf(g_dm_lasterr, sizeof(g_dm_lasterr), "%s", msg);
    /* Errors are returned to the caller, who decides whether they are worth a line. */
    log_debug("libdevmapper", "level=%d text=%s", lvl, msg);
}

static void dm_lock(void)
{
    pthread_mutex_lock(&g_dm_lock);
    if (!g_dm_initialized) {
        dm_log_with_errno_init(dm_log_cb);
        const char *disable = getenv("DM_DISABLE_UDEV");
        bool no_udev = (disable && *disable) || access("/run/udev/control", F_OK) < 0;
        if (no_udev)
            dm_udev_set_sync_support(0);
        g_dm_initialized = true;
        log_debug("devicemapper initialized", "udev_sync=%d", no_udev ? 0 : 1);
    }
    g_dm_lasterr[0] = '\0';
    t_dm_locked = true;
}

static void dm_unlock(void)
{
    t_dm_locked = false;
    pthread_mutex_unlock(&g_dm_lock);
}

pid_t dm_fork(void)
{
    pthread_mutex_lock(&g_dm_lock);
    pid_t pid = fork();
    if (pid == 0) {
        /* The copy may be held for a thread that does not exist here: start afresh. */
        pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
        g_dm_lock = fresh;
        return 0;
    }
    pthread_mutex_unlock(&g_dm_lock);
    return pid;
}

bool dm_name_valid(const char *s)
{
    if (!s || !*s || s[0] == '.' || s[0] == '-')
        return false;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok || n >= DM_NAME_MAX)
            return false;
    }
    return true;
}

/* The kinds of device thinimg names in a pool and the shape of each one's suffix: the one
 * place dm_name_format() (building) and dm_name_match() (recognising) take them from. */
static const struct {
    const char *kind;
    bool id_suffix; /* the suffix is a thin id */
} g_dm_kinds[] = {
    {DM_KIND_LAYER, true},
    {DM_KIND_ACTIVATION, false},
    {DM_KIND_TEST, false},
    {DM_KIND_FOREIGN, true},
};

/* A thin id as dm_name_format() writes it: decimal digits, no leading zero. */
static bool id_text(const char *s)
{
    if (s[0] < '1' || s[0] > '9')
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

int dm_name_format(char *out, size_t n, const char *pool, const char *kind, const char *suffix)
{
    if (!pool || !*pool || !kind || !*kind || !suffix || !*suffix)
        return -EINVAL;
    size_t i = 0;
    while (i < ARRAY_SIZE(g_dm_kinds) && strcmp(g_dm_kinds[i].kind, kind) != 0)
        i++;
    if (i == ARRAY_SIZE(g_dm_kinds) || (g_dm_kinds[i].id_suffix && !id_text(suffix)))
        return -EINVAL;
    int k = snprintf(out, n, "%s-%s-%s", pool, kind, suffix);
    if (k < 0)
        return -EINVAL;
    if ((size_t)k >= n || k > DM_NAME_MAX)
        return -ENAMETOOLONG;
    return dm_name_valid(out) ? 0 : -EINVAL;
}

bool dm_name_match(const char *name, const char *pool, const char **kind)
{
    if (!name || !pool)
        return false;
    size_t plen = strlen(pool);
    if (strncmp(name, pool, plen) != 0 || name[plen] != '-')
        return false;
    const char *rest = name + plen + 1;
    for (size_t i = 0; i < ARRAY_SIZE(g_dm_kinds); i++) {
        size_t klen = strlen(g_dm_kinds[i].kind);
        if (strncmp(rest, g_dm_kinds[i].kind, klen) != 0 || rest[klen] != '-')
            continue;
        char again[DM_NAME_MAX + 1];
        if (dm_name_format(again, sizeof(again), pool, g_dm_kinds[i].kind, rest + klen + 1) == 0 &&
            strcmp(again, name) == 0) {
            if (kind)
                *kind = g_dm_kinds[i].kind;
            return true;
        }
    }
    return false;
}

int dm_dev_path(char *out, size_t n, const char *name)
{
    if (!dm_name_valid(name))
        return -EINVAL;
    int k = snprintf(out, n, "%s/%s", dm_dir(), name);
    return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

/* The errno of a failed task (EIO if libdevmapper failed before the ioctl). */
static int task_errno(struct dm_task *dmt)
{
    int e = dmt ? dm_task_get_errno(dmt) : 0;
    return e > 0 ? -e : -EIO;
}

/* Fills e with "<what> <name>: <libdevmapper message or strerror>". Caller holds the lock. */
static int fail(struct err *e, int r, const char *what, const char *name)
{
    return err_set(e, r, "%s %s failed: %s", what, name,
                   g_dm_lasterr[0] ? g_dm_lasterr : strerror(-r));
}

/* What an operator does about a kernel without a working device-mapper. */
#define DM_MODULE_ADVICE                                                                           \
    "load the modules (modprobe dm_thin_pool; it pulls in dm_mod) or use a kernel built with "     \
    "CONFIG_BLK_DEV_DM and CONFIG_DM_THIN_PROVISIONING"

/* CAP_SYS_ADMIN in the effective set (/proc/self/status CapEff); true when it cannot be read,
 * so that an unusual /proc never hides the driver's own answer. */
static bool has_cap_sys_admin(void)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    while (f && fgets(line, sizeof(line), f)) {
        unsigned long long caps;
        if (sscanf(line, "CapEff: %llx", &caps) == 1)
            return (caps >> CAP_SYS_ADMIN) & 1;
    }
    return true;
}

/* Set once the driver has answered this process with CAP_SYS_ADMIN held: neither goes away
 * while the process runs (a loaded dm module is pinned by its users; thinimg never drops
 * capabilities), and a command asks several times (pool, usage, health, watcher): each
 * question was a /proc/self/status read and a version ioctl. Failures are not remembered. */
static atomic_bool g_dm_answered;

int dm_available(struct err *e)
{
    if (atomic_load(&g_dm_answered))
        return 0;
    if (access("/dev/mapper/control", F_OK) < 0 && access("/proc/devices", F_OK) == 0) {
        /* libdevmapper can create the control node when the driver is there; the driver is
         * there when /proc/misc lists device-mapper. */
        _cleanup_fclose_ FILE *f = fopen("/proc/misc", "re");
        char line[128];
        bool found = false;
        while (f && fgets(line, sizeof(line), f))
            if (strstr(line, "device-mapper"))
                found = true;
        if (!found)
            return err_set(e, -ENODEV,
                           "this kernel has no device-mapper (no /dev/mapper/control, nothing in "
                           "/proc/misc); " DM_MODULE_ADVICE);
    }
    /* The driver answers only to CAP_SYS_ADMIN: without it libdevmapper's ioctl fails with
     * EACCES and says "Incompatible libdevmapper", which sends an operator the wrong way. */
    if (!has_cap_sys_admin())
        return err_set(e, -EACCES,
                       "device-mapper needs root (CAP_SYS_ADMIN), and this process (uid %u) "
                       "does not have it; run thinimg as root",
                       (unsigned)geteuid());
    dm_lock();
    char v[64];
    int ok = dm_driver_version(v, sizeof(v));
    int r = ok ? 0 : -ENODEV;
    if (r < 0)
        err_set(e, r, "device-mapper driver does not answer (%s); " DM_MODULE_ADVICE,
                g_dm_lasterr[0] ? g_dm_lasterr : "no driver");
    else
        atomic_store(&g_dm_answered, true);
    dm_unlock();
    return r;
}

static struct dm_task *task_new(int type, const char *name, struct err *e)
{
    if (name && !dm_name_valid(name)) {
        err_set(e, -EINVAL, "invalid device name \"%s\" (allowed: [A-Za-z0-9_.-], at most %d)",
                name, DM_NAME_MAX);
        return NULL;
    }
    struct dm_task *dmt = dm_task_create(type);
    if (!dmt) {
        err_set(e, -ENOMEM, "dm_task_create failed");
        return NULL;
    }
    if (name && !dm_task_set_name(dmt, name)) {
        dm_task_destroy(dmt);
        err_set(e, -ENOMEM, "dm_task_set_name failed");
        return NULL;
    }
    return dmt;
}

int dm_dev_info(const char *name, struct dm_dev_info *info, struct err *e)
{
    memset(info, 0, sizeof(*info));
    dm_lock();
    _cleanup_dm_task_ struct dm_task *dmt = task_new(DM_DEVICE_INFO, name, e);
    int r = dmt ? 0 : (e && e->code ? e->code : -ENOMEM);
    if (dmt && !dm_task_run(dmt))
        r = fail(e, task_errno(dmt), "info", name);
    struct dm_info i;
    if (r == 0 && !dm_task_get_info(dmt, &i))
        r = fail(e, -EIO, "info", name);
    if (r == 0 && i.exists) {
        info->exists = true;
        info->suspended = i.suspended;
        info->live_table = i.live_table;
        info->read_only = i.read_only;
        info->open_count = i.open_count;
        info->major = i.major;
        info->minor = i.minor;
        info->target_count = i.target_count;
        info->event_nr = i.event_nr;
    }
    dm_unlock();
    return r;
}

int dm_dev_wait_event(const char *name, uint32_t *event_nr, struct err *e)
{
    dm_lock();
    _cleanup_dm_task_ struct dm_task *dmt = task_new(DM_DEVICE_WAITEVENT, name, e);
    int r = dmt ? 0 : (e && e->code ? e->code : -ENOMEM);
    if (dmt && !dm_task_set_event_nr(dmt, *event_nr))
        r = err_set(e, -ENOMEM, "dm_task_set_event_nr failed");
    dm_unlock();
    if (r < 0)
        return r;
    bool ran = dm_task_run(dmt); /* blocks until the event: outside the lock */
    dm_lock();
    struct dm_info i;
    if (!ran)
        r = err_set(e, task_errno(dmt), "waiting for an event of %s failed: %s", name,
                    strerror(-task_errno(dmt)));
    else if (!dm_task_get_info(dmt, &i) || !i.exists)
        r = err_set(e, -ENXIO, "device %s is gone", name);
    else
        *event_nr = i.event_nr;
    dm_task_destroy(dmt);
    dmt = NULL;
    dm_unlock();
    return r;
}

int dm_dev_exists(const char *name)
{
    struct dm_dev_info i;
    int r = dm_dev_info(name, &i, NULL);
    return r < 0 ? r : i.exists ? 1 : 0;
}

/* Runs a task that may create or remove a node: with a udev cookie, then waits for udev or
 * (without udev) lets libdevmapper update /dev/mapper itself. Caller holds the lock. */
static int run_with_cookie(struct dm_task *dmt)
{
    uint32_t cookie = 0;
    if (!dm_task_set_cookie(dmt, &cookie, 0))
        return -EIO;
    int ok = dm_task_run(dmt);
    int r = ok ? 0 : task_errno(dmt);
    dm_udev_wait(cookie);
    return r;
}

static int load_table(struct dm_task *dmt, uint64_t length, const char *type, const char *params)
{
    return dm_task_add_target(dmt, 0, length, type, params) ? 0 : -ENOMEM;
}

int dm_dev_create(const char *name, uint64_t length_sectors, const char *type, const char *params,
                  bool read_only, struct err *e)
{
    dm_lock();
    _cleanup_dm_task_ struct dm_task *dmt = task_new(DM_DEVICE_CREATE, name, e);
    int r = dmt ? 0 : (e && e->code ? e->code : -ENOMEM);
    if (r == 0)
        r = load_table(dmt, length_sectors, type, params);
    if (r == 0 && read_only && !dm_task_set_ro(dmt))
        r = -ENOMEM;
    if (r == 0) {
        r = run_with_cookie(dmt);
        if (r < 0)
            fail(e, r, "create", name);
    }
    dm_unlock();
    if (r == 0)
        log_debug("dm device created", "name=%s type=%s sectors=%llu", name, type,
                  (unsigned long long)length_sectors);
    return r;
}

/* One simple task on name (suspend, resume, clear); resume with a udev cookie. Caller holds
 * the lock. */
static int simple_task(int type, const char *what, const char *name, struct err *e)
{
    _cleanup_dm_task_ struct dm_task *dmt = task_new(type, name, e);
    if (!dmt)
        return e && e->code ? e->code : -ENOMEM;
    int r = type == DM_DEVICE_RESUME ? run_with_cookie(dmt)
            : dm_task_run(dmt)       ? 0
                                     : task_errno(dmt);
    return r < 0 ? fail(e, r, what, name) : 0;
}

int dm_dev_reload(const char *name, uint64_t length_sectors, const char *type, const char *params,
                  struct err *e)
{
    dm_lock();
    _cleanup_dm_task_ struct dm_task *dmt = task_new(DM_DEVICE_RELOAD, name, e);
    int r = dmt ? 0 : (e && e->code ? e->code : -ENOMEM);
    if (r == 0)
        r = load_table(dmt, length_sectors, type, params);
    if (r == 0 && !dm_task_run(dmt))
        r = fail(e, task_errno(dmt), "reload", name);
    if (r == 0) {
        r = simple_task(DM_DEVICE_SUSPEND, "suspend", name, e);
        if (r < 0) /* the live table stays; drop the inactive one */
            simple_task(DM_DEVICE_CLEAR, "clear", name, NULL);
    }
    if (r == 0 && (r = simple_task(DM_DEVICE_RESUME, "resume", name, e)) < 0)
        err_prefix(e, "%s is left suspended with the new table; `dmsetup resume %s` retries", name,
                   name);
    dm_unlock();
    if (r == 0)
        log_debug("dm device reloaded", "name=%s type=%s sectors=%llu", name, type,
                  (unsigned long long)length_sectors);
    return r;
}

int dm_dev_remove(const char *name, bool retry, struct err *e)
{
    dm_lock();
    _cleanup_dm_task_ struct dm_task *dmt = task_new(DM_DEVICE_REMOVE, name, e);
    int r = dmt ? 0 : (e && e->code ? e->code : -ENOMEM);
    if (r == 0 && retry)
        dm_task_retry_remove(dmt);
    if (r == 0) {
        r = run_with_cookie(dmt);
        if (r < 0)
            fail(e, r, "remove", name);
    }
    dm_unlock();
    if (r == 0)
        log_debug("dm device removed", "name=%s", name);
    return r;
}

int dm_dev_message(const char *name, const char *message, char **response, struct err *e)
{
    if (response)
        *response = NULL;
    dm_lock();
    _cleanup_dm_task_ struct dm_task *dmt = task_new(DM_DEVICE_TARGET_MSG, name, e);
    int r = dmt ? 0 : (e && e->code ? e->code : -ENOMEM);
    if (r == 0 && (!dm_task_set_sector(dmt, 0) || !dm_task_set_message(dmt, message)))
        r = -ENOMEM;
    if (r == 0 && !dm_task_run(dmt)) {
        r = task_errno(dmt);
        err_set(e, r, "message \"%s\" to %s failed: %s", message, name,
                g_dm_lasterr[0] ? g_dm_lasterr : strerror(-r));
    }
    if (r == 0 && response) {
        const char *resp = dm_task_get_message_response(dmt);
        *response = strdup(resp ? resp : "");
        if (!*response)
            r = -ENOMEM;
    }
    dm_unlock();
    log_debug("dm message", "name=%s message=%s r=%d", name, message, r);
    return r;
}

static int first_target(int type, const char *what, const char *name, struct dm_target_line *out,
                        struct err *e)
{
    memset(out, 0, sizeof(*out));
    dm_lock();
    _cleanup_dm_task_ struct dm_task *dmt = task_new(type, name, e);
    int r = dmt ? 0 : (e && e->code ? e->code : -ENOMEM);
    if (r == 0 && !dm_task_run(dmt))
        r = fail(e, task_errno(dmt), what, name);
    struct dm_info i;
    if (r == 0 && (!dm_task_get_info(dmt, &i) || !i.exists))
        r = err_set(e, -ENXIO, "%s %s: no such device", what, name);
    if (r == 0) {
        uint64_t start = 0, length = 0;
        char *ttype = NULL, *params = NULL;
        dm_get_next_target(dmt, NULL, &start, &length, &ttype, &params);
        if (!ttype)
            r = err_set(e, -ENODATA, "%s %s: the device has no table", what, name);
        else {
            out->start = start;
            out->length = length;
            snprintf(out->type, sizeof(out->type), "%s", ttype);
            snprintf(out->params, sizeof(out->params), "%s", params ? params : "");
        }
    }
    dm_unlock();
    return r;
}

int dm_dev_status(const char *name, struct dm_target_line *out, struct err *e)
{
    return first_target(DM_DEVICE_STATUS, "status of", name, out, e);
}

int dm_dev_table(const char *name, struct dm_target_line *out, struct err *e)
{
    return first_target(DM_DEVICE_TABLE, "table of", name, out, e);
}

void dm_names_free(char **names)
{
    if (!names)
        return;
    for (char **p = names; *p; p++)
        free(*p);
    free(names);
}

int dm_dev_list(char ***names, struct err *e)
{
    *names = NULL;
    dm_lock();
    _cleanup_dm_task_ struct dm_task *dmt = task_new(DM_DEVICE_LIST, NULL, e);
    int r = dmt ? 0 : (e && e->code ? e->code : -ENOMEM);
    if (r == 0 && !dm_task_run(dmt))
        r = fail(e, task_errno(dmt), "list", "devices");
    size_t n = 0;
    char **v = NULL;
    if (r == 0) {
        struct dm_names *dn = dm_task_get_names(dmt);
        /* An empty list is one entry with dev == 0. */
        for (struct dm_names *p = dn; p && p->dev;
             p = p->next ? (struct dm_names *)((char *)p + p->next) : NULL) {
            char **nv = realloc(v, (n + 2) * sizeof(char *));
            if (!nv || !(nv[n] = strdup(p->name))) {
                v = nv ? nv : v;
                r = -ENOMEM;
                break;
            }
            v = nv;
            v[++n] = NULL;
            if (!p->next)
                break;
        }
    }
    dm_unlock();
    if (r < 0) {
        if (v)
            v[n] = NULL;
        dm_names_free(v);
        return r;
    }
    if (!v) {
        v = calloc(1, sizeof(char *));
        if (!v)
            return -ENOMEM;
    }
    *names = v;
    return (int)n;
}
