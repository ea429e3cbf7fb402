#!/usr/bin/env bash
# Scale benchmark: command times on states of 100, 1,000 and 10,000 images (and runs, and
# families in a dir: source), with each series' growth exponent; see bench/scale.py.
# Builds the release configuration in build/ if needed.
#
#   bench/scale.sh [scale.py options]     e.g. --n 100,1000 --runs 5 --base OLD/thinimg
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
if [ ! -x "$BUILD/thinimg" ] || [ -n "${REBUILD:-}" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j2 --target thinimg >/dev/null
fi
exec python3 bench/scale.py --bin "$BUILD/thinimg" "$@"
