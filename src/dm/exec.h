/*
 * exec.h: run an external tool (mkfs.ext4, thin_ls) with a time limit and capture its output.
 *
 * The child gets /dev/null as stdin, its own process group (so a timeout kills the tool and
 * anything it started) and PR_SET_PDEATHSIG, so it never outlives thinimg. Output is captured
 * up to DM_EXEC_OUTPUT_MAX bytes per stream (the rest is read and dropped).
 */
#pragma once

#include "util/buf.h"
#include "util/err.h"

/* More output than this from mkfs or thin_ls means something is wrong; keep the head. */
#define DM_EXEC_OUTPUT_MAX ((size_t)1 << 20)

/* Runs argv[0] (looked up in PATH). Returns the exit status (0..255), 128+signal when killed,
 * -ETIMEDOUT after timeout_ms (the process group is killed), or a negative errno when it could
 * not be started. out/errout may be NULL. */
int dm_exec(char *const argv[], int timeout_ms, struct buf *out, struct buf *errout, struct err *e);
