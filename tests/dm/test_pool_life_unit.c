/*
 * test_pool_life_unit.c: the host-side parts of the pool lifecycle (label unit): thin_check's
 * verdict from its output, the check itself on metadata files (real thin_check and
 * thin_restore: a sound file, a corrupted one, a fresh all-zero one, the tool missing), the
 * offline check's refusals, and the `+SIZE` size arguments of `pool grow`; the pool's life
 * (pool_life.h): the autoextend plan, the low-water mark it loads (the kernel signals exactly
 * where the plan grows: rounding, tiny pools, 100 %), settings and the bounded event history,
 * backup rotation, and `pool repair` on metadata files (real thin_repair, thin_restore, thin_ls):
 * thin_repair wins when it keeps more devices, the newest backup when the metadata is gone,
 * the lost devices become `failed`, the damaged file is kept, and nothing changes when no
 * candidate is usable. The online parts (grow under a mounted activation, the check at
 * assembly, backups of a live pool, autoextend) run in the VM: test_pool_life.sh.
 *
 * The verdict texts are thin_check 0.9.0's output on metadata corrupted the way the VM test
 * corrupts it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dm/pool.h"
#include "dm/pool_life.h"
#include "store/stmt.h"
#include "util/fsutil.h"
#include "testutil.h"

static const char SB_ERR[] = "examining superblock\n"
                             "  superblock is corrupt\n"
                             "    bad checksum in superblock, wanted 205381550\n";
static const char TREE_ERR[] = "examining superblock\n"
                               "examining devices tree\n"
                               "  missing devices: [0, -]\n"
                               "    bad checksum in btree node (block 6)\n"
                               "examining mapping tree\n"
                               "  missing all mappings for devices: [0, -]\n"
                               "    bad checksum in btree node (block 7)\n";
static const char OK_OUT[] = "TRANSACTION_ID=1\nMETADATA_FREE_BLOCKS=4095\n";
static const char OK_ERR[] = "examining superblock\nexamining devices tree\n"
                             "examining mapping tree\nchecking space map counts\n";

static void verdict_problem_lines(void **state)
{
    (void)state;
    char v[1024];
    pool_check_verdict(OK_OUT, SB_ERR, v, sizeof(v));
    assert_string_equal(v, "superblock is corrupt; bad checksum in superblock, wanted 205381550");
    /* at most POOL_CHECK_VERDICT_LINES lines, progress lines left out */
    pool_check_verdict(OK_OUT, TREE_ERR, v, sizeof(v));
    assert_string_equal(v, "missing devices: [0, -]; bad checksum in btree node (block 6); "
                           "missing all mappings for devices: [0, -]; bad checksum in btree "
                           "node (block 7)");
}

static void verdict_without_problem_lines(void **state)
{
    (void)state;
    char v[1024];
    /* an unindented message (a tool that cannot open the device) */
    pool_check_verdict("", "examining superblock\nCouldn't stat path\n", v, sizeof(v));
    assert_string_equal(v, "Couldn't stat path");
    /* nothing on stderr: stdout */
    pool_check_verdict("some words\n", NULL, v, sizeof(v));
    assert_string_equal(v, "some words");
    pool_check_verdict(NULL, OK_ERR, v, sizeof(v));
    assert_string_equal(v, "");
    /* truncated, never overflowing */
    char small[12];
    pool_check_verdict(OK_OUT, SB_ERR, small, sizeof(small));
    assert_string_equal(small, "superblock ");
}

static void size_arguments(void **state)
{
    (void)state;
    struct pool_size_arg a;
    assert_int_equal(pool_size_arg_parse("+64M", &a), 0);
    assert_true(a.set && a.relative);
    assert_int_equal(a.bytes, 64ull << 20);
    assert_int_equal(pool_size_arg_target(&a, 100), 100 + (64ull << 20));
    assert_int_equal(pool_size_arg_target(&a, UINT64_MAX - 1), UINT64_MAX);
    assert_int_equal(pool_size_arg_parse("2G", &a), 0);
    assert_true(a.set && !a.relative);
    assert_int_equal(pool_size_arg_target(&a, 100), 2ull << 30);
    const char *bad[] = {"", "+", "0", "+0", "++1M", "+-1M", "-1M", "1X", "M"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(pool_size_arg_parse(bad[i], &a), -EINVAL);
        assert_false(a.set);
    }
    assert_int_equal(pool_size_arg_parse(NULL, &a), -EINVAL);
    struct pool_size_arg unset = {0};
    assert_int_equal(pool_size_arg_target(&unset, 42), 42);
}

