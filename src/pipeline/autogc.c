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
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dm/pool.h"
#include "pipeline/machine.h"
#include "pipeline/pipeline.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/metrics.h"

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
            log_info("auto-gc: image skipped", "image=%s reason=\"%s\"", names[i], err_str(&re));
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
