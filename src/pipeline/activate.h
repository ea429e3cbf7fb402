/*
 * activate.h: starting the activate machine (activate.c): a named, writable thin snapshot of
 * an image's top layer, activated. The machine owns its request format.
 */
#pragma once

#include <stdint.h>

#include "fsm/fsm.h"
#include "util/err.h"

struct pipeline;

/* Register the machine (pipeline_open()). */
int pipeline_register_activate(struct pipeline *p, struct err *e);

/* Start the activate run of name: a snapshot of chain_id, the top layer of image_id. parent:
 * the run that waits for it (NULL: none). 0 with *run, -EEXIST with *run when a run for name
 * is active already (joined), or another negative errno. */
int activate_start(struct pipeline *p, const char *name, int64_t image_id, const char *chain_id,
                   const struct fsm_id *parent, struct fsm_id *run);

/* Start (or join) an activation of an already processed image (name or ref). name NULL: the
 * image's default activation name. */
int pipeline_start_activate(struct pipeline *p, const char *image, const char *name,
                            struct fsm_id *run, struct err *e);
/* The same with where the overlay backend mounts the activation (an absolute directory; NULL:
 * its own under the state directory). -EINVAL for dm-thin, whose activation is a device. */
int pipeline_start_activate_at(struct pipeline *p, const char *image, const char *name,
                               const char *mount_at, struct fsm_id *run, struct err *e);

/* Overlay backend: start an activate run for every activation recorded active whose mount is
 * not up (after a reboot), without waiting; *started counts them. The daemon calls it when it
 * starts. dm-thin: nothing (0). */
int pipeline_remount(struct pipeline *p, int *started);
