/*
 * fsm_manager.c: the manager: machine registration, queues and scheduling, the timer thread,
 * and the public start / wait / cancel / shutdown / resume / list entry points.
 *
 * Scheduling is a pump, not a thread: every change that can let a run go (a start, a run
 * exiting and freeing its queue slot, a limit change, a cancel, a delay expiring) calls
 * pump_locked(), which walks the live runs in creation order and moves each one as far as it
 * can: WAIT (delay, predecessor) -> QUEUED (its queue's FIFO) -> RUNNING (its own thread).
 * A queue admits from the head of its FIFO while inflight < limit, so order is strict FIFO by
 * the time a run became eligible, and the limit counts whole runs (transitions and end step).
 * Resumed runs go through exactly the same path, so queue limits hold after a crash.
 *
 * The timer thread wakes for delayed starts (wall clock), attempt deadlines (monotonic clock:
 * it sets FSM_CANCEL_TIMEOUT on the run and wakes its cancel fd), retention pruning, and joins
 * the threads of runs that have exited. Live runs are kept in a list: a few hundred at most,
 * and every walk is O(runs), which is far below one SQLite commit.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "fsm/fsm_internal.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/timeutil.h"

/* Log keys: these functions may run on a run's thread, whose log context already carries
 * run=, machine=, resource= (its own). Lines about another run use other keys (new_run=,
 * cancelled_run=, ...) so that no line has a key twice. */

/* ---- small helpers ----------------------------------------------------------------------- */

static void abs_deadline(int64_t mono_deadline_ms, struct timespec *ts)
{
    ts->tv_sec = mono_deadline_ms / 1000;
    ts->tv_nsec = (mono_deadline_ms % 1000) * 1000000L;
}

static void cond_wait_until(pthread_cond_t *c, pthread_mutex_t *l, int64_t mono_deadline_ms)
{
    struct timespec ts;
    abs_deadline(mono_deadline_ms, &ts);
    pthread_cond_timedwait(c, l, &ts);
}

static int cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int r = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return -r;
}

static bool name_valid(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return false;
    return true;
}

static struct fsm_queue *find_queue(struct fsm_manager *m, const char *name)
{
    for (struct fsm_queue *q = m->queues; q; q = q->next)
        if (!strcmp(q->name, name))
            return q;
    return NULL;
}

static struct fsm_queue *add_queue(struct fsm_manager *m, const char *name, int limit)
{
    struct fsm_queue *q = calloc(1, sizeof(*q));
    if (!q || !(q->name = strdup(name))) {
        free(q);
        return NULL;
    }
    q->limit = limit;
    q->next = m->queues;
    m->queues = q;
    return q;
}

static struct fsm_machine *find_machine(struct fsm_manager *m, const char *type, const char *action)
{
    for (struct fsm_machine *x = m->machines; x; x = x->next)
        if (!strcmp(x->def.type, type) && !strcmp(x->def.action, action))
            return x;
    return NULL;
}

struct fsm_run *fsm_find_run_locked(struct fsm_manager *m, const struct fsm_id *v)
{
    for (struct fsm_run *r = m->runs_head; r; r = r->next)
        if (!strcmp(r->version.s, v->s))
            return r;
    return NULL;
}

static void list_append(struct fsm_manager *m, struct fsm_run *r)
{
    r->prev = m->runs_tail;
    r->next = NULL;
    if (m->runs_tail)
        m->runs_tail->next = r;
    else
        m->runs_head = r;
    m->runs_tail = r;
}

static void list_remove(struct fsm_manager *m, struct fsm_run *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        m->runs_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        m->runs_tail = r->prev;
    r->prev = r->next = NULL;
}

static void queue_remove(struct fsm_queue *q, struct fsm_run *r)
{
    struct fsm_run **pp = &q->head;
    struct fsm_run *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp)
        return;
    *pp = r->qnext;
    if (q->tail == r)
        q->tail = prev;
    r->qnext = NULL;
}

void fsm_run_free(struct fsm_run *r)
{
    if (!r)
        return;
    free(r->resource_id);
    free(r->request);
    fsm_names_free(r->transitions, r->n_transitions);
    free(r->response);
    free(r->new_response);
    for (size_t i = 0; i < r->n_cbs; i++)
        if (r->cbs[i].free_ud)
            r->cbs[i].free_ud(r->cbs[i].ud);
    free(r->cbs);
    free(r->pred_error);
    free(r->error);
    free(r->error_state);
    free(r->cancel_cause);
    free(r->last_error);
    free(r->phase);
    if (r->cancel_fd >= 0)
        close(r->cancel_fd);
    free(r);
}

/* ---- scheduling -------------------------------------------------------------------------- */

static void run_exit(struct fsm_run *r);

/* A run's thread: its transitions and end step (fsm_exec.c), then it leaves the scheduler. */
static void *run_thread_main(void *arg)
{
    struct fsm_run *r = arg;
    fsm_run_thread(r);
    run_exit(r);
    return NULL;
}

