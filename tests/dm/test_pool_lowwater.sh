#!/usr/bin/env bash
# test_pool_lowwater.sh: the daemon grows a pool on the kernel's low-water event (label dm; runs
# inside the VM, issue 20). Skips (77) without device-mapper.
#
#   A 48 MiB pool of 64 KiB blocks (768): setup-pool loads the default mark (10 %: 77 blocks);
#   `pool set --autoextend-threshold 40` loads the threshold as the mark at once (768 - 308 =
#   460 free blocks). The daemon runs with its fallback poll set to 10 minutes
#   (THINIMG_POOL_POLL_MS), so only the event can make it grow within the bound. Its event
#   thread is seen blocked in the kernel's wait (/proc/PID/task/*/wchan) before anything is
#   written.
#   - 20 MiB written to a thin device (320 blocks, past 40 %): the pool grows by the 16 MiB step
#     within GROW_BOUND_MS of the write's end; the log's "pool autoextended" line names
#     trigger="low-water event"; dmsetup table and the pools row show the mark recomputed for
#     1024 blocks (614); /metrics counts the growth with trigger="event".
#   - 8 MiB more (28 MiB of 64, past 40 % again): the kernel signals again after the resume
#     and the pool grows to 80 MiB, mark 768.
#   - SIGTERM: the daemon stops within STOP_BOUND_MS although its event thread sits in the
#     blocking wait, and exits 0.
set -uo pipefail
T="${THINIMG_BIN:?THINIMG_BIN not set}"
if [ "$(id -u)" != 0 ] || ! dmsetup version >/dev/null 2>&1 || ! dmsetup targets | grep -q thin-pool; then
    echo "skipped: no device-mapper with thin-pool here (run inside tests/vm/run)"
    exit 77
fi
# Bounds: an emulated VM on a loaded host reads the status, extends a file and reloads a table
# in well under a second; the bound leaves room for that, and is far below the 10 minute poll.
GROW_BOUND_MS=5000
STOP_BOUND_MS=5000
W="$(mktemp -d "${THINIMG_VM_TMP:-${TMPDIR:-/tmp}}/pool-lw.XXXXXX")"
P="tlw$$"
S="$W/state"
DLOG="$W/daemon.log"
DPID=
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }
TI=("$T" --state-dir "$S" --pool "$P")
cleanup() {
    if [ -n "$DPID" ]; then
        kill -KILL "$DPID" 2>/dev/null
        wait "$DPID" 2>/dev/null
    fi
    for d in $(dmsetup ls 2>/dev/null | awk '{print $1}' | grep -E "^${P}(-|$)" | sort -r); do
        dmsetup remove "$d" >/dev/null 2>&1
    done
    for f in "$S/pool/$P-data.img" "$S/pool/$P-meta.img"; do
        [ -e "$f" ] || continue
        for l in $(losetup -j "$f" -O NAME -n); do losetup -d "$l" 2>/dev/null; done
    done
    rm -rf "$W"
}
trap cleanup EXIT
now_ms() { echo $(($(date +%s%N) / 1000000)); }
table_len() { dmsetup table "$P" | awk '{print $2}'; }
table_lw() { dmsetup table "$P" | awk '{print $7}'; }
row_lw() { sqlite3 -readonly "$S/thinimg.db" "SELECT low_water_blocks FROM pools WHERE name='$P'"; }
# wait_len SECTORS: until the pool's table is that long, at most GROW_BOUND_MS; sets WAITED_MS.
wait_len() {
    local t0 t
    t0=$(now_ms)
    while :; do
        t=$(now_ms)
        WAITED_MS=$((t - t0))
        [ "$(table_len)" = "$1" ] && return 0
        [ "$WAITED_MS" -gt "$GROW_BOUND_MS" ] && return 1
        sleep 0.02
    done
}

timeout 120 "${TI[@]}" setup-pool --data-size 48M --metadata-size 4M --block-size 64K >/dev/null ||
    { echo "FAIL: setup-pool"; exit 1; }
[ "$(table_lw)" = 77 ] && ok "setup-pool loads the default mark (10 % of 768 blocks: 77)" ||
    fail "low water after setup-pool: $(table_lw), want 77"
timeout 60 "${TI[@]}" pool set --autoextend-threshold 40 --autoextend-step 16M --autoextend-max 512M \
    >/dev/null || fail "pool set"
[ "$(table_lw)" = 460 ] && [ "$(row_lw)" = 460 ] &&
    ok "pool set loads the threshold as the mark: 460 of 768 blocks free (table and record)" ||
    fail "low water after pool set: table $(table_lw), record $(row_lw), want 460"
[ "$(table_len)" = $((48 * 2048)) ] || fail "pool set changed the length: $(table_len)"

