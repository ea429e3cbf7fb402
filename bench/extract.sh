#!/usr/bin/env bash
# bench/extract.sh: layer extraction, `thinimg extract` against GNU tar and bsdtar extracting the
# same archive into the same file system, in one run. Rows (bench/lib.sh format):
#
#   extract, 300k-entry layer, tmpfs       vs GNU tar  goal <= 1.00
#   extract, Debian layer .tar.gz          vs bsdtar   goal <= 1.05
#   extract, Debian layer .tar             vs GNU tar  goal <= 1.10
#   peak RSS extracting a 300k-entry layer             goal <= 32 MiB
#
# The archives: a real Debian root (mmdebstrap --variant=minbase bookworm, ~170 MB, ~9k
# entries), built once and cached by the archive tests (tests/archive/debian.py --tar), and its
# gzip; a layer of 300,000 entries (bench/make-bench-images.py --entries: 3,000 directories of
# 99 small files). Each run extracts with thinimg and the baseline into fresh directories, in
# alternating order, after a `sync` so that one tool's writeback is not charged to the next;
# the blobs stay in the page cache. Wall time and peak RSS from /usr/bin/time.
#
# Usage: bench/extract.sh [RUNS]        (default 5)
# Environment: THINIMG_BIN (default build/thinimg; use a Release build), BENCH_DIR (where
#              to extract; default /dev/shm when writable, else build/bench-extract)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RUNS=${1:-$BENCH_RUNS}
BIN=${THINIMG_BIN:-build/thinimg}
if [ -z "${BENCH_DIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  DIR=$(mktemp -d /dev/shm/thinimg-bench-extract.XXXXXX)
else
  DIR=${BENCH_DIR:-build/bench-extract}
  mkdir -p "$DIR"
fi
trap 'rm -rf "${DIR:?}"' EXIT

[ -x "$BIN" ] || { echo "no thinimg binary at $BIN (make build, or set THINIMG_BIN)" >&2; exit 1; }
for t in tar bsdtar gzip /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
DEBIAN=$(python3 tests/archive/debian.py --tar) # built once, atomically, checked at every use
MANY="$DIR/300k.tar"
python3 bench/make-bench-images.py --entries 300000 "$MANY"
GZ="$DIR/debian.tar.gz"
gzip -1 -c "$DEBIAN" >"$GZ.tmp" && mv "$GZ.tmp" "$GZ"
owner=--same-owner
[ "$(id -u)" = 0 ] || owner=--no-same-owner

# one TOOL ARCHIVE: extract into a fresh directory; prints "seconds peak_KiB".
one() {
  local target="$DIR/x" out
  rm -rf "$target"
  mkdir -p "$target"
  sync
  case "$1" in
    thinimg) out=$( { /usr/bin/time -f "%e %M" "$BIN" -q extract --root "$target" "$2" >/dev/null; } 2>&1 | tail -1) ;;
    gnutar) out=$( { /usr/bin/time -f "%e %M" tar -xpf "$2" "$owner" -C "$target"; } 2>&1 | tail -1) ;;
    bsdtar) out=$( { /usr/bin/time -f "%e %M" bsdtar -xpf "$2" "$owner" -C "$target"; } 2>&1 | tail -1) ;;
  esac
  rm -rf "$target"
  echo "$out"
}

# row WHAT ARCHIVE BASELINE_TOOL BASELINE_NAME GOAL: RUNS pairs, alternating which goes first.
rss_many=""
row() {
  local what=$1 archive=$2 tool=$3 name=$4 goal=$5 a="" b="" i s m
  cat "$archive" >/dev/null # into the page cache for both
  for ((i = 0; i < RUNS; i++)); do
    for t in $( ((i % 2)) && echo "$tool thinimg" || echo "thinimg $tool"); do
      read -r s m < <(one "$t" "$archive")
      if [ "$t" = thinimg ]; then
        a+="$s "
        [ "$archive" = "$MANY" ] && rss_many+="$(awk -v k="$m" 'BEGIN { printf "%.1f", k / 1024 }') "
      else
        b+="$s "
      fi
    done
  done
  bench_row "$what" "$name" "$goal" s "$a" "$b"
}

echo "extract into $DIR ($(stat -f -c %T "$DIR")), $RUNS runs each; thinimg: $BIN"
row "extract, 300k-entry layer, $(stat -f -c %T "$DIR")" "$MANY" gnutar "GNU tar" 1.00
bench_value "peak RSS extracting a 300k-entry layer" 32 MiB "$rss_many"
row "extract, Debian layer .tar.gz" "$GZ" bsdtar bsdtar 1.05
row "extract, Debian layer .tar" "$DEBIAN" gnutar "GNU tar" 1.10
