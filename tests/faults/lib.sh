# tests/faults/lib.sh: helpers for the fault-matrix tests (sourced after tests/pipeline/lib.sh).
# Each test runs as root inside the VM (tests/vm/run) with real device-mapper, on the image
# sources tests/faults/make-images.py wrote into BUILD/faults-src at build time.
#
# Every case gets a fresh state directory and pool (fresh_env), so what a case expects does not
# depend on the cases before it, and tears them down (teardown_env). Checks read the database
# with the sqlite3 tool (read-only) and the pool's metadata with thin_ls, never through thinimg:
# the code under test does not get to grade itself.

need sqlite3
need thin_ls
need dmsetup
need losetup

FX=$BUILD/faults-src
[ -f "$FX/expect.sh" ] || fail "no fault image sources in $FX (build the 'faults-src' target)"
# shellcheck source=/dev/null
source "$FX/expect.sh"
IMG_F="dir:$FX/images/f/"
IMG_H="dir:$FX/images/h/"
IMG_G="dir:$FX/images/g/"
IMG_SMALL="dir:$FX/images/small/"
IMG_FILL="dir:$FX/images/fill/"

# Every thinimg command of a test is bounded: a hang is a failure, not a stuck CI job.
CMD_TIMEOUT=${FAULTS_CMD_TIMEOUT:-300}
T="timeout -k 5 $CMD_TIMEOUT $BIN --log-level warn"

# A kernel log cursor that is current: earlier tests in this boot broke pools on purpose, and
# a fresh state directory's health check would see their lines (the last 10 minutes). Each
# fresh state directory gets a copy of this cursor, which is what an operator acknowledging
# them with `thinimg health` leaves behind.
CURSOR_DIR=$(work_area cursor)
refresh_cursor() {
    $BIN --state-dir "$CURSOR_DIR" health >/dev/null 2>&1 || true
    [ -f "$CURSOR_DIR/kmsg.cursor" ] || fail "thinimg health wrote no kmsg.cursor"
}
refresh_cursor

ENVS=()
# fresh_env NAME: a new state directory S and pool name P (exported for thinimg).
fresh_env() {
    S=$(work_area "$1")
    P=$1$$
    mkdir -p "$S"
    cp "$CURSOR_DIR/kmsg.cursor" "$S/kmsg.cursor"
    export THINIMG_STATE_DIR=$S THINIMG_POOL=$P
    ENVS+=("$S:$P")
}