static int start_thread_locked(struct fsm_manager *m, struct fsm_run *r)
{
    r->sched = SCHED_RUNNING;
    m->n_threads++;
    int rc = pthread_create(&r->thread, NULL, run_thread_main, r);
    if (rc != 0) {
        r->sched = SCHED_WAIT;
        m->n_threads--;
        log_error("cannot start a run thread; will try again", "pending_run=%s error=%s",
                  r->version.s, strerror(rc));
        return -rc;
    }
    return 0;
}

static void pump_locked(struct fsm_manager *m)
{
    if (m->shutting_down)
        return;
    int64_t now = now_ms();
    for (struct fsm_run *r = m->runs_head; r; r = r->next) {
        if (r->sched != SCHED_WAIT)
            continue;
        if (r->user_cancelled) {
            /* A cancelled pending run only has its end step left: it never held a slot and
             * does not wait for one. */
            start_thread_locked(m, r);
            continue;
        }
        if (r->delay_until_ms > now || r->pred != PRED_NONE)
            continue;
        if (!r->queue) {
            start_thread_locked(m, r);
            continue;
        }
        r->sched = SCHED_QUEUED;
        r->qnext = NULL;
        if (r->queue->tail)
            r->queue->tail->qnext = r;
        else
            r->queue->head = r;
        r->queue->tail = r;
    }
    for (struct fsm_queue *q = m->queues; q; q = q->next) {
        while (q->inflight < q->limit && q->head) {
            struct fsm_run *r = q->head;
            q->head = r->qnext;
            if (!q->head)
                q->tail = NULL;
            r->qnext = NULL;
            r->slot_held = true;
            q->inflight++;
            if (start_thread_locked(m, r) < 0) {
                /* Back to the head of its queue; the timer retries. */
                r->slot_held = false;
                q->inflight--;
                r->sched = SCHED_QUEUED;
                r->qnext = q->head;
                q->head = r;
                if (!q->tail)
                    q->tail = r;
                break;
            }
        }
    }
}

/* The run's thread is about to return: leave the queue, wake waiters and successors. */
static void run_exit(struct fsm_run *r)
{
    struct fsm_manager *m = r->m;
    pthread_mutex_lock(&m->lock);
    if (r->slot_held) {
        r->queue->inflight--;
        r->slot_held = false;
    }
    list_remove(m, r);
    if (r->finished)
        for (struct fsm_run *s = m->runs_head; s; s = s->next)
            if (s->pred != PRED_NONE && !strcmp(s->run_after.s, r->version.s))
                s->pred = PRED_NONE;
    r->sched = SCHED_EXITED;
    r->reap_next = m->reap;
    m->reap = r;
    m->n_threads--;
    pump_locked(m);
    pthread_cond_broadcast(&m->cond);
    pthread_cond_signal(&m->timer_cond);
    pthread_mutex_unlock(&m->lock);
}

/* Publishes new runs (already committed) and schedules them. Runs whose predecessor is not in
 * memory are settled from the database afterwards, outside the lock. */
static void publish_runs(struct fsm_manager *m, struct fsm_run **runs, size_t n)
{
    size_t n_check = 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < n; i++) {
        struct fsm_run *r = runs[i];
        list_append(m, r);
        r->pred = PRED_NONE;
        /* (start_lock guarantees a version is published once; see struct fsm_manager) */
        if (!fsm_id_is_zero(&r->run_after)) {
            struct fsm_run *p = fsm_find_run_locked(m, &r->run_after);
            if (p)
                r->pred = p->finished ? PRED_NONE : PRED_WAIT;
            else {
                r->pred = PRED_CHECK_DB;
                n_check++;
            }
        }
    }
    /* Versions to check, copied: once unlocked, a run may be cancelled, finish and be freed. */
    struct fsm_id *check = n_check ? calloc(n_check, sizeof(*check)) : NULL;
    size_t k = 0;
    for (size_t i = 0; i < n && check; i++)
        if (runs[i]->pred == PRED_CHECK_DB)
            check[k++] = runs[i]->version;
    pump_locked(m);
    pthread_cond_signal(&m->timer_cond);
    pthread_mutex_unlock(&m->lock);

    if (n_check && !check) {
        /* Out of memory: leave them waiting rather than start them too early. */
        log_error("cannot check run-after predecessors (out of memory)");
        return;
    }
    for (size_t i = 0; i < k; i++) {
        pthread_mutex_lock(&m->lock);
        struct fsm_run *r = fsm_find_run_locked(m, &check[i]);
        struct fsm_id pred = r ? r->run_after : (struct fsm_id){{0}};
        bool still = r && r->pred == PRED_CHECK_DB;
        pthread_mutex_unlock(&m->lock);
        if (!still)
            continue;
        /* The predecessor is not live here. Live runs only leave memory after their FINISH
         * committed, and this run is already published (so the predecessor's exit would have
         * released it), hence the database is the truth. */
        int fin = fsmdb_run_finished(m->db, &pred);
        pthread_mutex_lock(&m->lock);
        r = fsm_find_run_locked(m, &check[i]);
        if (r && r->pred == PRED_CHECK_DB) {
            if (fin == 0) {
                r->pred = PRED_WAIT;
                log_warn("run waits for a predecessor that no registered machine will run",
                         "waiting_run=%s run_after=%s", r->version.s, pred.s);
            } else {
                r->pred = PRED_NONE;
            }
            pump_locked(m);
        }
        pthread_mutex_unlock(&m->lock);
    }
    free(check);
}

