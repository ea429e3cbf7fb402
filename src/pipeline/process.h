/*
 * process.h: starting the process-image machine (process.c): the durable parent run that
 * takes one image ref through fetch, unpack and activate (docs/pipeline.md).
 */
#pragma once

#include <stdint.h>

#include "fsm/fsm.h"
#include "util/err.h"

struct pipeline;

/* Virtual size of a base layer's thin device (snapshots inherit it). Thin devices cost only
 * what is written, so this is the largest flattened image thinimg can hold, not pool space. */
#define PIPELINE_DEFAULT_DEVICE_BYTES (8ull << 30)
/* The smallest accepted: an ext4 with its 8 MiB journal and inode tables needs room before the
 * first file (--device-size, the API's device_size). */
#define PIPELINE_MIN_DEVICE_BYTES (64ull << 20)

/* Register the machine (pipeline_open()). */
int pipeline_register_process(struct pipeline *p, struct err *e);

/* Start (or join the active run of) process-image for ref. activation: the activation's name,
 * NULL for the image's default name. device_bytes: virtual size of new base layer devices, 0 for
 * the pipeline's default; it is recorded with the run, so a resumed run uses the same. */
int pipeline_start_process(struct pipeline *p, const char *ref, const char *activation,
                           uint64_t device_bytes, struct fsm_id *run, struct err *e);

/* REF as a full location: a location stays as it is, a relative key is joined to
 * default_source (-EINVAL with e when there is none). *out malloc'd. A client that forwards
 * a REF to a daemon expands it first with its own default source. */
int pipeline_ref_expand(const char *ref, const char *default_source, char **out, struct err *e);
