/*
 * test_dm_usage.c: exclusive and shared bytes against a real pool (label dm: runs inside the
 * VM, tests/vm/run). Skips (77) where the kernel has no device-mapper.
 *
 * A two-layer image and two activations of it, written with known amounts (whole MiB, so
 * every write covers whole pool blocks):
 *
 *   base    8 MiB at 0
 *   layer2  snapshot of base; 1 MiB over base's first MiB (copy-on-write), 3 MiB at 32 MiB
 *   a1, a2  snapshots of layer2; a1 writes 2 MiB at 0 and 4 MiB at 48 MiB
 *
 * so the pool's metadata must say (MiB; mapped = exclusive + shared):
 *   base    mapped 8,  exclusive 1 (its old first MiB: only base maps it), shared 7
 *   layer2  mapped 11, exclusive 0 (a1 and a2 map all of it), shared 11
 *   a1      mapped 15, exclusive 6 (its writes), shared 9
 *   a2      mapped 11, exclusive 0, shared 11
 *   image   exclusive 1 (base's + layer2's exclusive: no other image uses them), shared 11
 *           (layer2's, the top)
 * `thinimg list-snapshots --json` and `list-images --json` must show these within one pool
 * block; a second listing of the unchanged pool runs no thin_ls (the cache file), one after a
 * write does. Two processes reading the pool's metadata snapshot at once both succeed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dm/dm.h"
#include "dm_fixture.h"
#include "dm/pool.h"
#include "dm/thin.h"
#include "dm/usage.h"
#include "store/db.h"
#include "store/schema.h"
#include "store/stmt.h"
#include "testutil.h"
#include "util/fsutil.h"
#include "util/log.h"

#define MIB       (1024ull * 1024)
#define DEV_BYTES (64 * MIB)

static struct dm_fixture fx;
static char *pool = fx.pool, *g_db_path = fx.db_path;
static char state_dir[600];
static struct db *db;
static uint64_t block_bytes;

static int group_setup(void **state)
{
    (void)state;
    if (dm_fixture_setup(&fx, "dmusage", "tus", 192 * MIB) < 0)
        return -1;
    db = fx.db;
    block_bytes = (uint64_t)fx.info.table.block_sectors * 512;
    snprintf(state_dir, sizeof(state_dir), "%s/state", fx.dir);
    return mkdir(state_dir, 0700);
}

static int group_teardown(void **state)
{
    (void)state;
    dm_fixture_teardown(&fx);
    return 0;
}

/* Writes mib MiB of a pattern at off_mib into the active device of id, then flushes. */
static void write_mib(uint32_t id, uint64_t off_mib, uint64_t mib, unsigned char fill)
{
    struct thin_dev d;
    assert_int_equal(thin_get(db, pool, id, &d), 0);
    char path[DM_NAME_MAX + 32];
    snprintf(path, sizeof(path), "/dev/mapper/%s", d.name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    unsigned char *b = malloc(MIB);
    assert_non_null(b);
    for (uint64_t i = 0; i < mib; i++) {
        memset(b, fill + (int)i, MIB);
        assert_int_equal(pwrite(fd, b, MIB, (off_t)((off_mib + i) * MIB)), (ssize_t)MIB);
    }
    assert_int_equal(fsync(fd), 0);
    close(fd);
    free(b);
}

static uint32_t make(uint32_t origin, enum thin_kind kind, const char *suffix)
{
    struct err e = {0};
    struct thin_spec spec = {.kind = kind, .name_suffix = suffix, .size_bytes = DEV_BYTES};
    uint32_t id = 0;
    int r = origin ? thin_snapshot(db, pool, origin, &spec, &id, &e)
                   : thin_create(db, pool, &spec, &id, &e);
    if (r < 0)
        fail_msg("create %s: %s", suffix ? suffix : "layer", err_str(&e));
    assert_int_equal(thin_activate(db, pool, id, NULL, 0, &e), 0);
    return id;
}

/* Deactivates id; a udev worker that opened the device after the writer closed it (blkid)
 * holds it for a moment: try again for up to DEACTIVATE_WAIT_MS. */
#define DEACTIVATE_WAIT_MS 10000
static void deactivate(uint32_t id)
{
    struct err e = {0};
    int r;
    for (int waited = 0;
         (r = thin_deactivate(db, pool, id, &e)) == -EBUSY && waited < DEACTIVATE_WAIT_MS;
         waited += 100)
        usleep(100 * 1000);
    if (r < 0)
        fail_msg("deactivate %u: %s", id, err_str(&e));
}

static void sql(const char *q)
{
    if (db_exec(db, q) < 0)
        fail_msg("%s: %s", q, db_errmsg(db));
}

/* The image's rows, as the pipeline leaves them for a two-layer image with two activations. */
static void record(uint32_t base, uint32_t layer2, uint32_t a1, uint32_t a2)
{
    char q[2048];
    snprintf(
        q, sizeof(q),
        "INSERT INTO images(id,ref,name,state,n_layers,top_chain,created_at_ms,"
        "updated_at_ms,last_used_ms) VALUES(1,'dir:/t/img/','img:1','ready',2,'sha256:c2',1,1,1);"
        "INSERT INTO layers(chain_id,parent_chain,digest,depth,pool,dev_id,state,bytes,"
        "created_at_ms,updated_at_ms) VALUES('sha256:c1',NULL,'sha256:d1',1,'%s',%u,"
        "'ready',8388608,1,1),('sha256:c2','sha256:c1','sha256:d2',2,'%s',%u,'ready',"
        "4194304,1,1);"
        "INSERT INTO image_layers(image_id,idx,location,digest,chain_id,size) VALUES"
        "(1,1,'dir:/t/img/1.tar','sha256:d1','sha256:c1',1),"
        "(1,2,'dir:/t/img/2.tar','sha256:d2','sha256:c2',1);"
        "INSERT INTO activations(name,image_id,chain_id,pool,dev_id,state,device_path,"
        "created_at_ms,updated_at_ms) VALUES"
        "('a1',1,'sha256:c2','%s',%u,'active','/dev/mapper/%s-act-a1',1,1),"
        "('a2',1,'sha256:c2','%s',%u,'active','/dev/mapper/%s-act-a2',1,1);",
        pool, base, pool, layer2, pool, a1, pool, pool, a2, pool);
    sql(q);
}

/* `thinimg --log-level debug CMD --json` as JSON; *ran: thin_ls ran for it. */
static json_t *list(const char *cmd, bool *ran)
{
    char env_state[600], env_db[600], env_pool[100];
    snprintf(env_state, sizeof(env_state), "THINIMG_STATE_DIR=%s", state_dir);
    snprintf(env_db, sizeof(env_db), "THINIMG_DB=%s", g_db_path);
    snprintf(env_pool, sizeof(env_pool), "THINIMG_POOL=%s", pool);
    char *env[] = {env_state, env_db, env_pool, NULL};
    char *argv[] = {(char *)tu_thinimg(), "--log-level", "debug", (char *)cmd, "--json", NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, env, &out, &err);
    if (rc != 0)
        fail_msg("%s: exit %d: %s", cmd, rc, err ? err : "");
    *ran = err && tu_contains(err, "pool usage read");
    json_t *j = json_loads(out ? out : "", 0, NULL);
    if (!j)
        fail_msg("%s: not JSON: %s", cmd, out ? out : "");
    free(out);
    free(err);
    return j;
}

static json_t *by_name(json_t *arr, const char *name)
{
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(arr, i), "name")) ?: "", name))
            return json_array_get(arr, i);
    fail_msg("no %s in the listing", name);
    return NULL;
}

