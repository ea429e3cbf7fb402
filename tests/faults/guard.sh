#!/usr/bin/env bash
# guard.sh BUILD: an unhealthy host makes the operation guard refuse devicemapper work, with the
# reason; once it clears, work proceeds (labels dm, dm-faults: it writes thin-pool trouble into
# the kernel log; runs inside the VM). Issue 7, acceptance 5. Every command is bounded.
#
#  dstate  a dm device (outside the pool) with a mounted ext4 and dirty data is suspended and
#          `sync` runs in the background: sync and jbd2 block in D state. process-image of a new
#          image is refused (exit 3) naming the D-state tasks; thinimg itself does not hang.
#          After `dmsetup resume` (sync finishes) the same command succeeds.
#  kmsg    "device-mapper: thin: 254:0: switching pool to read-only mode" written to /dev/kmsg:
#          new work is refused (exit 3) quoting the line, again on a retry (a refusal does not
#          acknowledge it); `thinimg health` reports it once (exit 3) and acknowledges it (the
#          next `thinimg health` exits 0); then the work proceeds.
source "$(dirname "$0")/../pipeline/lib.sh"
source "$(dirname "$0")/lib.sh"
need mkfs.ext4
need ps

cleanup() {
    dstate_end 2>/dev/null || true
    teardown_all
}
trap cleanup EXIT

fresh_env guard
$T setup-pool --data-size 128M >/dev/null || fail "setup-pool"
run small $T process-image --device-size 64M --json "$IMG_SMALL"
expect_rc 0 "process-image on a healthy host"

# ---- dstate -------------------------------------------------------------------------------------
dstate_begin
# One ps, not a process per task: every process start counts under emulation.
d_tasks() { ps -eo stat=,comm= | awk '$1 ~ /^D/ {print $2}' | sort -u | tr '\n' ' '; }
some_d_task() { [ -n "$(d_tasks)" ]; }
wait_for 30 some_d_task || fail "no task in D state behind the suspended device"
D_TASKS=$(d_tasks)
echo "tasks in D state: $D_TASKS"
t0=$(ms)
run f1 $T process-image --device-size 64M --json "$IMG_F"
echo "refused in $(($(ms) - t0)) ms"
expect_rc 3 "process-image with storage tasks in D state"
expect_in "$ERR" "dstate" "the refusal names the check"
expect_in "$ERR" "D state" "the refusal says what it saw"
run h1 $T health --peek
expect_rc 3 "thinimg health with storage tasks in D state"
pass "tasks in D state ($D_TASKS) make the guard refuse: $(grep -o 'dstate: [^;]*' "$S/f1.err" | head -n1 | cut -c1-160)"
dstate_end || fail "resuming and removing the suspended device"
run f2 $T process-image --device-size 64M --json "$IMG_F"
expect_rc 0 "process-image after the device was resumed"
check_content f "$(jget "$OUT" .device_path)"
pass "after the device is resumed the work proceeds"

# ---- kmsg ---------------------------------------------------------------------------------------
LINE="device-mapper: thin: 254:0: switching pool to read-only mode"
echo "$LINE" >/dev/kmsg
for attempt in 1 2; do
    run g$attempt $T process-image --device-size 64M --json "$IMG_G"
    expect_rc 3 "process-image (attempt $attempt) after a thin-pool error in the kernel log"
    expect_in "$ERR" "kmsg" "the refusal names the check"
    expect_in "$ERR" "switching pool to read-only mode" "the refusal quotes the line"
    expect_in "$ERR" "thinimg health" "the refusal says what to do"
done
run h2 $T health
expect_rc 3 "thinimg health reports the line"
expect_in "$(cat "$OUT")" "switching pool to read-only mode" "thinimg health shows the line"
run h3 $T health
expect_rc 0 "thinimg health after acknowledging"
run g3 $T process-image --device-size 64M --json "$IMG_G"
expect_rc 0 "process-image after the line was acknowledged"
assert_eq "$(jget "$OUT" .state)" ready "image g"
pass "a thin-pool kernel log line refuses work until thinimg health acknowledges it"

$T gc --dry-run --json >"$S/gc.json" || fail "gc --dry-run"
assert_eq "$(gc_orphans "$S/gc.json")" "" "orphans after the refusals (nothing was created)"
refresh_cursor
echo "guard: all passed"
