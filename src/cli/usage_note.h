/*
 * usage_note.h: the exclusive and shared bytes of the listings (list-images, list-snapshots):
 * where the CLI keeps them between runs, and the note that says why a table shows '-'.
 */
#pragma once

#include "cli/cli.h"

/* Keep the pool usage figures in <state-dir>/THIN_USAGE_CACHE_FILE (dm/usage.h), so a second
 * listing of an unchanged pool runs no thin_ls. */
void cli_usage_cache(struct cli *cli);
/* After a table printed (rc EXIT_OK): when some EXCL/SHARED cells are '-', one line on stderr
 * with the first reason (why, "" when every figure was there). */
void cli_bytes_note(struct cli *cli, int rc, const char *why);
