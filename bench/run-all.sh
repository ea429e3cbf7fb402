#!/usr/bin/env bash
# Runs every benchmark driver bench/*.sh (each prints its rows, "row: ...", as ratios against
# the baseline it measures in the same run: bench/lib.sh). `make bench` calls this. Drivers that
# boot the VM (every one that calls tests/vm/run) take it under the shared lock.
set -uo pipefail
cd "$(dirname "$0")"
rc=0
for s in ./*.sh; do
  case "$s" in ./run-all.sh | ./lib.sh) continue ;; esac # the runner and the shared helpers
  echo "== $s"
  if grep -q 'tests/vm/run' "$s"; then
    flock /tmp/thinimg-vm.lock bash "$s" || rc=1
  else
    bash "$s" || rc=1
  fi
  echo
done
exit $rc
