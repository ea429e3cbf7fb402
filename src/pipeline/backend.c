/*
 * backend.c: what the storage backends share (backend.h): the choice of a state directory's
 * backend, and applying a layer blob onto a file system mounted privately in a child process.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "archive/archive.h"
#include "dm/mount.h"
#include "pipeline/backend.h"
#include "pipeline/machine.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/timeutil.h"

/* ---- the choice --------------------------------------------------------------------------- */

/* A state directory that records none (a new one, or one from before the choice existed). */
#define BACKEND_DEFAULT "dm-thin"

const struct backend_ops *backend_by_name(const char *name)
{
    static const struct backend_ops *const all[] = {&backend_dm_thin, &backend_overlay};
    for (size_t i = 0; name && i < sizeof(all) / sizeof(all[0]); i++)
        if (!strcmp(all[i]->name, name))
            return all[i];
    return NULL;
}

int backend_recorded(struct db *db, char *out, size_t n)
{
    db_lock(db);
    /* A database opened read-only may be older than the table (no migration ran): no choice
     * recorded, without the error a missing table would log. */
    sqlite3_stmt *st = db_prepare(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                      "AND name = 'storage_backend'");
    int r = st ? db_step(db, st) : -EIO;
    bool have = r == 1 && sqlite3_column_int(st, 0) > 0;
    if (st)
        db_done(st);
    if (!have) {
        db_unlock(db);
        return r < 0 ? r : 0;
    }
    st = db_prepare(db, "SELECT name FROM storage_backend WHERE id = 1");
    r = st ? db_step(db, st) : -EIO;
    if (r == 1)
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    if (st)
        db_done(st);
    db_unlock(db);
    return r;
}

int backend_choose(struct db *db, const char *asked, const struct backend_ops **out, struct err *e)
{
    *out = NULL;
    const struct backend_ops *want = asked ? backend_by_name(asked) : NULL;
    if (asked && !want)
        return err_set(e, -EINVAL, "unknown backend '%s' (dm-thin or overlay)", asked);
    char have[32] = "";
    int r = backend_recorded(db, have, sizeof(have));
    if (r == 0) {
        r = db_begin(db);
        if (r == 0) {
            sqlite3_stmt *st = db_prepare(db, "INSERT OR IGNORE INTO storage_backend(id, name, "
                                              "chosen_at_ms) VALUES (1, ?1, ?2)");
            if (st) {
                db_bind_text(st, 1, want ? want->name : BACKEND_DEFAULT);
                db_bind_i64(st, 2, now_ms());
            }
            r = db_step_commit(db, st);
        }
        if (r < 0)
            return err_set(e, r, "cannot record the state directory's backend: %s", strerror(-r));
        r = backend_recorded(db, have, sizeof(have));
        if (r == 1)
            log_info("storage backend chosen for the state directory", "backend=%s", have);
    }
    if (r < 0)
        return err_set(e, r, "cannot read the state directory's backend: %s", strerror(-r));
    const struct backend_ops *rec = backend_by_name(have);
    if (!rec)
        return err_set(e, -EINVAL, "the state directory records an unknown backend '%s'", have);
    if (want && want != rec)
        return err_set(e, -EINVAL,
                       "this state directory uses the %s backend, not %s: a state directory never "
                       "mixes backends; use another --state-dir for %s",
                       rec->name, want->name, want->name);
    *out = rec;
    return 0;
}

/* ---- applying a layer ---------------------------------------------------------------------- */

struct apply_args {
    const char *blob;
    const struct archive_policy *policy;
    backend_after_apply_fn after;
    const char *mountpoint;
    bool want_opaque;
};

/* In the mount child: the opaque directories, NUL-terminated one after the other, as long as
 * they fit in the result the parent reads (the rest keep the kernel's per-entry whiteouts:
 * the same view). */
struct opaque_list {
    struct buf b;
    bool full;
};

static void note_opaque(const char *dir, void *ud)
{
    struct opaque_list *l = ud;
    size_t n = strlen(dir) + 1;
    if (l->full || l->b.len + n > BACKEND_OPAQUE_LIST_MAX || buf_append(&l->b, dir, n) < 0)
        l->full = true;
}

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
    struct opaque_list ol = {BUF_INIT, false};
    int r = a->want_opaque
                ? archive_apply_opaque(root_fd, a->blob, a->policy, note_opaque, &ol, &st, e)
                : archive_apply(root_fd, a->blob, a->policy, &st, e);
    if (r == 0 && a->after)
        r = a->after(a->mountpoint, &st, e);
    if (r == 0)
        r = buf_append(out, &st, sizeof(st));
    if (r == 0 && ol.b.len)
        r = buf_append(out, ol.b.data, ol.b.len);
    buf_free(&ol.b);
    return r;
}

int backend_apply_mounted(struct fsm_run *run, struct pipeline *p,
                          const struct backend_layer_req *q, struct mount_spec *spec,
                          backend_after_apply_fn after, struct archive_stats *st,
                          struct buf *opaque, struct err *e)
{
    struct apply_args a = {.blob = q->blob_path,
                           .policy = &p->policy,
                           .after = after,
                           .mountpoint = spec->mountpoint,
                           .want_opaque = opaque != NULL};
    spec->cancel_fd = fsm_run_cancel_fd(run);
    spec->progress = apply_progress;
    spec->progress_ud = run;
    struct buf out = BUF_INIT;
    fsm_run_set_progress(run, "apply", 0, 0);
    int r = mount_run(spec, apply_in_child, &a, &out, e);
    memset(st, 0, sizeof(*st));
    if (r == 0 && out.len >= sizeof(*st)) {
        memcpy(st, out.data, sizeof(*st));
        if (opaque && out.len > sizeof(*st))
            r = buf_append(opaque, out.data + sizeof(*st), out.len - sizeof(*st));
    }
    buf_free(&out);
    return r;
}
