/*
 * fsm_bench.c: what a durable FSM transition costs, next to the cheapest durable write SQLite
 * can do, measured in the same run on the same database file.
 *
 *   baseline   BEGIN IMMEDIATE; INSERT one row; COMMIT  (through store/db.h, like everyone)
 *   fsm        runs of a machine whose every transition writes that same row through a
 *              commit callback, i.e. inside its checkpoint transaction
 *
 * Same file, same WAL mode, same `synchronous` setting, same row. One transition's cost is
 * the time between two consecutive COMPLETE events of a run (the observer is called right
 * after each checkpoint commits): the transition function plus its checkpoint transaction,
 * nothing else. One bare transaction's cost is timed the same way, one by one. Both are
 * compared by their medians (robust to a neighbour's I/O burst on a shared disk) and their
 * means. Baseline and FSM runs alternate in rounds so that drift of the disk's speed hits
 * both. The per-run writes (START, the RUNNING marker, FINISH) and the thread start are
 * reported apart, and in the all-in figure (whole runs / transitions).
 *
 * On a shared machine fsync latency drifts by several times within a minute, which swamps
 * those comparisons. So the headline ratio is *paired*: a third machine's transitions first
 * run one bare transaction themselves (timed), then do the same work as above; the
 * transition's own cost is the interval between its COMPLETE and the previous one minus that
 * bare transaction. Each pair is measured within milliseconds on the same disk, and the
 * median of the per-pair ratios is what is compared with the target.
 *
 * Usage: fsm_bench [--dir DIR] [--runs N] [--transitions T] [--baseline N] [--sync full|normal]
 * DIR must be on the file system you care about: on tmpfs fsync is free and the ratio
 * measures CPU only.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsm/fsm.h"
#include "store/db.h"
#include "util/log.h"
#include "util/timeutil.h"

#define BENCH_MAX_TRANSITIONS 64
/* Baseline and FSM runs alternate in this many rounds (even: the median is a mean of two). */
#define BENCH_ROUNDS 10

static int64_t next_key;

/* The row both sides write. ud is unused (a commit callback's signature). */
static int insert_row(struct db *db, void *ud)
{
    (void)ud;
    sqlite3_stmt *st = db_prepare(db, "INSERT INTO bench_rows(k, v) VALUES(?, ?)");
    if (!st)
        return -EIO;
    db_bind_i64(st, 1, __atomic_add_fetch(&next_key, 1, __ATOMIC_RELAXED));
    db_bind_text(st, 2, "a domain row, as a transition would write it");
    int r = db_step(db, st);
    db_done(st);
    return r < 0 ? r : 0;
}

static struct fsm_result step(struct fsm_run *run, void *ud)
{
    (void)ud;
    fsm_run_on_commit(run, insert_row, NULL, NULL);
    return fsm_ok();
}

/* Set by paired_step, read by the observer on the same (run) thread. */
static double pair_bare;

/* A bare transaction (timed), then the same as step(). */
static struct fsm_result paired_step(struct fsm_run *run, void *ud)
{
    (void)ud;
    struct db *db = fsm_manager_db(fsm_run_manager(run));
    double t0 = mono_s();
    if (db_begin(db) < 0 || insert_row(db, NULL) < 0 || db_commit(db) < 0)
        return fsm_abort("bare transaction failed: %s", db_errmsg(db));
    pair_bare = mono_s() - t0;
    fsm_run_on_commit(run, insert_row, NULL, NULL);
    return fsm_ok();
}

/* A positive int option, or exit with usage. */
static int int_arg(const char *name, const char *v)
{
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 0 || n > 1000000000L) {
        fprintf(stderr, "fsm_bench: --%s needs a number, not '%s'\n", name, v);
        exit(2);
    }
    return (int)n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Samples in seconds. */
struct samples {
    double *v;
    size_t n, cap;
};

static void add_sample(struct samples *s, double x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof(double));
        if (!s->v)
            exit(1);
    }
    s->v[s->n++] = x;
}

static double median(struct samples *s)
{
    qsort(s->v, s->n, sizeof(double), cmp_double);
    return s->n % 2 ? s->v[s->n / 2] : (s->v[s->n / 2 - 1] + s->v[s->n / 2]) / 2;
}

static double mean(const struct samples *s)
{
    double t = 0;
    for (size_t i = 0; i < s->n; i++)
        t += s->v[i];
    return t / (double)s->n;
}