static void *timer_thread(void *arg)
{
    struct fsm_manager *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->timer_stop) {
        if (m->reap) {
            struct fsm_run *list = m->reap;
            m->reap = NULL;
            pthread_mutex_unlock(&m->lock);
            while (list) {
                struct fsm_run *next = list->reap_next;
                pthread_join(list->thread, NULL);
                fsm_run_free(list);
                list = next;
            }
            pthread_mutex_lock(&m->lock);
            continue;
        }
        pump_locked(m);
        int64_t now = mono_ms(), wall = now_ms();
        int64_t wake = now + FSM_TIMER_MAX_SLEEP_MS;
        for (struct fsm_run *r = m->runs_head; r; r = r->next) {
            if (r->sched == SCHED_RUNNING && r->deadline_mono && !r->timed_out) {
                if (r->deadline_mono <= now) {
                    r->timed_out = true;
                    fsm_cancel_signal(r);
                } else if (r->deadline_mono < wake) {
                    wake = r->deadline_mono;
                }
            }
            if (r->sched == SCHED_WAIT && r->delay_until_ms > wall &&
                now + (r->delay_until_ms - wall) < wake)
                wake = now + (r->delay_until_ms - wall);
        }
        if ((m->retention_days || m->retention_runs) && now >= m->next_prune_mono &&
            !m->shutting_down) {
            m->next_prune_mono = now + FSM_PRUNE_INTERVAL_MS;
            pthread_mutex_unlock(&m->lock);
            int64_t cutoff =
                m->retention_days ? now_ms() - (int64_t)m->retention_days * 86400000LL : 0;
            int n = fsm_db_prune(m->db, cutoff, m->retention_runs);
            if (n > 0)
                log_info("pruned finished runs", "count=%d retention_days=%u retention_runs=%u",
                         n, m->retention_days, m->retention_runs);
            pthread_mutex_lock(&m->lock);
            continue;
        }
        cond_wait_until(&m->timer_cond, &m->lock, wake);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* ---- the manager ------------------------------------------------------------------------- */

static void machine_free(struct fsm_machine *x)
{
    for (size_t i = 0; x->transitions && i < x->def.n_transitions; i++)
        free((char *)x->transitions[i].name);
    free(x->transitions);
    free(x->policies);
    free(x->finalizers);
    free((char *)x->def.type);
    free((char *)x->def.action);
    free((char *)x->def.end_state);
    free(x->transitions_json);
    free(x);
}

int fsm_manager_open(struct db *db, const struct fsm_config *cfg, struct fsm_manager **out,
                     struct err *e)
{
    *out = NULL;
    int r = fsm_db_migrate(db, e);
    if (r < 0)
        return r;
    struct fsm_manager *m = calloc(1, sizeof(*m));
    if (!m)
        return err_set(e, -ENOMEM, "out of memory");
    m->db = db;
    pthread_rwlock_init(&m->start_lock, NULL);
    pthread_rwlock_init(&m->observer_lock, NULL);
    pthread_mutex_init(&m->lock, NULL);
    cond_init_mono(&m->cond);
    cond_init_mono(&m->timer_cond);
    for (size_t i = 0; cfg && i < cfg->n_queues; i++) {
        const struct fsm_queue_cfg *qc = &cfg->queues[i];
        if (!qc->name || !*qc->name || qc->limit < 1 || find_queue(m, qc->name)) {
            r = err_set(e, -EINVAL, "fsm queue %zu (%s): needs a unique name and a limit >= 1", i,
                        qc->name ? qc->name : "(null)");
            fsm_manager_close(m);
            return r;
        }
        if (!add_queue(m, qc->name, qc->limit)) {
            fsm_manager_close(m);
            return err_set(e, -ENOMEM, "out of memory");
        }
    }
    m->retention_days = cfg ? cfg->history_retention_days : 0;
    m->retention_runs = cfg ? cfg->history_retention_runs : 0;
    m->next_prune_mono = 0; /* prune once at start */
    r = pthread_create(&m->timer, NULL, timer_thread, m);
    if (r != 0) {
        fsm_manager_close(m);
        return err_set(e, -r, "cannot start the fsm timer thread: %s", strerror(r));
    }
    m->timer_started = true;
    *out = m;
    return 0;
}

struct db *fsm_manager_db(struct fsm_manager *m)
{
    return m->db;
}

void fsm_manager_set_observer(struct fsm_manager *m, fsm_observer_fn fn, void *ud)
{
    pthread_rwlock_wrlock(&m->observer_lock); /* waits for observer calls in flight */
    pthread_mutex_lock(&m->lock);
    m->observer = fn;
    m->observer_ud = ud;
    pthread_mutex_unlock(&m->lock);
    pthread_rwlock_unlock(&m->observer_lock);
}

int fsm_queue_set_limit(struct fsm_manager *m, const char *queue, int limit)
{
    if (!queue || !*queue || limit < 1)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    struct fsm_queue *q = find_queue(m, queue);
    if (!q)
        q = add_queue(m, queue, limit);
    if (!q) {
        pthread_mutex_unlock(&m->lock);
        return -ENOMEM;
    }
    q->limit = limit;
    pump_locked(m);
    pthread_mutex_unlock(&m->lock);
    log_info("queue limit changed", "queue=%s limit=%d", queue, limit);
    return 0;
}

int fsm_queue_stats(struct fsm_manager *m, const char *queue, struct fsm_queue_stats *out)
{
    *out = (struct fsm_queue_stats){0};
    pthread_mutex_lock(&m->lock);
    struct fsm_queue *q = queue ? find_queue(m, queue) : NULL;
    if (q) {
        out->limit = q->limit;
        out->running = q->inflight;
        for (struct fsm_run *r = q->head; r; r = r->qnext)
            out->waiting++;
        out->work_done = q->work_done;
    }
    pthread_mutex_unlock(&m->lock);
    return q ? 0 : -ENOENT;
}

void fsm_manager_shutdown(struct fsm_manager *m, uint32_t timeout_ms)
{
    pthread_mutex_lock(&m->lock);
    if (!m->shutting_down) {
        m->shutting_down = true;
        size_t running = 0;
        for (struct fsm_run *r = m->runs_head; r; r = r->next)
            if (r->sched == SCHED_RUNNING) {
                fsm_cancel_signal(r);
                running++;
            }
        pthread_cond_broadcast(&m->cond);
        pthread_cond_signal(&m->timer_cond);
        log_info("fsm shutting down", "running=%zu timeout_ms=%u", running, timeout_ms);
    }
    int64_t deadline = mono_ms() + timeout_ms;
    while (m->n_threads > 0 && mono_ms() < deadline)
        cond_wait_until(&m->cond, &m->lock, deadline);
    if (m->n_threads > 0)
        log_warn("fsm shutdown timed out: runs still in a transition that ignores cancellation",
                 "running=%zu", m->n_threads);
    pthread_mutex_unlock(&m->lock);
}

void fsm_manager_close(struct fsm_manager *m)
{
    if (!m)
        return;
    if (m->timer_started) {
        fsm_manager_shutdown(m, 5000);
        /* A transition that ignores cancellation still uses the manager and the db: freeing
         * them under it would be a use-after-free, so wait (and say so). */
        pthread_mutex_lock(&m->lock);
        while (m->n_threads > 0) {
            log_warn("fsm close waits for runs that ignore cancellation", "running=%zu",
                     m->n_threads);
            cond_wait_until(&m->cond, &m->lock, mono_ms() + 10000);
        }
        m->timer_stop = true;
        pthread_cond_signal(&m->timer_cond);
        pthread_mutex_unlock(&m->lock);
        pthread_join(m->timer, NULL);
    }
    while (m->reap) {
        struct fsm_run *r = m->reap;
        m->reap = r->reap_next;
        pthread_join(r->thread, NULL);
        fsm_run_free(r);
    }
    while (m->runs_head) {
        struct fsm_run *r = m->runs_head;
        list_remove(m, r);
        fsm_run_free(r);
    }
    while (m->queues) {
        struct fsm_queue *q = m->queues;
        m->queues = q->next;
        free(q->name);
        free(q);
    }
    while (m->machines) {
        struct fsm_machine *x = m->machines;
        m->machines = x->next;
        machine_free(x);
    }
    pthread_cond_destroy(&m->cond);
    pthread_cond_destroy(&m->timer_cond);
    pthread_mutex_destroy(&m->lock);
    pthread_rwlock_destroy(&m->start_lock);
    pthread_rwlock_destroy(&m->observer_lock);
    free(m);
}

/* ---- registration ------------------------------------------------------------------------ */

static int policy_valid(const struct fsm_retry_policy *p)
{
    if (p->multiplier < 1.0 || p->jitter < 0.0 || p->jitter > 1.0)
        return -EINVAL;
    if (p->on_exhausted != FSM_ABORT && p->on_exhausted != FSM_UNRECOVERABLE)
        return -EINVAL;
    return 0;
}

int fsm_register(struct fsm_manager *m, const struct fsm_machine_def *def, struct fsm_machine **out)
{
    if (out)
        *out = NULL;
    if (!m || !def || !def->type || !*def->type || !def->action || !*def->action ||
        !def->transitions || def->n_transitions == 0 || !name_valid(def->end_state) ||
        (def->n_finalizers && !def->finalizers))
        return -EINVAL;
    for (size_t i = 0; i < def->n_transitions; i++) {
        const struct fsm_transition_def *t = &def->transitions[i];
        if (!name_valid(t->name) || !t->fn || !strcmp(t->name, def->end_state))
            return -EINVAL;
        if (t->policy && policy_valid(t->policy) < 0)
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(def->transitions[j].name, t->name))
                return -EINVAL;
    }
    for (size_t i = 0; i < def->n_finalizers; i++)
        if (!def->finalizers[i])
            return -EINVAL;

    pthread_mutex_lock(&m->lock);
    bool dup = find_machine(m, def->type, def->action) != NULL;
    pthread_mutex_unlock(&m->lock);
    if (dup)
        return -EEXIST;

    struct fsm_machine *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->m = m;
    x->def = *def;
    x->def.type = strdup(def->type);
    x->def.action = strdup(def->action);
    x->def.end_state = strdup(def->end_state);
    x->transitions = calloc(def->n_transitions, sizeof(*x->transitions));
    x->policies = calloc(def->n_transitions, sizeof(*x->policies));
    x->finalizers = calloc(def->n_finalizers ? def->n_finalizers : 1, sizeof(*x->finalizers));
    const char **names = calloc(def->n_transitions, sizeof(char *));
    bool oom = !x->def.type || !x->def.action || !x->def.end_state || !x->transitions ||
               !x->policies || !x->finalizers || !names;
    for (size_t i = 0; !oom && i < def->n_transitions; i++) {
        x->transitions[i] = def->transitions[i];
        x->transitions[i].name = strdup(def->transitions[i].name);
        oom = !x->transitions[i].name;
        x->policies[i] =
            def->transitions[i].policy ? *def->transitions[i].policy : FSM_RETRY_DEFAULT;
        x->transitions[i].policy = &x->policies[i];
        names[i] = x->transitions[i].name;
    }
    if (!oom) {
        if (def->n_finalizers)
            memcpy(x->finalizers, def->finalizers, def->n_finalizers * sizeof(*x->finalizers));
        x->transitions_json = fsm_names_to_json(names, def->n_transitions);
        oom = !x->transitions_json;
    }
    free(names);
    x->def.transitions = x->transitions;
    x->def.finalizers = x->finalizers;
    if (!x->transitions)
        x->def.n_transitions = 0;
    if (oom) {
        machine_free(x);
        return -ENOMEM;
    }
    pthread_mutex_lock(&m->lock);
    if (find_machine(m, def->type, def->action)) {
        pthread_mutex_unlock(&m->lock);
        /* Lost a race with another registration of the same machine. */
        machine_free(x);
        return -EEXIST;
    }
    x->next = m->machines;
    m->machines = x;
    pthread_mutex_unlock(&m->lock);
    if (out)
        *out = x;
    return 0;
}

