/*
 * run_cmd.c: what the commands that drive the pipeline share: taking the process lock,
 * setting up the pool, opening the pipeline, waiting for a run with progress, handling
 * SIGINT/SIGTERM (the run stays resumable), and turning a run's outcome into an exit code.
 */
#include "cli/run_cmd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/progress.h"
#include "daemon/client.h"
#include "daemon/views.h"
#include "util/log.h"
#include "util/timeutil.h"

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

void run_catch_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    g_interrupted = 0;
}

void run_env_catch_signals(struct host *h, void *ud)
{
    (void)h;
    (void)ud;
    run_catch_signals();
}

int run_env_open(struct cli *cli, const char *command, const struct run_env_opts *o,
                 struct host *env, struct err *e)
{
    /* The progress display tells what happens; routine log lines would only break it up.
     * Warnings and errors still show; -v or --log-level bring the rest back. */
    if (!cli->log_level_set)
        log_setup(cli->log_format, LOG_LVL_WARN, STDERR_FILENO);
    struct host_opts ho = {
        .cfg = &cli->cfg,
        .holder = command,
        .wait_lock = o->wait_lock,
        .pool = HOST_POOL_SETUP,
        .no_resume = o->no_resume,
        .pipeline = {.source = o->source,
                     .device_bytes = o->device_bytes,
                     .queues = o->queues,
                     .skip_health = getenv("THINIMG_SKIP_HEALTH_CHECKS") != NULL,
                     .defer_background = o->no_queued_work},
        .before_resume = run_env_catch_signals,
    };
    return host_open(&ho, env, e);
}

void run_env_close(struct host *env)
{
    host_close(env, RUN_SHUTDOWN_TIMEOUT_MS);
}

int run_env_wait(struct cli *cli, struct host *env, const struct fsm_id *run,
                 enum fsm_outcome *outcome, char **error)
{
    struct progress *pg = NULL;
    progress_start(pipeline_manager(env->p), stderr, isatty(STDERR_FILENO) == 1, cli->quiet, &pg);
    int r;
    for (;;) {
        r = fsm_wait(pipeline_manager(env->p), run, PROGRESS_TICK_MS, outcome, error);
        if (r != -ETIMEDOUT)
            break;
        progress_tick(pg);
        if (g_interrupted) {
            r = -EINTR;
            break;
        }
    }
    progress_stop(pg);
    return r;
}

/* ---- a daemon does the work ------------------------------------------------------------- */

/* How long one API request may take before the daemon counts as gone. */
#define RUN_REMOTE_REQUEST_MS 30000

int run_remote_start(struct api_client *c, const char *path, json_t *body, struct fsm_id *run,
                     struct err *e)
{
    long status = 0;
    json_t *reply = NULL;
    int r = api_call(c, "POST", path, body, RUN_REMOTE_REQUEST_MS, &status, &reply, e);
    if (r < 0)
        return r;
    if (status / 100 != 2) {
        r = api_reply_error(status, reply, e);
        json_decref(reply);
        return r;
    }
    const char *v = json_string_value(json_object_get(reply, "run"));
    r = v ? fsm_id_parse(v, run) : -EBADMSG;
    json_decref(reply);
    return r < 0 ? err_set(e, -EPROTO, "the daemon's reply names no run") : 0;
}

/* The daemon's unfinished runs, for the progress display. */
static void remote_progress(struct api_client *c, struct progress *pg)
{
    long status = 0;
    json_t *reply = NULL;
    if (api_call(c, "GET", "/v1/runs", NULL, RUN_REMOTE_REQUEST_MS, &status, &reply, NULL) < 0 ||
        status != 200) {
        json_decref(reply);
        return;
    }
    json_t *arr = json_object_get(reply, "runs");
    size_t n = json_array_size(arr), k = 0;
    struct fsm_run_record *v = calloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; v && i < n; i++)
        if (view_run_parse(json_array_get(arr, i), &v[k]) == 0)
            k++;
    if (v)
        progress_update(pg, v, k);
    for (size_t i = 0; i < k; i++)
        fsm_run_record_free(&v[i]);
    free(v);
    json_decref(reply);
}

int run_remote_wait(struct cli *cli, struct api_client *c, const struct fsm_id *run,
                    enum fsm_outcome *outcome, char **error, struct err *e)
{
    *error = NULL;
    run_catch_signals();
    struct progress *pg = NULL;
    progress_start(NULL, stderr, isatty(STDERR_FILENO) == 1, cli->quiet, &pg);
    char path[128];
    snprintf(path, sizeof(path), "/v1/runs/%s/wait?timeout=%.2f", run->s,
             PROGRESS_TICK_MS / 1000.0);
    int r;
    for (;;) {
        long status = 0;
        json_t *reply = NULL;
        r = api_call(c, "GET", path, NULL, RUN_REMOTE_REQUEST_MS, &status, &reply, e);
        if (r == 0 && status != 200)
            r = api_reply_error(status, reply, e);
        if (r == 0 && json_is_true(json_object_get(reply, "finished"))) {
            struct fsm_run_record rec;
            r = view_run_parse(json_object_get(reply, "run"), &rec);
            if (r == 0) {
                *outcome = rec.outcome;
                *error = rec.error;
                rec.error = NULL;
                fsm_run_record_free(&rec);
            } else {
                r = err_set(e, -EPROTO, "the daemon's reply about run %s is not a run", run->s);
            }
            json_decref(reply);
            break;
        }
        json_decref(reply);
        if (r < 0) {
            err_prefix(e, "lost the daemon while waiting for run %s (it resumes when the daemon "
                          "starts again; thinimg runs show %s)",
                       run->s, run->s);
            break;
        }
        if (g_interrupted) {
            r = -EINTR;
            break;
        }
        remote_progress(c, pg);
        if (g_interrupted) {
            r = -EINTR;
            break;
        }
    }
    progress_stop(pg);
    return r;
}

struct db *run_remote_db(struct cli *cli, const char *command)
{
    struct db *db = NULL;
    struct err e = {0};
    int r = cli_open_db(cli, true, &db, &e);
    if (r < 0) {
        cli_fail(command, r, &e);
        return NULL;
    }
    return db;
}

bool run_env_interrupted(void)
{
    return g_interrupted != 0;
}

int run_error_exit_code(struct db *db, const struct fsm_id *run, enum fsm_outcome outcome)
{
    struct fsm_run_record rec = {0};
    enum err_kind kind = ERR_KIND_OTHER;
    if (fsm_db_get_run(db, run, &rec) == 0) {
        kind = rec.error_kind;
        fsm_run_record_free(&rec);
    }
    int r = pipeline_run_errno(outcome, kind);
    /* A cancelled or otherwise failed run is a failure, whatever the errno would say. */
    return r == 0 ? EXIT_OK : r == -ECANCELED || r == -EIO ? EXIT_FAIL : cli_exit_code(r);
}
