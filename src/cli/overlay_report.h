/*
 * overlay_report.h: `thinimg status` for a state directory on the overlay backend: the backend,
 * and du-like disk usage per layer directory and per activation (there is no pool to report).
 */
#pragma once

#include <stdbool.h>

#include "cli/cli.h"
#include "store/db.h"

/* Print the report (text or JSON); the exit code. */
int overlay_status(struct cli *cli, struct db *db, bool json);
