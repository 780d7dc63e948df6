"""The real face photos that installed packages ship, with their landmarks.

Real micro-expression datasets cannot be redistributed, so the generator starts from
public-domain portraits bundled with scikit-image (the astronaut Eileen Collins) and
matplotlib (Grace Hopper). They are the only faces in the synthetic footage: every
subject is one of them under a geometric and photometric variation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from training.synthetic.landmarks import detect_landmarks


@dataclass(frozen=True)
class SourcePhoto:
    """A neutral portrait (RGB uint8) and its 68 dlib landmarks."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray


def _astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        data = np.frombuffer(handle.read(), dtype=np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


SOURCE_LOADERS = {"astronaut": _astronaut, "grace_hopper": _grace_hopper}
SOURCE_NAMES = tuple(SOURCE_LOADERS)


@functools.lru_cache(maxsize=None)
def source_photo(name: str) -> SourcePhoto:
    """Load one source photo and find its landmarks; cached because dlib costs about a second."""
    image = SOURCE_LOADERS[name]()
    image.setflags(write=False)
    landmarks = detect_landmarks(image, name=name)
    landmarks.setflags(write=False)
    return SourcePhoto(name=name, image=image, landmarks=landmarks)
