"""Subjects: a source photo under a known geometric and photometric variation.

Two photos make too few subjects for leave-one-subject-out splits, so each subject is a
source photo scaled, slightly rotated, stretched, shifted, possibly mirrored, and with
its own exposure, contrast (gamma) and colour cast. Because the geometric transform is
a known affine map, the subject's landmarks are the source landmarks mapped through it;
no detector runs on synthetic images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from training.synthetic.landmarks import FaceFrame, transform_landmarks
from training.synthetic.sources import SOURCE_NAMES, source_photo


@dataclass(frozen=True)
class IdentityParams:
    """How a subject differs from its source photo."""

    source: str
    scale_jitter: float = 1.0  # multiplies the scale that gives the requested face size
    rotation_deg: float = 0.0
    aspect: float = 1.0  # horizontal stretch (>1 wider face)
    offset: tuple[float, float] = (0.0, 0.0)  # face centre shift, fraction of the frame size
    mirrored: bool = False
    gain: float = 1.0
    gamma: float = 1.0
    colour_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gain, RGB

    @classmethod
    def neutral(cls, source: str) -> "IdentityParams":
        return cls(source=source)

    @classmethod
    def sample(cls, source: str, rng: np.random.Generator) -> "IdentityParams":
        """A random but plausible variation (small enough that the face stays frontal)."""
        return cls(
            source=source,
            scale_jitter=float(rng.uniform(0.9, 1.1)),
            rotation_deg=float(rng.uniform(-6.0, 6.0)),
            aspect=float(rng.uniform(0.92, 1.08)),
            offset=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
            mirrored=bool(rng.random() < 0.5),
            gain=float(rng.uniform(0.85, 1.15)),
            gamma=float(rng.uniform(0.8, 1.25)),
            colour_cast=tuple(float(c) for c in rng.uniform(0.92, 1.08, size=3)),
        )


@dataclass(frozen=True)
class Identity:
    """A subject's neutral frame (BGR float32 in [0, 255]) and its landmarks in that frame."""

    subject: str
    params: IdentityParams
    image: np.ndarray
    landmarks: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.image.shape[1], self.image.shape[0]

    def describe(self) -> dict:
        """JSON-ready record for the ground truth files."""
        return {
            "subject": self.subject,
            **asdict(self.params),
            "landmarks": np.round(self.landmarks, 3).tolist(),
        }


def subject_params(index: int, seed: int, *, vary: bool = True) -> IdentityParams:
    """Subject ``index`` (0-based) cycles through the source photos; its variation depends on the seed only."""
    source = SOURCE_NAMES[index % len(SOURCE_NAMES)]
    if not vary:
        return IdentityParams.neutral(source)
    return IdentityParams.sample(source, np.random.default_rng([seed, 0x1D, index]))


def make_identity(subject: str, params: IdentityParams, size: tuple[int, int], face_scale: float) -> Identity:
    """Render a subject's neutral frame of ``size`` (width, height).

    ``face_scale`` is the face width (jaw landmarks 0 to 16) as a fraction of the frame's
    shorter side, before ``params.scale_jitter``.
    """
    photo = source_photo(params.source)
    width, height = size
    face = FaceFrame(photo.landmarks)
    jaw_width = float(np.hypot(*(photo.landmarks[16] - photo.landmarks[0])))
    scale = face_scale * min(width, height) / jaw_width * params.scale_jitter
    affine = _affine(face.centre, scale, params, size)

    image = photo.image.astype(np.float32)
    if scale < 1.0:  # pre-blur against aliasing when shrinking
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.45 / scale)
    warped = cv2.warpAffine(image, affine, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    rgb = _photometric(warped, params)
    landmarks = transform_landmarks(photo.landmarks, affine, mirrored=params.mirrored)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    bgr.setflags(write=False)
    landmarks.setflags(write=False)
    return Identity(subject=subject, params=params, image=bgr, landmarks=landmarks)


def _affine(face_centre: np.ndarray, scale: float, params: IdentityParams, size: tuple[int, int]) -> np.ndarray:
    """Source -> frame: centre the face, mirror, stretch, scale, rotate, shift."""
    width, height = size
    angle = math.radians(params.rotation_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    stretch = np.diag([scale * params.aspect * (-1.0 if params.mirrored else 1.0), scale])
    linear = rotation @ stretch
    target = np.array([width / 2 + params.offset[0] * width, height / 2 + params.offset[1] * height])
    return np.hstack([linear, (target - linear @ face_centre)[:, None]])


def _photometric(rgb: np.ndarray, params: IdentityParams) -> np.ndarray:
    normalised = np.clip(rgb, 0.0, 255.0) / 255.0
    toned = np.power(normalised, params.gamma) * params.gain * np.asarray(params.colour_cast, dtype=np.float32)
    return np.clip(toned * 255.0, 0.0, 255.0).astype(np.float32)
