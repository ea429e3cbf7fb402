#!/usr/bin/env bash
# reboot.sh BUILD: the pipeline across a reboot (label vm; runs on the host, boots the VM twice).
# The state directory and the pool's backing files live on the host (shared into both boots),
# so the second boot sees exactly what a rebooted host sees: files, database, no dm devices.
set -euo pipefail
BUILD=$1
HERE=$(cd "$(dirname "$0")" && pwd)
STATE=$(mktemp -d "$BUILD/reboot-state-XXXXXX")
trap 'rm -rf "$STATE"' EXIT
"$HERE/../vm/run" --timeout 900 -- bash "$HERE/reboot_guest.sh" first "$BUILD" "$STATE"
"$HERE/../vm/run" --timeout 900 -- bash "$HERE/reboot_guest.sh" second "$BUILD" "$STATE"
echo "reboot: all passed"
