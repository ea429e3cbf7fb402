#!/usr/bin/env bash
# bench/queue_sizing.sh: the unpack queue sized to the load against fixed limits; one VM boot.
#
#   bench/queue_sizing.sh [BUILD_DIR] [ROUNDS] [FILES] [MIB]   (defaults: build, 1, 2000, 16)
#
# Four independent two-layer images (made on the host before the boot, deterministic) go
# through a daemon at once (four process-image CLIs forwarded to it), timed from submitting to
# all active (the CLIs are waited on, not polled), on a fresh state directory and pool each time.
# Before each run the bench waits for I/O "some" avg10 to settle under SETTLE_PCT (the previous
# run's hog and the fetches otherwise load the next run's start). One sampler reads the unpack
# queue's limit (GET /v1/queues), another /proc/pressure/io (every 0.5 s; the limit sampler is
# slower under load: curl and jq on the emulated CPU); the limit changes' times come from the
# daemon's log (run at debug level: one line per sample of the load loop, with the disk's,
# thinimg's own and the foreign I/O rates, summed up per run):
#   (a) a quiet host: --unpack-queue 1, 2 and 4 (fixed) and the default (sized to the load,
#       --unpack-queue-max 4): the sized queue's highest limit and its time against the best
#       fixed one, as a ratio (goal <= 1.05; medians over ROUNDS);
#   (b) the same with an I/O hog (dd oflag=direct, without pause) writing a file on the same
#       disk, against a fixed limit of 4, in two cases: the hog starts with the images, and the
#       hog has run HOG_LEAD_S (10) s when the images arrive (a loaded host). Printed: how long
#       the sized queue took to reach 1 after the hog started (goal <= 10 s), every image
#       completed, and the I/O pressure of the two runs over the same window: the share of
#       time some task stalled on I/O, from the growth of /proc/pressure/io's "some total"
#       counter between the images' submission and the end of the shorter of the two runs
#       (both runs then had the hog and the images going; avg10 is no fair measure here: it
#       lags by ten seconds and climbs for the whole of a run, so a longer run averages more of
#       its climb). "Lower than with a fixed limit of 4" is that share's ratio sized / fixed 4
#       below 1 (medians over ROUNDS). The whole runs' shares and mean avg10 are printed too.
# The pools and the hog live on a scratch virtio disk (tests/vm/run --disk, host page cache
# bypassed): on the guest's tmpfs no task ever waits for a disk, so I/O pressure would be only
# the emulated CPU's. BENCH_PARTS=a or b runs one part (default: both).
# Prints every run, the sized runs' limit changes (the daemon's log) and the ratios. Run it under
# the VM lock: flock /tmp/thinimg-vm.lock bench/queue_sizing.sh build
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
PARTS="${BENCH_PARTS:-a b}"
DISK_MIB=8192 # the scratch disk: a 1 GiB pool a run, the hog's 512 MiB file, ext4's own
HOG_LEAD_S=10 # (b), the loaded host: the hog's head start, longer than the 2 s sampling
# interval times the controller's two hot intervals in a row plus one more halving

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
    exec tests/vm/run --mem 3072 --disk "$DISK_MIB" --timeout 3600 -- "$0" "$BUILD" "$ROUNDS" "$FILES" "$MIB"
fi

