"""Every model of the zoo, end to end on synthetic clips, through the real command line:

``mer synth clips`` -> ``mer prepare`` (the streaming face front end) -> ``mer train`` (LOSO,
the model's ``configs/train/<name>_synth.toml``) -> ``mer export`` -> the stream's recognizer.
The transfer-learning dense network fine-tunes, as its paper does, from weights pretrained on
macro-expression faces: ``mer synth faces`` (RAF-DB's layout) -> ``mer pretrain``
(``configs/train/<name>_synth_pretrain.toml``) -> ``mer train --init-weights``.

Each model must beat chance on held-out subjects, and the engine exported from a fold's
weights, fed by the live path's own input code from that clip's face crops, must give the
scores the trainer recorded for the held-out sample: train-time and serve-time inputs are
the same. The clips are made easy (5-7 px expressions, 30 fps, 64 px crops) so that tiny
models learn them in seconds; this is a test of the machinery, not of the models' accuracy.
The closed-form models (LBP-TOP + SVM, Bi-WOOF + SVM) fit their SVM on each fold's training
clips instead of running epochs; LBP-TOP's thresholds would flip on the smallest difference
between the trainer's and the stream's grey crops, so its row checks that they are identical.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.models import list_models
from streamer.cli import main as mer
from tests.model_zoo import synth_recipe_path
from tests.streaming_fixtures import mer as mer_subprocess
from tests.streaming_fixtures import synth_long

pytestmark = pytest.mark.slow

ZOO = [name for name in list_models() if synth_recipe_path(name).is_file()]
CHANCE = 1 / 3
PRETRAINED = {"tldn"}  # fine-tuned from macro-expression pretraining, as paper 002 does


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """48 synthetic clips (4 subjects x 4 per class x 3 classes), aligned and cached by mer prepare."""
    root = tmp_path_factory.mktemp("zoo")
    config = root / "easy.toml"
    config.write_text("[timing]\nmicro_amplitude_px = [5.0, 7.0]\n")
    assert mer(["-q", "synth", "clips", "--out", str(root / "clips"), "--subjects", "4", "--per-class", "4",
                "--fps", "30", "--size", "192", "--config", str(config), "--no-progress"]) == 0
    assert mer(["-q", "prepare", "--dataset", "casme2", "--root", str(root / "clips"), "--out", str(root / "cache"),
                "--size", "64", "--workers", "2"]) == 0
    return root / "cache"


def _pretrained(name: str, root: Path) -> Path:
    """Weights of ``name`` pretrained on 360 synthetic macro-expression faces of 40 subjects other
    than the clips' (another seed): a RAF-DB layout read by the real reader."""
    assert mer(["-q", "synth", "faces", "--out", str(root / "faces"), "--subjects", "40", "--per-class", "3",
                "--seed", "1", "--no-progress"]) == 0
    recipe = synth_recipe_path(name).with_name(f"{name}_synth_pretrain.toml")
    assert mer(["-q", "pretrain", "--model", name, "--dataset", "rafdb", "--root", str(root / "faces"),
                "--recipe", str(recipe), "--out", str(root / "pretrained")]) == 0
    return root / "pretrained" / "weights.pth"


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """``trained(name)`` -> the LOSO run folder of ``name`` on the prepared clips (trained once)."""
    runs: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in runs:
            out = tmp_path_factory.mktemp(f"run_{name}")
            start = []
            if name in PRETRAINED:
                start = ["--init-weights", str(_pretrained(name, tmp_path_factory.mktemp(f"pretrain_{name}")))]
            assert mer(["-q", "train", "--model", name, "--dataset", "prepared", "--root", str(prepared),
                        "--recipe", str(synth_recipe_path(name)), "--out", str(out), "--workers", "2", *start]) == 0
            runs[name] = out
        return runs[name]

    return run


def _exported(run: Path, subject: str, out: Path) -> Path:
    assert mer(["-q", "export", "--checkpoint", str(run / "weights" / f"{subject}.pth"), "--format", "onnx",
                "--out", str(out)]) == 0
    return out


def _held_out_rows(run: Path, subject: str) -> list[dict]:
    with open(run / "predictions.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["subject"] == subject]


def _serve(recognizer, clip_file: Path):
    """What the live path computes for one cached clip (its crops as the stream's ring holds them)."""
    with np.load(clip_file) as stored:
        frames, onset, apex, offset, fps = (stored["frames"], int(stored["onset"]), int(stored["apex"]),
                                            int(stored["offset"]), float(stored["fps"]))
    if recognizer.clip_spec is None:
        grey = [cv2.cvtColor(np.ascontiguousarray(frames[i]), cv2.COLOR_RGB2GRAY) for i in (onset, apex)]
        return recognizer.classify(*grey)
    clip = frames[onset:offset + 1]
    if recognizer.clip_spec.color == "gray":
        clip = np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in clip])
    return recognizer.classify_clip(clip, 0, apex - onset, offset - onset, fps)


@pytest.mark.parametrize("name", ZOO)
def test_model_trains_beats_chance_and_serves_what_it_trained_on(name, prepared, trained, tmp_path):
    from streamer.recognizer import Recognizer

    run = trained(name)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["all"]["acc"] > 1.5 * CHANCE and metrics["all"]["uf1"] > 1.35 * CHANCE, metrics["all"]

    subject = "sub01"
    recognizer = Recognizer(_exported(run, subject, tmp_path / "engine"), backend="onnxruntime")
    rows = _held_out_rows(run, subject)
    assert len(rows) == 12
    for row in rows:
        served = _serve(recognizer, prepared / "clips" / subject / f"{row['sample']}.npz")
        trained = {label: float(row[f"score_{label}"]) for label in served.scores}
        assert served.scores == pytest.approx(trained, abs=2e-4), (row["sample"], served.scores, trained)


def test_a_colour_clip_engine_runs_in_the_live_pipeline(trained, tmp_path):
    """``mer analyze`` with EDMDBN's engine, which looks at colour frames from onset to offset: the
    ring keeps colour crops, intervals are classified once final, events name the engine."""
    name = "edmdbn"
    engine = _exported(trained(name), "sub01", tmp_path / "engine")
    folder = synth_long(tmp_path / "long", fps=30, duration=12, micro=3, macro=1, seed=5)
    out = tmp_path / "analyze"
    mer_subprocess("analyze", *map(str, sorted(folder.glob("*.mp4"))), "--engine", str(engine), "--out", str(out),
                   "--no-progress")
    (run,) = [path for path in out.iterdir() if path.is_dir()]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert events and summary["error"] is None and summary["events"] == len(events)
    assert all(event["engine"].startswith(f"{name}@") for event in events)
    assert summary["intervals_lost"] == 0 and summary["speculative_hits"] == 0  # no speculation: needs the offset
