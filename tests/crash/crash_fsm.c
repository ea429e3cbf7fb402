/*
 * crash_fsm.c: kill -9 at every point of a workload of durable FSM runs, resume in a new
 * process, and check that nothing was lost or done twice.
 *
 * The workload (child_main) is a set of runs of two machines on a real SQLite database:
 *   crash/work   t0 > t1 > t2   t1 fails on its attempts 0 and 1 (RETRY) and succeeds at 2
 *   crash/abort  t0 > t1        t1 returns ABORT
 * Planned runs: q0..q3 (work, queue "q" limit 2), u0 (work, unqueued), a0 (abort, queue q),
 * after (work, queue q, run-after q0). Every transition writes one domain row through a commit
 * callback (dom: run, step, attempt) and every finalizer one (fin: run, outcome).
 *
 * Kill points: the child counts every point below, in total and per kind, and raises SIGKILL
 * at the n-th occurrence of a given kind (or at the n-th point overall).
 *   start      after fsm_start() committed START, before the run is scheduled
 *   resume     a resumed run was admitted (RESUME recorded)
 *   enter      a transition begins
 *   mid        the middle of a transition (slow work under way)
 *   commit     inside the checkpoint transaction, after the domain row was written and
 *              before COMMIT (the "between domain write and checkpoint" case)
 *   complete   just after a checkpoint committed (a transition boundary)
 *   error      a failed attempt, before its ERROR event is recorded
 *   halt       just after the HALT was recorded (abort: before the end step)
 *   finalizer  in the finalizer
 *   fin-commit inside the FINISH transaction, after the finalizer's row
 *   finish     just after FINISH committed
 *
 * Phase 1 (exhaustive): for every kind and every occurrence of it in a clean run (the counts
 * per kind do not depend on thread timing, so every point is reached), a fresh database, a
 * child killed there, then a child that resumes and finishes. Phase 1b: a child killed half
 * way, then one killed at its 1st, 2nd, 3rd RESUME (a crash while resuming), then recovery.
 * Phase 2 (chained): one database, children killed at pseudo-random points overall, one
 * after another, until one finishes. After each recovery the database is
 * checked: every run finished with its expected outcome; every domain row exactly once; one
 * finalizer row per run; one COMPLETE per transition and one FINISH per run; t1 succeeded at
 * attempt 2 (attempt counts survive crashes); the run-after run started after its predecessor
 * finished; and the queue limit held: the children record the concurrency of queue q's
 * transitions in a counter file under flock, and the maximum must not exceed 2.
 *
 * Usage: crash_fsm [STRIDE]   (STRIDE > 1 kills at every STRIDE-th occurrence only; default 1)
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsm/fsm.h"
#include "store/db.h"
#include "testutil.h"
#include "util/log.h"
#include "util/timeutil.h"

#define QUEUE_LIMIT         2
#define N_PLANNED           7
#define CHILD_WAIT_MS       60000
#define CHAIN_MAX_PROCESSES 400
/* Phase 1b kills at the 1st..RESUME_KILLS-th RESUME of a restarted child. */
#define RESUME_KILLS 3

struct planned {
    const char *resource;
    const char *machine; /* "work" or "abort" */
    const char *queue;   /* NULL = unqueued */
    const char *after;   /* resource of the run-after predecessor */
};

static const struct planned plan[N_PLANNED] = {
    {"q0", "work", "q", NULL},    {"q1", "work", "q", NULL},  {"q2", "work", "q", NULL},
    {"q3", "work", "q", NULL},    {"u0", "work", NULL, NULL}, {"a0", "abort", "q", NULL},
    {"after", "work", "q", "q0"},
};

static const char *const point_names[] = {"start",     "resume",     "enter", "mid",
                                          "commit",    "complete",   "error", "halt",
                                          "finalizer", "fin-commit", "finish"};
enum point {
    P_START,
    P_RESUME,
    P_ENTER,
    P_MID,
    P_COMMIT,
    P_COMPLETE,
    P_ERROR,
    P_HALT,
    P_FINALIZER,
    P_FIN_COMMIT,
    P_FINISH,
    P_COUNT
};

