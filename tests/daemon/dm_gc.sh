#!/usr/bin/env bash
# dm_gc.sh BUILD_DIR: gc through the daemon and its idle collection of orphans with real
# device-mapper (labels dm, dm-faults: it writes a thin-pool line into the kernel log; runs inside
# the VM, last in the suite). Issue 22's acceptance, one scenario on one pool:
#
#  1. gc while the daemon works: process-image of f killed -9 at unpack.create-device.end (an
#     unreferenced device); a daemon (--no-auto-gc-orphans) resumes f, then h, small and fill are
#     submitted; during those runs `thinimg gc --dry-run` and `thinimg gc --force` (no
#     --ignore-lock) go through the daemon: --force removes exactly what the dry run listed (kind
#     and name), exits 0, and the runs complete byte-exact (f and h checked file by file); the
#     pool's ids and the database rows agree.
#  2. orphans collected with no command: with the daemon stopped, g (a top layer on f's base) is
#     killed at unpack.create-device.end and, resumed by a new process, at
#     activate.create-snapshot.end (the fault matrix's points); the daemon started with a 10 s
#     grace resumes g's run inside the grace (it completes: image ready, activation fsck-clean)
#     and removes the orphan device within the grace + one period after the runs ended, logged
#     and counted in /metrics; pool ids and rows agree.
#  3. an unhealthy host: a temp file left an hour ago is not collected while storage tasks are
#     in D state (a suspended dm device under a mounted ext4 with dirty data and a sync), nor
#     after a thin-pool line in the kernel log; the daemon says why (log, GET /v1/gc, status);
#     once the device is resumed it is collected.
# Pool ids and rows are compared with the daemon stopped (check_pool; phase 3 starts it again).
# Methods: tests/faults (lib.sh's dstate_begin for D state, guard.sh for /dev/kmsg, kill_matrix.sh
# for the kills).
# DMGC_KEEP=DIR keeps the daemon's log and the JSON reports of each run in DIR/<time>-<pid>.
[ -n "${THINIMG_VM:-}" ] || [ -e /dev/mapper/control ] || { echo "no device-mapper here"; exit 77; }
source "$(dirname "$0")/../pipeline/lib.sh"
source "$(dirname "$0")/../faults/lib.sh"
need mkfs.ext4
need ps
need curl

