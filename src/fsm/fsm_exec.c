/*
 * fsm_exec.c: one run's thread: the transition loop, retries and the end step, plus the
 * fsm_run_* accessors that transitions and finalizers call.
 *
 * The loop, for the transition at next_index:
 *
 *   attempt  -> the transition function runs, outside any transaction
 *   decide   -> under the manager lock, the result is combined with what happened meanwhile:
 *               a user cancel wins, then shutdown, then the attempt's timeout, then the result
 *   persist  -> ONE transaction per outcome: OK = checkpoint (callbacks + COMPLETE + next_index),
 *               RETRY = ERROR event + attempt count, halt = HALT event + outcome (+ callbacks
 *               for HANDOFF)
 *
 * then the end step: the finalizers run, and FINISH commits with their callbacks. Each durable
 * point is a place where a crash leaves a state resume understands: next_index says which
 * transition runs next, attempt how many attempts failed, and a non-NULL outcome on an
 * unfinished run that only the end step is left.
 *
 * Shutdown is checked at every boundary: a run that sees it returns without writing anything
 * more than the checkpoint of a transition that already succeeded, so it resumes later.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "fsm/fsm_internal.h"
#include "util/cleanup.h"
#include "util/fault.h"
#include "util/log.h"
#include "util/timeutil.h"

/* ---- events ------------------------------------------------------------------------------ */

void fsm_emit(struct fsm_run *r, enum fsm_event_type type, enum fsm_outcome outcome,
              const char *error, int64_t duration_ms)
{
    struct fsm_manager *m = r->m;
    pthread_rwlock_rdlock(&m->observer_lock);
    pthread_mutex_lock(&m->lock);
    fsm_observer_fn fn = m->observer;
    void *ud = m->observer_ud;
    pthread_mutex_unlock(&m->lock);
    if (fn) {
        struct fsm_run_info info;
        fsm_run_info(r, &info);
        struct fsm_event_info ev = {.type = type,
                                    .run = &info,
                                    .outcome = outcome,
                                    .error = error ? error : "",
                                    .duration_ms = duration_ms};
        fn(&ev, ud);
    }
    pthread_rwlock_unlock(&m->observer_lock);
}

/* ---- cancellation ------------------------------------------------------------------------ */

void fsm_cancel_signal(struct fsm_run *r)
{
    uint64_t one = 1;
    ssize_t n = write(r->cancel_fd, &one, sizeof(one));
    (void)n; /* EAGAIN: the counter is already non-zero, i.e. readable */
}

static void cancel_fd_reset(struct fsm_run *r)
{
    uint64_t v;
    ssize_t n = read(r->cancel_fd, &v, sizeof(v));
    (void)n;
}

/* Sleeps up to ms, waking early when the cancel fd becomes readable. */
static int sleep_cancellable(struct fsm_run *r, uint64_t ms)
{
    int64_t deadline = mono_ms() + (int64_t)ms;
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = r->cancel_fd, .events = POLLIN};
        int n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        if (n > 0)
            return -ECANCELED;
        if (n < 0 && errno != EINTR)
            return neg_errno();
    }
}

/* ---- accessors (fsm.h) ------------------------------------------------------------------- */

void fsm_run_info(const struct fsm_run *run, struct fsm_run_info *out)
{
    memset(out, 0, sizeof(*out));
    out->version = run->version;
    out->parent = run->parent;
    out->type = run->machine->def.type;
    out->action = run->machine->def.action;
    out->resource_id = run->resource_id;
    out->queue = run->queue ? run->queue->name : NULL;
    out->state = run->state ? run->state : "";
    out->attempt = run->attempt;
    out->is_restart = run->is_restart;
}

const void *fsm_run_request(const struct fsm_run *run, size_t *len)
{
    if (len)
        *len = run->request_len;
    return run->request;
}

const void *fsm_run_response(const struct fsm_run *run, size_t *len)
{
    if (len)
        *len = run->response_len;
    return run->response;
}

struct fsm_manager *fsm_run_manager(const struct fsm_run *run)
{
    return run->m;
}

int fsm_run_set_response(struct fsm_run *run, const void *data, size_t len)
{
    if (len && !data)
        return -EINVAL;
    void *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, data, len);
    }
    free(run->new_response);
    run->new_response = copy;
    run->new_response_len = len;
    run->response_set = true;
    return 0;
}

