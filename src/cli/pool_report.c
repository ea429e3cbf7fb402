/*
 * pool_report.c: human and JSON pool reports; see pool_report.h.
 */
#include "cli/pool_report.h"

#include <inttypes.h>
#include <string.h>

#include "daemon/views.h"
#include "util/timeutil.h"

static void features_str(const struct pool_table *t, char *out, size_t n)
{
    out[0] = '\0';
    size_t k = 0;
    for (unsigned i = 0; i < t->n_features && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s", i ? "," : "", t->features[i]);
    if (!t->n_features)
        snprintf(out, n, "none");
}

void pool_report_text(const struct pool_info *i, const struct err *health, FILE *out)
{
    const struct pool_status *s = &i->status;
    uint64_t block_bytes = i->table.block_sectors * 512;
    char total[32], bsz[32], feats[256];
    format_bytes(i->length_sectors * 512, total, sizeof(total));
    format_bytes(block_bytes, bsz, sizeof(bsz));
    features_str(&i->table, feats, sizeof(feats));
    fprintf(out, "pool %s: %s%s\n", i->name,
            i->action != POOL_ACTION_NONE ? pool_action_name(i->action) : "active",
            !strcmp(i->origin, "adopted")   ? " (made by someone else, adopted)"
            : !strcmp(i->origin, "created") ? " (made by thinimg)"
                                            : "");
    fprintf(out, "  data       %s%s%s%s (%s)\n", i->data_dev, i->data_file[0] ? " <- " : "",
            i->data_file, i->data_dio ? " [direct I/O]" : "", total);
    fprintf(out, "  metadata   %s%s%s\n", i->metadata_dev, i->metadata_file[0] ? " <- " : "",
            i->metadata_file);
    fprintf(out, "  block      %s, low water %" PRIu64 " blocks, features %s\n", bsz,
            i->table.low_water_blocks, feats);
    if (s->mode == POOL_MODE_FAIL || s->mode == POOL_MODE_ERROR) {
        fprintf(out, "  mode       %s\n", pool_mode_name(s->mode));
    } else {
        char used[32], tot[32];
        format_bytes(s->data_used * block_bytes, used, sizeof(used));
        format_bytes(s->data_total * block_bytes, tot, sizeof(tot));
        fprintf(out, "  data used  %" PRIu64 "/%" PRIu64 " blocks (%.1f%%, %s of %s)\n",
                s->data_used, s->data_total, pool_status_data_pct(s), used, tot);
        fprintf(out, "  meta used  %" PRIu64 "/%" PRIu64 " blocks (%.1f%%)\n", s->meta_used,
                s->meta_total, pool_status_meta_pct(s));
        fprintf(out, "  mode       %s%s, %s, %s, transaction %" PRIu64 "%s\n",
                pool_mode_name(s->mode), s->needs_check ? ", needs_check" : "",
                s->error_if_no_space ? "error_if_no_space" : "queue_if_no_space",
                pool_discard_name(s->discard), s->transaction_id,
                s->has_held_root ? ", metadata snapshot held" : "");
    }
    fprintf(out, "  health     %s\n", health && health->code ? err_str(health) : "ok");
}

json_t *pool_report_json(const struct pool_info *i, const struct err *health)
{
    return view_pool(i, health);
}

/* ---- the pool's life ------------------------------------------------------------------- */

/* Events of autoextend that could not grow (pool_autoextend()). */
static const char *const stuck_kinds[] = {"autoextend-capped", "autoextend-no-room",
                                          "autoextend-error"};

static void step_str(const struct pool_settings *s, char *out, size_t n)
{
    if (s->autoextend_step_bytes)
        format_bytes(s->autoextend_step_bytes, out, n);
    else
        snprintf(out, n, "%.0f%%", s->autoextend_step_pct);
}

void pool_report_life_policy_text(const struct pool_settings *s, FILE *out)
{
    char step[32], max[32];
    step_str(s, step, sizeof(step));
    if (s->autoextend_max_bytes)
        format_bytes(s->autoextend_max_bytes, max, sizeof(max));
    else
        snprintf(max, sizeof(max), "none");
    if (s->autoextend_threshold_pct > 0)
        fprintf(out, "  autoextend at %.0f%% used, by %s, cap %s\n", s->autoextend_threshold_pct,
                step, max);
    else
        fprintf(out, "  autoextend off\n");
    fprintf(out, "  backups    keep %u, after a layer at most every %" PRId64 " s\n",
            s->backup_keep, s->backup_interval_s);
}

json_t *pool_report_life_policy_json(const struct pool_settings *s)
{
    return json_pack("{s:b, s:f, s:f, s:I, s:I, s:i, s:I}", "autoextend",
                     s->autoextend_threshold_pct > 0, "autoextend_threshold_pct",
                     s->autoextend_threshold_pct, "autoextend_step_pct", s->autoextend_step_pct,
                     "autoextend_step_bytes", (json_int_t)s->autoextend_step_bytes,
                     "autoextend_max_bytes", (json_int_t)s->autoextend_max_bytes, "backup_keep",
                     (int)s->backup_keep, "backup_interval_s", (json_int_t)s->backup_interval_s);
}

static json_t *event_json(const struct pool_event *ev)
{
    char at[40];
    format_rfc3339_ms(ev->at_ms, at, sizeof(at));
    return json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:s}", "at", at, "kind", ev->kind, "ok",
                     ev->ok, "data_bytes_before", (json_int_t)ev->data_before, "data_bytes_after",
                     (json_int_t)ev->data_after, "metadata_bytes_before",
                     (json_int_t)ev->meta_before, "metadata_bytes_after",
                     (json_int_t)ev->meta_after, "detail", ev->detail);
}

