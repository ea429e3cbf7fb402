#!/usr/bin/env bash
# locks.sh BUILD: two thinimg processes on one state directory. Issue 7, acceptance 4; issue 17:
# against either storage backend (THINIMG_BACKEND, tests/faults/lib.sh): dm-thin (the default,
# label dm: inside the VM) and overlay (natively: ctest faults_locks_overlay).
#
#   A  process-image of image f stops itself when its base layer's storage is created (dm-thin:
#      its thin device; overlay: its layer directory)
#      (THINIMG_FAULT=unpack.apply-layer.start:stop: SIGSTOP at a known point, holding the
#      process lock and the chain lock);
#   B  a second process-image refuses at once: exit 5, naming A's pid and command;
#   gc --force refuses too (exit 5, names A, mentions --ignore-lock);
#   C  process-image --wait-lock of image g waits;
#   gc --force --ignore-lock acts anyway and warns loudly, naming A; A's layer storage (recorded
#      by its layer) and A's live chain lock are not orphans and stay;
#   A continues (SIGCONT) and finishes with the right content while C still waits; then C takes
#      the lock and succeeds; nothing is left for gc.
source "$(dirname "$0")/../pipeline/lib.sh"
source "$(dirname "$0")/lib.sh"
cleanup() {
    if [ -n "${A_THINIMG:-}" ]; then kill -CONT "$A_THINIMG" 2>/dev/null || true; fi
    if [ -n "${APID:-}" ]; then kill "$APID" 2>/dev/null || true; fi
    if [ -n "${CPID:-}" ]; then kill "$CPID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    teardown_all
}
trap cleanup EXIT

fresh_env locks
storage_setup 256M

# A
# (not under timeout(1), which does not let its command stay stopped; the trap kills A, and
# the ctest timeout bounds the whole test)
THINIMG_FAULT=unpack.apply-layer.start:stop \
    $BIN --log-level warn process-image --device-size 64M --json "$IMG_F" >"$S/a.out" 2>"$S/a.err" &
APID=$!
# The holder writes its pid into the lock file right after taking the flock (the file is new:
# nobody held it before A). Not probed with flock(1): taking the lock for a moment makes A fail.
holder_is_a() {
    grep -q '"command": "process-image"' "$S/thinimg.lock" 2>/dev/null &&
        A_THINIMG=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' "$S/thinimg.lock") && [ -n "$A_THINIMG" ] &&
        kill -0 "$A_THINIMG" 2>/dev/null
}
wait_for 120 holder_is_a || fail "A does not hold the lock; A: $(tail -n 5 "$S/a.err"); lock file: $(cat "$S/thinimg.lock" 2>&1)"
pass "A (pid $A_THINIMG) holds the process lock"

# B: refused at once
t0=$(ms)
run b $T process-image --json "$IMG_G"
expect_rc 5 "a second process-image while A runs"
expect_in "$ERR" "locked by pid $A_THINIMG (process-image" "B's refusal names the holder"
pass "B refused in $(($(ms) - t0)) ms with exit 5: $(echo "$ERR" | head -n1)"

# gc --force: refused
run gc1 $T gc --force --json
expect_rc 5 "gc --force while A runs"
expect_in "$ERR" "pid $A_THINIMG (process-image" "gc's refusal names the holder"
expect_in "$ERR" "--ignore-lock" "gc's refusal names the override"
pass "gc --force refused with exit 5 while A holds the lock"

# C: waits for the lock
$T process-image --wait-lock --device-size 64M --json "$IMG_G" >"$S/c.out" 2>"$S/c.err" &
CPID=$!

# A stops itself at the start of apply-layer (its layer storage created and recorded).
a_stopped() { grep -q "fault point unpack.apply-layer.start: SIGSTOP" "$S/a.err" &&
              [ "$(awk '{print $3}' "/proc/$A_THINIMG/stat")" = T ]; }
wait_for 180 a_stopped || fail "A did not stop at unpack.apply-layer.start: $(tail -n 5 "$S/a.err")"
kill -0 "$CPID" 2>/dev/null || fail "C ended while A holds the lock: $(cat "$S/c.err")"
DEV1=$(unpacking_storage)
[ -n "$DEV1" ] || fail "A's layer has no storage yet"
storage_exists "$DEV1" || fail "A's layer storage $DEV1 is recorded but not there"
run gc2 $T gc --force --ignore-lock --json
expect_rc 0 "gc --force --ignore-lock"
expect_in "$ERR" "WARNING: --ignore-lock" "gc --ignore-lock warns"
expect_in "$ERR" "pid $A_THINIMG (process-image" "the warning names the holder"
expect_in "$ERR" "may be listed as orphans" "the warning says what is at stake"
assert_eq "$(gc_orphans "$OUT")" "" "orphans gc --ignore-lock found next to A's live run"
storage_exists "$DEV1" || fail "gc --ignore-lock removed A's layer storage $DEV1"
assert_eq "$(db "SELECT count(*) FROM resource_locks")" 1 "A's chain lock after gc --ignore-lock"
pass "gc --force --ignore-lock warns loudly, names A, and leaves A's layer storage $DEV1 and chain lock alone"

kill -CONT "$A_THINIMG"
rc=0
wait "$APID" || rc=$?
APID=""
[ "$rc" = 0 ] || fail "A failed (exit $rc): $(tail -n 5 "$S/a.err")"
kill -0 "$CPID" 2>/dev/null || fail "C did not wait for A: it ended before A"
check_content f "$(jget "$S/a.out" .device_path)"
pass "A finished with the right content; C was still waiting"
rc=0
wait "$CPID" || rc=$?
CPID=""
[ "$rc" = 0 ] || fail "C (--wait-lock) failed (exit $rc): $(tail -n 5 "$S/c.err")"
assert_eq "$(jget "$S/c.out" .state)" ready "C's image"
pass "C (--wait-lock) took the lock after A and processed its image"

$T gc --dry-run --json >"$S/gc3.json" || fail "gc --dry-run"
assert_eq "$(gc_orphans "$S/gc3.json")" "" "orphans after both runs"
check_ids
check_agree
echo "locks ($BACKEND): all passed"
