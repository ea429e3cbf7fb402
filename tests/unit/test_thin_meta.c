/*
 * test_thin_meta.c: the in-process reader of a pool's thin ids (dm/thin_meta.h), on the host,
 * against metadata written by thin_restore (skipped without thin-provisioning-tools): the same
 * ids thin_ls lists, the held snapshot's tree rather than the live one, and damaged blocks
 * refused (never a wrong answer). tests/dm/test_dm_thin.c reads a live pool in the VM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dm/thin.h"
#include "dm/thin_meta.h"
#include "testutil.h"
#include "util/buf.h"

/* Ids with gaps, more than one leaf holds (126 per leaf), up to the highest id. */
#define N_IDS 300

static char *dir, meta[512];
static uint32_t want[N_IDS];

static uint32_t want_id(size_t i)
{
    return i == N_IDS - 1 ? THIN_ID_MAX : (uint32_t)(1 + i * 7);
}

static int setup(void **state)
{
    (void)state;
    dir = tu_mkdtemp("thinmeta");
    if (!dir)
        return -1;
    char xml[600];
    snprintf(xml, sizeof(xml), "%s/m.xml", dir);
    snprintf(meta, sizeof(meta), "%s/meta.bin", dir);
    struct buf b = BUF_INIT;
    buf_printf(&b, "<superblock uuid=\"\" time=\"0\" transaction=\"1\" flags=\"0\" version=\"2\" "
                   "data_block_size=\"128\" nr_data_blocks=\"4096\">\n");
    for (size_t i = 0; i < N_IDS; i++) {
        want[i] = want_id(i);
        buf_printf(&b,
                   "<device dev_id=\"%u\" mapped_blocks=\"1\" transaction=\"0\" "
                   "creation_time=\"0\" snap_time=\"0\"><single_mapping origin_block=\"0\" "
                   "data_block=\"%zu\" time=\"0\"/></device>\n",
                   want[i], i);
    }
    buf_printf(&b, "</superblock>\n");
    int r = tu_write_file(xml, b.data, b.len);
    buf_free(&b);
    if (r < 0)
        return -1;
    char *restore[] = {"sh", "-c", "truncate -s 4M \"$1\" && thin_restore -q -i \"$0\" -o \"$1\"",
                       xml,  meta, NULL};
    char *out = NULL, *err = NULL;
    r = tu_run(restore, NULL, &out, &err);
    free(out);
    free(err);
    if (r != 0)
        meta[0] = '\0'; /* no thin_restore here: the tests that need it skip */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static int read_ids(bool held, uint32_t **ids, size_t *n, struct err *e)
{
    int fd = open(meta, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    int r = thin_meta_read_ids(fd, held, ids, n, e);
    close(fd);
    return r;
}

static void put64(uint8_t *b, size_t off, uint64_t v)
{
    v = htole64(v);
    memcpy(b + off, &v, sizeof(v));
}

static uint64_t get64(const uint8_t *b, size_t off)
{
    uint64_t v;
    memcpy(&v, b + off, sizeof(v));
    return le64toh(v);
}

/* Rewrites block blk of the metadata file with its checksum made good (xor: the block kind's). */
static void write_block(uint64_t blk, uint8_t *b, uint32_t xor_with)
{
    uint32_t c = htole32(thin_meta_checksum(b + 4, THIN_META_BLOCK_SIZE - 4, xor_with));
    memcpy(b, &c, sizeof(c));
    int fd = open(meta, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, THIN_META_BLOCK_SIZE, (off_t)(blk * THIN_META_BLOCK_SIZE)),
                     THIN_META_BLOCK_SIZE);
    close(fd);
}

static void read_block(uint64_t blk, uint8_t *b)
{
    int fd = open(meta, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, b, THIN_META_BLOCK_SIZE, (off_t)(blk * THIN_META_BLOCK_SIZE)),
                     THIN_META_BLOCK_SIZE);
    close(fd);
}

/* The superblock and the root node of the details tree (its block number returned). */
static uint64_t read_sb_and_root(uint8_t *sb, uint8_t *node)
{
    read_block(0, sb);
    uint64_t root = get64(sb, 328);
    read_block(root, node);
    return root;
}

static void test_checksum_is_the_kernels(void **state)
{
    (void)state;
    /* crc32c("123456789") is 0xE3069283 after its final inversion; the kernel's
     * dm_bm_checksum leaves that out. */
    assert_int_equal(thin_meta_checksum("123456789", 9, 0), 0xE3069283u ^ 0xFFFFFFFFu);
    assert_int_equal(thin_meta_checksum("123456789", 9, 160774), 0x1CF96D7Cu ^ 160774u);
}

/* The ids thin_ls lists, in order, from a tree of several leaves. */
static void test_same_ids_as_thin_ls(void **state)
{
    (void)state;
    if (!meta[0])
        skip();
    uint32_t *ids = NULL;
    size_t n = 0;
    struct err e = {0};
    assert_int_equal(read_ids(false, &ids, &n, &e), 0);
    assert_int_equal(n, N_IDS);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ids[i], want[i]);
    char *ls[] = {"thin_ls", "--no-headers", "-o", "DEV", meta, NULL};
    char *text = NULL, *err = NULL;
    assert_int_equal(tu_run(ls, NULL, &text, &err), 0);
    char *save = NULL;
    size_t k = 0;
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save), k++) {
        assert_true(k < n);
        assert_int_equal(strtoul(l, NULL, 10), ids[k]);
    }
    assert_int_equal(k, n);
    free(text);
    free(err);
    free(ids);
    /* No snapshot held: nothing to read there. */
    assert_int_equal(read_ids(true, &ids, &n, &e), -ENOENT);
    assert_null(ids);
}

