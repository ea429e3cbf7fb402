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

/* ---- the pool's life (dm/pool_life.h): policy, last check, last backup, growth history ----
 * Kept apart from the kernel report above: `status` prints it after the pool. */
#include "dm/pool_life.h"
#include "store/db.h"

/* How many growths `status` lists (newest first). */
#define POOL_REPORT_GROWTHS 5

void pool_report_life_policy_text(const struct pool_settings *s, FILE *out);
json_t *pool_report_life_policy_json(const struct pool_settings *s);
/* Policy, last check, last backup (event and newest file), growth history, and the last
 * time autoextend could not grow. db NULL: nothing printed / JSON null. */
void pool_report_life_text(struct db *db, const char *pool, const char *state_dir, FILE *out);
json_t *pool_report_life_json(struct db *db, const char *pool, const char *state_dir);
