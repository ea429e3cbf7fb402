#!/usr/bin/env bash
# api.sh BUILD_DIR: the daemon and its admin API on the host (label daemon; no devicemapper:
# the daemon runs with --no-pool-setup and a pool name nobody has, so unpacking is refused and
# every run that needs a device ends `abort`; everything else is real: SQLite, the FSM, fetches
# from a dir: source and from a slow HTTP server on 127.0.0.1).
#
#  1. every endpoint over the socket with curl, and the socket's mode
#  2. bad requests: malformed JSON, missing/unknown fields, bad names, unknown image/run, wrong
#     method (405 + Allow), unknown path, a body too large, bad query values
#  3. process-image ?wait=, runs, events, long polls (finished, and timing out on a slow run)
#  4. slow clients: a half request that stalls and a client that hangs up mid-long-poll do not
#     block other requests; the stalled one is dropped by the connection timeout, the hung-up
#     poll at once
#  5. the CLI forwards to the daemon: exit codes and messages
#  6. /metrics parses (tests/daemon/promparse.py) and changes as work happens; also over TCP
#  7. kill -9 during a download: the next start resumes the run; stale socket replaced
#  8. SIGHUP reloads nothing, SIGUSR2 neither kills nor interrupts; a second daemon is
#     refused; SIGTERM stops within a bound
source "$(dirname "$0")/lib.sh"
need python3
export THINIMG_POOL=apitest$$
HALF_PID=
SLOW_PID=
cleanup() {
    set +e
    [ -n "$HALF_PID" ] && kill "$HALF_PID" 2>/dev/null
    [ -n "$SLOW_PID" ] && kill "$SLOW_PID" 2>/dev/null
    cleanup_daemon
    rm -rf "$W"
}
trap cleanup EXIT
PROM="python3 $HERE/promparse.py"
CLIENTS="python3 $HERE/clients.py"
T="$BIN --log-level warn"

# A slow HTTP source: the example's base layer at ~350 KB/s (about 6 s per download).
mkdir -p "$W/slow"
cp "$EX/images/busybox/1.tar" "$W/slow/slow.tar"
cp "$EX/images/busybox/1.tar" "$W/slow/slow2.tar"
cp "$EX/images/busybox/1.tar" "$W/slow/slow3.tar"
cp "$EX/images/busybox/1.tar" "$W/slow/slow4.tar"
$CLIENTS slowserve "$W/slow" "$W/port" 350000 &
SLOW_PID=$!
wait_for test -s "$W/port" || fail "slow server did not start"
SLOW="http://127.0.0.1:$(cat "$W/port")"
MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start_daemon --no-pool-setup --metrics-listen "127.0.0.1:$MPORT"
# A client that sends half a request and stalls: the connection timeout must drop it (checked
# in section 4, once the timeout has passed), while everything else goes on.
$CLIENTS half "$SOCK" 40 "$W/half.txt" &
HALF_PID=$!

# ---- 1. endpoints -------------------------------------------------------------------------
assert_eq "$(stat -c %a "$SOCK")" 600 "socket mode"
assert_eq "$(api GET /v1/version)" 200 "version"
assert_eq "$(j .pid)" "$DPID" "daemon pid"
assert_eq "$(j .pool_ready)" false "pool ready (no pool on purpose)"
assert_eq "$(api GET /v1/images)" 200 "images"
assert_eq "$(j '.images | length')" 0 "no images yet"
assert_eq "$(api GET /v1/activations)" 200 "activations"
assert_eq "$(j '.activations | length')" 0 "no activations yet"
assert_eq "$(api GET '/v1/activations?all=1')" 200 "all activations"
assert_eq "$(api GET /v1/runs)" 200 "runs"
assert_eq "$(api GET '/v1/runs?all=1&limit=5')" 200 "all runs"
assert_eq "$(api GET /v1/machines)" 200 "machines"
assert_eq "$(j '[.machines[].type] | sort | join(",")')" "activate,fetch,process,unpack" "machines"
assert_eq "$(j '.machines[] | select(.type=="unpack") | .transitions | join(" ")')" \
    "check-unpacked create-device apply-layer verify commit" "unpack transitions"