/* A 16 MiB metadata file with one thin device, made by thin_restore. NULL (test skipped) when
 * thin-provisioning-tools are not installed. */
static char *metadata_file(const char *dir, const char *name)
{
    if (tu_sh("command -v thin_restore && command -v thin_check", NULL, NULL) != 0)
        return NULL;
    char *path = NULL, *cmd = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    assert_true(asprintf(&cmd,
                         "printf '%%s\\n' '<superblock uuid=\"\" time=\"0\" transaction=\"1\" "
                         "flags=\"0\" version=\"2\" data_block_size=\"128\" "
                         "nr_data_blocks=\"1024\">' '<device dev_id=\"1\" mapped_blocks=\"2\" "
                         "transaction=\"0\" creation_time=\"0\" snap_time=\"0\">' "
                         "'<range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"2\" "
                         "time=\"0\"/>' '</device>' '</superblock>' >%s/m.xml && "
                         "truncate -s 16M %s && thin_restore -q -i %s/m.xml -o %s",
                         dir, path, dir, path) > 0);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    free(cmd);
    return path;
}

static void check_metadata_files(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("poolcheck");
    char *good = metadata_file(dir, "good.img");
    if (!good) {
        tu_rmrf(dir);
        free(dir);
        skip();
    }
    struct err e = {0};
    struct pool_check c;
    assert_int_equal(pool_metadata_check(good, false, &c, &e), 0);
    assert_true(c.ran && c.passed && !c.fresh);
    assert_int_equal(c.status, 0);

    /* the superblock overwritten: damage, and the verdict names it */
    char *cmd = NULL;
    assert_true(asprintf(&cmd,
                         "cp %s %s/bad.img && printf 'garbage%%04096d' 0 | dd of=%s/bad.img "
                         "conv=notrunc status=none",
                         good, dir, dir) > 0);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    free(cmd);
    char bad[1024];
    snprintf(bad, sizeof(bad), "%s/bad.img", dir);
    assert_int_equal(pool_metadata_check(bad, false, &c, &e), 0);
    assert_true(c.ran && !c.passed && !c.fresh);
    assert_int_not_equal(c.status, 0);
    assert_true(tu_contains(c.verdict, "superblock"));

    /* all zeroes: fresh metadata, not checked (the kernel formats it) */
    char zero[1024];
    snprintf(zero, sizeof(zero), "%s/zero.img", dir);
    assert_true(asprintf(&cmd, "truncate -s 16M %s", zero) > 0);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    free(cmd);
    assert_int_equal(pool_metadata_check(zero, false, &c, &e), 0);
    assert_true(c.fresh && c.passed && !c.ran);

    /* no thin_check on PATH: not run, not an error */
    char *path = strdup(getenv("PATH"));
    setenv("PATH", dir, 1);
    assert_int_equal(pool_metadata_check(bad, false, &c, &e), 0);
    setenv("PATH", path, 1);
    free(path);
    assert_false(c.ran);
    assert_false(c.passed);

    /* a file that is not there */
    char missing[1100];
    snprintf(missing, sizeof(missing), "%s/missing.img", dir);
    assert_int_equal(pool_metadata_check(missing, false, &c, &e), -ENOENT);
    free(good);
    tu_rmrf(dir);
    free(dir);
}

static void check_offline_unknown_pool(void **state)
{
    (void)state;
    struct tu_db t;
    assert_int_equal(tu_db_open("poolcheckdb", &t), 0);
    struct err e = {0};
    struct pool_check c;
    assert_int_equal(pool_check_offline(t.db, "nosuchpool", &c, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "setup-pool"));
    tu_db_close(&t);
}

#define MiB (1ull << 20)

