"""End to end: synthetic long videos (blinks, head moves, light drift, noise) -> the real face
front end (``streamer.front_end.build_tracker``: dlib, 128-px crops) -> default spotter -> MEGC
IoU >= 0.5 scores (training/spotting_eval.py).

The issue's bar is F1 >= 0.8 at 30 and 200 fps; both sets here meet it (docs/spotting.md has
the scores per seed, size and frame rate: 30 fps 11 / 1 / 1, 0.92; 200 fps 6 / 0 / 0, 1.00).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import pytest

from streamer.frames import Frame
from streamer.front_end import build_tracker
from streamer.spotting import load_spot_params
from streamer.spotting.offline import spot_frames
from training.spotting_eval import GroundTruth, Prediction, evaluate
from training.synthetic.layouts import write_long_videos
from training.synthetic.settings import SynthSettings

SIZE = (320, 240)
CASES = {30: dict(subjects=2, duration_s=20.0, n_micro=4, n_macro=2),
         200: dict(subjects=2, duration_s=4.5, n_micro=2, n_macro=1)}


def frames(folder: Path, fps: float):
    for index, path in enumerate(sorted(folder.glob("*.jpg"))):
        yield Frame(index, index / fps, cv2.imread(str(path)), time.monotonic())


@pytest.fixture(scope="session", params=sorted(CASES), ids=lambda fps: f"{fps}fps")
def spotted(request, tmp_path_factory):
    """(fps, scores) of the default profile on one synthetic long-video set with every distractor."""
    fps = request.param
    root = tmp_path_factory.mktemp(f"long{fps}")
    write_long_videos(root, videos_per_subject=1, fps=fps, size=SIZE, seed=0, settings=SynthSettings(),
                      **CASES[fps])
    truth = json.loads((root / "ground_truth.json").read_text())
    params = load_spot_params()
    truths, predictions = [], []
    for video in truth["videos"]:
        tracker = build_tracker()
        result = spot_frames(frames(root / video["frames_folder"], fps), tracker, params, fps)
        assert result.frames == video["n_frames"] and len(result.signal) >= 0.95 * video["n_frames"]
        truths += [GroundTruth(video["video"], e["onset"]["index"], e["offset"]["index"], e["kind"])
                   for e in video["events"]]
        predictions += [Prediction(video["video"], i.onset, i.offset)
                        for intervals in result.intervals.values() for i in intervals]
    return fps, evaluate(truths, predictions, fps)


def test_spotting_f1_reaches_the_issue_bar(spotted):
    fps, result = spotted
    assert result.overall.f1 >= 0.8, result.as_dict()


def test_spotting_finds_every_expression_kind(spotted):
    """Both kinds are found: a profile that spotted only the easy micro-expressions (or only the big
    macros) could still reach F1 0.8 on one kind alone."""
    fps, result = spotted
    for kind in ("micro", "macro"):
        assert getattr(result, kind).tp >= 1, result.as_dict()
