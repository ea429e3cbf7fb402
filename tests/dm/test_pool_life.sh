#!/usr/bin/env bash
# test_pool_life.sh: the pool lifecycle against real device-mapper (labels dm, dm-faults; runs
# inside the VM, issue 20). Skips (77) without device-mapper.
#
#   grow     a 64 MiB pool, a thin device with ext4 mounted and written by a background
#            writer that pauses at 40 MiB until the pool has grown (without the growth its
#            88 MiB would fill the pool): `pool grow --data +64M --metadata 8M` while the
#            writer runs; dmsetup status shows the new data and metadata sizes, the writer
#            finishes with no I/O error, the file written before the growth and every chunk
#            written around it keep their checksums (after an unmount and a fresh mount), the
#            pools row records the new sizes, and a second grow without sizes is a no-op.
#            A size below the current one is refused (exit 2), so is metadata beyond 16 GiB.
#   check    `pool check` on the active pool exits 5 and stops nothing; with the pool down it
#            passes and clears a needs_check flag, so the next setup-pool brings the pool
#            back rw. Then the metadata file's superblock is overwritten while the pool is
#            down: setup-pool refuses (exit 3) with thin_check's verdict and the repair
#            command, loads nothing, and `pool check` says the same.
#            Without thin_check on PATH, setup-pool says so once and reassembles.
#   backup   `pool backup` of the live pool keeps the newest --backup-keep dumps, holding the
#            recorded devices, and releases the metadata snapshot; status shows it.
#   repair   after the superblock was overwritten, `pool repair` brings the pool back rw from
#            thin_repair or (when thin_repair fails on it) the newest backup, keeps the damaged
#            file aside and reports exactly what its source lacks; after the whole metadata
#            was overwritten, the newest backup wins; the device made after the backup is
#            lost, its row is failed, and gc's dry run lists exactly that device.
#   autoextend  six images of 6 MiB into a 48 MiB pool with autoextend at 40 % by 16 MiB:
#            no layer fails, the pool grows in several steps (pool_events, dmsetup table),
#            status shows the policy and the growths. Then capped at its size, an image
#            larger than the free space fails within 5 s of the pool filling, saying the
#            cap was reached, and the pool does not grow.
set -uo pipefail
T="${THINIMG_BIN:?THINIMG_BIN not set}"
if [ "$(id -u)" != 0 ] || ! dmsetup version >/dev/null 2>&1 || ! dmsetup targets | grep -q thin-pool; then
    echo "skipped: no device-mapper with thin-pool here (run inside tests/vm/run)"
    exit 77
fi
W="$(mktemp -d "${THINIMG_VM_TMP:-${TMPDIR:-/tmp}}/pool-life.XXXXXX")"
P="tpl$$"
S="$W/state"
MNT="$W/mnt"
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }
# run CMD...: sets OUT, ERR, RC (every command bounded: a hang is a failure)
run() {
    OUT="$(timeout -k 5 300 "$@" 2>"$W/err")"
    RC=$?
    ERR="$(cat "$W/err")"
}
expect_rc() { [ "$RC" = "$1" ] && ok "$2 (exit $RC)" || fail "$2: exit $RC, want $1; stdout: $OUT; stderr: $ERR"; }
expect_in() { case "$1" in *"$2"*) ok "$3" ;; *) fail "$3: '$2' not in: $1" ;; esac; }
TI=("$T" --state-dir "$S" --pool "$P")
field() { dmsetup status "$P" | awk -v n="$1" '{print $n}'; }
detach_loops() {
    for f in "$S/pool/$P-data.img" "$S/pool/$P-meta.img"; do
        [ -e "$f" ] || continue
        for l in $(losetup -j "$f" -O NAME -n); do losetup -d "$l" 2>/dev/null; done
    done
}
cleanup() {
    [ -n "${WRITER:-}" ] && kill "$WRITER" 2>/dev/null
    umount "$MNT" 2>/dev/null
    for d in $(dmsetup ls 2>/dev/null | awk '{print $1}' | grep -E "^${P}a?(-|$)" | sort -r); do
        dmsetup remove "$d" >/dev/null 2>&1
    done
    detach_loops
    for f in "$S/pool/${P}a-data.img" "$S/pool/${P}a-meta.img"; do
        for l in $(losetup -j "$f" -O NAME -n 2>/dev/null); do losetup -d "$l" 2>/dev/null; done
    done
    rm -rf "$W"
}
trap cleanup EXIT
MiB=$((1024 * 1024))

