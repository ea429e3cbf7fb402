/*
 * cmd_pool.c: `thinimg pool check` (thin_check on the metadata of an offline pool), `thinimg
 * pool grow` (grow an active pool's data and metadata online), `thinimg pool repair` (sound
 * metadata back for an offline pool, then reassembly), `thinimg pool backup` (a metadata
 * backup now) and `thinimg pool set` (autoextend and backup policy). The rules are in
 * dm/pool.h and dm/pool_life.h; docs/dm.md says when to use which.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/pool_report.h"
#include "dm/pool.h"
#include "dm/pool_life.h"
#include "guard/lock.h"
#include "util/parse.h"
#include "util/cleanup.h"
#include "util/timeutil.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg pool check [--json]\n"
            "       thinimg pool grow [--data SIZE|+SIZE] [--metadata SIZE|+SIZE] [--json]\n"
            "       thinimg pool repair [--from auto|metadata|backup] [--json]\n"
            "       thinimg pool backup [--json]\n"
            "       thinimg pool set [--autoextend-threshold PCT] [--autoextend-step PCT%%|SIZE]\n"
            "                        [--autoextend-max SIZE] [--backup-keep N]\n"
            "                        [--backup-interval SECONDS] [--json]\n"
            "\n"
            "`pool check` runs thin_check (thin-provisioning-tools) on the pool's metadata. The\n"
            "pool must be offline: an active pool is refused (exit 5) and nothing is stopped.\n"
            "When the metadata is sound, its needs_check flag is cleared, so `thinimg\n"
            "setup-pool` brings the pool back writable; damage is reported with thin_check's\n"
            "verdict and the repair command (exit 3). setup-pool runs the same check by itself\n"
            "before it reassembles a pool from its files.\n"
            "\n"
            "`pool grow` grows an active pool online (activations stay usable): the backing\n"
            "file is extended, its loop device refreshed and the pool reloaded with the new\n"
            "size. SIZE is the new total, +SIZE adds to the current size (K, M, G, T\n"
            "suffixes). Metadata grows up to about 16 GiB (the kernel uses no more). Growing a\n"
            "file leaves %.0f%% of its file system free, at least %" PRIu64 " MiB.\n"
            "Without --data and --metadata, devices grown by the operator (a block device, a\n"
            "file extended by hand) are picked up.\n"
            "\n"
            "`pool repair` (pool offline, like check) makes sound metadata from thin_repair of\n"
            "the damaged metadata and from the newest metadata backup, keeps the one that\n"
            "loses fewer of the database's devices (--from forces one), moves the damaged file\n"
            "aside (kept), reassembles the pool, and lists the devices that were lost: they\n"
            "are marked failed, so `thinimg gc` removes them and process-image makes them again.\n"
            "\n"
            "`pool backup` dumps the live pool's metadata (thin_dump of a metadata snapshot)\n"
            "into <state>/pool-backups/<pool>/ and keeps the newest --backup-keep (default %d).\n"
            "The pipeline takes one after a committed layer when the last is older than\n"
            "--backup-interval seconds (default %d; 0: after every layer).\n"
            "\n"
            "`pool set` records the pool's policy. Autoextend: when data or metadata usage\n"
            "reaches --autoextend-threshold percent (0: off), the pool grows by\n"
            "--autoextend-step (a percent of its size, default %.0f%%, or a SIZE of data),\n"
            "never beyond --autoextend-max (data; 0: no cap) nor into the backing file\n"
            "system's reserve. Checked before each layer and every second while the pipeline\n"
            "runs (daemon or process-image).\n"
            "\n"
            "Options:\n"
            "  --data SIZE|+SIZE       new data size, or how much to add (grow)\n"
            "  --metadata SIZE|+SIZE   new metadata size, or how much to add (grow)\n"
            "  --from WHICH            repair: auto (default), metadata (thin_repair) or backup\n"
            "  --autoextend-threshold PCT, --autoextend-step PCT%%|SIZE, --autoextend-max SIZE,\n"
            "  --backup-keep N, --backup-interval SECONDS   set: the policy (see above)\n"
            "  --json                  print the result as JSON\n"
            "  -h, --help              this help\n"
            "\n"
            "The pool name comes from --pool or THINIMG_POOL (default thinimg).\n"
            "Exit codes: 0 ok, 1 failed (thin_check missing), 2 usage, 3 metadata damaged (or\n"
            "not repairable) or pool unhealthy or no room on the backing file system, 4 pool\n"
            "not found or not active (grow, backup), 5 pool active (check, repair) or another\n"
            "thinimg holds the lock (repair, backup).\n",
            POOL_GROW_RESERVE_PCT, (uint64_t)(POOL_GROW_RESERVE_MIN >> 20),
            POOL_BACKUP_DEFAULT_KEEP, POOL_BACKUP_DEFAULT_INTERVAL_S,
            POOL_AUTOEXTEND_DEFAULT_STEP_PCT);
}

static int pool_check_cmd(struct cli *cli, struct db *db, bool json)
{
    struct err e = {0};
    struct pool_check c;
    int r = pool_check_offline(db, cli->cfg.pool_name, &c, &e);
    if (json && (c.ran || c.fresh)) {
        json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:i, s:s}", "pool", cli->cfg.pool_name,
                              "device", c.device, "passed", c.passed, "fresh", c.fresh, "status",
                              c.status, "verdict", c.verdict);
        cli_print_json(o);
    }
    if (r < 0)
        return cli_fail("pool check", r, &e);
    if (!json && !cli->quiet)
        printf("pool %s: metadata %s %s\n", cli->cfg.pool_name, c.device,
               c.fresh ? "is fresh (never formatted): nothing to check"
                       : "passed thin_check (needs_check cleared if it was set)");
    return EXIT_OK;
}

static int pool_grow_cmd(struct cli *cli, struct db *db, const struct pool_grow_request *rq,
                         bool json)
{
    struct err e = {0};
    struct pool_grow_result g;
    int r = pool_grow(db, cli->cfg.pool_name, rq, &g, &e);
    if (r < 0)
        return cli_fail("pool grow", r, &e);
    if (json)
        return cli_print_json(json_pack(
            "{s:s, s:b, s:I, s:I, s:I, s:I, s:I}", "pool", cli->cfg.pool_name, "grown", g.reloaded,
            "data_bytes_before", (json_int_t)g.data_before, "data_bytes", (json_int_t)g.data_after,
            "metadata_bytes_before", (json_int_t)g.meta_before, "metadata_bytes",
            (json_int_t)g.meta_after, "low_water_blocks", (json_int_t)g.low_water_after));
    if (cli->quiet)
        return EXIT_OK;
    char d0[32], d1[32], m0[32], m1[32];
    format_bytes(g.data_before, d0, sizeof(d0));
    format_bytes(g.data_after, d1, sizeof(d1));
    format_bytes(g.meta_before, m0, sizeof(m0));
    format_bytes(g.meta_after, m1, sizeof(m1));
    if (!g.reloaded)
        printf("pool %s: nothing to grow (data %s, metadata %s)\n", cli->cfg.pool_name, d1, m1);
    else
        printf("pool %s: grown: data %s -> %s, metadata %s -> %s\n", cli->cfg.pool_name, d0, d1, m0,
               m1);
    return EXIT_OK;
}

/* The process lock for commands that change the pool behind a pipeline's back (repair) or
 * use its one metadata snapshot (backup): not while another thinimg (a daemon) works. */
