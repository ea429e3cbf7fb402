/*
 * mount.c: private mount runner; see mount.h.
 *
 * Pipe protocol, child to parent, written once at the end:
 *   int32 rc | uint32 msg_len | msg bytes | uint64 result_len | result bytes
 * A child that dies before writing it is reported from its wait status.
 */
#include "dm/mount.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/forklock.h"
#include "util/fsutil.h"
#include "util/timeutil.h"

static void set_limit(int res, rlim_t v)
{
    if (v) {
        struct rlimit rl = {v, v};
        setrlimit(res, &rl);
    }
}

/* In the child: everything up to writing the report. Never returns. */
__attribute__((noreturn)) static void child(const struct mount_spec *spec, mount_fn fn, void *ud,
                                            int wfd)
{
    struct err e = {0};
    struct buf out = BUF_INIT;
    int r = 0;
    if (unshare(CLONE_NEWNS) < 0)
        r = err_set(&e, neg_errno(), "unshare(CLONE_NEWNS): %s", strerror(errno));
    else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        r = err_set(&e, neg_errno(), "making / private: %s", strerror(errno));
    if (r == 0 && spec->limits) {
        /* Over RLIMIT_FSIZE a write fails with EFBIG instead of killing the child. */
        if (spec->limits->fsize_bytes)
            signal(SIGXFSZ, SIG_IGN);
        set_limit(RLIMIT_AS, spec->limits->as_bytes);
        set_limit(RLIMIT_CPU, spec->limits->cpu_seconds);
        set_limit(RLIMIT_FSIZE, spec->limits->fsize_bytes);
        set_limit(RLIMIT_NOFILE, spec->limits->nofile);
    }
    const char *fstype = spec->fstype ? spec->fstype : "ext4";
    if (r == 0 && mount(spec->device, spec->mountpoint, fstype, MS_NOSUID | MS_NODEV | spec->flags,
                        spec->options) < 0)
        r = err_set(&e, neg_errno(), "cannot mount %s (%s) on %s: %s", spec->device, fstype,
                    spec->mountpoint, strerror(errno));
    int root = -1;
    if (r == 0) {
        root = open(spec->mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
            r = err_set(&e, neg_errno(), "cannot open the mount root %s: %s", spec->mountpoint,
                        strerror(errno));
    }
    if (r == 0) {
        r = fn(root, ud, &out, &e);
        if (r < 0 && !e.code)
            err_set(&e, r, "%s", strerror(-r));
    }
    if (r == 0) {
        int fd = open(spec->mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || syncfs(fd) < 0)
            r = err_set(&e, neg_errno(), "syncfs on %s: %s", spec->device, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    if (root >= 0)
        close(root);
    if (r == 0 && umount2(spec->mountpoint, 0) < 0)
        r = err_set(&e, neg_errno(), "cannot unmount %s: %s", spec->device, strerror(errno));
    /* Report. */
    int32_t rc = r;
    const char *msg = e.code ? e.msg : "";
    uint32_t ml = (uint32_t)strlen(msg);
    uint64_t rl = out.len;
    if (write_all(wfd, &rc, sizeof(rc)) < 0 || write_all(wfd, &ml, sizeof(ml)) < 0 ||
        write_all(wfd, msg, ml) < 0 || write_all(wfd, &rl, sizeof(rl)) < 0 ||
        (rl && write_all(wfd, out.data, out.len) < 0))
        _exit(3);
    _exit(r == 0 ? 0 : 1);
}

/* The child's progress, in a page shared with the parent (MAP_SHARED before the fork). */
struct progress_page {
    uint64_t done, total;
};

/* The child's view of its page (set in the child only; NULL when no progress was asked for). */
static struct progress_page *g_child_progress;

void mount_child_progress(uint64_t done, uint64_t total)
{
    if (!g_child_progress)
        return;
    __atomic_store_n(&g_child_progress->total, total, __ATOMIC_RELAXED);
    __atomic_store_n(&g_child_progress->done, done, __ATOMIC_RELAXED);
}

/* What the parent waits with. */
struct waiter {
    int64_t deadline; /* 0: none */
    int cancel_fd;
    const struct mount_spec *spec;
    struct progress_page *page; /* NULL: no progress */
    uint64_t last_done;
};

static void waiter_progress(struct waiter *w)
{
    if (!w->page)
        return;
    uint64_t done = __atomic_load_n(&w->page->done, __ATOMIC_RELAXED);
    uint64_t total = __atomic_load_n(&w->page->total, __ATOMIC_RELAXED);
    if (done == w->last_done)
        return;
    w->last_done = done;
    w->spec->progress(done, total, w->spec->progress_ud);
}

/* Reads exactly n bytes before the deadline. */
static int read_exact(int fd, void *p, size_t n, struct waiter *w)
{
    size_t got = 0;
    int64_t deadline = w->deadline;
    int cancel_fd = w->cancel_fd;
    while (got < n) {
        int wait = w->page ? MOUNT_PROGRESS_MS : -1;
        if (deadline) {
            int64_t left = deadline - mono_ms();
            if (left <= 0)
                return -ETIMEDOUT;
            if (wait < 0 || left < wait)
                wait = (int)(left > 1000 ? 1000 : left);
        }
        waiter_progress(w);
        struct pollfd pf[2] = {{fd, POLLIN, 0}, {cancel_fd, POLLIN, 0}};
        int k = poll(pf, cancel_fd > 0 ? 2 : 1, wait);
        if (k < 0 && errno != EINTR)
            return neg_errno();
        if (k <= 0)
            continue;
        if (cancel_fd > 0 && (pf[1].revents & POLLIN))
            return -ECANCELED;
        if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t m = read(fd, (char *)p + got, n - got);
        if (m < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (m < 0)
            return neg_errno();
        if (m == 0)
            return -EPIPE;
        got += (size_t)m;
    }
    return 0;
}

int mount_run(const struct mount_spec *spec, mount_fn fn, void *ud, struct buf *result,
              struct err *e)
{
    if (!spec || !spec->device || !spec->mountpoint || !fn)
        return err_set(e, -EINVAL, "mount_run: device, mountpoint and function are required");
    if (result)
        buf_free(result);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return err_set(e, neg_errno(), "pipe: %s", strerror(errno));
    struct waiter w = {.deadline = spec->timeout_ms > 0 ? mono_ms() + spec->timeout_ms : 0,
                       .cancel_fd = spec->cancel_fd,
                       .spec = spec};
    if (spec->progress) {
        void *page = mmap(NULL, sizeof(struct progress_page), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (page != MAP_FAILED) /* without it the work runs the same, only unseen */
            w.page = page;
    }
    pid_t parent = getpid();
    /* The child reads layers with libarchive: fork while no thread of ours is inside a
     * conversion that holds glibc's gconv lock (util/forklock.h). */
    pid_t pid = forklock_fork();
    if (pid < 0) {
        int r = neg_errno();
        close(p[0]);
        close(p[1]);
        if (w.page)
            munmap(w.page, sizeof(*w.page));
        return err_set(e, r, "fork: %s", strerror(-r));
    }
    if (pid == 0) {
        close(p[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(4);
        g_child_progress = w.page;
        child(spec, fn, ud, p[1]);
    }
    close(p[1]);
    _cleanup_close_ int rfd = p[0];
    int32_t rc = 0;
    uint32_t ml = 0;
    uint64_t rl = 0;
    char msg[ERR_MSG_MAX];
    int r = read_exact(rfd, &rc, sizeof(rc), &w);
    if (r == 0)
        r = read_exact(rfd, &ml, sizeof(ml), &w);
    if (r == 0 && ml >= sizeof(msg))
        r = -EPROTO;
    if (r == 0)
        r = read_exact(rfd, msg, ml, &w);
    if (r == 0) {
        msg[ml] = '\0';
        r = read_exact(rfd, &rl, sizeof(rl), &w);
    }
    if (r == 0 && rl > MOUNT_RESULT_MAX)
        r = -EPROTO;
    if (r == 0 && rl) {
        struct buf tmp = BUF_INIT;
        r = buf_reserve(&tmp, rl + 1);
        if (r == 0)
            r = read_exact(rfd, tmp.data, rl, &w);
        if (r == 0) {
            tmp.len = rl;
            tmp.data[rl] = '\0';
            if (result)
                *result = tmp;
            else
                buf_free(&tmp);
        } else
            buf_free(&tmp);
    }
    if (w.page) {
        waiter_progress(&w); /* the last figures, e.g. the whole blob read */
        munmap(w.page, sizeof(*w.page));
    }
    if (r == -ETIMEDOUT || r == -ECANCELED)
        kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (r == -ECANCELED)
        return err_set(e, r,
                       "work on %s was cancelled (the child was killed; its mount went with its "
                       "namespace)",
                       spec->device);
    if (r == -ETIMEDOUT)
        return err_set(e, r,
                       "work on %s did not finish within %d ms (killed; its mount went "
                       "with its namespace)",
                       spec->device, spec->timeout_ms);
    if (r < 0) {
        if (WIFSIGNALED(st))
            return err_set(e, -EIO, "the mount child for %s was killed by signal %d", spec->device,
                           WTERMSIG(st));
        return err_set(e, r, "the mount child for %s ended without a report (status %d)",
                       spec->device, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    if (rc < 0)
        return err_set(e, rc, "%s", ml ? msg : strerror(-rc));
    return rc;
}