# ---- grow under a mounted, written device -----------------------------------------------------
run "${TI[@]}" setup-pool --data-size 64M --metadata-size 4M --block-size 64K
expect_rc 0 "setup-pool creates a 64 MiB pool"
dmsetup message "$P" 0 "create_thin 1" || fail "create_thin"
dmsetup create "$P-test-1" --table "0 $((256 * 2048)) thin /dev/mapper/$P 1" || fail "activate thin"
mkfs.ext4 -q -F -m 0 -N 1024 -J size=4 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 \
    "/dev/mapper/$P-test-1" || fail "mkfs"
mkdir -p "$MNT" && mount "/dev/mapper/$P-test-1" "$MNT" || fail "mount"
head -c $((8 * MiB)) /dev/urandom >"$MNT/before" && sync
SUM_BEFORE="$(sha256sum <"$MNT/before")"
# The writer: 88 chunks of 1 MiB, each its own file, fsync'd; it waits at chunk 32 until
# $W/grown exists, so it never outruns the growth, and it keeps writing while it happens.
(
    for i in $(seq 1 88); do
        if [ "$i" -gt 32 ]; then
            while [ ! -e "$W/grown" ]; do sleep 0.2; done
        fi
        head -c $MiB /dev/urandom >"$W/chunk" || exit 10
        dd if="$W/chunk" of="$MNT/chunk.$i" bs=1M conv=fsync status=none || exit 11
        sha256sum <"$W/chunk" >>"$W/sums"
    done
) 2>"$W/writer.err" &
WRITER=$!
while [ "$(wc -l <"$W/sums" 2>/dev/null || echo 0)" -lt 16 ]; do
    kill -0 "$WRITER" 2>/dev/null || break # died early: its exit status says why, below
    sleep 0.2
done
DATA_BLOCKS_BEFORE="$(field 6 | cut -d/ -f2)"
run "${TI[@]}" pool grow --data +64M --metadata 8M
expect_rc 0 "pool grow while the device is mounted and written"
expect_in "$OUT" "64.0 MiB -> 128.0 MiB" "pool grow reports the data growth"
touch "$W/grown"
wait "$WRITER"
WRC=$?
WRITER=
[ "$WRC" = 0 ] && ok "the writer wrote 88 MiB across the growth with no I/O error" ||
    fail "the writer failed (exit $WRC): $(cat "$W/writer.err")"
