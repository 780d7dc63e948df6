"""``mer analyze --ray`` on a local Ray cluster gives what one pass on one machine gives.

The cluster is real (``ray.init`` with 2 CPUs, its session files in a temporary folder that
is removed afterwards, no token written to ~/.ray), and so is the footage: a synthetic
interview video of 32 s in which the face vanishes for a second (so the single pass numbers
two tracks, and the chunk that starts after the gap must be renumbered), and a 5 s clip. The
stream profile keeps the spotter's memory short (3 s of signal, no alignment smoothing) so
that two chunks with 12 s of overlap agree within it; the default profile needs 13-26 s
(docs/scale-out.md). Every output is compared with the single pass: the CSVs and
the PNG byte for byte, events and summaries field by field except their wall-clock fields.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'mer[ray]'")

from engines.errors import InputError  # noqa: E402
from streamer.commands.analyze import _ray_address, analyze_file, expand_inputs  # noqa: E402
from streamer.distributed import analyze_on_ray  # noqa: E402
from streamer.session import open_recognizer  # noqa: E402
from streamer.stream_config import load_stream_config  # noqa: E402
from tests.streaming_fixtures import REPO, reencode, synth_long  # noqa: E402

pytestmark = pytest.mark.slow

WALL_CLOCK_EVENT_FIELDS = ("latency_ms", "emitted_at")
TIMING_SUMMARY_FIELDS = ("seconds", "frames_per_s", "stage_seconds")
GAP = range(60, 90)  # frames of the long video with no face
CHUNKING = {"chunk_s": 16.0, "overlap_s": 12.0}  # the long video: frames 0-479, and 120-end with 120-479 as overlap


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray cluster on loopback for the module; yields its address."""
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token file in the home folder
    temp = Path(tempfile.mkdtemp(prefix="mer-ray-"))  # short: Ray's socket paths must fit in 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), _node_ip_address="127.0.0.1",
             object_store_memory=200 * 2**20, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """videos/gap.mp4 (32 s, no face in frames 60-89), videos/clip.mp4 (5 s), and a short-memory profile."""
    root = tmp_path_factory.mktemp("footage")
    synth = synth_long(root / "synth", fps=30, duration=32, micro=4, macro=2, seed=11)
    original = next(synth.glob("*.mp4"))
    videos = root / "videos"
    videos.mkdir()
    reencode(original, videos / "gap.mp4", blank=GAP)
    reencode(original, videos / "clip.mp4", frames=range(150))
    spot = root / "spot.toml"
    spot.write_text("[detect]\nbaseline_s = 1.5\nmax_duration_s = 1.0\n"
                    "[flow]\nmax_reference_age_s = 1.5\nplateau_s = 0.5\nlandmark_smoothing_s = 0.05\n")
    profile = root / "stream.toml"
    profile.write_text(f'[faces]\nsmoothing = false\n[spot]\nprofile = "{spot}"\nring_seconds = 2.0\n')
    return videos, profile


@pytest.fixture(scope="module")
def single_pass(footage, tmp_path_factory):
    """Each video analysed the ordinary way, in this process."""
    videos, profile = footage
    out = tmp_path_factory.mktemp("single")
    config = load_stream_config(profile)
    recognizer = open_recognizer(config, None)
    for video in sorted(videos.iterdir()):
        analyze_file(video, out / video.stem, config, recognizer, progress=False)
    return out


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_outputs(expected: Path, actual: Path, *, frames: int | None = None) -> None:
    """``actual`` holds what ``expected`` holds (the first ``frames`` frames of it, if given)."""
    if frames is None:
        for name in ("frames.csv", "intervals.csv", "timeline.png"):
            assert (actual / name).read_bytes() == (expected / name).read_bytes(), name
    else:
        with open(expected / "frames.csv", newline="") as handle:
            kept = [row for row in csv.reader(handle) if not row[0].isdigit() or int(row[0]) < frames]
        with open(actual / "frames.csv", newline="") as handle:
            assert list(csv.reader(handle)) == kept

    def stable(event: dict) -> dict:
        return {key: value for key, value in event.items() if key not in WALL_CLOCK_EVENT_FIELDS}

    expected_events = [stable(e) for e in _events(expected / "events.jsonl")]
    actual_events = [stable(e) for e in _events(actual / "events.jsonl")]
    if frames is None:
        assert actual_events == expected_events
    else:
        assert actual_events == expected_events[:len(actual_events)]
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (expected, actual)]
    for summary in summaries:
        for key in TIMING_SUMMARY_FIELDS:
            assert key in summary
            del summary[key]
    if frames is None:
        assert summaries[1] == summaries[0]


def test_the_command_on_a_ray_cluster_writes_what_one_pass_writes(ray_cluster, footage, single_pass, tmp_path):
    videos, profile = footage
    out = tmp_path / "ray"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "analyze", "--ray", ray_cluster, str(videos), "--config", str(profile),
         "--chunk-seconds", "16", "--overlap-seconds", "12", "--out", str(out), "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for video in ("gap", "clip"):
        assert_same_outputs(single_pass / video, out / video)
    # The long video ran as two chunks and was handed over in their overlap (after its first third).
    # The later chunk began after the gap: its track 0 is the single pass's track 1.
    handover = re.search(r"gap\.mp4: 2 chunk\(s\), handed over at frames \[(\d+)\], 1 round\(s\)", result.stderr)
    assert handover, result.stderr
    assert 120 + 120 <= int(handover.group(1)) < 480
    face_ids = {int(row["face_id"]) for row in csv.DictReader(open(out / "gap" / "frames.csv", newline=""))}
    assert face_ids == {-1, 0, 1}
    assert re.search(r"clip\.mp4: 1 chunk\(s\), handed over at frames \[\]", result.stderr)
    assert "gap.mp4: 960 frames" in result.stdout and "clip.mp4: 150 frames" in result.stdout


