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