dmesg | grep -i "thin.*error\|I/O error" | tail -n 3
[ "$DATA_BLOCKS_BEFORE" = 1024 ] && ok "data blocks before: 1024" || fail "data blocks before: $DATA_BLOCKS_BEFORE"
[ "$(field 6 | cut -d/ -f2)" = 2048 ] && ok "dmsetup status: 2048 data blocks (128 MiB)" || fail "data after: $(dmsetup status "$P")"
[ "$(field 5 | cut -d/ -f2)" = 2048 ] && ok "dmsetup status: 2048 metadata blocks (8 MiB)" || fail "metadata after: $(dmsetup status "$P")"
[ "$(dmsetup table "$P" | awk '{print $2}')" = $((128 * 2048)) ] && ok "table length 128 MiB" || fail "table: $(dmsetup table "$P")"
[ "$(stat -c %s "$S/pool/$P-data.img")" = $((128 * MiB)) ] && ok "data file is 128 MiB" || fail "data file size"
[ "$(stat -c %s "$S/pool/$P-meta.img")" = $((8 * MiB)) ] && ok "metadata file is 8 MiB" || fail "metadata file size"
[ "$(field 8)" = rw ] && ok "pool mode rw" || fail "mode: $(dmsetup status "$P")"
umount "$MNT" && mount "/dev/mapper/$P-test-1" "$MNT" || fail "remount"
[ "$(sha256sum <"$MNT/before")" = "$SUM_BEFORE" ] && ok "data written before the growth intact" || fail "checksum of the data written before the growth"
: >"$W/sums.after"
for i in $(seq 1 88); do sha256sum <"$MNT/chunk.$i" >>"$W/sums.after" 2>/dev/null; done
cmp -s "$W/sums" "$W/sums.after" && ok "the 88 chunks written around the growth intact" || fail "chunk checksums differ"
ROW="$(sqlite3 -readonly "$S/thinimg.db" "SELECT data_bytes, metadata_bytes FROM pools WHERE name='$P'")"
[ "$ROW" = "$((128 * MiB))|$((8 * MiB))" ] && ok "pools row records 128 MiB and 8 MiB" || fail "pools row: $ROW"
run "${TI[@]}" pool grow
expect_rc 0 "pool grow without sizes"
expect_in "$OUT" "nothing to grow" "a second grow without sizes is a no-op"
run "${TI[@]}" pool grow --data 32M
expect_rc 2 "pool grow to a smaller size"
expect_in "$ERR" "do not shrink" "refusal says pools do not shrink"
run "${TI[@]}" pool grow --metadata 17G
expect_rc 2 "metadata beyond the kernel's maximum"
expect_in "$ERR" "16 GiB" "refusal names the kernel's limit"
run "${TI[@]}" pool grow --data +1T
expect_rc 3 "growth beyond the backing file system"
expect_in "$ERR" "free space there" "refusal says what to do"
[ "$(stat -c %s "$S/pool/$P-data.img")" = $((128 * MiB)) ] && ok "data file unchanged after the refusal" || fail "data file size after refusal"
umount "$MNT"

# ---- check: offline only, clears needs_check --------------------------------------------------
run "${TI[@]}" pool check
expect_rc 5 "pool check on an active pool"
expect_in "$ERR" "is active" "the refusal says the pool is active"
dmsetup info "$P" >/dev/null 2>&1 && dmsetup info "$P-test-1" >/dev/null 2>&1 && ok "nothing was stopped" || fail "pool check stopped a device"
dmsetup remove "$P-test-1" && dmsetup remove "$P" || fail "remove devices"
META="$(losetup -j "$S/pool/$P-meta.img" -O NAME -n | head -n1)"
thin_dump "$META" >"$W/meta.xml" && sed -i 's/flags="0"/flags="1"/' "$W/meta.xml" &&
    thin_restore -q -i "$W/meta.xml" -o "$META" || fail "flag needs_check"
run "${TI[@]}" pool check
expect_rc 0 "pool check on the offline pool with needs_check"
expect_in "$OUT" "passed thin_check" "pool check reports a pass"
run "${TI[@]}" setup-pool
expect_rc 0 "setup-pool after pool check"
expect_in "$OUT" "reassembled" "reassembled"
[ "$(field 8)" = rw ] && ! dmsetup status "$P" | grep -q needs_check && ok "the pool is back rw, no needs_check" || fail "status: $(dmsetup status "$P")"

# ---- backups: devices 1, 2 recorded and backed up; 3 made after the backup -------------------
SQL() { sqlite3 "$S/thinimg.db" "$@"; }
# thin device N with 2 MiB written, recorded ready (a layer's row as far as repair and gc care)
thin_with_data() {
    [ "$1" = 1 ] || dmsetup message "$P" 0 "create_thin $1" || fail "create_thin $1"
    dmsetup create "$P-test-$1" --table "0 $((256 * 2048)) thin /dev/mapper/$P $1" || fail "activate $1"
    dd if=/dev/urandom of="/dev/mapper/$P-test-$1" bs=1M count=2 oflag=direct status=none || fail "write $1"
    dmsetup remove "$P-test-$1"
    SQL "INSERT INTO devices(pool, dev_id, name, kind, state, size_bytes, created_at_ms, updated_at_ms)
         VALUES('$P', $1, '$P-test-$1', 'test', 'ready', $((256 * MiB)), 1, 1)"
}
thin_with_data 1
thin_with_data 2
run "${TI[@]}" pool set --backup-keep 2
expect_rc 0 "pool set --backup-keep 2"
for i in 1 2 3; do
    run "${TI[@]}" pool backup
    expect_rc 0 "pool backup ($i)"
