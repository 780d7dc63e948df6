#!/usr/bin/env bash
# Sets up the virtual environment and runs mer's main job on an embedded default:
# synthetic micro-expression clips and a long video are generated, then read back
# through the dataset readers, which print what they found.
# Usage: scripts/demo.sh [OUT_DIR]   (default: runs/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/demo}"
scripts/bootstrap.sh
mer=.venv/bin/mer
rm -rf "$out/clips" "$out/long"   # the demo's own outputs from an earlier run

echo "== 1. synthetic micro-expression clips in the CASME II layout (200 fps, 224x224)"
"$mer" synth clips --out "$out/clips" --subjects 4 --per-class 2 --fps 200 --size 224 --seed 0
echo "== 2. read back by the CASME II reader"
"$mer" data inspect --dataset casme2 --root "$out/clips"
echo "== 3. long videos with micro and macro events, blinks, head motion, light drift and noise (30 fps, 640x480)"
"$mer" synth long --out "$out/long" --subjects 2 --duration 12 --micro 4 --macro 2 --fps 30 --size 640x480 --video mp4 --seed 0
echo "== 4. read back by the SAMM Long Videos reader"
"$mer" data inspect --dataset samm-lv --root "$out/long"
echo "Done: everything is in $out (see README.md, 'What the demo writes')."
