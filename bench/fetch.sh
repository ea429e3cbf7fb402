#!/usr/bin/env bash
# bench/fetch.sh: thinimg's S3 download path against curl, same object, same local S3 server
# (s3rver on 127.0.0.1), in one run, several repetitions; prints throughputs and the ratio.
#
#   bench/fetch.sh [SIZE_MIB] [REPS]      (default 1024 MiB, 3 repetitions)
#
# thinimg side: bench/fetch_client (the fetch machine's download core: ranged GET, sha256 of
# every byte, buffered writes, fsync). curl side: `curl -o FILE` then `sync FILE` (the same
# fsync). Both read from s3rver directly (no fault proxy). Also times `thinimg fetch` end to
# end (download + validate scan + record) for reference. Target: ratio >= 0.9.
# Needs a release build in build/ (make build) and tests/s3/node_modules (install-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
REPS=${2:-3}
BUILD=${BUILD:-build}
[ -x "$BUILD/thinimg" ] || { echo "bench/fetch.sh: no $BUILD/thinimg; run make build" >&2; exit 1; }
[ -d tests/s3/node_modules/s3rver ] || { echo "bench/fetch.sh: run scripts/install-deps.sh" >&2; exit 1; }

# Work on a tmpfs when there is one: both clients then measure the network path and their own
# CPU cost, not the disk's write-back speed (the fsync of 1 GiB to a shared disk varies by
# seconds between runs). BENCH_DIR overrides.
BASE=${BENCH_DIR:-$( [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm || echo /tmp )}
WORK=$(mktemp -d "$BASE/thinimg-bench-fetch.XXXXXX")
HPID=""
cleanup() {
  [ -n "$HPID" ] && kill "$HPID" 2>/dev/null || true
  [ -n "$HPID" ] && wait "$HPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The client, linked against the release library.
CLIENT="$WORK/fetch_client"
cc -O2 -std=gnu17 -D_GNU_SOURCE -Isrc -I"$BUILD/generated" bench/fetch_client.c -o "$CLIENT" \
  "$BUILD/libthinimg_core.a" $(pkg-config --libs sqlite3 libcurl libarchive devmapper libcrypto \
  jansson expat ncursesw libmicrohttpd) -lpthread -lm

# A layer of SIZE_MIB MiB (one file of random bytes in a tar, so `thinimg fetch` accepts it).
mkdir -p "$WORK/seed/bench"
python3 - "$WORK/seed/bench/1.tar" "$SIZE_MIB" <<'PY'
import os, sys, tarfile
path, mib = sys.argv[1], int(sys.argv[2])
n = mib << 20
with open(path + ".data", "wb") as f:
    chunk = os.urandom(1 << 20)
    for i in range(mib):
        f.write(chunk[i % 7:] + chunk[:i % 7])
with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t, open(path + ".data", "rb") as f:
    info = tarfile.TarInfo("blob.bin"); info.size = n; info.mtime = 1700000000
    t.addfile(info, f)
os.unlink(path + ".data")
PY
SIZE=$(stat -c %s "$WORK/seed/bench/1.tar")

exec 3< <(sleep 100000)
node tests/s3/harness.js --dir "$WORK/s3" --seed "bench=$WORK/seed" <&3 > "$WORK/ports" 2> "$WORK/harness.log" &
HPID=$!
for _ in $(seq 1 600); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
S3PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["s3"])' "$WORK/ports")
export AWS_ENDPOINT_URL="http://127.0.0.1:$S3PORT"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_PROFILE
URL="$AWS_ENDPOINT_URL/bench/bench/1.tar"
rm -f "$WORK/seed/bench/1.tar"   # the server has its own copy; keep the page cache for it
WANT=""

mbps() { python3 -c "print(f'{$1/$2/1e6:.0f}')"; }
declare -a T_CLIENT T_CURL T_FETCH C_CLIENT C_CURL
echo "object: $SIZE bytes on s3rver at 127.0.0.1:$S3PORT, $REPS repetitions"
# warm the server's page cache once
curl -s -o /dev/null "$URL"
for i in $(seq 1 "$REPS"); do
  rm -f "$WORK/out.client" "$WORK/out.curl"
  read -r bytes secs digest < <(/usr/bin/time -f "%U %S" -o "$WORK/cpu.client" \
    "$CLIENT" "s3://bench/bench/1.tar" "$WORK/out.client")
  [ "$bytes" = "$SIZE" ] || { echo "client got $bytes bytes" >&2; exit 1; }
  WANT=$digest
  T_CLIENT+=("$secs")
  t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$WORK/cpu.curl" curl -s -f -o "$WORK/out.curl" "$URL"
  sync "$WORK/out.curl"
  t1=$(date +%s.%N)
  T_CURL+=("$(python3 -c "print(f'{$t1-$t0:.3f}')")")
  rm -rf "$WORK/state"
  t0=$(date +%s.%N)
  "$BUILD/thinimg" -q --state-dir "$WORK/state" fetch s3://bench/bench/1.tar > "$WORK/fetch.out"
  t1=$(date +%s.%N)
  grep -q "${WANT}" "$WORK/fetch.out" || { echo "thinimg fetch printed another digest" >&2; exit 1; }
  T_FETCH+=("$(python3 -c "print(f'{$t1-$t0:.3f}')")")
  C_CLIENT+=("$(awk '{print $1+$2}' "$WORK/cpu.client")")
  C_CURL+=("$(awk '{print $1+$2}' "$WORK/cpu.curl")")
  printf 'rep %d: thinimg client %s s (%s MB/s, cpu %s s)   curl %s s (%s MB/s, cpu %s s)   thinimg fetch (with validate) %s s (%s MB/s)\n' \
    "$i" "${T_CLIENT[-1]}" "$(mbps "$SIZE" "${T_CLIENT[-1]}")" "${C_CLIENT[-1]}" "${T_CURL[-1]}" \
    "$(mbps "$SIZE" "${T_CURL[-1]}")" "${C_CURL[-1]}" "${T_FETCH[-1]}" "$(mbps "$SIZE" "${T_FETCH[-1]}")"
done
cmp -s "$WORK/out.client" "$WORK/out.curl" || { echo "the two downloads differ" >&2; exit 1; }
python3 - "$SIZE" "${T_CLIENT[*]}" "${T_CURL[*]}" "${T_FETCH[*]}" "${C_CLIENT[*]}" "${C_CURL[*]}" <<'PY'
import statistics, sys
size = int(sys.argv[1])
c, k, f, cc, ck = ([float(x) for x in a.split()] for a in sys.argv[2:7])
print(f"cpu per GiB (user+sys, median): thinimg client {statistics.median(cc)*(1<<30)/size:.2f} s "
      f"(includes sha256), curl {statistics.median(ck)*(1<<30)/size:.2f} s")
mc, mk, mf = statistics.median(c), statistics.median(k), statistics.median(f)
print(f"median: thinimg client {size/mc/1e6:.0f} MB/s, curl {size/mk/1e6:.0f} MB/s, "
      f"thinimg fetch end-to-end {size/mf/1e6:.0f} MB/s")
# each repetition runs the two back to back, so the per-repetition ratio cancels most of the
# machine's background load; its median is the figure to read
pr = statistics.median(b / a for a, b in zip(c, k))
pf = statistics.median(b / a for a, b in zip(f, k))
print(f"ratio thinimg/curl (download), median of per-repetition ratios: {pr:.2f}  (target >= 0.90)")
print(f"ratio thinimg fetch end-to-end (+ validate scan, record)/curl: {pf:.2f}")
PY