assert_eq "$(api GET /v1/queues)" 200 "queues"
assert_eq "$(j '[.queues[].queue] | join(",")')" "fetch,unpack" "queues"
cores=$(nproc)
assert_eq "$(j '.queues[] | select(.queue=="unpack") | .max')" "$((cores < 4 ? cores : 4))" \
    "unpack queue maximum from the core count"
assert_eq "$(j '.queues[] | select(.queue=="unpack") | .pinned')" false "unpack sized to the load"
assert_eq "$(api GET /v1/health)" 200 "health"
assert_eq "$(j '[.checks[].name] | join(",")')" "dstate,kmsg,memory,io,pool" "health checks"
assert_eq "$(j .healthy)" false "unhealthy without a pool"
assert_eq "$(j '.checks[] | select(.name=="pool") | .level')" fail "pool check"
st=$(api GET /v1/pool)
[ "$st" = 503 ] || [ "$st" = 404 ] || fail "pool without a pool: status $st"
assert_eq "$(j .code)" "$st" "pool error code"
assert_eq "$(api GET '/v1/logs?limit=5')" 200 "logs"
assert_contains "$(j '.lines[].line' | tr '\n' ' ')" "daemon ready" "recent log lines"
NEXT=$(j .next)
[ "$NEXT" -gt 0 ] || fail "log line numbers"
curl -sf --unix-socket "$SOCK" http://x/metrics >"$W/m0.txt" || fail "metrics"
$PROM "$W/m0.txt" >/dev/null || fail "metrics do not parse"
pass "every endpoint answers; socket mode 0600; $(python3 "$HERE/promparse.py" "$W/m0.txt")"

# ---- 2. bad requests ------------------------------------------------------------------------
expect_error POST /v1/process-image '{"ref": "dir:/x",' 400 invalid "malformed JSON"
expect_error POST /v1/process-image '[1,2]' 400 invalid "must be a JSON object"
expect_error POST /v1/process-image '' 400 invalid "needs a JSON object body"
expect_error POST /v1/process-image '{"name": "a"}' 400 invalid 'missing field "ref"'
expect_error POST /v1/process-image '{"ref": "x", "colour": 1}' 400 invalid 'unknown field "colour"'
expect_error POST /v1/process-image '{"ref": 5}' 400 invalid 'field "ref" must be a non-empty string'
expect_error POST /v1/process-image '{"ref": "dir:/x", "name": "bad name!"}' 400 invalid \
    "invalid activation name 'bad name!'"
