#!/usr/bin/env bash
# debian.sh BUILD overlay|dm: a real two-layer Debian image (tests/pipeline/debian_image.py:
# mmdebstrap's bookworm minbase, and a layer with whiteouts, opaque dirs, hardlink groups split
# and spanning directories, symlinks, xattrs, odd modes and owners, devices, long names)
# through process-image, compared entry by entry with umoci's unpack of the same image
# (tests/pipeline/imgcmp.py: type, mode, owner, size, sha256, link target, device numbers,
# xattrs, hardlink groups, mtimes). Both backends are compared with the same reference, so
# they equal each other.
#
#   overlay  natively (root, overlayfs): the merged view of THINIMG_BACKEND=overlay; then the
#            comparer is shown to fail on a view changed in five ways (it can fail), and an
#            image with a character device 0:0 (overlay's whiteout form) is refused, saying why
#   dm       inside the VM (label dm): the dm-thin activation, mounted read-only. The image
#            and the reference are built on the host (the VM has no network): the ctest
#            fixture pipeline_debian_image of vm_dm_suite does it, or run
#            `python3 tests/pipeline/debian_image.py` before a single VM run.
source "$(dirname "$0")/lib.sh"
need python3
need setfattr
MODE=${2:-}
case "$MODE" in overlay | dm) ;; *) fail "usage: $0 BUILD_DIR overlay|dm" ;; esac
# The interpreter itself, once: a python3 on PATH may be a wrapper (pyenv's shim: seconds per
# start under the VM's emulation).
PY=$(python3 -c 'import sys; print(sys.executable)')
IMG=$SRC/tests/pipeline/debian_image.py
CMP=$SRC/tests/pipeline/imgcmp.py
T="$BIN --log-level warn"
ms() { echo $(($(date +%s%N) / 1000000)); }

if [ "$MODE" = overlay ]; then
    [ "$(id -u)" = 0 ] || { echo "SKIP: needs root (overlay mounts, umoci's reference)"; exit 77; }
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
        { echo "SKIP: the kernel has no overlayfs"; exit 77; }
    t0=$(ms)
    E=$("$PY" "$IMG") || fail "the Debian image could not be built (message above)"
    echo "image and reference: $(($(ms) - t0)) ms (cached in $E)"
else
    [ -n "${THINIMG_VM:-}" ] || [ -e /dev/mapper/control ] || { echo "SKIP: no device-mapper here"; exit 77; }
    need dmsetup
    E=$("$PY" "$IMG" --no-build) || fail "no Debian image built on the host (message above)"
fi
W=$(work_area "debian-$MODE")
export THINIMG_STATE_DIR=$W/state
if [ "$MODE" = overlay ]; then
    export THINIMG_BACKEND=overlay
    unset THINIMG_POOL
    trap 'grep -o " $W/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount || true; rm -rf "$W"' EXIT
else
    POOL=deb$$
    export THINIMG_POOL=$POOL
    trap 'umount "$W/mnt" 2>/dev/null || true; teardown_pool $POOL; rm -rf "$W"' EXIT
    # A minbase root is ~200 MB of ext4; the pool's files are sparse on the guest tmpfs.
    $T setup-pool --data-size 1G >/dev/null
    $T health >/dev/null || true # earlier tests in this VM filled pools on purpose
fi

t0=$(ms)
$T process-image --json --device-size 1G "dir:$E/images/deb/" >"$W/p.json" 2>"$W/p.err" ||
    fail "process-image ($MODE) of the Debian image failed: $(cat "$W/p.err")"
echo "process-image ($MODE): $(($(ms) - t0)) ms"
assert_eq "$(jget "$W/p.json" '.layers | length')" 2 "layers"
DEV=$(jget "$W/p.json" '.device_path')
if [ "$MODE" = overlay ]; then
    VIEW=$DEV
    grep -q " $VIEW overlay " /proc/self/mounts || fail "$VIEW is not an overlay mount"
    IGNORE=()
else
    [ -b "$DEV" ] || fail "no block device $DEV"
    VIEW=$W/mnt
    mkdir "$VIEW"
    mount -o ro "$DEV" "$VIEW"
    IGNORE=(--ignore "lost+found=mkfs.ext4 makes it in every layer's root; the image has none")
fi

"$PY" "$IMG" check "$VIEW" "$E" || fail "the $MODE view misses a change of layer 2"
t0=$(ms)
rc=0
"$PY" "$CMP" compare "$VIEW" "$E/ref.json" --no-mtime-from "$E/no-mtime.json" "${IGNORE[@]}" \
    >"$W/cmp.out" || rc=$?
# The rules, all but the per-directory mtime ones (listed in $E/no-mtime.json), and every
# difference.
grep -v '^imgcmp: mtime of' "$W/cmp.out" || true
echo "imgcmp: ($(grep -c '^imgcmp: mtime of' "$W/cmp.out") directory mtimes left out: $E/no-mtime.json)"
[ "$rc" = 0 ] || fail "the $MODE view of the Debian image differs from umoci's unpack (above)"
N=$(sed -n 's/.*(\([0-9]*\) entries) vs.*/\1/p' "$W/cmp.out")
pass "$MODE: $N entries identical to umoci's unpack ($(($(ms) - t0)) ms to compare)"

if [ "$MODE" = overlay ]; then
    # The comparer can fail: five changes in the (writable) merged view, each reported.
    chown 4242 "$VIEW/etc/passwd"
    setfattr -n user.added -v 1 "$VIEW/etc/group"
    ln "$VIEW/etc/shells" "$VIEW/etc/shells.again"
    rm "$VIEW/etc/fstab"
    echo x >>"$VIEW/opt/tagged"
    rc=0
    "$PY" "$CMP" compare "$VIEW" "$E/ref.json" --no-mtime-from "$E/no-mtime.json" \
        >"$W/bad.out" || rc=$?
    assert_eq "$rc" 1 "comparer exit on a changed view"
    for p in 'differs: etc/passwd .*uid' 'differs: etc/group .*user.added' \
        'only in first: etc/shells.again' 'differs: etc/shells .*links' \
        'only in second: etc/fstab ' 'differs: opt/tagged .*sha256'; do
        grep -q "$p" "$W/bad.out" || fail "the comparer did not report '$p': $(cat "$W/bad.out")"
    done
    pass "the comparer reports a changed owner, xattr, hardlink, removal and content"

    # What overlay cannot hold: a character device 0:0 is its whiteout form, refused by the
    # kernel through the merged view; the message says so (not only "needs CAP_MKNOD").
    mkdir -p "$W/c00/images/c00"
    "$PY" -B -c 'import sys; sys.path.insert(0, sys.argv[1]); from tarlib import Tar
open(sys.argv[2], "wb").write(Tar().dir("./").dir("dev").node("dev/c00", "c", 0, 0).end().bytes())' \
        "$SRC/tests/archive" "$W/c00/images/c00/1.tar"
    rc=0
    $T process-image "dir:$W/c00/images/c00/" >/dev/null 2>"$W/c00.err" || rc=$?
    [ "$rc" != 0 ] || fail "an image with a character device 0:0 was applied on overlay"
    grep -q "entry 'dev/c00': cannot create the character device 0:0 .*overlay's whiteout form" \
        "$W/c00.err" || fail "the refusal of a 0:0 device does not say why: $(cat "$W/c00.err")"
    pass "a character device 0:0 (overlay's whiteout form) is refused on overlay (exit $rc), saying why"
else
    umount "$VIEW"
fi
