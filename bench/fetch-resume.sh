#!/usr/bin/env bash
# bench/fetch-resume.sh: resume at the byte on a big object (docs/sources.md, "Downloading each
# byte once"). Runs the S3 test tests/s3/test_byteonce_s3.c with its resume object made
# SIZE_MIB (default 300): `thinimg fetch` through a throttled proxy in front of s3rver,
# killed 10 times (kill -9 and SIGINT in turn) at random points of the object's first half,
# then finished; prints the bytes the server sent / the object's size (goal <= 1.01) and
# checks the digest. The facsimile-bucket count (bytes sent / unique layers) is printed too.
#
#   bench/fetch-resume.sh [SIZE_MIB]       (BUILD=build-check by default: the test binary)
#
# Needs tests/s3/node_modules (scripts/install-deps.sh). The harness stops with the test.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-300}
BUILD=${BUILD:-build-check}
B="$BUILD/tests/test_byteonce_s3"
[ -x "$B" ] || { echo "bench/fetch-resume.sh: no $B; build first" >&2; exit 1; }
[ -d tests/s3/node_modules/s3rver ] || { echo "bench/fetch-resume.sh: run scripts/install-deps.sh" >&2; exit 1; }
THINIMG_TEST_RESUME_MIB=$SIZE_MIB THINIMG_BIN="$BUILD/thinimg" THINIMG_SOURCE_DIR="$PWD" \
  THINIMG_BUILD_DIR="$BUILD" "$B" 2>&1 | grep -E '^(resume|facsimile)|FAILED|PASSED|ERROR|LINE'