expect_error POST /v1/process-image '{"ref": "dir:/x", "device_size": "1K"}' 400 invalid "device_size"
expect_error POST /v1/process-image '{"ref": "images/x/"}' 400 invalid "no default source is set"
expect_error POST '/v1/process-image?wait=abc' '{"ref": "dir:/x"}' 400 invalid "wait must be seconds"
expect_error POST /v1/activations '{"image": "nosuch:1"}' 404 not_found "no image 'nosuch:1'"
expect_error POST /v1/activations '{}' 400 invalid 'missing field "image"'
expect_error GET /v1/activations/nope '' 404 not_found "no activation 'nope'"
expect_error DELETE /v1/activations/nope '' 404 not_found "no activation 'nope'"
expect_error POST /v1/activations/nope/deactivate '' 404 not_found "no activation 'nope'"
expect_error DELETE '/v1/activations/a%20b' '' 400 invalid "invalid activation name 'a b'"
expect_error POST '/v1/activations/a%2Fb/deactivate' '' 400 invalid "invalid activation name 'a/b'"
expect_error DELETE /v1/images/nosuch:1 '' 404 not_found "no image 'nosuch:1'"
expect_error GET /v1/images/nosuch:1 '' 404 not_found "no image 'nosuch:1'"
expect_error GET /v1/runs/not-a-version '' 400 invalid "is not a run version"
expect_error GET '/v1/images?limit=0' '' 400 invalid "limit must be 1..10000"
expect_error GET '/v1/images?after=dir:/nope' '' 404 not_found "after=dir:/nope: no such ref"
expect_error GET '/v1/runs?all=1&after=xyz' '' 400 invalid "after=a run version"
expect_error GET /v1/runs/01M8B4VSDE9A4YVTS5RV4DSWE0 '' 404 not_found "no run 01M8B4VSDE9A4YVTS5RV4DSWE0"
expect_error GET '/v1/runs?limit=-1' '' 400 invalid "limit"
expect_error GET '/v1/runs?type=a%20b' '' 400 invalid "type"
expect_error GET '/v1/logs?since=x' '' 400 invalid "since"
expect_error DELETE /v1/runs '' 405 method "DELETE is not allowed on /v1/runs (allowed: GET)"
expect_error PUT /v1/process-image '{}' 405 method "allowed: POST"
expect_error POST /v1/version '' 405 method "allowed: GET"
expect_error GET /v1/nothing-here '' 404 not_found "no such endpoint: GET /v1/nothing-here"
expect_error GET /v2/runs '' 404 not_found "no such endpoint"
ALLOW=$(curl -s -D - -o /dev/null --unix-socket "$SOCK" -X DELETE http://x/v1/runs | tr -d '\r' |
    awk -F': ' 'tolower($1)=="allow"{print $2}')
