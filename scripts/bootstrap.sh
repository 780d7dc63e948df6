#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and installs mer into it.
# Usage: scripts/bootstrap.sh [extras]   e.g. scripts/bootstrap.sh dev
# pip's output goes to .venv/install.log; on failure its tail is shown.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# Reinstall only when the declared dependencies changed since the last install
# with these extras (or with more: the dev install covers the plain one).
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${extras}"
stamp=.venv/.mer-installed
if [ -f "$stamp" ] && { [ "$(cat "$stamp")" = "$want" ] || { [ -z "$extras" ] && [ "$(cut -d' ' -f1 "$stamp")" = "${want% }" ]; }; }; then
    exit 0
fi
echo "bootstrap: installing mer${extras:+[$extras]} into .venv (first run takes a minute or two; log: .venv/install.log)" >&2
if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".${extras:+[$extras]}"; } > .venv/install.log 2>&1; then
    tail -n 30 .venv/install.log >&2
    echo "bootstrap: pip install failed (full log: .venv/install.log)" >&2
    exit 1
fi
echo "$want" > "$stamp"
