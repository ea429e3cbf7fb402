#!/usr/bin/env bash
# overlay.sh: the pipeline on the overlay backend, natively (no device-mapper, no VM; root and
# a kernel with overlayfs).
#
#  1. the bundled 3-layer example: the merged view equals `thinimg extract` of the same layers
#     entry by entry (modes, owners, xattrs, hardlinks, symlinks; whiteout and opaque dir
#     honoured), and the diff dirs hold overlay's whiteouts (character devices 0:0)
#  2. an image made for it (make-overlay-image.py): xattrs, a FIFO, whiteouts of a file and a
#     directory, an opaque dir (entries of the layer before and after its marker), a hardlink
#     to a lower file, a lower dir re-owned, type changes; an opaque dir's diff is marked
#     trusted.overlay.opaque=y with no whiteout below it (also the example's)
#  3. a second image sharing the two lower layers adds one layer directory only
#  4. the state directory keeps its backend: --backend dm-thin is refused; status reports the
#     backend and du-like usage per layer directory and activation (no pool, exit 0);
#     list-images and list-snapshots (--json and text) name the backend and give du of the
#     diff and upper dirs as the layers', images' and activations' bytes
#  5. deactivate unmounts and keeps the writes; activate mounts them again; a mount gone behind
#     thinimg's back (a reboot) is mounted again by process-image; --mount-at; remove deletes
#     the activation's directories, remove --image the layer directories no image uses
#  6. kill -9 at the overlay backend's transitions (THINIMG_FAULT; the second layer's, so a
#     lower layer is committed), each on a fresh state directory: a new process-image
#     converges to the same merged view
#  7. gc: an orphan layer dir and an orphan activation dir (its overlay mounted) are listed by
#     `gc --dry-run` as overlay-dir (beside the blobs of the removed image), and removed by
#     `gc --force` (the mount first); recorded layers and activations are untouched; gc says
#     no word of a pool (gc --json: backend overlay, no note); an overlay mount up
#     while its activation is recorded inactive is a 'mount' orphan (dry run first, then
#     unmounted, the upper dir kept); an overlay there of another upper dir is not listed
#  8. a mount gone (a reboot) is mounted again when the daemon starts, with the writes; its
#     reconcile logs nothing about a pool; GET /v1/activations and /v1/images give the backend
#     and du figures, GET /v1/pool the object of status --json (backend overlay, no pool); activate --mount-at goes through its API (a relative one: exit 2)
source "$(dirname "$0")/lib.sh"
need python3
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (overlay mounts)"; exit 77; }
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    { echo "SKIP: the kernel has no overlayfs"; exit 77; }

