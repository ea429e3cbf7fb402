#!/usr/bin/env bash
# kill_matrix.sh BUILD: kill -9 at every transition of every machine, then new processes.
# Issue 7, acceptance 1; issue 17: the same matrix against either storage backend
# (THINIMG_BACKEND, tests/faults/lib.sh): dm-thin (the default, label dm: inside the VM) and
# overlay (natively: ctest faults_kill_matrix_overlay).
#
# Every fault point `<type>.<transition>.start|.end` of the four machines (fetch, unpack,
# activate, process) is killed, plus the middle of the long transitions (download,
# create-device with its mkfs, apply-layer: THINIMG_FAULT=POINT+Nms). A case runs on a fresh
# state directory (and pool):
#
#   1. process-image with THINIMG_FAULT=POINT: the process must die by SIGKILL at that point
#      (a point that never fires fails the case). A chain case does this once per point of its
#      list, in pipeline order: each new process resumes what the last one left and is killed
#      at the next point;
#   2. a new process-image of the same image converges: exit 0, every run finished and
#      succeeded, every layer ready, the activation holds the right files;
#   3. ids (check_ids): dm-thin: every id the sequence handed out has one row, no two
#      layers/activations share an id, every id in the pool is known to the database; overlay:
#      no device ids at all, every directory under STATE/overlay is named by a record;
#   4. `gc --dry-run --json` lists exactly the orphans the kills left (EXPECT below);
#   5. `gc --force` removes them; then `gc --dry-run` finds nothing, and the storage agrees with
#      the database (check_agree): dm-thin: the pool's ids are the ids of the rows that are not
#      deleted, the dm devices are the pool + the activation; overlay: the directories are the
#      recorded layers and activations (no apply's work dir left), the overlay mounts under the
#      state are the active activations.
#
# What each kill point leaves behind on dm-thin (a chain expects the union of its points):
#   unpack.create-device.end       the device of the interrupted attempt was created, activated
#                                  and formatted, but no layer records it: the next attempt
#                                  takes a fresh one (an interrupted attempt's device is never
#                                  trusted); gc finds it `unreferenced`.
#   unpack.create-device.start+N   the same; or `creating` when the kill came between the id's
#                                  allocation and its confirmation; or nothing when it came
#                                  before the allocation (read from the database after the kill)
#   activate.create-snapshot.end   nothing: the next attempt takes its own snapshot over
#   fetch.download.start+N         nothing: the partial download belongs to the unfinished run,
#                                  which the next process resumes and completes
#   unpack.* after check-unpacked  nothing: the resumed run takes the chain lock of the dead
#                                  process over and releases it at its end
#   everything else                nothing
# Ids are deterministic on a fresh pool: layer 1 gets id 1, layer 2 id 2, the activation the
# next one, unless a kill made a process allocate more. On overlay no kill leaves anything
# (kill_leftovers in lib.sh): a layer's directory is named by its chain id, an activation's by
# its name, and the next attempt works on the same one; its create-device (two mkdirs) has no
# middle to kill in (LONG_TRANSITIONS), so that delayed case does not apply there.
#
# Delayed points: N is 40% of the transition's duration in the clean run (case "clean"), so the
# kill lands inside it whatever the speed of the machine; the case checks that it did (the
# transition has no COMPLETE event after the kill) and retries with half the delay if not.
# The clean run and the kills in the middle of download and apply-layer use image h (16 MiB of
# data: long enough to land in); the rest use the light image f (make-images.py).
#
# Under TCG each thinimg start costs a second or more (it loads ~50 shared libraries), so the
# points of one machine share one case (a chain): 4 chains and 4 single cases instead of 40
# cases of 6 processes each.
#
# Some cases only (a regular expression over the case names: clean, chain-fetch, chain-unpack,
# chain-activate, chain-process, and the single points):
#   FAULTS_ONLY='chain-unpack|create-device' bash tests/faults/kill_matrix.sh BUILD  (in the VM)
#   THINIMG_BACKEND=overlay bash tests/faults/kill_matrix.sh BUILD                (natively)
source "$(dirname "$0")/../pipeline/lib.sh"
source "$(dirname "$0")/lib.sh"
trap teardown_all EXIT