/* ---- the child ---------------------------------------------------------------------------- */

static const char *g_dir;
static int g_crash_kind; /* enum point, or -1: count all points */
static int g_crash_at;   /* 0 = never */
static atomic_int g_points;
static atomic_int g_kind_points[P_COUNT];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", g_dir, name);
}

static void point(enum point p)
{
    int n = atomic_fetch_add(&g_points, 1) + 1;
    int nk = atomic_fetch_add(&g_kind_points[p], 1) + 1;
    if (g_crash_at &&
        ((g_crash_kind < 0 && n == g_crash_at) || (g_crash_kind == (int)p && nk == g_crash_at))) {
        char path[512], line[64];
        path_in(path, sizeof(path), "killed_at");
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int len = snprintf(line, sizeof(line), "%d %s\n", n, point_names[p]);
        if (fd >= 0) {
            ssize_t w = write(fd, line, (size_t)len);
            (void)w;
            close(fd);
        }
        raise(SIGKILL);
    }
}

/* "cur max" as written by conc_update(). */
static void parse_pair(const char *buf, int *cur, int *max)
{
    char *end = NULL;
    *cur = (int)strtol(buf, &end, 10);
    *max = end ? (int)strtol(end, NULL, 10) : 0;
}

/* Concurrency of queue q's transitions, shared through a file under flock: "cur max". */
static void conc_update(int delta, bool reset)
{
    char path[512];
    path_in(path, sizeof(path), "concurrency");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        abort();
    flock(fd, LOCK_EX);
    char buf[64] = {0};
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    int cur = 0, max = 0;
    if (n > 0)
        parse_pair(buf, &cur, &max);
    cur = reset ? 0 : cur + delta;
    if (cur > max)
        max = cur;
    int len = snprintf(buf, sizeof(buf), "%d %d\n", cur, max);
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len)
        abort();
    flock(fd, LOCK_UN);
    close(fd);
}

static void exec_log(const char *version, const char *state, uint32_t attempt)
{
    char path[512], line[128];
    path_in(path, sizeof(path), "exec.log");
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int len = snprintf(line, sizeof(line), "%s %s %u\n", version, state, attempt);
    if (fd >= 0) {
        ssize_t w = write(fd, line, (size_t)len);
        (void)w;
        close(fd);
    }
}

struct dom_row {
    char run[FSM_ID_LEN + 1];
    char step[8];
    uint32_t attempt;
};

static int insert_dom(struct db *db, void *ud)
{
    struct dom_row *row = ud;
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO dom(run, step, attempt) VALUES(?,?,?)");
    if (!st)
        return -EIO;
    db_bind_text(st, 1, row->run);
    db_bind_text(st, 2, row->step);
    db_bind_i64(st, 3, row->attempt);
    int r = db_step(db, st);
    db_done(st);
    if (r < 0)
        return r;
    point(P_COMMIT); /* the row is written, the transaction not committed */
    return 0;
}

static struct fsm_result transition(struct fsm_run *run, void *ud)
{
    bool is_abort = ud != NULL;
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    /* Whether the run belongs to queue q comes from the plan, not from the engine. */
    bool queued = false;
    for (int i = 0; i < N_PLANNED; i++)
        if (!strcmp(plan[i].resource, info.resource_id))
            queued = plan[i].queue != NULL;
    exec_log(info.version.s, info.state, info.attempt);
    if (queued)
        conc_update(+1, false);
    point(P_ENTER);
    if (!strcmp(info.state, "t1") && !is_abort && info.attempt < 2) {
        if (queued)
            conc_update(-1, false);
        return fsm_retry("planned failure at attempt %u", info.attempt);
    }
    sleep_ms(2); /* slow work: other runs overlap here */
    point(P_MID);
    sleep_ms(2);
    struct dom_row *row = calloc(1, sizeof(*row));
    snprintf(row->run, sizeof(row->run), "%s", info.version.s);
    snprintf(row->step, sizeof(row->step), "%s", info.state);
    row->attempt = info.attempt;
    fsm_run_on_commit(run, insert_dom, row, free);
    if (queued)
        conc_update(-1, false);
    if (is_abort && !strcmp(info.state, "t1"))
        return fsm_abort("planned abort");
    return fsm_ok();
}