export THINIMG_HEALTH_TIMEOUT_MS=30000 # emulated: a health check may take seconds
T="$BUILD/thinimg --log-level warn"
POOL=benchs
SAMPLE_S=0.5 # how often the samplers read GET /v1/queues and /proc/pressure/io
SETTLE_PCT=5  # a run starts when I/O some avg10 is under this (the controller's calm is < 10)
SETTLE_MAX_S=90
W=""
DPID=""
HOG=""
SAMPLER=""
PSI_SAMPLER=""
stop_bg() { # pid: kill it, then what it was waiting on (a dd, a sleep), and reap it
    local kids
    kids=$(pgrep -P "$1" || true)
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    [ -z "$kids" ] || kill -KILL $kids 2>/dev/null || true
}
cleanup() {
    [ -n "$SAMPLER" ] && stop_bg "$SAMPLER"
    SAMPLER=""
    [ -n "$PSI_SAMPLER" ] && stop_bg "$PSI_SAMPLER"
    PSI_SAMPLER=""
    [ -n "$HOG" ] && stop_bg "$HOG"
    HOG=""
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
BASE=$THINIMG_VM_TMP
if [ -n "${THINIMG_VM_DISK:-}" ]; then
    mkfs.ext4 -q -F "$THINIMG_VM_DISK"
    mkdir -p "$THINIMG_VM_TMP/disk"
    mount "$THINIMG_VM_DISK" "$THINIMG_VM_TMP/disk"
    BASE=$THINIMG_VM_TMP/disk
else
    echo "note: no scratch disk (THINIMG_VM_DISK): pools on the guest tmpfs, where I/O never waits" >&2
fi
now_us() { echo "${EPOCHREALTIME/./}"; }
# "SOME_AVG10 SOME_TOTAL_US FULL_TOTAL_US" of I/O
io_psi() {
    awk '{ sub("avg10=", "", $2); sub("total=", "", $5) } /^some/ { a = $2; s = $5 } /^full/ { f = $5 }
         END { print a + 0, s + 0, f + 0 }' /proc/pressure/io 2>/dev/null || echo 0 0 0
}
settle() {
    local i
    for i in $(seq 1 $((SETTLE_MAX_S * 2))); do
        awk -v m="$SETTLE_PCT" '$1 < m { ok = 1 } END { exit !ok }' <<<"$(io_psi)" && return 0
        sleep 0.5
    done
    echo "  note: I/O some avg10 still $(io_psi | cut -d' ' -f1)% after $SETTLE_MAX_S s" >&2
}
[ -r /proc/pressure/io ] || echo "note: this kernel has no /proc/pressure/io: the controller sees no PSI" >&2

# sampler T0 FILE: every SAMPLE_S, one line "MICROSECONDS_SINCE_T0 UNPACK_LIMIT" (curl and jq:
# no interpreter start-up competing with the images for the two vCPUs).
sampler() {
    local t0=$1 out=$2 lim
    while :; do
        lim=$(curl -s --max-time 2 --unix-socket "$W/state/thinimg.sock" http://x/v1/queues |
            jq -r '.queues[] | select(.queue == "unpack") | .limit' 2>/dev/null) || lim=0
        echo "$(($(now_us) - t0)) ${lim:-0}" >>"$out"
        sleep "$SAMPLE_S"
    done
}
# psi_sampler T0 FILE: every SAMPLE_S, "MICROSECONDS_SINCE_T0 SOME_AVG10 SOME_TOTAL FULL_TOTAL"
psi_sampler() {
    while :; do
        echo "$(($(now_us) - $1)) $(io_psi)" >>"$2"
        sleep "$SAMPLE_S"
    done
}
# epoch_us ISO_TIME: microseconds since the epoch of the daemon log's time=...Z
epoch_us() { date -d "$1" +%s%6N; }

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# share SAMPLES FROM_US TO_US: the % of time some task stalled on I/O between the two times
# (microseconds since the sampler's start), from the total counter interpolated between samples.
share() {
    awk -v a="$2" -v b="$3" '
        function at(t,   i) {
            if (t <= ts[1]) return tot[1]
            for (i = 2; i <= n; i++)
                if (ts[i] >= t) return tot[i-1] + (tot[i] - tot[i-1]) * (t - ts[i-1]) / (ts[i] - ts[i-1])
            return tot[n]
        }
        { n++; ts[n] = $1; tot[n] = $3 }
        END { printf "%.1f", (n > 1 && b > a) ? 100 * (at(b) - at(a)) / (b - a) : 0 }' "$1"
}

# one_run MODE HOG [LEAD_S]: MODE is 1, 2, 4 (fixed) or sized; HOG 1 starts the I/O hog LEAD_S
# (default 0) seconds before the images. Sets SECS (submitting to all four active; waited on
# directly, not polled), PEAK (highest unpack limit, sampled or logged), DROP_S (seconds from
# the hog's start to the daemon's log line setting the unpack limit to 1, or -), PSI (mean I/O
# some avg10 sampled while the images ran), SUB_US (the images' submission, microseconds since
# the samplers' start), SAMPLES (a copy of the PSI samples), CHANGES (the daemon's limit
# changes).
one_run() {
    local mode=$1 hog=$2 lead=${3:-0} t0 t1 tsub thog=0 pids=() q logged
    W="$(mktemp -d "$BASE/benchs.XXXXXX")"
    export THINIMG_STATE_DIR="$W/state" THINIMG_POOL=$POOL
    $T setup-pool --data-size 1G >/dev/null
    $T health >/dev/null 2>&1 || true
    for i in $IMAGES; do $T fetch "dir:$SRCDIR/images/$i/" >/dev/null 2>&1; done
    settle
    if [ "$mode" = sized ]; then q=(--unpack-queue-max 4); else q=(--unpack-queue "$mode"); fi
    # debug: the load loop's one line per sample (pressure, the disk's, thinimg's and the
    # foreign I/O rates) for IO_STATS
    $BUILD/thinimg --log-level debug daemon "${q[@]}" >>"$W/daemon.log" 2>&1 &
    DPID=$!
    for _ in $(seq 1 600); do
        [ -S "$W/state/thinimg.sock" ] && $T list-images >/dev/null 2>&1 && break
        sleep 0.05
    done
    t0=$(now_us)
    echo "daemon up at $(date -u +%T.%N | cut -c1-12)" >>"$W/daemon.log"
    sampler "$t0" "$W/limits" &
    SAMPLER=$!
    psi_sampler "$t0" "$W/samples" &
    PSI_SAMPLER=$!
    if [ "$hog" = 1 ]; then
        # A file on the same disk as the pool, written with O_DIRECT without pause: every
        # write waits for the disk, which is what I/O PSI counts.
        thog=$(now_us)
        (while :; do dd if=/dev/zero of="$W/hog.img" bs=1M count=512 oflag=direct conv=notrunc 2>/dev/null; done) &
        HOG=$!
        sleep "$lead"
    fi
    tsub=$(now_us)
    echo "$((10#$tsub - 10#$t0)) $(io_psi)" >>"$W/samples"
    for i in $IMAGES; do
        $T process-image --device-size 1G "dir:$SRCDIR/images/$i/" >/dev/null 2>"$W/$i.err" &
        pids+=($!)
    done
    local failed=0
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    if [ "$failed" = 1 ]; then
        echo "an image failed ($mode, hog $hog)" >&2
        for f in "$W"/*.err; do echo "--- $f" >&2; grep -v '^time=' "$f" | tail -n 5 >&2; done
        grep -E 'level=(warn|error)|queue limit' "$W/daemon.log" | tail -n 40 >&2
        mkdir -p "$BUILD/bench-queue-logs"
        cp "$W/daemon.log" "$BUILD/bench-queue-logs/failed-$mode-hog$hog.log"
        exit 1
    fi
    t1=$(now_us)
    stop_bg "$SAMPLER"
    SAMPLER=""
    stop_bg "$PSI_SAMPLER"
    PSI_SAMPLER=""
    echo "$((10#$t1 - 10#$t0)) $(io_psi)" >>"$W/samples" # the counters at the end
    SECS=$(awk -v us="$((10#$t1 - 10#$tsub))" 'BEGIN { printf "%.2f", us / 1e6 }')
    SUB_US=$((10#$tsub - 10#$t0))
    logged=$(grep 'msg="queue limit follows the load" queue=unpack' "$W/daemon.log" |
        sed -e 's/.* limit=\([0-9]*\) .*/\1/' || true)
    PEAK=$(printf '%s\n' $logged | cat - "$W/limits" | awk '{ v = NF > 1 ? $2 : $1 } v > m { m = v } END { print m + 0 }')
    DROP_S=-
    logged=$(grep -m1 'msg="queue limit follows the load" queue=unpack limit=1 ' "$W/daemon.log" |
        sed -e 's/^time=\([^ ]*\) .*/\1/' || true)
    if [ "$hog" = 1 ] && [ -n "$logged" ]; then
        DROP_S=$(awk -v a="$(epoch_us "$logged")" -v h="$thog" 'BEGIN { printf "%.1f", (a - h) / 1e6 }')
    fi
    PSI=$(awk -v s="$SUB_US" '$1 >= s { t += $2; n++ } END { printf "%.1f", n ? t / n : 0 }' "$W/samples")
    # the load loop's samples: the disk's and thinimg's mean rates and the highest foreign one
    IO_STATS=$({ grep 'msg="queue sizing sample"' "$W/daemon.log" || true; } | sed -e 's/.* disk_mibs=//' |
        awk '{ sub("own_mibs=", "", $2); sub("foreign_mibs=", "", $3); d += $1; o += $2; n++
               if ($3 + 0 > f) f = $3 + 0 }
             END { printf "disk %.1f, thinimg %.1f MiB/s (means), foreign up to %.1f MiB/s", n ? d / n : 0, n ? o / n : 0, f }')
    CHANGES=$(grep 'msg="queue limit follows the load" queue=unpack' "$W/daemon.log" |
        sed -e 's/^time=[^ ]*T\([0-9:.]*\)Z .* reason=/\1 /' | paste -sd ';' || true)
    mkdir -p "$BUILD/bench-queue-logs"
    SAMPLES="$BUILD/bench-queue-logs/$mode-hog$hog-lead$lead-r${ROUND:-1}.samples"
    cp "$W/daemon.log" "${SAMPLES%.samples}.log"
    cp "$W/samples" "$SAMPLES"
    cp "$W/limits" "${SAMPLES%.samples}.limits"
    kill -TERM "$DPID"
    wait "$DPID" || true
    DPID=""
    cleanup
}

if [[ " $PARTS " == *" a "* ]]; then
    declare -A BEST
    SIZED_PEAK=0
    echo "(a) a quiet host: four independent images through the daemon"
    for ROUND in $(seq 1 "$ROUNDS"); do
        r=$ROUND
        for mode in 1 2 4 sized; do
            one_run "$mode" 0
            echo "  round $r: unpack queue $mode: $SECS s (highest limit $PEAK, I/O some avg10 $PSI%; $IO_STATS)"
            [ "$mode" = sized ] && echo "    changes: ${CHANGES:-none}"
            BEST[$mode]="${BEST[$mode]:-} $SECS"
            [ "$mode" = sized ] && [ "$PEAK" -gt "$SIZED_PEAK" ] && SIZED_PEAK=$PEAK
        done
    done
    m1=$(echo "${BEST[1]}" | median); m2=$(echo "${BEST[2]}" | median); m4=$(echo "${BEST[4]}" | median)
    ms=$(echo "${BEST[sized]}" | median)
    best=$(printf '%s\n' "$m1" "$m2" "$m4" | sort -n | head -1)
    awk -v s="$ms" -v b="$best" -v p="$SIZED_PEAK" 'BEGIN {
        printf "  sized / best fixed = %.3f (goal <= 1.05); the sized queue reached %d (goal >= 2)\n", s / b, p }'