# The daemon, with a poll too slow to matter here.
THINIMG_POOL_POLL_MS=600000 THINIMG_SKIP_HEALTH_CHECKS=1 \
    "${TI[@]}" --log-level info daemon --no-auto-gc-orphans \
    >>"$DLOG" 2>&1 &
DPID=$!
# Ready when its event thread waits in the kernel (dev_wait -> dm_wait_event).
waiting() { cat /proc/"$DPID"/task/*/wchan 2>/dev/null | tr '\0' '\n' | grep -qE 'dm_wait_event|dev_wait'; }
for _ in $(seq 1 400); do
    waiting && break
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.05
done
if waiting; then
    ok "the daemon's event thread waits for the pool's event in the kernel"
else
    fail "no thread of the daemon waits in dm_wait_event (wchan: $(cat /proc/"$DPID"/task/*/wchan 2>/dev/null | tr '\0' ' '))"
    tail -20 "$DLOG"
fi

# cross N MIB SEEK WANT_MIB WANT_LW: write MIB MiB at SEEK MiB (past the threshold); the N-th
# growth must make the pool WANT_MIB long within the bound, be logged as the low-water event's,
# and leave the mark WANT_LW in the table and the record (written right after the reload).
cross() {
    dd if=/dev/urandom of="/dev/mapper/$P-test-1" bs=1M count="$2" seek="$3" oflag=direct \
        status=none || fail "writing $2 MiB at $3 MiB"
    if wait_len $(($4 * 2048)); then
        ok "growth $1: the pool is $4 MiB ${WAITED_MS} ms after the write (bound ${GROW_BOUND_MS} ms)"
        echo "figure: growth $1 ${WAITED_MS} ms after the write crossed the threshold"
    else
        fail "growth $1: the pool is not $4 MiB within ${GROW_BOUND_MS} ms: $(dmsetup table "$P")"
    fi
    local line
    line="$(grep 'msg="pool autoextended"' "$DLOG" | sed -n "${1}p")"
    case "$line" in
    *'trigger="low-water event" '*) ok "growth $1: the log names the trigger: low-water event" ;;
    *) fail "growth $1: its log line does not name the low-water event: '$line'" ;;
    esac
    for _ in $(seq 1 100); do [ "$(row_lw)" = "$5" ] && break; sleep 0.05; done
    [ "$(table_lw)" = "$5" ] && [ "$(row_lw)" = "$5" ] &&
        ok "growth $1: the mark is recomputed for the new size: $5 (table and record)" ||
        fail "growth $1: low water: table $(table_lw), record $(row_lw), want $5"
}

dmsetup message "$P" 0 "create_thin 1" || fail "create_thin"
dmsetup create "$P-test-1" --table "0 $((256 * 2048)) thin /dev/mapper/$P 1" || fail "activate thin"
# 20 MiB: 320 of 768 blocks, past 40 %: 64 MiB (1024 blocks, mark 1024 - 410)
cross 1 20 0 64 614
curl -s --max-time 10 --unix-socket "$S/thinimg.sock" http://x/metrics >"$W/metrics.txt"
if grep '^thinimg_pool_autoextend_total{' "$W/metrics.txt" | grep 'result="grown"' |
    grep 'trigger="event"' >/dev/null; then
    ok "/metrics counts the growth with trigger=\"event\""
else
    fail "/metrics has no grown growth with trigger=event: $(grep autoextend "$W/metrics.txt")"
fi
# 8 MiB more: 28 of 64 MiB, past 40 % again; the kernel signals again after the resume
cross 2 8 20 80 768
grep 'msg="pool autoextended"' "$DLOG" | grep -q 'trigger=poll' && fail "a growth was the poll's"

# ---- stop while the event thread waits ----------------------------------------------------------
for _ in $(seq 1 100); do waiting && break; sleep 0.05; done
waiting || fail "the event thread does not wait before the stop"
t0=$(now_ms)
kill -TERM "$DPID"
wait "$DPID"
RC=$?
STOP_MS=$(($(now_ms) - t0))
DPID=
[ "$RC" = 0 ] && [ "$STOP_MS" -le "$STOP_BOUND_MS" ] &&
    ok "SIGTERM stopped the daemon in ${STOP_MS} ms (bound ${STOP_BOUND_MS} ms), exit 0" ||
    fail "daemon stop: exit $RC after ${STOP_MS} ms (bound ${STOP_BOUND_MS} ms)"
echo "figure: daemon stop ${STOP_MS} ms with the event thread in the kernel's wait"

if [ "$FAILS" -gt 0 ]; then
    echo "--- daemon log (last 30 lines)"
    tail -30 "$DLOG"
fi
[ "$FAILS" = 0 ] && echo "pool low water: all passed" || { echo "pool low water: $FAILS failures"; exit 1; }