struct fin_row {
    char run[FSM_ID_LEN + 1];
    int outcome;
};

static int insert_fin(struct db *db, void *ud)
{
    struct fin_row *row = ud;
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO fin(run, outcome) VALUES(?,?)");
    if (!st)
        return -EIO;
    db_bind_text(st, 1, row->run);
    db_bind_i64(st, 2, row->outcome);
    int r = db_step(db, st);
    db_done(st);
    if (r < 0)
        return r;
    point(P_FIN_COMMIT);
    return 0;
}

static void finalizer(struct fsm_run *run, enum fsm_outcome outcome, const char *error, void *ud)
{
    (void)error;
    (void)ud;
    point(P_FINALIZER);
    struct fsm_run_info info;
    fsm_run_info(run, &info);
    struct fin_row *row = calloc(1, sizeof(*row));
    snprintf(row->run, sizeof(row->run), "%s", info.version.s);
    row->outcome = (int)outcome;
    fsm_run_on_commit(run, insert_fin, row, free);
}

static void observer(const struct fsm_event_info *ev, void *ud)
{
    (void)ud;
    switch (ev->type) {
    case FSM_EV_START:
        point(P_START);
        break;
    case FSM_EV_RESUME:
        point(P_RESUME);
        break;
    case FSM_EV_COMPLETE:
        point(P_COMPLETE);
        break;
    case FSM_EV_ERROR:
        point(P_ERROR);
        break;
    case FSM_EV_HALT:
        point(P_HALT);
        break;
    case FSM_EV_FINISH:
        point(P_FINISH);
        break;
    }
}

static int version_of(struct db *db, const char *resource, struct fsm_id *out)
{
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "SELECT version FROM fsm_runs WHERE resource_id=?");
    db_bind_text(st, 1, resource);
    int r = db_step(db, st);
    if (r == 1)
        r = fsm_id_parse((const char *)sqlite3_column_text(st, 0), out) == 0 ? 1 : -EINVAL;
    db_done(st);
    db_unlock(db);
    return r;
}

