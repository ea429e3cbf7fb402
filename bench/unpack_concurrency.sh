#!/usr/bin/env bash
# bench/unpack_concurrency.sh: two independent images unpacked with unpack concurrency 2 against
# 1, and a re-run of an active image against a process that only opens the database; one VM boot.
#
#   bench/unpack_concurrency.sh [BUILD_DIR] [ROUNDS] [FILES] [MIB]
#                                             (defaults: build, 3, 3000 small files, 16 MiB)
#
# The images (bench/make-bench-images.py, deterministic, made on the host before the boot) have
# two layers each and share none. Each round, for Q = 1 and Q = 2 (alternating which goes first):
# a fresh state directory and pool on the guest tmpfs, both images fetched untimed (`thinimg
# fetch`), then `thinimg daemon --unpack-queue Q` and two `thinimg process-image` CLIs at once
# (forwarded to the daemon); timed from submitting both until both are active. With Q = 1 the
# second image's chain waits for the first; with Q = 2 they unpack side by side (create-device and
# commit still pass one at a time through the operation guard). Prints every round, the medians,
# the ratio of the medians Q2/Q1 (below 1: concurrency helps) and the table's row (bench/lib.sh:
# min/median/max of the rounds' own ratios).
#
# Then, on the last state directory with the daemon stopped: RERUNS x `process-image` on the active
# image against RERUNS x `list-images` (a process that opens the database and reads it), as a
# ratio: the re-run must do no devicemapper work.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
ROUNDS="${2:-3}"
FILES="${3:-3000}"
MIB="${4:-16}"
RERUNS=10
BUILD="$(cd "$BUILD" && pwd)"
[ -x "$BUILD/thinimg" ] || { echo "build first: cmake --build $BUILD" >&2; exit 2; }
SRCDIR="$BUILD/bench-images/$FILES-$MIB"

if [ -z "${THINIMG_VM:-}" ]; then
    if [ ! -f "$SRCDIR/images/beta/2.tar" ]; then
        # Built under a temporary name and renamed when complete, so $SRCDIR exists only whole:
        # a run cut short leaves only the temporary, which the next one starts over.
        rm -rf "$SRCDIR" "$SRCDIR.tmp"
        python3 bench/make-bench-images.py "$SRCDIR.tmp" "$FILES" "$MIB"
        mv "$SRCDIR.tmp" "$SRCDIR"
    fi
    # 3 GiB: two pools' worth of blobs and data on the guest tmpfs.
    exec tests/vm/run --mem 3072 --timeout 3000 -- "$0" "$BUILD" "$ROUNDS" "$FILES" "$MIB"
fi