DEVSIZE=64M
# NAME|IMAGE|SKIP|EXPECT|OPTIONS|POINTS   (EXPECT: the gc orphans on dm-thin, "kind:id ...",
# which kill_leftovers turns into the backend's; "@created": read from the database after the
# kill; POINTS: one, or a chain in pipeline order; @outlive: see outlive_mount in lib.sh)
CASES=(
    "chain-fetch|f|0||--fetch-queue 1|fetch.check-exists.start fetch.check-exists.end
        fetch.download.start fetch.download.end fetch.validate.start fetch.validate.end
        fetch.record.start fetch.record.end"
    "chain-unpack|f|0|unreferenced:1||unpack.check-unpacked.start unpack.check-unpacked.end
        unpack.create-device.start unpack.create-device.end unpack.apply-layer.start
        unpack.apply-layer.end unpack.verify.start unpack.verify.end unpack.commit.start
        unpack.commit.end"
    "chain-activate|f|0|||activate.check-snapshot.start activate.check-snapshot.end
        activate.create-snapshot.start activate.create-snapshot.end activate.register.start
        activate.register.end"
    "chain-process|f|0|||process.check-active.start process.check-active.end
        process.resolve.start process.resolve.end process.fetch.start process.fetch.end
        process.unpack.start process.unpack.end process.activate.start process.activate.end"
    # the upper layer: create_snap of the committed base instead of create_thin + mkfs
    "unpack.create-device.end/layer2|f|1|unreferenced:2||unpack.create-device.end"
    # in the middle of the long ones (DELAY: 40% of the clean run's duration)
    "fetch.download.start+DELAY|h|0||--fetch-queue 1|fetch.download.start+DELAY"
    "unpack.create-device.start+DELAY|f|0|@created||unpack.create-device.start+DELAY"
    "unpack.apply-layer.start+DELAY|h|0|||unpack.apply-layer.start+DELAY"
    # the apply's mount outlives the killed process for a while (@outlive: outlive_mount, on
    # the backends where that can stand in the way), as it does by a moment when its mount
    # child dies after it: the next process waits for it
    "unpack.apply-layer.start/outlived|f|0|||unpack.apply-layer.start @outlive"
    # the backend's own points (BACKEND_POINTS; cases of the other backend's do not apply):
    # a new diff (the base layer's: the first make-root) and upper (the third) killed between
    # its mkdir and its root's metadata: the activation's root is still 0755 root
    "overlay.make-root/diff|f|0|||overlay.make-root"
    "overlay.make-root/upper|f|2|||overlay.make-root"
)

# transition_ms TYPE TRANSITION: how long the first run of TYPE spent in TRANSITION (from its
# COMPLETE event and the event before it).
transition_ms() {
    db "SELECT e.ts_ms - (SELECT max(p.ts_ms) FROM fsm_events p WHERE p.version = e.version
                          AND p.seq < e.seq)
        FROM fsm_events e JOIN fsm_runs r ON r.version = e.version
        WHERE r.type = '$1' AND e.type = 3 AND e.state = '$2'
        ORDER BY r.created_ms, r.version LIMIT 1"
}

# orphans the killed processes left among the devices: rows no layer or activation records,
# named as gc names them (creating / unreferenced / failed).
created_orphans() {
    db "SELECT coalesce(group_concat(k, ' '), '') FROM (SELECT
          CASE d.state WHEN 'ready' THEN 'unreferenced' ELSE d.state END || ':' || d.dev_id AS k
        FROM devices d WHERE d.pool = '$P' AND d.state != 'deleted'
        AND NOT EXISTS (SELECT 1 FROM layers l WHERE l.pool = d.pool AND l.dev_id = d.dev_id)
        AND NOT EXISTS (SELECT 1 FROM activations a WHERE a.pool = d.pool AND a.dev_id = d.dev_id)
        ORDER BY k)"
}