GRACE_S=10
PERIOD_S=3   # the daemon looks every quarter of the grace (2.5 s), at least every second
SLACK_S=20   # one scan and removal under emulation (thin_ls, the guard's health checks)
DEVSIZE=64M
DPID=""
cleanup() {
    set +e
    if [ -n "${DMGC_KEEP:-}" ]; then # keep the daemon's log and the reports of this run
        local k="$DMGC_KEEP/$(date +%H%M%S)-$$"
        mkdir -p "$k"
        cp "$S"/*.json "$S"/*.err "$DLOG" "$k/" 2>/dev/null
    fi
    dstate_end 2>/dev/null
    if [ -n "$DPID" ]; then
        kill -KILL "$DPID" 2>/dev/null
        wait "$DPID" 2>/dev/null
    fi
    teardown_all
}
trap cleanup EXIT

fresh_env dmgc
DLOG=$S/daemon.log
SOCK=$S/thinimg.sock
$T setup-pool --data-size 384M >/dev/null || fail "setup-pool"

# start_daemon ARGS...: until it is ready (its unfinished runs resumed, the socket answering).
start_daemon() {
    local before
    before=$(grep -c 'msg="daemon ready"' "$DLOG" 2>/dev/null || true)
    $BIN --log-level info daemon "$@" >>"$DLOG" 2>&1 &
    DPID=$!
    ready() {
        [ "$(grep -c 'msg="daemon ready"' "$DLOG")" -gt "${before:-0}" ] &&
            curl -sf --unix-socket "$SOCK" http://x/v1/version >/dev/null 2>&1
    }
    wait_for 120 ready || { tail -n 20 "$DLOG" >&2; fail "the daemon did not answer"; }
}
stop_daemon() {
    kill -TERM "$DPID"
    wait "$DPID" || fail "the daemon exited with status $? after SIGTERM"
    DPID=""
}
get() { curl -sf --unix-socket "$SOCK" "http://x$1"; }
# check_pool: pool ids and database rows agree (check_ids, check_agree), read with the daemon
# stopped. The pool has one metadata snapshot: the test's reserve_metadata_snap fails (EBUSY)
# while the daemon holds it for a scan (its idle collection looks every PERIOD_S, thin_ls under
# emulation takes about a second), and a release by either side pulls it from under the other.
check_pool() {
    [ -z "$DPID" ] || fail "check_pool with the daemon running"
    check_ids
    check_agree
}
# kill_at POINT IMAGE: one process-image killed -9 at the fault point POINT.
kill_at() {
    local rc=0
    (THINIMG_FAULT=$1 $T process-image --device-size $DEVSIZE --json "$2" >"$S/kill.json" \
        2>"$S/kill.err"
     exit $?) 2>/dev/null || rc=$?
    grep -q "fault point $1: SIGKILL" "$S/kill.err" ||
        fail "fault point $1 never fired (exit $rc): $(tail -n 3 "$S/kill.err")"
    assert_eq "$rc" 137 "process-image killed at $1"
}
# gc_set FILE FILTER: "kind what" of the report's orphans that pass the jq FILTER, sorted.
gc_set() { jq -r ".orphans[] | select($2) | \"\(.kind) \(.what)\"" "$1" | sort; }
no_active_runs() { [ "$(get /v1/runs | jq '.runs | length')" = 0 ]; }
# The image of fault-matrix source NAME (its ref ends in images/NAME/; its name is NAME[:tag]).
is_image() { echo "(i.ref LIKE '%/images/$1/%' OR i.name = '$1' OR i.name LIKE '$1:%')"; }
device_of() { db "SELECT a.device_path FROM activations a JOIN images i ON i.id = a.image_id
                  WHERE $(is_image "$1") AND a.state = 'active'"; }
image_state() { db "SELECT i.state FROM images i WHERE $(is_image "$1")"; }

# ---- 1. gc --force through a working daemon ----------------------------------------------------
# The orphan device of f's killed attempt is spared while f's run is unfinished (made since it
# started): the daemon resumes and finishes that run first; gc then runs during h's, small's and
# fill's (48 MiB: its runs outlast the two gc commands on most boots; the pass line says how many
# runs still worked when gc --force returned).
FILLSIZE=128M # fill's 48 MiB file and ext4's own blocks
kill_at unpack.create-device.end "$IMG_F"
$T gc --dry-run --json >"$S/before.json" || fail "gc --dry-run before the daemon"
[ -n "$(gc_set "$S/before.json" '.device_id != null')" ] ||
    fail "the kill left no orphan device: $(cat "$S/before.json")"
start_daemon --no-auto-gc-orphans
wait_for 120 no_active_runs || fail "the resumed run of f did not finish"
PIDS=()
for img in "$IMG_FILL" "$IMG_H" "$IMG_SMALL"; do
    size=$DEVSIZE
    [ "$img" != "$IMG_FILL" ] || size=$FILLSIZE
    $T process-image --device-size $size --json "$img" >"$S/p-${#PIDS[@]}.json" 2>&1 &
    PIDS+=($!)
done
some_runs() { [ "$(get /v1/runs | jq '.runs | length')" -ge 1 ]; }
wait_for 60 some_runs || fail "no run in the daemon"
run dry $T gc --dry-run --json
expect_rc 0 "gc --dry-run through the daemon while it works"
cp "$OUT" "$S/dry.json"
grep -q '"gc requested" force=0' "$DLOG" || fail "the dry run did not go to the daemon"
run force $T gc --force --json
expect_rc 0 "gc --force through the daemon while it works (no --ignore-lock)"
cp "$OUT" "$S/force.json"
BUSY=$(get /v1/runs | jq '.runs | length')
grep -q '"gc requested" force=1' "$DLOG" || fail "gc --force did not go to the daemon"
LISTED=$(gc_set "$S/dry.json" '.removable')
[ -n "$LISTED" ] || fail "the dry run through the daemon listed nothing: $(cat "$S/dry.json")"
assert_eq "$(gc_set "$S/force.json" '.result == "done"')" "$LISTED" \
    "what gc --force removed vs what the dry run listed"
for i in "${!PIDS[@]}"; do
    wait "${PIDS[$i]}" || {
        grep -v '^time=' "$S/p-$i.json" | tail -n 20 >&2
        grep -E 'level=(warn|error)|gc requested|orphan' "$DLOG" | tail -n 30 >&2
        fail "process-image $i, submitted during gc, failed"
    }
done
check_content f "$(device_of f)"
check_content h "$(device_of h)"
assert_eq "$(image_state small)" ready "image small"
assert_eq "$(image_state fill)" ready "image fill"
stop_daemon # before reading the pool's metadata (check_pool)
check_pool
pass "gc --force through a working daemon removed what the dry run listed ($(echo $LISTED)); $BUSY runs still worked when it returned; f, h byte-exact"

# ---- 2. orphans collected when idle, after kills ------------------------------------------------
kill_at unpack.create-device.end "$IMG_G"
kill_at activate.create-snapshot.end "$IMG_G"
$T gc --dry-run --json >"$S/kills.json" || fail "gc --dry-run after the kills"
ORPHANS=$(gc_set "$S/kills.json" true) # spared while g's run is unfinished, removable after
[ -n "$ORPHANS" ] || fail "the kills of g left no orphan: $(cat "$S/kills.json")"
T0=$(ms)
start_daemon --auto-gc-orphans-grace ${GRACE_S}s
wait_for 120 no_active_runs || fail "the resumed run of g did not finish"
T_IDLE=$(ms)
none_left() {
    $T gc --dry-run --json >"$S/left.json" 2>/dev/null && [ -z "$(gc_set "$S/left.json" true)" ]
}
wait_for $((GRACE_S + PERIOD_S + SLACK_S + (T_IDLE - T0) / 1000)) none_left ||
    fail "orphans left after the grace and a period: $(gc_set "$S/left.json" true)"
T_GONE=$(ms)
BOUND=$(((T_IDLE > T0 + GRACE_S * 1000 ? T_IDLE : T0 + GRACE_S * 1000) + (PERIOD_S + SLACK_S) * 1000))
[ "$T_GONE" -le "$BOUND" ] || fail "collected $((T_GONE - T0)) ms after the start: later than the bound"
assert_eq "$(image_state g)" ready "image g after the resumed run"
assert_eq "$(db "SELECT count(*) FROM fsm_runs WHERE status < 3")" 0 "unfinished runs"
GDEV=$(device_of g)
[ -b "$GDEV" ] || fail "no activation device for g"
fsck_dev "$GDEV"
removed=$(grep -c 'auto-gc: orphan removed' "$DLOG" || true)
[ "$removed" -ge 1 ] || fail "no removal logged"
get /metrics | grep -Eq '^thinimg_gc_orphans_removed_total\{kind="[a-z_-]+"\} [1-9]' ||
    fail "the removal is not counted in /metrics"
stop_daemon
check_pool
pass "orphans of the kills ($(echo $ORPHANS)) gone $((T_GONE - T0)) ms after the start (runs ended at $((T_IDLE - T0)) ms, grace ${GRACE_S} s) with no command; g's resumed run undisturbed"

# ---- 3. an unhealthy host: no collection, and the daemon says why -----------------------------
start_daemon --auto-gc-orphans-grace ${GRACE_S}s
# old_tmp NAME: a temp file no download owns, written an hour ago (past any grace). Planted once
# the refusal is seen: a healthy daemon would collect it at its next look.
old_tmp() {
    mkdir -p "$S/tmp"
    echo "left behind" >"$S/tmp/$1"
    touch -d '1 hour ago' "$S/tmp/$1"
}
dstate_begin
refused() { get /v1/gc | jq -e '.auto_gc_orphans.refused // "" | contains("dstate")' >/dev/null; }
wait_for 60 refused || fail "GET /v1/gc does not say the collection is refused: $(get /v1/gc)"
grep 'orphans are not collected while the host is not healthy' "$DLOG" | grep -q dstate ||
    fail "the daemon's log does not say why"
old_tmp old.part
run st $T status
expect_in "$(cat "$OUT")" "not collected while the host is not healthy: " "status says why"
sleep $((PERIOD_S * 2))
[ -f "$S/tmp/old.part" ] || fail "an orphan was collected with storage tasks in D state"
dstate_end || fail "resuming and removing the suspended device"
gone() { [ ! -e "$S/tmp/old.part" ]; }
wait_for $((PERIOD_S + SLACK_S)) gone || fail "the temp file was not collected once healthy"
pass "D state: no collection, the daemon said why; collected once the device was resumed"

echo "device-mapper: thin: 254:0: switching pool to read-only mode" >/dev/kmsg
kmsg_refused() {
    get /v1/gc | jq -e '.auto_gc_orphans.refused // "" | contains("switching pool to read-only mode")' >/dev/null
}
wait_for 60 kmsg_refused || fail "GET /v1/gc does not quote the kernel log line: $(get /v1/gc)"
old_tmp old2.part
sleep $((PERIOD_S * 2))
[ -f "$S/tmp/old2.part" ] || fail "an orphan was collected after a thin-pool kernel log line"
stop_daemon
refresh_cursor
pass "a thin-pool kernel log line: no collection, the daemon quoted it"
