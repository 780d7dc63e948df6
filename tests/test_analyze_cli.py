"""``mer analyze`` end to end: a synthetic long video (blinks, head moves, light drift, noise)
through the real decoder, face front end, spotter, shipped engine and output writers."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from streamer.events import validate_event
from streamer.outputs import FRAME_COLUMNS
from training.classmaps import MEGC3
from training.spotting_eval import GroundTruth, Prediction, evaluate, match_video
from tests.streaming_fixtures import ground_truth, mer, synth_long

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """Two 30 fps subjects, 24 s each, analysed once for every test of this module."""
    folder = synth_long(tmp_path_factory.mktemp("long30"), fps=30, duration=24, subjects=2, micro=5, macro=2, seed=11)
    out = tmp_path_factory.mktemp("analyze")
    videos = sorted(folder.glob("*.mp4"))
    result = mer("analyze", *map(str, videos), "--out", str(out), "--no-progress")
    return folder, out, videos, result


def _events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_output_is_written_and_well_formed(analysed):
    folder, out, videos, result = analysed
    truth = {video["video"]: video for video in ground_truth(folder)["videos"]}
    for video in videos:
        run = out / video.stem
        events = _events(run / "events.jsonl")
        assert events, f"{video.name}: no events"
        for number, event in enumerate(events, start=1):
            validate_event(event)
            assert event["seq"] == number and event["stream"] == video.stem
            assert event["engine"].startswith("ststnet@synthetic")
        with open(run / "frames.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0].keys()) == FRAME_COLUMNS
        n_frames = truth[video.stem]["n_frames"]
        assert [int(row["frame"]) for row in rows] == list(range(n_frames))  # one face: one row per frame
        assert np.mean([row["success"] == "1" for row in rows]) >= 0.99
        assert all(row["spot_signal"] != "" for row in rows if row["success"] == "1")
        timeline = cv2.imread(str(run / "timeline.png"))
        assert timeline is not None and timeline.shape[1] > timeline.shape[0]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["frames"] == n_frames and summary["events"] == len(events) and summary["error"] is None
        # Events were classified during the spotter's look-ahead (their bounds rarely move after).
        assert summary["speculative_hits"] >= len(events) - 1 and summary["speculative_misses"] <= 1
        assert not (run / "annotated.mp4").exists()  # no stored faces unless asked
        assert f"{video}: {n_frames} frames, {len(events)} events" in result.stdout


def test_spotting_f1_and_labels_against_the_ground_truth(analysed):
    folder, out, videos, _ = analysed
    truths, predictions, labels = [], [], {}
    for video in ground_truth(folder)["videos"]:
        for event in video["events"]:
            truths.append(GroundTruth(video["video"], event["onset"]["frame"], event["offset"]["frame"], event["kind"]))
            labels[(video["video"], event["onset"]["frame"])] = MEGC3.groups["casme2"][event["emotion"]]
        with open(out / video["video"] / "intervals.csv", newline="") as handle:
            predictions += [Prediction(row["video"], int(row["onset"]), int(row["offset"])) for row in csv.DictReader(handle)]
    result = evaluate(truths, predictions, fps=30)
    assert result.overall.f1 >= 0.8, result.overall
    # Recognition: the matched events' labels beat chance (1/3) clearly.
    events = {(video.stem, event["onset"]["frame"] + 1, event["offset"]["frame"] + 1): event["label"]
              for video in videos for event in _events(out / video.stem / "events.jsonl")}
    hits = [events[(p.video, p.onset, p.offset)] == labels[(t.video, t.onset)] for t, p in result.matches]
    assert len(hits) >= 8
    assert np.mean(hits) >= 0.6, hits


def test_a_bad_file_fails_alone_and_the_good_one_is_still_analysed(analysed, tmp_path):
    _, _, videos, _ = analysed
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    out = tmp_path / "out"
    with pytest.raises(AssertionError) as failed:
        mer("analyze", str(junk), str(videos[0]), "--out", str(out), "--no-progress")
    message = str(failed.value)
    assert "exited 2" in message and "junk.mp4" in message and "1 of 2 videos failed" in message
    assert _events(out / videos[0].stem / "events.jsonl")  # the good video was analysed in full
    assert not (out / "junk").exists() or not any((out / "junk").iterdir())


def test_annotated_video_only_on_request(tmp_path):
    folder = synth_long(tmp_path / "clip", fps=30, duration=4, micro=1, macro=0, seed=3)
    video = next(folder.glob("*.mp4"))
    mer("analyze", str(video), "--out", str(tmp_path / "out"), "--video", "--no-progress")
    annotated = cv2.VideoCapture(str(tmp_path / "out" / video.stem / "annotated.mp4"))
    frames = int(annotated.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, image = annotated.read()
    annotated.release()
    assert ok and image.shape == (240, 320, 3) and frames == 120
