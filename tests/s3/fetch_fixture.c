/*
 * fetch_fixture.c: the shared set-up of the `thinimg fetch` tests against the S3 harness. See
 * fetch_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fetch_fixture.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"

int fixture_init(struct fetch_fixture *f, const char *tag)
{
    *f = (struct fetch_fixture){.h.pid = -1, .h.stdin_fd = -1};
    f->root = tu_mkdtemp(tag);
    if (!f->root || asprintf(&f->seed, "%s/seed", f->root) < 0)
        return -1;
    return 0;
}

int fixture_start(struct fetch_fixture *f, const char *bucket)
{
    s3h_anonymous_env();
    return s3h_start(&f->h, bucket, f->seed);
}

int fixture_end(struct fetch_fixture *f)
{
    s3h_stop(&f->h);
    if (f->root)
        tu_rmrf(f->root);
    free(f->root);
    free(f->seed);
    f->root = f->seed = NULL;
    return 0;
}

int fixture_teardown(void **state)
{
    return fixture_end(*state);
}

int fixture_reset(void **state)
{
    struct fetch_fixture *f = *state;
    return s3h_reset(&f->h);
}

char *fixture_new_state(struct fetch_fixture *f)
{
    char *p = NULL;
    if (asprintf(&p, "%s/state%d", f->root, f->states++) < 0)
        return NULL;
    return p;
}

void fixture_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char *err = NULL;
    if (tu_sh(cmd, NULL, &err) != 0)
        fail_msg("%s: %s", cmd, err ? err : "");
    free(err);
}

void fixture_make_layer(const char *path, int kib, int seed)
{
    fixture_sh("python3 -c 'import io,random,tarfile,sys\n"
               "r=random.Random(%d); n=%d<<10\n"
               "d=b\"\".join(r.randbytes(min(1<<20,n-o)) for o in range(0,n,1<<20))\n"
               "with tarfile.open(sys.argv[1],\"w\",format=tarfile.USTAR_FORMAT) as t:\n"
               "  i=tarfile.TarInfo(\"f%d.bin\"); i.size=n; i.mtime=1700000000\n"
               "  t.addfile(i, io.BytesIO(d))' '%s'",
               seed, kib, seed, path);
}

pid_t fixture_spawn(struct fetch_fixture *f, const char *state_dir, const char *ref)
{
    pid_t pid = s3h_spawn_fetch(&f->h, state_dir, ref);
    assert_true(pid > 0);
    return pid;
}

int fixture_fetch(struct fetch_fixture *f, const char *state_dir, const char *ref,
                  const char *option, const char *const env[], char **out, char **err)
{
    char sd[4096], ep[128];
    snprintf(sd, sizeof(sd), "--state-dir=%s", state_dir);
    snprintf(ep, sizeof(ep), "AWS_ENDPOINT_URL=%s", f->h.proxy_url);
    char *envp[1 + FIXTURE_ENV_MAX + 1] = {ep};
    for (size_t i = 0; env && env[i]; i++) {
        assert_true(i < FIXTURE_ENV_MAX);
        envp[1 + i] = (char *)env[i];
    }
    char *argv[] = {(char *)tu_thinimg(), sd, "fetch", (char *)ref, (char *)option, NULL};
    return tu_run(argv, envp, out, err);
}

size_t fixture_files_in(const char *state_dir, const char *sub)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/%s", state_dir, sub);
    DIR *d = opendir(p);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            printf("in %s: %s\n", p, de->d_name);
            n++;
        }
    closedir(d);
    return n;
}
