#!/usr/bin/env bash
# gc.sh BUILD_DIR: gc through the daemon, and the daemon's idle collection of orphans (label
# daemon; no devicemapper: the daemon runs with --no-pool-setup and a pool nobody has, so the
# orphans here are the ones a host without dm has: temp files and unreferenced blobs; devices are
# the VM's part). Issue 22.
#
#  1. `thinimg gc` while a daemon holds the state directory goes through POST /v1/gc: the same
#     --json report as the local gc (compared field by field), exit 0, --ignore-lock said to be
#     unneeded; --force removes what the dry run listed; bad requests are refused (400/405).
#  2. a daemon that does not answer (SIGSTOP): gc exits 5 and names --ignore-lock; with
#     --ignore-lock it acts locally and says the daemon does not answer.
#  3. gc --force --blobs through the daemon while a run downloads: the old temp file goes; a temp
#     file written after the run started and the unreferenced blob are spared, and say why; the
#     same with the local gc --force --ignore-lock next to the (stopped) daemon.
#  4. idle collection (grace 2s): after a kill -9 mid-download the restarted daemon resumes the
#     run; while it works nothing is collected; once it finished, the temp files and the blob
#     are gone without a command, each logged and counted in thinimg_gc_orphans_removed_total.
#  5. an unhealthy host (a thin-pool line in the kernel log the daemon reads): nothing is
#     collected, the daemon says why; gc --force through it exits 3.
#  6. --no-auto-gc-orphans leaves orphans (checked in 1, after several passes); bad
#     --auto-gc-orphans-grace values exit 2.
#  7. `thinimg status` (text and --json) next to the daemon: each queue's limit, maximum, pinned
#     or sized to the load, and signals; the orphans waiting and when the next may go; the idle
#     collection off, or refused and why (checked in 1 and 5 too).
source "$(dirname "$0")/lib.sh"
need python3
export THINIMG_POOL=gctest$$
SLOW_PID=
cleanup() {
    set +e
    [ -n "$SLOW_PID" ] && kill "$SLOW_PID" 2>/dev/null
    [ -n "$DPID" ] && kill -CONT "$DPID" 2>/dev/null
    cleanup_daemon
    rm -rf "$W"
}
trap cleanup EXIT
PROM="python3 $HERE/promparse.py"
T="$BIN --log-level warn"
TMPD=$THINIMG_STATE_DIR/tmp

# A slow HTTP source: the example's base layer at 150 KB/s (about 13 s per download).
mkdir -p "$W/slow"
cp "$EX/images/busybox/1.tar" "$W/slow/slow.tar"
python3 "$HERE/clients.py" slowserve "$W/slow" "$W/port" 150000 &
SLOW_PID=$!
wait_for test -s "$W/port" || fail "slow server did not start"
SLOW="http://127.0.0.1:$(cat "$W/port")"

# old_tmp NAME: a temp file no download owns, written an hour ago.
old_tmp() {
    mkdir -p "$TMPD"
    echo "left behind" >"$TMPD/$1"
    touch -d '1 hour ago' "$TMPD/$1"
}
# The report without its note (the pool's note quotes libdevmapper, whose words differ between
# the first call in a process and later ones).
report() { jq -S 'del(.note)' "$1"; }

# ---- 1. gc through the daemon: the same report --------------------------------------------------
# A blob no image uses: a layer of its own (not one of the slow image's).
mkdir -p "$W/own/root" "$W/src"
echo "only here" >"$W/own/root/file"
tar -cf "$W/src/extra.tar" -C "$W/own/root" file
$T fetch "dir:$W/src/extra.tar" >/dev/null || fail "fetch a blob no image uses"
old_tmp old1.part
result_of "$W/local" $T gc --json --blobs
assert_eq "$(tail -1 "$W/local")" "exit 0" "local dry run"
$T gc --json --blobs >"$W/local.json"
assert_eq "$(jq -r '[.orphans[].kind] | sort | join(",")' "$W/local.json")" "blob,tmpfile" \
    "local dry run lists the blob and the temp file"

start_daemon --no-pool-setup --no-auto-gc-orphans --auto-gc-orphans-grace 1s
sleep 3 # several idle passes: --no-auto-gc-orphans leaves them
[ -f "$TMPD/old1.part" ] || fail "--no-auto-gc-orphans: the daemon removed a temp file"
$T gc --json --blobs >"$W/remote.json" || fail "gc --json through the daemon"
grep -q '"gc requested"' "$DLOG" || fail "the daemon did not get the gc request"
diff <(report "$W/local.json") <(report "$W/remote.json") >"$W/diff.txt" ||
    fail "the daemon's report differs from the local one: $(cat "$W/diff.txt")"
