#!/usr/bin/env bash
# pool_faults.sh BUILD: a pool that fills in the middle of a layer, and pools that go
# read-only or need a check (labels dm, dm-faults; runs inside the VM). Issue 7, acceptance 2
# and 3. Every thinimg command is bounded with timeout: a hang fails the test (exit 124).
#
#  full      a 32 MiB pool and a layer with a 48 MiB file of random bytes: the run aborts within
#            seconds (error_if_no_space: no 60 s queueing), with an error that says the pool is
#            out of data space (exit 3); the layer, its device and the image are recorded
#            failed; gc reclaims the device and the pool is writable again; the kernel log lines
#            of the full pool keep refusing devicemapper work until `thinimg health`
#            acknowledges them; then the next image processes fine.
#  ro        the pool reloaded read_only under an active image: process-image of a new image,
#            activate and setup-pool are refused with the reason and exit 3; a rerun of the
#            active image is too (the pool is checked at start); reloaded writable, work
#            proceeds.
#  needs_check  the metadata flagged needs_check (thin_dump, flags="1", thin_restore) while the
#            pool is down: process-image reassembles the pool and refuses with the reason, what
#            to run (thin_check) and exit 3; status says needs_check; nothing was repaired.
source "$(dirname "$0")/../pipeline/lib.sh"
source "$(dirname "$0")/lib.sh"
trap teardown_all EXIT

# ---- full --------------------------------------------------------------------------------------
fresh_env full
$T setup-pool --data-size 32M >/dev/null || fail "setup-pool"
t0=$(ms)
run fill $T process-image --device-size 256M --json "$IMG_FILL"
took=$(($(ms) - t0))
expect_rc 3 "exit status of process-image on a full pool (unhealthy)"
expect_in "$ERR" "out of data space" "the error says the pool is full"
expect_in "$ERR" "gc --force" "the error says what to do"
# how long the layer took to fail once writing began: apply-layer's start to the run's halt
apply_ms=$(db "SELECT max(e.ts_ms) - (SELECT max(c.ts_ms) FROM fsm_events c WHERE
                  c.version = e.version AND c.type = 3 AND c.state = 'create-device')
               FROM fsm_events e JOIN fsm_runs r ON r.version = e.version
               WHERE r.type = 'unpack' AND e.type = 4")
echo "pool full: process-image failed after ${took} ms; apply-layer ran ${apply_ms} ms until the abort"
[ "$apply_ms" -lt 30000 ] || fail "a full pool took ${apply_ms} ms to fail the layer (queued I/O?)"
IFS='|' read -r lstate dstate istate <<<"$(db "SELECT (SELECT state FROM layers),
    (SELECT group_concat(state) FROM devices), (SELECT state FROM images)")"
assert_eq "$lstate" failed "layer state"
assert_eq "$dstate" failed "device state"
assert_eq "$istate" failed "image state"
assert_eq "$(dmsetup status "$P" | awk '{print $8}')" out_of_data_space "pool mode"
pass "a full pool fails the layer in ${apply_ms} ms (exit 3, out of data space); layer, device and image recorded failed"

run gc1 $T gc --dry-run --json
assert_eq "$(gc_orphans "$OUT")" "failed:1" "gc --dry-run orphans of the failed layer"
run gc2 $T gc --force --json
expect_rc 0 "gc --force on the full pool"
run gc3 $T gc --dry-run --json
assert_eq "$(gc_orphans "$OUT")" "" "orphans after gc --force"
assert_eq "$(dmsetup status "$P" | awk '{print $8}')" rw "pool mode after gc"
check_agree
pass "gc reclaims the failed device; the pool is rw again"

# The kernel said the pool ran out of space: the guard refuses until an operator has looked.
for attempt in 1 2; do
    run small1 $T process-image --device-size 64M --json "$IMG_SMALL"
    expect_rc 3 "process-image (attempt $attempt) while the full pool's kernel log lines are unacknowledged"
    expect_in "$ERR" "kmsg" "the refusal names the kernel log check"
    expect_in "$ERR" "thinimg health" "the refusal says what to do"
