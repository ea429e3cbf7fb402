/*
 * autogc.c: automatic removal of least-recently-used images when the pool fills up.
 *
 * The daemon calls pipeline_auto_gc() while it is idle. When the pool's data (or metadata)
 * usage is at or above the high-water mark, images without activations are removed oldest
 * `last_used_ms` first (the time process-image last asked for them), through the same
 * pipeline_remove_image() an operator uses, until usage drops below the low-water mark or no
 * candidate is left. Layer devices other images still use stay (remove_image keeps them), so a
 * removal may free less than the image's size; the loop re-reads the pool after each one.
 * Nothing else is touched: activations, images with unfinished runs, orphans (those are gc's).
 *
 * Also here, gc inside the process that runs the pipeline (pipeline.h): pipeline_gc() for an
 * operator's request, and pipeline_collect_orphan(), the daemon's idle collection of orphans
 * past a grace period. Both hold the lifecycle lock and the operation guard while they scan and
 * remove: no create, snapshot, activation or removal runs at the same time, and what a run
 * made since it started is spared (gc.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dm/pool.h"
#include "pipeline/machine.h"
#include "pipeline/pipeline.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/timeutil.h"

/* Usage in percent: the larger of data and metadata (either running out stops new layers). */
static int usage_pct(const char *pool, double *pct, struct err *e)
{
    struct pool_info info;
    int r = pool_get(NULL, pool, &info, e);
    if (r < 0)
        return r;
    double d = pool_status_data_pct(&info.status), m = pool_status_meta_pct(&info.status);
    *pct = d > m ? d : m;
    return 0;
}

/* The names of images without activations, least recently used first (malloc'd array of
 * malloc'd names). */
static int lru_candidates(struct db *db, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    _cleanup_stmt_ sqlite3_stmt *st =
        db_prepare(db, "SELECT name FROM images i WHERE NOT EXISTS"
                       " (SELECT 1 FROM activations a WHERE a.image_id = i.id)"
                       " ORDER BY last_used_ms ASC, id ASC");
    if (!st)
        return -EIO;
    int rc;
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            char **v = realloc(*out, cap * sizeof(*v));
            if (!v)
                goto oom;
            *out = v;
        }
        (*out)[*n] = strdup((const char *)sqlite3_column_text(st, 0));
        if (!(*out)[*n])
            goto oom;
        (*n)++;
    }
    if (rc == SQLITE_DONE)
        return 0;
    rc = -EIO;
    goto fail;
oom:
    rc = -ENOMEM;
fail:
    for (size_t i = 0; i < *n; i++)
        free((*out)[i]);
    free(*out);
    *out = NULL;
    *n = 0;
    return rc;
}

int pipeline_auto_gc(struct pipeline *p, const struct pipeline_autogc_opts *o,
                     struct pipeline_autogc_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    if (!o->high_pct)
        return 0;
    int low = o->low_pct > 0 && o->low_pct < o->high_pct ? o->low_pct : o->high_pct - 10;
    int r = usage_pct(p->cfg.pool_name, &res->pct_before, e);
    if (r < 0)
        return r;
    res->pct_after = res->pct_before;
    if (res->pct_before < o->high_pct)
        return 0;

    char **names = NULL;
    size_t n = 0;
    r = lru_candidates(p->db, &names, &n);
    if (r < 0)
        return err_set(e, r, "auto-gc: cannot list the images without activations");
    if (n == 0)
        return 0; /* nothing it may remove: quiet, it looks again later */
    log_info("auto-gc: pool above its high-water mark; removing least-recently-used images",
             "pool=%s used_pct=%.1f high_pct=%d low_pct=%d candidates=%zu", p->cfg.pool_name,
             res->pct_before, o->high_pct, low, n);
    for (size_t i = 0; i < n && res->pct_after >= low; i++) {
        struct pipeline_removed_image out;
        struct err re = {0};
        r = pipeline_remove_image(p, names[i], -1, &out, &re);
        if (r == -EBUSY || r == -ENOENT) {
            /* A run works on it or it went meanwhile: not a candidate now. */
            log_info("auto-gc: image skipped", "image=%s reason=%s", names[i], err_str(&re));
            continue;
        }
        if (r < 0) {
            *e = re;
            break;
        }
        res->images_removed++;
        res->layers_deleted += out.layers_deleted;
        metrics_counter_add(METRIC_GC_REMOVED, 1, "kind", "image", NULL);
        r = usage_pct(p->cfg.pool_name, &res->pct_after, e);
        if (r < 0)
            break;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    log_info("auto-gc: done", "pool=%s images_removed=%d layers_deleted=%d used_pct=%.1f",
             p->cfg.pool_name, res->images_removed, res->layers_deleted, res->pct_after);
    if (r < 0)
        return r;
    if (res->pct_after >= o->high_pct)
        log_warn("auto-gc: the pool is still above its high-water mark and no unused image is "
                 "left; remove activations or grow the pool (setup-pool --data-size)",
                 "pool=%s used_pct=%.1f high_pct=%d", p->cfg.pool_name, res->pct_after,
                 o->high_pct);
    return 0;
}

/* ---- gc on request ------------------------------------------------------------------------- */

int pipeline_gc(struct pipeline *p, struct gc_opts *o, bool apply, int cancel_fd,
                struct gc_report *out, bool *have_report, struct err *e)
{
    *have_report = false;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&p->lifecycle_lock);
    struct err ge = {0};
    int r = guard_enter(p->guard, "gc", cancel_fd, &ge);
    bool guarded = r == 0;
    char why[sizeof(ge.msg) + 64];
    if (r == -EHOSTDOWN && !apply) {
        /* A dry run still lists what needs no devicemapper call. */
        snprintf(why, sizeof(why), "%s", err_str(&ge));
        o->skip_devices = why;
    } else if (r < 0) {
        pthread_mutex_unlock(&p->lifecycle_lock);
        *e = ge;
        return r;
    }
    char note[256];
    o->live_note = NULL;
    r = gc_live_runs(p->db, &o->live_since_ms, note, sizeof(note));
    if (r > 0)
        o->live_note = note;
    r = r < 0 ? err_set(e, r, "cannot list the unfinished runs: %s", strerror(-r))
              : gc_scan(p->db, &p->cfg, o, out, e);
    if (r == 0) {
        *have_report = true;
        if (apply)
            r = gc_apply(p->db, &p->cfg, o, out, e);
    }
    if (guarded)
        guard_leave(p->guard);
    pthread_mutex_unlock(&p->lifecycle_lock);
    o->live_note = NULL;
    o->skip_devices = NULL;
    return r;
}

