/*
 * loadview.h: the daemon's queue sizing and idle orphan collection as text, for `thinimg
 * status` and the monitor (one wording in both places).
 *
 * Inputs are the admin API's replies as they come: GET /v1/queues ({"queues": [...]}) and
 * GET /v1/gc ({"auto_gc_orphans": {...}}); a missing or malformed field prints as "?" rather
 * than failing. Output is NUL-terminated and cut to the buffer.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* One queue's sizing: "sized to the load" or "pinned". */
const char *loadview_queue_mode(const json_t *queue);

/* One queue's signals: "I/O some 3.0% full 0.0%, memory full 0.0%; 2 running, 1 waiting;
 * 12.0 MiB/s" ("no PSI" in place of the pressures when the kernel has none; ", foreign I/O
 * 31.0 MiB/s on vdb" after them where the pool's disk is measured). */
void loadview_queue_signals(const json_t *queue, char *out, size_t n);

/* Every queue on one line: "fetch 5 (sized to the load, max 8)  unpack 1 (sized to the load,
 * max 4; 2 -> 1: I/O pressure ...; I/O some 55.0% ...)". */
void loadview_queues_line(const json_t *queues_reply, char *out, size_t n);

/* The idle collection of orphans, with times relative to now (Unix ms): "3 waiting; the next
 * may go in 4m10s (its grace of 10m00s ends), next look in 2m30s", "none waiting; next look
 * in 1m00s", "refused: <why> (3 waiting)" or "off (--no-auto-gc-orphans)". */
void loadview_orphans_line(const json_t *gc_reply, int64_t now, char *out, size_t n);
