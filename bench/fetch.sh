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
# (scripts/install-deps.sh). Leaves no process behind: the S3 harness serves until its stdin
# (a FIFO this script holds open) closes, and is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE_MIB=${1:-419}
RUNS=${2:-$BENCH_RUNS}
BUILD=${BUILD:-build}
T="$BUILD/thinimg"
[ -x "$T" ] || { echo "bench/fetch.sh: no $T; build first (BUILD=build-rel)" >&2; exit 1; }
[ -d tests/s3/node_modules/s3rver ] || { echo "bench/fetch.sh: run scripts/install-deps.sh" >&2; exit 1; }

BASE=${BENCH_DIR:-$( [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm || echo /tmp )}
WORK=$(mktemp -d "$BASE/thinimg-bench-fetch.XXXXXX")
HPID=""
cleanup() {
  exec 3>&- 2>/dev/null || true # the harness's stdin: EOF stops it
  [ -n "$HPID" ] && kill "$HPID" 2>/dev/null || true
  [ -n "$HPID" ] && wait "$HPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The objects: a tar of SIZE_MIB MiB of random bytes (one file), and a gzip'd layer of ~60 MB
# (80 files of base64 text: gzip -1 leaves about three quarters).
mkdir -p "$WORK/seed/bench" "$WORK/seed/gz"
python3 - "$WORK/seed/bench/1.tar" "$SIZE_MIB" "$WORK/seed/gz/1.tar" <<'PY'
import base64, io, os, sys, tarfile
path, mib, gz = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path + ".data", "wb") as f:
    chunk = os.urandom(1 << 20)
    for i in range(mib):
        f.write(chunk[i % 7:] + chunk[:i % 7])
with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t, open(path + ".data", "rb") as f:
    info = tarfile.TarInfo("blob.bin"); info.size = mib << 20; info.mtime = 1700000000
    t.addfile(info, f)
os.unlink(path + ".data")
with tarfile.open(gz, "w", format=tarfile.USTAR_FORMAT) as t:
    for i in range(80):
        data = base64.b64encode(os.urandom(3 << 18))
        info = tarfile.TarInfo("text/%02d.txt" % i); info.size = len(data); info.mtime = 1700000000
        t.addfile(info, io.BytesIO(data))
PY
gzip -1 "$WORK/seed/gz/1.tar"
SIZE=$(stat -c %s "$WORK/seed/bench/1.tar")
GZSIZE=$(stat -c %s "$WORK/seed/gz/1.tar.gz")

mkfifo "$WORK/hold"
exec 3<>"$WORK/hold"
node tests/s3/harness.js --dir "$WORK/s3" --seed "bench=$WORK/seed" <"$WORK/hold" >"$WORK/ports" \
  2>"$WORK/harness.log" &
HPID=$!
for _ in $(seq 1 600); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
S3PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["s3"])' "$WORK/ports")
export AWS_ENDPOINT_URL="http://127.0.0.1:$S3PORT"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_PROFILE
rm -rf "$WORK/seed" # the server has its own copies
echo "objects: $SIZE and $GZSIZE bytes on s3rver at 127.0.0.1:$S3PORT; $RUNS runs; $T"
curl -s -o /dev/null "$AWS_ENDPOINT_URL/bench/bench/1.tar" # warm the server's page cache
curl -s -o /dev/null "$AWS_ENDPOINT_URL/bench/gz/1.tar.gz"

# fetch_once KEY: seconds of `thinimg fetch s3://bench/KEY` into a fresh state directory.
fetch_once() {
  rm -rf "$WORK/state"
  local t0 t1
  t0=$(now_s)
  "$T" -q --state-dir "$WORK/state" fetch "s3://bench/$1" >/dev/null
  t1=$(now_s)
  elapsed "$t0" "$t1"
}
# curl_once KEY SYNC: seconds of `curl -o` (and `sync FILE` when SYNC is 1).
curl_once() {
  rm -f "$WORK/out"
  local t0 t1
  t0=$(now_s)
  curl -s -f -o "$WORK/out" "$AWS_ENDPOINT_URL/bench/$1"
  [ "$2" = 1 ] && sync "$WORK/out"
  t1=$(now_s)
  rm -f "$WORK/out"
  elapsed "$t0" "$t1"
}

a="" b=""
for ((i = 0; i < RUNS; i++)); do a+="$(fetch_once bench/1.tar) "; b+="$(curl_once bench/1.tar 1) "; done
bench_row "fetch of a $((SIZE >> 20)) MiB tar from s3rver" "curl -o + sync" 1.05 s "$a" "$b"

a="" b=""
for ((i = 0; i < RUNS; i++)); do a+="$(fetch_once gz/1.tar.gz) "; b+="$(curl_once gz/1.tar.gz 0) "; done
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
