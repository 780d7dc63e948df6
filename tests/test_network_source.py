"""Network sources against a real FFmpeg sender on loopback: receive, lose, reconnect.

The sender is the static ffmpeg binary of imageio-ffmpeg streaming MPEG-TS in real time
(``-re``), the way a camera or a restreamer would.
"""

from __future__ import annotations

import socket
import subprocess
import time

import imageio_ffmpeg
import pytest

from streamer.capture import CaptureCounters, CaptureLoop
from streamer.sources import NetworkSource
from streamer.stream_config import CaptureConfig
from tests.streaming_fixtures import free_port
from tests.video_clips import WAIT_S, wait_until, write_pyav

SIZE = (160, 120)


@pytest.fixture
def clip(tmp_path):
    return write_pyav(tmp_path / "clip.mp4", 60, size=SIZE)


@pytest.fixture
def senders():
    """Start ffmpeg senders; every one still running is killed when the test ends."""
    started: list[subprocess.Popen] = []

    def start(clip, output_args: list[str]) -> subprocess.Popen:
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
                   "-re", "-stream_loop", "-1", "-i", str(clip),
                   "-c:v", "mpeg2video", "-g", "10", "-f", "mpegts", *output_args]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        return process

    yield start
    for process in started:
        stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(WAIT_S)



def connect(url: str, config: CaptureConfig) -> NetworkSource:
    """Open ``url`` once the listening sender is up (it needs a moment to start)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return NetworkSource(url, config)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


NETWORK = {"open_timeout_s": 5.0, "read_timeout_s": 0.5}


def test_udp_stream_survives_a_sender_restart(clip, senders):
    port = free_port(socket.SOCK_DGRAM)
    url = f"udp://127.0.0.1:{port}"
    output = [f"{url}?pkt_size=1316"]
    sender = senders(clip, output)
    reconnected_at = []
    counters = CaptureCounters(on_reconnect=lambda count: reconnected_at.append(time.monotonic()))
    config = CaptureConfig(queue_size=256, network=NETWORK, reconnect={"initial_delay_s": 0.1, "max_delay_s": 0.5})
    loop = CaptureLoop(url, config, counters=counters, get_timeout_s=WAIT_S).start()
    try:
        frames = iter(loop)
        before = [next(frames) for _ in range(10)]
        assert all(f.image.shape == (SIZE[1], SIZE[0], 3) for f in before)

        stop_process(sender)  # the camera goes away ...
        wait_until(lambda: loop.state == "reconnecting", "the loss to be noticed")
        senders(clip, output)  # ... and comes back
        wait_until(lambda: counters.reconnects >= 1, "the reconnection")

        after = []
        while len(after) < 10:
            frame = next(frames)
            (after if frame.captured_at > reconnected_at[0] else before).append(frame)
    finally:
        loop.stop()
    received = before + after
    assert [f.index for f in received] == sorted({f.index for f in received})  # increasing, no repeats
    assert min(f.index for f in after) > max(f.index for f in before)
    assert all(b.t > a.t for a, b in zip(received, received[1:]))
    assert counters.reconnects >= 1
    assert loop.state == "ended"


@pytest.mark.parametrize("scheme", ["http", "tcp"])
def test_stream_served_by_a_listening_sender_is_received(clip, senders, scheme):
    port = free_port(socket.SOCK_STREAM)
    url = f"{scheme}://127.0.0.1:{port}"
    listen = ["-listen", "1", url] if scheme == "http" else [f"{url}?listen=1"]
    senders(clip, listen)
    source = connect(url, CaptureConfig(network=NETWORK))
    assert (source.kind, source.live, source.size) == ("network", True, SIZE)
    with CaptureLoop(source, CaptureConfig(queue_size=64), get_timeout_s=WAIT_S) as loop:
        frames = [frame for _, frame in zip(range(15), loop)]
    assert [f.index for f in frames] == list(range(15))
    # Stream time follows the sender's 30 frames/s timestamps, not the arrival jitter.
    assert [round(b.t - a.t, 6) for a, b in zip(frames, frames[1:])] == [round(1 / 30, 6)] * 14
