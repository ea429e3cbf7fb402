/*
 * diskio.h: foreign I/O on a queue's disk (the pool's, the blob store's), the bytes the disk
 * moved that thinimg did not.
 *
 * I/O pressure says that tasks waited for a disk, not whose work the disk was doing: an
 * unpack's own writes stall tasks as much as a competing writer's, so pressure alone cannot
 * tell "our queue is busy" from "someone else needs the disk". The block layer's counters can:
 * /proc/diskstats has the sectors each disk read and wrote, /proc/<pid>/io the bytes a process
 * caused to be read from or written to storage (read_bytes, write_bytes; /proc/self/io takes in
 * reaped children such as mkfs, and the children still running are read one by one). What the
 * disk moved beyond what thinimg's own bytes explain is foreign.
 *
 * thinimg's bytes reach the disk amplified and late: ext4's journal and metadata in the layer
 * device, dm-thin's metadata, the backing file system's own journal under a loop device; and
 * write_bytes counts a buffered write when the page is dirtied, while the disk sees it at
 * writeback (at the latest at the unpack's syncfs, tens of seconds later on a slow disk). So
 * each own byte is a credit for DISKIO_AMPLIFY disk bytes during the next DISKIO_CREDIT_TICKS
 * intervals (diskio_meter), used oldest first; disk bytes beyond the credit are foreign. A
 * writer that competes with the unpacks spends the credit within an interval or two and shows.
 *
 * The disk is found from the pool's data or the store's directory (diskio_find): a loop device's
 * backing file, a file's file system, a dm or md device's first underlying device and a partition's
 * whole disk, down to a block device with a /proc/diskstats line. A pool on tmpfs (no block device)
 * has none.
 */
#pragma once

#include <stdint.h>

/* Each byte thinimg reads or writes may move up to this many bytes on the disk: the data once,
 * ext4's journal copy of its metadata (a tree of small files is mostly metadata), dm-thin's
 * metadata and the backing file system's journal. Generous on purpose: credit that is not
 * used costs nothing while thinimg is alone; a competing writer moves far more. */
#define DISKIO_AMPLIFY 3.0
/* Intervals (LOADCTL_INTERVAL_MS each, 60 s) an own byte's credit lasts: dirty pages are
 * written back after 30 s (vm.dirty_expire_centisecs) or at the unpack's syncfs. */
#define DISKIO_CREDIT_TICKS 30
/* /proc/diskstats of a host with many loop and dm devices stays well under this. */
#define DISKIO_DISKSTATS_MAX (1024 * 1024)

struct diskio_disk {
    unsigned major, minor;
    char name[32]; /* "vdb", for messages */
};

/* The whole disk under path (a file, a directory or a block device node), resolved through
 * <sys_root>/dev/block (sys_root NULL = /sys). -ENODEV when no block device is found (tmpfs,
 * an anonymous device), -ELOOP past a stack of 8. */
int diskio_find(const char *sys_root, const char *path, struct diskio_disk *out);
/* The same from a block device's numbers. */
int diskio_find_dev(const char *sys_root, unsigned major, unsigned minor, struct diskio_disk *out);

/* Bytes the disk has read and written since boot, from <proc_root>/diskstats (NULL = /proc).
 * -ENOENT when the disk has no line. */
int diskio_disk_bytes(const char *proc_root, const struct diskio_disk *d, uint64_t *bytes);

/* Bytes this process (with its reaped children) and its running children have read from and
 * written to storage, from <proc_root>/self/io and each child's io (NULL = /proc). */
int diskio_own_bytes(const char *proc_root, uint64_t *bytes);

/* The credit ledger: what thinimg's recent own bytes may still explain on the disk. */
struct diskio_meter {
    double credit[DISKIO_CREDIT_TICKS]; /* per interval, oldest at head */
    int head;
};

/* One interval in which the disk moved disk bytes and thinimg own: adds own's credit (the
 * oldest interval's expires), spends it on disk oldest first, returns the foreign bytes. */
uint64_t diskio_meter_step(struct diskio_meter *m, uint64_t disk, uint64_t own);