static void baseline(struct db *db, int n, struct samples *out)
{
    for (int i = 0; i < n; i++) {
        double t0 = mono_s();
        if (db_begin(db) < 0 || insert_row(db, NULL) < 0 || db_commit(db) < 0) {
            fprintf(stderr, "fsm_bench: baseline write failed: %s\n", db_errmsg(db));
            exit(1);
        }
        if (out)
            add_sample(out, mono_s() - t0);
    }
}

/* The observer: the time between consecutive COMPLETE events of a run is one transition. */
struct timing {
    struct samples *transitions; /* NULL while warming up */
    struct samples *pair_ratio;  /* paired runs: transition cost / bare transaction */
    struct samples *pair_cost, *pair_base;
    double last; /* previous COMPLETE of the current run, 0 = none yet */
};

static void observe(const struct fsm_event_info *ev, void *ud)
{
    struct timing *t = ud;
    if (ev->type != FSM_EV_COMPLETE)
        return;
    double now = mono_s();
    if (t->last > 0 && t->transitions) {
        if (!strcmp(ev->run->action, "paired")) {
            double cost = now - t->last - pair_bare;
            add_sample(t->pair_ratio, cost / pair_bare);
            add_sample(t->pair_cost, cost);
            add_sample(t->pair_base, pair_bare);
        } else {
            add_sample(t->transitions, now - t->last);
        }
    }
    t->last = now;
}

