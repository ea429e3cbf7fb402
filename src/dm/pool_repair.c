/*
 * pool_repair.c: `thinimg pool repair`: sound metadata back for an offline pool, from
 * thin_repair or the newest backup, whichever keeps more of the database's devices; see
 * pool_life.h.
 *
 * Files beside the metadata file M:
 *   M.repair.tmp    thin_repair's output (our scratch until chosen)
 *   M.restore.tmp   thin_restore of the newest backup (scratch until chosen)
 *   M.damaged-<ms>  the damaged metadata, kept for the operator (never removed by thinimg)
 * The chosen candidate is renamed onto M; the other scratch file is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dm/exec.h"
#include "dm/pool.h"
#include "dm/pool_life.h"
#include "store/stmt.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/timeutil.h"

void pool_repair_result_free(struct pool_repair_result *r)
{
    free(r->repair.ids);
    free(r->backup.ids);
    r->repair.ids = r->backup.ids = NULL;
    free(r->lost);
    free(r->lost_names);
    r->lost = NULL;
    r->lost_names = NULL;
    r->n_lost = 0;
}

/* A fresh file of `bytes` (thin_repair and thin_restore write into an existing file). */
static int scratch_file(const char *path, uint64_t bytes, struct err *e)
{
    unlink(path);
    _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(e, neg_errno(), "cannot create %s: %s", path, strerror(errno));
    int r = posix_fallocate(fd, 0, (off_t)bytes);
    if (r != 0) {
        unlink(path);
        return err_set(e, -r, "cannot allocate %" PRIu64 " bytes for %s: %s (free space?)", bytes,
                       path, strerror(r));
    }
    return 0;
}

/* The thin ids a metadata file holds (thin_ls on an offline file needs no snapshot). */
static int file_ids(const char *file, uint32_t **ids, size_t *n, char *why, size_t wn)
{
    *ids = NULL;
    *n = 0;
    char *argv[] = {POOL_LS_TOOL, "--no-headers", "-o", "DEV", (char *)file, NULL};
    _cleanup_buf_ struct buf out = BUF_INIT, errout = BUF_INIT;
    struct err e = {0};
    int r = dm_exec(argv, POOL_REPAIR_TIMEOUT_MS, &out, &errout, &e);
    if (r != 0) {
        snprintf(why, wn, "%s failed (%d): %s", POOL_LS_TOOL, r,
                 r < 0         ? err_str(&e)
                 : errout.data ? errout.data
                               : "");
        return -EIO;
    }
    uint32_t *v = NULL;
    size_t k = 0;
    char *save = NULL;
    for (char *l = strtok_r(out.data ? out.data : (char[]){""}, "\n", &save); l;
         l = strtok_r(NULL, "\n", &save)) {
        unsigned long id;
        if (sscanf(l, "%lu", &id) != 1)
            continue;
        uint32_t *nv = realloc(v, (k + 1) * sizeof(*v));
        if (!nv) {
            free(v);
            return -ENOMEM;
        }
        v = nv;
        v[k++] = (uint32_t)id;
    }
    *ids = v;
    *n = k;
    return 0;
}

/* The database's ready devices of the pool. */
struct db_dev {
    uint32_t id;
    char name[128];
};

static int db_ready(struct db *db, const char *pool, struct db_dev **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    _cleanup_query_ struct db_query q = {0};
    int r = db_query(&q, db,
                     "SELECT dev_id, name FROM devices WHERE pool=? AND state='ready'"
                     " ORDER BY dev_id",
                     DB_TEXT(pool));
    while (r >= 0 && (r = db_query_next(&q)) == 1) {
        struct db_dev *nv = realloc(*out, (*n + 1) * sizeof(**out));
        if (!nv)
            return -ENOMEM;
        *out = nv;
        nv[*n].id = (uint32_t)sqlite3_column_int64(q.st, 0);
        snprintf(nv[*n].name, sizeof(nv[*n].name), "%s", sqlite3_column_text(q.st, 1));
        (*n)++;
    }
    return r < 0 ? r : 0;
}

