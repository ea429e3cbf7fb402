#!/usr/bin/env bash
# bench/queue_sizing.sh: the unpack queue sized to the load against fixed limits; one VM boot.
#
#   bench/queue_sizing.sh [BUILD_DIR] [ROUNDS] [FILES] [MIB]   (defaults: build, 1, 2000, 16)
#
# Four independent two-layer images (made on the host before the boot, deterministic) go
# through a daemon at once (four process-image CLIs forwarded to it), timed from submitting to
# all active, on a fresh state directory and pool each time:
#   (a) a quiet host: --unpack-queue 1, 2 and 4 (fixed) and the default (sized to the load,
#       --unpack-queue-max 4): the sized queue's highest limit (from GET /v1/queues, polled) and
#       its time against the best fixed one, as a ratio (goal <= 1.05);
#   (b) the same with an I/O hog writing with O_DIRECT to another loop device on the same disk
#       from the start: how long the sized queue took to reach 1 after the hog started, and the
#       host's I/O PSI "some" avg10 while it ran, against a fixed limit of 4.
# Prints every run and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
ROUNDS="${2:-1}"
FILES="${3:-2000}"
MIB="${4:-16}"
BUILD="$(cd "$BUILD" && pwd)"
[ -x "$BUILD/thinimg" ] || { echo "build first: cmake --build $BUILD" >&2; exit 2; }
SRCDIR="$BUILD/bench-images/queues-$FILES-$MIB"
IMAGES="alpha beta gamma delta"

if [ -z "${THINIMG_VM:-}" ]; then
    if [ ! -f "$SRCDIR/images/delta/2.tar" ]; then
        rm -rf "$SRCDIR" "$SRCDIR.tmp"
        # make-bench-images.py makes alpha and beta; gamma and delta from other seeds.
        python3 bench/make-bench-images.py "$SRCDIR.tmp" "$FILES" "$MIB"
        python3 - "$SRCDIR.tmp" <<'EOF'
