/*
 * pool_autoextend_policy.c: what autoextend asks for, without touching the pool: the growth a
 * policy plans for a usage (pool_autoextend_plan()), the low-water mark that makes the kernel
 * signal the threshold (pool_low_water_blocks()), and the note of a pool that cannot grow,
 * which pool_check_usable() puts before its refusals. The pool manager (pool.c) uses these;
 * the growing itself (pool_autoextend.c) sits above the pool manager. See pool_life.h.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "dm/pool_life.h"
#include "dm/pool_status.h"
#include "util/timeutil.h"

#define MIB (1ull << 20)

static uint64_t round_up_to(uint64_t v, uint64_t unit)
{
    return unit ? (v + unit - 1) / unit * unit : v;
}

void pool_autoextend_plan(const struct pool_settings *s, uint64_t data_bytes, double data_pct,
                          uint64_t meta_bytes, double meta_pct, uint64_t block_bytes,
                          struct pool_autoextend_plan *out)
{
    memset(out, 0, sizeof(*out));
    double thr = s->autoextend_threshold_pct;
    if (thr <= 0)
        return;
    /* The step as a fraction of the current size: a percent, or bytes of data. */
    double frac = s->autoextend_step_pct > 0 ? s->autoextend_step_pct / 100.0
                  : data_bytes               ? (double)s->autoextend_step_bytes / (double)data_bytes
                                             : 0;
    out->data_over = data_pct >= thr;
    if (out->data_over) {
        uint64_t step = s->autoextend_step_pct > 0 ? (uint64_t)((double)data_bytes * frac)
                                                   : s->autoextend_step_bytes;
        uint64_t target = round_up_to(data_bytes + (step ? step : block_bytes), block_bytes);
        if (s->autoextend_max_bytes && target > s->autoextend_max_bytes)
            target = s->autoextend_max_bytes / block_bytes * block_bytes;
        if (target > data_bytes)
            out->data_target = target;
        else
            out->data_capped = true;
    }
    out->meta_over = meta_pct >= thr;
    if (out->meta_over) {
        uint64_t step = (uint64_t)((double)meta_bytes * frac);
        if (step < POOL_AUTOEXTEND_META_STEP_MIN)
            step = POOL_AUTOEXTEND_META_STEP_MIN;
        uint64_t target = round_up_to(meta_bytes + step, MIB);
        if (target > POOL_META_MAX)
            target = POOL_META_MAX / MIB * MIB;
        if (target > meta_bytes)
            out->meta_target = target;
        else
            out->meta_capped = true;
    }
}

uint64_t pool_low_water_blocks(double threshold_pct, uint64_t blocks)
{
    if (!blocks || threshold_pct <= 0 || threshold_pct >= 100)
        return 0;
    /* The fewest used blocks that pool_status_data_pct() puts at or over the threshold (the
     * test the plan makes), found from the rounded-up product and then stepped to the exact
     * border, so that floating-point rounding never moves the mark by a block. */
    uint64_t used = (uint64_t)ceil(threshold_pct * (double)blocks / 100.0);
    if (used > blocks)
        used = blocks;
    while (used > 0 && 100.0 * (double)(used - 1) / (double)blocks >= threshold_pct)
        used--;
    while (used < blocks && 100.0 * (double)used / (double)blocks < threshold_pct)
        used++;
    return blocks - used;
}

/* ---- the note of a pool that cannot grow ------------------------------------------------- */

static pthread_mutex_t note_lock = PTHREAD_MUTEX_INITIALIZER;
static char note_pool[64];
static char note_text[512];

/* The policy and block size autoextend last read for note_pool: a refusal computes the cap
 * from the status it is given, so it says so even when the pool filled between two checks. */
static struct pool_settings note_settings;
static uint64_t note_block_bytes;

void pool_autoextend_cap_note(const char *pool, const struct pool_settings *s,
                              const struct pool_autoextend_plan *plan, const struct pool_status *st,
                              char *out, size_t n)
{
    out[0] = '\0';
    if (!plan->data_capped && !plan->meta_capped)
        return;
    char cap[32];
    format_bytes(plan->data_capped ? s->autoextend_max_bytes : POOL_META_MAX, cap, sizeof(cap));
    snprintf(out, n,
             "autoextend reached its cap: pool \"%s\" %s is %.1f%% used at %s, the most "
             "autoextend may grow it to (raise it with `thinimg pool set --autoextend-max SIZE`, "
             "or free space with `thinimg gc --force`)",
             pool, plan->data_capped ? "data" : "metadata",
             plan->data_capped ? pool_status_data_pct(st) : pool_status_meta_pct(st), cap);
}

void pool_autoextend_stuck_note(const char *pool, const struct pool_status *st, char *out, size_t n)
{
    pthread_mutex_lock(&note_lock);
    out[0] = '\0';
    if (!strcmp(note_pool, pool)) {
        struct pool_autoextend_plan plan;
        pool_autoextend_plan(&note_settings, st->data_total * note_block_bytes,
                             pool_status_data_pct(st), st->meta_total * POOL_META_BLOCK_BYTES,
                             pool_status_meta_pct(st), note_block_bytes, &plan);
        pool_autoextend_cap_note(pool, &note_settings, &plan, st, out, n);
        if (!out[0])
            snprintf(out, n, "%s", note_text);
    }
    pthread_mutex_unlock(&note_lock);
}

void pool_autoextend_note_policy(const char *pool, const struct pool_settings *s,
                                 uint64_t block_bytes)
{
    pthread_mutex_lock(&note_lock);
    if (strcmp(note_pool, pool) != 0) {
        snprintf(note_pool, sizeof(note_pool), "%s", pool);
        note_text[0] = '\0';
    }
    note_settings = *s;
    note_block_bytes = block_bytes;
    pthread_mutex_unlock(&note_lock);
}

bool pool_autoextend_note_set(const char *pool, const char *text)
{
    pthread_mutex_lock(&note_lock);
    bool changed = strcmp(note_pool, pool) != 0 || strcmp(note_text, text) != 0;
    snprintf(note_pool, sizeof(note_pool), "%s", pool);
    snprintf(note_text, sizeof(note_text), "%s", text);
    pthread_mutex_unlock(&note_lock);
    return changed;
}