/* A kernel operation of the idle collection that takes longer than this is stuck: the
 * collection runs on the daemon's signal loop, and a SIGTERM must not wait for long behind it
 * (a healthy umount, dm remove or pool delete takes milliseconds). */
#define AUTOGC_ORPHAN_OP_TIMEOUT_MS 10000

/* ---- orphans collected while idle --------------------------------------------------------------
 */

struct pipeline_orphan_seen {
    enum gc_kind kind;
    char what[sizeof(((struct gc_item *)0)->what)];
    int64_t first_ms;
    int64_t retry_ms; /* a removal failed: not before this (one grace period later) */
    bool hit;
};

void pipeline_orphan_gc_free(struct pipeline_orphan_gc *st)
{
    free(st->seen);
    st->seen = NULL;
    st->n_seen = 0;
}

static struct pipeline_orphan_seen *sighting(struct pipeline_orphan_gc *st,
                                             const struct gc_item *it)
{
    for (size_t k = 0; k < st->n_seen; k++)
        if (st->seen[k].kind == it->kind && !strcmp(st->seen[k].what, it->what))
            return &st->seen[k];
    return NULL;
}

/* When it became an orphan as far as this process knows (since[i]): its own timestamp, else
 * the first scan that found it; and when it may go (due[i]): a grace period later, or later
 * still after a failed removal. Sightings of items the scan no longer finds are forgotten. */
static int sightings_update(struct pipeline_orphan_gc *st, const struct gc_report *rep, int64_t now,
                            int64_t *since, int64_t *due)
{
    for (size_t k = 0; k < st->n_seen; k++)
        st->seen[k].hit = false;
    for (size_t i = 0; i < rep->n; i++) {
        const struct gc_item *it = &rep->items[i];
        struct pipeline_orphan_seen *s = sighting(st, it);
        if (!s) {
            struct pipeline_orphan_seen *v = realloc(st->seen, (st->n_seen + 1) * sizeof(*v));
            if (!v)
                return -ENOMEM;
            st->seen = v;
            s = &v[st->n_seen++];
            *s = (struct pipeline_orphan_seen){.kind = it->kind, .first_ms = now};
            snprintf(s->what, sizeof(s->what), "%s", it->what);
        }
        s->hit = true;
        since[i] = it->since_ms > 0 ? it->since_ms : s->first_ms;
        due[i] = since[i] + st->grace_ms;
        if (s->retry_ms > due[i])
            due[i] = s->retry_ms;
    }
    size_t w = 0;
    for (size_t k = 0; k < st->n_seen; k++)
        if (st->seen[k].hit)
            st->seen[w++] = st->seen[k];
    st->n_seen = w;
    return 0;
}

