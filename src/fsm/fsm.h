/*
 * fsm.h: durable finite-state machines on SQLite (the engine every thinimg workflow runs on).
 *
 * This module knows nothing about images. A *machine* is an ordered list of named transitions
 * plus an end step with finalizers. A *run* is one execution of a machine for a resource id,
 * with an immutable request (opaque bytes, JSON by convention) and a response that each
 * transition may replace. Semantics follow Fly.io's superfly/fsm, without its bugs (docs/fsm.md lists
 * them):
 *
 * Durability (the contract the rest of thinimg relies on):
 *  - fsm_start() commits the run row and its START event before anything runs.
 *  - When a transition returns OK, the engine opens ONE short write transaction and in it:
 *    runs the commit callbacks the transition registered with fsm_run_on_commit() (the
 *    transition's own domain writes), stores the response, advances next_index, resets the
 *    attempt count and appends the COMPLETE event. Either all of that is committed or none of
 *    it is: there is no window where FSM state and domain state disagree. Slow work
 *    (downloads, mkfs, extraction) happens in the transition, outside any transaction.
 *  - HANDOFF commits the same way (callbacks, response) but records the outcome and a HALT
 *    event instead of advancing; ABORT / UNRECOVERABLE record outcome, error, error state and
 *    HALT, dropping the attempt's callbacks. An unfinished run with a recorded outcome only
 *    has its end step left.
 *  - A failed attempt (RETRY, timeout, failing commit callback) records an ERROR event with
 *    the attempt number and the new attempt count in one transaction, then backs off.
 *  - The end step runs the finalizers and commits FINISH (outcome, error, error state) the
 *    same way; finalizers may register commit callbacks too.
 *  - fsm_manager_resume() continues every unfinished run at its first uncompleted transition,
 *    through the run's own queue (queue limits hold after a crash), with is_restart set and the
 *    attempt count of that transition restored (the count of *recorded* failures: an attempt
 *    cut short by a crash or a shutdown is not a failure and runs again with the same number).
 *    Execution is at-least-once: a transition that was running when the process died runs
 *    again, so transitions must be idempotent. The end step of a run that died in its end step
 *    runs again too (finalizers are at-least-once).
 *
 * Outcomes of one attempt (enum fsm_outcome): OK continues; RETRY backs off and tries again
 * (exponential backoff with jitter, per-transition policy); ABORT and UNRECOVERABLE skip to the
 * end step as failures; HANDOFF skips to the end step as success ("already done"); CANCELLED
 * is what a cancelled run ends with. A transition that exhausts its attempts ends with its
 * policy's on_exhausted outcome and the last error message. A transition may return
 * fsm_result{FSM_CANCELLED} itself: it ends the run like ABORT, with outcome CANCELLED.
 *
 * Queues: FIFO, one concurrency limit each (changeable at run time). A queue limits whole runs,
 * not single transitions. Run-after composes with a queue: the run enters its queue only when
 * the predecessor has finished (whatever its outcome; the transition can read that outcome).
 * Delayed start composes with both. Cancel works on pending and running runs. Shutdown stops
 * scheduling, asks running transitions to stop (cause "shutdown"), waits up to a timeout and
 * leaves every unfinished run resumable: shutdown never records an outcome. (A transition
 * that still returns OK during shutdown gets its checkpoint; any other result is dropped and
 * the attempt runs again after the restart.)
 *
 * Threads: each running run executes on its own thread; callbacks may block. The manager
 * functions are thread-safe. The struct db is shared with the application (see store/db.h).
 * fsm_start() and fsm_cancel() commit their own transactions: call them from a transition or
 * from application code outside any transaction, never from a commit callback (-EDEADLK).
 * docs/fsm.md explains all of this for machine authors.
 *
 * Errors: functions return 0 or a negative errno (-ENOENT unknown run, -EEXIST duplicate
 * registration or already-running unqueued run, -EINVAL bad definition or unknown queue,
 * -ESHUTDOWN after shutdown, -ETIMEDOUT from fsm_wait, -EDEADLK from a commit callback).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "util/err.h"

/* ---- identifiers ------------------------------------------------------------------------ */