static int take_lock(struct cli *cli, const char *what, struct proc_lock *lock)
{
    struct err e = {0};
    int r = proc_lock_acquire(cli->cfg.lock_path, what, 0, lock, NULL, &e);
    if (r < 0)
        return cli_fail(what, r, &e);
    return EXIT_OK;
}

static int pool_repair_cmd(struct cli *cli, struct db *db, enum pool_repair_source src, bool json)
{
    struct proc_lock lock = PROC_LOCK_INIT;
    int rc = take_lock(cli, "pool repair", &lock);
    if (rc != EXIT_OK)
        return rc;
    struct err e = {0};
    struct pool_repair_result res;
    int r = pool_repair(db, cli->cfg.pool_name, cli->cfg.state_dir, src, &res, &e);
    if (r < 0) {
        proc_lock_release(&lock);
        pool_repair_result_free(&res);
        return cli_fail("pool repair", r, &e);
    }
    /* Reassemble: the check at assembly runs again on the new metadata. */
    struct pool_config pc = {.name = cli->cfg.pool_name, .pool_dir = cli->cfg.pool_dir};
    struct pool_info info;
    struct err se = {0};
    int sr = pool_setup(db, &pc, &info, &se);
    proc_lock_release(&lock);
    const struct pool_repair_candidate *c = !strcmp(res.used, "backup") ? &res.backup : &res.repair;
    if (json) {
        json_t *lost = json_array();
        for (size_t i = 0; i < res.n_lost; i++)
            json_array_append_new(
                lost, json_pack("{s:i, s:s}", "id", (int)res.lost[i], "name", res.lost_names[i]));
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s, s:o, s:b, s:s?}", "pool", cli->cfg.pool_name, "used",
                      res.used, "source", c->source, "damaged_kept", res.damaged_kept, "lost", lost,
                      "reassembled", sr == 0, "reassembly_error", sr < 0 ? err_str(&se) : NULL);
        cli_print_json(o);
    } else if (!cli->quiet) {
        printf("pool %s: metadata repaired from %s (%s)\n", cli->cfg.pool_name,
               !strcmp(res.used, "backup") ? "the newest backup" : "the damaged metadata",
               c->source);
        if (res.repair.tried && strcmp(res.used, POOL_REPAIR_TOOL) != 0)
            printf("  thin_repair: %s\n",
                   res.repair.usable ? "usable, but lost more devices" : res.repair.note);
        if (res.backup.tried && strcmp(res.used, "backup") != 0)
            printf("  backup: %s\n",
                   res.backup.usable ? "usable, but lost more devices" : res.backup.note);
        printf("  damaged metadata kept at %s\n", res.damaged_kept);
        printf("  devices lost: %zu%s\n", res.n_lost,
               res.n_lost ? " (marked failed: `thinimg gc` lists them, process-image makes "
                            "their layers again)"
                          : "");
        for (size_t i = 0; i < res.n_lost; i++)
            printf("    %u %s\n", res.lost[i], res.lost_names[i]);
        if (sr == 0)
            printf("  pool %s\n", pool_action_name(info.action));
    }
    pool_repair_result_free(&res);
    if (sr < 0)
        return cli_fail("pool repair: reassembly", sr, &se);
    return EXIT_OK;
}

