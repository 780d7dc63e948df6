"""Files the generator writes: video files and ground-truth json (frame folders use
:func:`training.datasets.frames.write_frames`, the same writer the dataset fixtures use)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from engines.errors import InputError

# Container suffix -> fourcc that OpenCV's FFmpeg backend writes and reads back here.
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, size: tuple[int, int]) -> int:
    """Encode BGR frames of ``size`` (width, height) into ``path`` (.mp4 'mp4v' or .avi MJPG); returns the count."""
    codec = VIDEO_CODECS.get(path.suffix.lower())
    if codec is None:
        raise InputError(f"unsupported video suffix {path.suffix!r} (expected {', '.join(VIDEO_CODECS)})", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), size)
    if not writer.isOpened():
        raise InputError(f"OpenCV cannot open a {codec} video writer", path=path)
    count = 0
    try:
        for frame in frames:
            writer.write(frame)
            count += 1
    finally:
        writer.release()
    return count


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")

