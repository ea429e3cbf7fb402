#!/usr/bin/env bash
# bench/backends.sh: the overlay backend against dm-thin on the same images.
#
#   bench/backends.sh [BUILD_DIR] [overlay|dm-thin|both]      (defaults: build, both)
#
# For each backend, on a fresh state directory, with the bundled example (examples/
# make-example.py: busybox, 3 layers) and two images that share its lower layers (busybox-extra:
# layers 1-2 shared; busybox-more: layers 1-3 shared plus a 4th, made here):
#   first   process-image of busybox from nothing: fetch, unpack, activate (time to first
#           activation)
#   second  `activate busybox:3 --name second`: a second activation of the same image
#   disk    after all three images are active: overlay, du of STATE/overlay (layer diffs and
#           activation uppers); dm-thin, the pool's data blocks in use (status --json)
# overlay runs natively (root, overlayfs); dm-thin runs in the test VM (tests/vm/run: one boot,
# TCG, so its times are not comparable to the native overlay times, only its disk figures).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="$(cd "${1:-build}" && pwd)"
WHICH="${2:-both}"
[ -x "$BUILD/thinimg" ] || { echo "build first: cmake --build $BUILD" >&2; exit 2; }
EX=$BUILD/example
[ -f "$EX/images/busybox/3.tar" ] || { echo "no example in $EX (build 'example')" >&2; exit 2; }

ms() { echo $(($(date +%s%N) / 1000000)); }

# The third image: busybox's three layers and a fourth.
more_image() {
    local d=$1/images/busybox-more
    mkdir -p "$d"
    cp "$EX"/images/busybox/{1,2,3}.tar "$d/"
    python3 - "$d/4.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.USTAR_FORMAT) as tf:
    data = b"more\n" * 1000
    ti = tarfile.TarInfo("etc/more"); ti.size = len(data); ti.mtime = 1_700_000_000
    tf.addfile(ti, io.BytesIO(data))
PY
}

run_one() {
    local backend=$1 W
    W=$(mktemp -d "${THINIMG_VM_TMP:-${TMPDIR:-/tmp}}/thinimg-bench-backends-XXXXXX")
    export THINIMG_STATE_DIR=$W/state THINIMG_BACKEND=$backend THINIMG_POOL=benchb$$
    local T="$BUILD/thinimg --log-level warn -q"
    more_image "$W/src"
    if [ "$backend" = dm-thin ]; then
        $T setup-pool --data-size 256M >/dev/null
        $T health >/dev/null || true
    fi
    local t0 t1 t2 t3
    t0=$(ms)
    $T process-image "dir:$EX/images/busybox/" >/dev/null
    t1=$(ms)
    $T activate busybox:3 --name second >/dev/null
    t2=$(ms)
    $T process-image "dir:$EX/images/busybox-extra/" >/dev/null
    $T process-image "dir:$W/src/images/busybox-more/" >/dev/null
    t3=$(ms)
    local disk
    if [ "$backend" = overlay ]; then
        disk=$(du -x -s -B1 "$THINIMG_STATE_DIR/overlay" | cut -f1) # -x: not the mounts
    else
        $T status --json >"$W/s.json" || true
        disk=$(jq '.pool.data_used_blocks * .pool.block_bytes' "$W/s.json")
    fi
    printf '%-8s first activation %6d ms  second activation %5d ms  two more images %6d ms  disk for 3 images %s bytes\n' \
        "$backend" $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) "$disk"
    if [ "$backend" = overlay ]; then
        grep -o " $W/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount
    else
        for d in $(dmsetup ls | awk '{print $1}' | grep "^$THINIMG_POOL-" || true); do
            dmsetup remove "$d"
        done
        dmsetup remove "$THINIMG_POOL" || true
    fi
    rm -rf "$W"
}

case "$WHICH" in
overlay | both) run_one overlay ;;
esac
case "$WHICH" in
dm-thin) run_one dm-thin ;;
both)
    if [ -n "${THINIMG_VM:-}" ] || [ -e /dev/mapper/control ] && dmsetup version >/dev/null 2>&1; then
        run_one dm-thin
    else
        flock /tmp/thinimg-vm.lock tests/vm/run --timeout 1500 -- "$0" "$BUILD" dm-thin
    fi
    ;;
esac
