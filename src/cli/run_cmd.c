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
#include "dm/pool.h"
#include "util/log.h"
#include "util/timeutil.h"

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

int run_env_open(struct cli *cli, const char *command, const struct run_env_opts *o,
                 struct run_env *env, struct err *e)
{
    memset(env, 0, sizeof(*env));
    env->lock.fd = -1;
    /* The progress display tells what happens; routine log lines would only break it up.
     * Warnings and errors still show; -v or --log-level bring the rest back. */
    if (!cli->log_level_set)
        log_setup(cli->log_format, LOG_LVL_WARN, STDERR_FILENO);
    int r = config_ensure_dirs(&cli->cfg);
    if (r < 0)
        return err_set(e, r, "cannot create state directory %s: %s", cli->cfg.state_dir,
                       strerror(-r));
    r = proc_lock_acquire(cli->cfg.lock_path, command, o->wait_lock ? -1 : 0, &env->lock, NULL, e);
    if (r < 0)
        return r;
    r = cli_open_db(cli, false, &env->db, e);
    if (r < 0) {
        run_env_close(env);
        return r;
    }
    if (!o->no_pool_setup) {
        struct pool_config pc = {.name = cli->cfg.pool_name, .pool_dir = cli->cfg.pool_dir};
        struct pool_info pi;
        r = pool_setup(env->db, &pc, &pi, e);
        if (r < 0) {
            run_env_close(env);
            return r;
        }
        if (pi.action == POOL_ACTION_CREATED || pi.action == POOL_ACTION_REASSEMBLED ||
            pi.action == POOL_ACTION_ADOPTED)
            log_info("thin pool ready", "pool=%s action=%s", cli->cfg.pool_name,
                     pool_action_name(pi.action));
    }
    struct pipeline_opts po = {.cfg = &cli->cfg,
                               .source = o->source,
                               .device_bytes = o->device_bytes,
                               .fetch_limit = o->fetch_limit,
                               .unpack_limit = o->unpack_limit,
                               .skip_health = getenv("THINIMG_SKIP_HEALTH_CHECKS") != NULL};
    r = pipeline_open(env->db, &po, &env->p, e);
    if (r < 0) {
        run_env_close(env);
        return r;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    g_interrupted = 0;
    if (o->no_resume)
        return 0;
    r = pipeline_resume(env->p);
    if (r < 0) {
        run_env_close(env);
        return err_set(e, r, "cannot resume unfinished runs");
    }
    return 0;
}

void run_env_close(struct run_env *env)
{
    if (env->p) {
        pipeline_shutdown(env->p, RUN_SHUTDOWN_TIMEOUT_MS);
        pipeline_close(env->p);
        env->p = NULL;
    }
    if (env->db) {
        db_close(env->db);
        env->db = NULL;
    }
    proc_lock_release(&env->lock);
}

int run_env_wait(struct cli *cli, struct run_env *env, const struct fsm_id *run,
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

bool run_env_interrupted(void)
{
    return g_interrupted != 0;
}

int run_error_exit_code(enum fsm_outcome outcome, const char *error)
{
    int r = pipeline_run_errno(outcome, error);
    /* A cancelled or otherwise failed run is a failure, whatever the errno would say. */
    return r == 0 ? EXIT_OK : r == -ECANCELED || r == -EIO ? EXIT_FAIL : cli_exit_code(r);
}
