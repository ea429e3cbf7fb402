#!/usr/bin/env bash
# dm_suite.sh BUILD_DIR: runs inside the VM (see tests.cmake): every dm-labelled test, in one
# boot. Tests that also carry the label dm-faults break pools on purpose (full data, full
# metadata, needs_check) and leave thin-pool errors in the kernel log, which the health checks
# of any later test would see; so the other dm tests run first, the dm-faults ones last.
# A dm test that skips itself (exit 77: no device-mapper) is a failure here, since inside the
# VM device-mapper must be there.
#
# The inner ctest keeps its own records (Testing/Temporary: LastTest.log, cost data) on the
# guest tmpfs, in a directory whose CTestTestfile.cmake only points at the build directory:
# the build directory is the host's, shared over 9p with the guest's cache=loose, and the
# host's ctest (the one running this test, and any other) writes the same files there. Two
# writers of one LastTest.log.tmp, and a guest whose cached view of Testing/Temporary went
# stale, failed a whole suite that had passed ("Cannot create log file: LastTest.log").
set -uo pipefail
BUILD="$1"
[ -n "${THINIMG_VM:-}" ] || { echo "dm_suite.sh runs inside tests/vm/run" >&2; exit 2; }
OUT="$THINIMG_VM_TMP/dm_suite.log"
START=$SECONDS
: >"$OUT"
CT="$THINIMG_VM_TMP/ctest"
mkdir -p "$CT"
printf 'subdirs("%s")\n' "$(cd "$BUILD" && pwd)" >"$CT/CTestTestfile.cmake"
# One test at a time, so that after each the guest tmpfs's use is printed: every test must
# leave it as it found it (a test that leaks loop files or state dirs fills it for the ones
# after it, which then fail with ENOSPC far from the cause).
tmp_used() { df -m --output=used "$THINIMG_VM_TMP" | tail -1 | tr -d ' '; }
# Loop devices left on deleted files under the guest tmpfs once a test ended hold their blocks
# for nothing: detached, and named, so the leak shows and does not fail the tests after it.
sweep_loops() { # NAME
    local l
    for l in $(losetup -nO NAME,BACK-FILE 2>/dev/null |
        awk -v t="$THINIMG_VM_TMP/" 'index($2, t) == 1 && / \(deleted\)$/ { print $1 }'); do
        echo "dm suite: $1 left loop device $l on a deleted file: detached" | tee -a "$OUT"
        losetup -d "$l" 2>/dev/null || true
    done
}
run_label() { # LABEL_ARGS...: runs the tests they select one by one; status 0 when all pass
    local names rc=0 name before after
    names=$(ctest --test-dir "$CT" "$@" -N | sed -n 's/^ *Test *#[0-9]*: //p')
    [ -n "$names" ] || { echo "No tests were found" >>"$OUT"; return 0; }
    for name in $names; do
        before=$(tmp_used)
        ctest --test-dir "$CT" -R "^${name}\$" --output-on-failure 2>&1 | tee -a "$OUT"
        [ "${PIPESTATUS[0]}" = 0 ] || rc=1
        after=$(tmp_used)
        sweep_loops "$name"
        echo "dm suite: ${name}: guest tmpfs ${before} -> ${after} MiB used ($(tmp_used) after the sweep)" | tee -a "$OUT"
    done
    return $rc
}
run_label -L '^dm$' -LE '^dm-faults$'
RC1=$?
run_label -L '^dm-faults$'
RC2=$?
echo "dm suite: ctest exits ${RC1} (dm) and ${RC2} (dm-faults), $((SECONDS - START)) s inside the VM"
if [ "$(grep -c 'No tests were found' "$OUT")" = 2 ]; then
    echo "dm suite: no dm tests at all" >&2
    exit 1
fi
if grep -q 'Skipped' "$OUT"; then
    echo "dm suite: a dm test skipped inside the VM (device-mapper missing?)" >&2
    exit 1
fi
[ "$RC1" = 0 ] && [ "$RC2" = 0 ]
