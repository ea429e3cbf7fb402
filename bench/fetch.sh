#!/usr/bin/env bash
# bench/fetch.sh: `thinimg fetch` from a local S3 server (s3rver on 127.0.0.1, no fault proxy)
# against curl, same objects, in one run. Rows (bench/lib.sh format):
#
#   fetch of a SIZE MiB tar from s3rver        vs curl -o + sync   goal <= 1.05
#   fetch of a ~60 MB .tar.gz layer           vs curl -o          goal <= 1.3
#   fetch of a blob already in the store      vs thinimg list-images  goal <= 2
#
# thinimg side: `thinimg fetch` end to end (download, sha256 of every byte, fsync, validate:
# detect and scan in one pass, for a compressed layer while it downloads; record) into a
# fresh state directory each run (the third row:
# the same state again, so the blob is found in the store). curl side: `curl -o FILE` (then
# `sync FILE` for the tar: thinimg fsyncs). Work happens on a tmpfs when there is one, so both
# measure the network path and their own CPU, not a shared disk's write-back.
#
#   bench/fetch.sh [SIZE_MIB] [RUNS]      (defaults: 419 MiB, 5 runs)
#
# Needs a Release build (BUILD=build-rel, default build) and tests/s3/node_modules
# (scripts/install-deps.sh). The harness and the work folder: bench/lib.sh (bench_s3_begin).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE_MIB=${1:-419}
RUNS=${2:-$BENCH_RUNS}
BUILD=${BUILD:-build}
T="$BUILD/thinimg"
bench_s3_begin fetch

# The objects: a tar of SIZE_MIB MiB of random bytes (one file), and a gzip'd layer of ~60 MB
# (80 files of base64 text: gzip -1 leaves about three quarters).
mkdir -p "$WORK/seed/bench" "$WORK/seed/gz"
bench_random_tar "$WORK/seed/bench/1.tar" "$SIZE_MIB"
python3 - "$WORK/seed/gz/1.tar" <<'PY'
import base64, io, os, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.USTAR_FORMAT) as t:
    for i in range(80):
        data = base64.b64encode(os.urandom(3 << 18))
        info = tarfile.TarInfo("text/%02d.txt" % i); info.size = len(data); info.mtime = 1700000000
        t.addfile(info, io.BytesIO(data))
PY
gzip -1 "$WORK/seed/gz/1.tar"
SIZE=$(stat -c %s "$WORK/seed/bench/1.tar")
GZSIZE=$(stat -c %s "$WORK/seed/gz/1.tar.gz")

bench_s3_start
export AWS_ENDPOINT_URL="$S3"
echo "objects: $SIZE and $GZSIZE bytes on s3rver at $S3; $RUNS runs; $T"
curl -s -o /dev/null "$AWS_ENDPOINT_URL/bench/bench/1.tar" # warm the server's page cache
curl -s -o /dev/null "$AWS_ENDPOINT_URL/bench/gz/1.tar.gz"

a="" b=""
for ((i = 0; i < RUNS; i++)); do a+="$(bench_fetch_once "$S3" bench/1.tar) "; b+="$(bench_curl_once "$S3" bench/1.tar 1) "; done
bench_row "fetch of a $((SIZE >> 20)) MiB tar from s3rver" "curl -o + sync" 1.05 s "$a" "$b"

a="" b=""
for ((i = 0; i < RUNS; i++)); do a+="$(bench_fetch_once "$S3" gz/1.tar.gz) "; b+="$(bench_curl_once "$S3" gz/1.tar.gz 0) "; done
bench_row "fetch of a $((GZSIZE / 1000000)) MB .tar.gz layer from s3rver" "curl -o" 1.3 s "$a" "$b"

# The state of the last run holds the .tar.gz: fetching it again finds it in the store.
a="" b=""
for ((i = 0; i < RUNS; i++)); do
  t0=$(now_s)
  "$T" -q --state-dir "$WORK/state" fetch s3://bench/gz/1.tar.gz >/dev/null
  t1=$(now_s)
  "$T" -q --state-dir "$WORK/state" list-images >/dev/null
  t2=$(now_s)
  a+="$(elapsed "$t0" "$t1") "
  b+="$(elapsed "$t1" "$t2") "
done
bench_row "fetch of a blob already in the store" "list-images" 2 s "$a" "$b"
