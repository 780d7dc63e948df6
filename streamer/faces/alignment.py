"""Face alignment: warp a face to a fixed-size upright crop, as the micro-expression papers do.

Two methods, both defined by three *anchor* points in the image that map to three fixed
points of the crop (so one affine warp does the work, and one smoother can steady either):

``"affine3"`` (default) - a similarity to a template, from the eye *corners* only: the
    middle of each eye's two corners (36/39, 42/45) goes to a fixed crop position, and a third
    anchor is made below their midpoint, perpendicular to the eye line, so rotation, scale and
    position come from four points that neither blinks nor expressions move. (The MEGC
    spotting code of He Yuhong warps with 39, 42 and 33; but the nose base 33 moves with AU9/10
    and eye centres averaged over the lids move with every blink, which made the crop breathe
    under the spotter's regions: measured, docs/faces.md.)
``"eyes"`` - Dual-ATME (paper 000, Eq. 1-2): rotate by the angle of the outer eye corners
    36 -> 45, then crop from the jaw sides (points 1, 15) to the chin (8), from the brows
    (19) raised by d = ((y38 - y20) + (y43 - y23)) / 2 at the top; the box is stretched to
    the square crop.

The template of ``"affine3"`` (fractions of the crop side) is the mean shape of 399 real
faces with the crop framed like the ``"eyes"`` crop: jaw side to jaw side, chin to above
the brows.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.errors import InputError
from streamer.faces.smoothing import AnchorSmoother
from streamer.faces.types import AlignedFace

ALIGN_METHODS = ("affine3", "eyes")
AFFINE3_TEMPLATE = np.array([(0.265, 0.245), (0.735, 0.245), (0.5, 0.51)])
# The third anchor lies this many eye distances below the eyes' midpoint (the template's own ratio).
_THIRD_ANCHOR_DROP = (AFFINE3_TEMPLATE[2, 1] - AFFINE3_TEMPLATE[0, 1]) / (AFFINE3_TEMPLATE[1, 0] - AFFINE3_TEMPLATE[0, 0])


class FaceAligner:
    """Aligns faces to ``size`` x ``size`` grey crops; optionally steadied over time per face.

    ``smoothing`` settings (``min_cutoff_hz``, ``beta``) go to each face's
    :class:`~streamer.faces.smoothing.AnchorSmoother`, made by :meth:`new_smoother`;
    ``smoothing=False`` makes it return None (raw alignment every frame).
    """

    def __init__(
        self,
        size: int = 128,
        method: str = "affine3",
        *,
        smoothing: bool = True,
        min_cutoff_hz: float = 1.0,
        beta: float = 10.0,
    ) -> None:
        if method not in ALIGN_METHODS:
            raise InputError(f"unknown alignment method {method!r}; expected one of {', '.join(ALIGN_METHODS)}")
        if size < 16:
            raise InputError(f"aligned face size must be at least 16 pixels, got {size}")
        self.size = size
        self.method = method
        self.smoothing = smoothing
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        if method == "affine3":
            self._targets = (AFFINE3_TEMPLATE * size).astype(np.float32)
        else:
            self._targets = np.array([(0, 0), (size, 0), (0, size)], dtype=np.float32)

    def new_smoother(self) -> AnchorSmoother | None:
        """A fresh smoother for one tracked face (None when smoothing is off)."""
        if not self.smoothing:
            return None
        return AnchorSmoother(min_cutoff_hz=self.min_cutoff_hz, beta=self.beta)

    def anchors(self, points68: np.ndarray) -> np.ndarray:
        """(3, 2) image points that the alignment maps onto its three fixed crop points."""
        p = np.asarray(points68, dtype=np.float64)
        if self.method == "affine3":
            left, right = (p[36] + p[39]) / 2, (p[42] + p[45]) / 2
            dx, dy = right - left
            below = (left + right) / 2 + _THIRD_ANCHOR_DROP * np.array([-dy, dx])  # image y points down
            return np.stack([left, right, below])
        # "eyes": box in the frame rotated so that the outer eye corners are level.
        dx, dy = p[45] - p[36]
        norm = max(float(np.hypot(dx, dy)), 1e-6)
        cos, sin = dx / norm, dy / norm
        to_level = np.array([[cos, sin], [-sin, cos]])  # rotates the eye line onto the x axis
        level = p @ to_level.T
        raise_top = ((level[38, 1] - level[20, 1]) + (level[43, 1] - level[23, 1])) / 2
        x0, x1 = level[1, 0], level[15, 0]
        y0, y1 = level[19, 1] - raise_top, level[8, 1]
        corners = np.array([(x0, y0), (x1, y0), (x0, y1)])
        return corners @ to_level  # back to image coordinates (inverse rotation = transpose)

    def matrix(self, anchors: np.ndarray) -> np.ndarray:
        """(2, 3) image -> crop affine that puts ``anchors`` on the crop's fixed points."""
        return cv2.getAffineTransform(np.asarray(anchors, dtype=np.float32), self._targets)

    def align(
        self,
        image_bgr: np.ndarray,
        points68: np.ndarray,
        smoother: AnchorSmoother | None = None,
        t: float = 0.0,
    ) -> AlignedFace:
        """The aligned grey (and BGR colour) crop and landmarks; with a ``smoother``, the transform is
        steadied over time ``t``."""
        anchors = self.anchors(points68)
        if smoother is not None:
            anchors = smoother(anchors, t)
        matrix = self.matrix(anchors)
        crop = cv2.warpAffine(
            image_bgr, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        gray = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        points = (np.asarray(points68, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
        return AlignedFace(gray, points, matrix, color=crop if crop.ndim == 3 else None)
