#!/usr/bin/env bash
# bench/dm.sh: snapshot-create-and-activate, thinimg against raw dmsetup, in one VM boot.
#
#   bench/dm.sh [BUILD_DIR] [ROUNDS]      (defaults: build, 200)
#
# Inside a fresh VM (tests/vm/run) with two 512 MiB pools on the guest tmpfs, both sides do the
# same work ROUNDS times on one inactive 1 GiB origin:
#   thinimg   thin_snapshot + thin_activate (id allocated in SQLite and committed before the
#             message, create_snap, confirmation, dm create through libdevmapper)
#   baseline  `dmsetup message POOL 0 "create_snap ID ORIGIN"` + `dmsetup create NAME --table ...`
# Deactivation between rounds is untimed on both sides. Prints both times and the ratio
# thinimg/baseline (below 1: thinimg is faster). Most of the baseline's time is process start:
# two dmsetup processes per round, which under TCG cost far more than the ioctls themselves;
# thinimg does the same ioctls from one long-lived process, plus its SQLite commits.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
ROUNDS="${2:-200}"
BUILD="$(cd "$BUILD" && pwd)"
[ -x "$BUILD/tests/dm_bench_snapshot" ] || { echo "build first: cmake --build $BUILD (needs dm_bench_snapshot)" >&2; exit 2; }

if [ -z "${THINIMG_VM:-}" ]; then
    exec tests/vm/run --timeout 1800 -- "$0" "$BUILD" "$ROUNDS"
fi

W="$(mktemp -d "$THINIMG_VM_TMP/bench.XXXXXX")"
T="$(find "$BUILD" -maxdepth 2 -name thinimg -type f -perm -u+x | head -n1)"
"$T" --state-dir "$W/state" --pool benchp -q setup-pool --data-size 512M >/dev/null
"$T" --state-dir "$W/state" --pool rawp -q setup-pool --data-size 512M >/dev/null

THINIMG_S="$("$BUILD/tests/dm_bench_snapshot" "$W/state/thinimg.db" benchp "$ROUNDS")"

dmsetup message rawp 0 "create_thin 1"
# Timestamps from bash itself ($EPOCHREALTIME), so no extra process is timed.
took_us=0
for i in $(seq 1 "$ROUNDS"); do
    id=$((i + 1))
    t0="${EPOCHREALTIME/./}"
    dmsetup message rawp 0 "create_snap $id 1"
    dmsetup create "rawp-snap-$id" --table "0 2097152 thin /dev/mapper/rawp $id"
    t1="${EPOCHREALTIME/./}"
    took_us=$((took_us + 10#$t1 - 10#$t0))
    dmsetup remove "rawp-snap-$id"
done
RAW_S="$(awk -v us="$took_us" 'BEGIN { printf "%.6f", us / 1e6 }')"
# Context: what one dmsetup process costs here without any device work.
t0="${EPOCHREALTIME/./}"
for i in $(seq 1 20); do dmsetup version >/dev/null; done
t1="${EPOCHREALTIME/./}"
SPAWN_MS="$(awk -v us="$((10#$t1 - 10#$t0))" 'BEGIN { printf "%.1f", us / 1e3 / 20 }')"
awk -v a="$THINIMG_S" -v b="$RAW_S" -v n="$ROUNDS" -v s="$SPAWN_MS" 'BEGIN {
    printf "dm snapshot+activate, %d rounds (in the VM, TCG)\n", n
    printf "  thinimg   %8.3f s  (%.2f ms/round)\n", a, 1000 * a / n
    printf "  dmsetup   %8.3f s  (%.2f ms/round)\n", b, 1000 * b / n
    printf "  ratio thinimg/dmsetup = %.3f\n", a / b
    printf "  (one `dmsetup version` process here: %s ms; the baseline starts two per round)\n", s
}'
