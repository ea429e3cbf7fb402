/*
 * progress.h: progress display of the pipeline's runs for long CLI commands.
 *
 * On a terminal: a block of lines, one per active run (machine, what, phase, bytes, rate),
 * redrawn in place a few times a second and erased at the end. Otherwise: one plain line per
 * event worth knowing (a transition done, a retry, a run finished), suitable for logs.
 * With quiet, nothing is shown.
 *
 * The display reads the manager's live state (fsm_list_active) and observes its events; it
 * never blocks a run thread for more than a formatted write. When the runs execute in a
 * daemon, the caller hands it the daemon's list of runs instead (progress_update).
 */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "fsm/fsm.h"

struct progress;

/* m: the manager whose runs are shown; NULL when the runs are elsewhere (a daemon) and the
 * caller feeds them with progress_update(). */
int progress_start(struct fsm_manager *m, FILE *out, bool tty, bool quiet, struct progress **out_p);
/* Redraw (tty) now; call every PROGRESS_TICK_MS while waiting. */
void progress_tick(struct progress *p);
/* The same from a list of unfinished runs read elsewhere (GET /v1/runs); off a terminal, a
 * line for each transition that completed or failed since the previous list. */
void progress_update(struct progress *p, const struct fsm_run_record *v, size_t n);
/* Erase the block (tty) and stop observing. */
void progress_stop(struct progress *p);

#define PROGRESS_TICK_MS 250

/* A short human label for a run's resource: the last two path components of a location,
 * "chain 1a2b3c4d5e6f" for a chain id, the name otherwise. */
void progress_label(const char *type, const char *resource, char *out, size_t n);