static void event_line(const char *label, const struct pool_event *ev, FILE *out)
{
    char at[40];
    format_rfc3339_ms(ev->at_ms, at, sizeof(at));
    fprintf(out, "  %-10s %s %s%s\n", label, at, ev->ok ? "" : "FAILED ", ev->detail);
}

static void growth_line(const struct pool_event *ev, FILE *out)
{
    char at[40], d0[32], d1[32], m0[32], m1[32];
    format_rfc3339_ms(ev->at_ms, at, sizeof(at));
    format_bytes(ev->data_before, d0, sizeof(d0));
    format_bytes(ev->data_after, d1, sizeof(d1));
    format_bytes(ev->meta_before, m0, sizeof(m0));
    format_bytes(ev->meta_after, m1, sizeof(m1));
    fprintf(out, "    %s %s: data %s -> %s, metadata %s -> %s\n", at, ev->detail, d0, d1, m0, m1);
}

void pool_report_life_text(struct db *db, const char *pool, const char *state_dir, FILE *out)
{
    struct pool_settings s;
    if (!db || pool_settings_get(db, pool, &s) < 0)
        return;
    pool_report_life_policy_text(&s, out);
    struct pool_event ev[POOL_REPORT_GROWTHS];
    size_t n = 0;
    if (pool_events_recent(db, pool, "check", ev, 1, &n) == 0 && n)
        event_line("last check", &ev[0], out);
    struct pool_backup b;
    if (pool_backup_latest(state_dir, pool, &b) == 0) {
        char at[40], sz[32];
        format_rfc3339_ms(b.at_ms, at, sizeof(at));
        format_bytes(b.bytes, sz, sizeof(sz));
        fprintf(out, "  backup     %s %s (%s)\n", at, b.path, sz);
    } else {
        fprintf(out, "  backup     none yet\n");
    }
    if (pool_events_recent(db, pool, "backup", ev, 1, &n) == 0 && n && !ev[0].ok)
        event_line("backup", &ev[0], out);
    for (size_t k = 0; k < sizeof(stuck_kinds) / sizeof(stuck_kinds[0]); k++)
        if (pool_events_recent(db, pool, stuck_kinds[k], ev, 1, &n) == 0 && n)
            event_line("stuck", &ev[0], out);
    if (pool_events_recent(db, pool, "grow", ev, POOL_REPORT_GROWTHS, &n) == 0 && n) {
        fprintf(out, "  growths    (newest first)\n");
        for (size_t i = 0; i < n; i++)
            growth_line(&ev[i], out);
    }
}

json_t *pool_report_life_json(struct db *db, const char *pool, const char *state_dir)
{
    struct pool_settings s;
    if (!db || pool_settings_get(db, pool, &s) < 0)
        return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "policy", pool_report_life_policy_json(&s));
    struct pool_event ev[POOL_REPORT_GROWTHS];
    size_t n = 0;
    json_object_set_new(o, "last_check",
                        pool_events_recent(db, pool, "check", ev, 1, &n) == 0 && n
                            ? event_json(&ev[0])
                            : json_null());
    json_object_set_new(o, "last_backup_event",
                        pool_events_recent(db, pool, "backup", ev, 1, &n) == 0 && n
                            ? event_json(&ev[0])
                            : json_null());
    struct pool_backup b;
    json_object_set_new(o, "last_backup_file",
                        pool_backup_latest(state_dir, pool, &b) == 0
                            ? json_pack("{s:s, s:I, s:I}", "path", b.path, "at_ms",
                                        (json_int_t)b.at_ms, "bytes", (json_int_t)b.bytes)
                            : json_null());
    json_t *g = json_array();
    if (pool_events_recent(db, pool, "grow", ev, POOL_REPORT_GROWTHS, &n) == 0)
        for (size_t i = 0; i < n; i++)
            json_array_append_new(g, event_json(&ev[i]));
    json_object_set_new(o, "growths", g);
    json_t *st = json_array();
    for (size_t k = 0; k < sizeof(stuck_kinds) / sizeof(stuck_kinds[0]); k++)
        if (pool_events_recent(db, pool, stuck_kinds[k], ev, 1, &n) == 0 && n)
            json_array_append_new(st, event_json(&ev[0]));
    json_object_set_new(o, "autoextend_stuck", st);
    return o;
}
