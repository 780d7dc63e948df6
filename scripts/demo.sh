#!/usr/bin/env bash
# Sets up the virtual environment and runs mer's main job on an embedded default:
# a synthetic long video (micro- and macro-expressions among blinks, head moves, light
# drift and noise) is analysed by `mer analyze` and scored against its ground truth, then
# played as a live stream by `mer stream` while `mer subscribe`, a separate process,
# prints the events it receives over ZeroMQ. The engine is the one shipped with mer
# (trained on synthetic data only).
# Usage: scripts/demo.sh [OUT_DIR]   (default: runs/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/demo}"
scripts/bootstrap.sh
mer=.venv/bin/mer
rm -rf "$out/long" "$out/analyze" "$out/stream"   # the demo's own outputs from an earlier run

echo "== 1. a synthetic long video: 2 subjects x 20 s, 30 fps, 640x480, 4 micro + 2 macro each, all distractors"
"$mer" synth long --out "$out/long" --subjects 2 --duration 20 --micro 4 --macro 2 --fps 30 --size 640x480 \
    --video mp4 --no-frames --seed 0
echo "== 2. mer analyze: events, per-frame CSV, spotted intervals and a timeline per video"
"$mer" analyze "$out"/long/*.mp4 --out "$out/analyze"
echo "== 3. the spotted intervals against the ground truth (MEGC protocol, IoU >= 0.5)"
cat "$out"/analyze/*/intervals.csv | awk 'NR == 1 || $0 !~ /^video,/' > "$out/analyze/intervals.csv"
"$mer" eval-spot --gt "$out/long/SAMM_LongVideos_V2_Release.xlsx" --pred "$out/analyze/intervals.csv"
echo "== 4. mer stream plays the first video in real time; mer subscribe (another process) prints its events"
video=$(ls "$out"/long/*.mp4 | head -n 1)
"$mer" -q subscribe --from-seq 1 --timeout 12 &
subscriber=$!
"$mer" stream --source "$video" --realtime --stream-id demo --journal "$out/stream/events.jsonl" --metrics-port 0
wait "$subscriber" || true
echo "Done: everything is in $out (see README.md, 'What the demo writes')."