W=$(work_area overlay)
export THINIMG_STATE_DIR=$W/state THINIMG_BACKEND=overlay
unset THINIMG_POOL
umount_all() { grep -o " $W/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount 2>/dev/null || true; }
trap 'umount_all; rm -rf "$W"' EXIT
EX=$BUILD/example
[ -f "$EX/images/busybox/3.tar" ] || fail "no example source in $EX (build the 'example' target)"
T="$BIN --log-level warn"
OV=$THINIMG_STATE_DIR/overlay
has() { [[ "$1" == *"$2"* ]] || fail "$3: '$1' does not say '$2'"; }
cmp_tree() { python3 "$SRC/tests/archive/treecmp.py" "$1" "$2" --no-dir-mtime; }

# 1. the example
$T process-image --json "dir:$EX/images/busybox/" >"$W/p1.json"
M1=$(jget "$W/p1.json" '.device_path')
assert_eq "$M1" "$OV/act/busybox-3/merged" "mount point"
grep -q " $M1 overlay " /proc/self/mounts || fail "$M1 is not an overlay mount"
mkdir "$W/ref1"
$T extract --root "$W/ref1" "$EX"/images/busybox/{1,2,3}.tar >/dev/null
cmp_tree "$M1" "$W/ref1" || fail "merged view differs from thinimg extract of the same layers"
[ ! -e "$M1/etc/motd" ] || fail "whiteout of etc/motd not honoured"
[ -e "$M1/usr/share/doc/NEW" ] && [ ! -e "$M1/usr/share/doc/README" ] || fail "opaque dir"
TOP=$OV/layers/$(jget "$W/p1.json" '.layers[2].chain_id' | cut -d: -f2)/diff
assert_eq "$(stat -c '%F %t:%T' "$TOP/etc/motd")" "character special file 0:0" "whiteout form"
[ ! -e "$TOP/usr/bin" ] || fail "the top layer's diff holds what it does not change"
# an opaque dir in overlay's own form: marked, with no whiteout of each hidden lower entry
opaque_form() { # DIR: trusted.overlay.opaque is y, no whiteout (char device) below it
    assert_eq "$(getfattr --absolute-names -n trusted.overlay.opaque --only-values "$1" 2>&1)" y \
        "trusted.overlay.opaque of $1"
    assert_eq "$(find "$1" -type c | wc -l)" 0 "whiteouts below the opaque $1"
}
opaque_form "$TOP/usr/share/doc"
pass "example: merged view equals thinimg extract; whiteouts are overlay's (0:0), the opaque dir is marked"

# 2. the made image
python3 "$SRC/tests/pipeline/make-overlay-image.py" "$W/src"
$T process-image --json "dir:$W/src/images/ovl/" >"$W/p2.json"
M2=$(jget "$W/p2.json" '.device_path')
mkdir "$W/ref2"
$T extract --root "$W/ref2" "$W"/src/images/ovl/{1,2}.tar >/dev/null
cmp_tree "$M2" "$W/ref2" || fail "merged view of ovl differs from thinimg extract"
assert_eq "$(stat -c %h "$M2/srv/link")" 3 "hardlink group across layers (srv/data, link, third)"
assert_eq "$(stat -c '%a %u:%g' "$M2/lib/keep")" "711 7:7" "lower dir's metadata under a new file"
D2=$OV/layers/$(jget "$W/p2.json" '.layers[1].chain_id' | cut -d: -f2)/diff
opaque_form "$D2/opt"
assert_eq "$(cd "$M2/opt" && find . | sort | tr '\n' ' ')" ". ./new ./sub ./sub/before " \
    "opaque opt: the layer's own entries, before and after the marker"
pass "ovl: xattrs, FIFO, whiteouts, opaque dir, hardlink to a lower file, type changes"

# 3. shared lower layers
N_BEFORE=$(ls "$OV/layers" | wc -l)
$T process-image --json "dir:$EX/images/busybox-extra/" >"$W/p3.json"
assert_eq "$(ls "$OV/layers" | wc -l)" $((N_BEFORE + 1)) "layer directories after busybox-extra"
pass "a second image sharing two lower layers adds one layer directory"

# 4. one backend per state directory
rc=0
$T --backend dm-thin list-images >/dev/null 2>&1 || true
$T --backend dm-thin process-image "dir:$EX/images/busybox/" >/dev/null 2>"$W/mix.err" || rc=$?
[ "$rc" != 0 ] || fail "--backend dm-thin on an overlay state dir was accepted"
grep -q "uses the overlay backend" "$W/mix.err" || fail "mixing refused without a reason: $(cat "$W/mix.err")"
pass "--backend dm-thin refused on an overlay state directory (exit $rc)"
THINIMG_BACKEND= $T status --json >"$W/status.json" || fail "status on an overlay state dir failed"
assert_eq "$(jget "$W/status.json" '.backend')" overlay "status backend"
assert_eq "$(jget "$W/status.json" '[.storage[] | select(.kind == "layer")] | length')" \
    "$(ls "$OV/layers" | wc -l)" "status layer directories"
assert_eq "$(jget "$W/status.json" '.storage[] | select(.name == "busybox-3") | .mounted')" yes \
    "status: busybox-3 mounted"
DU=$(du -s -B1 "$TOP" | cut -f1)
assert_eq "$(jget "$W/status.json" ".storage[] | select(.path == \"$TOP\") | .bytes")" "$DU" \
    "status bytes of the top layer vs du"
pass "status: backend overlay, $(jget "$W/status.json" '.storage | length') directories, top layer $DU bytes (= du)"
# the listings: the backend, and du of the diff / upper dirs in the EXCL / SHARED / USED places
DU_TOL=16384 # bytes: du and thinimg walk the same unchanged trees (one directory block or so)
near() { # GOT WANT WHAT
    [ "$1" != null ] && [ $(($1 > $2 ? $1 - $2 : $2 - $1)) -le $DU_TOL ] ||
        fail "$3: got '$1', du says $2 (tolerance $DU_TOL)"
}
dub() { du --block-size=1 -s "$1" | cut -f1; }
echo kept >"$M1/root/written" # the activation's upper holds a write
$T list-images --json >"$W/li.json"
$T list-snapshots --json >"$W/ls.json"
assert_eq "$(jget "$W/li.json" '[.[].backend] | unique | join(",")')" overlay "list-images backend"
assert_eq "$(jget "$W/ls.json" '[.[].backend] | unique | join(",")')" overlay "list-snapshots backend"
IMG='.[] | select(.name == "busybox:3")'
L=() # busybox:3's layer diffs, bottom first; busybox-extra shares the lower two
for i in 0 1 2; do
    L[i]=$OV/layers/$(jget "$W/li.json" "$IMG | .layers[$i].chain_id" | cut -d: -f2)/diff
    near "$(jget "$W/li.json" "$IMG | .layers[$i].disk_bytes")" "$(dub "${L[i]}")" "layer $i disk_bytes"
    near "$(jget "$W/li.json" "$IMG | .layers[$i].exclusive_bytes")" "$(dub "${L[i]}")" "layer $i exclusive_bytes"
done
near "$(jget "$W/li.json" "$IMG | .exclusive_bytes")" "$(dub "${L[2]}")" "image exclusive_bytes (its own layer)"
near "$(jget "$W/li.json" "$IMG | .shared_bytes")" $(($(dub "${L[0]}") + $(dub "${L[1]}"))) \
    "image shared_bytes (the layers busybox-extra uses too)"
UP=$OV/act/busybox-3/upper
near "$(jget "$W/ls.json" '.[] | select(.name == "busybox-3") | .disk_bytes')" "$(dub "$UP")" "activation disk_bytes"
near "$(jget "$W/ls.json" '.[] | select(.name == "busybox-3") | .exclusive_bytes')" "$(dub "$UP")" "activation exclusive_bytes"
assert_eq "$(jget "$W/ls.json" '.[] | select(.name == "busybox-3") | .kernel_state')" active "activation kernel_state"
$T list-snapshots >"$W/ls.txt" 2>"$W/ls.err"
assert_eq "$(head -1 "$W/ls.txt")" "backend overlay" "list-snapshots first line"
grep -Eq "^busybox-3 +busybox:3 +active +$M1 .*[0-9.]+ (B|KiB|MiB)" "$W/ls.txt" ||
    fail "list-snapshots: no USED for busybox-3: $(cat "$W/ls.txt")"
[ ! -s "$W/ls.err" ] || fail "list-snapshots wrote to stderr: $(cat "$W/ls.err")"
$T list-images --layers >"$W/li.txt" 2>"$W/li.err"
assert_eq "$(head -1 "$W/li.txt")" "backend overlay" "list-images first line"
[ ! -s "$W/li.err" ] || fail "list-images wrote to stderr (a '-' note?): $(cat "$W/li.err")"
pass "list-images, list-snapshots: backend overlay; layer, image and activation bytes = du of the diff and upper dirs"

# 5. life cycle
echo kept >"$M1/root/written"
$T deactivate busybox-3 >/dev/null
! grep -q " $M1 " /proc/self/mounts || fail "deactivate left $M1 mounted"
[ -f "$OV/act/busybox-3/upper/root/written" ] || fail "deactivate lost the upper dir"
$T --log-level debug activate busybox:3 >/dev/null 2>"$W/act.log" || fail "activate: $(cat "$W/act.log")"
assert_eq "$(cat "$M1/root/written")" kept "write after deactivate + activate"
# A command that queues no work starts no queue sizing or pool watcher thread (pipeline.h,
# defer_background); process-image does.
! grep -qE 'queue limit changed|pool watcher' "$W/act.log" ||
    fail "activate started the queue sizing or the pool watcher: $(grep -E 'queue limit|pool watcher' "$W/act.log")"
grep -q 'run finished' "$W/act.log" || fail "no debug log from activate: $(head -c 2000 "$W/act.log")"
umount "$M1" # a reboot, or an operator
$T process-image "dir:$EX/images/busybox/" >/dev/null
grep -q " $M1 overlay " /proc/self/mounts || fail "process-image did not mount $M1 again"
assert_eq "$(cat "$M1/root/written")" kept "write after the mount went"
$T activate --name at busybox:3 --mount-at "$W/at" >/dev/null
grep -q " $W/at overlay " /proc/self/mounts || fail "--mount-at $W/at not mounted"
cmp_tree "$W/at" "$W/ref1" || fail "--mount-at view differs"
$T remove at >/dev/null
[ ! -e "$OV/act/at" ] || fail "remove left $OV/act/at"
! grep -q " $W/at " /proc/self/mounts || fail "remove left $W/at mounted"
$T remove ovl-2 >/dev/null
N=$(ls "$OV/layers" | wc -l)
$T remove --image ovl:2 >/dev/null
assert_eq "$(ls "$OV/layers" | wc -l)" $((N - 2)) "layer directories after remove --image ovl:2"
pass "deactivate/activate keep the writes; process-image remounts; --mount-at; remove"

# 6. kill -9, then a new process converges
for pt in unpack.create-device.end unpack.apply-layer.end unpack.verify.start \
    unpack.commit.start unpack.commit.end activate.create-snapshot.end activate.register.start; do
    S=$W/kill-${pt//./-}
    rc=0
    THINIMG_STATE_DIR=$S THINIMG_FAULT=$pt THINIMG_FAULT_SKIP=$([[ $pt == unpack.* ]] && echo 1 || echo 0) \
        $T process-image "dir:$EX/images/busybox/" >/dev/null 2>&1 || rc=$?
    assert_eq "$rc" 137 "exit of the process killed at $pt"
    if [ "$pt" = unpack.create-device.end ]; then
        # activate resumes the killed runs (fetches and unpacks): then it sizes their queues.
        THINIMG_STATE_DIR=$S $T --log-level debug activate --name resumer busybox:3 \
            >/dev/null 2>"$W/resume.log" || true
        grep -qE 'resuming unfinished runs" count=[1-9]' "$W/resume.log" ||
            fail "activate after a kill resumed nothing: $(grep resuming "$W/resume.log")"
        grep -q 'queue limit changed' "$W/resume.log" ||
            fail "activate resumed runs without starting the queue sizing"
    fi
    THINIMG_STATE_DIR=$S $T process-image --json "dir:$EX/images/busybox/" >"$W/k.json" 2>/dev/null ||
        fail "process-image after a kill at $pt failed"
    cmp_tree "$(jget "$W/k.json" '.device_path')" "$W/ref1" >/dev/null ||
        fail "merged view after a kill at $pt differs"
    [ ! -e "$S/overlay/layers/$(jget "$W/k.json" '.layers[1].chain_id' | cut -d: -f2)/work" ] ||
        fail "work dir of a committed layer left after a kill at $pt"
done
pass "kill -9 at 7 points of the overlay backend's transitions: the next process-image converges"

# 7. gc
G=$OV/act/ghost
mkdir -p "$OV/layers/0bad/diff/x" "$G/upper" "$G/work" "$G/merged"
echo orphan >"$OV/layers/0bad/diff/x/f"
mount -t overlay overlay -o "lowerdir=$OV/layers/0bad/diff,upperdir=$G/upper,workdir=$G/work" "$G/merged"
$T gc --dry-run --json >"$W/gc.json" 2>/dev/null
assert_eq "$(jget "$W/gc.json" '[.orphans[] | select(.kind == "overlay-dir") | "\(.kind):\(.what)"] | sort | join(" ")')" \
    "overlay-dir:$OV/act/ghost overlay-dir:$OV/layers/0bad" "gc --dry-run orphans"
assert_eq "$(jget "$W/gc.json" '"\(.backend) \(has("note"))"')" "overlay false" "gc --json: backend, no pool note"
$T gc --dry-run >"$W/gc.txt" 2>&1 || fail "gc --dry-run failed: $(cat "$W/gc.txt")"
! grep -qi pool "$W/gc.txt" || fail "gc on an overlay state dir talks about a pool: $(cat "$W/gc.txt")"
[ -d "$OV/layers/0bad" ] || fail "gc --dry-run removed something"
N=$(ls "$OV/layers" | wc -l)
$T gc --force >/dev/null 2>&1 || fail "gc --force failed"
[ ! -e "$OV/layers/0bad" ] && [ ! -e "$G" ] || fail "gc --force left an orphan dir"
! grep -q " $G/merged " /proc/self/mounts || fail "gc --force left the orphan's mount"
assert_eq "$(ls "$OV/layers" | wc -l)" $((N - 1)) "layer dirs after gc --force"
grep -q " $M1 overlay " /proc/self/mounts || fail "gc took down a recorded activation"
pass "gc: orphan layer and activation dirs (mounted) listed, then removed; recorded ones kept"
# a mount up while its record says inactive (mounted behind thinimg's back after deactivate)
$T deactivate busybox-3 >/dev/null
AW=$OV/act/busybox-3/work
mount -t overlay overlay -o "lowerdir=${L[2]}:${L[1]}:${L[0]},upperdir=$UP,workdir=$AW" "$M1"
rc=0
$T gc --dry-run --json >"$W/gc2.json" 2>/dev/null || rc=$?
assert_eq "$rc" 0 "gc --dry-run exit with a stale mount"
assert_eq "$(jget "$W/gc2.json" '[.orphans[] | select(.kind == "mount") | "\(.what) \(.removable)"] | join(" ")')" \
    "$M1 true" "gc --dry-run: the stale overlay mount"
has "$(jget "$W/gc2.json" '.orphans[] | select(.kind == "mount") | .reason')" \
    "activation busybox-3, whose record says inactive" "stale mount reason"
grep -q " $M1 overlay " /proc/self/mounts || fail "gc --dry-run unmounted $M1"
$T gc --force --json >"$W/gc3.json" 2>/dev/null || fail "gc --force with a stale mount failed"
assert_eq "$(jget "$W/gc3.json" '.orphans[] | select(.kind == "mount") | .result')" done "gc --force result"
! grep -q " $M1 " /proc/self/mounts || fail "gc --force left the stale mount $M1"
assert_eq "$(cat "$UP/root/written")" kept "the upper dir after gc unmounted it"
# an overlay there that is not of the activation's upper dir is not thinimg's: not listed
mkdir -p "$W/fu" "$W/fw"
mount -t overlay overlay -o "lowerdir=${L[0]},upperdir=$W/fu,workdir=$W/fw" "$M1"
$T gc --dry-run --json >"$W/gc4.json" 2>/dev/null
assert_eq "$(jget "$W/gc4.json" '[.orphans[] | select(.kind == "mount")] | length')" 0 "foreign overlay listed"
umount "$M1"
$T activate busybox:3 >/dev/null
pass "gc: an overlay mount up while its record says inactive is a 'mount' orphan (dry run, then unmounted; writes kept); a foreign one is not"

# 8. the daemon's start mounts an activation again
umount "$M1"
$BIN --log-level warn daemon >"$W/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 1 150); do grep -q " $M1 overlay " /proc/self/mounts && break; sleep 0.2; done
grep -q " $M1 overlay " /proc/self/mounts || { kill $DPID; fail "the daemon did not mount $M1 again: $(cat "$W/daemon.log")"; }
assert_eq "$(cat "$M1/root/written")" kept "write after the daemon's remount"
pass "the daemon's start mounts an activation that was gone again, with its writes"
# its reconcile compares the overlay directories: no word of a pool
SOCK=$THINIMG_STATE_DIR/thinimg.sock
for _ in $(seq 1 150); do [ -S "$SOCK" ] && break; sleep 0.2; done
curl -sf --unix-socket "$SOCK" http://x/v1/activations/busybox-3 >"$W/api-act.json" ||
    { kill $DPID; fail "GET /v1/activations/busybox-3"; }
assert_eq "$(jget "$W/api-act.json" '.backend')" overlay "API activation backend"
near "$(jget "$W/api-act.json" '.disk_bytes')" "$(dub "$UP")" "API activation disk_bytes"
curl -sf --unix-socket "$SOCK" http://x/v1/images >"$W/api-img.json" || { kill $DPID; fail "GET /v1/images"; }
near "$(jget "$W/api-img.json" '.images[] | select(.name == "busybox:3") | .layers[2].disk_bytes')" \
    "$(dub "${L[2]}")" "API layer disk_bytes"
curl -s --unix-socket "$SOCK" -o "$W/api-pool.json" -w '%{http_code}' http://x/v1/pool >"$W/api-pool.code"
assert_eq "$(cat "$W/api-pool.code") $(jget "$W/api-pool.json" '"\(.backend) \(.pool)"')" "200 overlay null" \
    "GET /v1/pool on overlay (status --json's object)"
assert_eq "$(jget "$W/api-pool.json" '.storage[] | select(.name == "busybox-3") | .mounted')" yes "GET /v1/pool: busybox-3 mounted"
! grep -qi pool "$W/daemon.log" || { kill $DPID; fail "the daemon's log talks about a pool: $(cat "$W/daemon.log")"; }
# --mount-at through the daemon's API
rc=0
$T activate --name viad --mount-at "$W/viad" busybox:3 >/dev/null 2>"$W/viad.err" || rc=$?
assert_eq "$rc" 0 "activate --mount-at next to the daemon ($(cat "$W/viad.err"))"
grep -q " $W/viad overlay " /proc/self/mounts || { kill $DPID; fail "--mount-at $W/viad not mounted by the daemon"; }
cmp_tree "$W/viad" "$W/ref1" || { kill $DPID; fail "--mount-at view (daemon) differs"; }
rc=0
$T activate --name rel --mount-at rel busybox:3 >/dev/null 2>"$W/rel.err" || rc=$?
assert_eq "$rc" 2 "activate --mount-at rel (relative) next to the daemon"
has "$(cat "$W/rel.err")" "needs an absolute directory" "relative --mount-at message"
$T remove viad >/dev/null || { kill $DPID; fail "remove viad through the daemon"; }
! grep -q " $W/viad " /proc/self/mounts || { kill $DPID; fail "remove left $W/viad mounted"; }
kill $DPID
wait $DPID || true
pass "the daemon: no pool warning at reconcile; its API shows the backend and du; --mount-at goes through it"
