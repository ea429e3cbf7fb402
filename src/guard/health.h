/*
 * health.h: host health checks run before devicemapper work.
 *
 * Devicemapper punishes work started on a sick host with hung tasks: a thin pool that is out of
 * space or needs_check, a loop device stuck in I/O, jbd2 blocked, the kernel short of memory.
 * These checks look for the symptoms first, each bounded by its own timeout (a check that hangs
 * reports FAIL "timed out" and its thread is abandoned):
 *
 *   dstate   tasks in uninterruptible sleep (D) tied to dm/jbd2/loop/kworker/ext4 that stay
 *            there without a single context switch for HEALTH_DSTATE_WINDOW_MS (sampled every
 *            HEALTH_DSTATE_INTERVAL_MS): a task behind a hung or suspended device never wakes,
 *            while a busy disk's writers block, wake and block again many times a second (a
 *            single sample, or two, would take a busy disk for a hung one)
 *   kmsg     kernel log lines since the last check that mean trouble: thin-pool errors,
 *            needs_check, I/O errors, "blocked for more than", OOM kills, ext4 errors. The last
 *            sequence number seen is kept in <state>/kmsg.cursor; on the first run only lines
 *            younger than HEALTH_KMSG_FIRST_WINDOW_S count.
 *   memory   MemAvailable as a share of MemTotal, and memory PSI (full avg10)
 *   io       I/O PSI (full avg10)
 *   pool     supplied by the caller (the dm module's pool status and usage), optional
 *
 * A FAIL anywhere makes the report unhealthy: the operation guard refuses new devicemapper
 * work and `thinimg health` exits with EXIT_UNHEALTHY. WARN is reported but does not refuse.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum health_level { HEALTH_OK = 0, HEALTH_WARN = 1, HEALTH_FAIL = 2, HEALTH_SKIP = 3 };
const char *health_level_name(enum health_level l); /* "ok", "warn", "fail", "skipped" */

/* Thresholds and timings, with their reasons. */
#define HEALTH_CHECK_TIMEOUT_MS 3000    /* a /proc read that takes longer is itself a symptom */
#define HEALTH_DSTATE_INTERVAL_MS 200   /* D-state samples this far apart */
#define HEALTH_DSTATE_WINDOW_MS 1000    /* stuck: in D with no context switch this long */
#define HEALTH_KMSG_FIRST_WINDOW_S 600  /* first run: only the last 10 minutes of the log */
#define HEALTH_MEM_FAIL_PCT 3.0         /* MemAvailable below 3%: mkfs/extraction may OOM */
#define HEALTH_MEM_WARN_PCT 10.0
#define HEALTH_PSI_MEM_FULL_FAIL 25.0   /* % of time all tasks stalled on memory (avg10) */
#define HEALTH_PSI_IO_FULL_FAIL 60.0    /* % of time all tasks stalled on I/O (avg10) */
#define HEALTH_PSI_IO_FULL_WARN 20.0

struct health_check {
    char name[16];
    enum health_level level;
    char detail[512];
    int64_t duration_ms;
};

#define HEALTH_MAX_CHECKS 8

struct health_report {
    struct health_check checks[HEALTH_MAX_CHECKS];
    size_t n;
    enum health_level overall; /* worst of the checks (SKIP counts as OK) */
};

/* The caller's pool check: fill level and detail. Runs with the same timeout. */
typedef void (*health_pool_fn)(struct health_check *out, void *ud);

struct health_opts {
    const char *cursor_path; /* <state>/kmsg.cursor; NULL = do not persist */
    const char *kmsg_path;   /* NULL = /dev/kmsg (tests point it at a file) */
    const char *proc_root;   /* NULL = /proc (tests point it at a fake tree) */
    health_pool_fn pool;     /* NULL = no pool check */
    void *pool_ud;
    bool advance_cursor;     /* false: report without consuming kmsg lines (status displays) */
    bool skip_kmsg;          /* gc: past kernel messages must not block the cleanup they ask for */
    int timeout_ms;          /* per check; 0: HEALTH_CHECK_TIMEOUT_MS, or THINIMG_HEALTH_TIMEOUT_MS
                                from the environment (emulated test VMs are slow) */
};

/* Run every check. Returns 0 (the report says whether healthy) or -ENOMEM. */
int health_run(const struct health_opts *o, struct health_report *out);

/* One line per failing/warning check: "dstate: pid 123 (loop0) in D state for >200ms; ..." */
void health_report_summary(const struct health_report *r, char *out, size_t n);