import io, os, random, sys, tarfile
out = sys.argv[1]
for seed, name in ((3, "gamma"), (4, "delta")):
    rnd = random.Random(seed)
    for layer in (1, 2):
        d = os.path.join(out, "images", name)
        os.makedirs(d, exist_ok=True)
        with tarfile.open(os.path.join(d, "%d.tar" % layer), "w", format=tarfile.PAX_FORMAT) as t:
            for i in range(400 if layer == 1 else 40):
                data = rnd.randbytes(rnd.randint(1024, 8192))
                ti = tarfile.TarInfo("%s/d%d/f%d" % (name, i // 100, i))
                ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
                t.addfile(ti, io.BytesIO(data))
            if layer == 1:
                data = rnd.randbytes(8 << 20)
                ti = tarfile.TarInfo("%s/big" % name)
                ti.size, ti.mtime = len(data), 1700000000
                t.addfile(ti, io.BytesIO(data))
EOF
        mv "$SRCDIR.tmp" "$SRCDIR"
    fi
    exec tests/vm/run --mem 3072 --timeout 3600 -- "$0" "$BUILD" "$ROUNDS" "$FILES" "$MIB"
fi

export THINIMG_HEALTH_TIMEOUT_MS=30000 # emulated: a health check may take seconds
T="$BUILD/thinimg --log-level warn"
POOL=benchs
W=""
DPID=""
HOG=""
HOGLOOP=""
cleanup() {
    [ -n "$HOG" ] && { kill "$HOG" 2>/dev/null; wait "$HOG" 2>/dev/null || true; }
    HOG=""
    [ -n "$DPID" ] && { kill -KILL "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null || true; }
    DPID=""
    for d in $(dmsetup ls 2>/dev/null | awk '{print $1}' | grep "^$POOL" | sort -r); do
        dmsetup remove "$d" >/dev/null 2>&1 || true
    done
    [ -n "$HOGLOOP" ] && { losetup -d "$HOGLOOP" 2>/dev/null || true; }
    HOGLOOP=""
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
io_some() { awk '/^some/ {sub("avg10=", "", $2); print $2}' /proc/pressure/io 2>/dev/null || echo 0; }

# one_run MODE HOG: MODE is 1, 2, 4 (fixed) or sized; HOG 1 starts the I/O hog first. Sets SECS,
# PEAK (highest unpack limit seen), DROP_S (seconds from the hog's start to a limit of 1, or -),
# PSI (mean I/O some avg10 sampled while the images ran).
one_run() {
    local mode=$1 hog=$2 t0 t1 pids=() q
    W="$(mktemp -d "$THINIMG_VM_TMP/benchs.XXXXXX")"
    export THINIMG_STATE_DIR="$W/state" THINIMG_POOL=$POOL
    $T setup-pool --data-size 1G >/dev/null
    $T health >/dev/null 2>&1 || true
    for i in $IMAGES; do $T fetch "dir:$SRCDIR/images/$i/" >/dev/null; done
    if [ "$mode" = sized ]; then q=(--unpack-queue-max 4); else q=(--unpack-queue "$mode"); fi
    $BUILD/thinimg --log-level info daemon "${q[@]}" >>"$W/daemon.log" 2>&1 &
    DPID=$!
    for _ in $(seq 1 600); do
        [ -S "$W/state/thinimg.sock" ] && $T list-images >/dev/null 2>&1 && break
        sleep 0.05
    done
    local hog_t0=0
    if [ "$hog" = 1 ]; then
        truncate -s 2G "$W/hog.img"
        HOGLOOP=$(losetup -f --show --direct-io=on "$W/hog.img")
        (while :; do dd if=/dev/zero of="$HOGLOOP" bs=1M count=512 oflag=direct 2>/dev/null; done) &
        HOG=$!
        hog_t0=$(now_us)
    fi
    t0=$(now_us)
    for i in $IMAGES; do
        $T process-image --device-size 1G "dir:$SRCDIR/images/$i/" >/dev/null &
        pids+=($!)
    done
    PEAK=0
    DROP_S=-
    local psum=0 pn=0 lim
    while :; do
        local running=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
        [ "$running" = 0 ] && break
        lim=$(curl -s --unix-socket "$W/state/thinimg.sock" http://x/v1/queues |
            python3 -c 'import json,sys; print([q["limit"] for q in json.load(sys.stdin)["queues"] if q["queue"]=="unpack"][0])' 2>/dev/null || echo 0)
        [ "$lim" -gt "$PEAK" ] && PEAK=$lim
        if [ "$hog" = 1 ] && [ "$DROP_S" = - ] && [ "$lim" = 1 ]; then
            DROP_S=$(awk -v us="$(($(now_us) - hog_t0))" 'BEGIN { printf "%.1f", us / 1e6 }')
        fi
        psum=$(awk -v a="$psum" -v b="$(io_some)" 'BEGIN { print a + b }')
        pn=$((pn + 1))
        sleep 1
    done
    for p in "${pids[@]}"; do wait "$p" || { echo "an image failed ($mode)" >&2; tail -20 "$W/daemon.log" >&2; exit 1; }; done
    t1=$(now_us)
    SECS=$(awk -v us="$((10#$t1 - 10#$t0))" 'BEGIN { printf "%.2f", us / 1e6 }')
    PSI=$(awk -v s="$psum" -v n="$pn" 'BEGIN { printf "%.1f", n ? s / n : 0 }')
    kill -TERM "$DPID"
    wait "$DPID" || true
    DPID=""
    cleanup
}

declare -A BEST
echo "(a) a quiet host: four independent images through the daemon"
for r in $(seq 1 "$ROUNDS"); do
    for mode in 1 2 4 sized; do
        one_run "$mode" 0
        echo "  round $r: unpack queue $mode: $SECS s (highest limit $PEAK)"
        BEST[$mode]="${BEST[$mode]:-} $SECS"
        [ "$mode" = sized ] && SIZED_PEAK=$PEAK
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
m1=$(echo "${BEST[1]}" | median); m2=$(echo "${BEST[2]}" | median); m4=$(echo "${BEST[4]}" | median)
ms=$(echo "${BEST[sized]}" | median)
best=$(printf '%s\n' "$m1" "$m2" "$m4" | sort -n | head -1)
awk -v s="$ms" -v b="$best" -v p="$SIZED_PEAK" 'BEGIN {
    printf "  sized / best fixed = %.3f (goal <= 1.05); the sized queue reached %d (goal >= 2)\n", s / b, p }'

echo "(b) the same with an I/O hog on another loop device"
one_run 4 1
f_secs=$SECS f_psi=$PSI
echo "  unpack queue 4 (fixed): $f_secs s, I/O some avg10 while running: $f_psi%"
one_run sized 1
echo "  sized: $SECS s, reached 1 after ${DROP_S} s of the hog (goal <= 10 s), I/O some avg10: $PSI%"
awk -v a="$PSI" -v b="$f_psi" 'BEGIN { printf "  I/O pressure sized / fixed 4 = %.2f (goal < 1)\n", b > 0 ? a / b : 0 }'
