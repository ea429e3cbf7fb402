/*
 * outcome.c: what a finished run's outcome means. See outcome.h.
 */
#include "pipeline/outcome.h"

#include <errno.h>

int pipeline_run_errno(enum fsm_outcome outcome, enum err_kind kind)
{
    if (fsm_outcome_success(outcome))
        return 0;
    if (outcome == FSM_CANCELLED)
        return -ECANCELED;
    return err_kind_errno(kind);
}
