"""Sources that fail and come back, and files that never end: real senders, real files, real decoders.

* A network stream whose sender dies and restarts (the ffmpeg binary of imageio-ffmpeg serving
  MPEG-TS over TCP on loopback, as in tests/test_network_source.py), read by the capture loop
  and analysed by the real pipeline: events before the loss, events after it, no track or
  event across it, the gap counted.
* A camera that is unplugged and plugged back in. There is no camera (nor v4l2loopback) here,
  so the stand-in is what unplugging does to a V4L2 camera: its device node disappears and the
  open handle stops delivering. ``CameraSource`` reads a real MJPEG stream through
  ``cv2.VideoCapture`` from a path that the test removes (reads end, reopening fails) and puts
  back (reopening succeeds), so the real read-failure, failed-reopen and backoff paths run.
* Looping files (``[capture] loop``): numbers and time keep increasing, every pass gives the
  same events; and a file whose own timestamps jump back (recordings joined end to end).
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import threading

import pytest

from streamer.capture import CaptureCounters, CaptureLoop, backoff_delays
from streamer.metrics import StreamMetrics, serve_metrics
from streamer.session import build_pipeline, open_recognizer
from streamer.sources import CameraSource, FileSource
from streamer.stream_config import CaptureConfig, StreamConfig, load_stream_config
from tests.test_network_source import senders  # noqa: F401 (a fixture: ffmpeg senders, killed at the end)
from tests.test_network_source import NETWORK, connect, free_port, stop_process
from tests.test_stream_metrics import scrape, value
from tests.video_clips import WAIT_S, frame_level, level, noise, wait_until, write_cv2, write_pyav
from training.synthetic.layouts import write_video_file
from training.synthetic.settings import SynthSettings

FPS = 30


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """4 s of a synthetic face with one micro-expression (frames 28-41), a blink, light drift, noise."""
    path = tmp_path_factory.mktemp("face") / "face.mp4"
    write_video_file(path, duration_s=4.0, fps=FPS, size=(320, 240), seed=27, subject=0, n_micro=1, n_macro=0,
                     settings=SynthSettings())
    return path


@pytest.fixture(scope="module")
def recognizer(one_torch_thread):
    return open_recognizer(StreamConfig(), None)


def pipeline_emitting_to(events, recognizer, config=None):
    return build_pipeline(config or StreamConfig(), stream_id="faults", fps=FPS, recognizer=recognizer,
                          emit=lambda draft: events.append(draft))


def test_network_stream_that_drops_out_and_returns_resumes_events_and_counts_the_gap(face_clip, senders,
                                                                                    recognizer):
    # TCP and lossless H.264: nothing is lost or smeared on the way (a micro-expression moves the
    # face by a pixel or two), so the pipeline sees the file's own frames, every time.
    url = f"tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    output = ["-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", f"{url}?listen=1"]
    sender = senders(face_clip, output)
    gaps = []
    counters = CaptureCounters(on_gap=gaps.append)
    config = CaptureConfig(queue_size=512, network=NETWORK, reconnect={"initial_delay_s": 0.1, "max_delay_s": 0.4})
    events = []
    pipeline = pipeline_emitting_to(events, recognizer)

    def send_again_once_the_loss_is_noticed():
        wait_until(lambda: loop.state == "reconnecting", "the loss to be noticed")
        senders(face_clip, output)

    restarter = threading.Thread(target=send_again_once_the_loss_is_noticed)
    frames = []
    cut = None  # the number of the first frame after the reconnection
    loop = CaptureLoop(connect(url, config), config, counters=counters, get_timeout_s=WAIT_S).start()
    try:
        for frame in loop:
            frames.append(frame)
            pipeline.process(frame)
            if frame.discontinuous:
                cut = frame.index
            if events and restarter.ident is None:
                stop_process(sender)  # the sender dies right after an expression was recognised ...
                restarter.start()  # ... and comes back once the capture has noticed
            if cut is not None and (any(event["onset"]["frame"] > cut for event in events) or frame.index > cut + 150):
                break
            assert frame.index < 300, "no expression recognised in 10 s of stream"
    finally:
        loop.stop()
        if restarter.ident is not None:
            restarter.join(WAIT_S)
    pipeline.close()

    assert [f.index for f in frames if f.discontinuous] == [cut]
    assert all(b.index > a.index and b.t > a.t for a, b in zip(frames, frames[1:]))
    before = [f for f in frames if f.index < cut]
    # The gap is counted: from the last frame before the loss to the reopening, the read timeout included.
    assert counters.reconnects == 1 and len(gaps) == 1 and counters.lost_s == gaps[0] >= NETWORK["read_timeout_s"]
    assert frames[len(before)].captured_at - before[-1].captured_at >= NETWORK["read_timeout_s"]
    # The faces were tracked afresh after the cut: no event spans it, none belongs to a face from before it.
    assert pipeline.stats.restarts == {"discontinuity": 1}
    early = [e for e in events if e["offset"]["frame"] < cut]
    late = [e for e in events if e["onset"]["frame"] >= cut]
    assert early and late and len(early) + len(late) == len(events)
    assert {e["face"] for e in early}.isdisjoint({e["face"] for e in late})


def test_camera_unplugged_and_plugged_back_in_is_reopened_with_backoff_and_the_gap_is_counted(tmp_path, caplog):
    clip = write_cv2(tmp_path / "clip.avi", 20, fourcc="MJPG")
    device = tmp_path / "video0"  # stands in for /dev/video0
    shutil.copy(clip, device)
    config = CaptureConfig(queue_size=64, reconnect={"initial_delay_s": 0.05, "max_delay_s": 0.2})
    metrics = StreamMetrics("camera0")
    counters = CaptureCounters(on_gap=metrics.source_reconnected)  # wired as ``mer stream`` wires it
    loop = CaptureLoop(CameraSource(str(device), config), config, counters=counters, get_timeout_s=WAIT_S)

    def failed_attempts():
        return [r for r in list(caplog.records) if "reconnect attempt" in r.getMessage()]

    frames = []
    with caplog.at_level(logging.INFO, logger="streamer.capture"), serve_metrics(metrics.registry, port=0) as server:
        loop.start()
        device.unlink()  # unplugged: the node is gone; the frames already in the driver still arrive
        for frame in loop:
            frames.append(frame)
            if frame.index == 19:  # the last frame before the loss: wait for three refused reopenings
                wait_until(lambda: len(failed_attempts()) >= 3, "three failed reconnect attempts")
                shutil.copy(clip, device)  # plugged back in
            if frame.index == 20:
                device.unlink()  # unplugged again for good: this test sees one reconnection
            if frame.index == 29:
                loop.stop()
        samples = scrape(server.url)
    waits = [float(m.group(1)) for r in caplog.records
             if (m := re.search(r"reconnecting in ([\d.]+) s \(attempt \d+\)", r.getMessage()))]

    assert [f.index for f in frames] == list(range(30))  # numbering continues across the gap
    assert [f.index for f in frames if f.discontinuous] == [20]
    assert all(b.t > a.t for a, b in zip(frames, frames[1:]))
    assert all(abs(frame_level(f.image) - level(f.index % 20)) <= 4 for f in frames)  # the camera's picture again
    assert all("camera" in r.getMessage() and "cannot be opened" in r.getMessage() for r in failed_attempts())
    # Exponential backoff: 0.05, 0.1, 0.2, 0.2, ... until the camera was back; the gap covers those waits.
    assert len(waits) >= 4 and waits == [w for _, w in zip(waits, backoff_delays(config.reconnect))]
    assert counters.reconnects == 1 and counters.lost_s >= sum(waits)
    assert frames[20].t - frames[19].t >= sum(waits)
    assert value(samples, "mer_source_reconnects_total", stream="camera0") == 1
    assert value(samples, "mer_source_lost_seconds_total", stream="camera0") == pytest.approx(counters.lost_s)


def test_a_looping_file_starts_again_with_increasing_numbers_and_time(tmp_path):
    path = write_pyav(tmp_path / "clip.mp4", 10, rate=25)
    profile = tmp_path / "soak.toml"
    profile.write_text("[capture]\nloop = true\nqueue_size = 2\n")
    config = load_stream_config(profile).capture
    loop = CaptureLoop(str(path), config)
    frames = []
    for frame in loop:
        frames.append(frame)
        if len(frames) == 35:
            loop.stop()
    assert [f.index for f in frames] == list(range(35))
    assert [f.t for f in frames] == pytest.approx([i / 25 for i in range(35)], abs=1e-6)
    assert [f.index for f in frames if f.discontinuous] == [10, 20, 30]
    assert [frame_level(f.image) for f in frames] == [frame_level(f.image) for f in frames[:10]] * 3 + \
        [frame_level(f.image) for f in frames[:5]]
    # Stopped mid-pass: only the frames read after the consumer's last one are dropped, as "stopped".
    assert set(loop.counters.frames_dropped) <= {"stopped"} and loop.state == "ended"
    assert loop.counters.frames_read == 35 + sum(loop.counters.frames_dropped.values())


def test_a_looping_file_cut_short_counts_its_missing_frames_every_pass_under_unique_numbers(tmp_path):
    path = write_pyav(tmp_path / "cut.mp4", 30, options={"movflags": "faststart"}, content=noise)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    dropped = []
    counters = CaptureCounters(on_drop=lambda reason, index: dropped.append(index))
    loop = CaptureLoop(str(path), CaptureConfig(loop=True), counters=counters)
    delivered = []
    for frame in loop:
        delivered.append(frame.index)
        if frame.index >= 75:  # into the third pass
            loop.stop()
    assert len(set(delivered)) == len(delivered) and not set(delivered) & set(dropped)
    assert set(range(max(delivered) + 1)) <= set(delivered) | set(dropped)  # each number delivered or counted
    passes = [(sorted(i - start for i in delivered if start <= i < start + 30),
               sorted(i - start for i in dropped if start <= i < start + 30)) for start in (0, 30)]
    assert passes[0] == passes[1] and passes[0][1] and sorted(passes[0][0] + passes[0][1]) == list(range(30))


def test_every_pass_of_a_looping_file_gives_the_same_events(face_clip, recognizer):
    config = StreamConfig(capture=CaptureConfig(loop=True))
    events = []
    pipeline = pipeline_emitting_to(events, recognizer, config)
    rows = []
    loop = CaptureLoop(str(face_clip), config.capture)
    for frame in loop:
        rows.append(pipeline.process(frame))
        if frame.index == 3 * 120 - 1:
            loop.stop()
    pipeline.close()
    assert pipeline.stats.restarts == {"discontinuity": 2}

    def pass_of(frame):
        return frame // 120

    def relative(event):
        """The event as its pass saw it: frames and times from the start of the pass."""
        n = pass_of(event["onset"]["frame"])
        bounds = [(event[key]["frame"] - 120 * n, round(event[key]["t"] - 4.0 * n, 6))
                  for key in ("onset", "apex", "offset")]
        return (*bounds, event["kind"], event["label"], event["scores"])

    by_pass = [[relative(e) for e in events if pass_of(e["onset"]["frame"]) == n] for n in range(3)]
    assert by_pass[0] and by_pass[0] == by_pass[1] == by_pass[2]
    assert all(pass_of(e["onset"]["frame"]) == pass_of(e["offset"]["frame"]) for e in events)
    assert len({e["face"] for e in events}) == 3  # a new track each pass
    signals = [[row.signal for row in frame_rows] for frame_rows in rows]
    assert signals[:120] == signals[120:240] == signals[240:]  # the spotter saw exactly the same thing


def test_a_file_whose_timestamps_jump_back_keeps_time_increasing_and_marks_the_cut(tmp_path, caplog):
    # Two MPEG-TS recordings joined end to end (``cat a.ts b.ts``): the second starts its clock again.
    first = write_pyav(tmp_path / "a.ts", 20, codec="mpeg2video")
    second = write_pyav(tmp_path / "b.ts", 20, codec="mpeg2video")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with caplog.at_level(logging.WARNING, logger="streamer.sources"), FileSource(joined) as source:
        frames = list(source.frames())
    assert [f.index for f in frames] == list(range(40))
    assert [f.t for f in frames] == pytest.approx([i / 30 for i in range(40)], abs=1e-9)
    assert [f.index for f in frames if f.discontinuous] == [20]
    assert f"{joined}: frame 20: the timestamps jump back" in caplog.text