int fsm_run_on_commit(struct fsm_run *run, fsm_commit_fn fn, void *ud, void (*free_ud)(void *))
{
    if (!run || !fn)
        return -EINVAL;
    if (run->n_cbs == run->cap_cbs) {
        size_t cap = run->cap_cbs ? run->cap_cbs * 2 : 4;
        struct fsm_commit_cb *p = realloc(run->cbs, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        run->cbs = p;
        run->cap_cbs = cap;
    }
    run->cbs[run->n_cbs++] = (struct fsm_commit_cb){fn, ud, free_ud};
    return 0;
}

enum fsm_cancel_reason fsm_run_cancelled(const struct fsm_run *run)
{
    struct fsm_manager *m = run->m;
    pthread_mutex_lock(&m->lock);
    enum fsm_cancel_reason c = run->user_cancelled ? FSM_CANCEL_USER
                               : m->shutting_down  ? FSM_CANCEL_SHUTDOWN
                               : run->timed_out    ? FSM_CANCEL_TIMEOUT
                                                   : FSM_CANCEL_NONE;
    pthread_mutex_unlock(&m->lock);
    return c;
}

int fsm_run_cancel_fd(const struct fsm_run *run)
{
    return run->cancel_fd;
}

int fsm_run_sleep_ms(struct fsm_run *run, uint64_t ms)
{
    int r = sleep_cancellable(run, ms);
    return r == -ECANCELED ? -ECANCELED : 0;
}

int64_t fsm_run_deadline_ms(const struct fsm_run *run)
{
    pthread_mutex_lock(&run->m->lock);
    int64_t d = run->deadline_mono;
    pthread_mutex_unlock(&run->m->lock);
    return d;
}

enum err_kind fsm_run_predecessor_kind(const struct fsm_run *run)
{
    return run->pred_rc == 0 ? run->pred_kind : ERR_KIND_OTHER;
}

int fsm_run_predecessor(const struct fsm_run *run, enum fsm_outcome *outcome, const char **error)
{
    if (fsm_id_is_zero(&run->run_after) || run->pred_rc < 0)
        return -ENOENT;
    if (outcome)
        *outcome = run->pred_outcome;
    if (error)
        *error = run->pred_error ? run->pred_error : "";
    return 0;
}

void fsm_run_set_progress(struct fsm_run *run, const char *phase, uint64_t done, uint64_t total)
{
    char *p = phase ? strdup(phase) : NULL;
    pthread_mutex_lock(&run->m->lock);
    /* Progress adds to the queue's work counter: the step since the last report in the same
     * phase; in a new phase (or when the counter went back) the count starts from zero. */
    if (run->queue) {
        bool same = run->phase && p && !strcmp(run->phase, p) && done >= run->progress_done;
        run->queue->work_done += same ? done - run->progress_done : done;
    }
    free(run->phase);
    run->phase = p;
    run->progress_done = done;
    run->progress_total = total;
    pthread_mutex_unlock(&run->m->lock);
}

/* ---- step helpers ------------------------------------------------------------------------ */

static struct fsmdb_ref ref_of(struct fsm_run *r)
{
    return (struct fsmdb_ref){&r->version, r->rowid, &r->next_seq};
}

static void drop_step(struct fsm_run *r)
{
    for (size_t i = 0; i < r->n_cbs; i++)
        if (r->cbs[i].free_ud)
            r->cbs[i].free_ud(r->cbs[i].ud);
    r->n_cbs = 0;
    free(r->new_response);
    r->new_response = NULL;
    r->new_response_len = 0;
    r->response_set = false;
}

/* The step committed: its response becomes the checkpointed one. */
static void keep_step(struct fsm_run *r)
{
    if (r->response_set) {
        free(r->response);
        r->response = TAKE_PTR(r->new_response);
        r->response_len = r->new_response_len;
        r->new_response_len = 0;
        r->response_set = false;
    }
    drop_step(r);
}

static void set_live(struct fsm_run *r, const char *state, uint32_t attempt, int64_t deadline)
{
    struct fsm_manager *m = r->m;
    pthread_mutex_lock(&m->lock);
    r->state = state;
    r->live_attempt = attempt;
    r->deadline_mono = deadline;
    r->timed_out = false;
    if (deadline)
        pthread_cond_signal(&m->timer_cond); /* the timer thread sleeps until the next one */
    pthread_mutex_unlock(&m->lock);
    log_ctx_pop();
    log_ctx_push("state", state);
}

static void set_last_error(struct fsm_run *r, const char *msg, enum err_kind kind)
{
    char *s = strdup(msg ? msg : "");
    pthread_mutex_lock(&r->m->lock);
    free(r->last_error);
    r->last_error = s;
    r->last_error_kind = kind;
    pthread_mutex_unlock(&r->m->lock);
}

static uint64_t rng_next(struct fsm_run *r)
{
    /* xorshift64*: jitter only needs to spread retries, not to be unpredictable. */
    uint64_t x = r->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Delay before the attempt after `failed` (0-based) failed: initial * multiplier^failed,
 * capped at max_backoff_ms, then +-jitter. */
static uint64_t backoff_ms(struct fsm_run *r, const struct fsm_retry_policy *p, uint32_t failed)
{
    double d = p->initial_backoff_ms;
    for (uint32_t i = 0; i < failed && d < p->max_backoff_ms; i++)
        d *= p->multiplier;
    if (p->max_backoff_ms && d > p->max_backoff_ms)
        d = p->max_backoff_ms;
    if (p->jitter > 0) {
        double u = (double)(rng_next(r) >> 11) / (double)(1ULL << 53); /* [0,1) */
        d *= 1.0 + p->jitter * (2.0 * u - 1.0);
    }
    return d > 0 ? (uint64_t)llround(d) : 0;
}

/* Records the run's decided outcome in memory (m->lock held). */
static void decide_locked(struct fsm_run *r, enum fsm_outcome o, enum err_kind kind,
                          const char *error, const char *state)
{
    r->halted = true;
    r->outcome = o;
    r->error_kind = o == FSM_CANCELLED ? ERR_KIND_INTERRUPTED : fsm_outcome_success(o) ? 0 : kind;
    free(r->error);
    r->error = strdup(error ? error : "");
    free(r->error_state);
    r->error_state = state ? strdup(state) : NULL;
}

/* ---- the transition loop ----------------------------------------------------------------- */

enum step_next {
    NEXT_CONTINUE, /* the checkpoint committed: next transition */
    NEXT_RETRY,    /* the attempt failed: back off and try again */
    NEXT_END,      /* the outcome is decided: end step */
    NEXT_STOP,     /* shutdown: return, the run resumes later */
};

/* What the engine does with an attempt's result, decided under the lock. */
enum verdict {
    V_CHECKPOINT,        /* OK */
    V_CHECKPOINT_CANCEL, /* OK but the run was cancelled meanwhile: keep the work, then cancel */
    V_CHECKPOINT_STOP,   /* OK during shutdown: keep the work, then stop */
    V_HANDOFF,           /* HANDOFF: callbacks + HALT, then the end step */
    V_HANDOFF_STOP,      /* HANDOFF during shutdown: the same, then stop */
    V_HALT,              /* ABORT / UNRECOVERABLE / CANCELLED: HALT, then the end step */
    V_CANCEL,            /* cancelled by the user: HALT(CANCELLED), then the end step */
    V_RETRY,             /* RETRY or timed out */
    V_STOP,              /* shutdown: nothing recorded */
};

static enum step_next halt(struct fsm_run *r, const char *state, bool with_step)
{
    struct fsm_manager *m = r->m;
    pthread_mutex_lock(&m->lock);
    enum fsm_outcome o = r->outcome;
    enum err_kind kind = r->error_kind;
    char *error = strdup(r->error ? r->error : "");
    pthread_mutex_unlock(&m->lock);
    char msg[512];
    struct fsmdb_ref ref = ref_of(r);
    int rc = fsmdb_halt(m->db, &ref, with_step ? r->cbs : NULL, with_step ? r->n_cbs : 0, state,
                        r->attempt, o, error, kind, r->new_response, r->new_response_len,
                        with_step && r->response_set, msg, sizeof(msg));
    if (rc < 0 && with_step) {
        /* The handoff's own writes failed: that attempt counts as RETRY, as for OK. */
        pthread_mutex_lock(&m->lock);
        r->halted = false;
        pthread_mutex_unlock(&m->lock);
        drop_step(r);
        free(error);
        set_last_error(r, msg, ERR_KIND_OTHER);
        return NEXT_RETRY;
    }
    if (rc < 0)
        /* The decision stands; FINISH records it. A crash before that re-runs the attempt. */
        log_error("cannot record the run's outcome", "outcome=%s error=%s", fsm_outcome_name(o),
                  msg);
    if (with_step)
        keep_step(r);
    else
        drop_step(r);
    log_write(fsm_outcome_success(o) ? LOG_LVL_INFO : LOG_LVL_WARN, "run halted",
              "outcome=%s error=%s", fsm_outcome_name(o), error);
    fsm_emit(r, FSM_EV_HALT, o, error, 0);
    free(error);
    return NEXT_END;
}

static enum step_next checkpoint(struct fsm_run *r, const char *state, int64_t duration_ms,
                                 char *msg, size_t msg_len)
{
    uint32_t next = r->next_index + 1;
    const char *next_state =
        next < r->n_transitions ? r->transitions[next] : r->machine->def.end_state;
    struct fsmdb_ref ref = ref_of(r);
    int rc = fsmdb_checkpoint(r->m->db, &ref, r->cbs, r->n_cbs, state, r->attempt, next, next_state,
                              r->new_response, r->new_response_len, r->response_set, msg, msg_len);
    if (rc < 0) {
        drop_step(r);
        return NEXT_RETRY;
    }
    keep_step(r);
    r->next_index = next;
    r->attempt = 0;
    log_debug("transition completed", "duration_ms=%lld", (long long)duration_ms);
    fsm_emit(r, FSM_EV_COMPLETE, FSM_OK, NULL, duration_ms);
    return NEXT_CONTINUE;
}

/* Cancel requested by the user: decide CANCELLED (if nothing else was decided) and record. */
static enum step_next cancel_now(struct fsm_run *r, const char *state)
{
    struct fsm_manager *m = r->m;
    pthread_mutex_lock(&m->lock);
    decide_locked(r, FSM_CANCELLED, ERR_KIND_INTERRUPTED,
                  r->cancel_cause ? r->cancel_cause : "cancelled", state);
    pthread_mutex_unlock(&m->lock);
    return halt(r, state, false);
}

/* A failed attempt: record it, then either give up (on_exhausted) or back off. */
static enum step_next failed(struct fsm_run *r, const char *state, const struct fsm_retry_policy *p,
                             const char *msg, enum err_kind kind, int64_t duration_ms)
{
    struct fsm_manager *m = r->m;
    uint32_t failed_attempt = r->attempt;
    set_last_error(r, msg, kind);
    fsm_emit(r, FSM_EV_ERROR, FSM_RETRY, msg, duration_ms);
    struct fsmdb_ref ref = ref_of(r);
    int rc = fsmdb_record_error(m->db, &ref, state, failed_attempt, msg, kind);
    if (rc < 0)
        log_error("cannot record a failed attempt", "attempt=%u error=%s", failed_attempt,
                  strerror(-rc));
    r->attempt = failed_attempt + 1;
    bool exhausted = p->max_attempts && r->attempt >= p->max_attempts;
    if (exhausted) {
        pthread_mutex_lock(&m->lock);
        bool user = r->user_cancelled;
        if (!user)
            decide_locked(r, p->on_exhausted, kind, msg, state);
        pthread_mutex_unlock(&m->lock);
        if (user)
            return cancel_now(r, state);
        log_warn("transition failed, attempts exhausted", "attempts=%u error=%s", r->attempt, msg);
        return halt(r, state, false);
    }
    uint64_t delay = backoff_ms(r, p, failed_attempt);
    log_warn("transition failed, retrying", "attempt=%u delay_ms=%llu error=%s", failed_attempt,
             (unsigned long long)delay, msg);
    set_live(r, state, r->attempt, 0);
    if (sleep_cancellable(r, delay) == -ECANCELED) {
        pthread_mutex_lock(&m->lock);
        bool user = r->user_cancelled, down = m->shutting_down;
        pthread_mutex_unlock(&m->lock);
        if (user)
            return cancel_now(r, state);
        if (down)
            return NEXT_STOP;
    }
    return NEXT_RETRY;
}

static int transition_index(const struct fsm_machine *x, const char *name)
{
    for (size_t i = 0; i < x->def.n_transitions; i++)
        if (!strcmp(x->transitions[i].name, name))
            return (int)i;
    return -1;
}

static enum step_next run_one_attempt(struct fsm_run *r)
{
    struct fsm_manager *m = r->m;
    const char *state = r->transitions[r->next_index];

    pthread_mutex_lock(&m->lock);
    bool user = r->user_cancelled, down = m->shutting_down;
    pthread_mutex_unlock(&m->lock);
    if (user)
        return cancel_now(r, NULL);
    if (down)
        return NEXT_STOP;

    int ti = transition_index(r->machine, state);
    if (ti < 0) {
        /* The run was started with a transition list this build no longer has. Running the
         * rest blindly could skip work; stop and let the operator decide. */
        char msg[512];
        snprintf(msg, sizeof(msg),
                 "transition %s is not part of machine %s/%s any more (the run was started by"
                 " another version of thinimg); start a new run",
                 state, r->machine->def.type, r->machine->def.action);
        pthread_mutex_lock(&m->lock);
        decide_locked(r, FSM_UNRECOVERABLE, ERR_KIND_OTHER, msg, state);
        pthread_mutex_unlock(&m->lock);
        return halt(r, state, false);
    }
    const struct fsm_transition_def *t = &r->machine->transitions[ti];
    const struct fsm_retry_policy *p = &r->machine->policies[ti];
    if (p->max_attempts && r->attempt >= p->max_attempts) {
        /* Already exhausted: the last failure was recorded but the process died before the
         * HALT (they are two transactions), or the policy now allows fewer attempts. */
        pthread_mutex_lock(&m->lock);
        decide_locked(r, p->on_exhausted, r->last_error_kind,
                      r->last_error ? r->last_error : "attempts exhausted", state);
        pthread_mutex_unlock(&m->lock);
        log_warn("transition attempts exhausted before this start", "attempts=%u", r->attempt);
        return halt(r, state, false);
    }

    int64_t t0 = mono_ms();
    set_live(r, state, r->attempt, p->attempt_timeout_ms ? t0 + p->attempt_timeout_ms : 0);
    drop_step(r);
    log_debug("transition attempt", "attempt=%u", r->attempt);
    /* Crash-test hooks (util/fault.h): "<type>.<transition>.start" before the work and
     * "<type>.<transition>.end" after it, before its checkpoint is committed. */
    char fault[160];
    snprintf(fault, sizeof(fault), "%s.%s.start", r->machine->def.type, state);
    fault_point(fault);
    fsm_run_set_progress(r, NULL, 0, 0); /* a phase belongs to the attempt that set it */
    struct fsm_result res = t->fn(r, r->machine->def.ud);
    if (res.outcome == FSM_OK || res.outcome == FSM_HANDOFF) {
        snprintf(fault, sizeof(fault), "%s.%s.end", r->machine->def.type, state);
        fault_point(fault);
    }
    int64_t dur = mono_ms() - t0;
    res.message[sizeof(res.message) - 1] = '\0';

    enum verdict v;
    char msg[sizeof(res.message) + 128];
    snprintf(msg, sizeof(msg), "%s", res.message);
    pthread_mutex_lock(&m->lock);
    r->deadline_mono = 0;
    user = r->user_cancelled;
    down = m->shutting_down;
    bool timed_out = r->timed_out;
    if (user)
        v = (res.outcome == FSM_OK || res.outcome == FSM_HANDOFF) ? V_CHECKPOINT_CANCEL : V_CANCEL;
    else if (down)
        v = res.outcome == FSM_OK        ? V_CHECKPOINT_STOP
            : res.outcome == FSM_HANDOFF ? V_HANDOFF_STOP
                                         : V_STOP;
    else if (timed_out)
        v = V_RETRY;
    else
        switch (res.outcome) {
        case FSM_OK:
            v = V_CHECKPOINT;
            break;
        case FSM_HANDOFF:
            v = V_HANDOFF;
            break;
        case FSM_ABORT:
        case FSM_UNRECOVERABLE:
        case FSM_CANCELLED:
            v = V_HALT;
            break;
        case FSM_RETRY:
        default:
            /* Another attempt cannot change a deterministic failure (a 404, a rejected blob, a
             * bad request): the run ends now instead of backing off for minutes. */
            if (err_kind_deterministic(res.kind)) {
                res.outcome = FSM_ABORT;
                v = V_HALT;
            } else {
                v = V_RETRY;
            }
            break;
        }
    if (timed_out && !user && !down) {
        /* The timeout belonged to this attempt only. */
        r->timed_out = false;
        cancel_fd_reset(r);
        snprintf(msg, sizeof(msg), "attempt timed out after %u ms%s%s", p->attempt_timeout_ms,
                 res.message[0] ? ": " : "", res.message);
    }
    if (v == V_HANDOFF || v == V_HANDOFF_STOP || v == V_HALT)
        decide_locked(r, res.outcome, res.kind, res.message, state);
    pthread_mutex_unlock(&m->lock);

    switch (v) {
    case V_CHECKPOINT: {
        enum step_next n = checkpoint(r, state, dur, msg, sizeof(msg));
        return n == NEXT_RETRY ? failed(r, state, p, msg, ERR_KIND_OTHER, dur) : n;
    }
    case V_CHECKPOINT_CANCEL:
        if (checkpoint(r, state, dur, msg, sizeof(msg)) == NEXT_RETRY)
            log_warn("cancelled run: the last transition's checkpoint failed", "error=%s", msg);
        return cancel_now(r, NULL);
    case V_CHECKPOINT_STOP:
        if (checkpoint(r, state, dur, msg, sizeof(msg)) == NEXT_RETRY)
            log_warn("checkpoint failed during shutdown; the transition runs again on resume",
                     "error=%s", msg);
        return NEXT_STOP;
    case V_HANDOFF:
    case V_HANDOFF_STOP: {
        enum step_next n = halt(r, state, true);
        if (n == NEXT_RETRY) {
            pthread_mutex_lock(&m->lock);
            snprintf(msg, sizeof(msg), "%s", r->last_error ? r->last_error : "handoff failed");
            pthread_mutex_unlock(&m->lock);
            return v == V_HANDOFF_STOP ? NEXT_STOP
                                       : failed(r, state, p, msg, ERR_KIND_OTHER, dur);
        }
        return v == V_HANDOFF_STOP ? NEXT_STOP : n;
    }
    case V_HALT:
        return halt(r, state, false);
    case V_CANCEL:
        return cancel_now(r, state);
    case V_STOP:
        drop_step(r);
        return NEXT_STOP;
    case V_RETRY:
    default:
        drop_step(r);
        if (!msg[0])
            snprintf(msg, sizeof(msg), "transition %s failed", state);
        return failed(r, state, p, msg, timed_out ? ERR_KIND_TRANSIENT : res.kind, dur);
    }
}

/* ---- the end step ------------------------------------------------------------------------ */

/* Waits up to ms or until shutdown. Returns true on shutdown. */
static bool wait_unless_shutdown(struct fsm_manager *m, int64_t ms)
{
    struct timespec ts;
    int64_t deadline = mono_ms() + ms;
    ts.tv_sec = deadline / 1000;
    ts.tv_nsec = (deadline % 1000) * 1000000L;
    pthread_mutex_lock(&m->lock);
    while (!m->shutting_down && mono_ms() < deadline)
        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
    bool down = m->shutting_down;
    pthread_mutex_unlock(&m->lock);
    return down;
}

static void end_step(struct fsm_run *r)
{
    struct fsm_manager *m = r->m;
    const struct fsm_machine_def *def = &r->machine->def;

    pthread_mutex_lock(&m->lock);
    if (m->shutting_down) {
        /* The outcome is recorded (or all transitions are): the end step runs on resume. */
        pthread_mutex_unlock(&m->lock);
        return;
    }
    if (!r->halted)
        decide_locked(r, FSM_OK, ERR_KIND_OTHER, "", NULL);
    r->in_end_step = true;
    enum fsm_outcome o = r->outcome;
    enum err_kind kind = r->error_kind;
    char *error = strdup(r->error ? r->error : "");
    char *error_state = r->error_state ? strdup(r->error_state) : NULL;
    pthread_mutex_unlock(&m->lock);
    r->attempt = 0;

    uint64_t delay = FSM_END_RETRY_INITIAL_MS;
    for (;;) {
        set_live(r, def->end_state, r->attempt, 0);
        drop_step(r);
        for (size_t i = 0; i < def->n_finalizers; i++)
            def->finalizers[i](r, o, error ? error : "", def->ud);
        char msg[512];
        struct fsmdb_ref ref = ref_of(r);
        int rc = fsmdb_finish(m->db, &ref, r->cbs, r->n_cbs, def->end_state, o, error ? error : "",
                              kind, error_state, r->new_response, r->new_response_len, r->response_set,
                              msg, sizeof(msg));
        if (rc >= 0) {
            keep_step(r);
            pthread_mutex_lock(&m->lock);
            r->finished = true;
            pthread_cond_broadcast(&m->cond);
            pthread_mutex_unlock(&m->lock);
            int64_t dur = mono_ms() - r->started_mono;
            log_write(fsm_outcome_success(o) ? LOG_LVL_INFO : LOG_LVL_WARN, "run finished",
                      "outcome=%s error=%s", fsm_outcome_name(o), error ? error : "");
            fsm_emit(r, FSM_EV_FINISH, o, error, dur);
            break;
        }
        drop_step(r);
        r->attempt++;
        set_last_error(r, msg, ERR_KIND_OTHER);
        log_error("end step failed; finalizers run again", "attempt=%u delay_ms=%llu error=%s",
                  r->attempt, (unsigned long long)delay, msg);
        if (wait_unless_shutdown(m, (int64_t)delay))
            break; /* resumes later, end step again */
        delay = delay * 2 > FSM_END_RETRY_MAX_MS ? FSM_END_RETRY_MAX_MS : delay * 2;
    }
    free(error);
    free(error_state);
}

/* ---- the thread -------------------------------------------------------------------------- */

static void load_predecessor(struct fsm_run *r)
{
    r->pred_rc = -ENOENT;
    if (fsm_id_is_zero(&r->run_after))
        return;
    struct fsm_run_record rec;
    if (fsm_db_get_run(r->m->db, &r->run_after, &rec) < 0)
        return;
    if (rec.status == FSM_RUN_FINISHED) {
        r->pred_rc = 0;
        r->pred_outcome = rec.outcome;
        r->pred_kind = rec.error_kind;
        r->pred_error = TAKE_PTR(rec.error);
    }
    fsm_run_record_free(&rec);
}

void fsm_run_thread(struct fsm_run *r)
{
    struct fsm_manager *m = r->m;
    const struct fsm_machine_def *def = &r->machine->def;
    char machine[256];
    snprintf(machine, sizeof(machine), "%s/%s", def->type, def->action);
    log_ctx_clear();
    log_ctx_push("run", r->version.s);
    log_ctx_push("machine", machine);
    log_ctx_push("resource", r->resource_id);
    log_ctx_push("state", "");

    r->started_mono = mono_ms();
    if (getrandom(&r->rng, sizeof(r->rng), 0) != (ssize_t)sizeof(r->rng) || r->rng == 0)
        r->rng = (uint64_t)r->started_mono * 0x9E3779B97F4A7C15ULL + 1;
    load_predecessor(r);

    pthread_mutex_lock(&m->lock);
    bool to_end = r->halted || r->user_cancelled || r->next_index >= r->n_transitions;
    pthread_mutex_unlock(&m->lock);
    const char *state = to_end ? def->end_state : r->transitions[r->next_index];
    set_live(r, state, r->attempt, 0);
    struct fsmdb_ref ref = ref_of(r);
    int rc = fsmdb_mark_running(m->db, &ref, state, r->attempt, r->is_restart);
    if (rc < 0)
        log_warn("cannot mark the run running", "error=%s", strerror(-rc));
    if (r->is_restart) {
        log_info("run resumed", "next_index=%u attempt=%u", r->next_index, r->attempt);
        fsm_emit(r, FSM_EV_RESUME, FSM_OK, NULL, 0);
    } else {
        log_debug("run running");
    }

    enum step_next n = r->halted ? NEXT_END : NEXT_CONTINUE;
    while (n == NEXT_CONTINUE || n == NEXT_RETRY) {
        if (r->next_index >= r->n_transitions)
            n = NEXT_END;
        else
            n = run_one_attempt(r); /* checks cancel and shutdown first */
    }
    if (n == NEXT_END) {
        pthread_mutex_lock(&m->lock);
        bool cancel = r->user_cancelled && !r->halted;
        pthread_mutex_unlock(&m->lock);
        if (cancel) /* cancelled while pending, or after its last transition */
            cancel_now(r, NULL);
        end_step(r);
    } else {
        log_debug("run stopped for shutdown; it resumes on the next start");
    }
    drop_step(r);
    log_ctx_clear();
}
