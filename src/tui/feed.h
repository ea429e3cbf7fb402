/*
 * feed.h: what the monitor shows, read from a running daemon (the admin API) or, when no
 * daemon runs, read-only from the database and the kernel. The screen code (monitor.c) only
 * sees snapshots; where they came from is this module's business.
 *
 *   live       a daemon serves the state directory: runs with live progress, pool, activations
 *              and the daemon's recent log lines; process-image can be started.
 *   read-only  no daemon: the durable state from the database (runs without live progress,
 *              activations), the pool from the kernel, no log lines; nothing can be started
 *              (the monitor says so). The feed looks for a daemon again at every refresh, so a
 *              daemon started later is picked up, and one that goes away is noticed.
 *
 * The source browser's catalog (families and objects under a source location, like `thinimg
 * ls`) is listed here too, by the monitor's own process (listing needs no daemon).
 *
 * Ownership: the feed owns its client, connection and log lines; snapshots are plain data the
 * caller owns (fixed-size fields; no pointers to free).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "source/source.h"
#include "util/config.h"
#include "util/err.h"

#define FEED_MAX_RUNS    32 /* active runs shown (more are counted) */
#define FEED_RECENT_RUNS 12 /* recently finished runs shown */
#define FEED_MAX_ACTS    32
#define FEED_MAX_LOGS    200 /* log lines kept across refreshes */
#define FEED_MAX_ENTRIES 512 /* source browser entries */
/* API requests of the monitor are short reads: a daemon that does not answer this fast is
 * shown as unreachable rather than freezing the screen. */
#define FEED_REQUEST_MS 2000

struct feed_run {
    char version[32];
    char type[24], action[40];
    char what[96]; /* a short label of the resource (progress_label style) */
    char state[48], status[16], phase[32];
    uint64_t done, total;
    unsigned attempt;
    char outcome[16]; /* finished runs */
    char error[256];
    int64_t created_ms, finished_ms;
};

struct feed_act {
    char name[80], image[128], state[16], device[128];
};

struct feed_pool {
    bool known; /* the pool's status was read */
    char name[64];
    char mode[24];
    double data_pct, meta_pct;
    uint64_t data_used, data_total; /* bytes */
    bool usable;
    char note[256]; /* why unknown, or the refusal when not usable */
};

struct feed_snapshot {
    bool live;           /* a daemon answers: work can be started */
    char banner[256];    /* where the data comes from */
    char error[256];     /* the last refresh's trouble, "" when none */
    char error_kind[16]; /* its kind (err_kind_name) when the database could not be read */
    struct feed_run active[FEED_MAX_RUNS];
    size_t n_active, total_active;
    struct feed_run recent[FEED_RECENT_RUNS];
    size_t n_recent;
    struct feed_act acts[FEED_MAX_ACTS];
    size_t n_acts;
    struct feed_pool pool;
    char queues[768];  /* tui/loadview.h: each queue's limit, sizing, last change, signals */
    char orphans[256]; /* the idle collection: waiting, when the next may go (live only) */
};

struct feed_entry {
    char label[128]; /* "golang:5" or an object key */
    char info[96];   /* "5 layers, 120.3 MiB" */
    char location[1024];
    bool family;
};

struct feed_catalog {
    char source[512]; /* what was listed */
    char error[256];  /* listing failed: why */
    struct feed_entry *v;
    size_t n;
};

struct feed;

int feed_open(const struct config *cfg, struct feed **out);
void feed_close(struct feed *f);
/* Fill s (fully overwritten). Never fails: trouble is reported in s->error. */
void feed_refresh(struct feed *f, struct feed_snapshot *s);
/* Recent log lines (live only), oldest first: up to max pointers into the feed's own storage,
 * valid until the next refresh. */
size_t feed_logs(struct feed *f, const char **out, size_t max);
/* Start process-image of location in the daemon: 0 with the run in run_out; a negative errno
 * with e (-EROFS when no daemon runs: read-only). */
int feed_process(struct feed *f, const char *location, char *run_out, size_t n, struct err *e);

/* List what is under ref (or the default source when ref is NULL) into c (replacing it). */
void feed_catalog_load(const struct config *cfg, const struct source_options *so, const char *ref,
                       struct feed_catalog *c);
void feed_catalog_free(struct feed_catalog *c);
