/*
 * thin_meta.c: the thin ids of a pool's metadata, read from the metadata device in this
 * process; see thin_meta.h for why and for what is checked.
 */
#include "dm/thin_meta.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dm/thin.h"
#include "util/cleanup.h"

/* The superblock (struct thin_disk_superblock): byte offsets of the fields read. */
#define SB_CSUM           0
#define SB_BLOCKNR        THIN_META_BLOCKNR_OFFSET
#define SB_MAGIC          32
#define SB_VERSION        40
#define SB_HELD_ROOT      56
#define SB_DETAILS_ROOT   328
#define SB_META_BLOCK_SZ  340 /* in 512-byte sectors */
#define SB_META_NR_BLOCKS 344
#define SB_MAGIC_VALUE    27022010ULL /* THIN_SUPERBLOCK_MAGIC */
#define SB_VERSION_MIN    1           /* THIN_MIN_SUPPORTED_VERSION .. THIN_MAX_... */
#define SB_VERSION_MAX    2
#define SB_CSUM_XOR       THIN_META_SUPERBLOCK_CSUM_XOR
#define SECTOR_BYTES      512

/* A btree node (struct node_header, then keys[max_entries], then values[max_entries]). */
#define NODE_CSUM       0
#define NODE_FLAGS      4
#define NODE_BLOCKNR    THIN_META_BLOCKNR_OFFSET
#define NODE_NR         16
#define NODE_MAX        20
#define NODE_VALUE_SIZE 24
#define NODE_HEADER     32
#define NODE_INTERNAL   1u     /* INTERNAL_NODE */
#define NODE_LEAF       2u     /* LEAF_NODE */
#define NODE_CSUM_XOR   THIN_META_NODE_CSUM_XOR
/* An internal node's values are block numbers; a details leaf's are struct
 * disk_device_details (mapped_blocks, transaction_id, creation_time, snapshotted_time). */
#define INTERNAL_VALUE_SIZE 8
#define DETAILS_VALUE_SIZE  24
/* A tree this deep would hold far more than THIN_ID_MAX ids (an internal node has up to 254
 * children): deeper means a loop or a damaged tree. */
#define TREE_DEPTH_MAX 8
/* The kernel's largest metadata device (THIN_METADATA_MAX_SECTORS, 255 * 2^14 * 8 sectors of
 * 512 bytes, about 15.9 GiB) in 4 KiB blocks: a superblock claiming more is damaged, and the
 * bound keeps the bitmap of visited blocks under 512 KiB. */
#define META_BLOCKS_MAX ((uint64_t)255 * (1 << 14) * 8 * SECTOR_BYTES / THIN_META_BLOCK_SIZE)

/* crc32c (Castagnoli) as the kernel's dm_bm_checksum computes it: reflected polynomial, seed ~0,
 * no final inversion. */
#define CRC32C_POLY_REFLECTED 0x82F63B78u
#define CRC32C_SEED           0xFFFFFFFFu

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t thin_meta_checksum(const void *data, size_t len, uint32_t xor_with)
{
    pthread_once(&crc_once, crc_table_init);
    const uint8_t *p = data;
    uint32_t crc = CRC32C_SEED;
    for (size_t i = 0; i < len; i++)
        crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ xor_with;
}

static uint32_t get32(const uint8_t *b, size_t off)
{
    uint32_t v;
    memcpy(&v, b + off, sizeof(v));
    return le32toh(v);
}

static uint64_t get64(const uint8_t *b, size_t off)
{
    uint64_t v;
    memcpy(&v, b + off, sizeof(v));
    return le64toh(v);
}

/* Reads block blk into buf and checks its checksum and own block number. */
static int read_block(int fd, uint64_t blk, uint8_t *buf, uint32_t csum_xor, size_t blocknr_off,
                      const char *what, struct err *e)
{
    ssize_t got = pread(fd, buf, THIN_META_BLOCK_SIZE, (off_t)(blk * THIN_META_BLOCK_SIZE));
    if (got < 0)
        return err_set(e, -errno, "cannot read %s at metadata block %llu: %s", what,
                       (unsigned long long)blk, strerror(errno));
    if (got != THIN_META_BLOCK_SIZE)
        return err_set(e, -EBADMSG, "metadata block %llu (%s) is past the device's end",
                       (unsigned long long)blk, what);
    if (thin_meta_checksum(buf + 4, THIN_META_BLOCK_SIZE - 4, csum_xor) != get32(buf, 0))
        return err_set(e, -EBADMSG, "%s at metadata block %llu: bad checksum", what,
                       (unsigned long long)blk);
    if (get64(buf, blocknr_off) != blk)
        return err_set(e, -EBADMSG, "%s at metadata block %llu says it is block %llu", what,
                       (unsigned long long)blk, (unsigned long long)get64(buf, blocknr_off));
    return 0;
}

static int read_superblock(int fd, uint64_t blk, uint8_t *buf, struct err *e)
{
    int r = read_block(fd, blk, buf, SB_CSUM_XOR, SB_BLOCKNR, "the superblock", e);
    if (r < 0)
        return r;
    uint32_t version = get32(buf, SB_VERSION);
    if (get64(buf, SB_MAGIC) != SB_MAGIC_VALUE || version < SB_VERSION_MIN ||
        version > SB_VERSION_MAX ||
        get32(buf, SB_META_BLOCK_SZ) != THIN_META_BLOCK_SIZE / SECTOR_BYTES)
        return err_set(e, -EBADMSG,
                       "metadata block %llu is not a thin pool superblock this reader knows "
                       "(version %u)",
                       (unsigned long long)blk, version);
    return 0;
}

