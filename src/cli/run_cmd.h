/*
 * run_cmd.h: the environment of a command that runs the pipeline in this process: the host
 * (pipeline/host.h: state dir, process lock, database, pool set up, pipeline, unfinished runs
 * resumed) with a quiet log and signal handling. See run_cmd.c.
 *
 * run_env_close() shuts the pipeline down gracefully: interrupted runs stay resumable.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "cli/cli.h"
#include "fsm/fsm.h"
#include "pipeline/host.h"
#include "pipeline/pipeline.h"
#include "source/source.h"

/* Transitions get this long to notice a shutdown before the process exits anyway. */
#define RUN_SHUTDOWN_TIMEOUT_MS 10000

struct run_env_opts {
    bool wait_lock;
    bool no_resume; /* short commands (deactivate, remove) leave other runs alone */
    bool no_queued_work; /* activate, deactivate, remove: pipeline_opts.defer_background */
    const struct source_options *source;
    uint64_t device_bytes;
    struct pipeline_queues queues; /* pinned limits and maxima (pipeline.h) */
};

/* host_open() with the pool set up, for command; the log goes quiet (warnings and errors)
 * unless the user chose a level, and SIGINT/SIGTERM/SIGHUP are caught before runs resume. */
int run_env_open(struct cli *cli, const char *command, const struct run_env_opts *o,
                 struct host *env, struct err *e);
void run_env_close(struct host *env);

/* Wait for run with a progress display; -EINTR when SIGINT/SIGTERM arrived first. */
int run_env_wait(struct cli *cli, struct host *env, const struct fsm_id *run,
                 enum fsm_outcome *outcome, char **error);
bool run_env_interrupted(void);
/* Catch SIGINT, SIGTERM and SIGHUP from now on: they set the flag run_env_interrupted()
 * reads, so the command can shut its runs down gracefully (they resume next time). */
void run_catch_signals(void);
/* The same as a host_opts.before_resume hook (pipeline/host.h). */
void run_env_catch_signals(struct host *h, void *ud);

/* ---- the same work done by a running daemon (src/daemon/client.h) ---------------------- */

struct api_client;
/* POST body to path and return the run it started ({"run": VERSION}): 0, or a negative errno
 * with e (the daemon's error message and the errno of its reason). */
int run_remote_start(struct api_client *c, const char *path, json_t *body, struct fsm_id *run,
                     struct err *e);
/* Wait for a run in the daemon with the same progress display, from the API (long polls on
 * /v1/runs/VERSION/wait, the active runs from /v1/runs). -EINTR when SIGINT/SIGTERM arrived
 * first (the run goes on in the daemon); another negative errno with e when the daemon went
 * away. */
int run_remote_wait(struct cli *cli, struct api_client *c, const struct fsm_id *run,
                    enum fsm_outcome *outcome, char **error, struct err *e);
/* Open the database read-only to print results of work a daemon did (same code as after local
 * work); cli_fail()s and returns NULL when it cannot. */
struct db *run_remote_db(struct cli *cli, const char *command);

/* Exit code for a finished run (cli.h codes), from its outcome and the error kind stored with
 * it in db (which may be a read-only connection). */
int run_error_exit_code(struct db *db, const struct fsm_id *run, enum fsm_outcome outcome);
