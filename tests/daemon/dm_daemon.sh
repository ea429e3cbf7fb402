#!/usr/bin/env bash
# dm_daemon.sh BUILD_DIR: the daemon with real device-mapper (label dm; runs inside the VM).
#
#  1. process-image through the CLI, forwarded to the daemon: the activation's block device,
#     the pool and the applied bytes in the API and in /metrics
#  2. POST /v1/activations?wait=: a second activation, finished in the reply
#  3. 409 while in use: removing or deactivating an open activation, removing an image that
#     has activations
#  4. deactivate / activate / remove through the CLI and the API (devices come and go)
#  5. the same failures give the same messages and exit codes with and without the daemon
#  6. SIGTERM during a long apply-layer: the daemon exits within a bound (measured), the next
#     start finishes the run (outcome ok) and the activation holds the layer's bytes. The
#     daemon holds itself at the start of apply-layer (fault point ":stop", util/fault.h) and
#     gets SIGTERM there, so the signal lands in apply-layer on a fast or a loaded machine
#     alike (watching the log for the moment raced with a 3 s apply and lost once).
#  7. the reconcile at start reports gc's orphans (log line, gauge); automatic gc (--gc-high-water): while idle and above the mark, the images without
#     activations are removed least recently used first; images with activations and the layer
#     devices they use stay; the pool and the database agree afterwards
# teardown_pool from the pipeline tests' lib.sh; this folder's lib.sh second (its fail() also
# shows the daemon's log)
source "$(dirname "$0")/../pipeline/lib.sh"
source "$(dirname "$0")/lib.sh"
need dmsetup
need sha256sum
[ -n "${THINIMG_VM:-}" ] || [ -e /dev/mapper/control ] || { echo "no device-mapper here"; exit 77; }
POOL=dmd$$
export THINIMG_POOL=$POOL
T="$BIN --log-level warn"
cleanup() {
    set +e
    exec 3<&- 2>/dev/null
    cleanup_daemon
    mountpoint -q "$W/mnt" && umount "$W/mnt"
    teardown_pool "$POOL"
    rm -rf "$W"
    return 0
}
trap cleanup EXIT

$T setup-pool --data-size 384M >/dev/null
# Earlier tests in this VM filled pools on purpose: acknowledge those kernel log lines as an
# operator would, or the guard refuses the first device (see tests/pipeline/e2e.sh).
$T health >/dev/null || true
# The layer of the SIGTERM test: one 64 MiB file of random bytes (its extraction takes several
# seconds under emulation).
mkdir -p "$W/src/images/big" "$W/mnt"
dd if=/dev/urandom of="$W/big.bin" bs=1M count=64 status=none
tar -C "$W" -cf "$W/src/images/big/1.tar" big.bin
BIGSUM=$(sha256sum "$W/big.bin" | cut -d' ' -f1)

start_daemon

# ---- 1. process-image forwarded ---------------------------------------------------------------
$T process-image --device-size 256M --json "dir:$EX/images/busybox/" >"$W/p1.json" ||
    fail "process-image through the daemon failed"
DEV=$(jq -r .device_path "$W/p1.json")
[ -b "$DEV" ] || fail "no block device $DEV"
assert_eq "$(jq -r .activation "$W/p1.json")" busybox-3 "activation"
assert_eq "$(api GET /v1/activations)" 200 "activations"
assert_eq "$(j '.activations[0].name')/$(j '.activations[0].state')" busybox-3/active "activation row"
assert_eq "$(api GET /v1/pool)" 200 "pool"
[ "$(j .data_used_blocks)" -gt 0 ] || fail "pool data used"
assert_eq "$(j .healthy)" true "pool healthy"
curl -s --unix-socket "$SOCK" http://x/metrics >"$W/m1.txt"
mval() { grep -E "^$1 " "$W/m1.txt" | awk '{print $2}'; }
assert_eq "$(mval thinimg_pool_up)" 1 "pool_up"
assert_eq "$(mval 'thinimg_activations\{state="active"\}')" 1 "active activations gauge"
[ "$(mval thinimg_unpack_applied_bytes_total)" -gt 1000000 ] || fail "applied bytes"
[ "$(mval thinimg_pool_data_used_bytes)" -gt 0 ] || fail "pool data bytes"
pass "process-image through the daemon: $DEV; pool, activations and metrics from the API"