static void autoextend_plan(void **state)
{
    (void)state;
    struct pool_settings s = {.autoextend_threshold_pct = 80, .autoextend_step_pct = 50};
    struct pool_autoextend_plan p;
    /* under the threshold: nothing */
    pool_autoextend_plan(&s, 64 * MiB, 79.9, 4 * MiB, 10, 64 << 10, &p);
    assert_false(p.data_over || p.meta_over);
    assert_int_equal(p.data_target, 0);
    /* data over: +50 %; metadata over too: +50 %, whole MiB */
    pool_autoextend_plan(&s, 64 * MiB, 80, 4 * MiB, 85, 64 << 10, &p);
    assert_int_equal(p.data_target, 96 * MiB);
    assert_int_equal(p.meta_target, 6 * MiB);
    /* a SIZE step, a cap below the step: up to the cap, then capped */
    s = (struct pool_settings){.autoextend_threshold_pct = 70,
                               .autoextend_step_bytes = 32 * MiB,
                               .autoextend_max_bytes = 80 * MiB};
    pool_autoextend_plan(&s, 64 * MiB, 75, 4 * MiB, 10, 64 << 10, &p);
    assert_int_equal(p.data_target, 80 * MiB);
    pool_autoextend_plan(&s, 80 * MiB, 75, 4 * MiB, 10, 64 << 10, &p);
    assert_true(p.data_over && p.data_capped);
    assert_int_equal(p.data_target, 0);
    /* metadata steps by the data step's fraction, at least 1 MiB */
    pool_autoextend_plan(&s, 64 * MiB, 10, 2 * MiB, 75, 64 << 10, &p);
    assert_int_equal(p.meta_target, 3 * MiB);
    /* off */
    s.autoextend_threshold_pct = 0;
    pool_autoextend_plan(&s, 64 * MiB, 100, 4 * MiB, 100, 64 << 10, &p);
    assert_false(p.data_over || p.meta_over);
}

/* The low-water mark signals exactly where the plan grows: for every used count, "free blocks
 * at or below the mark" (the kernel's test) is "usage at or over the threshold" (the plan's). */
static void low_water_from_threshold(void **state)
{
    (void)state;
    /* a round case, and the 48 MiB pool of 64 KiB blocks the VM test uses */
    assert_int_equal(pool_low_water_blocks(80, 1000), 200);
    assert_int_equal(pool_low_water_blocks(40, 768), 768 - 308);
    /* 14.1 % of 1000 is 141 blocks, though 14.1 * 1000 / 100 rounds up past 141 in doubles */
    assert_int_equal(pool_low_water_blocks(14.1, 1000), 859);
    /* tiny pools: one block is at any threshold only when used; two at 50 % after one */
    assert_int_equal(pool_low_water_blocks(80, 1), 0);
    assert_int_equal(pool_low_water_blocks(1, 1), 0);
    assert_int_equal(pool_low_water_blocks(50, 2), 1);
    assert_int_equal(pool_low_water_blocks(51, 2), 0);
    /* no pool, autoextend off, 100 % and beyond: 0 (the kernel signals when it is full) */
    assert_int_equal(pool_low_water_blocks(80, 0), 0);
    assert_int_equal(pool_low_water_blocks(0, 1000), 0);
    assert_int_equal(pool_low_water_blocks(100, 1000), 0);
    assert_int_equal(pool_low_water_blocks(150, 1000), 0);
    /* the kernel's test and the plan's agree at every usage */
    static const double thresholds[] = {0.5, 1, 14.1, 33.3, 40, 50, 66.7, 75.5, 80, 99, 99.9};
    for (size_t t = 0; t < sizeof(thresholds) / sizeof(thresholds[0]); t++) {
        struct pool_settings s = {.autoextend_threshold_pct = thresholds[t],
                                  .autoextend_step_pct = 20};
        for (uint64_t blocks = 1; blocks <= 300; blocks++) {
            uint64_t lw = pool_low_water_blocks(thresholds[t], blocks);
            assert_true(lw < blocks);
            for (uint64_t used = 0; used <= blocks; used++) {
                struct pool_autoextend_plan p;
                double pct = 100.0 * (double)used / (double)blocks;
                pool_autoextend_plan(&s, blocks * 65536, pct, 4 * MiB, 0, 65536, &p);
                if (p.data_over != (blocks - used <= lw))
                    fail_msg("threshold %.1f%%, %" PRIu64 " of %" PRIu64
                             " blocks used: plan over=%d, low water %" PRIu64,
                             thresholds[t], used, blocks, p.data_over, lw);
            }
        }
    }
}

