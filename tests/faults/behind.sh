#!/usr/bin/env bash
# behind.sh BUILD: devices, thin ids, mounts and loop devices changed behind thinimg's back
# (label dm; runs inside the VM). Issue 7, acceptance 6. Every thinimg command is bounded.
#
# Images f and g share their base layer; both are processed and active. Then, at once:
#   a  the dm device of f's activation is removed (a file written into it beforehand)
#   b  the shared base layer's thin id is deleted from the pool
#   c  a stray "<pool>-act-junk" dm device is created (an error target named like the pool's
#      activations)
#   d  a stray thin id 999 is created with a pool message
#   e  g's top layer device is activated and mounted under STATE/mnt (a stale mount)
# `gc --dry-run --json` reports each, exactly (a dm-gone, b missing, c unknown-dm,
# d unknown-id, e mount + active-layer) and changes nothing. The next process-image of f
# reactivates f's activation (the file is still there) and recreates the base layer on a new
# id; `gc --force` removes c, d and e. Afterwards the pool and the database agree.
#
# Next to it, devices that are not the pool's although their names start with "<pool>-": a
# second pool named "<pool>-b" (its own state directory, with an idle activation) and a
# "<pool>-junk" someone else made. gc --dry-run and --force of the first pool never list or
# touch them, and gc of the second pool lists nothing of the first's (issue 12, point 11:
# names are matched exactly, see docs/dm.md).
#
# Then a "reboot": every dm device and the pool are removed and the data file's loop device is
# detached while the pool is down (the metadata's stays). gc reports that the pool is not
# active; process-image reassembles the pool (the metadata loop reused, one new loop for the
# data) and reactivates f and g with their content; the pool and the database agree again.
source "$(dirname "$0")/../pipeline/lib.sh"
source "$(dirname "$0")/lib.sh"
need mountpoint
cleanup() {
    umount "$S/mnt" "$S/vm" 2>/dev/null || true
    teardown_all
}
trap cleanup EXIT

fresh_env behind
$T setup-pool --data-size 256M >/dev/null || fail "setup-pool"
run f1 $T process-image --device-size 64M --json "$IMG_F"
expect_rc 0 "process-image f"
run g1 $T process-image --device-size 64M --json "$IMG_G"
expect_rc 0 "process-image g"
IFS='|' read -r BASE F2 ACT_F <<<"$(json "$S/f1.out" "json_extract(J, '\$.layers[0].device_id')" \
    "json_extract(J, '\$.layers[1].device_id')" "json_extract(J, '\$.device_id')")"
IFS='|' read -r GBASE G2 ACT_G <<<"$(json "$S/g1.out" "json_extract(J, '\$.layers[0].device_id')" \
    "json_extract(J, '\$.layers[1].device_id')" "json_extract(J, '\$.device_id')")"
assert_eq "$GBASE" "$BASE" "g's base layer device (shared with f)"
[ -n "$BASE" ] && [ -n "$F2" ] && [ -n "$G2" ] && [ -n "$ACT_F" ] && [ -n "$ACT_G" ] ||
    fail "devices of f and g: base=$BASE f2=$F2 g2=$G2 act-f=$ACT_F act-g=$ACT_G"
name_of() { db "SELECT name FROM devices WHERE pool = '$P' AND dev_id = $1"; }
ACT_F_NAME=$(name_of "$ACT_F")
ACT_G_NAME=$(name_of "$ACT_G")
G2_NAME=$(name_of "$G2")
echo "devices: base $BASE, f top $F2, g top $G2, activations $ACT_F_NAME ($ACT_F), $ACT_G_NAME ($ACT_G)"