/* gc_apply's order, one item at a time: mounts, devices, files and records, locks. */
static int removal_rank(enum gc_kind k)
{
    switch (k) {
    case GC_MOUNT:
        return 0;
    case GC_TMPFILE:
    case GC_DOWNLOAD:
    case GC_BLOB:
        return 2;
    case GC_LOCK:
        return 3;
    default:
        return 1;
    }
}

/* The removable item past its grace that comes first in gc's order; -1 when none. Counts
 * what waits and when the next grace ends. */
static long pick_orphan(struct pipeline_orphan_gc *st, const struct gc_report *rep,
                        const int64_t *due, int64_t now)
{
    long best = -1;
    st->waiting = 0;
    st->next_due_ms = 0;
    for (size_t i = 0; i < rep->n; i++) {
        if (!rep->items[i].removable)
            continue;
        st->waiting++;
        if (due[i] > now) {
            if (!st->next_due_ms || due[i] < st->next_due_ms)
                st->next_due_ms = due[i];
            continue;
        }
        if (best < 0 || removal_rank(rep->items[i].kind) < removal_rank(rep->items[best].kind))
            best = (long)i;
    }
    return best;
}

/* Remove rep's item at `at` (only it) and say so. 1 removed, 0 skipped, negative errno. An
 * item that was not removed waits a grace period before the next try, so that one stubborn
 * orphan does not hold up the others. */
static int remove_one(struct pipeline *p, struct pipeline_orphan_gc *st, struct gc_report *rep,
                      size_t at, const int64_t *since, int64_t now, struct err *e)
{
    for (size_t i = 0; i < rep->n; i++)
        rep->items[i].removable = i == at;
    struct gc_opts o = {.include_blobs = true,
                        .metrics_mode = "auto",
                        .op_timeout_ms = AUTOGC_ORPHAN_OP_TIMEOUT_MS};
    int r = gc_apply(p->db, &p->cfg, &o, rep, e);
    struct gc_item *it = &rep->items[at];
    char age[32];
    format_duration_ms(now - since[at], age, sizeof(age));
    if (it->result != GC_DONE) {
        struct pipeline_orphan_seen *s = sighting(st, it);
        if (s)
            s->retry_ms = now + st->grace_ms;
        log_warn("auto-gc: an orphan was not removed; it is tried again at the next idle pass",
                 "kind=%s what=%s result=%s detail=%s", gc_kind_name(it->kind), it->what,
                 gc_result_name(it->result), it->detail);
        return r < 0 ? r : 0;
    }
    log_info("auto-gc: orphan removed",
             "kind=%s what=%s reason=%s orphan_for=%s "
             "detail=%s",
             gc_kind_name(it->kind), it->what, it->reason, age, it->detail);
    metrics_counter_add(METRIC_GC_ORPHANS_REMOVED, 1, "kind", gc_kind_name(it->kind), NULL);
    return 1;
}

int pipeline_collect_orphan(struct pipeline *p, struct pipeline_orphan_gc *st, struct err *e)
{
    int64_t since_runs = 0;
    int r = gc_live_runs(p->db, &since_runs, NULL, 0);
    if (r != 0)
        return r < 0 ? err_set(e, r, "cannot list the unfinished runs: %s", strerror(-r)) : 0;
    pthread_mutex_lock(&p->lifecycle_lock);
    r = guard_enter(p->guard, "auto-gc-orphans", -1, e);
    if (r < 0) {
        pthread_mutex_unlock(&p->lifecycle_lock);
        return r;
    }
    /* A run may have started while the guard was waited for: idle means idle now. */
    int runs = gc_live_runs(p->db, &since_runs, NULL, 0);
    r = runs < 0 ? err_set(e, runs, "cannot list the unfinished runs: %s", strerror(-runs)) : 0;
    struct gc_report rep = {0};
    int64_t *since = NULL, *due = NULL;
    if (runs == 0) {
        struct gc_opts o = {.include_blobs = true};
        r = gc_scan(p->db, &p->cfg, &o, &rep, e);
        if (r == 0 && rep.n &&
            (!(since = calloc(rep.n, sizeof(*since))) || !(due = calloc(rep.n, sizeof(*due)))))
            r = -ENOMEM;
    }
    int64_t now = now_ms();
    if (runs == 0 && r == 0)
        r = sightings_update(st, &rep, now, since, due);
    if (runs == 0 && r == 0) {
        long at = pick_orphan(st, &rep, due, now);
        if (at >= 0)
            r = remove_one(p, st, &rep, (size_t)at, since, now, e);
        if (r > 0)
            st->waiting--; /* the one just removed */
        metrics_gauge_set(METRIC_GC_ORPHANS_WAITING, (double)st->waiting, NULL);
    }
    guard_leave(p->guard);
    pthread_mutex_unlock(&p->lifecycle_lock);
    free(since);
    free(due);
    gc_report_free(&rep);
    return r;
}