result_of "$W/text" $T gc
assert_eq "$(tail -1 "$W/text")" "exit 0" "text dry run through the daemon"
assert_contains "$(cat "$W/text")" "old1.part" "text report"
assert_contains "$(cat "$W/text")" "dry run: nothing was changed" "text report"
result_of "$W/ign" $T gc --ignore-lock
assert_contains "$(cat "$W/ign")" "--ignore-lock is not needed: the daemon answers" "ignore-lock"
assert_eq "$(tail -1 "$W/ign")" "exit 0" "ignore-lock through the daemon"

expect_error POST /v1/gc '{"force": "yes"}' 400 invalid 'field "force" must be true or false'
expect_error POST /v1/gc '{"force": true, "all": 1}' 400 invalid 'unknown field "all"'
expect_error POST /v1/gc '{"timeout": 0}' 400 invalid 'field "timeout" must be an integer'
expect_error PUT /v1/gc '{}' 405 method 'not allowed'
assert_eq "$(api GET /v1/gc)" 200 "GET /v1/gc"
assert_eq "$(j .auto_gc_orphans.enabled)" false "GET /v1/gc with --no-auto-gc-orphans"
assert_contains "$($T status 2>/dev/null || true)" \
    "idle orphan collection: idle collection off (--no-auto-gc-orphans)" "status: collection off"
assert_eq "$(api POST /v1/gc '{}')" 200 "POST /v1/gc, dry run"
assert_eq "$(j .mode)" dry-run "API dry run"

$T gc --force --json >"$W/force.json" || fail "gc --force through the daemon exited $?"
assert_eq "$(jq -r .mode "$W/force.json")" force "force mode"
assert_eq "$(jq -r '.orphans[] | select(.kind=="tmpfile") | .result' "$W/force.json")" done \
    "temp file result"
assert_eq "$(jq -r '.orphans[] | select(.kind=="blob") | .removable' "$W/force.json")" false \
    "the blob without --blobs"
[ ! -e "$TMPD/old1.part" ] || fail "gc --force through the daemon left the temp file"
pass "gc through the daemon: the local report, --force removed what the dry run listed"

# ---- 2. a daemon that does not answer ---------------------------------------------------------
old_tmp old2.part
kill -STOP "$DPID"
result_of "$W/stopped" $T gc
assert_eq "$(tail -1 "$W/stopped")" "exit 5" "gc next to a daemon that does not answer"
assert_contains "$(cat "$W/stopped")" "--ignore-lock" "the way out is named"
result_of "$W/stopped2" $T gc --ignore-lock --json
assert_eq "$(tail -1 "$W/stopped2")" "exit 0" "gc --ignore-lock next to a silent daemon"
assert_contains "$(cat "$W/stopped2")" "a daemon that does not answer" "--ignore-lock says so"
kill -CONT "$DPID"
pass "a daemon that does not answer: exit 5, --ignore-lock acts and says so"

# ---- 3. gc --force while a run works -------------------------------------------------------------
assert_eq "$(api POST /v1/process-image "{\"ref\": \"$SLOW/slow.tar\"}")" 202 "slow run"
RUN=$(j .run)
downloading() {
    api GET /v1/runs >/dev/null
    [ "$(j '[.runs[] | select(.type=="fetch" and .phase=="download" and .status=="running")] | length')" -ge 1 ]
}
wait_for downloading || fail "no download in progress"
echo "written after the run started" >"$TMPD/fresh.part"
$T gc --force --blobs --json >"$W/busy.json" || fail "gc --force --blobs while a run works"
assert_eq "$(jq -r '.orphans[] | select(.what|endswith("old2.part")) | .result' "$W/busy.json")" \
    done "the old temp file, removed while a run works"
fresh=$(jq -r '.orphans[] | select(.what|endswith("fresh.part")) | "\(.removable) \(.action)"' \
    "$W/busy.json")
assert_contains "$fresh" "false skip: made while 2 runs work (the oldest: process run $RUN)" \
    "a temp file of the run's time"
blob=$(jq -r '.orphans[] | select(.kind=="blob") | "\(.removable) \(.action)"' "$W/busy.json")
assert_contains "$blob" "false skip: runs work" "the blob while a run works"
[ -f "$TMPD/fresh.part" ] || fail "gc removed a temp file written while a run works"
[ -z "$(jq -r '.orphans[] | select(.kind=="tmpfile" and (.what|test("fetch-")))' "$W/busy.json")" ] ||
    fail "the run's own download was listed"