# a: a file written by "the VM", then the activation's dm device removed
mkdir -p "$S/vm"
mount "/dev/mapper/$ACT_F_NAME" "$S/vm"
echo "written by the VM" >"$S/vm/vm-marker"
umount "$S/vm"
dmsetup remove "$ACT_F_NAME"
# b: the shared base layer's thin id deleted
dmsetup message "$P" 0 "delete $BASE"
# c: a stray dm device named like the pool's activations
dmsetup create "$P-act-junk" --table "0 2048 error"
# Not the pool's: a device someone else made whose name merely starts with "$P-", and a second
# pool named "$P-b" with an idle activation (pool "$P-b"'s devices all start with "$P-").
dmsetup create "$P-junk" --table "0 2048 error"
S2=$(work_area behind-b)
P2=$P-b
cp "$CURSOR_DIR/kmsg.cursor" "$S2/kmsg.cursor"
ENVS+=("$S2:$P2")
T2="env THINIMG_STATE_DIR=$S2 THINIMG_POOL=$P2 $T"
run b0 $T2 setup-pool --data-size 128M
expect_rc 0 "setup-pool $P2"
run b1 $T2 process-image --device-size 64M --json "$IMG_SMALL"
expect_rc 0 "process-image small in pool $P2"
B_ACT=$(json "$S/b1.out" "json_extract(J, '\$.device_path')")
B_ACT=${B_ACT#/dev/mapper/}
case "$B_ACT" in "$P2-act-"*) ;; *) fail "pool $P2's activation device: '$B_ACT'" ;; esac
not_ours() { dmsetup ls | awk -v a="$P-junk" -v b="$P2" 'index($1, b) == 1 || $1 == a {print $1}' | sort | tr '\n' ' '; }
NOT_OURS=$(not_ours)
B_TABLE=$(dmsetup table "$B_ACT")
# d: a stray thin id
dmsetup message "$P" 0 "create_thin 999"
# e: g's top layer device activated and mounted under STATE/mnt
sectors=$(db "SELECT size_bytes / 512 FROM devices WHERE pool = '$P' AND dev_id = $G2")
dmsetup create "$G2_NAME" --table "0 $sectors thin /dev/mapper/$P $G2"
mount -o ro,noload "/dev/mapper/$G2_NAME" "$S/mnt"

