# lib.sh: helpers for the daemon tests (sourced): a daemon in a fresh state directory, requests
# over its socket with curl, JSON fields with jq.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; [ -n "${DLOG:-}" ] && [ -f "$DLOG" ] && tail -20 "$DLOG" >&2; exit 1; }
pass() { echo "ok: $*"; }
need() { command -v "$1" >/dev/null || fail "missing tool $1"; }
need jq
need curl
assert_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"; }
assert_contains() { case "$1" in *"$2"*) ;; *) fail "$3: '$2' not in: $1" ;; esac; }

BUILD=${1:-${THINIMG_BUILD_DIR:-}}
[ -n "$BUILD" ] || fail "usage: $0 BUILD_DIR"
BUILD=$(cd "$BUILD" && pwd)
BIN="$BUILD/thinimg"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -x "$BIN" ] || fail "no thinimg binary at $BIN"
EX=$BUILD/example
[ -f "$EX/images/busybox/3.tar" ] || fail "no example source in $EX (build the 'example' target)"

# A fresh work area (guest tmpfs inside the VM).
W=$(mktemp -d "${THINIMG_VM_TMP:-${TMPDIR:-/tmp}}/thinimg-daemon-XXXXXX")
export THINIMG_STATE_DIR=$W/state
SOCK=$THINIMG_STATE_DIR/thinimg.sock
DLOG=$W/daemon.log
DPID=

# start_daemon [ARGS...]: start and wait until the socket answers.
start_daemon() {
    "$BIN" daemon "$@" >>"$DLOG" 2>&1 &
    DPID=$!
    for _ in $(seq 1 200); do
        if curl -sf --unix-socket "$SOCK" http://x/v1/version >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$DPID" 2>/dev/null || fail "the daemon exited at start"
        sleep 0.05
    done
    fail "the daemon did not answer on $SOCK"
}

# stop_daemon: SIGTERM and wait; sets STOP_MS to the milliseconds it took (not in a $(...):
# only this shell can wait for its child).
STOP_MS=
stop_daemon() {
    [ -n "$DPID" ] || return 0
    local t0 t1 rc=0
    t0=$(date +%s%N)
    kill -TERM "$DPID"
    wait "$DPID" || rc=$?
    t1=$(date +%s%N)
    DPID=
    [ "$rc" = 0 ] || fail "the daemon exited with status $rc after SIGTERM"
    STOP_MS=$(((t1 - t0) / 1000000))
}

cleanup_daemon() {
    if [ -n "$DPID" ]; then
        kill -KILL "$DPID" 2>/dev/null
        wait "$DPID" 2>/dev/null || true
    fi
}

# api METHOD PATH [BODY]: body to $W/out.json, HTTP status on stdout.
api() {
    local data=()
    [ $# -ge 3 ] && data=(--data-binary "$3")
    curl -s --max-time 60 --unix-socket "$SOCK" -o "$W/out.json" -w '%{http_code}' \
        -X "$1" -H 'Content-Type: application/json' "${data[@]}" "http://localhost$2"
}
j() { jq -r "$1" "$W/out.json"; }

# expect_error METHOD PATH BODY STATUS REASON MESSAGE-PART
expect_error() {
    local st
    st=$(api "$1" "$2" "$3")
    assert_eq "$st" "$4" "$1 $2 status"
    assert_eq "$(j .code)" "$4" "$1 $2 code"
    assert_eq "$(j .reason)" "$5" "$1 $2 reason"
    assert_contains "$(j .error)" "$6" "$1 $2 message"
}

# result_of FILE CMD...: what the command itself answered, into FILE: its stdout, the lines of
# its stderr that it printed itself ("thinimg: <command>: <error>"), and its exit status. Log
# lines ("time=... level=... msg=...") are left out: they tell what else happened in that
# process (a stale lock of a killed process broken, a run resumed) and differ between two
# runs that fail the same way. Never fails itself (set -e stays as it was).
result_of() {
    local f=$1 rc=0
    shift
    "$@" >"$f.stdout" 2>"$f.stderr" || rc=$?
    { cat "$f.stdout"; grep '^thinimg: ' "$f.stderr" || true; echo "exit $rc"; } >"$f"
    rm -f "$f.stdout" "$f.stderr"
}

# wait_for CMD...: until CMD succeeds, at most 20 s.
wait_for() {
    for _ in $(seq 1 400); do
        if "$@"; then return 0; fi
        sleep 0.05
    done
    return 1
}
