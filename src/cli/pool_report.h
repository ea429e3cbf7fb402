/*
 * pool_report.h: how `setup-pool` and `status` print a pool: a short human report or a JSON
 * object (field names documented in docs/dm.md, "Status fields").
 */
#pragma once

#include <jansson.h>
#include <stdio.h>

#include "dm/pool.h"
#include "util/err.h"

/* health: NULL when the pool is usable, else the refusal (printed as "health: <message>"). */
void pool_report_text(const struct pool_info *info, const struct err *health, FILE *out);
/* A new JSON object (caller decrefs). */
json_t *pool_report_json(const struct pool_info *info, const struct err *health);