/* With a snapshot held, its tree is read, not the live one (which the kernel may be changing):
 * the live superblock is pointed at a block that is no tree at all, and the held copy still
 * answers. */
static void test_held_snapshot_is_read(void **state)
{
    (void)state;
    if (!meta[0])
        skip();
    uint8_t sb[THIN_META_BLOCK_SIZE], copy[THIN_META_BLOCK_SIZE];
    read_block(0, sb);
    uint64_t last = get64(sb, 344) - 1; /* metadata_nr_blocks - 1: unused by thin_restore */
    memcpy(copy, sb, sizeof(copy));
    put64(copy, 8, last); /* its own block number */
    write_block(last, copy, THIN_META_SUPERBLOCK_CSUM_XOR);
    put64(sb, 56, last); /* held_root */
    put64(sb, 328, 0);   /* the live details root: the superblock itself, not a node */
    write_block(0, sb, THIN_META_SUPERBLOCK_CSUM_XOR);
    uint32_t *ids = NULL;
    size_t n = 0;
    struct err e = {0};
    assert_int_equal(read_ids(true, &ids, &n, &e), 0);
    assert_int_equal(n, N_IDS);
    assert_int_equal(ids[N_IDS - 1], THIN_ID_MAX);
    free(ids);
    assert_int_equal(read_ids(false, &ids, &n, &e), -EBADMSG);
    assert_true(tu_contains(e.msg, "bad checksum"));
}

/* Damage anywhere is refused, never read as a shorter or different list. */
static void test_damage_refused(void **state)
{
    (void)state;
    if (!meta[0])
        skip();
    uint8_t sb[THIN_META_BLOCK_SIZE], node[THIN_META_BLOCK_SIZE];
    uint64_t root = read_sb_and_root(sb, node);
    uint32_t *ids = NULL;
    size_t n = 0;
    struct err e = {0};
    /* A key changed without its checksum (a torn or stale block). */
    node[32] ^= 1;
    int fd = open(meta, O_WRONLY | O_CLOEXEC);
    assert_int_equal(pwrite(fd, node, sizeof(node), (off_t)(root * THIN_META_BLOCK_SIZE)),
                     (ssize_t)sizeof(node));
    close(fd);
    assert_int_equal(read_ids(false, &ids, &n, &e), -EBADMSG);
    assert_null(ids);
    assert_true(tu_contains(e.msg, "bad checksum"));
    /* A node that checks out but says it is another block (a block of another tree). */
    node[32] ^= 1;
    put64(node, 8, root + 1);
    write_block(root, node, THIN_META_NODE_CSUM_XOR);
    err_clear(&e);
    assert_int_equal(read_ids(false, &ids, &n, &e), -EBADMSG);
    assert_true(tu_contains(e.msg, "says it is block"));
    /* A node whose entries overrun the block. */
    put64(node, 8, root);
    uint32_t big = htole32(1000);
    memcpy(node + 20, &big, sizeof(big)); /* max_entries */
    write_block(root, node, THIN_META_NODE_CSUM_XOR);
    err_clear(&e);
    assert_int_equal(read_ids(false, &ids, &n, &e), -EBADMSG);
    assert_true(tu_contains(e.msg, "entries"));
    /* Not a thin pool's metadata at all. */
    sb[32] ^= 1; /* magic */
    write_block(0, sb, THIN_META_SUPERBLOCK_CSUM_XOR);
    err_clear(&e);
    assert_int_equal(read_ids(false, &ids, &n, &e), -EBADMSG);
    assert_true(tu_contains(e.msg, "not a thin pool superblock"));
}

/* A tree never reaches one node twice: an internal node whose children all name the same leaf
 * (every block checks out) is refused, not walked once per path; nor is a superblock that
 * claims more blocks than the kernel's largest metadata device. */
static void test_shared_node_and_huge_refused(void **state)
{
    (void)state;
    if (!meta[0])
        skip();
    uint8_t sb[THIN_META_BLOCK_SIZE], node[THIN_META_BLOCK_SIZE];
    uint64_t root = read_sb_and_root(sb, node);
    uint32_t flags, nr, max;
    memcpy(&flags, node + 4, 4), memcpy(&nr, node + 16, 4), memcpy(&max, node + 20, 4);
    assert_int_equal(le32toh(flags) & 1, 1); /* N_IDS needs several leaves: an internal root */
    assert_true(le32toh(nr) >= 2);
    size_t values = 32 + (size_t)le32toh(max) * 8;
    put64(node, values + 8, get64(node, values)); /* the second child is the first again */
    write_block(root, node, THIN_META_NODE_CSUM_XOR);
    uint32_t *ids = NULL;
    size_t n = 0;
    struct err e = {0};
    assert_int_equal(read_ids(false, &ids, &n, &e), -EBADMSG);
    assert_null(ids);
    assert_true(tu_contains(e.msg, "reaches a node twice"));
    put64(sb, 344, (uint64_t)1 << 40); /* metadata_nr_blocks */
    write_block(0, sb, THIN_META_SUPERBLOCK_CSUM_XOR);
    err_clear(&e);
    assert_int_equal(read_ids(false, &ids, &n, &e), -EBADMSG);
    assert_true(tu_contains(e.msg, "kernel's maximum"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksum_is_the_kernels),
        cmocka_unit_test_setup_teardown(test_same_ids_as_thin_ls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_snapshot_is_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_node_and_huge_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
