/*
 * backend.c: what the storage backends share (backend.h): applying a layer blob onto a file
 * system mounted privately in a child process.
 */
#include <string.h>

#include "archive/archive.h"
#include "dm/mount.h"
#include "pipeline/backend.h"
#include "pipeline/machine.h"
#include "util/buf.h"

/* ---- applying a layer ---------------------------------------------------------------------- */

struct apply_args {
    const char *blob;
    const struct archive_policy *policy;
    backend_after_apply_fn after;
    const char *mountpoint;
};

/* In the mount child: the archive reader's progress (bytes of the blob read) goes to the
 * parent through the mount runner's shared page. */
static void child_progress(uint64_t done, uint64_t total, void *ud)
{
    (void)ud;
    mount_child_progress(done, total);
}

/* In the parent, while the child applies: what the progress display and the API show. */
static void apply_progress(uint64_t done, uint64_t total, void *ud)
{
    fsm_run_set_progress(ud, "apply", done, total);
}

/* Runs in the mount child: no database, no logger (see dm/mount.h). */
static int apply_in_child(int root_fd, void *ud, struct buf *out, struct err *e)
{
    struct apply_args *a = ud;
    archive_set_progress(child_progress, NULL);
    struct archive_stats st = {0};
    int r = archive_apply(root_fd, a->blob, a->policy, &st, e);
    if (r == 0 && a->after)
        r = a->after(a->mountpoint, &st, e);
    if (r < 0)
        return r;
    return buf_append(out, &st, sizeof(st));
}

int backend_apply_mounted(struct fsm_run *run, struct pipeline *p,
                          const struct backend_layer_req *q, struct mount_spec *spec,
                          backend_after_apply_fn after, struct archive_stats *st, struct err *e)
{
    struct apply_args a = {
        .blob = q->blob_path, .policy = &p->policy, .after = after, .mountpoint = spec->mountpoint};
    spec->cancel_fd = fsm_run_cancel_fd(run);
    spec->progress = apply_progress;
    spec->progress_ud = run;
    struct buf out = BUF_INIT;
    fsm_run_set_progress(run, "apply", 0, 0);
    int r = mount_run(spec, apply_in_child, &a, &out, e);
    memset(st, 0, sizeof(*st));
    if (r == 0 && out.len == sizeof(*st))
        memcpy(st, out.data, sizeof(*st));
    buf_free(&out);
    return r;
}
