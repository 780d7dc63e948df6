"""Smooth displacement fields anchored on landmarks, and how to render them by backward warping.

A field says, for every pixel of the neutral face, how far (in pixels) the skin there
moves. It is a sum of compactly supported radial bumps (Wendland's C2 function), one per
anchor point, each pushing in that anchor's direction. Compact support matters: outside
the bumps the field is exactly zero, so "no motion outside the action unit" holds to the
last bit instead of to a Gaussian tail.

Fields live on one rectangle of the frame (the :class:`Region` that holds every bump of
a face) to keep rendering cheap at large frame sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

INVERSION_STEPS = 4


def wendland(distance_over_radius: np.ndarray) -> np.ndarray:
    """Wendland's C2 bump: 1 at the centre, smooth, exactly 0 from distance = radius on."""
    s = np.clip(distance_over_radius, 0.0, 1.0)
    return (1.0 - s) ** 4 * (4.0 * s + 1.0)


@dataclass(frozen=True)
class Anchor:
    """One bump: centre (x, y) in frame pixels, displacement direction (unit-ish), radius, weight."""

    centre: tuple[float, float]
    direction: tuple[float, float]
    radius: float
    weight: float = 1.0


@dataclass(frozen=True)
class Region:
    """A rectangle of the frame: columns x0..x1-1, rows y0..y1-1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @classmethod
    def around(cls, anchors: list[Anchor], size: tuple[int, int]) -> "Region":
        """The smallest rectangle inside the frame that holds every anchor's bump."""
        width, height = size
        xs = [a.centre[0] - a.radius for a in anchors] + [a.centre[0] + a.radius for a in anchors]
        ys = [a.centre[1] - a.radius for a in anchors] + [a.centre[1] + a.radius for a in anchors]
        x0 = int(np.clip(np.floor(min(xs)) - 1, 0, width))
        y0 = int(np.clip(np.floor(min(ys)) - 1, 0, height))
        x1 = int(np.clip(np.ceil(max(xs)) + 2, x0, width))
        y1 = int(np.clip(np.ceil(max(ys)) + 2, y0, height))
        return cls(x0, y0, x1, y1)


def anchored_field(anchors: list[Anchor], region: Region) -> np.ndarray:
    """Sum of the anchors' bumps on ``region``, scaled so the largest displacement is 1 px.

    Returns float32 (h, w, 2) holding (dx, dy). Unit peak lets callers state amplitudes
    directly as the peak displacement in pixels.
    """
    h, w = region.shape
    xs = np.arange(region.x0, region.x1, dtype=np.float64)
    ys = np.arange(region.y0, region.y1, dtype=np.float64)[:, None]
    field = np.zeros((h, w, 2), dtype=np.float64)
    for anchor in anchors:
        distance = np.sqrt((xs - anchor.centre[0]) ** 2 + (ys - anchor.centre[1]) ** 2)
        bump = anchor.weight * wendland(distance / anchor.radius)
        field[..., 0] += bump * anchor.direction[0]
        field[..., 1] += bump * anchor.direction[1]
    return unit_peak(field.astype(np.float32))


def unit_peak(field: np.ndarray) -> np.ndarray:
    """``field`` divided by its largest displacement length."""
    peak = float(np.sqrt((field**2).sum(axis=2)).max())
    if peak <= 0.0:
        raise ValueError("displacement field is zero everywhere (anchors outside the region?)")
    return field / peak


def max_fold_free_amplitude(unit_field: np.ndarray) -> float:
    """Largest amplitude (px) at which the warp stays one-to-one with margin.

    A displacement d(x) keeps x -> x + a*d(x) invertible while a * |grad d| < 1; we stop at
    0.8 so that the fixed-point inversion in :func:`inverse_displacement` converges fast.
    """
    gradients = [np.gradient(unit_field[..., c]) for c in range(2)]
    norm = np.sqrt(sum(g**2 for pair in gradients for g in pair))
    return 0.8 / float(norm.max())


def inverse_displacement(forward: np.ndarray) -> np.ndarray:
    """The backward-warp offsets u with u(y) = d(y - u(y)), by fixed-point iteration.

    Rendering samples the neutral image at y - u(y); with this u the skin point x of the
    neutral face lands exactly at x + d(x) in the rendered frame, which is what the ground
    truth states (and what optical flow between onset and apex measures).
    """
    h, w = forward.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    inverse = forward.copy()
    for _ in range(INVERSION_STEPS):
        inverse = cv2.remap(
            forward, grid_x - inverse[..., 0], grid_y - inverse[..., 1],
            interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
    return inverse
