/*
 * fuzz_archive.c: libFuzzer target for the archive policy: each input is detected, scanned
 * and applied into a fresh temporary root, which is removed afterwards.
 *
 * Besides crashes and sanitizer reports, the target checks the module's security promise:
 * the root sits in a sandbox directory next to a canary file, and after every apply the
 * sandbox must still hold exactly the root and the unchanged canary. Anything else aborts.
 *
 * Limits are small so that each input runs in milliseconds.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive/archive.h"
#include "archive/limits.h"
#include "util/fsutil.h"

#define CANARY "canary: must never change\n"

static char sandbox[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)ftw;
    if (flag == FTW_DP || flag == FTW_D)
        return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int chmod_dirs(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag == FTW_D && !S_ISLNK(sb->st_mode))
        chmod(path, 0700);
    return 0;
}

static void check_sandbox(void)
{
    char canary[512];
    snprintf(canary, sizeof(canary), "%s/canary", sandbox);
    int fd = open(canary, O_RDONLY | O_NOFOLLOW);
    char buf[128] = {0};
    if (fd < 0 || read(fd, buf, sizeof(buf) - 1) != (ssize_t)strlen(CANARY) ||
        strcmp(buf, CANARY) != 0) {
        fprintf(stderr, "fuzz_archive: the canary next to the root changed\n");
        abort();
    }
    close(fd);
    int n = 0;
    DIR *d = opendir(sandbox);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    if (d)
        closedir(d);
    if (n != 2) {
        fprintf(stderr, "fuzz_archive: something was created next to the root\n");
        abort();
    }
}

static void remove_sandbox(void)
{
    nftw(sandbox, chmod_dirs, 64, FTW_PHYS | FTW_MOUNT);
    nftw(sandbox, rm_entry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(sandbox, sizeof(sandbox), "%s/thinimg-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(sandbox))
        abort();
    char canary[512];
    snprintf(canary, sizeof(canary), "%s/canary", sandbox);
    if (write_file_atomic(canary, CANARY, strlen(CANARY), 0644) < 0)
        abort();
    atexit(remove_sandbox);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-layer", MFD_CLOEXEC);
    if (fd < 0 || write_all(fd, data, size) < 0)
        abort();
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    struct archive_policy p = archive_policy_default();
    p.max_entries = 2000;
    p.max_file_bytes = 1 << 20;
    p.max_total_bytes = 8 << 20;
    p.max_time_ms = 2000;
    p.preserve_owner = geteuid() == 0;
    p.allow_devices = geteuid() == 0;

    enum blob_format f;
    char why[160];
    int rd = archive_detect(path, &f, why, sizeof(why));
    struct archive_stats st;
    struct err e = {0};
    int rs = archive_scan(path, &p, &st, &e);
    /* The one-pass form must give the same answers as detect then scan (the time limit aside:
     * it depends on the machine's load). */
    enum blob_format f2;
    char why2[160];
    struct archive_stats st2;
    struct err e2 = {0};
    int r2 = archive_scan_detect(path, &p, &f2, why2, sizeof(why2), &st2, &e2);
    bool timed = strstr(e.msg, "rule: time") || strstr(e2.msg, "rule: time");
    bool agree = rd < 0 || f2 == f;
    if (agree && rd == 0 && blob_format_is_layer(f))
        agree = r2 == rs && (rs < 0 || memcmp(&st, &st2, sizeof(st)) == 0);
    else if (agree && rd == 0)
        agree = r2 == 0;
    if (!agree && !timed) {
        fprintf(stderr,
                "fuzz_archive: archive_scan_detect (%d, %s) disagrees with detect (%s) "
                "+ scan (%d)\n",
                r2, blob_format_name(f2), blob_format_name(f), rs);
        abort();
    }

    char root[512];
    snprintf(root, sizeof(root), "%s/root", sandbox);
    if (mkdir(root, 0755) < 0)
        abort();
    int root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        abort();
    /* Applied as `thinimg extract` does (detected while applied into the empty root): the
     * same format as detect, and an outer tar or a non-archive leaves the root empty. */
    err_clear(&e);
    enum blob_format f3;
    char why3[160];
    int r = archive_apply_detect(root_fd, path, &p, &f3, why3, sizeof(why3), &st, &e);
    if (r < 0 && e.code == 0 && f3 != BLOB_UNKNOWN) {
        fprintf(stderr, "fuzz_archive: error %d without a message\n", r);
        abort();
    }
    timed = timed || strstr(e.msg, "rule: time");
    if (rd == 0 && f3 != f && !timed) {
        fprintf(stderr, "fuzz_archive: archive_apply_detect says %s, detect %s\n",
                blob_format_name(f3), blob_format_name(f));
        abort();
    }
    if (r == 0 && !blob_format_is_layer(f3)) {
        DIR *rd_dir = fdopendir(dup(root_fd));
        struct dirent *de;
        while (rd_dir && (de = readdir(rd_dir)))
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                fprintf(stderr, "fuzz_archive: %s left '%s' in the root\n", blob_format_name(f3),
                        de->d_name);
                abort();
            }
        if (rd_dir)
            closedir(rd_dir);
    }
    close(root_fd);
    close(fd);
    check_sandbox();
    nftw(root, chmod_dirs, 64, FTW_PHYS | FTW_MOUNT);
    if (nftw(root, rm_entry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0) {
        fprintf(stderr, "fuzz_archive: cannot remove %s: %s\n", root, strerror(errno));
        abort();
    }
    return 0;
}