done
expect_in "$OUT" "$S/pool-backups/$P/meta-" "pool backup says where the dump is"
[ "$(ls "$S/pool-backups/$P" | grep -c '^meta-.*\.xml$')" = 2 ] && ok "two backups kept (--backup-keep 2)" || fail "backups: $(ls "$S/pool-backups/$P")"
LATEST="$(ls "$S/pool-backups/$P"/meta-*.xml | tail -n1)"
grep -q 'dev_id="1"' "$LATEST" && grep -q 'dev_id="2"' "$LATEST" && ok "the backup holds devices 1 and 2" || fail "backup content: $(head -c 300 "$LATEST")"
dmsetup status "$P" | awk '{print $7}' | grep -q '^-$' && ok "the metadata snapshot was released" || fail "a metadata snapshot is still held: $(dmsetup status "$P")"
thin_with_data 3
run "${TI[@]}" status
expect_in "$OUT" "backup     " "status shows the last backup"
expect_in "$OUT" "last check" "status shows the last check"

# ---- check at assembly: corrupted metadata --------------------------------------------------
dmsetup remove "$P"
detach_loops
head -c 4096 /dev/urandom | dd of="$S/pool/$P-meta.img" bs=4096 conv=notrunc status=none
run "${TI[@]}" setup-pool
expect_rc 3 "setup-pool on corrupted metadata"
expect_in "$ERR" "thin_check found its metadata damaged" "the refusal says thin_check found damage"
expect_in "$ERR" "superblock" "the refusal carries thin_check's verdict"
expect_in "$ERR" "thinimg pool repair" "the refusal gives the repair command"
dmsetup info "$P" >/dev/null 2>&1 && fail "a pool was loaded over damaged metadata" || ok "nothing loaded"
VERDICT_SETUP="$(echo "$ERR" | sed -n 's/.*exit [0-9]*): \(.*\)\. Nothing was loaded.*/\1/p')"
run "${TI[@]}" pool check
expect_rc 3 "pool check on corrupted metadata"
VERDICT_CHECK="$(echo "$ERR" | sed -n 's/.*exit [0-9]*): \(.*\)\. Nothing was loaded.*/\1/p')"
[ -n "$VERDICT_SETUP" ] && [ "$VERDICT_SETUP" = "$VERDICT_CHECK" ] && ok "pool check gives the same verdict: $VERDICT_CHECK" ||
    fail "verdicts differ: setup-pool '$VERDICT_SETUP', pool check '$VERDICT_CHECK'"

# ---- repair -----------------------------------------------------------------------------------
# 1. the superblock overwritten (above). thin_repair needs the superblock fields then (given from
#    the database); thin_repair 0.9 may still fail on kernel-written metadata (it crashed with
#    SIGSEGV in this VM), and then the newest backup (1, 2) is used. Either way: the pool comes
#    back rw, the damaged file is kept, and exactly what the chosen metadata lacks is lost.
run "${TI[@]}" pool repair --json
expect_rc 0 "pool repair of the overwritten metadata"
USED1="$(echo "$OUT" | jq -r .used)"
LOST1="$(echo "$OUT" | jq -c '[.lost[].id]')"
case "$USED1/$LOST1" in
thin_repair/"[]" | backup/"[3]") ok "repaired from $USED1, lost $LOST1 (what that source lacks)" ;;
*) fail "repair 1: used $USED1, lost $LOST1: $OUT; $ERR" ;;
esac
[ "$(ls "$S/pool/" | grep -c "^$P-meta.img.damaged-")" = 1 ] && ok "the damaged file is kept aside" || fail "no damaged file kept: $(ls "$S/pool")"
[ "$(field 8)" = rw ] && ok "the pool is back, rw" || fail "pool after repair: $(dmsetup status "$P" 2>&1)"
for i in 1 2; do
    dmsetup create "$P-test-$i" --table "0 $((256 * 2048)) thin /dev/mapper/$P $i" && dmsetup remove "$P-test-$i" || fail "device $i unusable after the repair"