export THINIMG_HEALTH_TIMEOUT_MS=30000 # emulated: a health check may take seconds
# BENCH_DAEMON_LOG=debug: the daemon logs each transition's duration; printed after each round.
DAEMON_LOG=${BENCH_DAEMON_LOG:-warn}
T="$BUILD/thinimg --log-level warn"
POOL=benchq
W=""
DPID=""
cleanup() {
    [ -n "$DPID" ] && { kill -KILL "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null || true; }
    DPID=""
    for d in $(dmsetup ls 2>/dev/null | awk '{print $1}' | grep "^$POOL" | sort -r); do
        dmsetup remove "$d" >/dev/null 2>&1 || true
    done
    if [ -n "$W" ]; then
        for l in $(losetup -nO NAME,BACK-FILE | awk -v w="$W" 'index($2, w) == 1 {print $1}'); do
            losetup -d "$l" || true
        done
        rm -rf "$W"
    fi
    W=""
}
trap cleanup EXIT
now_us() { echo "${EPOCHREALTIME/./}"; }

# one_round Q: sets SECS to the seconds both images took with --unpack-queue Q (not run in a
# $(...): the state directory and the daemon belong to this shell).
one_round() {
    local q=$1 t0 t1 a b
    W="$(mktemp -d "$THINIMG_VM_TMP/benchq.XXXXXX")"
    export THINIMG_STATE_DIR="$W/state" THINIMG_POOL=$POOL
    $T setup-pool --data-size 512M >/dev/null
    $T health >/dev/null 2>&1 || true # acknowledge older kernel log lines (earlier rounds)
    $T fetch "dir:$SRCDIR/images/alpha/" >/dev/null
    $T fetch "dir:$SRCDIR/images/beta/" >/dev/null
    $BUILD/thinimg --log-level "$DAEMON_LOG" daemon --unpack-queue "$q" >>"$W/daemon.log" 2>&1 &
    DPID=$!
    for _ in $(seq 1 600); do
        [ -S "$W/state/thinimg.sock" ] && $T list-images >/dev/null 2>&1 && break
        sleep 0.05
    done
    t0=$(now_us)
    $T process-image --device-size 1G "dir:$SRCDIR/images/alpha/" >/dev/null & a=$!
    $T process-image --device-size 1G "dir:$SRCDIR/images/beta/" >/dev/null & b=$!
    wait "$a" || { echo "alpha failed (Q=$q)" >&2; cat "$W/daemon.log" >&2; exit 1; }
    wait "$b" || { echo "beta failed (Q=$q)" >&2; cat "$W/daemon.log" >&2; exit 1; }
    t1=$(now_us)
    kill -TERM "$DPID"
    wait "$DPID" || true
    DPID=""
    # where the round's time went: every completed transition of the unpack and activate runs
    [ "$DAEMON_LOG" = warn ] || grep -E "transition completed|operation refused|guard" \
        "$W/daemon.log" | grep -vE "machine=(fetch|process)" | sed "s/^/  Q=$q: /" >&2 || true
    SECS=$(awk -v us="$((10#$t1 - 10#$t0))" 'BEGIN { printf "%.2f", us / 1e6 }')
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

Q1=""
Q2=""
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="1 2"; else order="2 1"; fi
    for q in $order; do
        one_round "$q"
        s=$SECS
        echo "round $r: unpack-queue $q: $s s"
        if [ "$q" = 1 ]; then Q1="$Q1 $s"; else Q2="$Q2 $s"; fi
        [ "$r" = "$ROUNDS" ] && [ "$q" = "${order#* }" ] && break 2
        cleanup
    done
done
M1=$(echo "$Q1" | median)
M2=$(echo "$Q2" | median)

# The re-run of an active image, on the state of the last round (daemon stopped).
t0=$(now_us)
for _ in $(seq 1 $RERUNS); do $T process-image "dir:$SRCDIR/images/alpha/" >/dev/null; done
t1=$(now_us)
for _ in $(seq 1 $RERUNS); do $T list-images >/dev/null; done
t2=$(now_us)
RERUN_MS=$(((10#$t1 - 10#$t0) / 1000 / RERUNS))
LIST_MS=$(((10#$t2 - 10#$t1) / 1000 / RERUNS))

awk -v m1="$M1" -v m2="$M2" -v r="$ROUNDS" -v f="$FILES" -v mib="$MIB" \
    -v rr="$RERUN_MS" -v ll="$LIST_MS" -v n="$RERUNS" 'BEGIN {
    printf "two independent 2-layer images (%d small files + %d MiB each), in the VM (TCG, 2 vCPUs)\n", f, mib
    printf "  unpack-queue 1   median %7.2f s over %d rounds\n", m1, r
    printf "  unpack-queue 2   median %7.2f s over %d rounds\n", m2, r
    printf "  ratio queue2/queue1 = %.3f\n", m2 / m1
    printf "re-run of an active image (no device work), mean of %d\n", n
    printf "  process-image    %5d ms\n  list-images      %5d ms\n", rr, ll
    printf "  ratio process-image/list-images = %.3f\n", rr / ll
}'
# The table's row: the rounds' ratios (each round ran both, back to back).
source bench/lib.sh
bench_row "unpack queue 2 vs 1 (two independent images), VM" "queue 1" 0.60 s "$Q2" "$Q1"
