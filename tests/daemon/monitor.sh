#!/usr/bin/env bash
# monitor.sh BUILD_DIR: `thinimg monitor` driven in tmux (label daemon, host): keys sent with
# send-keys, the screen read with capture-pane and checked. The captures are kept as
# artifacts in BUILD_DIR/tests/daemon/monitor-*.txt (docs/daemon.md shows one).
#
#  1. live dashboard: the daemon's pid, an active download with its progress, recent runs with
#     outcomes, the pool line, the daemon's log lines, the keys
#  2. source view: the example's images; Enter starts process-image (a new run in the daemon)
#  3. resize: narrower and shorter redraws to fit; too small says so; back again
#  4. --inline: after q the last frame stays on the normal screen (the default mode leaves
#     the alternate screen and the pane is clean again)
#  5. read-only without a daemon: says so, shows runs from the database, cannot start work
#  6. a registry's source view (tests/hostile/server.py): its tags by name, as `thinimg ls`
#     shows them, not by their manifests/TAG keys
source "$(dirname "$0")/lib.sh"
need tmux
need python3
export THINIMG_POOL=montest$$
TM="tmux -L thinimg-mon-$$"
ART=$BUILD/tests/daemon
mkdir -p "$ART"
SLOW_PID=
REG_PID=
cleanup() {
    set +e
    $TM kill-server 2>/dev/null || true
    [ -n "$SLOW_PID" ] && kill "$SLOW_PID" 2>/dev/null
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
    cleanup_daemon
    rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$W/slow"
cp "$EX/images/busybox/1.tar" "$W/slow/big-layer.tar"
python3 "$HERE/clients.py" slowserve "$W/slow" "$W/port" 200000 &
SLOW_PID=$!
wait_for test -s "$W/port" || fail "slow server did not start"
SLOW="http://127.0.0.1:$(cat "$W/port")"

start_daemon --no-pool-setup
api POST '/v1/process-image?wait=60' "{\"ref\": \"dir:$EX/images/busybox/\"}" >/dev/null
assert_eq "$(j .finished)" true "first image processed (abort without a pool)"

# monitor CMD...: a fresh tmux session running the monitor (120x40). Each on a server of its
# own: kill-server returns before the old server has gone, and a client that reaches the dying
# server fails with "server exited unexpectedly" (seen on a loaded machine).
TM_N=0
monitor() {
    $TM kill-server 2>/dev/null || true
    TM_N=$((TM_N + 1))
    TM="tmux -L thinimg-mon-$$-$TM_N"
    $TM -f /dev/null new-session -d -s mon -x 120 -y 40 \
        "env THINIMG_STATE_DIR=$THINIMG_STATE_DIR THINIMG_POOL=$THINIMG_POOL TERM=screen $*"
    $TM set-option -t mon remain-on-exit on >/dev/null
}
cap() { $TM capture-pane -p -t mon; }
# until the screen contains TEXT (10 s)
screen_has() {
    for _ in $(seq 1 100); do
        if cap | grep -qF -- "$1"; then return 0; fi
        sleep 0.1
    done
    cap >&2
    fail "the screen never showed: $1"
}
# until the screen has a line matching the extended regex RE (10 s)
screen_matches() {
    for _ in $(seq 1 100); do
        if cap | grep -qE -- "$1"; then return 0; fi
        sleep 0.1
    done
    cap >&2
    fail "the screen never matched: $1"
}
keys() { $TM send-keys -t mon "$@"; }

# ---- 1. dashboard ------------------------------------------------------------------------------
assert_eq "$(api POST /v1/process-image "{\"ref\": \"$SLOW/big-layer.tar\"}")" 202 "slow run"
monitor "$BIN" monitor --inline --refresh 300 "dir:$EX/images/"
screen_has "daemon pid $DPID"
# The row shows its phase before the first progress report: wait for the bytes, then capture.
DL_ROW='^  fetch +[^ ]*big-layer\.tar +download +download [0-9.]+ [KMG]?i?B/1\.9 MiB \([0-9]+%\)'
screen_matches "$DL_ROW"
cap >"$ART/monitor-dashboard.txt"
S=$(cat "$ART/monitor-dashboard.txt")
assert_contains "$S" "thinimg monitor | dashboard | state $THINIMG_STATE_DIR" "title"
assert_contains "$S" "ACTIVE RUNS (" "active runs section"
grep -qE "$DL_ROW" "$ART/monitor-dashboard.txt" || fail "no active download row with its progress"
grep -qE '^  process +[^ ]*big-layer\.tar +fetch( |$)' "$ART/monitor-dashboard.txt" ||
    fail "no process run waiting for its fetch"
assert_contains "$S" "RECENT RUNS" "recent runs"
assert_contains "$S" "abort         process  busybox/" "a finished process run with its outcome"
assert_contains "$S" "POOL $THINIMG_POOL" "pool line"
assert_contains "$S" "QUEUES fetch " "queue sizing line"
grep -qE '^QUEUES fetch [0-9]+ \((sized to the load|pinned), max [0-9]+.*; [0-9]+ running, [0-9]+ waiting; ' \
    "$ART/monitor-dashboard.txt" || fail "the queue line lacks its sizing or signals"
grep -qE '^ORPHANS ' "$ART/monitor-dashboard.txt" || fail "no line for the idle orphan collection"
assert_contains "$S" "ACTIVATIONS (0)" "activations"
assert_contains "$S" "LOG" "log section"
assert_contains "$S" "msg=\"process-image requested\"" "a daemon log line"
assert_contains "$S" "q quit | 1 dashboard | 2/Tab source | r refresh" "keys"
pass "dashboard: daemon, active download, recent outcomes, pool, log, keys"

# ---- 2. source view ---------------------------------------------------------------------------
keys 2
screen_has "SOURCE dir:$EX/images/"
screen_has "busybox-extra:3"
cap >"$ART/monitor-source.txt"
S=$(cat "$ART/monitor-source.txt")
assert_contains "$S" "> busybox-extra:3              3 layers" "first entry selected"
assert_contains "$S" "  busybox:3                    3 layers" "second entry"
assert_contains "$S" "Enter process-image" "keys of the source view"
keys Down Enter
screen_has "process-image busybox:3 started: run "
RUNV=$(cap | sed -n 's/.*process-image busybox:3 started: run \([0-9A-Z]*\).*/\1/p' | head -1)
assert_eq "$(api GET "/v1/runs/$RUNV")" 200 "the run the monitor started"
assert_eq "$(j .run.resource_id)" "dir:$EX/images/busybox/" "the run's ref"
pass "source view lists the example's images; Enter started run $RUNV in the daemon"

# ---- 3. resize ----------------------------------------------------------------------------------
keys 1
screen_has "ACTIVE RUNS"
$TM resize-window -t mon -x 72 -y 18
screen_has "q quit | 1 dashboard"
cap >"$ART/monitor-small.txt"
[ "$(awk '{ if (length($0) > m) m = length($0) } END { print m }' "$ART/monitor-small.txt")" -le 72 ] ||
    fail "lines wider than the resized window"
assert_eq "$(wc -l <"$ART/monitor-small.txt")" 18 "rows after the resize"
assert_contains "$(cat "$ART/monitor-small.txt")" "ACTIVE RUNS" "sections after the resize"
$TM resize-window -t mon -x 30 -y 8
screen_has "terminal too small (30x8)"
$TM resize-window -t mon -x 120 -y 40
screen_has "RECENT RUNS"
pass "resizes redraw to fit (72x18), say when too small (30x8), and come back"

# ---- 4. --inline keeps the last frame; the default mode does not --------------------------------
keys q
sleep 0.5
S=$(cap)
assert_contains "$S" "ACTIVE RUNS" "--inline: the last frame stays after q"
monitor "$BIN" monitor --refresh 300
screen_has "ACTIVE RUNS"
keys q
sleep 0.5
cap | grep -qF "ACTIVE RUNS" && fail "the default mode left its frame on the normal screen"
pass "--inline leaves the last frame on the normal screen; the default mode uses the alternate one"

# ---- 5. read-only ------------------------------------------------------------------------------
stop_daemon
monitor "$BIN" monitor --inline --refresh 300 "dir:$EX/images/"
screen_has "READ-ONLY"
screen_has "RECENT RUNS"
cap >"$ART/monitor-readonly.txt"
S=$(cat "$ART/monitor-readonly.txt")
assert_contains "$S" "READ-ONLY: no daemon runs; showing $THINIMG_STATE_DIR/thinimg.db" "banner"
assert_contains "$S" "abort         process  busybox/" "runs from the database"
assert_contains "$S" "(log lines come from a running daemon)" "no log without a daemon"
keys 2
screen_has "busybox:3"
keys Enter
screen_has "read-only: no daemon runs, so nothing can be started"
assert_contains "$(cap)" "read-only: cannot start work" "keys say read-only"
keys q
pass "read-only: banner, runs from the database, no log, cannot start work"

# ---- 6. a registry's tags ----------------------------------------------------------------------
python3 - "$HERE/../hostile" "$W/regport" <<'PY' &
import os, sys
sys.path.insert(0, sys.argv[1])
import server
s = server.Server(lifetime=120).start()
manifest, blobs = server.image([b'layer'])
s.put_image('img', {'v1': manifest, 'latest': manifest}, blobs)
with open(sys.argv[2] + '.tmp', 'w') as f:
    f.write(str(s.port))
os.rename(sys.argv[2] + '.tmp', sys.argv[2])
s.thread.join()
PY
REG_PID=$!
wait_for test -s "$W/regport" || fail "the registry did not start"
REG=127.0.0.1:$(cat "$W/regport")
monitor THINIMG_INSECURE_REGISTRY=$REG DOCKER_CONFIG=$W/no-docker-config "$BIN" monitor \
    --inline --refresh 300 "docker://$REG/reg-plain/img"
keys 2
screen_has "SOURCE docker://$REG/reg-plain/img"
screen_has "latest"
cap >"$ART/monitor-registry.txt"
grep -qE '^[> ] v1 +object' "$ART/monitor-registry.txt" || fail "no entry for the tag v1"
grep -qE '^[> ] latest +object' "$ART/monitor-registry.txt" || fail "no entry for the tag latest"
grep -qF "manifests/" "$ART/monitor-registry.txt" && fail "a tag is shown by its key"
keys q
pass "a registry's source view lists its tags by name"
echo "monitor: all passed (screens in $ART/monitor-*.txt)"
