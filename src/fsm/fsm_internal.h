/*
 * fsm_internal.h: the engine's private structures, shared by the engine's own .c files only.
 *
 * Files:
 *   fsm_id.c       ULIDs
 *   fsm_result.c   outcomes, result constructors, names
 *   fsm_db.c       every SQL statement: the durable writes (START, checkpoints, ERROR, HALT,
 *                  FINISH, cancel) and the read-only introspection (fsm_db_*)
 *   fsm_manager.c  registration, queues and scheduling, the timer thread, start / wait /
 *                  cancel / shutdown / resume, fsm_list_*
 *   fsm_exec.c     a run's thread: the transition loop, retries, the end step, and the
 *                  fsm_run_* accessors transitions call
 *
 * Locking (the one rule that keeps this deadlock-free): the manager mutex `m->lock` is a leaf
 * with respect to the database. Code holding m->lock never takes the db lock (never touches
 * the database); code holding the db lock (a checkpoint running commit callbacks, or an
 * application transaction calling fsm_start) may take m->lock. Fields marked (M) below are
 * guarded by m->lock; fields marked (T) belong to the run's own thread; the rest are set
 * before the run is published and never change.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fsm/fsm.h"

/* Backoff for the engine's own writes that must eventually succeed (the end step's FINISH
 * commit): the default transition policy's curve, never exhausted. */
#define FSM_END_RETRY_INITIAL_MS 100
#define FSM_END_RETRY_MAX_MS     5000

/* The timer thread wakes at least this often, so a step of the wall clock (delayed starts are
 * wall-clock times) is noticed within a second. */
#define FSM_TIMER_MAX_SLEEP_MS 1000

/* Retention pruning runs at open and then at this interval. */
#define FSM_PRUNE_INTERVAL_MS (3600LL * 1000)

/* fsm_wait polls the database at this interval for a run that is not in memory and not
 * finished (a run of a machine this process has not registered). */
#define FSM_WAIT_POLL_MS 100

struct fsm_commit_cb {
    fsm_commit_fn fn;
    void *ud;
    void (*free_ud)(void *);
};

struct fsm_machine {
    struct fsm_manager *m;
    struct fsm_machine_def def;             /* deep copy; arrays below back its pointers */
    struct fsm_transition_def *transitions; /* names strdup'd, policy -> policies[i] */
    struct fsm_retry_policy *policies;      /* resolved (NULL in the definition -> default) */
    fsm_finalizer_fn *finalizers;
    char *transitions_json; /* the list frozen into each new run */
    struct fsm_machine *next;
};

struct fsm_queue {
    char *name;
    int limit;                   /* (M) */
    int inflight;                /* (M) admitted runs whose thread has not exited */
    uint64_t work_done;          /* (M) progress its runs reported, cumulative (fsm_queue_stats) */
    struct fsm_run *head, *tail; /* (M) FIFO of runs waiting for a slot */
    struct fsm_queue *next;
};

/* Where a run is in the scheduler. */
enum fsm_sched {
    SCHED_WAIT = 0, /* waiting for its delay and/or its predecessor */
    SCHED_QUEUED,   /* in its queue's FIFO */
    SCHED_RUNNING,  /* its thread runs */
    SCHED_EXITED,   /* its thread returned (finished, or stopped by shutdown) */
};

/* Whether a run-after predecessor has finished. */
enum fsm_pred {
    PRED_NONE = 0, /* no predecessor, or it has finished (or is unknown) */
    PRED_WAIT,     /* the predecessor is in memory: its exit clears this */
    PRED_CHECK_DB, /* not in memory: the database decides (checked outside the lock) */
};

struct fsm_run {
    struct fsm_manager *m;
    struct fsm_machine *machine;
    struct fsm_queue *queue; /* NULL when unqueued */
    struct fsm_id version, parent, run_after;
    char *resource_id;
    void *request;
    size_t request_len;
    char **transitions; /* frozen at start (may differ from the machine's list) */
    size_t n_transitions;
    int64_t delay_until_ms;
    int64_t created_ms;
    bool is_restart;
    int64_t rowid; /* of its fsm_runs row */

    /* (T) next event's seq (see struct fsmdb_ref) */
    int64_t next_seq;