int fsm_list_machines(struct fsm_manager *m, fsm_machine_cb cb, void *ud)
{
    /* Machines are never unregistered, so the list can be walked after unlocking. */
    pthread_mutex_lock(&m->lock);
    struct fsm_machine *head = m->machines;
    pthread_mutex_unlock(&m->lock);
    for (struct fsm_machine *x = head; x; x = x->next) {
        int r = cb(&x->def, ud);
        if (r)
            return r;
    }
    return 0;
}

/* ---- runs -------------------------------------------------------------------------------- */

static struct fsm_run *run_alloc(struct fsm_manager *m, struct fsm_machine *x)
{
    struct fsm_run *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->m = m;
    r->machine = x;
    r->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->cancel_fd < 0) {
        free(r);
        return NULL;
    }
    return r;
}

static int copy_names(struct fsm_run *r, char *const *names, size_t n)
{
    r->transitions = calloc(n ? n : 1, sizeof(char *));
    if (!r->transitions)
        return -ENOMEM;
    r->n_transitions = n;
    for (size_t i = 0; i < n; i++)
        if (!(r->transitions[i] = strdup(names[i])))
            return -ENOMEM;
    return 0;
}

int fsm_start(struct fsm_manager *m, struct fsm_machine *machine, const char *resource_id,
              const void *req, size_t req_len, const struct fsm_start_opts *opts,
              struct fsm_id *out)
{
    static const struct fsm_start_opts none = {0};
    if (!opts)
        opts = &none;
    if (out)
        out->s[0] = '\0';
    if (!m || !machine || machine->m != m || !resource_id || !*resource_id || (req_len && !req) ||
        opts->delay_until_ms < 0 || (opts->queue && !*opts->queue))
        return -EINVAL;
    if (fsm_in_commit_callback) {
        log_error("fsm_start called from a commit callback; start runs from the transition",
                  "new_machine=%s/%s new_resource=%s", machine->def.type, machine->def.action,
                  resource_id);
        return -EDEADLK;
    }