static bool has_id(const uint32_t *ids, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

/* Check a produced candidate and count the database devices it lacks. */
static void candidate_judge(struct pool_repair_candidate *c, const char *file,
                            const struct db_dev *devs, size_t ndevs)
{
    struct pool_check chk;
    struct err e = {0};
    if (pool_metadata_check(file, false, &chk, &e) < 0 || !chk.ran || !chk.passed) {
        snprintf(c->note, sizeof(c->note), "the result does not pass thin_check: %s",
                 e.code ? err_str(&e) : chk.verdict);
        return;
    }
    if (file_ids(file, &c->ids, &c->n_ids, c->note, sizeof(c->note)) < 0)
        return;
    c->missing = 0;
    for (size_t i = 0; i < ndevs; i++)
        if (!has_id(c->ids, c->n_ids, devs[i].id))
            c->missing++;
    c->usable = true;
}

/* Run a tool that writes metadata into out; 0, or the note says why not. */
static int run_tool(char *const argv[], char *note, size_t n)
{
    _cleanup_buf_ struct buf so = BUF_INIT, se = BUF_INIT;
    struct err e = {0};
    int r = dm_exec(argv, POOL_REPAIR_TIMEOUT_MS, &so, &se, &e);
    if (r == 0)
        return 0;
    char v[512];
    pool_check_verdict(so.data, se.data, v, sizeof(v));
    snprintf(note, n, "%s failed (%d): %s", argv[0], r, r < 0 ? err_str(&e) : v);
    return r == 127 ? -ENOPKG : -EIO;
}

/* thin_repair; when the superblock is gone it asks for the fields the database knows. */
static void try_repair(struct pool_repair_candidate *c, const char *in, const char *out,
                       const struct pool_offline *row, uint64_t transaction)
{
    c->tried = true;
    snprintf(c->source, sizeof(c->source), "%s", in);
    char *argv[] = {POOL_REPAIR_TOOL, "-i", (char *)in, "-o", (char *)out, NULL};
    if (run_tool(argv, c->note, sizeof(c->note)) == 0)
        return;
    char tid[32], bs[32], nb[32];
    snprintf(tid, sizeof(tid), "%" PRIu64, transaction);
    snprintf(bs, sizeof(bs), "%" PRIu32, row->block_sectors);
    snprintf(nb, sizeof(nb), "%" PRIu64,
             row->data_bytes / ((uint64_t)row->block_sectors * DM_SECTOR_SIZE));
    char *argv2[] = {
        POOL_REPAIR_TOOL,    "-i", (char *)in,         "-o", (char *)out, "--transaction-id", tid,
        "--data-block-size", bs,   "--nr-data-blocks", nb,   NULL};
    char note2[512];
    if (run_tool(argv2, note2, sizeof(note2)) == 0) {
        c->note[0] = '\0';
        return;
    }
    snprintf(c->note + strlen(c->note), sizeof(c->note) - strlen(c->note),
             "; with the superblock fields from the database: %s", note2);
}

/* The transaction id a backup recorded (its superblock's transaction="N"), else 0: thinimg
 * never sets one, so 0 is what a pool it made has. */
static uint64_t backup_transaction(const char *path)
{
    _cleanup_buf_ struct buf b = BUF_INIT;
    if (read_file(path, 4096, &b) < 0 || !b.data)
        return 0;
    const char *t = strstr(b.data, "transaction=\"");
    return t ? strtoull(t + 13, NULL, 10) : 0;
}

/* Detach a loop device (LOOP_CLR_FD); a failure only leaks the loop. */
static void loop_detach_dev(const char *dev, const char *what)
{
    _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ioctl(fd, LOOP_CLR_FD, 0) < 0)
        log_warn("cannot detach a loop device", "dev=%s file=%s err=%s", dev, what,
                 strerror(errno));
}

/* A copy of a backup for thin_restore, with the superblock's nr_data_blocks raised to what
 * the pool has: `thin_dump --metadata-snap` writes nr_data_blocks="0" (the snapshot does not
 * carry the data space map's size; thin-provisioning-tools 0.9), and thin_restore then
 * refuses every mapping ("mapping beyond end of data device"). The superblock is the first
 * line of the dump; the rest is copied as is. */
static int backup_for_restore(const char *backup, const char *out, uint64_t data_blocks, char *note,
                              size_t nn)
{
    _cleanup_fclose_ FILE *in = fopen(backup, "re");
    _cleanup_fclose_ FILE *o = in ? fopen(out, "we") : NULL;
    if (!in || !o) {
        snprintf(note, nn, "cannot copy %s to %s: %s", backup, out, strerror(errno));
        return -EIO;
    }
    char line[4096];
    if (!fgets(line, sizeof(line), in)) {
        snprintf(note, nn, "%s is empty", backup);
        return -EIO;
    }
    static const char key[] = "nr_data_blocks=\"";
    char *k = strstr(line, key);
    if (k && strtoull(k + sizeof(key) - 1, NULL, 10) < data_blocks) {
        char *end = strchr(k + sizeof(key) - 1, '"');
        if (end)
            fprintf(o, "%.*s%" PRIu64 "%s", (int)(k + sizeof(key) - 1 - line), line, data_blocks,
                    end);
        else
            fputs(line, o);
    } else {
        fputs(line, o);
    }
    char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), in)) > 0)
        if (fwrite(buf, 1, got, o) != got)
            break;
    if (ferror(in) || ferror(o) || fflush(o) != 0) {
        snprintf(note, nn, "cannot copy %s to %s: %s", backup, out, strerror(errno));
        return -EIO;
    }
    return 0;
}

