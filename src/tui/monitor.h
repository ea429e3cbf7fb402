/*
 * monitor.h: `thinimg monitor`: a terminal dashboard (ncursesw) of one state directory.
 *
 * Two views, keys shown at the bottom of the screen:
 *   dashboard   pool usage, active runs (state, phase, bytes, attempt), recently finished runs
 *               (outcome, error), activations, and the daemon's recent log lines
 *   source      the images under a source location (families and objects, like `thinimg
 *               ls`); Enter starts process-image of the selected one in the daemon
 * Data comes from the daemon when one runs, else read-only from the database (tui/feed.h); the
 * top line says which, and in read-only mode that nothing can be started.
 *
 * Terminals: works over SSH and in tmux; --inline stays on the normal screen (no alternate
 * screen: the last frame stays in the scrollback when it quits); KEY_RESIZE redraws for the new
 * size; the display refreshes every refresh_ms and at once on a key.
 */
#pragma once

#include <stdbool.h>

#include "source/source.h"
#include "util/config.h"
#include "util/err.h"

#define MONITOR_DEFAULT_REFRESH_MS 1000
#define MONITOR_MIN_REFRESH_MS     100

struct monitor_opts {
    const struct config *cfg;
    const struct source_options *source; /* for the source browser (may be NULL) */
    const char *browse;                  /* location the source view lists; NULL: cfg->source */
    bool inline_mode;
    int refresh_ms; /* 0: MONITOR_DEFAULT_REFRESH_MS */
};

/* Run until the user quits. 0, or a negative errno with e when the terminal cannot be used. */
int monitor_run(const struct monitor_opts *o, struct err *e);
