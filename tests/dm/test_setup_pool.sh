#!/usr/bin/env bash
# test_setup_pool.sh: `thinimg setup-pool` and `thinimg status` against real device-mapper
# (label dm; runs inside the VM). Skips (77) without device-mapper.
#
#   - create, then a second setup-pool is a no-op (files untouched, same table);
#   - simulated reboot (every dm device removed, loops detached, files kept): setup-pool
#     reassembles with an identical table and the data on a thin device is intact;
#     with the loops still attached it reuses them;
#   - adopt a pool made with plain dmsetup (the work-sample README's way);
#   - a pool whose metadata says needs_check, and a read-only pool: status reports them and
#     setup-pool refuses (exit 3) with a message that says what to do.
set -uo pipefail
T="${THINIMG_BIN:?THINIMG_BIN not set}"
if [ "$(id -u)" != 0 ] || ! dmsetup version >/dev/null 2>&1 || ! dmsetup targets | grep -q thin-pool; then
    echo "skipped: no device-mapper with thin-pool here (run inside tests/vm/run)"
    exit 77
fi
W="$(mktemp -d "${THINIMG_VM_TMP:-${TMPDIR:-/tmp}}/setup-pool.XXXXXX")"
P="tsp$$"
S="$W/state"
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }
# run CMD...: sets OUT, ERR, RC
run() {
    OUT="$("$@" 2>"$W/err")"
    RC=$?
    ERR="$(cat "$W/err")"
}
expect_rc() { [ "$RC" = "$1" ] && ok "$2 (exit $RC)" || fail "$2: exit $RC, want $1; stdout: $OUT; stderr: $ERR"; }
expect_in() { case "$1" in *"$2"*) ok "$3" ;; *) fail "$3: '$2' not in: $1" ;; esac; }
table_without_devs() { dmsetup table "$1" | awk '{$4=""; $5=""; print}'; }
cleanup() {
    for d in $(dmsetup ls 2>/dev/null | awk '{print $1}' | grep -E "^($P|${P}x|${P}nc|${P}ro)(-|$)" | sort -r); do
        dmsetup remove "$d" >/dev/null 2>&1
    done
    for f in "$W"/state/pool/*.img "$W"/*.img; do
        [ -e "$f" ] || continue
        for l in $(losetup -j "$f" -O NAME -n); do losetup -d "$l"; done
    done
    rm -rf "$W"
}
trap cleanup EXIT

# ---- create, then no-op ------------------------------------------------------------------
run "$T" --state-dir "$S" --pool "$P" setup-pool --data-size 96M --block-size 64K --low-water 0.2
expect_rc 0 "setup-pool creates the pool"
expect_in "$OUT" "pool $P: created" "reports created"
[ -f "$S/pool/$P-data.img" ] && [ -f "$S/pool/$P-meta.img" ] && ok "backing files exist" || fail "backing files missing"
[ "$(stat -c %s "$S/pool/$P-data.img")" = $((96 * 1024 * 1024)) ] && ok "data file is 96 MiB" || fail "data file size"
# preallocated, not sparse
[ "$(stat -c %b "$S/pool/$P-data.img")" -ge $((96 * 1024 * 2)) ] && ok "data file preallocated" || fail "data file is sparse"
TABLE1="$(dmsetup table "$P")"
expect_in "$TABLE1" "thin-pool" "pool target is thin-pool"
expect_in "$TABLE1" " 128 308 1 error_if_no_space" "block 128 sectors, low water 20% of 1536 blocks, error_if_no_space"
# Same inode = never recreated (mtime moves: the pool writes through the loop devices).
INODE1="$(stat -c '%i' "$S/pool/$P-data.img" "$S/pool/$P-meta.img")"
LOOPS1="$(losetup -a | wc -l)"
run "$T" --state-dir "$S" --pool "$P" setup-pool
expect_rc 0 "second setup-pool"
expect_in "$OUT" "pool $P: existing" "second setup-pool is a no-op"
[ "$(stat -c '%i' "$S/pool/$P-data.img" "$S/pool/$P-meta.img")" = "$INODE1" ] && ok "files untouched" || fail "files changed"
[ "$(dmsetup table "$P")" = "$TABLE1" ] && ok "table unchanged" || fail "table changed"

# ---- a thin device with data, then a simulated reboot -------------------------------------
dmsetup message "$P" 0 "create_thin 1" || fail "create_thin"
dmsetup create "$P-test-1" --table "0 65536 thin /dev/mapper/$P 1" || fail "activate thin"
head -c 8M /dev/urandom >"$W/pattern"
dd if="$W/pattern" of="/dev/mapper/$P-test-1" bs=1M oflag=direct status=none || fail "write pattern"
SUM1="$(sha256sum <"$W/pattern")"
run "$T" --state-dir "$S" --pool "$P" status --json
expect_rc 0 "status --json"
[ "$(echo "$OUT" | jq -r '.pool.mode')" = rw ] && ok "status mode rw" || fail "status mode: $OUT"
[ "$(echo "$OUT" | jq -r '.pool.data_used_blocks')" -ge 128 ] && ok "status shows 8 MiB used" || fail "data used: $OUT"
[ "$(echo "$OUT" | jq -r '.devices[] | select(.name=="'"$P"'-test-1") | .state')" = unknown ] && ok "status lists the unknown active device" || fail "device list: $OUT"

# reboot #1: loops stay attached (thinimg restarted, kernel state partly kept)
dmsetup remove "$P-test-1" && dmsetup remove "$P" || fail "remove devices"
run "$T" --state-dir "$S" --pool "$P" setup-pool
expect_rc 0 "setup-pool after the pool was removed"
expect_in "$OUT" "reassembled" "reassembled"
[ "$(losetup -a | wc -l)" = "$LOOPS1" ] && ok "reused the attached loop devices" || fail "loop devices: $(losetup -a)"
[ "$(table_without_devs "$P")" = "$(echo "$TABLE1" | awk '{$4=""; $5=""; print}')" ] && ok "identical table" || fail "table differs: $(dmsetup table "$P") vs $TABLE1"

# reboot #2: every dm device removed, loops detached, files kept
dmsetup remove "$P"
for f in "$S/pool/$P-data.img" "$S/pool/$P-meta.img"; do
    for l in $(losetup -j "$f" -O NAME -n); do losetup -d "$l"; done
done
[ -z "$(losetup -j "$S/pool/$P-data.img")" ] && ok "loops detached" || fail "loops still attached"
run "$T" --state-dir "$S" --pool "$P" setup-pool
expect_rc 0 "setup-pool after reboot"
expect_in "$OUT" "pool $P: reassembled" "reassembled after reboot"
[ "$(stat -c '%i' "$S/pool/$P-data.img" "$S/pool/$P-meta.img")" = "$INODE1" ] && ok "files not recreated" || fail "files recreated"
[ "$(table_without_devs "$P")" = "$(echo "$TABLE1" | awk '{$4=""; $5=""; print}')" ] && ok "identical table after reboot" || fail "table differs after reboot"
dmsetup create "$P-test-1" --table "0 65536 thin /dev/mapper/$P 1" || fail "reactivate thin"
SUM2="$(head -c 8M "/dev/mapper/$P-test-1" | sha256sum)"
[ "$SUM1" = "$SUM2" ] && ok "data on the thin device intact" || fail "data differs after reassembly"
dmsetup remove "$P-test-1"
run "$T" --state-dir "$S" --pool "$P" setup-pool
expect_in "$OUT" "pool $P: existing" "setup-pool after reassembly is a no-op"

# one file without the other: refused, nothing created
run "$T" --state-dir "$S" --pool "${P}x" setup-pool --data-file "$S/pool/$P-data.img" --metadata-file "$W/missing-meta.img"
expect_rc 1 "setup-pool with a missing metadata file"
expect_in "$ERR" "refusing to create a pool over existing data" "says why"
[ ! -e "$W/missing-meta.img" ] && ok "nothing created" || fail "created a metadata file"

# ---- adopt a pool made by someone else -----------------------------------------------------
fallocate -l 4M "$W/ad-meta.img"; fallocate -l 64M "$W/ad-data.img"
AM="$(losetup -f --show "$W/ad-meta.img")"; AD="$(losetup -f --show "$W/ad-data.img")"
dmsetup create "${P}x" --table "0 131072 thin-pool $AM $AD 128 32768" || fail "dmsetup create foreign pool"
run "$T" --state-dir "$S" --pool "${P}x" setup-pool
expect_rc 0 "setup-pool adopts a foreign pool"
expect_in "$OUT" "pool ${P}x: adopted" "reports adopted"
run "$T" --state-dir "$S" --pool "${P}x" status --json
[ "$(echo "$OUT" | jq -r '.pool.origin')" = adopted ] && ok "recorded as adopted" || fail "origin: $OUT"
[ "$(echo "$OUT" | jq -r '.pool.error_if_no_space')" = false ] && ok "adopted pool reports queue_if_no_space" || fail "features: $OUT"
run "$T" --state-dir "$S" --pool "${P}x" setup-pool
expect_in "$OUT" "existing" "second setup-pool on the adopted pool is a no-op"
[ "$(dmsetup table "${P}x" | awk '{print $6, $7}')" = "128 32768" ] && ok "adopted table untouched" || fail "adopted table changed"

# ---- needs_check (crafted metadata) and read-only ----------------------------------------
fallocate -l 4M "$W/nc-meta.img"; fallocate -l 32M "$W/nc-data.img"
NM="$(losetup -f --show "$W/nc-meta.img")"; ND="$(losetup -f --show "$W/nc-data.img")"
dmsetup create "${P}nc" --table "0 65536 thin-pool $NM $ND 128 16 1 error_if_no_space" || fail "create nc pool"
dmsetup message "${P}nc" 0 "create_thin 1"
dmsetup remove "${P}nc"
thin_dump "$NM" >"$W/nc.xml" && sed -i 's/flags="0"/flags="1"/' "$W/nc.xml" && thin_restore -q -i "$W/nc.xml" -o "$NM" || fail "craft needs_check metadata"
dmsetup create "${P}nc" --table "0 65536 thin-pool $NM $ND 128 16 1 error_if_no_space" || fail "load needs_check pool"
run "$T" --state-dir "$S" --pool "${P}nc" status --json
expect_rc 3 "status of a needs_check pool exits unhealthy"
[ "$(echo "$OUT" | jq -r '.pool.needs_check')" = true ] && ok "status: needs_check" || fail "needs_check: $OUT"
[ "$(echo "$OUT" | jq -r '.pool.mode')" = ro ] && ok "status: ro" || fail "mode: $OUT"
run "$T" --state-dir "$S" --pool "${P}nc" setup-pool
expect_rc 3 "setup-pool refuses a needs_check pool"
expect_in "$ERR" "needs_check" "message names needs_check"
expect_in "$ERR" "thin_check" "message says to run thin_check"
expect_in "$ERR" "docs/dm.md" "message points to the docs"
dmsetup status "${P}nc" | grep -q needs_check && ok "thinimg did not repair anything" || fail "needs_check flag gone"

TBL="$(dmsetup table "$P")"
dmsetup reload "$P" --table "$(echo "$TBL" | sed 's/ 1 error_if_no_space *$/ 2 error_if_no_space read_only/')" &&
    dmsetup suspend "$P" && dmsetup resume "$P" || fail "reload read_only"
run "$T" --state-dir "$S" --pool "$P" status --json
[ "$(echo "$OUT" | jq -r '.pool.mode')" = ro ] && ok "status: read-only pool is ro" || fail "mode: $OUT"
[ "$(echo "$OUT" | jq -r '.pool.needs_check')" = false ] && ok "read-only pool does not need check" || fail "needs_check: $OUT"
run "$T" --state-dir "$S" --pool "$P" setup-pool
expect_rc 3 "setup-pool refuses a read-only pool"
expect_in "$ERR" "read-only (ro)" "message names ro"
run "$T" --state-dir "$S" --pool "$P" status
expect_rc 3 "status of a read-only pool exits unhealthy"
expect_in "$OUT" "health     pool \"$P\" is read-only" "human status shows the refusal"

echo "setup-pool: $FAILS failed"
[ "$FAILS" = 0 ]
