#!/usr/bin/env bash
# bench/fetch-streams.sh: the streams policy (docs/sources.md, "Parallel ranges": one GET,
# split into up to 4 ranged GETs when that connection is slow) against one curl stream, on the
# same SIZE MiB object from s3rver:
#
#   shaped: through the harness's proxy capping every response at 20 MB/s with a 50 ms
#     first-byte delay (real S3 limits each connection; this kernel has no netem, so the
#     proxy is the shaper): thinimg fetch (split: 4 streams) vs curl  goal: curl/thinimg >= 3
#   unshaped: s3rver on loopback directly: thinimg fetch (one stream: fast enough) vs
#     curl -o + sync                                                goal: curl/thinimg >= 0.95
#
# thinimg side: `thinimg fetch` end to end (HEAD, the ranges, sha256 of every byte, fsync,
# validate, record) into a fresh state directory; curl side: `curl -o FILE` (+ `sync FILE` on
# loopback: thinimg fsyncs). Rows in bench/lib.sh's format (ratio thinimg/curl in time), then
# the speedups curl/thinimg.
#
#   bench/fetch-streams.sh [SIZE_MIB] [RUNS]      (defaults: 256 MiB, 3 runs)
#
# Needs a Release build (BUILD=build-rel, default build) and tests/s3/node_modules
# (scripts/install-deps.sh). Work happens on a tmpfs when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE_MIB=${1:-256}
RUNS=${2:-3}
BUILD=${BUILD:-build}
T="$BUILD/thinimg"
RATE=${SHAPE_BYTES_PER_S:-20000000}
DELAY_MS=${SHAPE_DELAY_MS:-50}
[ -x "$T" ] || { echo "bench/fetch-streams.sh: no $T; build first (BUILD=build-rel)" >&2; exit 1; }
[ -d tests/s3/node_modules/s3rver ] || { echo "bench/fetch-streams.sh: run scripts/install-deps.sh" >&2; exit 1; }

BASE=${BENCH_DIR:-$( [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm || echo /tmp )}
WORK=$(mktemp -d "$BASE/thinimg-bench-streams.XXXXXX")
HPID=""
cleanup() {
  exec 3>&- 2>/dev/null || true # the harness's stdin: EOF stops it
  [ -n "$HPID" ] && kill "$HPID" 2>/dev/null || true
  [ -n "$HPID" ] && wait "$HPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/seed/big"
python3 - "$WORK/seed/big/1.tar" "$SIZE_MIB" <<'PY'
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
SIZE=$(stat -c %s "$WORK/seed/big/1.tar")

mkfifo "$WORK/hold"
exec 3<>"$WORK/hold"
node tests/s3/harness.js --dir "$WORK/s3" --seed "bench=$WORK/seed" <"$WORK/hold" >"$WORK/ports" \
  2>"$WORK/harness.log" &
HPID=$!
for _ in $(seq 1 600); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
read -r S3PORT PROXYPORT < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["s3"], j["proxy"])' "$WORK/ports")
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_PROFILE
rm -rf "$WORK/seed"
echo "object: $SIZE bytes; shaped: $RATE bytes/s per response, ${DELAY_MS} ms to the first byte; $RUNS runs; $T"

# fetch_once ENDPOINT: seconds of `thinimg fetch s3://bench/big/1.tar` into a fresh state.
fetch_once() {
  rm -rf "$WORK/state"
  local t0 t1
  t0=$(now_s)
  AWS_ENDPOINT_URL="$1" "$T" -q --state-dir "$WORK/state" fetch s3://bench/big/1.tar >/dev/null
  t1=$(now_s)
  elapsed "$t0" "$t1"
}
# curl_once ENDPOINT SYNC: seconds of one `curl -o` (and `sync FILE` when SYNC is 1).
curl_once() {
  rm -f "$WORK/out"
  local t0 t1
  t0=$(now_s)
  curl -s -f -o "$WORK/out" "$1/bench/big/1.tar"
  [ "$2" = 1 ] && sync "$WORK/out"
  t1=$(now_s)
  rm -f "$WORK/out"
  elapsed "$t0" "$t1"
}
speedup() { # "thinimg times" "curl times": median of curl/thinimg per run
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " ");
    for (i = 1; i <= n; i++) r[i] = y[i] / x[i];
    for (i = 2; i <= n; i++) for (j = i; j > 1 && r[j - 1] > r[j]; j--) { t = r[j]; r[j] = r[j - 1]; r[j - 1] = t }
    printf "%.2f", (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2 }'
}

S3="http://127.0.0.1:$S3PORT" PROXY="http://127.0.0.1:$PROXYPORT"
curl -s -o /dev/null "$S3/bench/big/1.tar" # warm the server's page cache
curl -s -f -o /dev/null -X POST -d "{\"method\":\"GET\",\"action\":\"slow\",\"bytes_per_s\":$RATE,\"piece\":$((RATE / 100)),\"delay_ms\":$DELAY_MS,\"count\":0}" "$PROXY/__ctl/fault"

a="" b=""
for ((i = 0; i < RUNS; i++)); do a+="$(fetch_once "$PROXY") "; b+="$(curl_once "$PROXY" 0) "; done
bench_row "fetch of $((SIZE >> 20)) MiB, shaped, split into 4 streams" "curl (one stream)" 0.33 s "$a" "$b"
echo "speedup shaped: curl/thinimg $(speedup "$a" "$b") (goal >= 3)"

a="" b=""
for ((i = 0; i < RUNS; i++)); do a+="$(fetch_once "$S3") "; b+="$(curl_once "$S3" 1) "; done
bench_row "fetch of $((SIZE >> 20)) MiB, loopback, one stream" "curl -o + sync" 1.05 s "$a" "$b"
echo "speedup loopback: curl/thinimg $(speedup "$a" "$b") (goal >= 0.95)"
