"""``mer analyze`` with the face front end in a worker process gives what one process gives.

Real footage and real processes: a synthetic interview video of 24 s whose face vanishes for
a second (two tracks, one ended midway), decoded and tracked in a spawned worker while this
process spots, classifies and writes. Every output is compared with the single-process run:
the CSVs byte for byte, events and summaries field by field except their wall-clock fields.
A worker killed mid-file is reported and replaced. The damaged-file cases run through the
worker too (tests/test_faults_analyze.py, ``--front-end-process on``).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import av
import pytest

from engines.errors import InputError, MerError
from streamer.commands import analyze as analyze_command
from streamer.commands.analyze import analyze_file
from streamer.front_end_worker import FrontEndWorker
from streamer.session import open_recognizer
from streamer.stream_config import load_stream_config
from tests.streaming_fixtures import mer, reencode, synth_long

pytestmark = pytest.mark.slow

WALL_CLOCK_EVENT_FIELDS = ("latency_ms", "emitted_at")
TIMING_SUMMARY_FIELDS = ("seconds", "frames_per_s", "stage_seconds")
GAP = range(300, 330)  # frames with no face: the track ends, a new one starts after


def _first_frames(source: Path, target: Path, count: int) -> Path:
    """The first ``count`` frames of ``source``, its packets copied (no re-encoding)."""
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream = writer.add_stream_from_template(reader.streams.video[0])
        packets = (packet for packet in reader.demux(reader.streams.video[0]) if packet.dts is not None)
        for _, packet in zip(range(count), packets):
            packet.stream = stream
            writer.mux(packet)
    return target


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("footage")
    synth = synth_long(root / "synth", fps=30, duration=24, micro=4, macro=2, seed=5)
    return reencode(next(synth.glob("*.mp4")), root / "interview.mp4", blank=GAP)


@pytest.fixture(scope="module")
def setup():
    config = load_stream_config()
    return config, open_recognizer(config, None)


@pytest.fixture(scope="module")
def runs(video, setup, tmp_path_factory):
    """The video analysed in one process, then twice through one worker (the worker is reused)."""
    config, recognizer = setup
    out = tmp_path_factory.mktemp("runs")
    single = analyze_file(video, out / "single", config, recognizer, progress=False)
    with FrontEndWorker() as worker:
        split = analyze_file(video, out / "split", config, recognizer, progress=False, front_end=worker)
        again = analyze_file(video, out / "again", config, recognizer, progress=False, front_end=worker)
    return out, single, split, again


def _events(folder: Path) -> list[dict]:
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    return [{k: v for k, v in event.items() if k not in WALL_CLOCK_EVENT_FIELDS} for event in events]


def _summary(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMING_SUMMARY_FIELDS}


def test_the_worker_gives_what_one_process_gives(runs):
    out, single, split, again = runs
    assert single["frames"] == 720 and single["frames_with_faces"] == 720 - len(GAP)
    face_ids = {line.split(",")[2] for line in (out / "single" / "frames.csv").read_text().splitlines()[1:]}
    assert face_ids == {"-1", "0", "1"}  # no face in the gap; the face after it is a new track
    assert len(_events(out / "single")) >= 4
    for run, summary in (("split", split), ("again", again)):
        for name in ("frames.csv", "intervals.csv"):
            assert (out / run / name).read_bytes() == (out / "single" / name).read_bytes(), (run, name)
        assert _events(out / run) == _events(out / "single"), run
        assert _summary(summary) == _summary(single), run


def test_the_worker_times_its_own_stages(runs):
    _, _, split, _ = runs
    stages = split["stage_seconds"]
    assert stages["face"] > 0 and stages["decode"] > 0 and stages["spot"] > 0


def test_a_killed_worker_is_reported_and_the_next_file_gets_a_new_one(video, setup, tmp_path):
    config, recognizer = setup
    worker = FrontEndWorker()
    try:
        feed = worker.open(video, config)
        frames = iter(feed)
        next(frames)
        os.kill(worker._process.pid, signal.SIGKILL)
        with pytest.raises(MerError, match=r"front-end worker process ended unexpectedly \(exit code -9\)"):
            for _ in frames:
                pass
        feed.close()
        summary = analyze_file(video, tmp_path / "after", config, recognizer, progress=False, front_end=worker)
        assert summary["frames"] == 720 and summary["error"] is None
    finally:
        worker.stop()


def test_an_unreadable_file_fails_before_any_output_and_the_worker_carries_on(video, setup, tmp_path):
    config, recognizer = setup
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 50)
    with FrontEndWorker() as worker:
        with pytest.raises(InputError, match="notes.mp4.*cannot be read as video"):
            analyze_file(notes, tmp_path / "notes", config, recognizer, progress=False, front_end=worker)
        assert not (tmp_path / "notes").exists()
        process = worker._process
        clip = _first_frames(video, tmp_path / "clip.mp4", 60)
        summary = analyze_file(clip, tmp_path / "clip", config, recognizer, progress=False, front_end=worker)
        assert summary["frames"] == 60 and worker._process is process  # the same worker


def test_a_worker_that_cannot_start_leaves_the_video_to_this_process(video, setup, tmp_path, monkeypatch, caplog):
    """A process limit or no memory for a new process: the same outputs, in one process, with a warning."""
    import multiprocessing.context

    def refuse(self):
        raise OSError(11, "Resource temporarily unavailable")

    config, recognizer = setup
    clip = _first_frames(video, tmp_path / "clip.mp4", 90)
    expected = analyze_file(clip, tmp_path / "one", config, recognizer, progress=False)
    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", refuse)
    with FrontEndWorker() as worker:
        summary = analyze_file(clip, tmp_path / "fallback", config, recognizer, progress=False, front_end=worker)
    assert _summary(summary) == _summary(expected)
    assert (tmp_path / "fallback" / "frames.csv").read_bytes() == (tmp_path / "one" / "frames.csv").read_bytes()
    assert any("could not start the front-end worker process ([Errno 11] Resource temporarily unavailable); "
               "analysing it in this process" in record.getMessage() for record in caplog.records)


def test_auto_uses_the_worker_for_long_videos_on_two_cores(video, tmp_path, monkeypatch):
    short = _first_frames(video, tmp_path / "short.mp4", 300)  # 10 s
    split = analyze_command._split
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert split("auto", video, False) and not split("auto", short, False)
    assert not split("auto", video, True)  # --video draws on the frames: one process
    assert split("on", short, False) and not split("off", video, False)
    assert not split("auto", tmp_path / "missing.mp4", False)  # analyze_file reports it
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert not split("auto", video, False)


def test_the_command_line_switch(video, tmp_path):
    """``--front-end-process on`` through the real CLI writes what ``off`` writes."""
    for choice in ("on", "off"):
        mer("analyze", str(video), "--out", str(tmp_path / choice), "--front-end-process", choice, "--no-progress")
    for name in ("frames.csv", "intervals.csv"):
        assert (tmp_path / "on" / "interview" / name).read_bytes() == \
            (tmp_path / "off" / "interview" / name).read_bytes()
    assert _events(tmp_path / "on" / "interview") == _events(tmp_path / "off" / "interview")


def test_the_worker_and_its_caller_hold_no_named_semaphores(video, setup, tmp_path, monkeypatch):
    """A multiprocessing.Queue between spawned processes rests on named semaphores that Python's
    resource tracker follows (and now and then reported as leaked at exit); the pipes need none."""
    import multiprocessing.resource_tracker

    config, recognizer = setup
    registered = []
    monkeypatch.setattr(multiprocessing.resource_tracker, "register", lambda name, rtype: registered.append(rtype))
    clip = _first_frames(video, tmp_path / "clip.mp4", 40)
    with FrontEndWorker() as worker:
        summary = analyze_file(clip, tmp_path / "clip", config, recognizer, progress=False, front_end=worker)
    assert summary["frames"] == 40
    assert registered == []
    # The check can fail: the queue the worker used before registered three semaphores.
    multiprocessing.get_context("spawn").Queue(maxsize=2)
    assert registered == ["semaphore"] * 3
