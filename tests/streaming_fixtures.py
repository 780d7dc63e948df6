"""Helpers shared by the end-to-end streaming tests: synthetic videos, the real CLI, free ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mer(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the real ``mer`` command line in a subprocess; raises with its output on failure."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=kwargs.pop("timeout", 600), **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"mer {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def mer_popen(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "streamer.cli", *args], cwd=REPO, env=env, text=True, **kwargs)


def synth_long(out: Path, *, fps: int = 30, duration: float = 20, subjects: int = 1, micro: int = 4, macro: int = 2,
               size: str = "320x240", seed: int = 0) -> Path:
    """A synthetic long video (all distractors on) with its SAMM-LV sheet; returns the folder."""
    mer("synth", "long", "--out", str(out), "--fps", str(fps), "--duration", str(duration), "--subjects",
        str(subjects), "--micro", str(micro), "--macro", str(macro), "--size", size, "--seed", str(seed),
        "--video", "mp4", "--no-frames", "--no-progress")
    return out


def ground_truth(folder: Path) -> dict:
    return json.loads((folder / "ground_truth.json").read_text())


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing holds now (TCP, or UDP with ``socket.SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def udp_port_taken(port: int) -> bool:
    """Whether a process has bound UDP ``port`` on loopback (our own bind is then refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def reencode(source: Path, target: Path, *, frames: range = range(10**9), blank: range = range(0)) -> Path:
    """Re-encode ``frames`` of ``source`` into ``target`` (MPEG-4, 2 Mb/s), with the ``blank`` ones black:
    a face that vanishes for a while, or the first seconds of a video."""
    import av  # only the tests that re-encode need it

    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream = reader.streams.video[0]
        out = writer.add_stream("mpeg4", rate=stream.average_rate)
        out.width, out.height, out.pix_fmt, out.bit_rate = stream.codec_context.width, stream.codec_context.height, \
            "yuv420p", 2_000_000
        for index, frame in enumerate(reader.decode(stream)):
            if index not in frames:
                continue
            image = frame.to_ndarray(format="bgr24")
            if index in blank:
                image[:] = 0
            writer.mux(out.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        writer.mux(out.encode())
    return target
