#!/usr/bin/env bash
# FSM engine benchmark: durable transitions per second, and the cost of one transition next to
# a bare SQLite transaction (one INSERT, same database, same WAL and synchronous setting),
# measured side by side in one run. Builds the release configuration in build/ if needed.
#
#   bench/fsm.sh [fsm_bench options]      e.g. --runs 100 --transitions 20 --sync full
#
# The database goes to $TMPDIR (default /tmp); point TMPDIR (or --dir) at the disk that
# matters: on tmpfs fsync is free and the ratio only measures CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
if [ ! -x "$BUILD/bench/fsm_bench" ] || [ -n "${REBUILD:-}" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j2 --target fsm_bench >/dev/null
fi
fs=$(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 {print $2}')
echo "fsm benchmark (database on ${TMPDIR:-/tmp}, file system $fs)"
exec "$BUILD/bench/fsm_bench" "$@"
