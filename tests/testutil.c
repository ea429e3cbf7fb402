/*
 * testutil.c: helpers shared by the tests. See testutil.h.
 */
#include "testutil.h"

#include "fsm/fsm.h"
#include "store/schema.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

char *tu_mkdtemp(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *p = NULL;
    if (asprintf(&p, "%s/thinimg-%s-XXXXXX", base && *base ? base : "/tmp", tag) < 0)
        return NULL;
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

void tu_rmrf(const char *path)
{
    if (!path || !*path || !strcmp(path, "/"))
        return;
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf -- '%s'", path) < 0)
        return;
    int rc = system(cmd);
    (void)rc;
    free(cmd);
}

static void drain(int fd, char **dst, size_t *len, size_t *cap, bool *open_)
{
    char tmp[8192];
    ssize_t n = read(fd, tmp, sizeof(tmp));
    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN))
            *open_ = false;
        return;
    }
    if (*len + (size_t)n + 1 > *cap) {
        *cap = (*len + (size_t)n + 1) * 2;
        *dst = realloc(*dst, *cap);
    }
    memcpy(*dst + *len, tmp, (size_t)n);
    *len += (size_t)n;
    (*dst)[*len] = '\0';
}

int tu_run(char *const argv[], char *const env_extra[], char **out, char **err)
{
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        for (int i = 0; env_extra && env_extra[i]; i++)
            putenv(env_extra[i]);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    char *bo = calloc(1, 1), *be = calloc(1, 1);
    size_t lo = 0, le = 0, co = 1, ce = 1;
    bool oo = true, oe = true;
    while (oo || oe) {
        struct pollfd p[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (oo && (p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            drain(po[0], &bo, &lo, &co, &oo);
        if (oe && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
            drain(pe[0], &be, &le, &ce, &oe);
        if (!oo)
            p[0].fd = -1;
    }
    close(po[0]);
    close(pe[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (out)
        *out = bo;
    else
        free(bo);
    if (err)
        *err = be;
    else
        free(be);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int tu_sh(const char *cmd, char **out, char **err)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    return tu_run(argv, NULL, out, err);
}

static const char *env_or(const char *k, const char *dflt)
{
    const char *v = getenv(k);
    return v && *v ? v : dflt;
}

const char *tu_thinimg(void)
{
    return env_or("THINIMG_BIN", "thinimg");
}

const char *tu_source_dir(void)
{
    return env_or("THINIMG_SOURCE_DIR", ".");
}

const char *tu_build_dir(void)
{
    return env_or("THINIMG_BUILD_DIR", ".");
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t k;
    while ((k = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (cap - n - 1 == 0) {
            cap *= 2;
            b = realloc(b, cap);
        }
    }
    fclose(f);
    b[n] = '\0';
    if (len)
        *len = n;
    return b;
}

int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    fclose(f);
    return w == len ? 0 : -1;
}

bool tu_contains(const char *haystack, const char *needle)
{
    return haystack && needle && strstr(haystack, needle) != NULL;
}

unsigned char *tu_gzip_member(const void *data, size_t n, size_t *out_n)
{
    size_t cap = n + n / 100 + 4096, used = 0;
    unsigned char *m = malloc(cap);
    struct archive *a = archive_write_new();
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, "data");
    archive_entry_set_filetype(ae, AE_IFREG);
    archive_entry_set_size(ae, (la_int64_t)n);
    bool ok = m && a && ae && archive_write_set_format_raw(a) == ARCHIVE_OK &&
              archive_write_add_filter_gzip(a) == ARCHIVE_OK &&
              archive_write_set_bytes_in_last_block(a, 1) == ARCHIVE_OK &&
              archive_write_open_memory(a, m, cap, &used) == ARCHIVE_OK &&
              archive_write_header(a, ae) == ARCHIVE_OK &&
              (n == 0 || archive_write_data(a, data, n) == (la_ssize_t)n) &&
              archive_write_close(a) == ARCHIVE_OK;
    archive_entry_free(ae);
    archive_write_free(a);
    if (!ok) {
        free(m);
        return NULL;
    }
    *out_n = used;
    return m;
}

int tu_db_open(const char *tag, struct tu_db *t)
{
    t->dir = tu_mkdtemp(tag);
    char path[4096];
    snprintf(path, sizeof(path), "%s/t.db", t->dir);
    struct err e = {0};
    if (db_open(path, NULL, &t->db, &e) < 0 || fsm_db_migrate(t->db, &e) < 0 ||
        store_migrate(t->db, &e) < 0) {
        fprintf(stderr, "%s: %s\n", path, err_str(&e));
        return -1;
    }
    return 0;
}

void tu_db_close(struct tu_db *t)
{
    db_close(t->db);
    tu_rmrf(t->dir);
    free(t->dir);
    *t = (struct tu_db){0};
}
