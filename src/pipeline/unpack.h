/*
 * unpack.h: starting the unpack machine (unpack.c): one run per chain id turns a fetched
 * layer blob into a committed, inactive thin device. The machine owns its request format.
 */
#pragma once

#include <stdint.h>

#include "fsm/fsm.h"
#include "util/err.h"

struct pipeline;

/* Register the machine (pipeline_open()). */
int pipeline_register_unpack(struct pipeline *p, struct err *e);

/* Start the unpack run of each chain of image_id bottom-up (or join the active one), chaining
 * them with run-after, as children of parent. *top gets the run of the top chain. device_bytes:
 * size of a new base layer device (0: the pipeline's default). */
int unpack_start_image(struct pipeline *p, int64_t image_id, const struct fsm_id *parent,
                       uint64_t device_bytes, struct fsm_id *top, struct err *e);
