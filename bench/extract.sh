#!/usr/bin/env bash
# bench/extract.sh: layer extraction speed: `thinimg extract` against GNU tar and bsdtar
# extracting the same archive into the same file system, in one run.
#
# The archive is a real Debian root (mmdebstrap --variant=minbase bookworm, ~170 MB, ~9k
# entries), built once and cached by the archive tests (tests/archive/debian.py --tar). Each repetition extracts with
# every tool into a fresh directory, in rotating order, after a `sync` so that one tool's
# writeback is not charged to the next; the blob stays in the page cache for all of them.
# Prints per tool the median and best wall time, the ratio to GNU tar and the peak RSS
# (/usr/bin/time), and the CPU time (user+sys; steadier than wall time on a shared machine),
# then checks the target: thinimg <= 1.1x GNU tar (median wall time).
#
# Usage: bench/extract.sh [REPS]        (default 7)
# Environment: THINIMG_BIN (default build/thinimg), BENCH_TAR (an archive to use instead),
#              BENCH_DIR (where to extract; default build/bench-extract, same fs as build/)
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${1:-7}
BIN=${THINIMG_BIN:-build/thinimg}
TAR=${BENCH_TAR:-}
DIR=${BENCH_DIR:-build/bench-extract}

[ -x "$BIN" ] || { echo "no thinimg binary at $BIN (make build, or set THINIMG_BIN)" >&2; exit 1; }
for t in tar bsdtar /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
if [ -z "${BENCH_TAR:-}" ]; then
  # The archive tests' cache: built once, atomically, and checked at every use.
  TAR=$(python3 tests/archive/debian.py --tar)
fi
owner=--same-owner
[ "$(id -u)" = 0 ] || owner=--no-same-owner

mkdir -p "$DIR"
rm -rf "${DIR:?}"/*
cat "$TAR" >/dev/null # the blob is read from the page cache by every tool

run() { # run TOOL TARGET
  case "$1" in
    thinimg) "$BIN" -q extract --root "$2" "$TAR" ;;
    gnutar) tar -xpf "$TAR" "$owner" -C "$2" ;;
    bsdtar) bsdtar -xpf "$TAR" "$owner" -C "$2" ;;
  esac
}

tools=(thinimg gnutar bsdtar)
declare -A times mem cpu
echo "archive: $TAR ($(du -h "$TAR" | cut -f1), $(tar -tf "$TAR" | wc -l) entries)"
echo "target:  $DIR ($(stat -f -c %T "$DIR")), $REPS repetitions"
for ((i = 0; i < REPS; i++)); do
  for ((k = 0; k < ${#tools[@]}; k++)); do
    t=${tools[$(((i + k) % ${#tools[@]}))]}
    target="$DIR/$t-$i"
    mkdir -p "$target"
    sync
    out=$( { /usr/bin/time -f "%e %U %S %M" bash -c "$(declare -f run); BIN='$BIN' TAR='$TAR' owner='$owner' run $t '$target'" >/dev/null; } 2>&1 | tail -1)
    read -r e u s m <<<"$out"
    times[$t]+="$e "
    mem[$t]+="$m "
    cpu[$t]+="$(awk -v u="$u" -v s="$s" 'BEGIN {print u + s}') "
    rm -rf "$target"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
best() { tr ' ' '\n' | grep -v '^$' | sort -g | head -1; }
peak() { tr ' ' '\n' | grep -v '^$' | sort -g | tail -1; }

ref=$(echo "${times[gnutar]}" | median)
cref=$(echo "${cpu[gnutar]}" | median)
printf "\n%-8s %10s %10s %12s %12s %12s %14s\n" tool "median s" "best s" "vs GNU tar" \
  "cpu s" "cpu vs GNU" "peak RSS KiB"
for t in "${tools[@]}"; do
  m=$(echo "${times[$t]}" | median)
  c=$(echo "${cpu[$t]}" | median)
  printf "%-8s %10.3f %10.3f %11.2fx %12.3f %11.2fx %14s\n" "$t" "$m" \
    "$(echo "${times[$t]}" | best)" "$(awk -v a="$m" -v b="$ref" 'BEGIN {print (b > 0) ? a / b : 0}')" \
    "$c" "$(awk -v a="$c" -v b="$cref" 'BEGIN {print (b > 0) ? a / b : 0}')" \
    "$(echo "${mem[$t]}" | peak)"
done
ratio=$(awk -v a="$(echo "${times[thinimg]}" | median)" -v b="$ref" 'BEGIN {printf "%.2f", a / b}')
if awk -v r="$ratio" 'BEGIN {exit !(r <= 1.10)}'; then
  echo "target thinimg <= 1.10x GNU tar: met ($ratio)"
else
  echo "target thinimg <= 1.10x GNU tar: NOT met ($ratio)"
fi
rmdir "$DIR" 2>/dev/null || true