DM_BEFORE=$(dm_names)
IDS_BEFORE=$(pool_ids)
run gc1 $T gc --dry-run --json
expect_rc 0 "gc --dry-run"
want=$(printf '%s\n' "dm-gone:$ACT_F" "missing:$BASE" unknown-dm "unknown-id:999" mount \
    "active-layer:$G2" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')
assert_eq "$(gc_orphans "$OUT")" "$want" "what gc --dry-run reports"
IFS='|' read -r junk mnt <<<"$(json "$OUT" \
    "(SELECT json_extract(value, '\$.what') FROM json_each(J, '\$.orphans') WHERE json_extract(value, '\$.kind') = 'unknown-dm')" \
    "(SELECT json_extract(value, '\$.what') FROM json_each(J, '\$.orphans') WHERE json_extract(value, '\$.kind') = 'mount')")"
assert_eq "$junk" "$P-act-junk" "the stray dm device gc names"
assert_eq "$mnt" "$S/mnt" "the stale mount gc names"
assert_eq "$(dm_names)" "$DM_BEFORE" "dm devices after the dry run"
assert_eq "$(pool_ids)" "$IDS_BEFORE" "pool ids after the dry run"
mountpoint -q "$S/mnt" || fail "the dry run unmounted $S/mnt"
pass "gc --dry-run reports each change behind thinimg's back: $want"
run b2 $T2 gc --dry-run --json
expect_rc 0 "gc --dry-run of pool $P2"
assert_eq "$(gc_orphans "$OUT")" "" "what gc --dry-run of pool $P2 reports (pool $P's devices are not its own)"
pass "gc of pool $P lists none of pool $P2's devices nor $P-junk; gc of pool $P2 lists none of pool $P's"

# the next run: f's activation reactivated (same device, the VM's file kept), the base
# layer recreated on a new id
run f2 $T process-image --device-size 64M --json "$IMG_F"
expect_rc 0 "process-image f after the changes"
assert_eq "$(json "$OUT" "json_extract(J, '\$.device_id')")" "$ACT_F" "f's activation device id"
check_content f "/dev/mapper/$ACT_F_NAME"
mount -o ro,noload "/dev/mapper/$ACT_F_NAME" "$S/vm"
marker=$(cat "$S/vm/vm-marker" 2>&1) || true
umount "$S/vm"
assert_eq "$marker" "written by the VM" "the VM's file in the reactivated activation"
NEWBASE=$(db "SELECT dev_id FROM layers WHERE depth = 1 AND state = 'ready'")
[ -n "$NEWBASE" ] && [ "$NEWBASE" != "$BASE" ] || fail "base layer not recreated: '$NEWBASE'"
assert_eq "$(db "SELECT state FROM devices WHERE pool = '$P' AND dev_id = $BASE")" deleted \
    "the lost base device's row"
run gc2 $T gc --dry-run --json
want=$(printf '%s\n' unknown-dm "unknown-id:999" mount "active-layer:$G2" | LC_ALL=C sort |
    tr '\n' ' ' | sed 's/ $//')
assert_eq "$(gc_orphans "$OUT")" "$want" "what gc --dry-run reports after the next run"
pass "the next process-image reactivated $ACT_F_NAME with its data and recreated the base layer ($BASE -> $NEWBASE)"

run gc3 $T gc --force --json
expect_rc 0 "gc --force"
assert_eq "$(json "$OUT" "(SELECT group_concat(json_extract(value, '\$.result'), ' ') FROM json_each(J, '\$.orphans') WHERE json_extract(value, '\$.removable'))")" \
    "done done done done" "gc --force results"
mountpoint -q "$S/mnt" && fail "the stale mount is still there"
dmsetup info "$G2_NAME" >/dev/null 2>&1 && fail "g's top layer device is still active"
dmsetup info "$P-act-junk" >/dev/null 2>&1 && fail "$P-act-junk is still there"
assert_eq "$(not_ours)" "$NOT_OURS" "pool $P2's devices and $P-junk after gc --force of pool $P"
assert_eq "$(dmsetup table "$B_ACT")" "$B_TABLE" "pool $P2's activation after gc --force of pool $P"
teardown_env "$S2" "$P2"
dmsetup remove "$P-junk"
run gc4 $T gc --dry-run --json
assert_eq "$(gc_orphans "$OUT")" "" "orphans after gc --force"
check_ids
check_agree
assert_eq "$(db "SELECT state FROM devices WHERE pool = '$P' AND dev_id = $G2")" ready \
    "g's top layer device (deactivated, kept)"
pass "gc --force unmounted the stale mount, deactivated g's layer device, removed $P-act-junk and thin id 999, left pool $P2's devices and $P-junk alone; pool and database agree"

# ---- reboot, with the data file's loop device detached while the pool is down ----------------
META_LOOP=$(losetup -j "$S/pool/$P-meta.img" -O NAME -n)
DATA_LOOP=$(losetup -j "$S/pool/$P-data.img" -O NAME -n)
[ -n "$META_LOOP" ] && [ -n "$DATA_LOOP" ] || fail "pool loop devices: meta '$META_LOOP' data '$DATA_LOOP'"
MAX_ID=$(db "SELECT max(dev_id) FROM devices WHERE pool = '$P'")
for d in $(dmsetup ls | awk -v p="$P-" 'index($1, p) == 1 {print $1}'); do dmsetup remove "$d"; done
dmsetup remove "$P"
losetup -d "$DATA_LOOP"
run gc5 $T gc --dry-run --json
expect_rc 0 "gc --dry-run with the pool down"
IFS='|' read -r examined note <<<"$(json "$OUT" "json_extract(J, '\$.pool_examined')" "json_extract(J, '\$.note')")"
assert_eq "$examined" 0 "pool examined while it is down"
expect_in "$note" "is not active" "gc's note on the pool"
expect_in "$note" "setup-pool" "gc's note says what to do"
assert_eq "$(gc_orphans "$OUT")" "" "orphans gc reports while the pool is down"
run f3 $T process-image --device-size 64M --json "$IMG_F"
expect_rc 0 "process-image f after the reboot"
run g3 $T process-image --device-size 64M --json "$IMG_G"
expect_rc 0 "process-image g after the reboot"
assert_eq "$(losetup -j "$S/pool/$P-meta.img" -O NAME -n)" "$META_LOOP" "the metadata file's loop device (reused)"
[ "$(losetup -j "$S/pool/$P-data.img" -O NAME -n | wc -l)" = 1 ] || fail "data file loops: $(losetup -j "$S/pool/$P-data.img")"
check_content f "/dev/mapper/$ACT_F_NAME"
mount -o ro,noload "/dev/mapper/$ACT_G_NAME" "$S/vm"
read -r gmotd <"$S/vm/etc/motd"
read -r gtxt <"$S/vm/data/g.txt"
umount "$S/vm"
assert_eq "$gmotd $gtxt" "g layer 2 g only" "g's activation after the reboot"
assert_eq "$(db "SELECT max(dev_id) FROM devices WHERE pool = '$P'")" "$MAX_ID" \
    "highest device id (nothing was created again after the reboot)"
run gc6 $T gc --dry-run --json
assert_eq "$(gc_orphans "$OUT")" "" "orphans after the reboot"
check_ids
check_agree
pass "after a reboot with a detached loop the pool is reassembled (metadata loop reused) and both activations are back"
echo "behind: all passed"