/* A run version: a ULID as 26 Crockford base32 characters, NUL-terminated. Sortable by
 * creation time, monotonic within a process. All-zero string "" means "none". */
#define FSM_ID_LEN 26
struct fsm_id {
    char s[FSM_ID_LEN + 1];
};

int fsm_id_new(struct fsm_id *out);
bool fsm_id_is_zero(const struct fsm_id *id);
int fsm_id_parse(const char *s, struct fsm_id *out); /* -EINVAL unless a valid ULID */

/* ---- outcomes -------------------------------------------------------------------------- */

enum fsm_outcome {
    FSM_OK = 0,
    FSM_RETRY,         /* plain error: back off and try again */
    FSM_ABORT,         /* stop, to the end step, as failed; never retried */
    FSM_UNRECOVERABLE, /* like abort, for errors the operator must act on */
    FSM_HANDOFF,       /* nothing (more) to do: to the end step, as succeeded */
    FSM_CANCELLED,     /* the run was cancelled */
};

const char *fsm_outcome_name(enum fsm_outcome o); /* "ok", "retry", "abort", ... */
/* True for outcomes a caller treats as success: OK and HANDOFF. */
bool fsm_outcome_success(enum fsm_outcome o);

/* What a transition returns. `message` is copied by the engine; use the constructors.
 * `kind` says what kind of failure it is (util/err.h): the engine stores it with the run, so
 * the front ends report the failure from the kind, never from the message's words, and it ends
 * the run at once, without another attempt, when the kind is one another attempt cannot change
 * (err_kind_deterministic(): invalid, not found, rejected, too large, permission): a RETRY of
 * such a kind becomes ABORT. ERR_KIND_OTHER (internal) when a constructor did not say. */
struct fsm_result {
    enum fsm_outcome outcome;
    enum err_kind kind;
    char message[1024];
};

