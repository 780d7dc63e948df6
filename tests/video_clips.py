"""Small real video files for the capture tests, written by the real encoders.

Frame ``i`` is a flat gray of ``level(i)`` so a test can tell which frame it got even
through a lossy codec.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SIZE = (64, 48)  # width, height


def level(i: int) -> int:
    return 16 + (i * 10) % 200  # inside video range 16-235; neighbours differ by 10


def flat(i: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    return np.full((size[1], size[0], 3), level(i), np.uint8)


def write_pyav(path: Path, frames: int, rate: int | Fraction = 30, codec: str = "libx264",
               size: tuple[int, int] = SIZE, options: dict[str, str] | None = None,
               content: Callable[[int, tuple[int, int]], np.ndarray] = flat) -> Path:
    """Encode with PyAV (libx264 uses B-frames, so decode order differs from display order)."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for i in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(content(i, size), format="bgr24")))
        container.mux(stream.encode())
    return path


def noise(i: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Incompressible frames: every frame takes about the same share of the file."""
    return np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def write_cv2(path: Path, frames: int, fps: float = 30, fourcc: str = "mp4v", size: tuple[int, int] = SIZE) -> Path:
    """Encode with OpenCV's VideoWriter (mp4v in .mp4, MJPG in .avi)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for i in range(frames):
        writer.write(flat(i, size))
    writer.release()
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    """Every frame OpenCV's reader gives for ``path`` (BGR), in order."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def frame_level(image: np.ndarray) -> int:
    """The gray level a decoded flat frame shows (codecs shift it by a few values)."""
    return int(round(float(image.mean())))


WAIT_S = 20.0  # generous upper bound for anything a test waits on; never reached when things work


def wait_until(condition: Callable[[], bool], what: str, poll_s: float = 0.005) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll_s)