static int pool_backup_cmd(struct cli *cli, struct db *db, bool json)
{
    struct proc_lock lock = PROC_LOCK_INIT;
    int rc = take_lock(cli, "pool backup", &lock);
    if (rc != EXIT_OK)
        return rc;
    struct err e = {0};
    struct pool_backup b;
    int r = pool_backup_take(db, cli->cfg.pool_name, cli->cfg.state_dir, &b, &e);
    proc_lock_release(&lock);
    if (r < 0)
        return cli_fail("pool backup", r, &e);
    if (json)
        return cli_print_json(json_pack("{s:s, s:s, s:I}", "pool", cli->cfg.pool_name, "file",
                                        b.path, "bytes", (json_int_t)b.bytes));
    if (!cli->quiet)
        printf("pool %s: metadata backed up to %s\n", cli->cfg.pool_name, b.path);
    return EXIT_OK;
}

struct pool_set_args {
    bool any;
    const char *threshold, *step, *max, *keep, *interval;
};

static int pool_set_cmd(struct cli *cli, struct db *db, const struct pool_set_args *a, bool json)
{
    struct pool_settings s;
    int r = pool_settings_get(db, cli->cfg.pool_name, &s);
    if (r < 0)
        return cli_fail("pool set", r, NULL);
    uint64_t v;
    if (a->threshold) {
        char *end = NULL;
        double t = strtod(a->threshold, &end);
        if (end == a->threshold || *end || t < 0 || t >= 100)
            return cli_usage_error("pool", "invalid --autoextend-threshold '%s' (0..99, 0: off)",
                                   a->threshold);
        s.autoextend_threshold_pct = t;
    }
    if (a->step) {
        size_t len = strlen(a->step);
        if (len && a->step[len - 1] == '%') {
            char *end = NULL;
            double p = strtod(a->step, &end);
            if (end != a->step + len - 1 || p <= 0 || p > 1000)
                return cli_usage_error("pool", "invalid --autoextend-step '%s'", a->step);
            s.autoextend_step_pct = p;
            s.autoextend_step_bytes = 0;
        } else if (parse_size(a->step, &v) == 0 && v > 0) {
            s.autoextend_step_bytes = v;
            s.autoextend_step_pct = 0;
        } else {
            return cli_usage_error("pool", "invalid --autoextend-step '%s' (PCT%% or SIZE)",
                                   a->step);
        }
    }
    if (a->max) {
        if (parse_size(a->max, &v) < 0)
            return cli_usage_error("pool", "invalid --autoextend-max '%s' (SIZE, 0: no cap)",
                                   a->max);
        s.autoextend_max_bytes = v;
    }
    if (a->keep) {
        if (parse_u64(a->keep, &v) < 0 || v < 1 || v > POOL_BACKUP_KEEP_MAX)
            return cli_usage_error("pool", "invalid --backup-keep '%s' (1..%d)", a->keep,
                                   POOL_BACKUP_KEEP_MAX);
        s.backup_keep = (uint32_t)v;
    }
    if (a->interval) {
        if (parse_u64(a->interval, &v) < 0 || v > INT32_MAX)
            return cli_usage_error("pool", "invalid --backup-interval '%s' (seconds)", a->interval);
        s.backup_interval_s = (int64_t)v;
    }
    if (a->any && (r = pool_settings_put(db, cli->cfg.pool_name, &s)) < 0)
        return cli_fail("pool set", r, NULL);
    /* A new threshold is the active pool's low-water mark at once, so the kernel's event
     * signals it (an inactive pool gets it at its next assembly). */
    if (a->threshold && dm_dev_exists(cli->cfg.pool_name) == 1) {
        uint64_t before, after;
        struct err le = {0};
        if (pool_apply_low_water(db, cli->cfg.pool_name, &before, &after, &le) < 0)
            log_warn("the pool's low-water mark was not set from the new threshold: autoextend's "
                     "poll still watches the pool, and the next growth or assembly sets the mark",
                     "pool=%s error=\"%s\"", cli->cfg.pool_name, err_str(&le));
    }
    if (json)
        return cli_print_json(pool_report_life_policy_json(&s));
    if (!cli->quiet)
        pool_report_life_policy_text(&s, stdout);
    return EXIT_OK;
}

