#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and installs mer into it.
# Usage: scripts/bootstrap.sh [extras]   e.g. scripts/bootstrap.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
stamp=".venv/.mer-installed${extras:+-$extras}"
if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# Reinstall only when the declared dependencies changed since the last install.
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
fi