def _kill_once(kills: list[int], key: str, boards: list[dict] | None = None):
    """An ``on_poll`` that kills the worker process running the task ``key`` once it has started
    (and keeps what the progress board said each time, in ``boards``)."""
    def poll(board: dict[str, dict]) -> None:
        if boards is not None:
            boards.append(board)
        task = board.get(key)
        if task is not None and not kills:
            kills.append(task["pid"])
            os.kill(task["pid"], signal.SIGKILL)
    return poll


def test_a_lost_worker_is_replaced_and_a_bad_file_fails_alone(ray_cluster, footage, single_pass, tmp_path, caplog):
    videos, profile = footage
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    kills: list[int] = []
    boards: list[dict] = []
    with caplog.at_level(logging.INFO):
        failed = analyze_on_ray([junk, videos / "clip.mp4"], tmp_path / "out", load_stream_config(profile), None,
                                address=ray_cluster, progress=False,
                                on_poll=_kill_once(kills, "clip.mp4 frames 0-end", boards), **CHUNKING)
    assert failed == 1 and len(kills) == 1
    # The progress board: where the task ran (another worker process the second time) and how far it got.
    last = boards[-1]["clip.mp4 frames 0-end"]
    assert last["runs"] == 2 and last["pid"] != kills[0] and last["done"] == 150
    assert last["host"] == socket.gethostname()
    assert "junk.mp4" in caplog.text and not (tmp_path / "out" / "junk").exists()
    assert "clip.mp4 frames 0-end ran 2 times: its worker was lost and Ray ran it again" in caplog.text
    assert_same_outputs(single_pass / "clip", tmp_path / "out" / "clip")


def test_a_task_that_fails_for_good_keeps_what_the_chunks_before_it_produced(ray_cluster, footage, single_pass,
                                                                             tmp_path):
    videos, profile = footage
    kills: list[int] = []
    failed = analyze_on_ray([videos / "gap.mp4"], tmp_path, load_stream_config(profile), None, address=ray_cluster,
                            progress=False, retries=0, on_poll=_kill_once(kills, "gap.mp4 frames 450-end"),
                            chunk_s=16.0, overlap_s=1.0)
    assert failed == 1 and len(kills) == 1
    # What a single pass stopped at frame 479 would have written (the events decided by then).
    summary = json.loads((tmp_path / "gap" / "summary.json").read_text())
    assert summary["frames"] == 480 and summary["error"].startswith("frames 450-end: ")
    assert_same_outputs(single_pass / "gap", tmp_path / "gap", frames=480)


def test_chunks_that_never_agree_are_analysed_again_as_one(ray_cluster, footage, single_pass, tmp_path, caplog):
    videos, profile = footage
    with caplog.at_level(logging.INFO):
        failed = analyze_on_ray([videos / "clip.mp4"], tmp_path, load_stream_config(profile), None,
                                address=ray_cluster, chunk_s=2.0, overlap_s=1.0, progress=False)
    assert failed == 0
    # 1 s of overlap is less than the 2 s ring of face crops: the states cannot agree.
    assert "clip.mp4: frames 0-59 and frames 30-end never reached the same state" in caplog.text
    assert "clip.mp4: 1 chunk(s), handed over at frames [], 2 round(s)" in caplog.text
    assert_same_outputs(single_pass / "clip", tmp_path / "clip")


def test_inputs_are_videos_folders_and_lists(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.mp4", "a.MOV", "notes.txt"):
        (folder / name).write_bytes(b"")
    listing = tmp_path / "videos.txt"
    listing.write_text("in/b.mp4\n# a comment\n\nin/a.MOV   # the second\n")
    assert expand_inputs([folder]) == [folder / "a.MOV", folder / "b.mp4"]
    assert expand_inputs([listing]) == [folder / "b.mp4", folder / "a.MOV"]
    assert expand_inputs([folder, folder / "b.mp4"]) == [folder / "a.MOV", folder / "b.mp4"]  # once each
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="would both write to <out>/b/"):
        expand_inputs([folder, tmp_path / "other"])
    listing.write_text("in/b.mp4\n\nin/missing.mp4\n")
    with pytest.raises(InputError, match=r"videos.txt, row 3: no such video file: .*missing.mp4"):
        expand_inputs([listing])
    # `--ray DIR`: argparse hands the folder to --ray; it is an input, and the cluster a local one.
    args = argparse.Namespace(ray=str(folder), files=[])
    assert _ray_address(args) == "local" and args.files == [folder]
    for address in ("auto", "10.0.0.5:6379", "ray://head:10001"):
        assert _ray_address(argparse.Namespace(ray=address, files=[])) == address
    with pytest.raises(InputError, match="neither a Ray address"):
        _ray_address(argparse.Namespace(ray=str(tmp_path / "nothing"), files=[]))


def test_the_base_install_never_imports_ray():
    code = ("import sys; from streamer.cli import build_parser, main; build_parser(); "
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; "
            "sys.modules['ray'] = None; "  # as if Ray were not installed
            "sys.exit(main(['analyze', '--ray', 'auto', 'tests']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "mer analyze: error: --ray needs Ray, an optional extra: pip install 'mer[ray]'"