    /* (T) progress through the machine */
    uint32_t next_index;
    uint32_t attempt;
    void *response; /* last checkpointed */
    size_t response_len;
    void *new_response; /* set during the current step, stored with its checkpoint */
    size_t new_response_len;
    bool response_set;
    struct fsm_commit_cb *cbs;
    size_t n_cbs, cap_cbs;
    uint64_t rng;
    int pred_rc; /* fsm_run_predecessor(): loaded when the thread starts */
    enum fsm_outcome pred_outcome;
    enum err_kind pred_kind;
    char *pred_error;
    int64_t started_mono;

    /* (M) outcome once decided: halted means the run goes (or went) to its end step with it */
    bool halted;
    enum fsm_outcome outcome;
    char *error;       /* final error ("" when none) */
    enum err_kind error_kind;
    char *error_state; /* transition that produced it, or NULL */
    bool in_end_step;
    bool finished; /* FINISH committed */

    /* (M) scheduling */
    enum fsm_sched sched;
    enum fsm_pred pred;
    bool slot_held; /* counted in queue->inflight */
    pthread_t thread;
    struct fsm_run *qnext;       /* queue FIFO link */
    struct fsm_run *prev, *next; /* manager's list of live runs */
    struct fsm_run *reap_next;

    /* (M) cancellation; cancel_fd is readable while any of them is set */
    bool user_cancelled;
    char *cancel_cause;
    bool timed_out;
    int64_t deadline_mono; /* current attempt's deadline, 0 = none */
    int cancel_fd;         /* eventfd */

    /* (M) live state for introspection */
    const char *state; /* transition name (into transitions[]) or the end state */
    uint32_t live_attempt;
    char *last_error;
    enum err_kind last_error_kind;
    char *phase;
    uint64_t progress_done, progress_total;
};

struct fsm_manager {
    struct db *db;
    /* fsm_start() holds it shared from its INSERT until the run is published; resume holds it
     * exclusively from loading the unfinished runs until they are published. So resume never
     * loads a run that a concurrent start is about to publish (or has published and already
     * finished): no run is ever live twice. fsm_cancel() takes it exclusively to decide about
     * a run that is not live. Taken before the db lock and m->lock. */
    pthread_rwlock_t start_lock;
    /* Held shared while an observer call runs, exclusively by fsm_manager_set_observer(), so
     * that after set_observer returns the previous observer is neither running nor called. */
    pthread_rwlock_t observer_lock;
    pthread_mutex_t lock;
    pthread_cond_t cond;       /* a run finished or exited, or shutdown began */
    pthread_cond_t timer_cond; /* wakes the timer thread */
    struct fsm_machine *machines;
    struct fsm_queue *queues;
    struct fsm_run *runs_head, *runs_tail; /* (M) live runs, in creation order */
    struct fsm_run *reap;                  /* (M) exited runs whose thread must be joined */
    size_t n_threads;                      /* (M) run threads not yet exited */
    bool shutting_down;                    /* (M) */
    bool timer_stop;                       /* (M) */
    bool timer_started;
    pthread_t timer;
    fsm_observer_fn observer; /* (M) */
    void *observer_ud;        /* (M) */
    uint32_t retention_days;
    uint32_t retention_runs;
    int64_t next_prune_mono; /* (M) */
};

/* ---- fsm_manager.c ---- */

struct fsm_run *fsm_find_run_locked(struct fsm_manager *m, const struct fsm_id *v);
void fsm_run_free(struct fsm_run *r);

/* ---- fsm_exec.c ---- */

/* One run's thread body: its transitions and end step. The manager's thread wrapper then
 * takes the run out of the scheduler. */
void fsm_run_thread(struct fsm_run *r);
/* Tell the manager's observer (if any) about an event of run r. */
void fsm_emit(struct fsm_run *r, enum fsm_event_type type, enum fsm_outcome outcome,
              const char *error, int64_t duration_ms);
/* Wake the run's cancel fd / reset it (m->lock held). */
void fsm_cancel_signal(struct fsm_run *r);

/* ---- fsm_db.c: the durable writes. Each is one transaction. ---- */

/* True on a thread while it runs a commit callback. fsm_start()/fsm_cancel() refuse to run
 * there: their transaction would nest into the checkpoint's and a run could be scheduled
 * whose row is then rolled back. */
extern __thread bool fsm_in_commit_callback;

