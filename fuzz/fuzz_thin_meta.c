/*
 * fuzz_thin_meta.c: libFuzzer target for the in-process reader of a thin pool's metadata
 * (dm/thin_meta.h), which parses blocks of the pool's metadata device.
 *
 * Every block the reader accepts must carry the kernel's crc32c and its own block number, so
 * random bytes would stop at the first check. The harness therefore makes them right: the
 * input is a small metadata device written compactly, and each block gets its checksum and
 * block number filled in before the reader sees it; what is left to the fuzzer is everything
 * the reader decides on (magic, version, sizes, the held root, node flags, entry counts, keys,
 * child pointers: loops, shared nodes, deep trees, ids out of order or out of range).
 *
 * Input: an 8-byte little-endian word (bit i: block i is a superblock, so its checksum is the
 * superblock's; block 0 always is; bit 63: read the held snapshot's tree), then up to
 * FUZZ_BLOCKS chunks of FUZZ_CHUNK bytes, each the start of one 4 KiB block (the rest zero;
 * a superblock's fields and a node of up to ~30 entries fit in a chunk).
 *
 * On success the ids must be strictly ascending and within the kernel's 24 bits.
 */
#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dm/thin.h"
#include "dm/thin_meta.h"

#define FUZZ_BLOCKS 32
#define FUZZ_CHUNK  1024
#define HELD_BIT    63

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void seal(uint8_t *block, uint64_t nr, bool superblock)
{
    uint64_t le = htole64(nr);
    memcpy(block + THIN_META_BLOCKNR_OFFSET, &le, sizeof(le));
    uint32_t csum = htole32(
        thin_meta_checksum(block + 4, THIN_META_BLOCK_SIZE - 4,
                           superblock ? THIN_META_SUPERBLOCK_CSUM_XOR : THIN_META_NODE_CSUM_XOR));
    memcpy(block, &csum, sizeof(csum));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t kinds = 0;
    if (size < sizeof(kinds))
        return 0;
    memcpy(&kinds, data, sizeof(kinds));
    kinds = le64toh(kinds);
    data += sizeof(kinds);
    size -= sizeof(kinds);
    size_t nblocks = (size + FUZZ_CHUNK - 1) / FUZZ_CHUNK;
    if (nblocks == 0 || nblocks > FUZZ_BLOCKS)
        return 0;
    uint8_t *dev = calloc(nblocks, THIN_META_BLOCK_SIZE);
    if (!dev)
        return 0;
    for (size_t i = 0; i < nblocks; i++) {
        uint8_t *b = dev + i * THIN_META_BLOCK_SIZE;
        size_t off = i * FUZZ_CHUNK, len = size - off < FUZZ_CHUNK ? size - off : FUZZ_CHUNK;
        memcpy(b, data + off, len);
        seal(b, i, i == 0 || (kinds >> i & 1)); /* nblocks <= 32: the held bit is never a block */
    }
    int fd = memfd_create("thin-meta", MFD_CLOEXEC);
    if (fd < 0 ||
        write(fd, dev, nblocks * THIN_META_BLOCK_SIZE) != (ssize_t)(nblocks * THIN_META_BLOCK_SIZE))
        abort();
    free(dev);
    uint32_t *ids = NULL;
    size_t n = 0;
    struct err e = {0};
    if (thin_meta_read_ids(fd, kinds >> HELD_BIT & 1, &ids, &n, &e) == 0) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] > THIN_ID_MAX || (i && ids[i] <= ids[i - 1]))
                abort();
    } else if (n != 0 || ids != NULL) {
        abort(); /* a refusal hands back nothing */
    }
    free(ids);
    close(fd);
    return 0;
}
