/*
 * fsm_schema.c: the FSM engine's tables (component "fsm").
 *
 * fsm_runs    one row per run: identity, options, request/response bytes, the transition list
 *             frozen at start, next_index (first uncompleted transition), live state, and the
 *             final outcome once finished. The row *is* the run's durable state: resume reads
 *             only this table.
 * fsm_events  the run's history, ordered by an explicit per-run seq (never by wall clock):
 *             START, ERROR, COMPLETE, HALT, FINISH, RESUME. `attempt` is the 0-based attempt
 *             the event is about (ERROR: the attempt that failed); `outcome` is set on HALT
 *             and FINISH.
 *
 * error_kind is the kind of `error` (not found, rejected, transient, ...) by name: front ends
 * decide exit codes and statuses from it. Runs recorded before it existed have NULL (internal),
 * except cancelled ones.
 *
 * While a run is unfinished (status < 3), a non-NULL outcome means the outcome is already
 * decided (halted: abort, unrecoverable, handoff, or a cancel request) and the run only has
 * its end step left; resume relies on this.
 */
#include "fsm/fsm.h"

static const struct db_migration fsm_migrations[] = {
    {1, "fsm_runs, fsm_events",
     "CREATE TABLE fsm_runs("
     "  version TEXT PRIMARY KEY,"
     "  type TEXT NOT NULL,"
     "  action TEXT NOT NULL,"
     "  resource_id TEXT NOT NULL,"
     "  queue TEXT,"
     "  parent TEXT,"
     "  run_after TEXT,"
     "  delay_until_ms INTEGER NOT NULL DEFAULT 0,"
     "  request BLOB NOT NULL,"
     "  response BLOB,"
     "  transitions TEXT NOT NULL,"
     "  end_state TEXT NOT NULL,"
     "  next_index INTEGER NOT NULL DEFAULT 0,"
     "  state TEXT,"
     "  attempt INTEGER NOT NULL DEFAULT 0,"
     "  status INTEGER NOT NULL CHECK(status IN (1,2,3)),"
     "  outcome INTEGER,"
     "  error TEXT NOT NULL DEFAULT '',"
     "  error_state TEXT,"
     "  next_seq INTEGER NOT NULL DEFAULT 1,"
     "  created_ms INTEGER NOT NULL,"
     "  started_ms INTEGER,"
     "  finished_ms INTEGER);"
     "CREATE UNIQUE INDEX fsm_one_unqueued ON fsm_runs(type, action, resource_id)"
     "  WHERE status < 3 AND queue IS NULL;"
     "CREATE INDEX fsm_runs_status ON fsm_runs(status, created_ms);"
     "CREATE INDEX fsm_runs_parent ON fsm_runs(parent) WHERE parent IS NOT NULL;"
     "CREATE INDEX fsm_runs_resource ON fsm_runs(resource_id);"
     "CREATE TABLE fsm_events("
     "  version TEXT NOT NULL REFERENCES fsm_runs(version) ON DELETE CASCADE,"
     "  seq INTEGER NOT NULL,"
     "  type INTEGER NOT NULL,"
     "  state TEXT,"
     "  error TEXT,"
     "  attempt INTEGER NOT NULL DEFAULT 0,"
     "  response_len INTEGER NOT NULL DEFAULT 0,"
     "  outcome INTEGER,"
     "  ts_ms INTEGER NOT NULL,"
     "  PRIMARY KEY(version, seq)) WITHOUT ROWID;"},
    {2, "fsm_runs.error_kind: the kind of the run's error, by name (util/err.h)",
     "ALTER TABLE fsm_runs ADD COLUMN error_kind TEXT;"
     "UPDATE fsm_runs SET error_kind = 'interrupted' WHERE outcome = 5;"},
    {3, "indexes for unfinished runs in version order and finished runs by age",
     /* Every command loads the unfinished runs (resume, `runs`, /metrics) and prunes old
      * finished ones; without these both walked every stored run. The partial index holds
      * only unfinished runs, so its cost follows the live work, not the history. */
     "CREATE INDEX fsm_runs_unfinished ON fsm_runs(version) WHERE status < 3;"
     "CREATE INDEX fsm_runs_finished ON fsm_runs(status, finished_ms);"},
};

int fsm_db_migrate(struct db *db, struct err *e)
{
    return db_migrate(db, "fsm", fsm_migrations, sizeof(fsm_migrations) / sizeof(fsm_migrations[0]),
                      e);
}
