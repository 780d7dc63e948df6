"""Regions of interest, defined once on dlib's 68-point scheme.

Boxes are ``(x0, y0, x1, y1)`` integers in the coordinates of the points given (image or
aligned crop), ``x1``/``y1`` exclusive, so ``image[y0:y1, x0:x1]`` is the region. They are
not clipped unless ``size`` is given. "left"/"right" name the IMAGE side, as the Dual-ATME
paper does: ``left_eyebrow`` is points 17-21, the person's right brow.
"""

from __future__ import annotations

import math

import numba
import numpy as np

Box = tuple[int, int, int, int]

# Spotting ROIs (notes/anchors.md C.3(3), He Yuhong's MEGC code): landmark groups and the margin
# added around their bounding box, in units of the outer-eye-corner distance (x, y). The nose
# (lower bridge, tip, nostrils) barely moves with expressions: it is the global-motion reference.
SPOTTING_GROUPS: dict[str, tuple[tuple[int, ...], tuple[float, float]]] = {
    "left_eyebrow": (tuple(range(17, 22)), (0.08, 0.15)),
    "right_eyebrow": (tuple(range(22, 27)), (0.08, 0.15)),
    "left_eye": (tuple(range(36, 42)), (0.08, 0.08)),
    "right_eye": (tuple(range(42, 48)), (0.08, 0.08)),
    "mouth": (tuple(range(48, 60)), (0.1, 0.1)),
    "nose": (tuple(range(29, 36)), (0.05, 0.05)),
}
# The same groups as arrays, for the compiled loop below (the spotter makes its boxes every frame).
_GROUP_POINTS = np.concatenate([indices for indices, _ in SPOTTING_GROUPS.values()]).astype(np.int64)
_GROUP_ENDS = np.cumsum([len(indices) for indices, _ in SPOTTING_GROUPS.values()]).astype(np.int64)
_GROUP_MARGINS = np.array([margins for _, margins in SPOTTING_GROUPS.values()])  # (groups, 2): x, y


def _box(x0: float, y0: float, x1: float, y1: float, size: tuple[int, int] | None) -> Box:
    box = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
    if size is None:
        return box
    width, height = size
    x0, x1 = (min(max(v, 0), width) for v in (box[0], box[2]))
    y0, y1 = (min(max(v, 0), height) for v in (box[1], box[3]))
    return (x0, y0, x1, y1)


def spotting_rois(points68: np.ndarray, size: tuple[int, int] | None = None) -> dict[str, Box]:
    """The spotter's regions: brows, eyes, mouth, and the nose as motion reference.

    ``size`` = (width, height) clips the boxes to that picture.
    """
    boxes = spotting_box_array(np.asarray(points68, dtype=np.float64))
    if size is not None:
        np.clip(boxes, 0, np.array([*size, *size]), out=boxes)
    return {name: tuple(box) for name, box in zip(SPOTTING_GROUPS, boxes.tolist())}


def spotting_box_array(points68: np.ndarray) -> np.ndarray:
    """:func:`spotting_rois` as a (groups, 4) int64 array in ``SPOTTING_GROUPS`` order, unclipped;
    ``points68`` float32 or float64 (taken as float64)."""
    return _spotting_boxes(points68, _GROUP_POINTS, _GROUP_ENDS, _GROUP_MARGINS)


@numba.njit(cache=True, nogil=True)
def _spotting_boxes(p, group_points, group_ends, group_margins):
    """Each group's bounding box widened by its margins (times the outer-eye-corner distance),
    floored and ceiled to whole pixels, in float64 (a compiled loop: called every frame)."""
    interocular = math.hypot(float(p[45, 0]) - float(p[36, 0]), float(p[45, 1]) - float(p[36, 1]))
    boxes = np.empty((group_ends.size, 4), np.int64)
    start = 0
    for g in range(group_ends.size):
        low_x = low_y = math.inf
        high_x = high_y = -math.inf
        for k in range(start, group_ends[g]):
            x, y = float(p[group_points[k], 0]), float(p[group_points[k], 1])
            low_x, low_y, high_x, high_y = min(low_x, x), min(low_y, y), max(high_x, x), max(high_y, y)
        margin_x, margin_y = group_margins[g, 0] * interocular, group_margins[g, 1] * interocular
        boxes[g, 0], boxes[g, 1] = math.floor(low_x - margin_x), math.floor(low_y - margin_y)
        boxes[g, 2], boxes[g, 3] = math.ceil(high_x + margin_x), math.ceil(high_y + margin_y)
        start = group_ends[g]
    return boxes


def hars_boxes(points68: np.ndarray, size: tuple[int, int] | None = None) -> dict[str, Box]:
    """Dual-ATME's HARS regions (paper 000, section 2): both eyebrows and the mouth.

    Left brow rows [y19 - h/4, y37 - h/4], columns [x17 - l/4, x21 + l/4] with h = |p19 p37| and
    l = |p17 p21| (the printed formula says p27 for the lower edge, the text p37: we follow the
    text). Right brow likewise with 24, 44, 22, 26. Mouth rows [y51 - h/2, y57 + h/2], columns
    [x48 - l/4, x54 + l/4] with h = |p33 p51|, l = |p48 p54|.
    """
    p = np.asarray(points68, dtype=np.float64)

    def dist(a: int, b: int) -> float:
        return float(np.hypot(*(p[a] - p[b])))

    def brow(top: int, bottom: int, left: int, right: int) -> Box:
        h, l = dist(top, bottom), dist(left, right)
        return _box(p[left, 0] - l / 4, p[top, 1] - h / 4, p[right, 0] + l / 4, p[bottom, 1] - h / 4, size)

    mouth_h, mouth_l = dist(33, 51), dist(48, 54)
    return {
        "left_eyebrow": brow(19, 37, 17, 21),
        "right_eyebrow": brow(24, 44, 22, 26),
        "mouth": _box(
            p[48, 0] - mouth_l / 4, p[51, 1] - mouth_h / 2, p[54, 0] + mouth_l / 4, p[57, 1] + mouth_h / 2, size
        ),
    }
