/*
 * lock.c: flock(2)-based process lock with holder diagnostics. See lock.h.
 */
#include "guard/lock.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/timeutil.h"

/* How often a waiting acquirer retries. Short enough to feel immediate to an operator. */
#define LOCK_POLL_MS 100

static int read_holder_fd(int fd, struct lock_holder *out)
{
    char buf[512];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n < 0)
        return neg_errno();
    buf[n] = '\0';
    memset(out, 0, sizeof(*out));
    json_error_t je;
    json_t *o = json_loads(buf, 0, &je);
    if (!o)
        return -EBADMSG;
    json_t *pid = json_object_get(o, "pid"), *ts = json_object_get(o, "started_at_ms"),
           *cmd = json_object_get(o, "command");
    if (json_is_integer(pid))
        out->pid = (pid_t)json_integer_value(pid);
    if (json_is_integer(ts))
        out->started_at_ms = json_integer_value(ts);
    if (json_is_string(cmd))
        snprintf(out->command, sizeof(out->command), "%s", json_string_value(cmd));
    json_decref(o);
    return 0;
}

void lock_holder_describe(const struct lock_holder *h, char *out, size_t n)
{
    if (h->pid <= 0) {
        snprintf(out, n, "another thinimg process");
        return;
    }
    char age[32];
    format_duration_ms(now_ms() - h->started_at_ms, age, sizeof(age));
    snprintf(out, n, "pid %d (%s, started %s ago)", (int)h->pid,
             h->command[0] ? h->command : "unknown command", age);
}

int proc_lock_acquire(const char *path, const char *command, int64_t wait_ms,
                      struct proc_lock *out, struct lock_holder *holder, struct err *e)
{
    out->fd = -1;
    _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int r = neg_errno();
        return err_set(e, r, "cannot open lock file %s: %s%s", path, strerror(-r),
                       r == -EACCES || r == -EPERM
                           ? "; the state directory is not writable by this user (thinimg runs "
                             "as root, or as the user that owns the state directory)"
                           : "");
    }
    int64_t deadline = wait_ms > 0 ? mono_ms() + wait_ms : 0;
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            break;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return err_set(e, neg_errno(), "cannot lock %s: %s", path, strerror(errno));
        if (wait_ms == 0 || (wait_ms > 0 && mono_ms() >= deadline)) {
            struct lock_holder h = {0};
            read_holder_fd(fd, &h);
            if (holder)
                *holder = h;
            char who[256];
            lock_holder_describe(&h, who, sizeof(who));
            int code = wait_ms == 0 ? -EBUSY : -ETIMEDOUT;
            return err_set(e, code,
                           "state directory is locked by %s; wait for it to finish, or send the "
                           "work to the daemon if it is one (lock file %s)",
                           who, path);
        }
        sleep_ms(LOCK_POLL_MS);
    }
    char content[256];
    int n = snprintf(content, sizeof(content), "{\"pid\": %d, \"started_at_ms\": %lld, "
                                               "\"command\": \"%s\"}\n",
                     (int)getpid(), (long long)now_ms(), command ? command : "");
    if (ftruncate(fd, 0) < 0 || pwrite(fd, content, (size_t)n, 0) != n)
        return err_set(e, neg_errno(), "cannot write lock file %s: %s", path, strerror(errno));
    out->fd = TAKE_FD(fd);
    return 0;
}

void proc_lock_release(struct proc_lock *l)
{
    if (l->fd < 0)
        return;
    /* Leave the file (removing it would race with a new acquirer); just drop the lock. */
    if (ftruncate(l->fd, 0) < 0) {
        /* diagnostics only */
    }
    flock(l->fd, LOCK_UN);
    close(l->fd);
    l->fd = -1;
}

int proc_lock_holder(const char *path, struct lock_holder *out)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return neg_errno();
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
        return -ESRCH;
    }
    if (errno != EWOULDBLOCK)
        return neg_errno();
    int r = read_holder_fd(fd, out);
    return r == -EBADMSG ? 0 : r;
}