downloading || fail "the download did not go on after gc"
# The same rule in the local gc --ignore-lock next to a daemon that does not answer.
old_tmp old2b.part
echo "also written after the run started" >"$TMPD/fresh2.part"
kill -STOP "$DPID"
rc=0
$T gc --force --ignore-lock --blobs --json >"$W/ign.json" 2>"$W/ign.err" || rc=$?
kill -CONT "$DPID"
assert_eq "$rc" 0 "gc --force --ignore-lock next to a silent daemon with a run"
assert_contains "$(cat "$W/ign.err")" "a daemon that does not answer" "--ignore-lock says so"
assert_eq "$(jq -r '.orphans[] | select(.what|endswith("old2b.part")) | .result' "$W/ign.json")" \
    done "--ignore-lock: the old temp file"
fresh=$(jq -r '.orphans[] | select(.what|endswith("fresh2.part")) | "\(.removable) \(.action)"' \
    "$W/ign.json")
assert_contains "$fresh" "false skip: made while 2 runs work" "--ignore-lock: a temp file of the run's time"
assert_eq "$(jq -r '.orphans[] | select(.kind=="blob") | .removable' "$W/ign.json")" false \
    "--ignore-lock: the blob while a run works"
[ -f "$TMPD/fresh2.part" ] || fail "gc --ignore-lock removed a temp file written while a run works"
pass "gc --force next to a working run spares what the run may be using (daemon and --ignore-lock)"

# ---- 4. idle collection ----------------------------------------------------------------------
sleep 1 # well inside the ~13 s download
kill -KILL "$DPID"
wait "$DPID" 2>/dev/null || true
DPID=
old_tmp old3.part
THINIMG_SKIP_HEALTH_CHECKS=1 start_daemon --no-pool-setup --auto-gc-orphans-grace 2s
sleep 4 # grace and two passes: the resumed run works, nothing may go
api GET /v1/runs >/dev/null
[ "$(j '.runs | length')" -ge 1 ] || fail "the resumed run finished too early to test anything"
for f in old3.part fresh.part fresh2.part; do
    [ -f "$TMPD/$f" ] || fail "$f was collected while a run works"
done
[ "$($T gc --blobs --json | jq '[.orphans[] | select(.kind=="blob")] | length')" = 1 ] ||
    fail "the blob was collected while a run works"
finished() {
    curl -s --unix-socket "$SOCK" "http://x/v1/runs/$1" | jq -e '.run.status == "finished"' >/dev/null
}
wait_for finished "$RUN" || fail "the resumed run did not finish"
gone() { [ ! -e "$TMPD/old3.part" ] && [ ! -e "$TMPD/fresh.part" ] && [ ! -e "$TMPD/fresh2.part" ] &&
    [ "$($T gc --blobs --json | jq '[.orphans[] | select(.removable)] | length')" = 0 ]; }
wait_for gone || fail "the idle daemon did not collect the orphans: $($T gc --blobs)"
curl -sf --unix-socket "$SOCK" http://x/metrics >"$W/m.txt"
get() { $PROM "$1" --get "${@:2}" || echo 0; }
assert_eq "$(get "$W/m.txt" thinimg_gc_orphans_removed_total kind=tmpfile)" 3 "tmpfiles counted"
assert_eq "$(get "$W/m.txt" thinimg_gc_orphans_removed_total kind=blob)" 1 "blob counted"
assert_eq "$(grep -c 'auto-gc: orphan removed' "$DLOG")" 4 "one log line per orphan"
grep 'auto-gc: orphan removed' "$DLOG" | grep -q "kind=blob" || fail "the blob's removal not logged"
assert_eq "$(api GET /v1/gc)" 200 "GET /v1/gc"
assert_eq "$(j '.auto_gc_orphans | "\(.enabled) \(.grace_ms) \(.waiting) \(.refused)"')" \
    "true 2000 0 null" "GET /v1/gc after the collection"
stop_daemon
pass "idle collection: nothing while the resumed run worked, then each orphan, logged and counted"

# ---- 5. an unhealthy host -------------------------------------------------------------------
old_tmp old4.part
up_us=$(awk '{printf "%.0f", $1 * 1000000}' /proc/uptime)
echo "3,999999,$up_us,-;device-mapper: thin: 254:0: switching pool to read-only mode" \
    >"$W/kmsg"
THINIMG_KMSG_PATH=$W/kmsg start_daemon --no-pool-setup --auto-gc-orphans-grace 1s
wait_for grep -q 'orphans are not collected while the host is not healthy' "$DLOG" ||
    fail "the daemon did not say why it does not collect"
grep 'orphans are not collected' "$DLOG" | grep -q 'switching pool to read-only mode' ||
    fail "the reason does not quote the kernel log line"