/* The damaged metadata's loop device, if one is bound: it keeps the old file open under its
 * old inode. Detach it so nothing uses the damaged copy. */
static void detach_loop_of(const char *file)
{
    char dev[LOOP_PATH_MAX];
    if (loop_find(file, dev, sizeof(dev)) > 0)
        loop_detach_dev(dev, file);
}

/* A candidate's scratch file and the loop device the tools use for it: thin-provisioning-tools
 * open metadata with O_DIRECT, which some file systems refuse for plain files (tmpfs before
 * Linux 6.6: "syscall 'open' failed: Invalid argument"); a loop device always takes it. */
struct scratch {
    char path[4200];
    char dev[LOOP_PATH_MAX];
    bool bound;
};

static int scratch_open(struct scratch *sc, const char *meta, const char *suffix, uint64_t bytes,
                        struct err *e)
{
    memset(sc, 0, sizeof(*sc));
    snprintf(sc->path, sizeof(sc->path), "%s%s", meta, suffix);
    int r = scratch_file(sc->path, bytes, e);
    if (r < 0)
        return r;
    if ((r = loop_attach(sc->path, false, sc->dev, sizeof(sc->dev), NULL, e)) < 0) {
        unlink(sc->path);
        return r;
    }
    sc->bound = true;
    return 0;
}

static void scratch_unbind(struct scratch *sc)
{
    if (sc->bound)
        loop_detach_dev(sc->dev, sc->path);
    sc->bound = false;
}

/* Unbind and remove (a candidate that was not chosen: our own scratch, not a device). */
static void scratch_drop(struct scratch *sc)
{
    scratch_unbind(sc);
    if (sc->path[0])
        unlink(sc->path);
}

static int mark_lost(struct db *db, const char *pool, struct pool_repair_result *res,
                     const char *why)
{
    _cleanup_tx_ struct db_tx tx = {0};
    int r = db_tx_begin(&tx, db);
    for (size_t i = 0; r >= 0 && i < res->n_lost; i++)
        r = db_run(db,
                   "UPDATE devices SET state='failed', error=?, updated_at_ms=? WHERE pool=? AND"
                   " dev_id=? AND state='ready'",
                   DB_TEXT(why), DB_INT(now_ms()), DB_TEXT(pool), DB_INT(res->lost[i]));
    return r < 0 ? r : db_tx_commit(&tx);
}

