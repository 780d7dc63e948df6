"""What ``mer analyze`` writes per video besides the events: a per-frame CSV, the spotting
intervals in the MEGC predictions form, a timeline plot, and optionally an annotated video.

The per-frame CSV follows OpenFace's layout where it can (``frame, timestamp, face_id,
confidence, success``, then ``x_0..x_67, y_0..y_67``) and adds the spotting signal, so
tools written for OpenFace output read it with a column filter.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FaceFrameRow", "FrameCsvWriter", "write_intervals_csv", "write_timeline_png", "AnnotatedVideoWriter"]

LANDMARK_COLUMNS = [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
FRAME_COLUMNS = ["frame", "timestamp", "face_id", "confidence", "success", *LANDMARK_COLUMNS, "spot_signal"]


@dataclass(frozen=True)
class FaceFrameRow:
    """One face in one frame (``face_id`` -1 and ``success`` 0 when no face was found)."""

    frame: int
    t: float
    face_id: int
    confidence: float
    success: bool
    points: np.ndarray | None  # (68, 2) image pixels
    signal: float | None


# One row's 136 landmark fields in one %-format: a row per face per frame is written at hundreds of
# frames a second, where formatting each number on its own cost more than the rest of the row.
_COORDINATES = ",".join(["%.2f"] * len(LANDMARK_COLUMNS))
_NO_COORDINATES = "," * (len(LANDMARK_COLUMNS) - 1)


class FrameCsvWriter:
    """Streams rows to ``path``; a frame without a face still gets a row (success 0).

    Rows are written as ``csv.writer`` writes them (``\\r\\n`` line ends): numbers only, nothing to quote.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle = open(self.path, "w", newline="", encoding="utf-8")
        self._handle.write(",".join(FRAME_COLUMNS) + "\r\n")

    def write(self, row: FaceFrameRow) -> None:
        if row.points is not None:
            coordinates = _COORDINATES % tuple(row.points.T.ravel().tolist())
        else:
            coordinates = _NO_COORDINATES
        signal = "" if row.signal is None else f"{row.signal:.6g}"
        self._handle.write(f"{row.frame},{row.t:.6f},{row.face_id},{row.confidence:.3f},{int(row.success)},"
                           f"{coordinates},{signal}\r\n")

    def close(self) -> None:
        self._handle.close()


def write_intervals_csv(path: Path, video: str, events: Sequence[dict], subject: str = "") -> None:
    """Spotted intervals as ``video,onset,offset,subject`` rows (``mer eval-spot --pred``).

    Frame numbers are written 1-based, as the annotation sheets number frames (their image
    files start at 1); events carry the 0-based decode index.
    """
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "onset", "offset", "subject"])
        for event in events:
            writer.writerow([video, event["onset"]["frame"] + 1, event["offset"]["frame"] + 1, subject])


def write_timeline_png(path: Path, title: str, signals: Sequence[tuple[int, float, float]],
                       events: Sequence[dict]) -> None:
    """The spotting signal of each face over time (``(face, t, signal)`` triples), with each
    event's interval and label."""
    import matplotlib

    matplotlib.use("Agg")  # never a window: this runs headless and in tests
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(12, 3.2), dpi=100)
    faces = sorted({face for face, _, _ in signals})
    for face in faces:
        times, values = zip(*((t, value) for f, t, value in signals if f == face), strict=True)
        axes.plot(times, values, linewidth=0.8, label=f"face {face}")
    colours = {"micro": "tab:red", "macro": "tab:orange"}
    for event in events:
        start, end = event["onset"]["t"], event["offset"]["t"]
        axes.axvspan(start, end, color=colours.get(event["kind"], "tab:gray"), alpha=0.25)
        axes.annotate(f"{event['kind']}: {event['label']}", (event["apex"]["t"], 1.0), xycoords=("data", "axes fraction"),
                      fontsize=7, ha="center", va="top", rotation=90)
    axes.set_xlabel("stream time (s)")
    axes.set_ylabel("spotting signal")
    axes.set_title(title, fontsize=9)
    if faces:
        axes.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size`` (width, height), aspect kept, black bars around it.

    OpenCV's writer silently drops a frame whose size is not the one it was opened with: a
    video whose resolution changes midway would lose every frame after the change."""
    width, height = size
    if image.shape[1] == width and image.shape[0] == height:
        return image
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    fitted = np.zeros((height, width, 3), np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    fitted[y:y + h, x:x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return fitted


class AnnotatedVideoWriter:
    """An mp4 with landmarks, track ids and the current event label drawn on each frame.

    Off by default: it stores the faces it shows, which the product only does when asked.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))  # (width, height): every frame is written at this size
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), self.size)
        if not self._writer.isOpened():
            raise OSError(f"{self.path}: cannot open a video writer")
        self._labels: dict[int, tuple[str, float]] = {}

    def show_event(self, event: dict, hold_s: float = 1.0) -> None:
        """Keep an event's label on its face until ``hold_s`` after its offset."""
        self._labels[event["face"]] = (f"{event['kind']} {event['label']}", event["offset"]["t"] + hold_s)

    def write(self, image: np.ndarray, t: float, rows: Sequence[FaceFrameRow]) -> None:
        canvas = image.copy()
        for row in rows:
            if not row.success or row.points is None:
                continue
            for x, y in row.points.astype(int):
                cv2.circle(canvas, (int(x), int(y)), 1, (0, 255, 0), -1)
            x0, y0 = row.points.min(axis=0).astype(int)
            text = f"#{row.face_id}"
            label = self._labels.get(row.face_id)
            if label is not None and t <= label[1]:
                text += f" {label[0]}"
            cv2.putText(canvas, text, (int(x0), max(12, int(y0) - 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1)
        self._writer.write(_letterbox(canvas, self.size))

    def close(self) -> None:
        self._writer.release()
