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
# (scripts/install-deps.sh). The harness and the work folder (a tmpfs when there is one):
# bench/lib.sh (bench_s3_begin).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE_MIB=${1:-256}
RUNS=${2:-3}
BUILD=${BUILD:-build}
T="$BUILD/thinimg"
RATE=${SHAPE_BYTES_PER_S:-20000000}
DELAY_MS=${SHAPE_DELAY_MS:-50}
bench_s3_begin fetch-streams

mkdir -p "$WORK/seed/big"
bench_random_tar "$WORK/seed/big/1.tar" "$SIZE_MIB"
SIZE=$(stat -c %s "$WORK/seed/big/1.tar")

bench_s3_start
echo "object: $SIZE bytes; shaped: $RATE bytes/s per response, ${DELAY_MS} ms to the first byte; $RUNS runs; $T"

speedup() { # "thinimg times" "curl times": median of curl/thinimg per run
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " ");
    for (i = 1; i <= n; i++) r[i] = y[i] / x[i];
    for (i = 2; i <= n; i++) for (j = i; j > 1 && r[j - 1] > r[j]; j--) { t = r[j]; r[j] = r[j - 1]; r[j - 1] = t }
    printf "%.2f", (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2 }'
}

curl -s -o /dev/null "$S3/bench/big/1.tar" # warm the server's page cache
curl -s -f -o /dev/null -X POST -d "{\"method\":\"GET\",\"action\":\"slow\",\"bytes_per_s\":$RATE,\"piece\":$((RATE / 100)),\"delay_ms\":$DELAY_MS,\"count\":0}" "$PROXY/__ctl/fault"

a="" b=""
for ((i = 0; i < RUNS; i++)); do a+="$(bench_fetch_once "$PROXY" big/1.tar) "; b+="$(bench_curl_once "$PROXY" big/1.tar 0) "; done
bench_row "fetch of $((SIZE >> 20)) MiB, shaped, split into 4 streams" "curl (one stream)" 0.33 s "$a" "$b"
echo "speedup shaped: curl/thinimg $(speedup "$a" "$b") (goal >= 3)"

a="" b=""
for ((i = 0; i < RUNS; i++)); do a+="$(bench_fetch_once "$S3" big/1.tar) "; b+="$(bench_curl_once "$S3" big/1.tar 1) "; done
bench_row "fetch of $((SIZE >> 20)) MiB, loopback, one stream" "curl -o + sync" 1.05 s "$a" "$b"
echo "speedup loopback: curl/thinimg $(speedup "$a" "$b") (goal >= 0.95)"
