"""The records the face front end hands downstream, and the interface every landmark backend meets.

Everything downstream speaks dlib's 68-point scheme (iBUG 300-W numbering, 0-based: jaw 0-16,
brows 17-26, nose 27-35, eyes 36-47, lips 48-67), whatever backend found the face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engines.errors import InputError

BoxF = tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels


@dataclass
class FaceLandmarks:
    """One face in one image."""

    points: np.ndarray  # (68, 2) float32, image pixels, dlib 68-point scheme
    box: BoxF  # detector-like square box around the face (what ``refine`` expects back)
    confidence: float  # 0..1; see the backend for what it measures


@dataclass
class AlignedFace:
    """A face warped to a fixed-size, upright crop.

    ``color`` is the same crop before the grey conversion, in the frame's own BGR order (the
    warp makes it anyway, so keeping it is free); None when the frame was grey. Models fed
    colour convert it to RGB where they build their input (``mer prepare``, the recognizer).
    """

    gray: np.ndarray  # (S, S) uint8
    points: np.ndarray  # (68, 2) float32 in crop coordinates
    matrix: np.ndarray  # (2, 3) float64 affine, image -> crop
    color: np.ndarray | None = None  # (S, S, 3) uint8 BGR


@dataclass
class TrackedFace:
    """A face followed across frames under one id."""

    track_id: int
    landmarks: FaceLandmarks
    aligned: AlignedFace
    detected: bool  # True when the full detector found it on this frame, False when refined in its box


class LandmarkBackend(Protocol):
    """Finds faces and their 68 landmarks; implemented by dlib and MediaPipe."""

    name: str
    accepts_gray: bool  # takes H x W grey frames as well as BGR ones (so a run may decode without colour)

    def detect(self, image_bgr: np.ndarray) -> list[FaceLandmarks]:
        """Every face in the whole image (expensive: run it rarely)."""
        ...

    def refine(self, image_bgr: np.ndarray, box: BoxF) -> FaceLandmarks | None:
        """The landmarks of the face known to be in ``box`` (cheap: for tracking); None if it is gone."""
        ...


def require_image(image: np.ndarray, *, gray: bool) -> None:
    """Backends take what :class:`streamer.frames.Frame` carries: H x W x 3 BGR ``uint8``, or, for a
    backend that accepts it (``gray``), H x W grey ``uint8`` (the luma of a video decoded without colour)."""
    fits = isinstance(image, np.ndarray) and image.dtype == np.uint8 and (
        (image.ndim == 3 and image.shape[2] == 3) or (gray and image.ndim == 2))
    if not fits:
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        wanted = "an H x W x 3 BGR or H x W grey uint8 image" if gray else "an H x W x 3 uint8 BGR image"
        raise InputError(f"face detection needs {wanted}, got {got}")
