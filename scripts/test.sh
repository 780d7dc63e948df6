#!/usr/bin/env bash
# Sets up the virtual environment (with test extras) and runs the whole test suite.
# Real-data tests read ../shared/data (or $MER_DATA) and skip cleanly when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
exec .venv/bin/python -m pytest "$@"
