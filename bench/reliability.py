"""Soak and load figures of ``mer stream`` (docs/reliability.md), every part real.

Run from the repository root::

    .venv/bin/python -m bench.reliability soak [--minutes 10] [--json]
    .venv/bin/python -m bench.reliability load [--streams 3] [--seconds 60] [--json]

``soak``: one ``mer stream --loop`` process analyses a synthetic 20 s video over and over, as
fast as the machine allows (no pacing, so no frame is dropped), for ``--minutes``. Its resident
memory and open file descriptors are sampled from ``/proc`` every few seconds; at the end it is
stopped with SIGTERM and its journal is read back. Figures: memory growth from the end of the
first loop (imports, the engine and the buffers warmed up) to the end, descriptor growth, and
the events of each complete loop, which must be the same events at the same frames of the video.

``load``: ``--streams`` ``mer stream --realtime --loop`` processes at once, each pacing the
video at its own 30 fps like a camera, so the 2 cores are oversubscribed and the bounded
capture queues must drop frames. Figures per stream, scraped from its Prometheus endpoint:
frames read, analysed and dropped by reason, resident memory at the start and the end, and
the event latency (offset frame captured -> published) from its histogram.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import av
from prometheus_client.parser import text_string_to_metric_families


MER = [sys.executable, "-m", "streamer.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _frame_count(video: Path) -> int:
    with av.open(str(video)) as container:
        return sum(1 for _ in container.decode(video=0))


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@dataclass
class StreamProcess:
    """One ``mer stream`` subprocess on free loopback ports, with its journal and samples."""

    name: str
    video: Path
    folder: Path
    realtime: bool
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (s since start, RSS KiB, fds)
    started: float = 0.0

    @property
    def journal(self) -> Path:
        return self.folder / f"{self.name}.jsonl"

    def start(self) -> None:
        args = [*MER, "stream", "--source", str(self.video), "--loop", "--stream-id", self.name,
                "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--replay-endpoint", f"tcp://127.0.0.1:{free_port()}",
                "--journal", str(self.journal), "--metrics-port", str(self.metrics_port)]
        if self.realtime:
            args.append("--realtime")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        self.started = time.monotonic()

    def sample(self) -> None:
        pid = self.process.pid
        self.samples.append((time.monotonic() - self.started, _resident_kib(pid), _open_fds(pid)))

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        _out, err = self.process.communicate(timeout=120)
        return self.process.returncode, err

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.journal.read_text().splitlines()]


def _wait_for_metrics(stream: StreamProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stream.process.poll() is not None:
            raise RuntimeError(f"{stream.name} exited early: {stream.process.stderr.read()}")
        try:
            _scrape(stream.metrics_port)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{stream.name}: no metrics endpoint after {timeout} s")


def _video(folder: Path, seconds: int) -> Path:
    """A synthetic 320x240, 30 fps video with 4 micro- and 2 macro-expressions, made by ``mer synth``."""
    subprocess.run([*MER, "synth", "long", "--out", str(folder), "--fps", "30", "--duration", str(seconds),
                    "--subjects", "1", "--micro", "4", "--macro", "2", "--size", "320x240", "--seed", "11",
                    "--video", "mp4", "--no-frames", "--no-progress"], check=True, capture_output=True)
    return next(folder.glob("*.mp4"))


def soak(minutes: float, sample_every: float = 5.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="mer-soak-") as tmp:
        folder = Path(tmp)
        video = _video(folder / "video", 20)
        frames_per_loop = _frame_count(video)
        stream = StreamProcess("soak", video, folder, realtime=False)
        stream.start()
        _wait_for_metrics(stream)
        deadline = time.monotonic() + minutes * 60
        first_loop_at: float | None = None
        while time.monotonic() < deadline:
            stream.sample()
            if first_loop_at is None:
                read = _scrape(stream.metrics_port).get(("mer_frames_read_total", (("stream", "soak"),)), 0)
                if read >= frames_per_loop:
                    first_loop_at = stream.samples[-1][0]
            time.sleep(sample_every)
        stream.sample()
        scraped = _scrape(stream.metrics_port)
        status, err = stream.stop()
        events = stream.events()
    if status != 0:
        raise RuntimeError(f"mer stream exited with {status}: {err[-2000:]}")
    frames_read = int(scraped.get(("mer_frames_read_total", (("stream", "soak"),)), 0))
    complete_loops = frames_read // frames_per_loop
    per_loop: dict[int, list[tuple]] = {loop: [] for loop in range(complete_loops)}
    for event in events:
        loop = event["onset"]["frame"] // frames_per_loop
        if loop < complete_loops and event["offset"]["frame"] // frames_per_loop == loop:
            per_loop[loop].append((event["onset"]["frame"] % frames_per_loop, event["apex"]["frame"] % frames_per_loop,
                                   event["offset"]["frame"] % frames_per_loop, event["kind"], event["label"]))
    counts = [len(per_loop[loop]) for loop in range(complete_loops)]
    warm = [s for s in stream.samples if first_loop_at is not None and s[0] >= first_loop_at]
    rss_warm, rss_end = warm[0][1], warm[-1][1]
    return {
        "minutes": minutes,
        "frames_per_loop": frames_per_loop,
        "frames_read": frames_read,
        "complete_loops": complete_loops,
        "events_per_loop": counts,
        "identical_loops": all(per_loop[loop] == per_loop[0] for loop in range(complete_loops)),
        "frames_dropped": {dict(labels)["reason"]: value for (name, labels), value in scraped.items()
                           if name == "mer_frames_dropped_total"},
        "rss_kib_after_first_loop": rss_warm,
        "rss_kib_end": rss_end,
        "rss_kib_max": max(s[1] for s in warm),
        "rss_growth": round(rss_end / rss_warm - 1, 4),
        "fds_after_first_loop": warm[0][2],
        "fds_end": warm[-1][2],
        "fds_max": max(s[2] for s in warm),
        "exit_status": status,
    }


def _histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the first bucket holding the q-th observation (Prometheus-style, coarse)."""
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return None
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def load(streams: int, seconds: float, sample_every: float = 2.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="mer-load-") as tmp:
        folder = Path(tmp)
        video = _video(folder / "video", 20)
        running = [StreamProcess(f"cam{i}", video, folder, realtime=True) for i in range(streams)]
        for stream in running:
            stream.start()
        for stream in running:
            _wait_for_metrics(stream)
            stream.samples.clear()
            stream.started = time.monotonic()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for stream in running:
                stream.sample()
            time.sleep(sample_every)
        results = []
        for stream in running:
            scraped = _scrape(stream.metrics_port)
            status, err = stream.stop()
            if status != 0:
                raise RuntimeError(f"{stream.name} exited with {status}: {err[-2000:]}")
            label = (("stream", stream.name),)
            dropped = {dict(labels)["reason"]: value for (name, labels), value in scraped.items()
                       if name == "mer_frames_dropped_total"}
            buckets = sorted((float(dict(labels)["le"]), value) for (name, labels), value in scraped.items()
                             if name == "mer_event_latency_seconds_bucket")
            latency_count = scraped.get(("mer_event_latency_seconds_count", label), 0)
            latency_sum = scraped.get(("mer_event_latency_seconds_sum", label), 0)
            rss = [s[1] for s in stream.samples]
            results.append({
                "stream": stream.name,
                "frames_read": scraped.get(("mer_frames_read_total", label), 0),
                "frames_dropped": dropped,
                "events": len(stream.events()),
                "event_latency_mean_s": round(latency_sum / latency_count, 3) if latency_count else None,
                "event_latency_p50_s": _histogram_quantile(buckets, 0.5),
                "event_latency_p95_s": _histogram_quantile(buckets, 0.95),
                "rss_kib_first": rss[0],
                "rss_kib_last": rss[-1],
                "rss_kib_max": max(rss),
                "exit_status": status,
            })
    return {"streams": streams, "seconds": seconds, "cores": os.cpu_count(), "per_stream": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    soak_parser = sub.add_parser("soak", help="one looping stream for a long time")
    soak_parser.add_argument("--minutes", type=float, default=10.0)
    load_parser = sub.add_parser("load", help="several paced streams at once")
    load_parser.add_argument("--streams", type=int, default=3)
    load_parser.add_argument("--seconds", type=float, default=60.0)
    for each in (soak_parser, load_parser):
        each.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args(argv)
    figures = soak(args.minutes) if args.what == "soak" else load(args.streams, args.seconds)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