# the monitor on a real pool (a capture for docs/daemon.md)
if command -v tmux >/dev/null; then
    # tmux's socket on the guest tmpfs: /tmp is the host's 9p share, where sockets do not work.
    export TMUX_TMPDIR=$W
    TM="tmux -L thinimg-dm-$$"
    $TM -f /dev/null new-session -d -s mon -x 110 -y 30 \
        "env THINIMG_STATE_DIR=$THINIMG_STATE_DIR THINIMG_POOL=$POOL TERM=screen $BIN monitor --inline" ||
        fail "tmux did not start"
    for _ in $(seq 1 100); do
        $TM capture-pane -p -t mon | grep -q "busybox-3 " && break
        sleep 0.2
    done
    mkdir -p "$BUILD/tests/daemon"
    $TM capture-pane -p -t mon >"$BUILD/tests/daemon/monitor-dm.txt"
    $TM kill-server
    grep -qE "^POOL $POOL +data \[#*\.*\] +[0-9.]+%" "$BUILD/tests/daemon/monitor-dm.txt" ||
        fail "the monitor shows no pool usage: $(cat "$BUILD/tests/daemon/monitor-dm.txt")"
    grep -qE "^  busybox-3 +busybox:3 +active +/dev/mapper/$POOL-act-busybox-3" \
        "$BUILD/tests/daemon/monitor-dm.txt" || fail "the monitor shows no activation"
    pass "the monitor shows the pool's usage and the activation"
fi

# ---- 2. an activation with ?wait --------------------------------------------------------------
assert_eq "$(api POST '/v1/activations?wait=120' '{"image": "busybox:3", "name": "vm2"}')" 200 "activate ?wait"
assert_eq "$(j .finished)/$(j .outcome)" true/ok "second activation finished"
DEV2=$(j .activation.device_path)
[ -b "$DEV2" ] || fail "no block device $DEV2"
pass "POST /v1/activations?wait=120: $DEV2"

# ---- 3. in use: 409 ---------------------------------------------------------------------------
exec 3<"$DEV2"
expect_error DELETE /v1/activations/vm2 '' 409 busy "vm2 is in use"
expect_error POST /v1/activations/vm2/deactivate '' 409 busy "vm2 is in use"
set +e
$T remove vm2 2>"$W/e.txt"
rc=$?
set -e
assert_eq "$rc" 5 "CLI remove of an open activation through the daemon"
assert_contains "$(cat "$W/e.txt")" "thinimg: remove: vm2 is in use" "CLI message"
exec 3<&-
expect_error DELETE /v1/images/busybox:3 '' 409 busy "still has activations"
[ -b "$DEV2" ] || fail "a refused removal removed the device"
pass "removing or deactivating an open activation, or an image with activations: 409"

# ---- 4. deactivate / activate / remove --------------------------------------------------------
assert_eq "$($T deactivate vm2)" "vm2 deactivated (data kept; \`thinimg activate\` brings it back)" "deactivate"
[ ! -e "$DEV2" ] || fail "deactivated device still there"
assert_eq "$(api GET /v1/activations/vm2)" 200 "activation after deactivate"
assert_eq "$(j .state)" inactive "state after deactivate"
$T activate --name vm2 busybox:3 >/dev/null || fail "activate through the daemon"
[ -b "$DEV2" ] || fail "reactivated device missing"
assert_eq "$($T remove vm2)" "activation vm2 removed" "remove activation"
[ ! -e "$DEV2" ] || fail "removed device still there"
assert_eq "$(api DELETE /v1/activations/busybox-3)" 200 "DELETE activation"
assert_eq "$(api DELETE /v1/images/busybox:3)" 200 "DELETE image"
assert_eq "$(j .layers_deleted)" 3 "layer devices deleted"
[ -z "$(dmsetup ls | awk '{print $1}' | grep "^$POOL-" || true)" ] || fail "devices left: $(dmsetup ls)"
pass "deactivate, activate and remove through the CLI and DELETE through the API; no device left"

# ---- 5. same failures with and without the daemon ----------------------------------------------
# The command's own answer (stdout, its "thinimg: ..." error line, exit status), not the log
# lines of whatever else that process did (result_of in lib.sh).
same_failure() { # NAME CMD...
    local f=$1
    shift
    result_of "$W/$f.txt" $T "$@"
    grep -q "^thinimg: $1: " "$W/$f.txt" || fail "$* printed no error line: $(cat "$W/$f.txt")"
}
same_failure with1 deactivate nope
same_failure with2 remove nope
same_failure with3 activate nope