struct walk {
    int fd;
    uint64_t nr_blocks; /* the metadata device's size in blocks */
    uint8_t *seen;      /* a bit per block: a node reached twice is a loop or a shared node,
                           which a tree never has (without it, nodes that all point at one
                           child would be walked 254^depth times) */
    uint8_t *buf;       /* THIN_META_BLOCK_SIZE * TREE_DEPTH_MAX, one block per level */
    uint32_t *ids;
    size_t n, cap;
};

static int add_id(struct walk *w, uint64_t key, struct err *e)
{
    if (key > THIN_ID_MAX)
        return err_set(e, -EBADMSG, "the device details tree holds id %llu (above %u)",
                       (unsigned long long)key, THIN_ID_MAX);
    if (w->n && key <= w->ids[w->n - 1])
        return err_set(e, -EBADMSG, "the device details tree's ids are not in order");
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        uint32_t *v = realloc(w->ids, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        w->ids = v;
        w->cap = cap;
    }
    w->ids[w->n++] = (uint32_t)key;
    return 0;
}

/* Every id below the node at blk, in key order (depth: its level, 0 the root). */
static int walk_node(struct walk *w, uint64_t blk, int depth, struct err *e)
{
    if (depth >= TREE_DEPTH_MAX || blk >= w->nr_blocks || (w->seen[blk / 8] & (1u << blk % 8)))
        return err_set(e, -EBADMSG,
                       "the device details tree is deeper than %d, loops or reaches a node twice "
                       "(block %llu)",
                       TREE_DEPTH_MAX, (unsigned long long)blk);
    w->seen[blk / 8] |= (uint8_t)(1u << blk % 8);
    uint8_t *b = w->buf + (size_t)depth * THIN_META_BLOCK_SIZE;
    int r = read_block(w->fd, blk, b, NODE_CSUM_XOR, NODE_BLOCKNR, "a details tree node", e);
    if (r < 0)
        return r;
    uint32_t flags = get32(b, NODE_FLAGS), nr = get32(b, NODE_NR), max = get32(b, NODE_MAX);
    uint32_t vsize = get32(b, NODE_VALUE_SIZE);
    bool leaf = flags & NODE_LEAF, internal = flags & NODE_INTERNAL;
    if (leaf == internal || vsize != (leaf ? DETAILS_VALUE_SIZE : INTERNAL_VALUE_SIZE) ||
        nr > max || NODE_HEADER + (uint64_t)max * (sizeof(uint64_t) + vsize) > THIN_META_BLOCK_SIZE)
        return err_set(e, -EBADMSG,
                       "details tree node at metadata block %llu: flags %u, %u of %u entries of "
                       "%u bytes",
                       (unsigned long long)blk, flags, nr, max, vsize);
    for (uint32_t i = 0; i < nr; i++) {
        uint64_t key = get64(b, NODE_HEADER + (size_t)i * sizeof(uint64_t));
        if (leaf) {
            r = add_id(w, key, e);
        } else {
            size_t values = NODE_HEADER + (size_t)max * sizeof(uint64_t);
            uint64_t child = get64(b, values + (size_t)i * INTERNAL_VALUE_SIZE);
            r = walk_node(w, child, depth + 1, e);
            /* the child's block overwrote nothing of this level: b is still this node */
        }
        if (r < 0)
            return r;
    }
    return 0;
}

int thin_meta_read_ids(int fd, bool held, uint32_t **ids, size_t *n, struct err *e)
{
    *ids = NULL;
    *n = 0;
    /* Aligned for O_DIRECT: the pool's metadata device is read past the page cache, which the
     * kernel's own writes (dm-bufio, straight to the device) do not update. */
    _cleanup_free_ uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, THIN_META_BLOCK_SIZE,
                       (size_t)THIN_META_BLOCK_SIZE * TREE_DEPTH_MAX) != 0)
        return -ENOMEM;
    int r = read_superblock(fd, 0, buf, e);
    if (r < 0)
        return r;
    uint64_t nr_blocks = get64(buf, SB_META_NR_BLOCKS);
    if (nr_blocks > META_BLOCKS_MAX)
        return err_set(e, -EBADMSG,
                       "the superblock says the metadata has %llu blocks, more than the "
                       "kernel's maximum %llu",
                       (unsigned long long)nr_blocks, (unsigned long long)META_BLOCKS_MAX);
    if (held) {
        uint64_t root = get64(buf, SB_HELD_ROOT);
        if (root == 0)
            return err_set(e, -ENOENT, "the pool's metadata holds no snapshot");
        if (root >= nr_blocks)
            return err_set(e, -EBADMSG,
                           "the held metadata root %llu is past the device's %llu "
                           "blocks",
                           (unsigned long long)root, (unsigned long long)nr_blocks);
        r = read_superblock(fd, root, buf, e);
        if (r < 0)
            return r;
    }
    _cleanup_free_ uint8_t *seen = calloc(nr_blocks / 8 + 1, 1);
    if (!seen)
        return -ENOMEM;
    struct walk w = {.fd = fd, .nr_blocks = nr_blocks, .seen = seen, .buf = buf};
    r = walk_node(&w, get64(buf, SB_DETAILS_ROOT), 0, e);
    if (r < 0) {
        free(w.ids);
        return r;
    }
    *ids = w.ids;
    *n = w.n;
    return 0;
}