static int child_main(void)
{
    char path[512];
    path_in(path, sizeof(path), "child.log");
    int logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_WARN, logfd);
    conc_update(0, true); /* no other process runs: nothing is in flight */

    path_in(path, sizeof(path), "fsm.db");
    struct db *db = NULL;
    struct err e = {0};
    if (db_open(path, NULL, &db, &e) < 0 ||
        db_exec(db, "CREATE TABLE IF NOT EXISTS dom(run TEXT, step TEXT, attempt INTEGER);"
                    "CREATE TABLE IF NOT EXISTS fin(run TEXT, outcome INTEGER)") < 0)
        return 10;
    static const struct fsm_queue_cfg queues[] = {{"q", QUEUE_LIMIT}};
    struct fsm_config cfg = {.queues = queues, .n_queues = 1};
    struct fsm_manager *m = NULL;
    if (fsm_manager_open(db, &cfg, &m, &e) < 0)
        return 11;
    fsm_manager_set_observer(m, observer, NULL);
    static const struct fsm_retry_policy policy = {.max_attempts = 10,
                                                   .initial_backoff_ms = 1,
                                                   .max_backoff_ms = 2,
                                                   .multiplier = 2,
                                                   .on_exhausted = FSM_ABORT};
    static const fsm_finalizer_fn fins[] = {finalizer};
    struct fsm_transition_def work_t[3] = {
        {"t0", transition, &policy}, {"t1", transition, &policy}, {"t2", transition, &policy}};
    struct fsm_transition_def abort_t[2] = {{"t0", transition, &policy},
                                            {"t1", transition, &policy}};
    struct fsm_machine_def work = {.type = "crash",
                                   .action = "work",
                                   .transitions = work_t,
                                   .n_transitions = 3,
                                   .end_state = "done",
                                   .finalizers = fins,
                                   .n_finalizers = 1,
                                   .ud = NULL};
    struct fsm_machine_def ab = work;
    ab.action = "abort";
    ab.transitions = abort_t;
    ab.n_transitions = 2;
    ab.ud = (void *)1;
    struct fsm_machine *xw = NULL, *xa = NULL;
    if (fsm_register(m, &work, &xw) < 0 || fsm_register(m, &ab, &xa) < 0)
        return 12;
    if (fsm_manager_resume(m) < 0)
        return 13;

    /* Start what a previous life did not get to start (the database says what exists). */
    for (int i = 0; i < N_PLANNED; i++) {
        struct fsm_id v;
        if (version_of(db, plan[i].resource, &v) == 1)
            continue;
        struct fsm_id after;
        struct fsm_start_opts o = {.queue = plan[i].queue};
        if (plan[i].after) {
            if (version_of(db, plan[i].after, &after) != 1)
                return 14;
            o.run_after = &after;
        }
        int r = fsm_start(m, strcmp(plan[i].machine, "work") ? xa : xw, plan[i].resource, NULL, 0,
                          &o, &v);
        if (r < 0)
            return 15;
    }
    for (int i = 0; i < N_PLANNED; i++) {
        struct fsm_id v;
        if (version_of(db, plan[i].resource, &v) != 1)
            return 16;
        if (fsm_wait(m, &v, CHILD_WAIT_MS, NULL, NULL) < 0)
            return 17;
    }
    fsm_manager_close(m);
    db_close(db);
    path_in(path, sizeof(path), "points");
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%d", atomic_load(&g_points));
        for (int p = 0; p < P_COUNT; p++)
            fprintf(f, " %d", atomic_load(&g_kind_points[p]));
        fprintf(f, "\n");
        fclose(f);
    }
    return 0;
}

/* ---- the parent --------------------------------------------------------------------------- */

struct figures {
    int processes, kills, recoveries, checks;
    int kills_by_point[P_COUNT];
    long reexecuted; /* transition attempts that ran more than once */
    int max_concurrency;
};

/* Runs the workload in a child; returns its exit code, or 128 + signal. */
static int spawn(const char *dir, int crash_kind, int crash_at, struct figures *fig)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        g_dir = dir;
        g_crash_kind = crash_kind;
        g_crash_at = crash_at;
        _exit(child_main());
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    fig->processes++;
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

static int fail_count;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "crash_fsm: check failed (%s): ", #cond);                              \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            fail_count++;                                                                          \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

static int64_t q1(sqlite3 *h, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -999999;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void read_concurrency(const char *dir, int *max)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/concurrency", dir);
    char *s = tu_read_file(path, NULL);
    int cur = 0, m = 0;
    if (s)
        parse_pair(s, &cur, &m);
    free(s);
    *max = m;
}

