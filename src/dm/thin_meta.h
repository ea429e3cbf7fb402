/*
 * thin_meta.h: the thin ids a pool's metadata holds, read in this process from the metadata
 * device (no thin_ls process).
 *
 * Why: "is every layer's device still in the pool?" is asked on every process-image of an
 * image already unpacked (a device deleted behind thinimg's back is then recreated), and by
 * each unpack run's check. Starting thin_ls for it cost ~144 ms under emulation (a C++ program
 * and its libraries), most of a new activation; the answer is one small btree of the metadata
 * (the device details tree, dev id -> details), a few 4 KiB blocks.
 *
 * What is read (the kernel's on-disk format, drivers/md/dm-thin-metadata.c and
 * persistent-data/dm-btree-internal.h): the superblock at block 0, then, when a metadata
 * snapshot is held, the superblock copy at its held_root (a stable view: its blocks are not
 * reused while the snapshot is held), then every node of the details tree from that copy's
 * device_details_root. Every block is checked as the kernel checks it (crc32c checksum, its own
 * block number, magic, node flags and sizes); anything unexpected is refused with -EBADMSG and
 * the caller asks thin_ls instead. So the reader only ever answers "present" for an id found
 * in a checked leaf of the snapshot: the same answer thin_ls gives from the same snapshot.
 */
#ifndef THINIMG_DM_THIN_META_H
#define THINIMG_DM_THIN_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* The thin pool's metadata block size (the kernel's THIN_METADATA_BLOCK_SIZE). */
#define THIN_META_BLOCK_SIZE 4096
/* The checksum constants of the two kinds of block read (the kernel's SUPERBLOCK_CSUM_XOR and
 * BTREE_CSUM_XOR); both kinds keep their own block number at THIN_META_BLOCKNR_OFFSET. */
#define THIN_META_SUPERBLOCK_CSUM_XOR 160774
#define THIN_META_NODE_CSUM_XOR       121107
#define THIN_META_BLOCKNR_OFFSET      8

/* The ids of the details tree in the metadata read from fd (a metadata device or a copy of
 * one, e.g. written by thin_restore). held: read the tree of the held metadata snapshot (the
 * superblock's held_root; -ENOENT when none is held), else of the superblock itself (only safe
 * on metadata no kernel is changing). *ids malloc'd, sorted ascending, *n of them.
 * -EBADMSG with e when a block does not check out, -errno when a read fails. */
int thin_meta_read_ids(int fd, bool held, uint32_t **ids, size_t *n, struct err *e);

/* The kernel's metadata checksum (dm_bm_checksum): crc32c seeded with ~0, no final inversion,
 * xor'ed with a per-block-kind constant. Exposed for the tests. */
uint32_t thin_meta_checksum(const void *data, size_t len, uint32_t xor_with);

#endif