assert_eq "$ALLOW" "GET" "Allow header of a 405"
python3 -c 'print("{\"ref\": \"" + "x" * 70000 + "\"}")' >"$W/big.json"
st=$(curl -s --unix-socket "$SOCK" -o "$W/out.json" -w '%{http_code}' -X POST \
    --data-binary @"$W/big.json" http://x/v1/process-image)
assert_eq "$st" 413 "body too large"
assert_eq "$(j .reason)" too_large "body too large reason"
pass "bad requests get 4xx JSON errors with a reason and a message"

# ---- 3. process-image, runs, long polls -------------------------------------------------------
st=$(api POST '/v1/process-image?wait=60' "{\"ref\": \"dir:$EX/images/busybox/\"}")
assert_eq "$(j .finished)" true "process-image ?wait finished"
assert_eq "$(j .image)" "busybox:3" "image name"
assert_eq "$(j '.layers | length')" 3 "layers"
assert_eq "$(j '[.layers[].digest | startswith("sha256:")] | all')" true "layer digests"
assert_eq "$(j .outcome)" abort "outcome without a pool"
assert_eq "$st" 503 "a run refused by the host (no device-mapper) answers 503"
assert_eq "$(j .reason)" unhealthy "the run's stored error kind is the reason"
assert_contains "$(j .error)" "unpack failed" "the run's error"
RUN=$(j .run)
pass "process-image ?wait=60: finished, outcome abort (no pool), HTTP $st with the run's error"

assert_eq "$(api GET "/v1/runs/$RUN")" 200 "run"
assert_eq "$(j .run.type)/$(j .run.action)" "process/process-image" "run machine"
assert_eq "$(j .run.status)" finished "run status"
assert_eq "$(j '[.events[].type] | first')" start "first event"
assert_eq "$(j '[.events[].type] | last')" finish "last event"
assert_eq "$(j .run.request.location)" "dir:$EX/images/busybox/" "run request"
assert_eq "$(api GET "/v1/runs?all=1&type=fetch")" 200 "fetch runs"
assert_eq "$(j '.runs | length')" 3 "fetch runs"
assert_eq "$(j '[.runs[].outcome] | unique | join(",")')" ok "fetch outcomes"
t0=$(date +%s%N)
assert_eq "$(api GET "/v1/runs/$RUN/wait?timeout=30")" 200 "wait on a finished run"
assert_eq "$(j .finished)" true "finished run"
[ $((($(date +%s%N) - t0) / 1000000)) -lt 2000 ] || fail "wait on a finished run is not immediate"
assert_eq "$(api GET /v1/images)" 200 "images"
assert_eq "$(j '.images[0].name')/$(j '.images[0].state')" "busybox:3/failed" "image row"
assert_eq "$(j .next)" null "one page of images"
# pages of runs, newest first: the next page starts after the last one shown
assert_eq "$(api GET "/v1/runs?all=1&limit=2")" 200 "a page of runs"
p1=$(j '[.runs[].version] | join(",")')
nx=$(j .next)
assert_eq "$nx" "${p1##*,}" "next is the last run shown"
assert_eq "$(api GET "/v1/runs?all=1&limit=2&after=$nx")" 200 "the next page"
p2=$(j '.runs[0].version')
[ -n "$p2" ] && [ "$p2" \< "$nx" ] || fail "the next page does not continue after $nx: $p2"
out=$("$BIN" runs --all --limit 2 2>&1 >/dev/null)
assert_contains "$out" "more: thinimg runs --all --limit 2 --after " "runs page hint"
set +e
"$BIN" list-images --limit 1 --after dir:/nope >/dev/null 2>"$W/le.txt"
rc=$?
set -e
assert_eq "$rc" 4 "list-images --after an unknown ref"
assert_contains "$(cat "$W/le.txt")" "no image with that ref" "list-images --after message"
assert_eq "$(api GET /v1/images/busybox:3)" 200 "one image"
assert_eq "$(j '.layers | length')" 3 "one image's layers"

# a slow run: a long poll that times out, then one that sees it finish
assert_eq "$(api POST /v1/process-image "{\"ref\": \"$SLOW/slow.tar\", \"name\": \"slow\"}")" 202 "202"
SLOWRUN=$(j .run)
t0=$(date +%s%N)
assert_eq "$(api GET "/v1/runs/$SLOWRUN/wait?timeout=1")" 200 "long poll"
ms=$((($(date +%s%N) - t0) / 1000000))
assert_eq "$(j .finished)" false "unfinished after 1 s"
[ "$ms" -ge 900 ] && [ "$ms" -lt 5000 ] || fail "a 1 s long poll took ${ms} ms"
pass "long poll on a running run times out after ${ms} ms with finished=false"

# ---- 4. slow clients ----------------------------------------------------------------------
for i in $(seq 1 20); do $CLIENTS half "$SOCK" 3 /dev/null & done
sleep 0.5
t0=$(date +%s%N)
assert_eq "$(api GET /v1/version)" 200 "a request while 21 clients stall"
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -lt 1000 ] || fail "a request next to stalled clients took ${ms} ms"
pass "21 clients stalled mid-request; another request was answered in ${ms} ms"

assert_eq "$(api POST /v1/process-image "{\"ref\": \"$SLOW/slow3.tar\"}")" 202 "slow run 3"
SLOWRUN3=$(j .run)
$CLIENTS hangup "$SOCK" "/v1/runs/$SLOWRUN3/wait?timeout=120" 1.5 &
HANG=$!
parked() {
    curl -s --unix-socket "$SOCK" http://x/metrics >"$W/mp.txt"
    [ "$($PROM "$W/mp.txt" --get thinimg_api_waiting_requests)" = "$1" ]
}
wait_for parked 1 || fail "the long poll was not parked"
t0=$(date +%s%N)
assert_eq "$(api GET /v1/images)" 200 "a request next to a parked long poll"
wait $HANG
t1=$(date +%s%N)
wait_for parked 0 || fail "a hung-up long poll stayed parked"
ms=$((($(date +%s%N) - t1) / 1000000))
pass "a client that hung up mid-long-poll was dropped ${ms} ms after it closed (timeout was 120 s)"