    pthread_mutex_lock(&m->lock);
    bool down = m->shutting_down;
    struct fsm_queue *q = opts->queue ? find_queue(m, opts->queue) : NULL;
    pthread_mutex_unlock(&m->lock);
    if (down)
        return -ESHUTDOWN;
    if (opts->queue && !q) {
        log_error("fsm_start: unknown queue", "queue=%s new_machine=%s/%s", opts->queue,
                  machine->def.type, machine->def.action);
        return -EINVAL;
    }

    struct fsm_run *r = run_alloc(m, machine);
    if (!r)
        return -ENOMEM;
    int rc = fsm_id_new(&r->version);
    r->queue = q;
    if (opts->parent)
        r->parent = *opts->parent;
    if (opts->run_after)
        r->run_after = *opts->run_after;
    r->delay_until_ms = opts->delay_until_ms;
    r->created_ms = now_ms();
    r->resource_id = strdup(resource_id);
    if (req_len) {
        r->request = malloc(req_len);
        if (r->request) {
            memcpy(r->request, req, req_len);
            r->request_len = req_len;
        }
    }
    if (rc >= 0) {
        rc = -ENOMEM;
        r->transitions = calloc(machine->def.n_transitions, sizeof(char *));
        if (r->resource_id && (r->request || !req_len) && r->transitions) {
            r->n_transitions = machine->def.n_transitions;
            rc = 0;
            for (size_t i = 0; i < r->n_transitions && rc == 0; i++)
                if (!(r->transitions[i] = strdup(machine->transitions[i].name)))
                    rc = -ENOMEM;
        }
    }
    if (rc < 0) {
        fsm_run_free(r);
        return rc;
    }