int pool_repair(struct db *db, const char *pool, const char *state_dir, enum pool_repair_source src,
                struct pool_repair_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    struct pool_offline row;
    int r = pool_offline_get(db, pool, POOL_REPAIR_TOOL, "pool repair", &row, e);
    if (r < 0)
        return r;
    struct stat st;
    if (stat(row.metadata_file, &st) < 0)
        return err_set(e, -ENOENT, "pool \"%s\": its metadata file %s is missing: %s", pool,
                       row.metadata_file, strerror(errno));
    _cleanup_free_ struct db_dev *devs = NULL;
    size_t ndevs = 0;
    if ((r = db_ready(db, pool, &devs, &ndevs)) < 0)
        return err_set(e, r, "cannot read the devices of pool \"%s\"", pool);

    /* The damaged metadata through a loop device too (bound read-only when none is). */
    char in_dev[LOOP_PATH_MAX];
    bool in_bound = false;
    if (loop_find(row.metadata_file, in_dev, sizeof(in_dev)) <= 0) {
        if ((r = loop_attach(row.metadata_file, true, in_dev, sizeof(in_dev), NULL, e)) < 0)
            return r;
        in_bound = true;
    }
    struct pool_backup latest;
    bool have_backup = pool_backup_latest(state_dir, pool, &latest) == 0;
    struct scratch rep = {0}, rst = {0};

    if (src != POOL_REPAIR_FROM_BACKUP) {
        if ((r = scratch_open(&rep, row.metadata_file, ".repair.tmp", (uint64_t)st.st_size, e)) < 0)
            goto out;
        try_repair(&res->repair, in_dev, rep.dev, &row,
                   have_backup ? backup_transaction(latest.path) : 0);
        snprintf(res->repair.source, sizeof(res->repair.source), "%s", row.metadata_file);
        if (!res->repair.note[0])
            candidate_judge(&res->repair, rep.dev, devs, ndevs);
    }
    if (src != POOL_REPAIR_FROM_METADATA) {
        res->backup.tried = true;
        if (!have_backup) {
            snprintf(res->backup.note, sizeof(res->backup.note), "no metadata backup under %s/%s",
                     state_dir, POOL_BACKUP_SUBDIR);
        } else {
            snprintf(res->backup.source, sizeof(res->backup.source), "%s", latest.path);
            if ((r = scratch_open(&rst, row.metadata_file, ".restore.tmp", (uint64_t)st.st_size,
                                  e)) < 0)
                goto out;
            char xml[4300];
            snprintf(xml, sizeof(xml), "%s.restore.xml.tmp", row.metadata_file);
            uint64_t blocks = row.data_bytes / ((uint64_t)row.block_sectors * DM_SECTOR_SIZE);
            char *argv[] = {POOL_RESTORE_TOOL, "-q", "-i", xml, "-o", rst.dev, NULL};
            if (backup_for_restore(latest.path, xml, blocks, res->backup.note,
                                   sizeof(res->backup.note)) == 0 &&
                run_tool(argv, res->backup.note, sizeof(res->backup.note)) == 0)
                candidate_judge(&res->backup, rst.dev, devs, ndevs);
            unlink(xml); /* our scratch copy */
        }
    }
    if (in_bound) {
        loop_detach_dev(in_dev, row.metadata_file);
        in_bound = false;
    }
    /* The choice: the usable one that keeps more devices; thin_repair on a tie (newer). */
    const struct pool_repair_candidate *a = &res->repair, *b = &res->backup;
    bool use_backup = b->usable && (!a->usable || b->missing < a->missing);
    if (!a->usable && !b->usable) {
        r = err_set(e, -EUCLEAN,
                    "pool \"%s\": no sound metadata could be made. thin_repair: %s. backup: %s. "
                    "Nothing was changed; %s is as it was",
                    pool, a->tried ? a->note : "not tried", b->tried ? b->note : "not tried",
                    row.metadata_file);
        goto out;
    }
    struct scratch *chosen = use_backup ? &rst : &rep;
    const struct pool_repair_candidate *cc = use_backup ? b : a;
    scratch_drop(use_backup ? &rep : &rst);
    scratch_unbind(chosen);
    res->used = use_backup ? "backup" : POOL_REPAIR_TOOL;

    /* Swap: the damaged file aside (kept), the new one in its place, durable first. */
    {
        _cleanup_close_ int fd = open(chosen->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0) {
            r = err_set(e, neg_errno(), "cannot sync %s: %s", chosen->path, strerror(errno));
            goto out;
        }
    }
    detach_loop_of(row.metadata_file);
    snprintf(res->damaged_kept, sizeof(res->damaged_kept), "%s.damaged-%" PRId64, row.metadata_file,
             now_ms());
    if (rename(row.metadata_file, res->damaged_kept) < 0) {
        r = err_set(e, neg_errno(), "cannot move %s aside to %s: %s", row.metadata_file,
                    res->damaged_kept, strerror(errno));
        goto out;
    }
    if (rename(chosen->path, row.metadata_file) < 0) {
        r = err_set(e, neg_errno(),
                    "cannot put the repaired metadata %s in place of %s: %s (the damaged file "
                    "is at %s)",
                    chosen->path, row.metadata_file, strerror(errno), res->damaged_kept);
        goto out;
    }
    chosen->path[0] = '\0'; /* in place now: not scratch any more */
    fsync_parent_dir(row.metadata_file);

    /* What the database had ready that the new metadata lacks. */
    res->lost = calloc(ndevs ? ndevs : 1, sizeof(*res->lost));
    res->lost_names = calloc(ndevs ? ndevs : 1, sizeof(*res->lost_names));
    if (!res->lost || !res->lost_names) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ndevs; i++)
        if (!has_id(cc->ids, cc->n_ids, devs[i].id)) {
            res->lost[res->n_lost] = devs[i].id;
            snprintf(res->lost_names[res->n_lost], sizeof(res->lost_names[0]), "%s", devs[i].name);
            res->n_lost++;
        }
    char lost_why[256];
    snprintf(lost_why, sizeof(lost_why), "lost in the metadata repair of pool %s (%s)", pool,
             res->used);
    if ((r = mark_lost(db, pool, res, lost_why)) < 0)
        return err_set(e, r, "pool \"%s\": repaired, but the lost devices were not recorded: %s",
                       pool, db_errmsg(db));
    struct pool_event ev = {.ok = true};
    snprintf(ev.kind, sizeof(ev.kind), "repair");
    snprintf(ev.detail, sizeof(ev.detail), "from %s (%s); %zu devices lost; damaged kept at %s",
             res->used, use_backup ? b->source : a->source, res->n_lost, res->damaged_kept);
    pool_event_add(db, pool, &ev);
    log_info("pool metadata repaired", "pool=%s from=%s source=%s lost=%zu damaged_kept=%s", pool,
             res->used, cc->source, res->n_lost, res->damaged_kept);
    r = 0;
out:
    if (in_bound)
        loop_detach_dev(in_dev, row.metadata_file);
    scratch_drop(&rep);
    scratch_drop(&rst);
    return r;
}