# ---- 5. the CLI forwards to the daemon ---------------------------------------------------
set +e
$T process-image "dir:$EX/images/busybox-extra/" >"$W/cli.out" 2>"$W/cli.err"
rc=$?
set -e
assert_eq "$rc" 3 "process-image through the daemon (no device-mapper: unhealthy host): exit code"
assert_contains "$(cat "$W/cli.err")" "thinimg: process-image: unpack failed" "CLI message"
assert_contains "$(cat "$W/cli.err")" "(details: thinimg runs show " "CLI details line"
set +e
$T process-image --json "dir:$EX/images/busybox-extra/" >"$W/cli.json" 2>/dev/null
set -e
assert_eq "$(jq -r .image "$W/cli.json")" "busybox-extra:3" "CLI --json through the daemon"
assert_eq "$(jq -r '.layers | length' "$W/cli.json")" 3 "CLI --json layers"
assert_eq "$(jq -r .outcome "$W/cli.json")" abort "CLI --json outcome"
check_cli() { # EXPECTED-RC MESSAGE CMD...
    local want=$1 msg=$2
    shift 2
    set +e
    $T "$@" >/dev/null 2>"$W/e.txt"
    local rc=$?
    set -e
    assert_eq "$rc" "$want" "thinimg $* exit code"
    assert_contains "$(cat "$W/e.txt")" "$msg" "thinimg $* message"
}
check_cli 4 "thinimg: deactivate: no activation 'nope' (see list-snapshots)" deactivate nope
check_cli 2 "thinimg: deactivate: invalid activation name 'a/b'" deactivate a/b
check_cli 4 "thinimg: remove: no activation or image named 'nope'" remove nope
check_cli 4 "thinimg: activate: no image 'nope'" activate nope
t0=$(date +%s%N)
check_cli 4 "thinimg: process-image: " process-image "dir:$W/nothing-here/"
ms=$((($(date +%s%N) - t0) / 1000000))
# Not found is deterministic: the run ends on its first attempt (no backoff); generous bound
# for a sanitizer build on a loaded machine, the figure is printed.
[ "$ms" -lt 5000 ] || fail "a ref that does not exist took ${ms} ms to fail (retried?)"
echo "deterministic failure (not found) through the daemon: ${ms} ms"
assert_contains "$($T runs --all --json | jq -r '[.[] | select(.resource_id == "dir:'"$W"'/nothing-here/")][0].error_kind')" \
    not_found "the run's stored error kind"
# Ctrl-C while waiting for the daemon: exit 130, the run goes on there
$T process-image "$SLOW/slow4.tar" >"$W/int.out" 2>"$W/int.err" &
CLI=$!
wait_for grep -q 'slow4.tar' "$DLOG" || fail "the CLI's request did not reach the daemon"
sleep 0.5
kill -INT $CLI
set +e
wait $CLI
rc=$?
set -e
assert_eq "$rc" 130 "Ctrl-C while waiting for the daemon"
assert_contains "$(cat "$W/int.err")" "interrupted; run " "Ctrl-C message"
assert_contains "$(cat "$W/int.err")" "goes on in the daemon" "Ctrl-C message"
INTRUN=$(sed -n 's/.*interrupted; run \([0-9A-Z]*\) goes on.*/\1/p' "$W/int.err")
assert_eq "$(api GET "/v1/runs/$INTRUN/wait?timeout=60")" 200 "the run after Ctrl-C"
assert_eq "$(j .finished)" true "the run went on in the daemon and finished"
pass "Ctrl-C while the CLI waits for the daemon: exit 130, the run goes on and finishes there"
# removing an image through the daemon
assert_eq "$($T remove --image busybox-extra:3)" "image busybox-extra:3 removed (1 layer device deleted, 2 shared or kept)" "remove --image"
assert_eq "$(api GET /v1/images/busybox-extra:3)" 404 "image gone"
pass "the CLI sends process-image, activate, deactivate and remove to the daemon (exit codes 3, 4, 2)"

