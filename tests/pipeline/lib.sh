# lib.sh: helpers for the pipeline tests (sourced). Each test runs as root inside the VM
# (tests/vm/run) with real device-mapper, or on a host whose kernel has dm-thin.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }
need() { command -v "$1" >/dev/null || fail "missing tool $1"; }
need jq

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"; }

# JSON field: jget FILE FILTER (jq; a small binary starts fast under emulation, python does not).
jget() { jq -r "$2" "$1"; }

# Under software emulation (and ASan) a health check can take seconds; the default timeout is
# for real hosts.
export THINIMG_HEALTH_TIMEOUT_MS=${THINIMG_HEALTH_TIMEOUT_MS:-30000}

# The build directory under test and the binary.
BUILD=${1:-${THINIMG_BUILD_DIR:-}}
[ -n "$BUILD" ] || fail "usage: $0 BUILD_DIR"
BIN="$BUILD/thinimg"
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ -x "$BIN" ] || fail "no thinimg binary at $BIN"

# A fresh work area: on the guest tmpfs inside the VM, else under TMPDIR.
work_area() {
    local base=${THINIMG_VM_TMP:-${TMPDIR:-/tmp}}
    mktemp -d "$base/thinimg-$1-XXXXXX"
}

# Remove every dm device of pool $1, the pool, and the loop devices of its files
# (STATE/pool/$1-data.img, -meta.img): a loop device keeps its file's blocks after the test
# deletes the file, and the VM suite's tests share one guest tmpfs (test teardown only: the
# devices are ours). With --keep-loops as $2 the loop devices stay, as after a crash.
teardown_pool() {
    local pool=$1 l
    for d in $(dmsetup ls 2>/dev/null | awk '{print $1}' | grep "^$pool-" || true); do
        dmsetup remove "$d" >/dev/null 2>&1 || true
    done
    dmsetup remove "$pool" >/dev/null 2>&1 || true
    [ "${2:-}" != --keep-loops ] || return 0
    for l in $(losetup -nO NAME,BACK-FILE 2>/dev/null | awk -v p="/$pool-" 'index($0, p) { print $1 }'); do
        losetup -d "$l" 2>/dev/null || true
    done
}

# fsck_thin POOL ID SECTORS: `e2fsck -fn` (check everything, change nothing) of thin device ID
# of POOL, a committed layer (inactive): activated read-only under a test name for the check
# and removed after. Fails the test when the file system is not clean.
fsck_thin() {
    local pool=$1 id=$2 sectors=$3 name=$1-test-fsck$2 out rc=0
    dmsetup create --readonly "$name" --table "0 $sectors thin /dev/mapper/$pool $id"
    out=$(e2fsck -fn "/dev/mapper/$name" 2>&1) || rc=$?
    dmsetup remove "$name"
    [ "$rc" = 0 ] || fail "e2fsck -fn of thin device $id of $pool (exit $rc): $out"
}

# fsck_dev DEV: `e2fsck -fn` of an active device that is not mounted.
fsck_dev() {
    local out rc=0
    out=$(e2fsck -fn "$1" 2>&1) || rc=$?
    [ "$rc" = 0 ] || fail "e2fsck -fn of $1 (exit $rc): $out"
}
