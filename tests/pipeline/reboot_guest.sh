#!/usr/bin/env bash
# reboot_guest.sh PHASE BUILD STATE: one boot of the reboot test (see reboot.sh).
PHASE=$1
shift
STATE=$2
source "$(dirname "$0")/lib.sh"
export THINIMG_STATE_DIR=$STATE THINIMG_POOL=reboot
T="$BIN --log-level warn"
EX=$BUILD/example
mkdir -p "$STATE/mnt-test"
case $PHASE in
first)
    $T setup-pool --data-size 256M >/dev/null
    $T process-image --device-size 128M --json "dir:$EX/images/busybox/" >"$STATE/first.json"
    DEV=$(jget "$STATE/first.json" .device_path)
    mount "$DEV" "$STATE/mnt-test"
    echo "written before the reboot" >"$STATE/mnt-test/root/marker"
    umount "$STATE/mnt-test"
    $T runs --all --limit 0 --json >"$STATE/runs-first.json"
    pass "first boot: image active at $DEV, marker written"
    ;;
second)
    # Nothing is active after the reboot: process-image reassembles the pool from its files,
    # finds every layer in the pool and reactivates the activation, with the VM's data.
    [ -z "$(dmsetup ls 2>/dev/null | grep '^reboot' || true)" ] || fail "devices survived the reboot?"
    $T process-image --json "dir:$EX/images/busybox/" >"$STATE/second.json"
    DEV=$(jget "$STATE/second.json" .device_path)
    assert_eq "$DEV" "$(jget "$STATE/first.json" .device_path)" "device path after the reboot"
    assert_eq "$(jget "$STATE/second.json" '[.layers[].device_id | tostring] | join(" ")')" \
        "$(jget "$STATE/first.json" '[.layers[].device_id | tostring] | join(" ")')" \
        "layer devices after the reboot"
    mount -o ro "$DEV" "$STATE/mnt-test"
    assert_eq "$(cat "$STATE/mnt-test/root/marker")" "written before the reboot" "marker"
    assert_eq "$(cat "$STATE/mnt-test/etc/issue")" "thinimg example (busybox)" "image content"
    umount "$STATE/mnt-test"
    # The file systems survived the reboot: every layer device and the activation check clean.
    SECTORS=$(blockdev --getsz "$DEV")
    for id in $(jget "$STATE/second.json" '.layers[].device_id'); do
        fsck_thin reboot "$id" "$SECTORS"
    done
    fsck_dev "$DEV"
    # Nothing fetched or unpacked twice: this boot's fetch and unpack runs all handed off.
    $T runs --all --limit 0 --json >"$STATE/runs-second.json"
    NEW=$(jq -r --slurpfile old "$STATE/runs-first.json" \
        '[.[] | select(.version as $v | ($old[0] | map(.version) | index($v)) | not)]' \
        "$STATE/runs-second.json")
    DONE=$(echo "$NEW" | jq -r '[.[] | select((.type=="fetch" or .type=="unpack") and .outcome!="handoff")] | length')
    assert_eq "$DONE" 0 "fetch/unpack runs that did work after the reboot"
    pass "second boot: pool reassembled, layers found, activation back with its data; nothing fetched or unpacked again"
    ;;
*) fail "unknown phase $PHASE" ;;
esac
