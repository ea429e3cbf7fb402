/*
 * outcome.h: what a finished run's outcome means, for every caller that reports it.
 */
#pragma once

#include "fsm/fsm.h"
#include "util/err.h"

/* What a finished run's outcome and stored error kind mean, as a negative errno (0 for
 * success, -ECANCELED for a cancelled run, err_kind_errno(kind) otherwise). The CLI turns it
 * into its exit code, the API into its status, so both say the same; neither reads the
 * message's words. */
int pipeline_run_errno(enum fsm_outcome outcome, enum err_kind kind);