# ---- 6. SIGTERM during a long apply-layer -----------------------------------------------------
stop_daemon
LOGPOS=$(wc -l <"$DLOG")
since() { tail -n +$((LOGPOS + 1)) "$DLOG" | grep -q "$1"; }
THINIMG_FAULT=unpack.apply-layer.start:stop start_daemon
assert_eq "$(api POST /v1/process-image "{\"ref\": \"dir:$W/src/images/big/\", \"device_size\": \"256M\"}")" 202 "big image"
BIGRUN=$(j .run)
# Stopped (state T in /proc/PID/stat; read by the shell: no process per poll), at most 300 s.
held() {
    local _pid _comm st
    read -r _pid _comm st _ <"/proc/$DPID/stat" && [ "$st" = T ]
}
end=$((SECONDS + 300))
until held; do
    [ "$SECONDS" -lt "$end" ] || fail "the daemon never stopped at unpack.apply-layer.start"
    sleep 0.1
done
since 'fault point unpack.apply-layer.start: SIGSTOP' || fail "stopped, but not at the fault point"
since 'msg="layer device created"' || fail "apply-layer reached before the layer had its device"
# SIGTERM waits while the daemon is stopped; SIGCONT lets it go on into apply-layer with the
# signal pending. The time to exit is measured from SIGCONT.
kill -TERM "$DPID"
t0=$(date +%s%N)
kill -CONT "$DPID"
rc=0
wait "$DPID" || rc=$?
KILL_MS=$((($(date +%s%N) - t0) / 1000000))
DPID=
[ "$rc" = 0 ] || fail "the daemon exited with status $rc after SIGTERM"
since 'msg="layer applied"' && fail "apply-layer finished instead of stopping"
[ "$KILL_MS" -lt 15000 ] || fail "SIGTERM during apply-layer took ${KILL_MS} ms (bound 15000)"
grep -q 'fsm shutting down.*running=' "$DLOG" || fail "no shutdown line"
[ ! -e "$SOCK" ] || fail "socket left after SIGTERM"
echo "SIGTERM during apply-layer: the daemon exited in ${KILL_MS} ms"

# same failures, without a daemon now
same_failure without1 deactivate nope
same_failure without2 remove nope
same_failure without3 activate nope
for i in 1 2 3; do
    cmp -s "$W/with$i.txt" "$W/without$i.txt" ||
        fail "case $i (deactivate, remove, activate nope) differs without the daemon:" \
            "$(cat "$W/without$i.txt") vs $(cat "$W/with$i.txt")"
done
pass "deactivate/remove/activate of unknown names: same messages and exit codes with and without the daemon"

t0=$(date +%s%N)
start_daemon
assert_eq "$(api GET "/v1/runs/$BIGRUN/wait?timeout=300")" 200 "wait for the resumed run"
assert_eq "$(j .finished)" true "the resumed run finished"
assert_eq "$(j .run.outcome)" ok "the resumed run's outcome"
RESUME_MS=$((($(date +%s%N) - t0) / 1000000))
assert_eq "$(api GET '/v1/runs?all=1&type=unpack&limit=1')" 200 "unpack runs"
UNPACK=$(j '.runs[0].version')
assert_eq "$(api GET "/v1/runs/$UNPACK")" 200 "the unpack run"
assert_contains "$(j '[.events[].type] | join(" ")')" "resume" "the unpack run was resumed"
assert_eq "$(j .run.outcome)" ok "the unpack run's outcome"
assert_eq "$(api GET /v1/activations/big-1)" 200 "the big image's activation"
BIGDEV=$(j .device_path)
[ -b "$BIGDEV" ] || fail "no device $BIGDEV"
mount -o ro "$BIGDEV" "$W/mnt"
assert_eq "$(sha256sum "$W/mnt/big.bin" | cut -d' ' -f1)" "$BIGSUM" "the layer's bytes on the device"
umount "$W/mnt"
stop_daemon
pass "SIGTERM in apply-layer: exit in ${KILL_MS} ms; the next start finished the run in ${RESUME_MS} ms; the device holds the layer"

# ---- 7. automatic gc ---------------------------------------------------------------------------
# Candidates big:1 (used longest ago) and busybox-extra:3; busybox:3 keeps an activation and
# shares its two lower layers with busybox-extra:3 (those devices must stay).
$T process-image --device-size 256M "dir:$EX/images/busybox/" >/dev/null || fail "busybox"
$T process-image --device-size 256M "dir:$EX/images/busybox-extra/" >/dev/null ||
    fail "busybox-extra"