/* Runs n runs of machine x one after the other; returns the total seconds. */
static double fsm_runs(struct fsm_manager *m, struct fsm_machine *x, int n, struct timing *t)
{
    double t0 = mono_s();
    for (int i = 0; i < n; i++) {
        char res[32];
        snprintf(res, sizeof(res), "bench-%d", i);
        struct fsm_id v;
        enum fsm_outcome o;
        t->last = 0;
        if (fsm_start(m, x, res, NULL, 0, NULL, &v) < 0 || fsm_wait(m, &v, -1, &o, NULL) < 0 ||
            o != FSM_OK) {
            fprintf(stderr, "fsm_bench: run failed\n");
            exit(1);
        }
    }
    return mono_s() - t0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int runs = 100, transitions = 20, nbase = 1000;
    enum db_sync sync = DB_SYNC_FULL;
    static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
                                         {"runs", required_argument, NULL, 'r'},
                                         {"transitions", required_argument, NULL, 't'},
                                         {"baseline", required_argument, NULL, 'b'},
                                         {"sync", required_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "d:r:t:b:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 'r':
            runs = int_arg("runs", optarg);
            break;
        case 't':
            transitions = int_arg("transitions", optarg);
            break;
        case 'b':
            nbase = int_arg("baseline", optarg);
            break;
        case 's':
            if (!strcmp(optarg, "full"))
                sync = DB_SYNC_FULL;
            else if (!strcmp(optarg, "normal"))
                sync = DB_SYNC_NORMAL;
            else
                return fprintf(stderr, "fsm_bench: --sync full|normal\n"), 2;
            break;
        default:
            printf("Usage: fsm_bench [--dir DIR] [--runs N] [--transitions T] [--baseline N]"
                   " [--sync full|normal]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (runs < 1 || nbase < 1 || transitions < 2 || transitions > BENCH_MAX_TRANSITIONS)
        return fprintf(stderr, "fsm_bench: need runs >= 1, baseline >= 1, 2 <= T <= %d\n",
                       BENCH_MAX_TRANSITIONS),
               2;
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_WARN, 2);

    char tmpl[512];
    if (!dir) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpl, sizeof(tmpl), "%s/thinimg-fsm-bench-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpl))
            return perror("mkdtemp"), 1;
        dir = tmpl;
    }
    char path[600];
    snprintf(path, sizeof(path), "%s/bench.db", dir);
    unlink(path);
    struct db_options o = {.synchronous = sync};
    struct db *db = NULL;
    struct err e = {0};
    if (db_open(path, &o, &db, &e) < 0 ||
        db_exec(db, "CREATE TABLE bench_rows(k INTEGER, v TEXT)") < 0)
        return fprintf(stderr, "fsm_bench: %s\n", e.msg), 1;
    struct fsm_manager *m = NULL;
    if (fsm_manager_open(db, NULL, &m, &e) < 0)
        return fprintf(stderr, "fsm_bench: %s\n", e.msg), 1;

    static char names[BENCH_MAX_TRANSITIONS][16];
    struct fsm_transition_def defs[BENCH_MAX_TRANSITIONS];
    for (int i = 0; i < transitions; i++) {
        snprintf(names[i], sizeof(names[i]), "step-%d", i);
        defs[i] = (struct fsm_transition_def){names[i], step, NULL};
    }
    struct fsm_machine_def longdef = {.type = "bench",
                                      .action = "long",
                                      .transitions = defs,
                                      .n_transitions = (size_t)transitions,
                                      .end_state = "done"};
    struct fsm_machine_def shortdef = longdef;
    shortdef.action = "short";
    shortdef.n_transitions = 1;
    struct fsm_transition_def pdefs[BENCH_MAX_TRANSITIONS];
    for (int i = 0; i < transitions; i++)
        pdefs[i] = (struct fsm_transition_def){names[i], paired_step, NULL};
    struct fsm_machine_def paireddef = longdef;
    paireddef.action = "paired";
    paireddef.transitions = pdefs;
    struct fsm_machine *xl = NULL, *xs = NULL, *xp = NULL;
    if (fsm_register(m, &longdef, &xl) < 0 || fsm_register(m, &shortdef, &xs) < 0 ||
        fsm_register(m, &paireddef, &xp) < 0)
        return 1;

    struct timing timing = {0};
    fsm_manager_set_observer(m, observe, &timing);

    /* Warm up: statement cache, page cache, and a WAL file grown to its working size (the
     * first commits extend the file, which costs more than the steady state). */
    baseline(db, 200, NULL);
    fsm_runs(m, xl, 5, &timing);

    struct samples sb = {0}, st = {0}, pr = {0}, pc = {0}, pb = {0};
    timing.transitions = &st;
    timing.pair_ratio = &pr;
    timing.pair_cost = &pc;
    timing.pair_base = &pb;
    double long_total = 0, short_total = 0;
    int per_base = nbase / BENCH_ROUNDS + 1, per_runs = runs / BENCH_ROUNDS + 1;
    for (int round = 0; round < BENCH_ROUNDS; round++) {
        baseline(db, per_base, &sb);
        long_total += fsm_runs(m, xl, per_runs, &timing);
        short_total += fsm_runs(m, xs, per_runs, &timing);
        fsm_runs(m, xp, per_runs, &timing);
    }
    int nruns = per_runs * BENCH_ROUNDS;
    double base_mean = mean(&sb), base_med = median(&sb);
    double tr_mean = mean(&st), tr_med = median(&st);
    double all_in = long_total / nruns / transitions;
    /* A 1-transition run is the per-run writes plus one transition. */
    double per_run_overhead = short_total / nruns - tr_mean;

    printf("fsm_bench: %s, journal_mode=WAL, synchronous=%s\n", path,
           sync == DB_SYNC_FULL ? "FULL" : "NORMAL");
    printf("  %-44s %9s %9s %14s\n", "", "median", "mean", "per second");
    printf("  %-44s %7.1fus %7.1fus %10.0f tx/s   (%zu samples)\n",
           "bare transaction (BEGIN; 1 INSERT; COMMIT)", base_med * 1e6, base_mean * 1e6,
           1 / base_mean, sb.n);
    printf("  %-44s %7.1fus %7.1fus %10.0f transitions/s   (%zu samples)\n",
           "fsm transition (checkpoint + same INSERT)", tr_med * 1e6, tr_mean * 1e6, 1 / tr_mean,
           st.n);
    printf("  %-44s %17.1fus %10.0f transitions/s   (%d runs x %d transitions)\n",
           "fsm all-in (whole runs / transitions)", all_in * 1e6, 1 / all_in, nruns, transitions);
    printf("  %-44s %17.1fus per run\n", "fsm run overhead (START, RUNNING, FINISH, thread)",
           per_run_overhead * 1e6);
    printf("  ratio transition / bare transaction: %.2f (medians), %.2f (means)\n",
           tr_med / base_med, tr_mean / base_mean);
    printf("  ratio all-in / bare transaction:     %.2f (means)\n", all_in / base_mean);
    double pmed = median(&pr), pcost = median(&pc), pbase = median(&pb);
    qsort(pr.v, pr.n, sizeof(double), cmp_double);
    printf("  paired (bare transaction, then the transition, back to back; %zu pairs):\n", pr.n);
    printf("    transition %.1fus, bare transaction %.1fus (medians)\n", pcost * 1e6, pbase * 1e6);
    printf("    RATIO transition / bare transaction: %.2f   (median of pairs; quartiles %.2f..%.2f;"
           " target <= 1.5)\n",
           pmed, pr.v[pr.n / 4], pr.v[pr.n * 3 / 4]);
    free(sb.v);
    free(st.v);
    free(pr.v);
    free(pc.v);
    free(pb.v);

    fsm_manager_close(m);
    db_close(db);
    if (dir == tmpl) {
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "fsm_bench: could not remove %s\n", dir);
    }
    return 0;
}
