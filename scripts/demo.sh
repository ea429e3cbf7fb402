#!/usr/bin/env bash
# The main job on the bundled example: builds an example source and runs process-image on it.
# (Filled in by the pipeline work; until then it says so.)
set -euo pipefail
echo "demo: process-image is not available in this build yet" >&2
exit 1
