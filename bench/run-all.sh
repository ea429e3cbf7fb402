#!/usr/bin/env bash
# Runs every benchmark driver bench/*.sh (each prints its rows, "row: ...", as ratios against
# the baseline it measures in the same run: bench/lib.sh). `make bench` calls this. Drivers that
# boot the VM (dm.sh, vm.sh, unpack_concurrency.sh) take it under the shared lock.
set -uo pipefail
cd "$(dirname "$0")"
rc=0
for s in ./*.sh; do
  case "$s" in ./run-all.sh | ./lib.sh) continue ;; esac # the runner and the shared helpers
  echo "== $s"
  case "$s" in
    ./dm.sh | ./vm.sh | ./unpack_concurrency.sh) flock /tmp/thinimg-vm.lock bash "$s" || rc=1 ;;
    *) bash "$s" || rc=1 ;;
  esac
  echo
done
exit $rc