done
run health $T health
expect_rc 3 "thinimg health reports the lines (once)"
run small2 $T process-image --device-size 64M --json "$IMG_SMALL"
expect_rc 0 "process-image after the lines were acknowledged"
assert_eq "$(jget "$OUT" .state)" ready "the next image"
check_ids
pass "after gc and an acknowledged kernel log the next image processes fine"
refresh_cursor
teardown_env

# ---- ro ----------------------------------------------------------------------------------------
fresh_env ro
$T setup-pool --data-size 64M >/dev/null || fail "setup-pool"
run small $T process-image --device-size 64M --json "$IMG_SMALL"
expect_rc 0 "process-image before the pool goes read-only"
TBL=$(dmsetup table "$P")
dmsetup reload "$P" --table "$(echo "$TBL" | sed 's/ 1 error_if_no_space *$/ 2 error_if_no_space read_only/')"
dmsetup suspend "$P"
dmsetup resume "$P"
assert_eq "$(dmsetup status "$P" | awk '{print $8}')" ro "pool mode after the read_only reload"
DEVS_BEFORE=$(dm_names)
for c in "process-image --json $IMG_F" "activate --name other small:1" "setup-pool" "process-image --json $IMG_SMALL"; do
    # shellcheck disable=SC2086
    run ro-cmd $T $c
    expect_rc 3 "thinimg $c on a read-only pool"
    expect_in "$ERR" "read-only (ro)" "thinimg $c: the refusal names the mode"
    expect_in "$ERR" "docs/dm.md" "thinimg $c: the refusal points to what to do"
done
assert_eq "$(dm_names)" "$DEVS_BEFORE" "dm devices after the refusals"
run health $T health --json
expect_rc 3 "thinimg health on a read-only pool"
assert_eq "$(json "$OUT" "(SELECT json_extract(value, '$.level') FROM json_each(J, '$.checks')
                            WHERE json_extract(value, '$.name') = 'pool')")" fail "health: pool check"
pass "a read-only pool: new work, activate, setup-pool and health refuse with exit 3 and the reason"
dmsetup reload "$P" --table "$TBL"
dmsetup suspend "$P"
dmsetup resume "$P"
refresh_cursor
cp "$CURSOR_DIR/kmsg.cursor" "$S/kmsg.cursor"
run f $T process-image --device-size 64M --json "$IMG_F"
expect_rc 0 "process-image after the pool was reloaded writable"
check_content f "$(jget "$OUT" .device_path)"
pass "reloaded writable, work proceeds"

# ---- needs_check ----------------------------------------------------------------------------------
# The pool goes down (as after a crash), its metadata is flagged, then thinimg starts again.
META_FILE=$S/pool/$P-meta.img
teardown_pool "$P" --keep-loops
META=$(losetup -j "$META_FILE" -O NAME -n | head -n1)
[ -n "$META" ] || fail "no loop device on the metadata file"
thin_dump "$META" >"$S/meta.xml"
sed -i 's/flags="0"/flags="1"/' "$S/meta.xml"
thin_restore -q -i "$S/meta.xml" -o "$META" || fail "thin_restore"
run nc $T process-image --json "$IMG_F"
expect_rc 3 "process-image on a needs_check pool"
expect_in "$ERR" "needs_check" "the refusal names needs_check"
expect_in "$ERR" "thin_check" "the refusal says what to run"
run status $T status --json
expect_rc 3 "status of a needs_check pool"
assert_eq "$(jget "$OUT" .pool.needs_check)" true "status: needs_check"
dmsetup status "$P" | grep -q needs_check || fail "the needs_check flag is gone (thinimg repaired something?)"
assert_eq "$(dm_names)" "$P" "dm devices: the reassembled pool only (nothing activated)"
pass "a needs_check pool is reassembled and refused (exit 3, thin_check); nothing repaired"
echo "pool faults: all passed"