    struct fsm_new_run nr = {
        .version = &r->version,
        .parent = &r->parent,
        .run_after = &r->run_after,
        .type = machine->def.type,
        .action = machine->def.action,
        .resource_id = resource_id,
        .queue = q ? q->name : NULL,
        .transitions_json = machine->transitions_json,
        .end_state = machine->def.end_state,
        .first_state = r->transitions[0],
        .request = req,
        .request_len = req_len,
        .delay_until_ms = r->delay_until_ms,
        .created_ms = r->created_ms,
    };
    struct fsm_id existing = {{0}};
    pthread_rwlock_rdlock(&m->start_lock);
    rc = fsmdb_insert_run(m->db, &nr, &existing, &r->rowid);
    if (rc < 0) {
        pthread_rwlock_unlock(&m->start_lock);
        if (rc == -EEXIST && out)
            *out = existing;
        if (rc != -EEXIST)
            log_error("cannot record a new run", "new_machine=%s/%s new_resource=%s error=%s",
                      machine->def.type, machine->def.action, resource_id, strerror(-rc));
        fsm_run_free(r);
        return rc;
    }
    r->next_seq = 2;
    if (out)
        *out = r->version;
    log_debug("run started", "new_run=%s new_machine=%s/%s new_resource=%s queue=%s", r->version.s,
              machine->def.type, machine->def.action, resource_id, q ? q->name : "");
    fsm_emit(r, FSM_EV_START, FSM_OK, NULL, 0);
    /* Committed: from here on the run exists, even if shutdown began meanwhile (it is then
     * simply not scheduled, and resumes on the next start). */
    publish_runs(m, &r, 1);
    pthread_rwlock_unlock(&m->start_lock);
    return 0;
}

int fsm_wait(struct fsm_manager *m, const struct fsm_id *version, int64_t timeout_ms,
             enum fsm_outcome *outcome, char **error)
{
    return fsm_wait_kind(m, version, timeout_ms, outcome, NULL, error);
}

int fsm_wait_kind(struct fsm_manager *m, const struct fsm_id *version, int64_t timeout_ms,
                  enum fsm_outcome *outcome, enum err_kind *kind, char **error)
{
    if (kind)
        *kind = ERR_KIND_OTHER;
    if (error)
        *error = NULL;
    if (!m || fsm_id_is_zero(version))
        return -ENOENT;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : mono_ms() + timeout_ms;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        struct fsm_run *r = fsm_find_run_locked(m, version);
        if (r && r->finished) {
            if (outcome)
                *outcome = r->outcome;
            if (kind)
                *kind = r->error_kind;
            if (error)
                *error = strdup(r->error ? r->error : "");
            pthread_mutex_unlock(&m->lock);
            return error && !*error ? -ENOMEM : 0;
        }
        if (r && !(m->shutting_down && r->sched != SCHED_RUNNING)) {
            if (mono_ms() >= deadline) {
                pthread_mutex_unlock(&m->lock);
                return -ETIMEDOUT;
            }
            cond_wait_until(&m->cond, &m->lock, deadline);
            continue;
        }
        bool down = m->shutting_down;
        pthread_mutex_unlock(&m->lock);
        /* Not live (finished before, or not ours) or never to run here: the database. */
        struct fsm_run_record rec;
        int rc = fsm_db_get_run(m->db, version, &rec);
        if (rc < 0)
            return rc;
        if (rec.status == FSM_RUN_FINISHED) {
            if (outcome)
                *outcome = rec.outcome;
            if (kind)
                *kind = rec.error_kind;
            if (error)
                *error = TAKE_PTR(rec.error);
            fsm_run_record_free(&rec);
            return error && !*error ? -ENOMEM : 0;
        }
        fsm_run_record_free(&rec);
        if (down)
            return -ESHUTDOWN;
        pthread_mutex_lock(&m->lock);
        if (fsm_find_run_locked(m, version))
            continue;
        int64_t now = mono_ms();
        if (now >= deadline) {
            pthread_mutex_unlock(&m->lock);
            return -ETIMEDOUT;
        }
        cond_wait_until(&m->cond, &m->lock,
                        deadline - now < FSM_WAIT_POLL_MS ? deadline : now + FSM_WAIT_POLL_MS);
    }
}