/* Where a run's row is, and the seq its next event gets. Only the run's owner appends its
 * events (fsm_start before the run is published, then the run's thread), so next_seq lives in
 * memory and the writes address the row by rowid: a checkpoint then costs one b-tree insert
 * and one rowid update besides the application's own writes. *next_seq advances only when a
 * write that appended an event has committed. */
struct fsmdb_ref {
    const struct fsm_id *version;
    int64_t rowid;
    int64_t *next_seq;
};

/* A new run: dedupe (unqueued), row and START event (seq 1). *existing gets the active run on
 * -EEXIST; *rowid the new row (its next event is seq 2). */
struct fsm_new_run {
    const struct fsm_id *version, *parent, *run_after;
    const char *type, *action, *resource_id, *queue, *transitions_json, *end_state, *first_state;
    const void *request;
    size_t request_len;
    int64_t delay_until_ms, created_ms;
};
int fsmdb_insert_run(struct db *db, const struct fsm_new_run *nr, struct fsm_id *existing,
                     int64_t *rowid);

/* The run's thread started (status RUNNING), plus a RESUME event after a restart. */
int fsmdb_mark_running(struct db *db, const struct fsmdb_ref *ref, const char *state,
                       uint32_t attempt, bool resumed);
/* Runs being resumed are pending again until their queue admits them. */
int fsmdb_mark_pending(struct db *db, const struct fsm_id *const *versions, size_t n);

/* Run the commit callbacks, store the response (when set) and move to next_index, with a
 * COMPLETE event for `state`. On a callback failure everything is rolled back and its code is
 * returned, with a message in msg. */
int fsmdb_checkpoint(struct db *db, const struct fsmdb_ref *v, const struct fsm_commit_cb *cbs,
                     size_t n_cbs, const char *state, uint32_t attempt, uint32_t next_index,
                     const char *next_state, const void *response, size_t response_len,
                     bool store_response, char *msg, size_t msg_len);
/* A failed attempt: ERROR event; attempt = failed + 1; error = msg (unless an outcome is
 * already decided). */
int fsmdb_record_error(struct db *db, const struct fsmdb_ref *v, const char *state,
                       uint32_t failed_attempt, const char *error, enum err_kind kind);
/* To the end step: outcome, error, error_state and a HALT event. With callbacks (HANDOFF),
 * they run first and the response is stored, as for a checkpoint. */
int fsmdb_halt(struct db *db, const struct fsmdb_ref *v, const struct fsm_commit_cb *cbs,
               size_t n_cbs, const char *state, uint32_t attempt, enum fsm_outcome outcome,
               const char *error, enum err_kind kind, const void *response, size_t response_len,
               bool store_response, char *msg, size_t msg_len);
/* The end step: callbacks, status FINISHED, outcome, error, error_state, FINISH event. */
int fsmdb_finish(struct db *db, const struct fsmdb_ref *v, const struct fsm_commit_cb *cbs,
                 size_t n_cbs, const char *end_state, enum fsm_outcome outcome, const char *error,
                 enum err_kind kind, const char *error_state, const void *response,
                 size_t response_len, bool store_response, char *msg, size_t msg_len);
/* fsm_cancel(): record outcome CANCELLED and the cause, unless an outcome is decided. Returns
 * 1 when recorded, 0 when the run already had an outcome (or finished). Appends no event, so
 * any thread may call it. */
int fsmdb_cancel(struct db *db, const struct fsm_id *v, const char *cause);

/* A run record plus what resume needs beyond the public record. */
struct fsmdb_row {
    struct fsm_run_record rec;
    bool has_outcome; /* an outcome is decided (outcome column not NULL) */
    char *end_state;
    int64_t rowid, next_seq;
};
void fsmdb_row_free(struct fsmdb_row *row);
/* Every unfinished run, oldest first. rows is malloc'd; free each then the array. */
int fsmdb_load_unfinished(struct db *db, struct fsmdb_row **rows, size_t *n);
/* Runs matching the filter (fsm_db_list_runs without the callback). */
int fsmdb_list(struct db *db, const struct fsm_list_filter *f, struct fsmdb_row **rows, size_t *n);
/* Status of one run: 1 = finished, 0 = unfinished, -ENOENT = unknown. */
int fsmdb_run_finished(struct db *db, const struct fsm_id *v);

/* JSON array of names <-> string list. */
char *fsm_names_to_json(const char *const *names, size_t n);
int fsm_names_from_json(const char *json, char ***names, size_t *n);
void fsm_names_free(char **names, size_t n);