/* Everything finished exactly once, with the right outcomes; see the file comment. */
static int verify(const char *dir, struct figures *fig, const char *what)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/fsm.db", dir);
    sqlite3 *h = NULL;
    if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "crash_fsm: %s: cannot open %s\n", what, path);
        fail_count++;
        sqlite3_close(h);
        return -1;
    }
    int r = 0;
    do {
        fig->checks++;
        int64_t n = q1(h, "SELECT count(*) FROM fsm_runs");
        if (n != N_PLANNED) {
            fprintf(stderr, "crash_fsm: %s: %lld runs, expected %d\n", what, (long long)n,
                    N_PLANNED);
            r = -1;
            break;
        }
        CHECK(q1(h, "SELECT count(DISTINCT resource_id) FROM fsm_runs") == N_PLANNED,
              "%s: a planned run was started twice", what);
        CHECK(q1(h, "SELECT count(*) FROM fsm_runs WHERE status<>3") == 0, "%s: unfinished runs",
              what);
        CHECK(q1(h, "SELECT count(*) FROM fsm_runs WHERE action='work' AND outcome<>0") == 0,
              "%s: a work run did not end ok", what);
        CHECK(q1(h, "SELECT count(*) FROM fsm_runs WHERE action='abort' AND outcome=2 AND"
                    " error='planned abort' AND error_state='t1'") == 1,
              "%s: the abort run did not end ABORT at t1", what);
        /* Domain rows: exactly once each. */
        CHECK(q1(h, "SELECT count(*) FROM (SELECT run, step FROM dom GROUP BY run, step"
                    " HAVING count(*) > 1)") == 0,
              "%s: a domain row was written twice", what);
        CHECK(q1(h, "SELECT count(*) FROM dom d JOIN fsm_runs r ON r.version=d.run WHERE"
                    " r.action='work'") == 3LL * (N_PLANNED - 1),
              "%s: work domain rows missing", what);
        CHECK(q1(h, "SELECT count(*) FROM dom d JOIN fsm_runs r ON r.version=d.run WHERE"
                    " r.action='abort'") == 1,
              "%s: the abort run must have its t0 row only", what);
        CHECK(q1(h, "SELECT count(*) FROM dom WHERE step='t1' AND attempt<>2 AND run IN"
                    " (SELECT version FROM fsm_runs WHERE action='work')") == 0,
              "%s: t1 did not succeed at attempt 2 (attempt count lost)", what);
        CHECK(q1(h, "SELECT count(*) FROM fin f JOIN fsm_runs r ON r.version=f.run AND"
                    " r.outcome=f.outcome") == N_PLANNED &&
                  q1(h, "SELECT count(*) FROM fin") == N_PLANNED,
              "%s: finalizer rows not exactly one per run", what);
        /* History: one COMPLETE per transition, one FINISH per run, seq contiguous. */
        CHECK(q1(h, "SELECT count(*) FROM (SELECT version, state FROM fsm_events WHERE type=3"
                    " GROUP BY version, state HAVING count(*) > 1)") == 0,
              "%s: a transition completed twice", what);
        CHECK(q1(h, "SELECT count(*) FROM fsm_events WHERE type=3") == 3LL * (N_PLANNED - 1) + 1,
              "%s: COMPLETE events missing", what);
        CHECK(q1(h, "SELECT count(*) FROM fsm_events WHERE type=5") == N_PLANNED,
              "%s: FINISH events not one per run", what);
        CHECK(q1(h, "SELECT count(*) FROM fsm_runs r WHERE (SELECT max(seq) FROM fsm_events e"
                    " WHERE e.version=r.version) <> (SELECT count(*) FROM fsm_events e WHERE"
                    " e.version=r.version) OR next_seq <> (SELECT count(*) FROM fsm_events e"
                    " WHERE e.version=r.version) + 1") == 0,
              "%s: event sequence has holes", what);
        CHECK(q1(h, "SELECT count(*) FROM fsm_events WHERE type=2 AND state='t1' AND attempt"
                    " NOT IN (0, 1)") == 0,
              "%s: t1 recorded an unexpected failed attempt", what);
        CHECK(q1(h, "SELECT count(*) FROM fsm_runs a, fsm_runs p WHERE a.resource_id='after'"
                    " AND p.resource_id='q0' AND a.started_ms >= p.finished_ms AND"
                    " a.run_after = p.version") == 1,
              "%s: the run-after run started before its predecessor finished", what);
        int max = 0;
        read_concurrency(dir, &max);
        if (max > fig->max_concurrency)
            fig->max_concurrency = max;
        CHECK(max <= QUEUE_LIMIT, "%s: queue q ran %d transitions at once (limit %d)", what, max,
              QUEUE_LIMIT);
    } while (0);
    sqlite3_close(h);

    /* At-least-once evidence: attempts that ran more than once (re-executed after a kill). */
    snprintf(path, sizeof(path), "%s/exec.log", dir);
    char *log = tu_read_file(path, NULL);
    if (log) {
        size_t lines = 0;
        char **v = NULL;
        for (char *save = NULL, *l = strtok_r(log, "\n", &save); l;
             l = strtok_r(NULL, "\n", &save)) {
            v = realloc(v, (lines + 1) * sizeof(*v));
            v[lines++] = l;
        }
        for (size_t i = 0; i < lines; i++)
            for (size_t j = 0; j < i; j++)
                if (!strcmp(v[i], v[j])) {
                    fig->reexecuted++;
                    break;
                }
        free(v);
        free(log);
    }
    return r;
}