/* o's field is want_mib MiB, within one pool block. */
static void near(json_t *o, const char *field, uint64_t want_mib, const char *what)
{
    json_t *v = json_object_get(o, field);
    if (!json_is_integer(v))
        fail_msg("%s: %s is not a number (%s)", what, field,
                 json_string_value(json_object_get(o, "bytes_note")) ?: "no note");
    int64_t got = json_integer_value(v), want = (int64_t)(want_mib * MIB);
    if (llabs(got - want) > (long long)block_bytes)
        fail_msg("%s: %s = %lld, want %lld (+-%llu)", what, field, (long long)got, (long long)want,
                 (unsigned long long)block_bytes);
}

static void test_exclusive_and_shared(void **state)
{
    (void)state;
    uint32_t base = make(0, THIN_KIND_LAYER, NULL);
    write_mib(base, 0, 8, 0x10);
    deactivate(base);
    uint32_t layer2 = make(base, THIN_KIND_LAYER, NULL);
    write_mib(layer2, 0, 1, 0x40);
    write_mib(layer2, 32, 3, 0x50);
    deactivate(layer2);
    uint32_t a1 = make(layer2, THIN_KIND_ACTIVATION, "a1");
    uint32_t a2 = make(layer2, THIN_KIND_ACTIVATION, "a2");
    write_mib(a1, 0, 2, 0x70);
    write_mib(a1, 48, 4, 0x80);
    record(base, layer2, a1, a2);

    bool ran = false;
    json_t *acts = list("list-snapshots", &ran);
    assert_true(ran);
    json_t *o = by_name(acts, "a1");
    near(o, "exclusive_bytes", 6, "a1");
    near(o, "shared_bytes", 9, "a1");
    near(o, "mapped_bytes", 15, "a1");
    o = by_name(acts, "a2");
    near(o, "exclusive_bytes", 0, "a2");
    near(o, "shared_bytes", 11, "a2");
    json_decref(acts);

    json_t *imgs = list("list-images", &ran);
    assert_false(ran); /* the same pool: the figures the first listing kept */
    o = by_name(imgs, "img:1");
    near(o, "exclusive_bytes", 1, "image");
    near(o, "shared_bytes", 11, "image");
    json_t *layers = json_object_get(o, "layers");
    assert_int_equal(json_array_size(layers), 2);
    near(json_array_get(layers, 0), "mapped_bytes", 8, "base");
    near(json_array_get(layers, 0), "exclusive_bytes", 1, "base");
    near(json_array_get(layers, 0), "shared_bytes", 7, "base");
    near(json_array_get(layers, 1), "mapped_bytes", 11, "layer2");
    near(json_array_get(layers, 1), "exclusive_bytes", 0, "layer2");
    near(json_array_get(layers, 1), "shared_bytes", 11, "layer2");
    json_decref(imgs);
    char cache[600];
    snprintf(cache, sizeof(cache), "%s/%s", state_dir, THIN_USAGE_CACHE_FILE);
    assert_int_equal(access(cache, F_OK), 0);

    /* A write changes the pool: the next listing reads it again and shows the write. */
    write_mib(a1, 56, 1, 0x90);
    acts = list("list-snapshots", &ran);
    assert_true(ran);
    near(by_name(acts, "a1"), "exclusive_bytes", 7, "a1 after 1 MiB more");
    near(by_name(acts, "a2"), "exclusive_bytes", 0, "a2 after a1's write");
    json_decref(acts);
}

/* Two processes reading the metadata snapshot at once take turns: none fails because the
 * other released the snapshot it was reading. */
static void test_concurrent_readers(void **state)
{
    (void)state;
    enum { READERS = 3, ROUNDS = 15 };
    pid_t pids[READERS];
    for (int i = 0; i < READERS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            for (int k = 0; k < ROUNDS; k++) {
                uint32_t *ids = NULL;
                size_t n = 0;
                struct err e = {0};
                if (thin_pool_metadata_ids(pool, &ids, NULL, &n, &e) < 0) {
                    fprintf(stderr, "reader %d round %d: %s\n", i, k, err_str(&e));
                    _exit(1);
                }
                free(ids);
            }
            _exit(0);
        }
    }
    for (int i = 0; i < READERS; i++) {
        int st = 0;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
}

int main(void)
{
    if (!dm_fixture_usable())
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exclusive_and_shared),
        cmocka_unit_test(test_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