# ---- 6. metrics ----------------------------------------------------------------------------
finished() {
    curl -s --unix-socket "$SOCK" "http://x/v1/runs/$1" | jq -e '.run.status == "finished"' >/dev/null
}
wait_for finished "$SLOWRUN" && wait_for finished "$SLOWRUN3" || fail "the slow runs did not finish"
curl -sf --unix-socket "$SOCK" http://x/metrics >"$W/m1.txt"
$PROM "$W/m1.txt" >/dev/null || fail "metrics do not parse after work"
get() { $PROM "$1" --get "${@:2}" || echo 0; }
b0=$(get "$W/m0.txt" thinimg_fetch_bytes_total)
b1=$(get "$W/m1.txt" thinimg_fetch_bytes_total)
r1=$(get "$W/m1.txt" thinimg_fsm_runs_started_total machine=process/process-image)
f1=$(get "$W/m1.txt" thinimg_fsm_runs_finished_total machine=fetch/fetch-blob outcome=ok)
[ "$b1" -gt "$b0" ] || fail "fetched bytes did not grow ($b0 -> $b1)"
[ "$b1" -ge $((2 * $(stat -c %s "$EX/images/busybox/1.tar"))) ] || fail "fetched bytes $b1 too low"
[ "$r1" -ge 4 ] || fail "process runs started: $r1"
[ "$f1" -ge 7 ] || fail "fetch runs finished ok: $f1"
assert_eq "$(get "$W/m1.txt" thinimg_images state=failed)" 4 "images failed gauge (busybox, slow, slow3, slow4)"
assert_eq "$(get "$W/m1.txt" thinimg_health_check check=dstate)" 0 "health check gauge (dstate ok)"
# Without a device-mapper driver the pool check is skipped, and a skipped check has no series.
! grep -q '^thinimg_health_check{check="pool"}' "$W/m1.txt" || fail "skipped pool check exported"
assert_eq "$(get "$W/m1.txt" thinimg_pool_up)" 0 "pool_up"
n=$(grep -c '^thinimg_fsm_transition_duration_seconds_bucket{machine="fetch/fetch-blob",state="download",outcome="ok",le=' "$W/m1.txt")
[ "$n" -ge 10 ] || fail "transition duration histogram"
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$W/m2.txt" || fail "metrics over TCP"
$PROM "$W/m2.txt" >/dev/null || fail "TCP metrics do not parse"
assert_eq "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/v1/version")" 404 "API over TCP"
pass "metrics parse and grow: fetched bytes $b0 -> $b1, process runs started $r1; also on 127.0.0.1:$MPORT"

# the stalled half request (started with the daemon) was dropped by the connection timeout
wait $HALF_PID || true
HALF_PID=
closed=$(cat "$W/half.txt")
[ "$closed" != never ] || fail "a stalled half request was never dropped"
pass "a client that sent half a request and stalled was dropped after ${closed} s (connection timeout)"

# ---- 7. kill -9 mid-download, restart resumes ---------------------------------------------------
assert_eq "$(api POST /v1/process-image "{\"ref\": \"$SLOW/slow2.tar\"}")" 202 "slow run 2"
RUN2=$(j .run)
downloading() {
    api GET /v1/runs >/dev/null
    [ "$(j '[.runs[] | select(.type=="fetch" and .phase=="download" and .status=="running")] | length')" -ge 1 ]
}
wait_for downloading || fail "no download in progress"
sleep 1 # well inside the ~6 s download
kill -KILL "$DPID"
wait "$DPID" 2>/dev/null || true
DPID=
[ -S "$SOCK" ] || fail "a killed daemon leaves its socket file (expected: stale)"
start_daemon --no-pool-setup
wait_for finished "$RUN2" || fail "the interrupted run did not finish after the restart"
curl -sf --unix-socket "$SOCK" http://x/metrics >"$W/m3.txt"
res=$(get "$W/m3.txt" thinimg_fsm_runs_resumed_total machine=process/process-image)
assert_eq "$res" 1 "resumed process run"
api GET "/v1/runs?all=1&type=fetch&resource=$SLOW/slow2.tar" >/dev/null
assert_eq "$(j '.runs[0].outcome')" ok "the resumed download"
pass "kill -9 during a download: the restarted daemon replaced the stale socket and finished the run"

