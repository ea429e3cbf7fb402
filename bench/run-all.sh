#!/usr/bin/env bash
# Runs every benchmark driver bench/*.sh (each prints its figures and its ratio against the
# baseline it measures in the same run). `make bench` calls this.
set -uo pipefail
cd "$(dirname "$0")"
rc=0
for s in ./*.sh; do
  [ "$s" = "./run-all.sh" ] && continue
  echo "== $s"
  bash "$s" || rc=1
  echo
done
exit $rc