done
# 2. the whole metadata overwritten: thin_repair finds no device (or fails), the newest backup
#    (1, 2) wins; device 3, made after it, is lost (now, or by the first repair already): its
#    row is failed, and it is exactly what gc's dry run lists as failed.
dmsetup remove "$P"
detach_loops
dd if=/dev/urandom of="$S/pool/$P-meta.img" bs=1M count=8 conv=notrunc status=none
run "${TI[@]}" setup-pool
expect_rc 3 "setup-pool on destroyed metadata"
run "${TI[@]}" pool repair --json
expect_rc 0 "pool repair of destroyed metadata"
[ "$(echo "$OUT" | jq -r .used)" = backup ] && ok "the backup was used: $(echo "$OUT" | jq -r .source)" || fail "repair json: $OUT; $ERR"
WANT2='[3]'
[ "$USED1" = backup ] && WANT2='[]'
[ "$(echo "$OUT" | jq -c '[.lost[].id]')" = "$WANT2" ] && ok "lost now: $WANT2" || fail "lost: $OUT"
[ "$(SQL "SELECT state FROM devices WHERE pool='$P' AND dev_id=3")" = failed ] && ok "device 3's row is failed" || fail "rows: $(SQL "SELECT dev_id, state FROM devices WHERE pool='$P'")"
run "${TI[@]}" gc --json
expect_rc 0 "gc dry run after the repair"
[ "$(echo "$OUT" | jq -c '[.orphans[] | select(.kind == "failed") | .what]')" = "[\"$P-test-3\"]" ] &&
    ok "gc lists exactly the lost device as failed" || fail "gc: $OUT"
[ "$(echo "$OUT" | jq -c '[.orphans[] | select(.kind == "missing" or .kind == "unknown-id")] | length')" = 0 ] &&
    ok "gc finds no other difference between database and pool" || fail "gc: $OUT"
run "${TI[@]}" status --json
[ "$(echo "$OUT" | jq -r '.pool_life.last_check.ok')" = true ] && ok "status: the last check passed" || fail "status pool_life: $(echo "$OUT" | jq -c .pool_life)"
dmsetup remove "$P"
detach_loops

# ---- no thin_check installed: said once, assembly goes on ------------------------------------
mkdir -p "$W/emptybin"
P2="${P}n"
run env PATH="$W/emptybin" "$T" --state-dir "$S" --pool "$P2" setup-pool --data-size 32M
expect_rc 0 "setup-pool creates a second pool without thin_check on PATH"
dmsetup remove "$P2"
run env PATH="$W/emptybin" "$T" --state-dir "$S" --pool "$P2" setup-pool
expect_rc 0 "reassembly without thin_check goes on"
expect_in "$ERR" "thin_check not found" "says thin_check is missing"
[ "$(echo "$ERR" | grep -c 'thin_check not found')" = 1 ] && ok "said once" || fail "said $(echo "$ERR" | grep -c 'thin_check not found') times"
dmsetup remove "$P2"
run env PATH="$W/emptybin" "$T" --state-dir "$S" --pool "$P2" pool check
expect_rc 1 "pool check without thin_check"
expect_in "$ERR" "thin-provisioning-tools" "says what to install"
for f in "$S/pool/$P2-data.img" "$S/pool/$P2-meta.img"; do
    for l in $(losetup -j "$f" -O NAME -n); do losetup -d "$l" 2>/dev/null; done
