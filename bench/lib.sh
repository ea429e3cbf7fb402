# bench/lib.sh: shared by the bench/*.sh drivers (sourced). Every row of the performance table
# (docs/pipeline.md "Performance") is printed by bench_row in one format:
#
#   row: <what>: thinimg/<baseline> min 0.91 median 0.97 max 1.08 (5 runs; thinimg median
#        1.234 s, baseline median 1.270 s) goal <= 1.05: met
#
# The ratio is taken per run (thinimg and its baseline run back to back, so each pair shares
# the machine's load at that moment) and min/median/max are over those per-run ratios.

BENCH_RUNS=${BENCH_RUNS:-5} # at least 5 runs for every row

# bench_row WHAT BASELINE GOAL UNIT "thinimg values" "baseline values"
#   GOAL: the highest acceptable median ratio ("-" for none); UNIT: s, MiB, ...
bench_row() {
    local what=$1 base=$2 goal=$3 unit=$4 a=$5 b=$6
    # every run's pair, for a row whose spread needs explaining (BENCH_VERBOSE=1)
    [ -z "${BENCH_VERBOSE:-}" ] || echo "runs: $what: thinimg $a; baseline $b"
    awk -v what="$what" -v base="$base" -v goal="$goal" -v unit="$unit" -v a="$a" -v b="$b" '
    function median(v, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) {
            t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
        }
        return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    BEGIN {
        n = split(a, x, " "); m = split(b, y, " ")
        if (n != m || n == 0) { printf "row: %s: no data (%d vs %d runs)\n", what, n, m; exit 1 }
        for (i = 1; i <= n; i++) { r[i] = (y[i] > 0) ? x[i] / y[i] : 0; xs[i] = x[i]; ys[i] = y[i] }
        lo = r[1]; hi = r[1]
        for (i = 1; i <= n; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
        med = median(r, n)
        verdict = (goal == "-") ? "" : sprintf(" goal <= %s: %s", goal, (med <= goal + 0) ? "met" : "NOT met")
        printf "row: %s: thinimg/%s min %.2f median %.2f max %.2f (%d runs; thinimg median %.3f %s, baseline median %.3f %s)%s\n",
            what, base, lo, med, hi, n, median(xs, n), unit, median(ys, n), unit, verdict
    }'
}

# bench_value WHAT GOAL UNIT "values": a row without a baseline (peak RSS against its goal).
bench_value() {
    local what=$1 goal=$2 unit=$3 v=$4
    awk -v what="$what" -v goal="$goal" -v unit="$unit" -v v="$v" 'BEGIN {
        n = split(v, x, " "); lo = x[1]; hi = x[1]
        for (i = 2; i <= n; i++) { if (x[i] < lo) lo = x[i]; if (x[i] > hi) hi = x[i] }
        for (i = 2; i <= n; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
        med = (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
        printf "row: %s: min %.1f median %.1f max %.1f %s (%d runs) goal <= %s %s: %s\n",
            what, lo, med, hi, unit, n, goal, unit, (med <= goal + 0) ? "met" : "NOT met"
    }'
}

# now_s: wall clock in seconds with microseconds, from bash itself (no process started).
now_s() { echo "${EPOCHREALTIME}"; }
# elapsed T0 T1: seconds between two now_s readings.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

# ---- The S3 benchmarks (bench/fetch.sh, bench/fetch-streams.sh) ----
# Their objects are served by tests/s3/harness.js (s3rver and its proxy on 127.0.0.1) from a
# work folder on a tmpfs when there is one (BENCH_DIR overrides), so that both sides measure
# the network path and their own CPU, not a shared disk's write-back. Leaves no process
# behind: the harness serves until its stdin (a FIFO the script holds open) closes, and is
# killed on exit.

# bench_s3_begin NAME: checks that $T (the thinimg measured) and the harness's packages are
# there, makes WORK, and stops the harness and removes WORK when the script exits.
bench_s3_begin() {
  local name=$1
  [ -x "$T" ] || { echo "bench/$name.sh: no $T; build first (BUILD=build-rel)" >&2; exit 1; }
  [ -d tests/s3/node_modules/s3rver ] || { echo "bench/$name.sh: run scripts/install-deps.sh" >&2; exit 1; }
  local base=${BENCH_DIR:-$( [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm || echo /tmp )}
  WORK=$(mktemp -d "$base/thinimg-bench-$name.XXXXXX")
  HPID=""
  trap bench_s3_end EXIT
}
bench_s3_end() {
  exec 3>&- 2>/dev/null || true # the harness's stdin: EOF stops it
  [ -n "$HPID" ] && kill "$HPID" 2>/dev/null || true
  [ -n "$HPID" ] && wait "$HPID" 2>/dev/null || true
  rm -rf "$WORK"
}

# bench_random_tar PATH MIB: a tar of one file of MIB MiB of random bytes (one random MiB,
# rotated by a few bytes for each MiB: nothing compresses or dedups it, and it is quick to make).
bench_random_tar() {
  python3 - "$1" "$2" <<'PY'
import os, sys, tarfile
path, mib = sys.argv[1], int(sys.argv[2])
with open(path + ".data", "wb") as f:
    chunk = os.urandom(1 << 20)
    for i in range(mib):
        f.write(chunk[i % 7:] + chunk[:i % 7])
with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t, open(path + ".data", "rb") as f:
    info = tarfile.TarInfo("blob.bin"); info.size = mib << 20; info.mtime = 1700000000
    t.addfile(info, f)
os.unlink(path + ".data")
PY
}

# bench_s3_start: serves $WORK/seed as the bucket "bench" (then removes the seed: the server
# has its own copies), sets S3 and PROXY to the server's and the proxy's URLs, and clears the
# AWS credentials of the environment (the bucket is anonymous).
bench_s3_start() {
  mkfifo "$WORK/hold"
  exec 3<>"$WORK/hold"
  node tests/s3/harness.js --dir "$WORK/s3" --seed "bench=$WORK/seed" <"$WORK/hold" >"$WORK/ports" \
    2>"$WORK/harness.log" &
  HPID=$!
  for _ in $(seq 1 600); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
  [ -s "$WORK/ports" ] || { echo "the S3 harness did not start: $(cat "$WORK/harness.log")" >&2; exit 1; }
  local s3port proxyport
  read -r s3port proxyport < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["s3"], j["proxy"])' "$WORK/ports")
  S3="http://127.0.0.1:$s3port" PROXY="http://127.0.0.1:$proxyport"
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_PROFILE
  rm -rf "$WORK/seed"
}

# bench_fetch_once ENDPOINT KEY: seconds of `thinimg fetch s3://bench/KEY` from ENDPOINT into
# a fresh state directory ($WORK/state, kept until the next call).
bench_fetch_once() {
  rm -rf "$WORK/state"
  local t0 t1
  t0=$(now_s)
  AWS_ENDPOINT_URL="$1" "$T" -q --state-dir "$WORK/state" fetch "s3://bench/$2" >/dev/null
  t1=$(now_s)
  elapsed "$t0" "$t1"
}
# bench_curl_once ENDPOINT KEY SYNC: seconds of `curl -o FILE` of the same object (then
# `sync FILE` when SYNC is 1: thinimg fsyncs).
bench_curl_once() {
  rm -f "$WORK/out"
  local t0 t1
  t0=$(now_s)
  curl -s -f -o "$WORK/out" "$1/bench/$2"
  [ "$3" = 1 ] && sync "$WORK/out"
  t1=$(now_s)
  rm -f "$WORK/out"
  elapsed "$t0" "$t1"
}
