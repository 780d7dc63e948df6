"""Temporal smoothing of the alignment transform (never of the landmarks themselves).

Landmarks jitter by a pixel or so from frame to frame even on a still face. If the crop
follows that jitter, every aligned frame shifts a little and the spotter sees motion that is
not there. We therefore smooth the three anchor points that define the alignment transform,
with a One-Euro filter (Casiez, Roussel, Vogel, CHI 2012): a low-pass filter whose cut-off
rises with speed, so a still head gets a steady crop and a moving head is followed without
lag. The landmarks the spotter reads are left untouched, so real micro-movements survive.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff_hz: float, dt: float) -> float:
    """Weight of the new sample in an exponential low-pass with this cut-off."""
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class AnchorSmoother:
    """One-Euro filter over a small (N, 2) array of anchor points, one per tracked face.

    Speed is measured in anchor-spans per second (the distance between the first two anchors,
    i.e. about the eye distance), so the same settings suit any face size.
    """

    def __init__(self, *, min_cutoff_hz: float = 1.0, beta: float = 10.0, d_cutoff_hz: float = 1.0) -> None:
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.d_cutoff_hz = d_cutoff_hz
        self._value: np.ndarray | None = None
        self._velocity: np.ndarray | None = None
        self._t = 0.0

    def __call__(self, anchors: np.ndarray, t: float) -> np.ndarray:
        """The smoothed anchors for a new observation at stream time ``t`` (seconds)."""
        anchors = np.asarray(anchors, dtype=np.float64)
        if self._value is None:
            self._value, self._velocity, self._t = anchors.copy(), np.zeros_like(anchors), t
            return self._value.copy()
        dt = t - self._t
        if dt <= 0:  # same or out-of-order timestamp: nothing to integrate
            return self._value.copy()
        velocity = (anchors - self._value) / dt
        self._velocity += _alpha(self.d_cutoff_hz, dt) * (velocity - self._velocity)
        span = max(float(np.hypot(*(anchors[1] - anchors[0]))), 1e-6)
        speed = float(np.sqrt((self._velocity**2).sum(axis=1)).max()) / span
        cutoff = self.min_cutoff_hz + self.beta * speed
        self._value += _alpha(cutoff, dt) * (anchors - self._value)
        self._t = t
        return self._value.copy()
