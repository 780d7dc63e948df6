"""The face front end as one configured unit: backend + aligner + tracker from ``[faces]``.

``mer stream``, ``mer analyze`` and the default engine's trainer all build their tracker
here from the same settings, so the crops an engine was trained on are made the same way
as the crops it classifies at run time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engines.config import ConfigModel
from streamer.faces import FaceAligner, FaceTracker, backend_accepts_gray, create_backend

__all__ = ["FacesConfig", "build_tracker", "frames_in_color"]


class FacesConfig(ConfigModel):
    """``[faces]`` of a stream profile."""

    backend: Literal["dlib", "mediapipe"] = "dlib"
    crop_size: int = Field(128, ge=32, le=512)  # aligned face crop, pixels
    align_method: Literal["affine3", "eyes"] = "affine3"  # 3-point template, or eye-corner rotation + crop
    smoothing: bool = True  # steady the alignment transform over time (not the landmarks)
    detect_interval_s: float = Field(1.0, gt=0)  # full detection at most this often while faces are tracked
    landmark_interval_s: float = Field(0.05, ge=0)  # landmarks refitted at most this often (0: every frame)
    dlib_trees: int = Field(0, ge=0)  # trees a cascade stage of dlib's 68-point model (0: all 500); dlib only
    max_faces: int = Field(4, ge=1, le=32)


def build_tracker(config: FacesConfig | None = None) -> FaceTracker:
    """A fresh tracker (with its own backend instance) for one stream."""
    config = config or FacesConfig()
    aligner = FaceAligner(config.crop_size, config.align_method, smoothing=config.smoothing)
    options = {"trees": config.dlib_trees} if config.backend == "dlib" else {}
    return FaceTracker(create_backend(config.backend, **options), aligner, detect_interval_s=config.detect_interval_s,
                       max_faces=config.max_faces, landmark_interval_s=config.landmark_interval_s)


def frames_in_color(config: FacesConfig | None = None, *, color_crops: bool = False) -> bool:
    """Whether a run must decode its frames in colour: when it keeps colour crops (an engine that
    takes RGB, or an annotated video drawn on the frames) or when the landmark backend needs colour.

    Otherwise frames are decoded as grey luma, which is most of what colour conversion costs saved
    (a 640x480 frame decodes 2-2.5x faster; docs/benchmarks.md) and a third of the memory the face
    front end reads. The luma is what BGR-to-grey conversion computes, up to rounding; dlib's
    landmark fits on it can differ by a pixel or two (docs/faces.md).
    """
    config = config or FacesConfig()
    return color_crops or not backend_accepts_gray(config.backend)