$T remove --activation busybox-extra-3 >/dev/null || fail "remove busybox-extra's activation"
$T remove --activation big-1 >/dev/null || fail "remove the big image's activation"
$T list-images --json >"$W/imgs.json"
$T list-snapshots --all --json >"$W/acts.json"
# Expected: every image without an activation goes, oldest last use first; the rest stay.
jq -r --slurpfile a "$W/acts.json" '[.[] | select(.name as $n | [$a[0][].image] | index($n) | not)]
    | sort_by(.id) | .[].name' "$W/imgs.json" >"$W/expect-gone.txt"
jq -r --slurpfile a "$W/acts.json" '.[] | select(.name as $n | [$a[0][].image] | index($n)) | .name' \
    "$W/imgs.json" | sort >"$W/expect-kept.txt"
assert_eq "$(tr '\n' ' ' <"$W/expect-gone.txt")" "big:1 busybox-extra:3 " "auto-gc candidates"
LAYER_DEVS=$($T list-images --json | jq -r '.[] | select(.name == "busybox:3") | .layers[].device_id')
[ -s "$W/expect-kept.txt" ] || fail "no image with activations left for the test"
$T gc --json >"$W/gc0.json" || fail "gc before auto-gc"
KEPT_DEVS=$(jq -r '[.[] | select(.state == "active") | .device_path] | join(" ")' "$W/acts.json")
LOGPOS=$(wc -l <"$DLOG")
# 1 %: the pool is above it whatever it holds, so every candidate goes (and the daemon says
# the pool stays above the mark).
start_daemon --gc-high-water 1
# The reconcile at start reports what gc would remove (before auto-gc runs: it waits 5 s).
NORPH=$(jq '[.orphans[] | select(.removable)] | length' "$W/gc0.json")
if [ "$NORPH" = 0 ]; then
    since 'msg="reconcile: the pool and the database agree"' || fail "no reconcile line at start"
else
    since "msg=\"reconcile: orphans found.* orphans=$NORPH " ||
        fail "reconcile at start: expected $NORPH orphans: $(grep reconcile "$DLOG" | tail -n 1)"
fi
# Into a file first: `curl | grep -q` fails under pipefail when grep leaves before curl's last
# write (a /metrics page longer than one of curl's writes).
curl -sf --unix-socket "$SOCK" http://x/metrics >"$W/m-reconcile.txt" || fail "GET /metrics"
grep -qx "thinimg_reconcile_orphans $NORPH" "$W/m-reconcile.txt" ||
    fail "thinimg_reconcile_orphans is not $NORPH: $(grep reconcile_orphans "$W/m-reconcile.txt")"
gone() { since 'msg="auto-gc: done"'; }
wait_for gone || { sleep 5; gone; } || fail "auto-gc did not run: $(tail -n 5 "$DLOG")"
stop_daemon
tail -n +$((LOGPOS + 1)) "$DLOG" | grep 'msg="image removed"' | sed 's/.* image=\([^ ]*\) .*/\1/' \
    >"$W/gone.txt"
assert_eq "$(cat "$W/gone.txt")" "$(cat "$W/expect-gone.txt")" "images auto-gc removed, in order"
$T list-images --json | jq -r '.[].name' | sort >"$W/left.txt"
assert_eq "$(cat "$W/left.txt")" "$(cat "$W/expect-kept.txt")" "images left after auto-gc"
for dev in $KEPT_DEVS; do [ -b "$dev" ] || fail "activation device $dev gone after auto-gc"; done
assert_eq "$($T list-images --json | jq -r '.[] | select(.name == "busybox:3") | .layers[].device_id')" \
    "$LAYER_DEVS" "busybox:3's layer devices after auto-gc"
$T status --json >"$W/st.json"
for id in $LAYER_DEVS; do
    jq -e --argjson id "$id" '[.devices[]? | .id] | index($id)' "$W/st.json" >/dev/null ||
        fail "layer device $id not in the pool after auto-gc"
done
since 'still above its high-water mark' || fail "no warning that the pool stays above the mark"
$T gc --json >"$W/gc.json" || fail "gc after auto-gc"
# (The removed images' blobs stay: the mark is about the pool; gc --blobs deletes them.)
nonblob='[.orphans[] | select(.kind != "blob")]'
assert_eq "$(jq -c "$nonblob" "$W/gc.json")" "$(jq -c "$nonblob" "$W/gc0.json")" \
    "gc orphans after auto-gc (as before it, blobs aside)"
pass "auto-gc removed $(wc -l <"$W/gone.txt") unused image(s) oldest first, kept $(wc -l <"$W/left.txt") with activations; nothing orphaned"
echo "dm daemon: all passed"