static void settings_and_events(void **state)
{
    (void)state;
    struct tu_db t;
    assert_int_equal(tu_db_open("poolsettings", &t), 0);
    struct pool_settings s;
    assert_int_equal(pool_settings_get(t.db, "p", &s), 0);
    assert_true(s.autoextend_threshold_pct == 0);
    assert_int_equal(s.backup_keep, POOL_BACKUP_DEFAULT_KEEP);
    assert_int_equal(s.backup_interval_s, POOL_BACKUP_DEFAULT_INTERVAL_S);
    s.autoextend_threshold_pct = 75.5;
    s.autoextend_step_bytes = 32 * MiB;
    s.autoextend_max_bytes = 1024 * MiB;
    s.backup_keep = 3;
    s.backup_interval_s = 0;
    assert_int_equal(pool_settings_put(t.db, "p", &s), 0);
    struct pool_settings g;
    assert_int_equal(pool_settings_get(t.db, "p", &g), 0);
    assert_true(g.autoextend_threshold_pct > 75.49 && g.autoextend_threshold_pct < 75.51);
    assert_int_equal(g.autoextend_step_bytes, 32 * MiB);
    assert_true(g.autoextend_step_pct == 0);
    assert_int_equal(g.autoextend_max_bytes, 1024 * MiB);
    assert_int_equal(g.backup_keep, 3);
    assert_int_equal(g.backup_interval_s, 0);
    /* events: newest first, by kind, bounded */
    for (int i = 0; i < POOL_EVENTS_KEEP + 5; i++) {
        struct pool_event ev = {.at_ms = 1000 + i, .ok = true, .data_after = (uint64_t)i};
        snprintf(ev.kind, sizeof(ev.kind), "%s", i % 2 ? "grow" : "check");
        assert_int_equal(pool_event_add(t.db, "p", &ev), 0);
    }
    int64_t count = 0;
    assert_int_equal(db_query_int(t.db, "SELECT COUNT(*) FROM pool_events WHERE pool='p'", &count),
                     1);
    assert_int_equal(count, POOL_EVENTS_KEEP);
    struct pool_event ev[3];
    size_t n = 0;
    assert_int_equal(pool_events_recent(t.db, "p", "grow", ev, 3, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ev[0].data_after, POOL_EVENTS_KEEP + 3);
    assert_int_equal(ev[1].data_after, POOL_EVENTS_KEEP + 1);
    assert_string_equal(ev[0].kind, "grow");
    assert_int_equal(pool_events_recent(t.db, "other", NULL, ev, 3, &n), 0);
    assert_int_equal(n, 0);
    tu_db_close(&t);
}

static void backup_rotation(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("poolbackups");
    char bdir[4096], p[4200];
    assert_int_equal(pool_backup_dir(dir, "pl", bdir, sizeof(bdir)), 0);
    struct pool_backup b;
    assert_int_equal(pool_backup_latest(dir, "pl", &b), -ENOENT);
    assert_int_equal(mkdir_p(bdir, 0700), 0);
    /* The directory made, no dump in it (a first backup refused for space): no backup, and
     * nothing to prune (this listing once handed qsort a NULL array: UBSan aborted a commit). */
    assert_int_equal(pool_backup_latest(dir, "pl", &b), -ENOENT);
    assert_int_equal(pool_backup_prune(dir, "pl", 2), 0);
    for (int i = 1; i <= 5; i++) {
        snprintf(p, sizeof(p), "%s/meta-%015d.xml", bdir, i * 1000);
        assert_int_equal(tu_write_file(p, "x", 1), 0);
    }
    snprintf(p, sizeof(p), "%s/meta-%015d.xml.tmp", bdir, 9000); /* a dump cut short */
    assert_int_equal(tu_write_file(p, "x", 1), 0);
    assert_int_equal(pool_backup_latest(dir, "pl", &b), 0);
    assert_int_equal(b.at_ms, 5000);
    assert_int_equal(pool_backup_prune(dir, "pl", 2), 3);
    snprintf(p, sizeof(p), "%s/meta-%015d.xml", bdir, 3000);
    assert_int_not_equal(access(p, F_OK), 0);
    snprintf(p, sizeof(p), "%s/meta-%015d.xml", bdir, 4000);
    assert_int_equal(access(p, F_OK), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Metadata from XML: devices ids[] with 4 mapped blocks each (thin_restore). thin_repair 0.9
 * finds no device of a tree whose devices map single blocks only; real devices map ranges. */
static int restore_xml(const char *dir, const char *xml_name, const char *img, const int *ids,
                       int n)
{
    char xml[4200];
    snprintf(xml, sizeof(xml), "%s/%s", dir, xml_name);
    FILE *f = fopen(xml, "w");
    if (!f)
        return -1;
    fprintf(f, "<superblock uuid=\"\" time=\"0\" transaction=\"0\" flags=\"0\" version=\"2\" "
               "data_block_size=\"128\" nr_data_blocks=\"1024\">\n");
    for (int i = 0; i < n; i++)
        fprintf(f,
                "<device dev_id=\"%d\" mapped_blocks=\"4\" transaction=\"0\" creation_time=\"0\" "
                "snap_time=\"0\">\n<range_mapping origin_begin=\"0\" data_begin=\"%d\" "
                "length=\"4\" time=\"0\"/>\n</device>\n",
                ids[i], i * 4);
    fprintf(f, "</superblock>\n");
    fclose(f);
    if (!img)
        return 0;
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -f %s && truncate -s 16M %s && thin_restore -q -i %s -o %s", img, img,
                 xml, img) < 0)
        return -1;
    int r = tu_sh(cmd, NULL, NULL);
    free(cmd);
    return r;
}

static int dev_state(struct db *db, int id, char *out, size_t n)
{
    _cleanup_query_ struct db_query q = {0};
    int r = db_query(&q, db, "SELECT state FROM devices WHERE pool='rp' AND dev_id=?", DB_INT(id));
    if (r >= 0 && (r = db_query_next(&q)) == 1)
        snprintf(out, n, "%s", sqlite3_column_text(q.st, 0));
    return r;
}

static void repair_files(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("poolrepair");
    char meta[4096], bdir[4096], cmd[9000], st[16];
    snprintf(meta, sizeof(meta), "%s/rp-meta.img", dir);
    static const int in_pool[] = {1, 2, 3}, in_backup[] = {1, 2};
    if (restore_xml(dir, "m.xml", meta, in_pool, 3) != 0) {
        tu_rmrf(dir);
        free(dir);
        skip(); /* no thin-provisioning-tools */
    }
    assert_int_equal(pool_backup_dir(dir, "rp", bdir, sizeof(bdir)), 0);
    assert_int_equal(mkdir_p(bdir, 0700), 0);
    snprintf(cmd, sizeof(cmd), "%s/meta-%015d.xml", bdir, 1000);
    restore_xml(dir, "b.xml", NULL, in_backup, 2);
    char bxml[4200];
    snprintf(bxml, sizeof(bxml), "%s/b.xml", dir);
    assert_int_equal(rename(bxml, cmd), 0);
    /* as `thin_dump --metadata-snap` writes it: no data block count in the superblock */
    char *sed = NULL;
    assert_true(asprintf(&sed, "sed -i 's/nr_data_blocks=\"1024\"/nr_data_blocks=\"0\"/' %s", cmd) >
                0);
    assert_int_equal(tu_sh(sed, NULL, NULL), 0);
    free(sed);

    struct tu_db t;
    assert_int_equal(tu_db_open("poolrepairdb", &t), 0);
    assert_int_equal(db_run_tx(t.db,
                               "INSERT INTO pools(name, origin, metadata_file, data_file,"
                               " data_bytes, metadata_bytes, block_sectors, low_water_blocks,"
                               " features, created_at_ms, updated_at_ms) VALUES('rp','created',"
                               " ?, 'x', 67108864, 16777216, 128, 100, '1 error_if_no_space',"
                               " 1, 1)",
                               DB_TEXT(meta)),
                     0);
    for (int id = 1; id <= 4; id++)
        assert_int_equal(db_run_tx(t.db,
                                   "INSERT INTO devices(pool, dev_id, name, kind, state,"
                                   " size_bytes, created_at_ms, updated_at_ms) VALUES('rp', ?,"
                                   " 'rp-test-' || ?, 'test', 'ready', 1048576, 1, 1)",
                                   DB_INT(id), DB_INT(id)),
                         0);
    struct err e = {0};
    struct pool_repair_result res;

    /* the superblock overwritten: thin_repair (with the database's superblock fields) keeps
     * 1, 2, 3 and beats the backup (1, 2); id 4 was never in the pool: lost */
    snprintf(cmd, sizeof(cmd),
             "head -c 4096 /dev/urandom | dd of=%s bs=4096 conv=notrunc status=none", meta);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    assert_int_equal(pool_repair(t.db, "rp", dir, POOL_REPAIR_AUTO, &res, &e), 0);
    assert_string_equal(res.used, "thin_repair");
    assert_true(res.repair.usable && res.backup.usable);
    assert_int_equal(res.repair.missing, 1);
    assert_int_equal(res.backup.missing, 2);
    assert_int_equal(res.n_lost, 1);
    assert_int_equal(res.lost[0], 4);
    assert_string_equal(res.lost_names[0], "rp-test-4");
    assert_int_equal(access(res.damaged_kept, F_OK), 0);
    pool_repair_result_free(&res);
    struct pool_check c;
    assert_int_equal(pool_metadata_check(meta, false, &c, &e), 0);
    assert_true(c.passed);
    assert_int_equal(dev_state(t.db, 4, st, sizeof(st)), 1);
    assert_string_equal(st, "failed");
    assert_int_equal(dev_state(t.db, 3, st, sizeof(st)), 1);
    assert_string_equal(st, "ready");

    /* the whole file zeroed: thin_repair "succeeds" with no devices; the backup keeps 1, 2
     * and wins; 3 is lost */
    snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of=%s bs=1M count=16 status=none", meta);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    assert_int_equal(pool_repair(t.db, "rp", dir, POOL_REPAIR_AUTO, &res, &e), 0);
    assert_string_equal(res.used, "backup");
    assert_int_equal(res.repair.missing, 3);
    assert_int_equal(res.backup.missing, 1);
    assert_int_equal(res.n_lost, 1);
    assert_int_equal(res.lost[0], 3);
    assert_true(tu_contains(res.backup.source, "meta-000000000001000.xml"));
    pool_repair_result_free(&res);
    assert_int_equal(dev_state(t.db, 3, st, sizeof(st)), 1);
    assert_string_equal(st, "failed");
    int64_t events = 0;
    assert_int_equal(db_query_int(t.db,
                                  "SELECT COUNT(*) FROM pool_events WHERE pool='rp' AND"
                                  " kind='repair'",
                                  &events),
                     1);
    assert_int_equal(events, 2);

    /* nothing usable (no thin_repair on PATH, --from metadata): refused, file unchanged */
    snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of=%s bs=1M count=16 status=none", meta);
    assert_int_equal(tu_sh(cmd, NULL, NULL), 0);
    char *path = strdup(getenv("PATH"));
    setenv("PATH", dir, 1);
    int r = pool_repair(t.db, "rp", dir, POOL_REPAIR_FROM_METADATA, &res, &e);
    setenv("PATH", path, 1);
    free(path);
    assert_int_equal(r, -EUCLEAN);
    assert_true(tu_contains(e.msg, "Nothing was changed"));
    pool_repair_result_free(&res);
    char *bytes = tu_read_file(meta, NULL);
    assert_non_null(bytes);
    assert_int_equal(bytes[0], 0);
    free(bytes);
    snprintf(cmd, sizeof(cmd), "%s.repair.tmp", meta);
    assert_int_not_equal(access(cmd, F_OK), 0);

    /* unknown pool */
    err_clear(&e);
    assert_int_equal(pool_repair(t.db, "nosuch", dir, POOL_REPAIR_AUTO, &res, &e), -ENOENT);
    assert_true(tu_contains(e.msg, "setup-pool"));
    tu_db_close(&t);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verdict_problem_lines),
        cmocka_unit_test(verdict_without_problem_lines),
        cmocka_unit_test(size_arguments),
        cmocka_unit_test(check_metadata_files),
        cmocka_unit_test(check_offline_unknown_pool),
        cmocka_unit_test(autoextend_plan),
        cmocka_unit_test(low_water_from_threshold),
        cmocka_unit_test(settings_and_events),
        cmocka_unit_test(backup_rotation),
        cmocka_unit_test(repair_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
