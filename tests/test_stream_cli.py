"""``mer stream`` end to end, every part real: a paced video file and a UDP stream sent by
ffmpeg on loopback, the shipped engine, ZeroMQ to a ``mer subscribe`` in another process,
and the Prometheus endpoint scraped over HTTP while the stream runs."""

from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import threading
import time
import urllib.request

import imageio_ffmpeg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.events import validate_event
from tests.streaming_fixtures import free_port, mer_popen, synth_long, udp_port_taken

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_video(tmp_path_factory):
    folder = synth_long(tmp_path_factory.mktemp("short"), fps=30, duration=10, micro=3, macro=1, seed=5)
    return next(folder.glob("*.mp4"))


def _scrape(port: int) -> dict[str, float]:
    """``name{labels}`` -> value of every sample on the endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def _journal(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _collect_lines(pipe) -> tuple[list[str], threading.Thread]:
    """Lines read from ``pipe`` by a thread as they come, into the returned list."""
    lines: list[str] = []

    def read() -> None:
        for line in pipe:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def _lines_until(process: subprocess.Popen, count: int, *, timeout: float) -> str:
    """The first ``count`` lines ``process`` prints (within ``timeout`` s), then it is stopped:
    waiting for its own ``--timeout`` of silence would only cost time."""
    lines, reader = _collect_lines(process.stdout)
    deadline = time.monotonic() + timeout
    while len(lines) < count and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.terminate()
    process.wait(timeout=10)
    reader.join(timeout=10)
    return "".join(lines)


def _endpoints():
    pub, rep, metrics = free_port(), free_port(), free_port()
    return f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{rep}", metrics


def test_stream_publishes_every_event_to_a_subscriber_process(short_video, tmp_path):
    endpoint, replay, metrics_port = _endpoints()
    journal = tmp_path / "events.jsonl"
    stream = mer_popen("stream", "--source", str(short_video), "--realtime", "--stream-id", "cam1",
                       "--endpoint", endpoint, "--replay-endpoint", replay, "--journal", str(journal),
                       "--metrics-port", str(metrics_port), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    subscriber = mer_popen("subscribe", "--endpoint", endpoint, "--replay-endpoint", replay, "--from-seq", "1",
                           "--timeout", "20", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        scraped: dict[str, float] = {}
        while stream.poll() is None:  # scrape while it runs; the last good scrape is kept
            try:
                scraped = _scrape(metrics_port)
            except OSError:
                pass
            time.sleep(0.5)
        out, err = stream.communicate(timeout=30)
        assert stream.returncode == 0, err
        received = _lines_until(subscriber, len(_journal(journal)), timeout=60)
    finally:
        for process in (stream, subscriber):
            if process.poll() is None:
                process.kill()
    journaled = _journal(journal)
    assert journaled, f"no events were published:\n{err}"
    events = [json.loads(line) for line in received.splitlines()]
    assert events == journaled  # every event, in order, exactly as journaled
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    for event in events:
        validate_event(event)
        assert event["stream"] == "cam1" and event["latency_ms"] >= 0
    # Realtime playback is live: frames the pipeline could not keep up with would be dropped and
    # counted. It runs at over ten times real time, and its models are loaded before the source
    # opens (they used to load while the first second of frames overflowed the queue): none is.
    summary = re.search(r"stream cam1: (\d+) frames, (\d+) events \(last seq (\d+)\), dropped (\{.*\})", out)
    assert summary, out
    processed, dropped = int(summary.group(1)), ast.literal_eval(summary.group(4))
    assert (processed, dropped) == (300, {})
    assert int(summary.group(2)) == int(summary.group(3)) == len(events)

    frames = scraped['mer_frames_read_total{stream=cam1}']
    assert 30 <= frames <= 300
    assert scraped['mer_faces_tracked{stream=cam1}'] == 1
    analysed = scraped['mer_stage_latency_seconds_count{stage=face,stream=cam1}']
    dropped_so_far = scraped.get('mer_frames_dropped_total{reason=queue_full,stream=cam1}', 0)
    assert analysed + dropped_so_far >= frames - 8  # up to a queue's worth still waiting at the scrape
    assert any(key.startswith("mer_engine_info{") and "backend=onnxruntime" in key for key in scraped)


def test_restart_continues_seq_and_sigterm_flushes(short_video, tmp_path):
    endpoint, replay, _ = _endpoints()
    journal = tmp_path / "events.jsonl"
    args = ("stream", "--source", str(short_video), "--endpoint", endpoint, "--replay-endpoint", replay,
            "--journal", str(journal), "--no-metrics")
    first = mer_popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    n = len(_journal(journal))
    assert n >= 1
    second = mer_popen(*args, "--realtime", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_journal(journal)) == n and time.monotonic() < deadline and second.poll() is None:
        time.sleep(0.2)
    second.send_signal(signal.SIGTERM)  # stop mid-video: pending intervals are flushed, journal closed
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    events = _journal(journal)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert len(events) > n  # the restarted publisher continued at n + 1
    assert "frames" in out


def test_stream_recognises_a_udp_stream_sent_by_ffmpeg(short_video, tmp_path):
    endpoint, replay, _ = _endpoints()
    journal = tmp_path / "events.jsonl"
    port = free_port()
    url = f"udp://127.0.0.1:{port}"
    stream = mer_popen("stream", "--source", url, "--endpoint", endpoint, "--replay-endpoint", replay,
                       "--journal", str(journal), "--no-metrics", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Send only once mer's UDP socket is bound (it opens it after it starts publishing): sooner, or
    # after a guessed sleep on a loaded machine, the video's first seconds are lost, and with them
    # the spotter's warm-up and events.
    log_lines, logger = _collect_lines(stream.stderr)
    deadline = time.monotonic() + 120
    while not udp_port_taken(port):
        assert stream.poll() is None, "".join(log_lines)
        assert time.monotonic() < deadline, f"mer never bound udp port {port}:\n{''.join(log_lines)}"
        time.sleep(0.05)
    sender = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
                             "-re", "-i", str(short_video), "-c:v", "mpeg2video", "-q:v", "2", "-g", "10",
                             "-f", "mpegts", f"{url}?pkt_size=1316"], timeout=120)
    assert sender.returncode == 0
    time.sleep(1.5)
    stream.send_signal(signal.SIGTERM)
    out = stream.communicate(timeout=60)[0]
    logger.join(timeout=10)
    err = "".join(log_lines)
    assert stream.returncode == 0, err
    events = _journal(journal)
    assert events, f"nothing recognised from {url}:\n{out}\n{err}"
    assert all(event["stream"].startswith("127-0-0-1") for event in events)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