/* Cancels a live run (m->lock held; released on return). */
static int cancel_live_locked(struct fsm_manager *m, struct fsm_run *r, const char *cause)
{
    struct fsm_id version = r->version;
    if (r->finished || r->halted) {
        pthread_mutex_unlock(&m->lock);
        return -EALREADY;
    }
    if (r->user_cancelled) {
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    char *c = strdup(cause);
    if (!c) {
        pthread_mutex_unlock(&m->lock);
        return -ENOMEM;
    }
    r->user_cancelled = true;
    r->cancel_cause = c;
    fsm_cancel_signal(r);
    if (r->sched == SCHED_QUEUED) {
        queue_remove(r->queue, r);
        r->sched = SCHED_WAIT;
    }
    pump_locked(m);
    pthread_mutex_unlock(&m->lock);
    log_info("run cancel requested", "cancelled_run=%s cause=%s", version.s, cause);
    /* Durable, so a crash before the end step still ends the run CANCELLED. */
    int rc = fsmdb_cancel(m->db, &version, cause);
    if (rc < 0)
        log_warn("cannot record the cancel request", "cancelled_run=%s error=%s", version.s,
                 strerror(-rc));
    return 0;
}

int fsm_cancel(struct fsm_manager *m, const struct fsm_id *version, const char *cause)
{
    if (!m || fsm_id_is_zero(version))
        return -ENOENT;
    if (!cause || !*cause)
        cause = "cancelled";
    if (fsm_in_commit_callback)
        return -EDEADLK;
    pthread_mutex_lock(&m->lock);
    if (m->shutting_down) {
        pthread_mutex_unlock(&m->lock);
        return -ESHUTDOWN;
    }
    struct fsm_run *r = fsm_find_run_locked(m, version);
    if (r)
        return cancel_live_locked(m, r, cause);
    pthread_mutex_unlock(&m->lock);

    /* Not live. With starts (and resume) excluded, it cannot become live while we decide: a
     * run committed by a concurrent fsm_start() is published before we get the lock. */
    pthread_rwlock_wrlock(&m->start_lock);
    pthread_mutex_lock(&m->lock);
    r = fsm_find_run_locked(m, version);
    if (r) {
        int rc = cancel_live_locked(m, r, cause);
        pthread_rwlock_unlock(&m->start_lock);
        return rc;
    }
    pthread_mutex_unlock(&m->lock);
    int rc = fsmdb_run_finished(m->db, version);
    if (rc == 0) {
        /* Unfinished but not live here (its machine is not registered): record the request;
         * the manager that runs it ends it CANCELLED. */
        rc = fsmdb_cancel(m->db, version, cause);
        if (rc >= 0)
            rc = rc == 1 ? 0 : -EALREADY;
    } else if (rc == 1) {
        rc = -EALREADY;
    }
    pthread_rwlock_unlock(&m->start_lock);
    return rc;
}

/* ---- resume ------------------------------------------------------------------------------ */

static struct fsm_run *run_from_row(struct fsm_manager *m, struct fsm_machine *x,
                                    struct fsmdb_row *row)
{
    struct fsm_run_record *rec = &row->rec;
    struct fsm_run *r = run_alloc(m, x);
    if (!r)
        return NULL;
    r->version = rec->version;
    r->parent = rec->parent;
    r->run_after = rec->run_after;
    r->delay_until_ms = rec->delay_until_ms;
    r->created_ms = rec->created_ms;
    r->is_restart = true;
    r->rowid = row->rowid;
    r->next_seq = row->next_seq;
    r->next_index = rec->next_index;
    r->attempt = rec->attempt;
    r->resource_id = TAKE_PTR(rec->resource_id);
    r->request = TAKE_PTR(rec->request);
    r->request_len = rec->request_len;
    r->response = TAKE_PTR(rec->response);
    r->response_len = rec->response_len;
    if (copy_names(r, rec->transitions, rec->n_transitions) < 0 || !r->resource_id) {
        fsm_run_free(r);
        return NULL;
    }
    if (!row->has_outcome && rec->error && *rec->error) {
        /* The last failed attempt's message: the error if the attempts are exhausted. */
        r->last_error = TAKE_PTR(rec->error);
        r->last_error_kind = rec->error_kind;
    }
    if (row->has_outcome) {
        r->halted = true;
        r->outcome = rec->outcome;
        r->error_kind = rec->error_kind;
        r->error = TAKE_PTR(rec->error);
        r->error_state = TAKE_PTR(rec->error_state);
        if (rec->outcome == FSM_CANCELLED) {
            /* A cancel that was requested (or decided) before the restart. */
            r->user_cancelled = true;
            r->cancel_cause = strdup(r->error ? r->error : "cancelled");
        }
    }
    return r;
}

static int resume_locked(struct fsm_manager *m);

int fsm_manager_resume(struct fsm_manager *m)
{
    pthread_mutex_lock(&m->lock);
    bool down = m->shutting_down;
    pthread_mutex_unlock(&m->lock);
    if (down)
        return -ESHUTDOWN;

    pthread_rwlock_wrlock(&m->start_lock);
    int rc = resume_locked(m);
    pthread_rwlock_unlock(&m->start_lock);
    return rc;
}

static bool in_snapshot(const struct fsm_id *live, size_t n, const struct fsm_id *v)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(live[i].s, v->s))
            return true;
    return false;
}