sleep 2
[ -f "$TMPD/old4.part" ] || fail "an orphan was collected on an unhealthy host"
assert_eq "$(api GET /v1/gc)" 200 "GET /v1/gc"
assert_contains "$(j .auto_gc_orphans.refused)" "not healthy" "GET /v1/gc says why"
st=$($T status 2>/dev/null || true)
assert_contains "$st" "not collected while the host is not healthy: " "status says why"
assert_contains "$st" "switching pool to read-only mode" "status quotes the kernel log line"
result_of "$W/sick" $T gc --force
assert_eq "$(tail -1 "$W/sick")" "exit 3" "gc --force through the daemon on an unhealthy host"
assert_contains "$(cat "$W/sick")" "not healthy" "the refusal says why"
[ -f "$TMPD/old4.part" ] || fail "gc --force removed something on an unhealthy host"
result_of "$W/sickdry" $T gc
assert_eq "$(tail -1 "$W/sickdry")" "exit 0" "a dry run on an unhealthy host"
assert_contains "$(cat "$W/sickdry")" "old4.part" "the dry run still lists the files"
stop_daemon
pass "an unhealthy host: no collection, the daemon says why, gc --force exits 3"

# ---- 6. options -----------------------------------------------------------------------------
for bad in 0 5x -1s; do
    result_of "$W/bad" $T daemon --no-pool-setup --auto-gc-orphans-grace "$bad"
    assert_eq "$(tail -1 "$W/bad")" "exit 2" "--auto-gc-orphans-grace $bad"
done
$T daemon --help | grep -q -- '--no-auto-gc-orphans' || fail "daemon --help"
$T gc --help | grep -q 'While the daemon runs, gc is done by it' || fail "gc --help"
pass "options"

# ---- 7. status next to the daemon ----------------------------------------------------------
# A temp file written now waits out its grace (60 s); the unpack queue is pinned, fetch sized.
mkdir -p "$TMPD"
echo "fresh" >"$TMPD/young.part"
start_daemon --no-pool-setup --auto-gc-orphans-grace 60s --unpack-queue 1 --unpack-queue-max 2 --fetch-queue-max 3
waiting() { api GET /v1/gc >/dev/null && [ "$(j .auto_gc_orphans.waiting)" = 1 ]; }
wait_for waiting || fail "GET /v1/gc never counted the young temp file: $(cat "$W/out.json")"
result_of "$W/status" $T status
st=$(cat "$W/status")
grep -qE '^unpack +1 +2 +pinned +- +(I/O some [0-9.]+% full [0-9.]+%, memory full [0-9.]+%|no PSI); 0 running, 0 waiting; 0 B/s$' \
    <<<"$st" || fail "status: no pinned unpack queue row: $st"
grep -qE '^fetch +[0-9]+ +3 +sized to the load +' <<<"$st" || fail "status: no sized fetch row: $st"
assert_contains "$st" "idle orphan collection: 1 waiting; the next may go in " "status: waiting"
assert_contains "$st" "when idle (grace 1m00s), next look " "status: grace and next look"
$T status --json >"$W/status.json" 2>/dev/null || true
assert_eq "$(jq -r '.queues[] | select(.queue=="unpack") | "\(.limit) \(.max) \(.pinned)"' "$W/status.json")" \
    "1 2 true" "status --json: unpack queue"
assert_eq "$(jq -r '.queues[] | select(.queue=="fetch") | "\(.max) \(.pinned) \(.signals.running)"' "$W/status.json")" \
    "3 false 0" "status --json: fetch queue"
now=$(date +%s%3N)
due=$(jq -r '.auto_gc_orphans.next_due_ms' "$W/status.json")
assert_eq "$(jq -r '.auto_gc_orphans | "\(.enabled) \(.waiting) \(.grace_ms)"' "$W/status.json")" \
    "true 1 60000" "status --json: the idle collection"
[ "$due" -gt "$now" ] && [ "$due" -le $((now + 60000)) ] ||
    fail "status --json: next_due_ms $due is not within the grace from now ($now)"
[ -f "$TMPD/young.part" ] || fail "a temp file within its grace was collected"
stop_daemon
result_of "$W/status2" $T status
assert_contains "$(cat "$W/status2")" "no daemon runs: each process-image sizes its own queues" \
    "status without a daemon"
$T status --json >"$W/status2.json" 2>/dev/null || true # exit 3: no devicemapper here
jq -e '.queues == null and .auto_gc_orphans == null' "$W/status2.json" >/dev/null ||
    fail "status --json without a daemon: queues and auto_gc_orphans not null"
pass "status: the queues' sizing and signals, the orphans waiting and when the next may go"
