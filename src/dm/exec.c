/*
 * exec.c: run a tool with a deadline and captured output; see exec.h.
 */
#include "dm/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/timeutil.h"

static void drain(int *fd, struct buf *b)
{
    char tmp[8192];
    ssize_t n = read(*fd, tmp, sizeof(tmp));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return;
    }
    if (b && b->len + (size_t)n <= DM_EXEC_OUTPUT_MAX)
        buf_append(b, tmp, (size_t)n);
}

int dm_exec(char *const argv[], int timeout_ms, struct buf *out, struct buf *errout, struct err *e)
{
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0)
        return err_set(e, neg_errno(), "pipe: %s", strerror(errno));
    if (pipe2(pe, O_CLOEXEC) < 0) {
        int r = neg_errno();
        close(po[0]);
        close(po[1]);
        return err_set(e, r, "pipe: %s", strerror(-r));
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int r = neg_errno();
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        return err_set(e, r, "fork: %s", strerror(-r));
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        execvp(argv[0], argv);
        dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    int fo = po[0], fe = pe[0];
    int64_t deadline = mono_ms() + timeout_ms;
    bool timed_out = false;
    while (fo >= 0 || fe >= 0) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd p[2] = {{fo, POLLIN, 0}, {fe, POLLIN, 0}};
        int k = poll(p, 2, (int)(left > 1000 ? 1000 : left));
        if (k < 0 && errno != EINTR)
            break;
        if (fo >= 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            drain(&fo, out);
        if (fe >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
            drain(&fe, errout);
    }
    if (fo >= 0)
        close(fo);
    if (fe >= 0)
        close(fe);
    if (timed_out)
        kill(-pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (timed_out)
        return err_set(e, -ETIMEDOUT, "%s did not finish within %d ms (killed)", argv[0],
                       timeout_ms);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
