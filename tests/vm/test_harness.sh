#!/usr/bin/env bash
# test_harness.sh: tests/vm/run itself (label vm, three short VM boots): exit status, stdout and
# stderr, working directory and environment pass through; the guest has /proc, a tmpfs for
# loop files, DM_DISABLE_UDEV and device-mapper; --timeout kills the VM (exit 124) and no
# qemu is left behind, also when the caller is killed with SIGKILL.
set -uo pipefail
RUN="$(cd "$(dirname "$0")" && pwd)/run"
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }

cd "$W"
export THINIMG_HARNESS_PROBE="a b'c"
"$RUN" --timeout 300 -- bash -c '
    echo "cwd=$PWD"
    echo "probe=$THINIMG_HARNESS_PROBE"
    echo "udev=$DM_DISABLE_UDEV vm=$THINIMG_VM"
    test -r /proc/self/maps && echo proc=yes
    stat -f -c "tmpfs=%T" "$THINIMG_VM_TMP"
    dmsetup targets | grep -q thin-pool && echo thin-pool=yes
    echo to-stderr >&2
    echo written-in-guest > guest.txt
    exit 7' >"$W/out" 2>"$W/err"
RC=$?
[ "$RC" = 7 ] && ok "exit status passes through" || fail "exit status $RC, want 7"
grep -qx "cwd=$W" "$W/out" && ok "working directory" || fail "cwd: $(cat "$W/out")"
grep -qx "probe=a b'c" "$W/out" && ok "environment (with quoting)" || fail "env: $(cat "$W/out")"
grep -qx "udev=1 vm=1" "$W/out" && ok "DM_DISABLE_UDEV and THINIMG_VM set" || fail "vm env: $(cat "$W/out")"
grep -qx "proc=yes" "$W/out" && ok "/proc mounted" || fail "/proc missing"
grep -qx "tmpfs=tmpfs" "$W/out" && ok "THINIMG_VM_TMP is a tmpfs" || fail "tmp: $(cat "$W/out")"
grep -qx "thin-pool=yes" "$W/out" && ok "dm-thin-pool loaded" || fail "no thin-pool target"
grep -q "^to-stderr$" "$W/err" && ok "stderr passes through" || fail "stderr: $(cat "$W/err")"
[ "$(cat "$W/guest.txt" 2>/dev/null)" = written-in-guest ] && ok "guest writes reach the host" || fail "guest file missing"

START=$SECONDS
mkdir -p "$W/tmp"
# A TMPDIR of its own makes this run's qemu recognisable (its command line names the run dir).
TMPDIR="$W/tmp" "$RUN" --timeout 25 -- sleep 600 >/dev/null 2>"$W/err2"
RC=$?
T=$((SECONDS - START))
[ "$RC" = 124 ] && ok "timeout exits 124" || fail "timeout exit $RC"
[ "$T" -lt 60 ] && ok "timeout took ${T}s" || fail "timeout took ${T}s"
grep -q "timeout after 25s" "$W/err2" && ok "timeout is reported" || fail "no timeout message"
sleep 1
if pgrep -f "thinimg_run=$W/tmp/" >/dev/null; then
    fail "qemu left behind: $(pgrep -af "thinimg_run=$W/tmp/")"
else
    ok "no qemu left behind"
fi
[ -z "$(ls -A "$W/tmp")" ] && ok "run directory removed" || fail "left: $(ls "$W/tmp")"
# The caller killed with SIGKILL (no trap runs): qemu must die with it (PR_SET_PDEATHSIG).
mkdir -p "$W/tmp9"
TMPDIR="$W/tmp9" "$RUN" --timeout 300 -- sleep 600 >/dev/null 2>&1 &
CALLER=$!
for _ in $(seq 1 100); do
    pgrep -f "thinimg_run=$W/tmp9/" >/dev/null && break
    sleep 0.2
done
pgrep -f "thinimg_run=$W/tmp9/" >/dev/null && ok "qemu started" || fail "qemu did not start"
kill -KILL "$CALLER"
wait "$CALLER" 2>/dev/null
for _ in $(seq 1 50); do
    pgrep -f "thinimg_run=$W/tmp9/" >/dev/null || break
    sleep 0.2
done
if pgrep -f "thinimg_run=$W/tmp9/" >/dev/null; then
    fail "qemu outlived its killed caller"
    for q in $(pgrep -f "thinimg_run=$W/tmp9/"); do kill -KILL "$q"; done
else
    ok "qemu died with its killed caller"
fi

echo "harness: $FAILS failed"
[ "$FAILS" = 0 ]