static int resume_locked(struct fsm_manager *m)
{
    /* The runs live *before* the load: one of them may finish and leave memory while we read,
     * and its row, read a moment earlier, would look unfinished. No run can become live
     * meanwhile (starts wait for start_lock), so "not live before the load" is the truth. */
    pthread_mutex_lock(&m->lock);
    size_t n_live = 0;
    for (struct fsm_run *r = m->runs_head; r; r = r->next)
        n_live++;
    struct fsm_id *live = calloc(n_live ? n_live : 1, sizeof(*live));
    n_live = 0;
    for (struct fsm_run *r = m->runs_head; live && r; r = r->next)
        live[n_live++] = r->version;
    pthread_mutex_unlock(&m->lock);
    if (!live)
        return -ENOMEM;

    struct fsmdb_row *rows = NULL;
    size_t n = 0;
    int rc = fsmdb_load_unfinished(m->db, &rows, &n);
    if (rc < 0) {
        free(live);
        return log_error_errno(rc, "cannot load unfinished runs", "db=%s", db_path(m->db));
    }
    /* Arrays of pointers. */
    struct fsm_run **runs = calloc(n ? n : 1, sizeof(void *));
    const struct fsm_id **was_running = calloc(n ? n : 1, sizeof(void *));
    if (!runs || !was_running) {
        free(live);
        free(runs);
        free(was_running);
        for (size_t i = 0; i < n; i++)
            fsmdb_row_free(&rows[i]);
        free(rows);
        return -ENOMEM;
    }
    size_t nr = 0, nw = 0, unknown = 0;
    for (size_t i = 0; i < n; i++) {
        struct fsm_run_record *rec = &rows[i].rec;
        pthread_mutex_lock(&m->lock);
        struct fsm_machine *x = find_machine(m, rec->type, rec->action);
        bool is_live = in_snapshot(live, n_live, &rec->version);
        struct fsm_queue *q = NULL;
        if (x && !is_live && rec->queue) {
            q = find_queue(m, rec->queue);
            if (!q) {
                /* Its queue is no longer configured: serialize rather than run unlimited. */
                q = add_queue(m, rec->queue, 1);
                log_warn("resumed run names an unknown queue; created it with limit 1",
                         "run=%s queue=%s", rec->version.s, rec->queue);
            }
        }
        pthread_mutex_unlock(&m->lock);
        if (!x) {
            unknown++;
            log_warn("unfinished run of an unregistered machine left alone",
                     "run=%s machine=%s/%s resource=%s", rec->version.s, rec->type, rec->action,
                     rec->resource_id);
            continue;
        }
        if (is_live || (rec->queue && !q))
            continue;
        struct fsm_run *r = run_from_row(m, x, &rows[i]);
        if (!r) {
            log_error("cannot resume run (out of memory)", "run=%s", rec->version.s);
            continue;
        }
        r->queue = q;
        if (rec->status == FSM_RUN_RUNNING)
            was_running[nw++] = &r->version;
        runs[nr++] = r;
    }
    free(live);
    /* They wait for their queue again: say so to readers of the database. */
    rc = fsmdb_mark_pending(m->db, was_running, nw);
    if (rc < 0)
        log_warn("cannot mark resumed runs pending", "error=%s", strerror(-rc));
    free(was_running);
    for (size_t i = 0; i < n; i++)
        fsmdb_row_free(&rows[i]);
    free(rows);

    pthread_mutex_lock(&m->lock);
    bool down = m->shutting_down;
    pthread_mutex_unlock(&m->lock);
    if (down) {
        for (size_t i = 0; i < nr; i++)
            fsm_run_free(runs[i]);
        free(runs);
        return -ESHUTDOWN;
    }
    log_info("resuming unfinished runs", "count=%zu unknown_machine=%zu", nr, unknown);
    publish_runs(m, runs, nr);
    free(runs);
    return (int)nr;
}

/* ---- introspection ----------------------------------------------------------------------- */

int fsm_list_active(struct fsm_manager *m, fsm_run_cb cb, void *ud)
{
    struct fsm_list_filter f = {.include_finished = false};
    struct fsmdb_row *rows = NULL;
    size_t n = 0;
    int r = fsmdb_list(m->db, &f, &rows, &n);
    if (r < 0)
        return r;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < n; i++) {
        struct fsm_run_record *rec = &rows[i].rec;
        struct fsm_run *run = fsm_find_run_locked(m, &rec->version);
        if (!run)
            continue;
        rec->status = run->finished                 ? FSM_RUN_FINISHED
                      : run->sched == SCHED_RUNNING ? FSM_RUN_RUNNING
                                                    : FSM_RUN_PENDING;
        if (run->state) {
            char *s = strdup(run->state);
            if (s) {
                free(rec->state);
                rec->state = s;
            }
        }
        rec->attempt = run->live_attempt;
        if (run->last_error && *run->last_error && !(rec->error && *rec->error)) {
            char *s = strdup(run->last_error);
            if (s) {
                free(rec->error);
                rec->error = s;
                rec->error_kind = run->last_error_kind;
            }
        }
        if (run->phase)
            rec->phase = strdup(run->phase);
        rec->progress_done = run->progress_done;
        rec->progress_total = run->progress_total;
    }
    pthread_mutex_unlock(&m->lock);
    for (size_t i = 0; i < n && r == 0; i++)
        r = cb(&rows[i].rec, ud);
    for (size_t i = 0; i < n; i++)
        fsmdb_row_free(&rows[i]);
    free(rows);
    return r;
}
