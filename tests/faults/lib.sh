# tests/faults/lib.sh: helpers for the fault-matrix tests (sourced after tests/pipeline/lib.sh),
# for either storage backend (docs/overlay.md), chosen by THINIMG_BACKEND as for thinimg:
#
#   dm-thin (the default)    as root inside the VM (tests/vm/run), with real device-mapper
#   overlay                  natively, as root on a kernel with overlayfs (no VM); exit 77
#                            (skipped) without them
#
# The tests run on the image sources tests/faults/make-images.py wrote into BUILD/faults-src at
# build time. Every case gets a fresh state directory (and, on dm-thin, pool: fresh_env), so
# what a case expects does not depend on the cases before it, and tears them down
# (teardown_env). Checks read the database with the sqlite3 tool (read-only) and the storage
# as an operator would (dm-thin: the pool's metadata with thin_ls, the dm devices with dmsetup;
# overlay: the directories under STATE/overlay and the mount table), never through thinimg:
# the code under test does not get to grade itself.
#
# What differs between the backends is written once, in the section "The backends" below
# (storage_setup, storage_list, the checks check_ids, check_agree and check_content, the
# storage of a layer being unpacked, and which orphans a kill leaves); the tests call those and
# never ask which backend runs.

BACKEND=${THINIMG_BACKEND:-dm-thin}
export THINIMG_BACKEND=$BACKEND
need sqlite3
case $BACKEND in
dm-thin)
    need thin_ls
    need dmsetup
    need losetup
    ;;
overlay)
    [ "$(id -u)" = 0 ] || { echo "SKIP: the overlay backend needs root (overlay mounts)"; exit 77; }
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
        { echo "SKIP: the kernel has no overlayfs"; exit 77; }
    ;;
*) fail "THINIMG_BACKEND=$BACKEND: the fault tests know dm-thin and overlay" ;;
esac

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
# fresh_env NAME: a new state directory S and pool name P (exported for thinimg; the overlay
# backend sets up no pool and ignores it).
fresh_env() {
    S=$(work_area "$1")
    P=$1$$
    mkdir -p "$S"
    cp "$CURSOR_DIR/kmsg.cursor" "$S/kmsg.cursor"
    export THINIMG_STATE_DIR=$S THINIMG_POOL=$P
    ENVS+=("$S:$P")
}

