#!/usr/bin/env bash
# Install everything thinimg needs to build, test and benchmark on Debian 12.
# Idempotent and quiet when everything is present; needs root (or sudo) only when something
# is missing. Usage: scripts/install-deps.sh [--check]   (--check: report, install nothing)
set -euo pipefail
cd "$(dirname "$0")/.."

# Build: compiler, cmake, the libraries the code links.
PKGS_BUILD=(build-essential cmake pkg-config
  libsqlite3-dev libcurl4-openssl-dev libarchive-dev libdevmapper-dev libssl-dev
  libjansson-dev libexpat1-dev libncurses-dev libmicrohttpd-dev
  libisal-dev)
# Tests: cmocka, the tools tests drive or compare against, the VM harness (qemu, a busybox
# initramfs, kmod for depmod, cpio), e2fsprogs and thin-provisioning-tools used inside the VM,
# clang + compiler-rt for libFuzzer, tmux for the monitor test, node/npm for the S3 server,
# docker-registry (the CNCF distribution registry) and skopeo for the registry tests,
# mmdebstrap (a Debian root from deb.debian.org) and umoci (the reference unpack of an OCI
# image) for the Debian image tests.
PKGS_TEST=(libcmocka-dev sqlite3 e2fsprogs dmsetup thin-provisioning-tools util-linux
  busybox-static qemu-system-x86 kmod cpio clang libclang-rt-14-dev
  libarchive-tools tar gzip zstd attr jq curl tmux python3 mmdebstrap hyperfine time
  docker-registry skopeo umoci)

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

missing=()
for p in "${PKGS_BUILD[@]}" "${PKGS_TEST[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$check_only" = 1 ]; then
    echo "missing packages: ${missing[*]}"
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The local S3 server for the S3 tests (npm, pinned by package-lock.json).
if [ -f tests/s3/package.json ]; then
  if [ ! -d tests/s3/node_modules ] || [ tests/s3/package-lock.json -nt tests/s3/node_modules ]; then
    if [ "$check_only" = 1 ]; then
      echo "npm packages for tests/s3 are not installed"
      exit 1
    fi
    echo "install-deps: npm ci in tests/s3"
    (cd tests/s3 && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch tests/s3/node_modules
  fi
fi
exit 0
