"""The face front end: detection, 68 landmarks, tracking with stable ids, alignment, ROIs.

Landmark backends (dlib, MediaPipe) all report dlib's 68-point scheme; see docs/faces.md.
The backends import dlib / mediapipe only when created, so importing this package is cheap.
"""

from __future__ import annotations

from engines.errors import InputError
from streamer.faces.alignment import ALIGN_METHODS, FaceAligner
from streamer.faces.boxes import box_from_points, iou
from streamer.faces.model_files import ModelFileMissing, face_landmarker_path, shape_predictor_path
from streamer.faces.rois import Box, hars_boxes, spotting_rois
from streamer.faces.smoothing import AnchorSmoother
from streamer.faces.tracker import FaceTracker
from streamer.faces.types import AlignedFace, FaceLandmarks, LandmarkBackend, TrackedFace

BACKENDS = ("dlib", "mediapipe")

__all__ = [
    "ALIGN_METHODS",
    "BACKENDS",
    "AlignedFace",
    "AnchorSmoother",
    "Box",
    "FaceAligner",
    "FaceLandmarks",
    "FaceTracker",
    "LandmarkBackend",
    "ModelFileMissing",
    "TrackedFace",
    "backend_accepts_gray",
    "box_from_points",
    "create_backend",
    "face_landmarker_path",
    "hars_boxes",
    "iou",
    "shape_predictor_path",
    "spotting_rois",
]


def create_backend(name: str = "dlib", **options) -> LandmarkBackend:
    """A landmark backend by name: ``"dlib"`` or ``"mediapipe"``; ``options`` go to its constructor."""
    return _backend_class(name)(**options)


def backend_accepts_gray(name: str) -> bool:
    """Whether the backend ``name`` takes grey frames (then a run that needs no colour decodes none)."""
    return _backend_class(name).accepts_gray


def _backend_class(name: str) -> type:
    if name == "dlib":
        from streamer.faces.dlib_backend import DlibBackend

        return DlibBackend
    if name == "mediapipe":
        from streamer.faces.mediapipe_backend import MediaPipeBackend

        return MediaPipeBackend
    raise InputError(f"unknown face landmark backend {name!r}; expected one of {', '.join(BACKENDS)}")
