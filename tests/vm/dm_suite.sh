#!/usr/bin/env bash
# dm_suite.sh BUILD_DIR: runs inside the VM (see tests.cmake): every dm-labelled test, in one
# boot. A dm test that skips itself (exit 77: no device-mapper) is a failure here, since
# inside the VM device-mapper must be there.
set -uo pipefail
BUILD="$1"
[ -n "${THINIMG_VM:-}" ] || { echo "dm_suite.sh runs inside tests/vm/run" >&2; exit 2; }
OUT="$THINIMG_VM_TMP/dm_suite.log"
START=$SECONDS
ctest --test-dir "$BUILD" -L '^dm$' --output-on-failure --no-tests=error 2>&1 | tee "$OUT"
RC=${PIPESTATUS[0]}
echo "dm suite: ${RC} (ctest exit), $((SECONDS - START)) s inside the VM"
if grep -q 'Skipped' "$OUT"; then
    echo "dm suite: a dm test skipped inside the VM (device-mapper missing?)" >&2
    exit 1
fi
exit "$RC"