# teardown_env [S P]: remove the pool's devices, the pool, its loop devices and the state.
teardown_env() {
    local s=${1:-$S} p=${2:-$P}
    umount "$s/mnt-check" 2>/dev/null || true
    for m in $(awk -v d="$s/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        umount "$m" 2>/dev/null || true
    done
    teardown_pool "$p"
    for f in "$s"/pool/*.img; do
        [ -e "$f" ] || continue
        for l in $(losetup -j "$f" -O NAME -n); do losetup -d "$l" 2>/dev/null || true; done
    done
    rm -rf "$s"
}
teardown_all() {
    for e in "${ENVS[@]}"; do teardown_env "${e%%:*}" "${e#*:}"; done
    rm -rf "$CURSOR_DIR"
}

# Under TCG every process start costs (thinimg itself loads ~50 shared libraries: about a
# second or two each time), so the checks below ask few processes many questions: one sqlite3
# per check, which also reads the JSON reports (readfile + json_each: sqlite3 starts several
# times faster than jq under emulation).

# db SQL: query the state's database read-only (one row per line, columns |-separated).
db() { sqlite3 -readonly "$S/thinimg.db" "$1"; }

# json FILE SQL-EXPR...: values from a JSON file, |-separated; in the expressions, J is the
# document (e.g. "json_extract(J, '$.state')").
json() {
    local f=$1 cols
    shift
    cols=$(IFS=,; echo "$*")
    sqlite3 :memory: "WITH d(J) AS (SELECT readfile('$f')) SELECT ${cols//J/d.J} FROM d"
}

# gc_orphans FILE: "kind[:device_id]" per orphan of a gc --json report, sorted, space-separated.
gc_orphans() {
    sqlite3 :memory: "SELECT coalesce(group_concat(k, ' '), '') FROM (SELECT
        json_extract(value, '\$.kind') || coalesce(':' || json_extract(value, '\$.device_id'), '') AS k
        FROM json_each(readfile('$1'), '\$.orphans') ORDER BY k)"
}

# pool_ids: the thin ids in the pool's metadata (sorted, space-separated), from a metadata
# snapshot read with thin_ls, as an operator would.
pool_ids() {
    local meta
    meta=$(losetup -j "$S/pool/$P-meta.img" -O NAME -n | head -n1)
    [ -n "$meta" ] || fail "no loop device for $S/pool/$P-meta.img"
    dmsetup message "$P" 0 reserve_metadata_snap
    thin_ls --metadata-snap --no-headers -o DEV "$meta" | awk '{print $1}' | sort -n | tr '\n' ' ' |
        sed 's/ *$//'
    dmsetup message "$P" 0 release_metadata_snap
}

# dm_names: the pool and every dm device with its prefix (sorted, space-separated).
dm_names() { dmsetup ls 2>/dev/null | awk -v p="$P" '$1 == p || index($1, p "-") == 1 {print $1}' | sort | tr '\n' ' ' | sed 's/ *$//'; }

# check_ids: device ids are never reused or shared, and the pool holds nothing the database
# does not know. Every id the sequence handed out has exactly one row (rows are only ever
# marked deleted), the sequence is past all of them, no two layers or activations record the
# same device, and every id in the pool's metadata has a row that is not deleted.
check_ids() {
    local ids out
    ids=$(pool_ids)
    out=$(db "SELECT (SELECT count(*) FROM devices WHERE pool='$P') || ' ' ||
                     (SELECT coalesce(max(dev_id), 0) FROM devices WHERE pool='$P') || ' ' ||
                     (SELECT coalesce(max(next_id), 1) - 1 FROM device_id_seq WHERE pool='$P');
              SELECT 'shared:' || coalesce(group_concat(dev_id, ','), '') FROM (SELECT dev_id FROM
                (SELECT dev_id FROM layers WHERE pool='$P' AND dev_id IS NOT NULL UNION ALL
                 SELECT dev_id FROM activations WHERE pool='$P' AND dev_id IS NOT NULL)
                GROUP BY dev_id HAVING count(*) > 1);
              WITH p(id) AS (SELECT value FROM json_each('[${ids// /,}]'))
              SELECT 'unknown:' || coalesce(group_concat(id, ','), '') FROM p WHERE NOT EXISTS
                (SELECT 1 FROM devices d WHERE d.pool='$P' AND d.dev_id=p.id AND d.state!='deleted');")
    local counts shared unknown
    { read -r counts; read -r shared; read -r unknown; } <<<"$out"
    set -- $counts
    assert_eq "$1 $2" "$2 $2" "device rows vs highest id (an id without a row, or a row twice)"
    assert_eq "$3" "$2" "id sequence vs highest id"
    assert_eq "$shared" "shared:" "device ids recorded by two layers/activations"
    assert_eq "$unknown" "unknown:" "pool ids the database does not know (or knows as deleted)"
}

# check_agree: after gc --force the pool and the database agree: pool ids == ids of rows that
# are not deleted (all ready), and the dm devices are the pool plus the active activations.
check_agree() {
    local ids names out want_ids bad want_dm
    ids=$(pool_ids)
    names=$(dm_names)
    out=$(db "SELECT coalesce(group_concat(dev_id, ' '), '') FROM (SELECT dev_id FROM devices
                WHERE pool='$P' AND state!='deleted' ORDER BY dev_id);
              SELECT count(*) FROM devices WHERE pool='$P' AND state NOT IN ('ready','deleted');
              SELECT group_concat(n, ' ') FROM (SELECT n FROM (SELECT '$P' AS n UNION ALL
                SELECT d.name FROM activations a JOIN devices d ON d.pool=a.pool AND
                d.dev_id=a.dev_id WHERE a.pool='$P' AND a.state='active') ORDER BY n);")
    { read -r want_ids; read -r bad; read -r want_dm; } <<<"$out"
    assert_eq "$ids" "$want_ids" "pool ids vs device rows that are not deleted"
    assert_eq "$bad" 0 "device rows neither ready nor deleted after gc"
    assert_eq "$names" "$want_dm" "dm devices vs the pool + active activations"
}

# check_content X DEV: the activation of image X (f or h: make-images.py two_layer_image) holds
# the right files (mounted read-only, without journal replay: nothing is written).
check_content() {
    local x=${1^^} dev=$2 m=$S/mnt-check
    [ -b "$dev" ] || fail "no block device $dev"
    mkdir -p "$m"
    mount -o ro,noload "$dev" "$m" || fail "cannot mount $dev"
    local motd l2 wh sums want_big want_199
    read -r motd <"$m/etc/motd"
    read -r l2 <"$m/data/layer2.txt"
    [ -e "$m/many/file-000" ] && wh=present || wh=gone
    sums=$(sha256sum "$m/data/big.bin" "$m/many/file-199" | cut -d' ' -f1 | tr '\n' ' ')
    umount "$m"
    want_big=${x}_BIG_SHA256
    want_199=${x}_FILE199_SHA256
    assert_eq "$motd" "layer 2" "etc/motd in the activation"
    assert_eq "$l2" "layer 2 data" "data/layer2.txt"
    assert_eq "$wh" gone "whiteout of many/file-000"
    assert_eq "$sums" "${!want_big} ${!want_199} " "data/big.bin and many/file-199 in the activation"
}

# run NAME CMD...: run a bounded command; RC, OUT (stdout file) and ERR (stderr text) are set.
# A timeout (124, or 137 after timeout's -k) fails the test: a hang is a failure.
run() {
    local name=$1
    shift
    RC=0
    "$@" >"$S/$name.out" 2>"$S/$name.err" || RC=$?
    OUT=$S/$name.out
    ERR=$(cat "$S/$name.err")
    [ "$RC" != 124 ] && [ "$RC" != 137 ] || fail "$name: timed out (hung?) after ${CMD_TIMEOUT}s"
}
expect_rc() { [ "$RC" = "$1" ] || fail "$2: exit $RC, expected $1; stderr: $ERR"; }
expect_in() { case "$1" in *"$2"*) ;; *) fail "$3: '$2' not in: $1" ;; esac; }

# wait_for SECONDS CMD...: poll CMD (every 50 ms) until it succeeds; 1 on timeout.
wait_for() {
    local deadline=$(($(ms) + $1 * 1000))
    shift
    until "$@"; do
        [ "$(ms)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# ms: wall clock in milliseconds (bash builtin, no process).
ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }
# lap NAME: append "NAME=<ms since the last lap>" to LAPS (where a case spends its time).
LAPS=""
LAP_T=0
lap() {
    local now
    now=$(ms)
    [ "$LAP_T" = 0 ] || LAPS="$LAPS $1=$((now - LAP_T))"
    LAP_T=$now
}