int cmd_pool(struct cli *cli, int argc, char **argv)
{
    enum {
        OPT_DATA = 256,
        OPT_META,
        OPT_FROM,
        OPT_AX_THRESHOLD,
        OPT_AX_STEP,
        OPT_AX_MAX,
        OPT_BACKUP_KEEP,
        OPT_BACKUP_INTERVAL
    };
    static const struct option opts[] = {
        {"data", required_argument, NULL, OPT_DATA},
        {"metadata", required_argument, NULL, OPT_META},
        {"from", required_argument, NULL, OPT_FROM},
        {"autoextend-threshold", required_argument, NULL, OPT_AX_THRESHOLD},
        {"autoextend-step", required_argument, NULL, OPT_AX_STEP},
        {"autoextend-max", required_argument, NULL, OPT_AX_MAX},
        {"backup-keep", required_argument, NULL, OPT_BACKUP_KEEP},
        {"backup-interval", required_argument, NULL, OPT_BACKUP_INTERVAL},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0}};
    struct pool_grow_request rq = {0};
    struct pool_set_args set = {0};
    enum pool_repair_source from = POOL_REPAIR_AUTO;
    bool json = false, from_given = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_DATA:
            if (pool_size_arg_parse(optarg, &rq.data) < 0)
                return cli_usage_error("pool", "invalid --data '%s' (SIZE or +SIZE)", optarg);
            break;
        case OPT_META:
            if (pool_size_arg_parse(optarg, &rq.metadata) < 0)
                return cli_usage_error("pool", "invalid --metadata '%s' (SIZE or +SIZE)", optarg);
            break;
        case OPT_FROM:
            from_given = true;
            if (!strcmp(optarg, "auto"))
                from = POOL_REPAIR_AUTO;
            else if (!strcmp(optarg, "metadata"))
                from = POOL_REPAIR_FROM_METADATA;
            else if (!strcmp(optarg, "backup"))
                from = POOL_REPAIR_FROM_BACKUP;
            else
                return cli_usage_error("pool", "invalid --from '%s' (auto, metadata, backup)",
                                       optarg);
            break;
        case OPT_AX_THRESHOLD:
            set.threshold = optarg, set.any = true;
            break;
        case OPT_AX_STEP:
            set.step = optarg, set.any = true;
            break;
        case OPT_AX_MAX:
            set.max = optarg, set.any = true;
            break;
        case OPT_BACKUP_KEEP:
            set.keep = optarg, set.any = true;
            break;
        case OPT_BACKUP_INTERVAL:
            set.interval = optarg, set.any = true;
            break;
        default: {
            int rc = cli_common_option("pool", c, usage, &json, NULL);
            if (rc != CLI_OPTION_TAKEN)
                return rc;
        }
        }
    }
    int rc = cli_check_operands("pool", argc, argv, optind);
    if (rc != EXIT_OK)
        return rc;
    const char *sub = argv[optind];
    static const char *const subs[] = {"check", "grow", "repair", "backup", "set"};
    size_t k = 0;
    while (k < sizeof(subs) / sizeof(subs[0]) && strcmp(sub, subs[k]) != 0)
        k++;
    if (k == sizeof(subs) / sizeof(subs[0]))
        return cli_usage_error("pool",
                               "unknown subcommand '%s' (check, grow, repair, backup or set)", sub);
    if (strcmp(sub, "grow") != 0 && (rq.data.set || rq.metadata.set))
        return cli_usage_error("pool", "--data and --metadata belong to `pool grow`");
    if (strcmp(sub, "repair") != 0 && from_given)
        return cli_usage_error("pool", "--from belongs to `pool repair`");
    if (strcmp(sub, "set") != 0 && set.any)
        return cli_usage_error("pool", "the autoextend and backup options belong to `pool set`");

    char what[32];
    snprintf(what, sizeof(what), "pool %s", sub);
    struct err e = {0};
    _cleanup_db_ struct db *db = NULL;
    int r = cli_open_db(cli, false, &db, &e);
    if (r < 0)
        return cli_fail(what, r, &e);
    if (!strcmp(sub, "check"))
        return pool_check_cmd(cli, db, json);
    if (!strcmp(sub, "grow"))
        return pool_grow_cmd(cli, db, &rq, json);
    if (!strcmp(sub, "repair"))
        return pool_repair_cmd(cli, db, from, json);
    if (!strcmp(sub, "backup"))
        return pool_backup_cmd(cli, db, json);
    return pool_set_cmd(cli, db, &set, json);
}