# teardown_env [S P]: unmount what is mounted under the state (activations, checks), remove the
# pool's devices, the pool and its loop devices (dm-thin), then the state.
teardown_env() {
    local s=${1:-$S} p=${2:-$P}
    umount "$s/mnt-check" 2>/dev/null || true
    for m in $(awk -v d="$s/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        umount "$m" 2>/dev/null || true
    done
    if [ "$BACKEND" = dm-thin ]; then
        teardown_pool "$p"
        for f in "$s"/pool/*.img; do
            [ -e "$f" ] || continue
            for l in $(losetup -j "$f" -O NAME -n); do losetup -d "$l" 2>/dev/null || true; done
        done
    fi
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

# gc_orphans FILE: one word per orphan of a gc --json report, sorted, space-separated: its kind,
# then ":<thin id>" for a device, ":<path under STATE/overlay>" for an overlay directory
# (e.g. "unreferenced:1", "overlay-dir:layers/<hex>", "lock").
gc_orphans() {
    sqlite3 :memory: "SELECT coalesce(group_concat(k, ' '), '') FROM (SELECT
        json_extract(value, '\$.kind') || coalesce(':' || json_extract(value, '\$.device_id'),
          CASE json_extract(value, '\$.kind') WHEN 'overlay-dir' THEN
            ':' || replace(json_extract(value, '\$.what'), '$S/overlay/', '') END, '') AS k
        FROM json_each(readfile('$1'), '\$.orphans') ORDER BY k)"
}

# ---- Storage tasks in D state (guard.sh, tests/daemon/dm_gc.sh) -------------------------------
# dstate_begin: a dm device outside the pool (STATE/dstate.img behind a loop device) with a
# mounted ext4 and dirty data is suspended without freezing the file system (--nolockfs: a
# plain suspend would write the data out first), and a `sync` started in the background waits
# for writeback that cannot happen: sync and jbd2 block in D state. Sets DST, DLOOP, SYNCPID.
# dstate_end: the device resumed (the sync finishes), unmounted and removed with its loop
# device; every step is tried, 1 when one failed (the cleanup of a test ignores that).
# Nothing to do when no dstate_begin is pending.
DST="" DLOOP="" SYNCPID=""
dstate_begin() {
    truncate -s 64M "$S/dstate.img"
    DLOOP=$(losetup -f --show "$S/dstate.img")
    DST=dstate$$
    dmsetup create "$DST" --table "0 131072 linear $DLOOP 0"
    mkfs.ext4 -q -F "/dev/mapper/$DST"
    mkdir -p "$S/dmnt"
    mount "/dev/mapper/$DST" "$S/dmnt"
    dd if=/dev/zero of="$S/dmnt/dirty" bs=1M count=8 status=none
    dmsetup suspend --nolockfs "$DST"
    sync &
    SYNCPID=$!
}
dstate_end() {
    [ -n "$DST" ] || return 0
    local rc=0
    dmsetup resume "$DST" || rc=1
    if [ -n "$SYNCPID" ]; then wait "$SYNCPID" || rc=1; fi
    umount "$S/dmnt" || rc=1
    dmsetup remove "$DST" || rc=1
    if [ -n "$DLOOP" ]; then losetup -d "$DLOOP" || rc=1; fi
    DST="" DLOOP="" SYNCPID=""
    return $rc
}

# ---- The backends ------------------------------------------------------------------------
# Everything the tests know about one backend and not the other. dm-thin: a layer and an
# activation are thin devices of the pool (ids handed out by the database's sequence), an
# activation is up when its dm device is; overlay: a layer is STATE/overlay/layers/<chain hash>,
# an activation STATE/overlay/act/<name>, up when its merged dir is an overlay mount
# (docs/overlay.md).

# storage_setup SIZE: what a state directory needs before process-image (dm-thin: a pool with
# SIZE of data; overlay: nothing).
storage_setup() {
    [ "$BACKEND" = overlay ] && return 0
    $T setup-pool --data-size "$1" >/dev/null || fail "setup-pool --data-size $1"
}

# storage_list: what exists, sorted, space-separated (dm-thin: the thin ids in the pool's
# metadata; overlay: "layers/<hex>" and "act/<name>" for each directory under STATE/overlay).
storage_list() {
    if [ "$BACKEND" = dm-thin ]; then
        pool_ids
        return
    fi
    local d
    for d in "$S"/overlay/layers/* "$S"/overlay/act/*; do
        [ ! -e "$d" ] || echo "${d#"$S"/overlay/}"
    done | sort | tr '\n' ' ' | sed 's/ *$//'
}

# up_list: what is up, sorted, space-separated (dm-thin: the pool and every dm device with its
# prefix; overlay: the overlay mounts under the state directory).
up_list() {
    if [ "$BACKEND" = dm-thin ]; then
        dm_names
        return
    fi
    awk -v d="$S/" 'index($5, d) == 1 && $0 ~ / - overlay / {print $5}' /proc/self/mountinfo |
        sort | tr '\n' ' ' | sed 's/ *$//'
}

# unpacking_storage: the storage of the layer a run is unpacking (state unpacking: after
# create-device), empty when none (dm-thin: its dm device's name; overlay: its diff dir).
# storage_exists X: it is there (dm-thin: the dm device exists; overlay: the directory does).
unpacking_storage() {
    if [ "$BACKEND" = dm-thin ]; then
        db "SELECT d.name FROM layers l JOIN devices d ON d.pool = l.pool AND d.dev_id = l.dev_id
            WHERE l.state = 'unpacking'"
    else
        db "SELECT '$S/overlay/layers/' || substr(chain_id, 8) || '/diff' FROM layers
            WHERE state = 'unpacking'"
    fi
}
storage_exists() {
    if [ "$BACKEND" = dm-thin ]; then dmsetup info "$1" >/dev/null 2>&1; else [ -d "$1" ]; fi
}

# LONG_TRANSITIONS: the transitions long enough to be killed in their middle (the kill matrix's
# delayed points); overlay's create-device is two mkdirs, with no middle to land in.
if [ "$BACKEND" = dm-thin ]; then
    LONG_TRANSITIONS="fetch.download unpack.create-device unpack.apply-layer"
else
    LONG_TRANSITIONS="fetch.download unpack.apply-layer"
fi

# kill_leftovers EXPECT: the orphans kills leave for gc on this backend, from what they leave on
# dm-thin (EXPECT, as gc_orphans writes it). Each create-device attempt on dm-thin takes a fresh
# thin id, so an interrupted one leaves a device no layer records ("unreferenced:<id>",
# "creating:<id>"); the overlay backend names a layer's directory by its chain id and an
# activation's by its name, so the next attempt works on the same directory and leaves nothing.
kill_leftovers() {
    if [ "$BACKEND" = dm-thin ]; then
        echo "$1"
        return
    fi
    local w out=""
    for w in $1; do [[ "$w" =~ :[0-9]+$ ]] || out="$out $w"; done
    echo "${out# }"
}

# BACKEND_POINTS: the backend's own fault points (besides the transitions of the machines),
# where a kill leaves what it leaves between two steps of one transition. overlay.make-root:
# after the mkdir of a new layer diff or activation upper, before its root gets the owner, mode
# and times of the root below it (make_root in src/pipeline/backend_overlay.c). dm-thin: none.
# point_applies POINT: a transition's point, or one of BACKEND_POINTS.
if [ "$BACKEND" = overlay ]; then BACKEND_POINTS="overlay.make-root"; else BACKEND_POINTS=""; fi
point_applies() {
    case ${1%%[+:]*} in
    fetch.* | unpack.* | activate.* | process.*) return 0 ;;
    esac
    [[ " $BACKEND_POINTS " == *" ${1%%[+:]*} "* ]]
}

# outlive_applies: whether a mount left by a killed apply (outlive_mount) can stand in the next
# attempt's way: on overlay, not on dm-thin (a second mount of an ext4 device shares its
# superblock).
outlive_applies() { [ "$BACKEND" = overlay ]; }

# outlive_mount SECONDS: what the apply of a process killed with kill -9 leaves for a moment:
# its mount child is killed with it (PR_SET_PDEATHSIG) and its mount goes with the child's mount
# namespace only once the child has died; on overlay the apply mount has the index on and so
# holds its upper dir exclusively (EBUSY for another mount). Here the diff of the layer being
# unpacked is mounted as apply-layer mounts it, in a private mount namespace, for SECONDS in the
# background (returns once it is mounted).
outlive_mount() {
    local diff mp=$S/outlive
    diff=$(unpacking_storage)
    [ -n "$diff" ] || fail "outlive_mount: no layer is being unpacked"
    mkdir -p "$mp"
    mkdir -p -m 700 "$S/overlay/empty"
    unshare -m --propagation private sh -c "mount -t overlay overlay -o lowerdir=$S/overlay/empty,upperdir=$diff,workdir=${diff%/diff}/work,metacopy=off,redirect_dir=off,index=on $mp &&
        touch $S/outlive.up && sleep $1" >"$S/outlive.err" 2>&1 &
    wait_for 30 test -e "$S/outlive.up" || fail "outlive_mount: $(cat "$S/outlive.err")"
}

# check_ids: storage is never shared, and holds nothing the database does not know.
check_ids() { "check_ids_${BACKEND/-/_}"; }
# check_agree: after gc --force the storage and the database agree.
check_agree() { "check_agree_${BACKEND/-/_}"; }

# How long pool_ids waits for its turn at the pool's one metadata snapshot (another reader,
# such as a thinimg gc or monitor, may be reading it), in seconds.
POOL_SNAP_WAIT_S=${FAULTS_POOL_SNAP_WAIT_S:-60}

# read_pool_ids: POOL_IDS = the thin ids in the pool's metadata (sorted, space-separated), from
# a metadata snapshot read with thin_ls, as an operator would. The pool has one snapshot slot:
# readers take turns by an flock on the metadata device, as thinimg's own do (src/dm/thin.c),
# so no reader releases a snapshot another is reading. Fails the test, saying why, when the
# turn does not come within POOL_SNAP_WAIT_S or the slot is held by nobody's turn (left
# reserved by a process killed while reading). Not in a subshell: a failure stops the test.
read_pool_ids() {
    local meta out rc=0 lockfd
    meta=$(losetup -j "$S/pool/$P-meta.img" -O NAME -n | head -n1)
    [ -n "$meta" ] || fail "no loop device for $S/pool/$P-meta.img"
    exec {lockfd}<"$meta"
    flock -w "$POOL_SNAP_WAIT_S" "$lockfd" ||
        fail "pool_ids: another reader held the metadata snapshot of pool $P (the flock on $meta) for more than ${POOL_SNAP_WAIT_S}s"
    if ! out=$(dmsetup message "$P" 0 reserve_metadata_snap 2>&1); then
        exec {lockfd}<&-
        fail "pool_ids: reserve_metadata_snap on pool $P failed while no reader holds its turn: a snapshot left reserved by a process killed while reading? (\`dmsetup message $P 0 release_metadata_snap\` frees it): $out"
    fi
    out=$(thin_ls --metadata-snap --no-headers -o DEV "$meta" 2>&1) || rc=$?
    local rel
    rel=$(dmsetup message "$P" 0 release_metadata_snap 2>&1) || {
        exec {lockfd}<&-
        fail "pool_ids: release_metadata_snap on pool $P failed: $rel"
    }
    exec {lockfd}<&-
    [ "$rc" = 0 ] || fail "pool_ids: thin_ls --metadata-snap of $meta (pool $P) failed (exit $rc): $out"
    POOL_IDS=$(echo "$out" | awk 'NF {print $1}' | sort -n | tr '\n' ' ' | sed 's/ *$//')
}
# pool_ids: the same, printed (in $(...) a failure prints FAIL and returns non-zero).
pool_ids() {
    read_pool_ids
    echo "$POOL_IDS"
}

# dm_names: the pool and every dm device with its prefix (sorted, space-separated).
dm_names() { dmsetup ls 2>/dev/null | awk -v p="$P" '$1 == p || index($1, p "-") == 1 {print $1}' | sort | tr '\n' ' ' | sed 's/ *$//'; }

# dm-thin: device ids are never reused or shared, and the pool holds nothing the database does
# not know. Every id the sequence handed out has exactly one row (rows are only ever marked
# deleted), the sequence is past all of them, no two layers or activations record the same
# device, and every id in the pool's metadata has a row that is not deleted.
check_ids_dm_thin() {
    local out
    read_pool_ids
    local ids=$POOL_IDS
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

# dm-thin, after gc --force: pool ids == ids of rows that are not deleted (all ready), and the
# dm devices are the pool plus the active activations.
check_agree_dm_thin() {
    local names out want_ids bad want_dm
    read_pool_ids
    names=$(dm_names)
    out=$(db "SELECT coalesce(group_concat(dev_id, ' '), '') FROM (SELECT dev_id FROM devices
                WHERE pool='$P' AND state!='deleted' ORDER BY dev_id);
              SELECT count(*) FROM devices WHERE pool='$P' AND state NOT IN ('ready','deleted');
              SELECT group_concat(n, ' ') FROM (SELECT n FROM (SELECT '$P' AS n UNION ALL
                SELECT d.name FROM activations a JOIN devices d ON d.pool=a.pool AND
                d.dev_id=a.dev_id WHERE a.pool='$P' AND a.state='active') ORDER BY n);")
    { read -r want_ids; read -r bad; read -r want_dm; } <<<"$out"
    assert_eq "$POOL_IDS" "$want_ids" "pool ids vs device rows that are not deleted"
    assert_eq "$bad" 0 "device rows neither ready nor deleted after gc"
    assert_eq "$names" "$want_dm" "dm devices vs the pool + active activations"
}

# overlay: the backend takes no device ids (no device rows, no layer or activation names a
# device); every directory under STATE/overlay is named by a record (a layer's by its chain
# id, an activation's by its name), and no two activations record the same mount point.
check_ids_overlay() {
    local have out
    have=$(storage_list)
    out=$(db "SELECT (SELECT count(*) FROM devices) || ' ' ||
                     (SELECT count(*) FROM layers WHERE dev_id IS NOT NULL) || ' ' ||
                     (SELECT count(*) FROM activations WHERE dev_id IS NOT NULL);
              SELECT 'shared:' || coalesce(group_concat(device_path, ','), '') FROM (SELECT
                device_path FROM activations WHERE device_path IS NOT NULL AND device_path != ''
                GROUP BY device_path HAVING count(*) > 1);
              WITH d(p) AS (SELECT value FROM json_each('[\"${have// /\",\"}\"]') WHERE value != '')
              SELECT 'unknown:' || coalesce(group_concat(p, ','), '') FROM d WHERE NOT EXISTS
                (SELECT 1 FROM layers l WHERE 'layers/' || substr(l.chain_id, 8) = d.p)
                AND NOT EXISTS (SELECT 1 FROM activations a WHERE 'act/' || a.name = d.p);")
    local counts shared unknown
    { read -r counts; read -r shared; read -r unknown; } <<<"$out"
    assert_eq "$counts" "0 0 0" "device rows, layers and activations naming a device (overlay takes none)"
    assert_eq "$shared" "shared:" "mount points recorded by two activations"
    assert_eq "$unknown" "unknown:" "directories under $S/overlay the database does not know"
}

# overlay, after gc --force: the directories are exactly the layers (all ready, none with the
# work dir of an apply or a root being made left) and the activations the database records, and the overlay mounts
# under the state directory are exactly the active activations' mount points.
check_agree_overlay() {
    local have up out want bad want_up work
    have=$(storage_list)
    up=$(up_list)
    out=$(db "SELECT coalesce(group_concat(p, ' '), '') FROM (SELECT p FROM
                (SELECT 'layers/' || substr(chain_id, 8) AS p FROM layers UNION ALL
                 SELECT 'act/' || name FROM activations) ORDER BY p);
              SELECT count(*) FROM layers WHERE state != 'ready';
              SELECT coalesce(group_concat(device_path, ' '), '') FROM (SELECT device_path
                FROM activations WHERE state = 'active' ORDER BY device_path);")
    { read -r want; read -r bad; read -r want_up; } <<<"$out"
    work=$(for d in "$S"/overlay/layers/*/{work,diff.new} "$S"/overlay/act/*/upper.new; do
               [ ! -e "$d" ] || echo "${d#"$S"/overlay/}"
           done | tr '\n' ' ' | sed 's/ *$//')
    assert_eq "$have" "$want" "directories under $S/overlay vs the layer and activation records"
    assert_eq "$bad" 0 "layers not ready after gc"
    assert_eq "$work" "" "work dirs of committed layers (commit removes them), roots half made"
    assert_eq "$up" "$want_up" "overlay mounts under the state vs the active activations"
}

# check_content X DEV: the activation of image X (f or h: make-images.py two_layer_image) holds
# the right files, under a root directory as mkfs and the overlay backend make it (0755 root);
# dm-thin: DEV mounted read-only, without journal replay: nothing is written; overlay: DEV is
# the activation's overlay mount, read as it is, and the top layer's directory holds that
# layer's change set and nothing else (a layer applied again after a kill copies up nothing
# more): the three directories, etc/motd, data/layer2.txt and the whiteout of many/file-000
# as overlay writes it (a character device 0:0).
check_content() {
    local x=${1^^} dev=$2 m=$S/mnt-check
    if [ "$BACKEND" = dm-thin ]; then
        [ -b "$dev" ] || fail "no block device $dev"
        mkdir -p "$m"
        mount -o ro,noload "$dev" "$m" || fail "cannot mount $dev"
    else
        m=$dev
        awk -v p="$m" '$5 == p && $0 ~ / - overlay /' /proc/self/mountinfo | grep -q . ||
            fail "$m is not an overlay mount"
    fi
    local motd l2 wh sums want_big want_199 root
    read -r motd <"$m/etc/motd"
    read -r l2 <"$m/data/layer2.txt"
    [ -e "$m/many/file-000" ] && wh=present || wh=gone
    sums=$(sha256sum "$m/data/big.bin" "$m/many/file-199" | cut -d' ' -f1 | tr '\n' ' ')
    root=$(stat -c '%a %u:%g' "$m")
    [ "$BACKEND" = overlay ] || umount "$m"
    want_big=${x}_BIG_SHA256
    want_199=${x}_FILE199_SHA256
    assert_eq "$motd" "layer 2" "etc/motd in the activation"
    assert_eq "$l2" "layer 2 data" "data/layer2.txt"
    assert_eq "$wh" gone "whiteout of many/file-000"
    assert_eq "$sums" "${!want_big} ${!want_199} " "data/big.bin and many/file-199 in the activation"
    assert_eq "$root" "755 0:0" "mode and owner of the activation's root"
    [ "$BACKEND" = overlay ] || return 0
    local top
    top=$S/overlay/layers/$(db "SELECT substr(chain_id, 8) FROM activations WHERE device_path = '$dev'")/diff
    assert_eq "$(cd "$top" && find . -mindepth 1 -printf '%P:%y:%m\n' | LC_ALL=C sort | tr '\n' ' ' |
                 sed 's/^ *//; s/ *$//') $(stat -c '%t:%T' "$top/many/file-000")" \
        "data/layer2.txt:f:644 data:d:755 etc/motd:f:644 etc:d:755 many/file-000:c:0 many:d:755 0:0" \
        "the top layer's directory $top (its change set only)"
}

# check_snap_turns (dm-thin): read_pool_ids takes its turn at the pool's one metadata snapshot.
# A reader holding the snapshot (as thinimg's gc does: the flock, reserve, read, release) is
# waited for, and its snapshot is neither read nor released by pool_ids; a snapshot reserved
# with nobody's turn (left by a killed reader) fails pool_ids loudly, within the bound. The
# overlay backend has no such slot: nothing to check.
check_snap_turns() {
    [ "$BACKEND" = dm-thin ] || return 0
    local meta want got rc=0 out
    meta=$(losetup -j "$S/pool/$P-meta.img" -O NAME -n | head -n1)
    read_pool_ids
    want=$POOL_IDS
    flock "$meta" sh -c "dmsetup message '$P' 0 reserve_metadata_snap && touch '$S/held' &&
        sleep 2 && dmsetup message '$P' 0 release_metadata_snap" >"$S/holder.out" 2>&1 &
    local holder=$!
    wait_for 60 test -e "$S/held" || fail "the other reader took no snapshot: $(cat "$S/holder.out")"
    read_pool_ids
    wait "$holder" || fail "the other reader's snapshot was released under it: $(cat "$S/holder.out")"
    assert_eq "$POOL_IDS" "$want" "pool ids read after waiting for another reader"
    dmsetup message "$P" 0 reserve_metadata_snap
    out=$( (POOL_SNAP_WAIT_S=1 read_pool_ids) 2>&1) || rc=$?
    dmsetup message "$P" 0 release_metadata_snap
    [ "$rc" != 0 ] || fail "pool_ids read a snapshot left reserved (exit 0): $out"
    expect_in "$out" "reserve_metadata_snap on pool $P failed" "pool_ids on a snapshot left reserved"
    pass "pool_ids waits for another reader's snapshot and fails loudly on a left one"
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