static void note_kill(const char *dir, struct figures *fig)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/killed_at", dir);
    char *s = tu_read_file(path, NULL);
    if (!s)
        return;
    /* "<n> <point name>\n" */
    const char *name = strchr(s, ' ');
    if (name) {
        name++;
        size_t len = strcspn(name, "\n");
        for (int p = 0; p < P_COUNT; p++)
            if (strlen(point_names[p]) == len && !strncmp(name, point_names[p], len))
                fig->kills_by_point[p]++;
    }
    free(s);
    unlink(path);
}

static char *fresh_dir(const char *base, const char *name)
{
    char *d = NULL;
    if (asprintf(&d, "%s/%s", base, name) < 0)
        exit(2);
    tu_rmrf(d);
    if (mkdir(d, 0700) < 0) {
        perror("mkdir");
        exit(2);
    }
    return d;
}

int main(int argc, char **argv)
{
    int stride = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 1;
    if (stride < 1)
        stride = 1;
    char *base = tu_mkdtemp("crash");
    if (!base)
        return 2;
    struct figures fig = {0};
    int64_t t0 = mono_ms();

    /* A clean run: how many kill points of each kind the workload has. */
    char *d = fresh_dir(base, "clean");
    int rc = spawn(d, -1, 0, &fig);
    if (rc != 0) {
        fprintf(stderr, "crash_fsm: the clean run failed (exit %d); see %s/child.log\n", rc, d);
        return 1;
    }
    verify(d, &fig, "clean run");
    char path[512];
    snprintf(path, sizeof(path), "%s/points", d);
    char *s = tu_read_file(path, NULL);
    int points = 0, per_kind[P_COUNT] = {0};
    if (s) {
        char *p = s;
        points = (int)strtol(p, &p, 10);
        for (int k = 0; k < P_COUNT; k++)
            per_kind[k] = (int)strtol(p, &p, 10);
    }
    free(s);
    free(d);
    if (points < 20) {
        fprintf(stderr, "crash_fsm: only %d kill points in a clean run\n", points);
        return 1;
    }

    /* Phase 1: every occurrence of every kind of point, one kill, then recovery. */
    int not_reached = 0;
    for (int kind = 0; kind < P_COUNT; kind++) {
        for (int k = 1; k <= per_kind[kind]; k += stride) {
            char name[48], what[64];
            snprintf(name, sizeof(name), "%s-%d", point_names[kind], k);
            snprintf(what, sizeof(what), "kill at %s #%d", point_names[kind], k);
            d = fresh_dir(base, name);
            rc = spawn(d, kind, k, &fig);
            if (rc == 128 + SIGKILL) {
                fig.kills++;
                note_kill(d, &fig);
            } else if (rc == 0) {
                not_reached++;
            } else {
                fprintf(stderr, "crash_fsm: child (%s) exited %d; see %s/child.log\n", what, rc, d);
                fail_count++;
            }
            rc = spawn(d, -1, 0, &fig);
            fig.recoveries++;
            if (rc != 0) {
                fprintf(stderr, "crash_fsm: recovery after %s exited %d; see %s/child.log\n", what,
                        rc, d);
                fail_count++;
            } else if (verify(d, &fig, what) == 0) {
                tu_rmrf(d);
            }
            free(d);
        }
    }

    /* Phase 1b: a crash while resuming. */
    for (int k = 1; k <= RESUME_KILLS; k++) {
        char name[32], what[64];
        snprintf(name, sizeof(name), "resume-%d", k);
        snprintf(what, sizeof(what), "kill at resume #%d", k);
        d = fresh_dir(base, name);
        rc = spawn(d, -1, points / 2, &fig); /* leaves unfinished runs */
        if (rc == 128 + SIGKILL) {
            fig.kills++;
            note_kill(d, &fig);
        }
        rc = spawn(d, P_RESUME, k, &fig);
        if (rc == 128 + SIGKILL) {
            fig.kills++;
            note_kill(d, &fig);
        } else {
            not_reached++; /* fewer unfinished runs than k */
        }
        rc = spawn(d, -1, 0, &fig);
        fig.recoveries++;
        if (rc != 0) {
            fprintf(stderr, "crash_fsm: recovery after %s exited %d; see %s/child.log\n", what, rc,
                    d);
            fail_count++;
        } else if (verify(d, &fig, what) == 0) {
            tu_rmrf(d);
        }
        free(d);
    }

    /* Phase 2: one database, killed again and again (also while resuming). */
    d = fresh_dir(base, "chain");
    unsigned seed = 12345;
    int chain = 0;
    for (;; chain++) {
        if (chain >= CHAIN_MAX_PROCESSES) {
            fprintf(stderr, "crash_fsm: the chained run did not finish in %d processes\n",
                    CHAIN_MAX_PROCESSES);
            fail_count++;
            break;
        }
        int k = 1 + (int)(rand_r(&seed) % 30);
        rc = spawn(d, -1, k, &fig);
        if (rc == 128 + SIGKILL) {
            fig.kills++;
            note_kill(d, &fig);
            continue;
        }
        if (rc != 0) {
            fprintf(stderr, "crash_fsm: chained child exited %d; see %s/child.log\n", rc, d);
            fail_count++;
        }
        break;
    }
    if (verify(d, &fig, "chained kills") == 0)
        tu_rmrf(d);
    free(d);

    double secs = (double)(mono_ms() - t0) / 1000.0;
    printf("crash_fsm: %d kill points in the workload (%d runs, queue limit %d), stride %d\n",
           points, N_PLANNED, QUEUE_LIMIT, stride);
    printf("crash_fsm: %d processes, %d SIGKILLs (%d in one chain of %d processes), %d"
           " recoveries, %d database checks, %d points not reached\n",
           fig.processes, fig.kills, chain, chain + 1, fig.recoveries, fig.checks, not_reached);
    printf("crash_fsm: points per kind in a clean run:");
    for (int p = 0; p < P_COUNT; p++)
        printf(" %s=%d", point_names[p], per_kind[p]);
    printf("\n");
    printf("crash_fsm: kills by point:");
    for (int p = 0; p < P_COUNT; p++)
        printf(" %s=%d", point_names[p], fig.kills_by_point[p]);
    printf("\n");
    printf("crash_fsm: re-executed transition attempts (at-least-once): %ld; max concurrency"
           " of queue q: %d (limit %d); %.1f s\n",
           fig.reexecuted, fig.max_concurrency, QUEUE_LIMIT, secs);
    if (fig.max_concurrency < QUEUE_LIMIT) {
        fprintf(stderr, "crash_fsm: queue q never reached its limit: the concurrency probe"
                        " proves nothing\n");
        fail_count++;
    }
    for (int p = 0; p < P_COUNT; p++)
        if ((per_kind[p] > 0 || p == P_RESUME) && fig.kills_by_point[p] == 0) {
            fprintf(stderr, "crash_fsm: no kill at point '%s'\n", point_names[p]);
            fail_count++;
        }
    if (fail_count) {
        fprintf(stderr, "crash_fsm: %d failures; directories kept under %s\n", fail_count, base);
        free(base);
        return 1;
    }
    tu_rmrf(base);
    free(base);
    printf("crash_fsm: ok\n");
    return 0;
}