# kill_at POINT SKIP OPTIONS IMAGE: one process-image killed at POINT. Returns 2 when a delayed
# kill landed after the transition had completed.
kill_at() {
    local point=$1 skip=$2 opts=$3 img=$4 rc=0
    # (in a subshell whose stderr is discarded: bash reports the SIGKILL of its child there)
    # shellcheck disable=SC2086
    (THINIMG_FAULT=$point THINIMG_FAULT_SKIP=$skip \
        $T process-image --device-size $DEVSIZE $opts --json "$img" >"$S/kill.json" 2>"$S/kill.err"
     exit $?) 2>/dev/null || rc=$?
    grep -q "fault point ${point%%+*}: SIGKILL" "$S/kill.err" ||
        fail "fault point $point never fired (exit $rc): $(tail -n 3 "$S/kill.err")"
    if [[ "$point" == *+* ]] && [ "$rc" = 0 ]; then
        # the whole process finished before the delay (faster than the clean run)
        echo "   the process finished before the delayed kill"
        return 2
    fi
    assert_eq "$rc" 137 "exit status of the process-image killed at $point (SIGKILL)"
    if [[ "$point" == *+* ]]; then
        local ty=${point%%.*} tr=${point#*.}
        tr=${tr%%.*}
        local done
        done=$(db "SELECT count(*) FROM fsm_events e JOIN fsm_runs r ON r.version = e.version
                   WHERE r.type = '$ty' AND e.type = 3 AND e.state = '$tr'")
        if [ "$done" != 0 ]; then
            echo "   the kill landed after $ty.$tr had completed"
            return 2
        fi
    fi
    if [[ "$point" == fetch.download.start+* ]]; then
        ls "$S"/tmp/fetch-*.part >/dev/null 2>&1 || fail "no partial download after the kill"
        assert_eq "$(db "SELECT count(*) FROM downloads")" 1 "downloads rows after the kill"
    fi
    return 0
}

# run_case IMAGE SKIP EXPECT OPTIONS POINTS (in a subshell, on the env fresh_env made)
# -> 0 ok, 1 failed, 2 a delayed kill landed late
run_case() {
    local x=$1 skip=$2 expect=$3 opts=$4 points=$5
    local img=dir:$FX/images/$x/ t0 rc
    t0=$(ms)
    lap start
    storage_setup 128M

    # 1. the killed processes
    for point in $points; do
        if [ "$point" = @outlive ]; then
            outlive_mount 1 # within the apply-layer retries (machine_policy_quick: >= 2 s)
            continue
        fi
        rc=0
        kill_at "$point" "$skip" "$opts" "$img" || rc=$?
        [ "$rc" = 0 ] || return "$rc"
    done
    [ "$expect" = "@created" ] && expect=$(created_orphans)
    expect=$(kill_leftovers "$expect")
    lap kills

    # 2. a new process converges
    # shellcheck disable=SC2086
    $T process-image --device-size $DEVSIZE $opts --json "$img" >"$S/p.json" 2>"$S/p.err" ||
        fail "process-image after the kill failed: $(tail -n 5 "$S/p.err")"
    lap converge
    local st dev
    IFS='|' read -r st dev <<<"$(json "$S/p.json" "json_extract(J, '$.state') || ' ' ||
        (SELECT group_concat(json_extract(value, '$.state'), ' ') FROM json_each(J, '$.layers'))" \
        "json_extract(J, '$.device_path')")"
    assert_eq "$st" "ready ready ready" "image and layer states"
    assert_eq "$(db "SELECT count(*) FROM fsm_runs WHERE status != 3;
                     SELECT coalesce(group_concat(type || ':' || outcome), '') FROM fsm_runs
                     WHERE outcome NOT IN (0, 4)" | tr '\n' ' ')" "0  " \
        "unfinished runs, runs that did not succeed"
    check_content "$x" "$dev"
    lap content

    # 3. ids
    check_ids
    lap ids

    # 4. exactly the expected orphans
    $T gc --dry-run --json >"$S/gc1.json" || fail "gc --dry-run"
    assert_eq "$(gc_orphans "$S/gc1.json")" "$expect" "gc --dry-run orphans"
    lap gc

    # 5. gc --force removes them, then everything agrees
    $T gc --force --json >"$S/gc2.json" 2>"$S/gc2.err" || fail "gc --force: $(cat "$S/gc2.err")"
    $T gc --dry-run --json >"$S/gc3.json" || fail "gc --dry-run after --force"
    assert_eq "$(gc_orphans "$S/gc3.json")" "" "orphans after gc --force"
    lap gc-force
    check_agree
    lap agree
    echo "   $(($(ms) - t0)) ms, orphans: ${expect:-none};$LAPS"
    return 0
}

# one_case NAME ARGS...: a fresh env, run_case in a subshell, teardown.
one_case() {
    local name=$1
    shift
    fresh_env "$name"
    local rc=0
    (run_case "$@") || rc=$?
    teardown_env
    ENVS=()
    return $rc
}

clean_case() {
    storage_setup 128M
    $T process-image --device-size $DEVSIZE --fetch-queue 1 --json "$IMG_H" >"$S/p.json" 2>"$S/p.err" ||
        fail "clean process-image: $(tail -n 5 "$S/p.err")"
    for k in fetch.download unpack.create-device unpack.apply-layer; do
        echo "$k $(transition_ms "${k%%.*}" "${k#*.}")"
    done >"$CURSOR_DIR/durations"
    check_content h "$(json "$S/p.json" "json_extract(J, '$.device_path')")"
    check_ids
    $T gc --dry-run --json >"$S/gc.json" || fail "gc --dry-run"
    assert_eq "$(gc_orphans "$S/gc.json")" "" "orphans of a clean run"
    check_agree
    check_snap_turns
}

selected() { [ -z "${FAULTS_ONLY:-}" ] || [[ "$1" =~ $FAULTS_ONLY ]]; }
FAILED=()
n=0
declare -A DUR
want_clean=1
if [ -n "${FAULTS_ONLY:-}" ]; then
    want_clean=0
    selected clean && want_clean=1
    for c in "${CASES[@]}"; do [[ "$c" == *DELAY* ]] && selected "${c%%|*}" && want_clean=1; done
fi
if [ "$want_clean" = 1 ]; then
    echo "== clean"
    n=$((n + 1))
    fresh_env kclean
    (clean_case) || FAILED+=("clean")
    teardown_env
    ENVS=()
    while read -r k v; do DUR[$k]=$v; done <"$CURSOR_DIR/durations"
    echo "   clean run: $(for k in "${!DUR[@]}"; do printf '%s=%sms ' "$k" "${DUR[$k]}"; done)"
fi

for c in "${CASES[@]}"; do
    IFS='|' read -r name x skip expect opts points <<<"$(echo $c)"
    selected "$name" || continue
    n=$((n + 1))
    if [[ "$points" == *+DELAY ]]; then
        base=${points%%+*}
        key=${base%.start}
        if [[ " $LONG_TRANSITIONS " != *" $key "* ]]; then
            echo "== $name: not on $BACKEND ($key has no middle to kill in)"
            n=$((n - 1))
            continue
        fi
        d=${DUR[$key]:-}
        [ -n "$d" ] || { echo "FAIL: no clean duration for $key"; FAILED+=("$name"); continue; }
        delay=$((d * 4 / 10))
        ok=1
        for attempt in 1 2 3; do
            [ "$delay" -lt 20 ] && delay=20
            echo "== $base+${delay}ms (clean $key: ${d}ms)"
            rc=0
            one_case "k$n" "$x" "$skip" "$expect" "$opts" "$base+${delay}ms" || rc=$?
            [ "$rc" = 2 ] && { delay=$((delay / 2)); continue; }
            [ "$rc" = 0 ] && ok=0
            break
        done
        [ "$ok" = 0 ] || FAILED+=("$name")
        continue
    fi
    na=""
    for point in $points; do
        if [ "$point" = @outlive ]; then outlive_applies || na=$point; else point_applies "$point" || na=$point; fi
    done
    if [ -n "$na" ]; then
        echo "== $name: not on $BACKEND ($na: lib.sh, BACKEND_POINTS and outlive_applies)"
        n=$((n - 1))
        continue
    fi
    echo "== $name: $points"
    one_case "k$n" "$x" "$skip" "$expect" "$opts" "$points" || FAILED+=("$name")
done

echo "kill matrix ($BACKEND): $n cases, ${#FAILED[@]} failed${FAILED:+: ${FAILED[*]}}"
[ "${#FAILED[@]}" = 0 ]
