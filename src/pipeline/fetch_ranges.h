/*
 * fetch_ranges.h: the layout of TMP.ranges, the record beside a download split into parallel
 * ranges (docs/sources.md, "Parallel ranges"). Declared here, not in fetch.c, so that the
 * tests that model a reboot (tests/s3/test_byteonce_s3.c) read and change the very layout the
 * fetch machine writes.
 *
 * The file is a head, then one record per range, in order. Each range has two counts of the
 * bytes of [start, end) that are in the temp file:
 *   done    rewritten after every write of the range: in the boot that wrote them (the head's
 *           boot id) the bytes are in the page cache whatever happened to the process;
 *   synced  rewritten only after an fdatasync of the temp file that covered those bytes, and
 *           followed by an fdatasync of TMP.ranges itself: what survives a reboot.
 * A download resumed in the head's boot resumes each range at `done`; in another boot at
 * `synced`. synced <= end - start always; done may lag it on disk (it is the later write).
 */
#pragma once

#include <stdint.h>

#include "source/source.h"
#include "util/fsutil.h"

#define FETCH_RANGES_MAGIC "thinimg-ranges-3"

struct fetch_ranges_head {
    char magic[sizeof(FETCH_RANGES_MAGIC)];
    uint64_t size;                  /* the object's */
    uint32_t n;                     /* ranges that follow */
    char etag[SOURCE_ETAG_MAX + 1]; /* the version (a strong ETag) */
    char boot[BOOT_ID_MAX];         /* the boot the `done` counts were written in */
};

struct fetch_range_rec {
    uint64_t start, end;
    uint64_t done;   /* bytes of the range in the file (page cache) */
    uint64_t synced; /* bytes of the range on disk for sure */
};
