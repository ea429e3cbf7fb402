/*
 * usage_note.h: the exclusive and shared bytes of the listings (list-images, list-snapshots):
 * where the CLI keeps them between runs, and the note that says why a table shows '-'.
 */
#pragma once

#include <stdbool.h>

#include "cli/cli.h"
#include "store/db.h"

/* Keep the pool usage figures in <state-dir>/THIN_USAGE_CACHE_FILE (dm/usage.h), so a second
 * listing of an unchanged pool runs no thin_ls; and measure an overlay state directory's
 * directories (view_state_dir). */
void cli_usage_cache(struct cli *cli);
/* Before a listing's table (text, r >= 0, not --quiet): "backend NAME", the state directory's
 * backend, which says what EXCL and SHARED measure. */
void cli_backend_line(struct cli *cli, struct db *db, bool json, int r);
/* After a table printed (rc EXIT_OK): when some EXCL/SHARED cells are '-', one line on stderr
 * with the first reason (why, "" when every figure was there). */
void cli_bytes_note(struct cli *cli, int rc, const char *why);
