/*
 * fsm_result.c: outcome names and the result constructors transitions return.
 */
#include <stdarg.h>
#include <stdio.h>

#include "fsm/fsm.h"

static struct fsm_result make(enum fsm_outcome o, const char *fmt, va_list ap)
{
    struct fsm_result r = {.outcome = o};
    if (fmt)
        vsnprintf(r.message, sizeof(r.message), fmt, ap);
    return r;
}

struct fsm_result fsm_ok(void)
{
    return (struct fsm_result){.outcome = FSM_OK};
}

#define RESULT_CTOR(name, outcome)                                                                 \
    struct fsm_result name(const char *fmt, ...)                                                   \
    {                                                                                              \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        struct fsm_result r = make(outcome, fmt, ap);                                              \
        va_end(ap);                                                                                \
        return r;                                                                                  \
    }

RESULT_CTOR(fsm_handoff, FSM_HANDOFF)
RESULT_CTOR(fsm_retry, FSM_RETRY)
RESULT_CTOR(fsm_abort, FSM_ABORT)
RESULT_CTOR(fsm_unrecoverable, FSM_UNRECOVERABLE)

struct fsm_result fsm_fail(int code, const char *fmt, ...)
{
    enum err_kind k = err_kind_of(code);
    va_list ap;
    va_start(ap, fmt);
    struct fsm_result r = make(err_kind_deterministic(k) ? FSM_ABORT : FSM_RETRY, fmt, ap);
    va_end(ap);
    r.kind = k;
    return r;
}

struct fsm_result fsm_with_kind(struct fsm_result r, enum err_kind kind)
{
    r.kind = kind;
    return r;
}

const char *fsm_outcome_name(enum fsm_outcome o)
{
    switch (o) {
    case FSM_OK:
        return "ok";
    case FSM_RETRY:
        return "retry";
    case FSM_ABORT:
        return "abort";
    case FSM_UNRECOVERABLE:
        return "unrecoverable";
    case FSM_HANDOFF:
        return "handoff";
    case FSM_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

bool fsm_outcome_success(enum fsm_outcome o)
{
    return o == FSM_OK || o == FSM_HANDOFF;
}

const char *fsm_run_status_name(enum fsm_run_status s)
{
    switch (s) {
    case FSM_RUN_PENDING:
        return "pending";
    case FSM_RUN_RUNNING:
        return "running";
    case FSM_RUN_FINISHED:
        return "finished";
    }
    return "unknown";
}

const char *fsm_event_type_name(enum fsm_event_type t)
{
    switch (t) {
    case FSM_EV_START:
        return "start";
    case FSM_EV_ERROR:
        return "error";
    case FSM_EV_COMPLETE:
        return "complete";
    case FSM_EV_HALT:
        return "halt";
    case FSM_EV_FINISH:
        return "finish";
    case FSM_EV_RESUME:
        return "resume";
    }
    return "unknown";
}
