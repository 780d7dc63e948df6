"""``mer analyze`` on damaged and wrong files, through the real command line and decoders.

Each fault is a real file: a synthetic face video (one micro-expression, at frames 28-41)
cut short, cut before its MP4 index was written, overwritten in the middle; an empty file,
a text file and a PNG named ``.mp4``, an audio-only file, and an AVI whose video codec no
FFmpeg decoder knows. One run gets them all, with the intact video in the middle: it must be
analysed in full, every bad file must be named in one line with its reason (and the frames,
when some were analysed), what was produced before a fault must be kept, and the exit
status must be non-zero; with decoding and face tracking in the caller's process or in a
worker process (``--front-end-process on``) alike.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess

import av
import cv2
import numpy as np
import pytest

from tests.streaming_fixtures import mer_popen
from training.synthetic.layouts import write_video_file
from training.synthetic.settings import SynthSettings

N_FRAMES = 120
LOOK_AHEAD_FRAMES = 10  # the default spotting profile's look-ahead (0.3 s) at 30 fps, and one frame
# File -> the words its one-line error must contain.
UNREADABLE = {
    "cut_unfinished.mp4": "its MP4 index (moov box) is missing",
    "empty.mp4": "is empty (0 bytes)",
    "notes.mp4": "cannot be read as video",
    "picture.mp4": "is a still image (png), not a video",
    "tone.m4a": "has no video stream",
    "unknown_codec.avi": "its video codec is not supported",
}
DAMAGED = {"corrupt.mp4": "could not be decoded", "cut_short.mp4": "could not be read: the file ends early"}


def faststart_copy(source, path):
    """The same packets with the index (moov) first, as streaming muxers write it: a cut copy still opens."""
    with av.open(str(source)) as recorded, av.open(str(path), "w", options={"movflags": "faststart"}) as copy:
        stream = copy.add_stream_from_template(recorded.streams.video[0])
        for packet in recorded.demux(recorded.streams.video[0]):
            if packet.dts is not None:  # the demuxer's final flush packet carries nothing
                packet.stream = stream
                copy.mux(packet)
    return path


def write_faults(video, folder):
    """Every bad file of the run, each made the way it happens for real."""
    data = video.read_bytes()
    (folder / "cut_unfinished.mp4").write_bytes(data[: len(data) // 2])  # the recorder died: no moov yet
    cut = faststart_copy(video, folder / "cut_short.mp4")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 6 // 10])  # a download that stopped
    damaged = bytearray(data)
    middle = len(damaged) // 2
    damaged[middle : middle + 4000] = bytes(4000)  # a bad disk sector in the middle
    (folder / "corrupt.mp4").write_bytes(bytes(damaged))
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are interview notes, not frames\n" * 40)
    _, png = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))
    (folder / "picture.mp4").write_bytes(png.tobytes())
    with av.open(str(folder / "tone.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        silence.rate = 8000
        for _ in range(8):
            container.mux(stream.encode(silence))
        container.mux(stream.encode())
    # Real MJPEG frames, muxed under a codec tag no decoder claims (a proprietary camera codec);
    # the AVI muxer writes an unknown tag only when told that experimental output is fine.
    with av.open(str(folder / "unknown_codec.avi"), "w", format="avi", options={"strict": "experimental"}) as container:
        stream = container.add_stream("mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        stream.codec_context.codec_tag = "ZZZZ"
        for i in range(10):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), "bgr24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module", params=["auto", "on"])
def run(request, tmp_path_factory):
    """One ``mer analyze`` over the good video and every bad file, the good one in the middle: in one
    process (``auto`` for these short files), and with decoding and tracking in a worker process."""
    folder = tmp_path_factory.mktemp("faults")
    good = folder / "good.mp4"
    write_video_file(good, duration_s=N_FRAMES / 30, fps=30.0, size=(320, 240), seed=27, subject=0, n_micro=1,
                     n_macro=0, settings=SynthSettings())
    write_faults(good, folder)
    names = sorted(DAMAGED) + sorted(UNREADABLE)
    files = [folder / name for name in names[:4]] + [good] + [folder / name for name in names[4:]]
    out = tmp_path_factory.mktemp("analyze")
    process = mer_popen("analyze", *map(str, files), "--out", str(out), "--no-progress",
                        "--front-end-process", request.param,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=300)
    return folder, out, process.returncode, stdout, stderr.splitlines()


def frame_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def error_lines(stderr, path):
    return [line for line in stderr if " ERROR " in line and f"{path}:" in line]


def recognised(events_path, before: int | None = None):
    """What an event says about the face, without when it was published; with ``before``, only the
    events final before that frame (their offset and the spotter's 0.3 s look-ahead came earlier)."""
    keep = ("face", "onset", "apex", "offset", "kind", "label", "scores")
    events = [{key: event[key] for key in keep} for event in map(json.loads, events_path.read_text().splitlines())]
    return [event for event in events if before is None or event["offset"]["frame"] + LOOK_AHEAD_FRAMES < before]


def test_the_run_fails_and_names_each_bad_file_once_with_its_reason(run):
    folder, _, status, _, stderr = run
    assert status == 2
    failed = len(DAMAGED) + len(UNREADABLE)
    assert stderr[-1] == f"mer analyze: error: {failed} of 9 videos failed (see the messages above)"
    for name, reason in {**UNREADABLE, **DAMAGED}.items():
        lines = error_lines(stderr, folder / name)
        assert len(lines) == 1 and reason in lines[0], (name, lines)
    assert not any("Traceback" in line for line in stderr)


def test_the_good_video_between_the_bad_ones_is_analysed_in_full(run):
    folder, out, _, stdout, _ = run
    summary = json.loads((out / "good" / "summary.json").read_text())
    assert (summary["frames"], summary["frames_with_faces"], summary["error"]) == (N_FRAMES, N_FRAMES, None)
    assert [int(row["frame"]) for row in frame_rows(out / "good" / "frames.csv")] == list(range(N_FRAMES))
    events = recognised(out / "good" / "events.jsonl")
    # The expression (truth: frames 28-41) is found once; the spotter may also fire on the noise of a
    # 4 s clip (the spotting tests measure how often), which is not what this test is about.
    (event,) = [e for e in events if e["onset"]["frame"] <= 41 and e["offset"]["frame"] >= 28]
    assert 26 <= event["onset"]["frame"] <= 30 and 37 <= event["offset"]["frame"] <= 43
    assert f"{folder / 'good.mp4'}: {N_FRAMES} frames, {len(events)} events" in stdout


def test_a_file_cut_short_keeps_everything_it_produced_before_the_cut(run):
    folder, out, _, _, stderr = run
    (line,) = error_lines(stderr, folder / "cut_short.mp4")
    kept = re.search(r"\((\d+) frames, the last frame (\d+), analysed; results kept in ", line)
    analysed, last = map(int, kept.groups())
    assert 30 < analysed < N_FRAMES and last == analysed - 1 and f"{out / 'cut_short'})" in line
    # The frames after the cut are named: the one cut through (if any) and the missing rest.
    assert re.search(rf"frames \d+-{N_FRAMES - 1} could not be read: the file ends early", line)
    rows, good_rows = frame_rows(out / "cut_short" / "frames.csv"), frame_rows(out / "good" / "frames.csv")
    assert rows == good_rows[:analysed]  # landmarks and spotting signal exactly as in the intact file
    kept_events = recognised(out / "cut_short" / "events.jsonl", before=analysed)
    assert kept_events and kept_events == recognised(out / "good" / "events.jsonl", before=analysed)
    kept_intervals = (out / "cut_short" / "intervals.csv").read_text().splitlines()
    assert kept_intervals[:1 + len(kept_events)] == [
        line.replace("good", "cut_short") for line in (out / "good" / "intervals.csv").read_text().splitlines()
    ][:1 + len(kept_events)]
    summary = json.loads((out / "cut_short" / "summary.json").read_text())
    assert summary["frames"] == analysed and sum(summary["frames_dropped"].values()) == N_FRAMES - analysed
    assert summary["frames_dropped"]["truncated"] > 0 and summary["error"] in line


def test_a_corrupt_file_is_analysed_around_the_damage_and_names_it(run):
    folder, out, _, _, stderr = run
    (line,) = error_lines(stderr, folder / "corrupt.mp4")
    first, last = re.search(r"frames? (\d+)(?:-(\d+))? could not be decoded", line).groups()
    first_bad, last_bad = int(first), int(last or first)
    assert 30 < first_bad <= last_bad < N_FRAMES - 1
    rows, good_rows = frame_rows(out / "corrupt" / "frames.csv"), frame_rows(out / "good" / "frames.csv")
    assert [int(row["frame"]) for row in rows] == [i for i in range(N_FRAMES) if not first_bad <= i <= last_bad]
    assert rows[:first_bad] == good_rows[:first_bad]
    before_damage = recognised(out / "good" / "events.jsonl", before=first_bad)
    assert before_damage and recognised(out / "corrupt" / "events.jsonl", before=first_bad) == before_damage
    summary = json.loads((out / "corrupt" / "summary.json").read_text())
    assert summary["frames_dropped"] == {"decode_error": last_bad - first_bad + 1}
    assert summary["error"] in line and summary["frames"] == N_FRAMES - (last_bad - first_bad + 1)


def test_files_that_cannot_be_read_as_video_leave_no_output(run):
    _, out, _, _, _ = run
    for name in UNREADABLE:
        assert not (out / name.rsplit(".", 1)[0]).exists(), name
