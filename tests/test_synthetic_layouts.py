"""The written layouts load with the real dataset readers, decode as videos, and are byte-deterministic."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import pytest

from engines.errors import ConfigError
from streamer.cli import main
from training.datasets import load_dataset
from training.synthetic.settings import SynthSettings


def _synth(*args: str) -> int:
    return main(["-q", "synth", *args, "--no-progress"])


@pytest.fixture(scope="module")
def clips_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    assert _synth("clips", "--out", str(root), "--subjects", "2", "--per-class", "2", "--size", "96", "--fps", "100",
                  "--seed", "11") == 0
    return root


def test_clips_load_with_the_casme2_reader(clips_root):
    samples = load_dataset("casme2", root=clips_root)
    assert len(samples) == 2 * 3 * 2
    assert Counter(s.subject for s in samples) == {"sub01": 6, "sub02": 6}
    assert Counter(s.labels["megc3"] for s in samples) == {"positive": 4, "surprise": 4, "negative": 4}
    truth = json.loads((clips_root / "ground_truth.json").read_text())
    by_folder = {clip["folder"]: clip for clip in truth["clips"]}
    for sample in samples:
        event = by_folder[f"{sample.subject}/{sample.sample_id}"]["events"][0]
        assert (sample.onset, sample.apex, sample.offset) == tuple(event[k]["frame"] for k in ("onset", "apex", "offset"))
        assert sample.emotion == event["emotion"]
        assert ["AU" + au for au in sample.action_units] == event["action_units"]
        assert len(sample.frames) == sample.offset - sample.onset + 1
        assert sample.frames[0].name == f"img{sample.onset}.jpg"
        assert 1.0 <= event["amplitude_px"] <= 4.0
        assert 1 / 25 <= event["duration_s"] <= 0.5 + 1e-9
    assert (clips_root / "sub01" / samples[0].sample_id / "img1.jpg").is_file()
    assert cv2.imread(str(samples[0].frames[0])).shape == (96, 96, 3)


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(clips_root, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    args = ("--subjects", "2", "--per-class", "2", "--size", "96", "--fps", "100")
    assert _synth("clips", "--out", str(again), *args, "--seed", "11") == 0
    assert _synth("clips", "--out", str(other), *args, "--seed", "12") == 0
    files = sorted(p.relative_to(clips_root) for p in clips_root.rglob("*") if p.is_file() and p.suffix != ".xlsx")
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.suffix != ".xlsx")
    assert all((clips_root / f).read_bytes() == (again / f).read_bytes() for f in files)
    frame = Path("sub01/EP01_01/img1.jpg")
    assert (clips_root / frame).read_bytes() != (other / frame).read_bytes()
    assert (clips_root / "ground_truth.json").read_text() != (other / "ground_truth.json").read_text()


def test_long_videos_load_with_the_samm_lv_reader_and_decode(tmp_path):
    root = tmp_path / "long"
    assert _synth("long", "--out", str(root), "--size", "160x120", "--duration", "8", "--micro", "3", "--macro", "1",
                  "--video", "mp4", "--seed", "2") == 0
    intervals = load_dataset("samm-lv", root=root)
    truth = json.loads((root / "ground_truth.json").read_text())
    videos = truth["videos"]
    assert len(videos) == 2 and [v["video"] for v in videos] == ["001_1", "002_1"]
    assert len(intervals) == sum(len(v["events"]) for v in videos)
    assert Counter(i.kind for i in intervals) == {"micro": 3 * 2, "macro": 1 * 2}
    events = {e["expression_id"]: e for v in videos for e in v["events"]}
    for interval in intervals:
        event = events[interval.expression_id]
        assert (interval.onset, interval.apex, interval.offset) == tuple(event[k]["frame"] for k in ("onset", "apex", "offset"))
        assert interval.kind == event["kind"]
    capture = cv2.VideoCapture(str(root / "001_1.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (120, 160, 3)
        count += 1
    capture.release()
    assert count == videos[0]["n_frames"] == 240
    assert len(list((root / "001_1").glob("001_*.jpg"))) == 240


def test_video_file_with_sidecars(tmp_path):
    path = tmp_path / "demo.avi"
    assert _synth("video", "--out", str(path), "--size", "128x96", "--duration", "3", "--fps", "30",
                  "--micro", "2", "--macro", "0", "--distractors", "blinks,light") == 0
    capture = cv2.VideoCapture(str(path))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    truth = json.loads(path.with_suffix(".json").read_text())
    assert frames == truth["videos"][0]["n_frames"] == 90
    assert truth["settings"]["distractors"]["head_motion"] is False
    assert truth["videos"][0]["distractors"]["head_moves"] == []
    intervals = load_dataset("samm-lv", sheet=tmp_path / "demo.samm-lv.csv")
    assert len(intervals) == len(truth["videos"][0]["events"]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("clips", "--out", "X", "--size", "12x"), "--size"),
        (("clips", "--out", "X", "--distractors", "rain"), "unknown rain"),
        (("video", "--out", "X.mkv", "--duration", "1"), "unsupported video suffix"),
        (("long", "--out", "X", "--no-frames"), "nothing to write"),
        (("faces", "--out", "X", "--subjects", "1", "--per-class", "1", "--size", "40"), "found no face"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    args = tuple(str(tmp_path / a) if a.startswith("X") else a for a in args)
    assert _synth(*args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_config_file_is_validated(tmp_path):
    from engines.config import load_config

    good = load_config(Path(__file__).resolve().parents[1] / "configs" / "synth" / "default.toml", SynthSettings)
    assert good.timing == SynthSettings().timing and good.distractors == SynthSettings().distractors
    bad = tmp_path / "bad.toml"
    bad.write_text("[timing]\nmicro_duration_s = [0.1, 0.9]\n")
    with pytest.raises(ConfigError, match="micro_duration_s"):
        load_config(bad, SynthSettings)


def test_faces_load_with_the_rafdb_reader_aligned_like_prepared_clips(tmp_path):
    """Still macro-expression faces in RAF-DB's layout: the real reader loads them with the labels
    the ground truth says, 100x100 as RAF-DB's aligned faces, each expression drawn from the
    still-face AU table, and the same seed gives the same bytes."""
    from training.synthetic.action_units import STILL_EMOTION_AUS

    root, again = tmp_path / "faces", tmp_path / "again"
    args = ("--subjects", "2", "--per-class", "2", "--seed", "3")
    assert _synth("faces", "--out", str(root), *args) == 0
    samples = load_dataset("rafdb", root=root)
    assert len(samples) == 2 * 3 * 2
    assert Counter(s.labels["megc3"] for s in samples) == {"positive": 4, "surprise": 4, "negative": 4}
    assert Counter(s.emotion for s in samples) == {"happiness": 4, "surprise": 4, "disgust": 2, "sadness": 2}
    truth = {face["image"]: face for face in json.loads((root / "ground_truth.json").read_text())["faces"]}
    assert Counter(face["subject"] for face in truth.values()) == {"sub01": 6, "sub02": 6}
    images = []
    for sample in samples:
        face = truth[f"{sample.sample_id}.jpg"]
        assert sample.emotion == face["emotion"] and sample.attributes == {"split": "train"}
        assert tuple(face["action_units"]) in STILL_EMOTION_AUS[face["emotion"]]
        assert 0.5 < face["amplitude_px"] <= 10.0
        image = cv2.imread(str(sample.frames[0]))
        assert image.shape == (100, 100, 3)
        images.append(image)
    # The classes are not in file order (names are shuffled), and no two faces are the same picture.
    assert [s.labels["megc3"] for s in samples] != sorted(s.labels["megc3"] for s in samples)
    assert len({image.tobytes() for image in images}) == len(images)
    assert _synth("faces", "--out", str(again), *args) == 0
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)
