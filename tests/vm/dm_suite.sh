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
ctest --test-dir "$CT" -L '^dm$' -LE '^dm-faults$' --output-on-failure --no-tests=ignore 2>&1 |
    tee -a "$OUT"
RC1=${PIPESTATUS[0]}
ctest --test-dir "$CT" -L '^dm-faults$' --output-on-failure --no-tests=ignore 2>&1 |
    tee -a "$OUT"
RC2=${PIPESTATUS[0]}
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
