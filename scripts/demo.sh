#!/usr/bin/env bash
# The main job on the bundled example (`make demo`): process-image of a 3-layer busybox image
# (made at build time by examples/make-example.py: a whiteout, an opaque directory, a hardlink)
# into an auto-created loop-backed thin pool, then show the device it produced.
#
# Where the kernel has dm-thin (and we are root), this runs here, with its state in
# build/demo-state. Otherwise it boots the test VM (tests/vm/run: a stock Debian kernel under
# QEMU) and runs there, with the state on the guest's tmpfs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$PWD/$BUILD/thinimg
EX=$PWD/$BUILD/example
[ -x "$BIN" ] && [ -f "$EX/images/busybox/3.tar" ] || { echo "demo: build first (make build)" >&2; exit 1; }

if [ "${1:-}" = "--inside" ]; then
    STATE=$2
    export THINIMG_STATE_DIR=$STATE
    [ -n "${THINIMG_VM:-}" ] && export THINIMG_HEALTH_TIMEOUT_MS=30000 # emulation is slow
    echo "== thinimg setup-pool (1 GiB loop-backed pool under $STATE/pool)"
    "$BIN" setup-pool --data-size 1G
    echo
    echo "== thinimg process-image --device-size 1G dir:$EX/images/busybox/"
    "$BIN" process-image --device-size 1G "dir:$EX/images/busybox/"
    echo
    echo "== the same again (already active: no device work)"
    "$BIN" process-image "dir:$EX/images/busybox/"
    echo
    echo "== thinimg list-images --layers"
    "$BIN" list-images --layers
    echo
    echo "== thinimg list-snapshots"
    "$BIN" list-snapshots
    DEV=$("$BIN" list-snapshots --json | jq -r '.[0].device_path')
    MNT=$(mktemp -d)
    mount -o ro "$DEV" "$MNT"
    echo
    echo "== what a VM booting $DEV sees"
    echo "\$ cat /etc/issue:      $(cat "$MNT/etc/issue")"
    echo "\$ ls /usr/share/doc:   $(ls "$MNT/usr/share/doc" | tr '\n' ' ')(opaque dir: lower files hidden)"
    echo "\$ ls /etc/motd:        $(ls "$MNT/etc/motd" 2>&1 | sed 's/.*: //')(whited out by layer 3)"
    echo "\$ stat -c %h /usr/lib/data.txt: $(stat -c %h "$MNT/usr/lib/data.txt") links (hardlink kept)"
    echo "\$ /bin/busybox:        $(stat -c %s "$MNT/bin/busybox") bytes, $(head -c 4 "$MNT/bin/busybox" | tr -dc 'A-Z') executable"
    umount "$MNT"
    rmdir "$MNT"
    echo
    echo "demo: done: the image is active at $DEV"
    exit 0
fi

has_dm_thin() {
    [ "$(id -u)" = 0 ] || return 1
    grep -qw device-mapper /proc/misc 2>/dev/null || modprobe dm-mod 2>/dev/null || return 1
    dmsetup targets 2>/dev/null | grep -q thin-pool || modprobe dm-thin-pool 2>/dev/null || return 1
    dmsetup targets 2>/dev/null | grep -q thin-pool
}

if has_dm_thin; then
    echo "demo: this kernel has dm-thin; running here (state in $BUILD/demo-state)"
    exec "$0" --inside "$PWD/$BUILD/demo-state"
fi
echo "demo: this kernel has no dm-thin; running inside the test VM (a stock Debian kernel under"
echo "      QEMU; the first run downloads the kernel package, later runs use the cache)"
exec tests/vm/run --timeout 1200 -- bash -c "\"$PWD/scripts/demo.sh\" --inside \"\$THINIMG_VM_TMP/demo-state\""