fi
if [[ " $PARTS " == *" b "* ]]; then
    echo "(b) the same with an I/O hog writing to the same disk (I/O some: % of time from the total counter)"
    for lead in 0 "$HOG_LEAD_S"; do
        if [ "$lead" = 0 ]; then
            echo "  the hog starts with the images"
        else
            echo "  the hog has run $lead s when the images arrive"
        fi
        ratios="" drops=""
        for ROUND in $(seq 1 "$ROUNDS"); do
            one_run 4 1 "$lead"
            f_secs=$SECS f_samples=$SAMPLES f_sub=$SUB_US f_psi=$PSI f_io=$IO_STATS
            one_run sized 1 "$lead"
            # the same window for both: from the submission, as long as the shorter run lasted
            win=$(awk -v a="$f_secs" -v b="$SECS" 'BEGIN { printf "%d", 1e6 * (a < b ? a : b) }')
            f_win=$(share "$f_samples" "$f_sub" $((f_sub + win)))
            s_win=$(share "$SAMPLES" "$SUB_US" $((SUB_US + win)))
            f_all=$(awk -v s="$f_secs" -v u="$f_sub" 'BEGIN { printf "%d", u + 1e6 * s }')
            s_all=$(awk -v s="$SECS" -v u="$SUB_US" 'BEGIN { printf "%d", u + 1e6 * s }')
            f_run=$(share "$f_samples" "$f_sub" "$f_all")
            s_run=$(share "$SAMPLES" "$SUB_US" "$s_all")
            ratio=$(awk -v a="$s_win" -v b="$f_win" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
            echo "  round $ROUND: fixed 4: $f_secs s; sized: $SECS s (highest limit $PEAK), reached 1 after ${DROP_S} s of the hog"
            echo "    I/O some over the first $(awk -v w="$win" 'BEGIN { printf "%.1f", w / 1e6 }') s of both: fixed 4 $f_win%, sized $s_win% (sized / fixed 4 = $ratio)"
            echo "    whole runs: I/O some fixed 4 $f_run%, sized $s_run%; mean avg10 fixed 4 $f_psi%, sized $PSI%"
            echo "    I/O: fixed 4 $f_io; sized $IO_STATS"
            echo "    changes: ${CHANGES:-none}"
            ratios="$ratios $ratio"
            drops="$drops $DROP_S"
        done
        echo "  median I/O pressure sized / fixed 4 over the same window = $(echo "$ratios" | median) (goal < 1); reached 1 after:$drops s (goal <= 10 s)"
    done
    echo "  every image completed in every run"
fi