struct fsm_result fsm_ok(void);
struct fsm_result fsm_handoff(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
struct fsm_result fsm_retry(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
struct fsm_result fsm_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
struct fsm_result fsm_unrecoverable(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A failure caused by the negative errno `code`: its kind is err_kind_of(code); the outcome is
 * ABORT for a deterministic kind and RETRY for any other. */
struct fsm_result fsm_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* r with its kind set (e.g. fsm_with_kind(fsm_abort("..."), ERR_KIND_UNHEALTHY)). */
struct fsm_result fsm_with_kind(struct fsm_result r, enum err_kind kind);

/* ---- the run, as seen by callbacks (valid only during the call) -------------------------- */

struct fsm_run;
struct fsm_manager;

struct fsm_run_info {
    struct fsm_id version;       /* the run */
    struct fsm_id parent;        /* zero when none */
    const char *type;            /* machine type, e.g. "fetch" */
    const char *action;          /* machine action, e.g. "fetch-blob" */
    const char *resource_id;     /* what the run is about, e.g. a digest */
    const char *queue;           /* NULL when unqueued */
    const char *state;           /* current transition name */
    uint32_t attempt;            /* 0-based attempt of the current transition */
    bool is_restart;             /* the run was resumed after a restart */
};

void fsm_run_info(const struct fsm_run *run, struct fsm_run_info *out);
const void *fsm_run_request(const struct fsm_run *run, size_t *len);  /* immutable */
const void *fsm_run_response(const struct fsm_run *run, size_t *len); /* last checkpointed */
struct fsm_manager *fsm_run_manager(const struct fsm_run *run);

/* Replace the response; it is stored with this transition's checkpoint (or the FINISH, from a
 * finalizer) and visible through fsm_run_response() once committed. */
int fsm_run_set_response(struct fsm_run *run, const void *data, size_t len);

/* Register a domain write to run inside this transition's checkpoint transaction (or the
 * FINISH transaction, from a finalizer). Callbacks run in registration order with the
 * database already in a transaction; a negative return rolls everything back and the attempt
 * counts as RETRY with that error. Registered callbacks are dropped if the attempt does not
 * succeed. `ud` is owned by the caller; `free_ud` (optional) is called when the callback has
 * run or been dropped. */
typedef int (*fsm_commit_fn)(struct db *db, void *ud);
int fsm_run_on_commit(struct fsm_run *run, fsm_commit_fn fn, void *ud, void (*free_ud)(void *));

/* Cancellation, cooperative. Values of fsm_run_cancelled() (USER wins over SHUTDOWN, which
 * wins over TIMEOUT): */
enum fsm_cancel_reason {
    FSM_CANCEL_NONE = 0,
    FSM_CANCEL_SHUTDOWN, /* graceful shutdown: stop, the run resumes next start */
    FSM_CANCEL_USER,     /* fsm_cancel(): the run ends CANCELLED */
    FSM_CANCEL_TIMEOUT,  /* this attempt's timeout expired: the attempt counts as RETRY */
};
enum fsm_cancel_reason fsm_run_cancelled(const struct fsm_run *run);
/* A file descriptor that becomes readable once the run is cancelled (for poll()). The engine
 * resets it after a timed-out attempt; after a user cancel or shutdown it stays readable. */
int fsm_run_cancel_fd(const struct fsm_run *run);
/* Sleep, waking early on cancel. Returns 0 after the full sleep, -ECANCELED when woken. */
int fsm_run_sleep_ms(struct fsm_run *run, uint64_t ms);
/* Deadline of the current attempt on CLOCK_MONOTONIC in ms (0 = none). */
int64_t fsm_run_deadline_ms(const struct fsm_run *run);

/* For a run started with run_after: the predecessor's final outcome and error ("" if none).
 * Returns -ENOENT when the run has no predecessor or it is unknown. */
int fsm_run_predecessor(const struct fsm_run *run, enum fsm_outcome *outcome, const char **error);
/* The kind of the predecessor's error; ERR_KIND_OTHER when none or no predecessor. */
enum err_kind fsm_run_predecessor_kind(const struct fsm_run *run);

/* In-memory progress, shown by introspection (not persisted). `phase` is copied. Cleared at the
 * start of every attempt, so a phase never outlives the transition that set it. */
void fsm_run_set_progress(struct fsm_run *run, const char *phase, uint64_t done, uint64_t total);

/* ---- machine definitions ----------------------------------------------------------------- */

struct fsm_retry_policy {
    uint32_t max_attempts;       /* 0 = unlimited */
    uint32_t initial_backoff_ms; /* first delay */
    uint32_t max_backoff_ms;     /* cap on the un-jittered delay */
    double multiplier;           /* growth per attempt */
    double jitter;               /* +-fraction of the delay, 0..1 */
    uint32_t attempt_timeout_ms; /* 0 = none; expiry cancels the attempt (FSM_CANCEL_TIMEOUT)
                                  * and the attempt counts as RETRY whatever it returns */
    enum fsm_outcome on_exhausted; /* FSM_ABORT or FSM_UNRECOVERABLE */
};

/* Default: 10 attempts, 100 ms growing x1.5 up to 5 s, +-50% jitter, no timeout, abort when
 * exhausted. A transition that must never give up sets max_attempts = 0 explicitly. */
#define FSM_RETRY_DEFAULT                                                                          \
    ((struct fsm_retry_policy){.max_attempts = 10,                                                 \
                               .initial_backoff_ms = 100,                                          \
                               .max_backoff_ms = 5000,                                             \
                               .multiplier = 1.5,                                                  \
                               .jitter = 0.5,                                                      \
                               .attempt_timeout_ms = 0,                                            \
                               .on_exhausted = FSM_ABORT})

typedef struct fsm_result (*fsm_transition_fn)(struct fsm_run *run, void *ud);
/* Called in the end step, after success or failure; outcome is the run's final outcome and
 * error its message ("" on success). May call fsm_run_on_commit(). */
typedef void (*fsm_finalizer_fn)(struct fsm_run *run, enum fsm_outcome outcome, const char *error,
                                 void *ud);

struct fsm_transition_def {
    const char *name;               /* unique within the machine, [a-z0-9-] */
    fsm_transition_fn fn;
    const struct fsm_retry_policy *policy; /* NULL = FSM_RETRY_DEFAULT */
};

struct fsm_machine_def {
    const char *type;   /* e.g. "fetch" */
    const char *action; /* e.g. "fetch-blob"; (type, action) is unique per manager */
    const struct fsm_transition_def *transitions;
    size_t n_transitions;
    const char *end_state; /* name of the end step, e.g. "done" */
    const fsm_finalizer_fn *finalizers;
    size_t n_finalizers;
    void *ud; /* passed to every transition and finalizer */
};

struct fsm_machine;

/* Copies the definition (names, arrays); register everything before fsm_manager_resume(). */
int fsm_register(struct fsm_manager *m, const struct fsm_machine_def *def,
                 struct fsm_machine **out);

/* ---- the manager ----------------------------------------------------------------------- */

struct fsm_queue_cfg {
    const char *name;
    int limit; /* >= 1 */
};

struct fsm_config {
    const struct fsm_queue_cfg *queues;
    size_t n_queues;
    uint32_t history_retention_days; /* finished runs older than this are pruned; 0 = keep */
    uint32_t history_retention_runs; /* and all but the newest this many; 0 = any number */
};

/* Runs the fsm component's migrations on db. The db stays owned by the caller and must
 * outlive the manager. */
int fsm_manager_open(struct db *db, const struct fsm_config *cfg, struct fsm_manager **out,
                     struct err *e);
/* Load every unfinished run of every registered machine and schedule it (own queue, delay,
 * run-after). Runs of unregistered machines are left alone and reported in the log; a run
 * whose queue is no longer configured gets that queue back with limit 1. Runs already live
 * in this manager are skipped, so calling it again (after registering more machines) is
 * safe, also while other threads call fsm_start() (a run is never live twice). Returns the
 * number of runs scheduled. */
int fsm_manager_resume(struct fsm_manager *m);
/* Stop: no new starts (-ESHUTDOWN), cancel running transitions with FSM_CANCEL_SHUTDOWN,
 * wait up to timeout_ms for them to return. Idempotent. Runs stay resumable. */
void fsm_manager_shutdown(struct fsm_manager *m, uint32_t timeout_ms);
/* Shuts down (5 s) if needed and frees. A transition that ignores cancellation still uses
 * the manager and the db, so close waits for it to return (logging a warning) rather than
 * free memory under it. */
void fsm_manager_close(struct fsm_manager *m);
struct db *fsm_manager_db(struct fsm_manager *m);

/* Change a queue's limit (>= 1) at run time; an unknown queue is created. Runs already
 * running keep running when the limit goes down; no new run is admitted until the queue is
 * under the new limit. */
int fsm_queue_set_limit(struct fsm_manager *m, const char *queue, int limit);

/* A queue's state, for a controller that sizes it (guard/loadctl.h) and for displays. */
struct fsm_queue_stats {
    int limit;
    int running;        /* admitted runs (holding a slot) */
    int waiting;        /* runs in the queue's FIFO, waiting for a slot */
    uint64_t work_done; /* progress units (bytes) its runs reported in fsm_run_set_progress(),
                           cumulative: the difference between two calls is the work done */
};
/* -ENOENT for an unknown queue. */
int fsm_queue_stats(struct fsm_manager *m, const char *queue, struct fsm_queue_stats *out);

/* Optional observer for metrics and progress displays: called (from the run's thread) when a
 * run starts an attempt, finishes a transition, or finishes. Must not block. */
enum fsm_event_type {
    FSM_EV_START = 1,    /* run created */
    FSM_EV_ERROR = 2,    /* an attempt failed and will be retried */
    FSM_EV_COMPLETE = 3, /* a transition completed (checkpoint committed) */
    FSM_EV_HALT = 4,     /* abort / unrecoverable / handoff / cancel: to the end step */
    FSM_EV_FINISH = 5,   /* end step committed; outcome final */
    FSM_EV_RESUME = 6,   /* run resumed after a restart */
};
struct fsm_event_info {
    enum fsm_event_type type;
    const struct fsm_run_info *run;
    enum fsm_outcome outcome; /* for ERROR, HALT and FINISH */
    const char *error;        /* "" when none */
    int64_t duration_ms;      /* transition duration (COMPLETE, ERROR) or run duration (FINISH) */
};
typedef void (*fsm_observer_fn)(const struct fsm_event_info *ev, void *ud);
/* Replace the observer (NULL removes it). When this returns, the previous observer is neither
 * running nor called again, so its ud may be freed. Must not be called from an observer. */
void fsm_manager_set_observer(struct fsm_manager *m, fsm_observer_fn fn, void *ud);

/* ---- starting and controlling runs ------------------------------------------------------- */

struct fsm_start_opts {
    const char *queue;             /* NULL = unqueued (at most one active per type/action/id) */
    int64_t delay_until_ms;        /* wall clock ms; 0 = none */
    const struct fsm_id *run_after; /* NULL = none */
    const struct fsm_id *parent;    /* NULL = none */
};

/* Commit the run (START) and schedule it. For an unqueued run whose (type, action, resource)
 * already has an active run, returns -EEXIST and sets *out to the existing run. An unknown
 * queue name is -EINVAL. Once this returns 0 the run exists durably: if shutdown began
 * meanwhile it is simply not scheduled, and resumes at the next start. */
int fsm_start(struct fsm_manager *m, struct fsm_machine *machine, const char *resource_id,
              const void *req, size_t req_len, const struct fsm_start_opts *opts,
              struct fsm_id *out);

/* Wait for a run to finish (timeout_ms < 0: forever). Works for runs that finished before a
 * restart (read from the database). *error is malloc'd ("" when none); either out pointer may
 * be NULL. Returns 0, -ETIMEDOUT, -ENOENT, or -ESHUTDOWN when the manager shut down and the
 * run will not finish in this process. */
int fsm_wait(struct fsm_manager *m, const struct fsm_id *version, int64_t timeout_ms,
             enum fsm_outcome *outcome, char **error);
/* The same, with the kind of the run's error (ERR_KIND_INTERRUPTED for a cancelled run,
 * ERR_KIND_OTHER for success or an error nobody classified). kind may be NULL. */
int fsm_wait_kind(struct fsm_manager *m, const struct fsm_id *version, int64_t timeout_ms,
                  enum fsm_outcome *outcome, enum err_kind *kind, char **error);

/* Cancel a pending or running run; it ends CANCELLED with `cause` as its error and its
 * finalizers run. The request is also recorded in the database before this returns, so a
 * crash after it returned still ends the run CANCELLED. A pending run (queued, delayed, waiting for its predecessor) goes
 * to its end step at once, without waiting for a queue slot; a running one is told through
 * fsm_run_cancelled() / its cancel fd and ends when its transition returns (if it returns OK
 * its checkpoint is kept first). A run of a machine this manager has not registered gets the
 * request recorded, for the manager that runs it. Cancelling twice is fine (0). -ENOENT if
 * unknown, -EALREADY if already finished or already past its last transition with another
 * outcome. */
int fsm_cancel(struct fsm_manager *m, const struct fsm_id *version, const char *cause);

/* ---- introspection ------------------------------------------------------------------------ */

enum fsm_run_status { FSM_RUN_PENDING = 1, FSM_RUN_RUNNING = 2, FSM_RUN_FINISHED = 3 };
const char *fsm_run_status_name(enum fsm_run_status s);

/* One run as stored (plus live progress when read through a manager). Strings are owned by
 * the record; free with fsm_run_record_free(). */
struct fsm_run_record {
    struct fsm_id version, parent, run_after;
    char *type, *action, *resource_id, *queue; /* queue NULL when unqueued */
    char *state;                 /* current (or last) transition; end state when finished */
    char **transitions;          /* frozen at start */
    size_t n_transitions;
    uint32_t next_index;         /* first uncompleted transition */
    uint32_t attempt;
    enum fsm_run_status status;
    enum fsm_outcome outcome;    /* meaningful when FINISHED */
    char *error;                 /* last error ("" when none) */
    enum err_kind error_kind;    /* its kind (ERR_KIND_OTHER when none or not said) */
    char *error_state;           /* transition that produced the final error, or NULL */
    int64_t created_ms, started_ms, finished_ms, delay_until_ms;
    void *request, *response;
    size_t request_len, response_len;
    /* live only (zero when read from the database alone) */
    char *phase;
    uint64_t progress_done, progress_total;
};
void fsm_run_record_free(struct fsm_run_record *r);

/* One history event. `attempt` is the 0-based attempt the event is about (ERROR: the attempt
 * that failed; COMPLETE: the one that succeeded). HALT and FINISH carry the outcome. */
struct fsm_event_record {
    int64_t seq;
    enum fsm_event_type type;
    const char *state;   /* may be NULL */
    const char *error;   /* may be NULL */
    uint32_t attempt;
    int64_t ts_ms;
    size_t response_len; /* bytes of response stored with this event (0: unchanged) */
    bool has_outcome;    /* HALT and FINISH */
    enum fsm_outcome outcome;
};

/* These read the database only, so the CLI can use them on a read-only connection while a
 * daemon runs. The callback returns 0 to continue or non-zero to stop (returned as is). */
struct fsm_list_filter {
    bool include_finished;    /* default: pending and running only */
    const char *type;         /* NULL = any */
    const char *resource_id;  /* exact match, NULL = any */
    const struct fsm_id *parent; /* NULL = any */
    size_t limit;             /* 0 = no limit; newest first when finished runs are included */
    const struct fsm_id *after; /* NULL = from the start; else the runs after this one in the
                                   listing's order (older ones when newest first): a page */
};
typedef int (*fsm_run_cb)(const struct fsm_run_record *r, void *ud);
int fsm_db_list_runs(struct db *db, const struct fsm_list_filter *f, fsm_run_cb cb, void *ud);
int fsm_db_get_run(struct db *db, const struct fsm_id *version, struct fsm_run_record *out);
typedef int (*fsm_event_cb)(const struct fsm_event_record *ev, void *ud);
int fsm_db_list_events(struct db *db, const struct fsm_id *version, fsm_event_cb cb, void *ud);
/* Delete finished runs (and their events) that finished before cutoff_ms (0: none by age) or
 * that are not among the keep_runs newest finished runs (0: none by count). Works in
 * transactions of FSM_PRUNE_BATCH runs, so a writer never waits behind a long prune. Returns
 * how many runs were deleted. */
int fsm_db_prune(struct db *db, int64_t cutoff_ms, uint32_t keep_runs);
/* Runs deleted per prune transaction: a few milliseconds of write lock each. */
#define FSM_PRUNE_BATCH 500
/* How many runs fsm_db_prune would delete (for a dry run). */
int fsm_db_prune_count(struct db *db, int64_t cutoff_ms, uint32_t keep_runs);
const char *fsm_event_type_name(enum fsm_event_type t);

/* The unfinished runs (as fsm_db_list_runs with no filter) with live state from the manager
 * for the runs it executes: status (pending until its thread runs), current transition,
 * attempt, last error (while no outcome is recorded), phase and progress. */
int fsm_list_active(struct fsm_manager *m, fsm_run_cb cb, void *ud);

/* Registered machines. */
typedef int (*fsm_machine_cb)(const struct fsm_machine_def *def, void *ud);
int fsm_list_machines(struct fsm_manager *m, fsm_machine_cb cb, void *ud);

/* Create or upgrade the fsm tables (fsm_runs, fsm_events) on db; fsm_manager_open() calls it.
 * Exposed so a read-only tool can prepare a fresh database. */
int fsm_db_migrate(struct db *db, struct err *e);
