/*
 * machine.c: the helpers every pipeline machine uses (machine.h): the operation guard for a
 * transition, waiting for and finding runs, looking up an image, the quick retry policy.
 */
#include "pipeline/machine.h"

#include <errno.h>
#include <string.h>

const struct fsm_retry_policy machine_policy_quick = {.max_attempts = 5,
                                                      .initial_backoff_ms = 200,
                                                      .max_backoff_ms = 5000,
                                                      .multiplier = 2.0,
                                                      .jitter = 0.3,
                                                      .attempt_timeout_ms = 0,
                                                      .on_exhausted = FSM_ABORT};

bool pipeline_guard_enter(struct pipeline *p, struct fsm_run *run, const char *what,
                          struct fsm_result *refused)
{
    struct err e = {0};
    int r = guard_enter(p->guard, what, fsm_run_cancel_fd(run), &e);
    if (r == 0)
        return true;
    /* Refused (an unhealthy host or pool): the run ends with the reason, as that kind; the
     * operator acts and runs it again. */
    *refused = r == -ECANCELED ? fsm_retry("cancelled while waiting for the operation guard")
                               : fsm_with_kind(fsm_abort("%s", err_str(&e)), err_kind_of(r));
    return false;
}

int pipeline_wait_child(struct fsm_run *run, const struct fsm_id *child, enum fsm_outcome *outcome,
                        enum err_kind *kind, char **error)
{
    struct fsm_manager *m = fsm_run_manager(run);
    for (;;) {
        if (fsm_run_cancelled(run) != FSM_CANCEL_NONE)
            return -ECANCELED;
        int r = fsm_wait_kind(m, child, PIPELINE_WAIT_SLICE_MS, outcome, kind, error);
        if (r != -ETIMEDOUT)
            return r;
    }
}

int pipeline_image_lookup(struct pipeline *p, const char *image, const char *what_to_do,
                          struct image_rec *out, struct err *e)
{
    int r = imagedb_image_find(p->db, image, out);
    if (r == -EEXIST)
        return err_set(e, -EINVAL, "image name '%s' is ambiguous; give its ref (list-images)",
                       image);
    if (r == -ENOENT)
        return err_set(e, r, "no image '%s' (%s)", image, what_to_do);
    if (r < 0)
        return err_set(e, r, "cannot read image %s: %s", image, strerror(-r));
    return 0;
}

/* ---- finding runs ------------------------------------------------------------------------- */

struct find_ctx {
    struct fsm_id found;
    bool want_unfinished;
};

static int find_first(const struct fsm_run_record *r, void *ud)
{
    struct find_ctx *c = ud;
    if (c->want_unfinished && r->status == FSM_RUN_FINISHED)
        return 0;
    c->found = r->version;
    return 1;
}

int pipeline_find_run(struct pipeline *p, const char *type, const char *resource_id,
                      const struct fsm_id *parent, bool unfinished, struct fsm_id *out)
{
    struct fsm_list_filter f = {.include_finished = !unfinished,
                                .type = type,
                                .resource_id = resource_id,
                                .parent = parent};
    struct find_ctx c = {.want_unfinished = unfinished};
    int r = fsm_db_list_runs(p->db, &f, find_first, &c);
    if (r < 0)
        return r;
    if (fsm_id_is_zero(&c.found))
        return -ENOENT;
    *out = c.found;
    return 0;
}

int machine_register(struct pipeline *p, const char *name, const char *type, const char *action,
                     const struct fsm_transition_def *t, size_t n, fsm_finalizer_fn fin,
                     struct fsm_machine **out, struct err *e)
{
    struct fsm_machine_def def = {.type = type,
                                  .action = action,
                                  .transitions = t,
                                  .n_transitions = n,
                                  .end_state = "done",
                                  .finalizers = &fin,
                                  .n_finalizers = 1,
                                  .ud = p};
    int r = fsm_register(p->mgr, &def, out);
    return r < 0 ? err_set(e, r, "cannot register the %s machine", name) : 0;
}
