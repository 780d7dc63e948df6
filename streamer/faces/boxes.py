"""Face boxes: overlap for matching tracks, and a detector-like box rebuilt from landmarks.

dlib's shape predictor was trained on HOG detector boxes, so the box handed to it while
tracking must look like one. :func:`box_from_points` rebuilds such a box from the landmarks of
the previous frame; its constants were fitted on dlib HOG boxes of 134 real faces (box side =
3.34 x the RMS spread of points 17-67 around their centroid, coefficient of variation 8 %;
centre 0.17 spread below that centroid along the face's down axis).
"""

from __future__ import annotations

import numpy as np

from streamer.faces.types import BoxF

_SIDE_PER_SPREAD = 3.34
_DOWN_SHIFT_PER_SPREAD = 0.17


def iou(a: BoxF, b: BoxF) -> float:
    """Intersection over union of two boxes (0 when they do not overlap)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def box_from_points(points68: np.ndarray) -> BoxF:
    """A square box where dlib's HOG detector would have put this face."""
    inner = np.asarray(points68[17:], dtype=np.float64)
    centre = inner.mean(axis=0)
    spread = float(np.sqrt(((inner - centre) ** 2).sum(axis=1).mean()))
    eye_axis = points68[45] - points68[36]
    across = eye_axis / max(float(np.hypot(*eye_axis)), 1e-6)
    down = np.array([-across[1], across[0]])  # eye axis turned by +90 degrees: towards the chin
    cx, cy = centre + _DOWN_SHIFT_PER_SPREAD * spread * down
    half = _SIDE_PER_SPREAD * spread / 2
    return (float(cx - half), float(cy - half), float(cx + half), float(cy + half))


def scale_box(box: BoxF, factor: float) -> BoxF:
    """The box with its coordinates multiplied (from a resized image back to the original)."""
    return (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)


def grow_box(box: BoxF, factor: float) -> BoxF:
    """The box enlarged about its centre by ``factor``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)