# ---- 8. signals and a second daemon ----------------------------------------------------------
kill -HUP "$DPID"
wait_for grep -q 'SIGHUP: nothing is reloaded' "$DLOG" || fail "no SIGHUP log line"
assert_eq "$(api GET /v1/version)" 200 "alive after SIGHUP"
# SIGUSR2 is the pool watcher's own wake-up, blocked in every other thread: one sent from
# outside neither kills the daemon nor interrupts its work.
for _ in 1 2 3 4 5; do kill -USR2 "$DPID"; done
sleep 0.5
kill -0 "$DPID" 2>/dev/null || fail "SIGUSR2 from outside killed the daemon"
assert_eq "$(api GET /v1/version)" 200 "alive after SIGUSR2"
set +e
"$BIN" daemon --no-pool-setup >"$W/second.txt" 2>&1
rc=$?
set -e
assert_eq "$rc" 5 "a second daemon on the same state directory"
assert_contains "$(cat "$W/second.txt")" "locked by pid $DPID (daemon" "second daemon message"
set +e
THINIMG_STATE_DIR=$W/other "$BIN" daemon --no-pool-setup --socket "$SOCK" >"$W/third.txt" 2>&1
rc=$?
set -e
assert_eq "$rc" 1 "a daemon on a socket another one serves"
assert_contains "$(cat "$W/third.txt")" "another process serves $SOCK" "socket in use message"
$CLIENTS hangup "$SOCK" "/v1/runs/$RUN/wait?timeout=60" 30 &
sleep 0.3
stop_daemon
ms=$STOP_MS
[ "$ms" -lt 5000 ] || fail "SIGTERM took ${ms} ms"
[ ! -e "$SOCK" ] || fail "socket left after SIGTERM"
grep -q 'daemon stopped' "$DLOG" || fail "no 'daemon stopped' line"
set +e
"$BIN" daemon --no-pool-setup --unpack-queue-max 0 >"$W/badq.txt" 2>&1
rc=$?
set -e
assert_eq "$rc" 2 "a queue maximum of 0"
assert_contains "$(cat "$W/badq.txt")" "--unpack-queue-max needs 1..16, not '0'" "queue option message"
start_daemon --no-pool-setup --unpack-queue 1 --fetch-queue-max 3
assert_eq "$(api GET /v1/queues)" 200 "queues"
assert_eq "$(j '.queues[] | select(.queue=="unpack") | "\(.limit) \(.pinned)"')" "1 true" \
    "--unpack-queue pins"
assert_eq "$(j '.queues[] | select(.queue=="fetch") | .max')" 3 "--fetch-queue-max"
curl -sf --unix-socket "$SOCK" http://x/metrics >"$W/m4.txt"
assert_eq "$(get "$W/m4.txt" thinimg_queue_limit_pinned queue=unpack)" 1 "pinned metric"
assert_eq "$(get "$W/m4.txt" thinimg_queue_limit_max queue=fetch)" 3 "maximum metric"
stop_daemon
ms2=$STOP_MS
pass "SIGHUP reloads nothing; SIGUSR2 harmless; second daemon refused (exit 5); SIGTERM: ${ms} ms with a parked long poll, ${ms2} ms idle"

echo "daemon api: all passed"
