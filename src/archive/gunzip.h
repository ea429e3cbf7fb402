/*
 * gunzip.h: the uncompressed stream of a gzip blob, block by block, inflated by ISA-L
 * (libisal's isal_inflate: 2-3x zlib's inflate on x86 with AVX2, which is where a .tar.gz
 * layer's validate, diff id and apply spend their CPU). libarchive still reads the tar: a
 * tar reader is opened over gunzip_archive_read (gunzip_archive_open) instead of libarchive's
 * zlib-based gzip filter.
 *
 * What it accepts is what libarchive's gzip filter accepts, with the checks it skips added:
 *   - members one after another (gzip's concatenation): their outputs are one stream;
 *   - a member header: magic 1f 8b, method 8 (deflate), no reserved flag bits, then the
 *     optional FEXTRA (length + bytes), FNAME and FCOMMENT (NUL-terminated, any length,
 *     skipped as they stream by: nothing is buffered) and FHCRC, which is checked (the low
 *     16 bits of the CRC-32 of the header bytes before it; libarchive skips it);
 *   - the trailer: CRC-32 of the member's output and ISIZE (its length mod 2^32), both
 *     checked (libarchive reads and drops them);
 *   - after a member, whatever does not start a complete member header (zeros, garbage,
 *     a header cut short by the end of the blob) ends the stream and is ignored, as
 *     libarchive's filter does; the first member's header must be complete and valid.
 * Errors: -EBADMSG with a message starting "truncated gzip input" (the blob ends inside a
 * member: header of the first member, deflate data, trailer) or "gzip data is corrupt"
 * (bad deflate data, CRC-32, ISIZE, header CRC, reserved flags, method); the source's
 * negative errno when it fails; -ENOMEM.
 *
 * Memory: one ISA-L inflate state (85 KiB) and an output buffer (GUNZIP_OUT_BYTES); the
 * input is the source's own buffer. Not thread-safe (one per reader).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/cleanup.h"

#include <archive.h>

/* Output block: large enough that the tar reader and the hashes above it work in few, large
 * pieces; small enough to stay in L2 between the inflate and its readers. */
#define GUNZIP_OUT_BYTES (256u << 10)

/* Where compressed bytes come from: > 0 bytes at *buf (valid until the next call), 0 at the
 * end of the blob, a negative errno on failure. */
typedef ssize_t (*gunzip_source_fn)(void *ud, const void **buf);

struct gunzip;

/* A reader of the gzip stream that src gives. */
int gunzip_new(struct gunzip **out, gunzip_source_fn src, void *ud);
/* The same, over fd from its current offset, read in blocks of read_bytes. */
int gunzip_new_fd(struct gunzip **out, int fd, size_t read_bytes);
void gunzip_free(struct gunzip *g);
DEFINE_POINTER_CLEANUP(struct gunzip, gunzip_free)

/* The next piece of the uncompressed stream: > 0 bytes at *buf (valid until the next call), 0
 * at its end, a negative errno (gunzip_error says what). An error is final; the bytes
 * inflated before it are returned first (the error then comes with the next call). */
ssize_t gunzip_read(struct gunzip *g, const void **buf);

/* Compressed bytes consumed (headers, deflate data, trailers; not what was read ahead) and
 * uncompressed bytes produced so far: a compression ratio limit compares the two. */
uint64_t gunzip_bytes_in(const struct gunzip *g);
uint64_t gunzip_bytes_out(const struct gunzip *g);
/* The last error's message ("" before any). */
const char *gunzip_error(const struct gunzip *g);
/* Members whose trailer was checked so far. */
uint64_t gunzip_members(const struct gunzip *g);

/* libarchive's read callback over a gunzip (client data g): open a tar reader with
 * gunzip_archive_open(a, g). g must outlive a (free a first). */
la_ssize_t gunzip_archive_read(struct archive *a, void *g, const void **buf);
int gunzip_archive_open(struct archive *a, struct gunzip *g);
/* A reader a over the gzip file fd (from its current offset), which a then owns: the
 * gunzip is freed and fd closed when a is (also when this fails). ARCHIVE_OK or an error. */
int gunzip_archive_open_fd(struct archive *a, int fd, size_t read_bytes);