done

# ---- autoextend: successive images fill a pool that grows in steps; capped, it fails fast -------
P3="${P}a"
TA=("$T" --state-dir "$S" --pool "$P3" --log-level info)
export THINIMG_HEALTH_TIMEOUT_MS=30000 # health checks under emulation and ASan take seconds
mkimage() { # NAME MIB: a one-layer image with a file of MIB random MiB
    mkdir -p "$W/src/images/$1" "$W/layer-$1"
    head -c $(($2 * MiB)) /dev/urandom >"$W/layer-$1/blob"
    tar -C "$W/layer-$1" -cf "$W/src/images/$1/1.tar" .
    rm -rf "$W/layer-$1"
}
run "${TA[@]}" setup-pool --data-size 48M --metadata-size 4M
expect_rc 0 "setup-pool of a 48 MiB pool for autoextend"
run "${TA[@]}" pool set --autoextend-threshold 40 --autoextend-step 16M --autoextend-max 512M
expect_rc 0 "pool set: autoextend at 40 %, by 16 MiB, up to 512 MiB"
"${TA[@]}" health >/dev/null 2>&1 # acknowledge the kernel log lines the sections above caused
LAYER_FAILS=0
for i in 1 2 3 4 5 6; do
    mkimage "fill$i" 6
    run "${TA[@]}" process-image --device-size 64M "dir:$W/src/images/fill$i/"
    [ "$RC" = 0 ] || { LAYER_FAILS=$((LAYER_FAILS + 1)); echo "image fill$i: exit $RC: $ERR"; }
done
[ "$LAYER_FAILS" = 0 ] && ok "six images of 6 MiB into a 48 MiB pool: no layer failed" || fail "$LAYER_FAILS images failed"
GROWS="$(sqlite3 -readonly "$S/thinimg.db" "SELECT COUNT(*) FROM pool_events WHERE pool='$P3' AND kind='grow' AND detail='autoextend'")"
LEN="$(dmsetup table "$P3" | awk '{print $2}')"
[ "$GROWS" -ge 2 ] && [ "$LEN" -gt $((48 * 2048)) ] && ok "autoextend grew the pool in $GROWS steps to $((LEN / 2048)) MiB" ||
    fail "autoextend: $GROWS growths, table length $LEN sectors"
run "${TA[@]}" status
expect_in "$OUT" "autoextend at 40% used, by 16.0 MiB, cap 512.0 MiB" "status shows the policy"
expect_in "$OUT" "autoextend: data" "status lists the growths"
# Capped at the current size: an image larger than the free space fails as without autoextend
# (error_if_no_space: at once) and says the cap was reached.
run "${TA[@]}" pool set --autoextend-max "$((LEN * 512))"
mkimage big $((LEN / 2048))
(
    while ! dmsetup status "$P3" | grep -q out_of_data_space; do sleep 0.1; done
    date +%s.%N >"$W/full-at"
) &
POLLER=$!
run "${TA[@]}" process-image --device-size 256M "dir:$W/src/images/big/"
END="$(date +%s.%N)"
kill "$POLLER" 2>/dev/null
[ "$RC" != 0 ] && ok "the image larger than the capped pool failed (exit $RC)" || fail "the big image did not fail"
expect_in "$ERR" "autoextend reached its cap" "the failure says the autoextend cap was reached"
if [ -s "$W/full-at" ]; then
    SECS="$(echo "$END - $(cat "$W/full-at")" | bc)"
    [ "$(echo "$SECS <= 5" | bc)" = 1 ] && ok "failed ${SECS}s after the pool filled (<= 5 s)" || fail "failed ${SECS}s after the pool filled"
else
    fail "the pool never showed out_of_data_space"
fi
[ "$(dmsetup table "$P3" | awk '{print $2}')" = "$LEN" ] && ok "the capped pool did not grow" || fail "the capped pool grew"

[ "$FAILS" = 0 ] && echo "pool life: all passed" || { echo "pool life: $FAILS failures"; exit 1; }
