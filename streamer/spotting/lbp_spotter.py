"""Alternative spotter: LBP-chi-squared feature difference (Moilanen, Zhao, Pietikainen, ICPR 2014).

The aligned crop is split into ``grid`` x ``grid`` blocks, each described by a histogram of
uniform local binary patterns (8 neighbours, radius 1: 59 bins). For the current frame CF
with tail frame TF = CF - k and head frame HF = CF + k, the chi-squared distance of each block
between CF and the mean of TF and HF is taken; the largest ``top_fraction`` of the block
distances sum to F. The signal is the contrast C = max(0, F(i) - (F(i-k) + F(i+k)) / 2),
which turns a change lasting about 2k into a peak (anchors.md C(1)); intervals then come from
the shared detector (streamer/spotting/signal.py). Blocks whose centre lies in an eye box are
left out by default: blinks. It needs 2k of look-ahead beyond the detector's.

It uses no optical flow, only comparisons and histograms, so it is cheap and parallel;
it finds micro-expressions (about 2k long) better than long macro-expressions, whose slow
rise and fall give two weak peaks (see docs/spotting.md for the measured scores).
"""

from __future__ import annotations


import numpy as np

from streamer.faces.rois import spotting_rois
from streamer.spotting.intervals import SpottedInterval
from streamer.spotting.params import DetectParams, LbpParams
from streamer.spotting.ring_buffer import IndexedRing
from streamer.spotting.signal import DetectorSpotter, SignalDetector, frames_for

N_BINS = 59  # 58 uniform 8-bit patterns + one bin for all the others
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))  # clockwise from top-left


def uniform_lut() -> np.ndarray:
    """Maps each 8-bit LBP code to its uniform-pattern bin (0..57), or 58 when non-uniform."""
    lut = np.full(256, N_BINS - 1, dtype=np.int64)
    label = 0
    for code in range(256):
        bits = [(code >> b) & 1 for b in range(8)]
        if sum(bits[b] != bits[(b + 1) % 8] for b in range(8)) <= 2:
            lut[code] = label
            label += 1
    return lut


class LbpFeatures:
    """Block histograms of uniform LBP for ``size`` x ``size`` crops, computed into preallocated buffers."""

    def __init__(self, size: int, grid: int) -> None:
        inner = size - 2
        self.size, self.grid = size, grid
        self._lut = uniform_lut()
        self._code = np.zeros((inner, inner), dtype=np.uint8)
        self._bit = np.zeros((inner, inner), dtype=bool)
        self._shifted = np.zeros((inner, inner), dtype=np.uint8)
        self._bins = np.zeros((inner, inner), dtype=np.int64)
        rows = np.minimum(np.arange(inner) * grid // inner, grid - 1)
        self._block_offset = ((rows[:, None] * grid + rows[None, :]) * N_BINS).astype(np.int64)
        self.block_centres = (np.arange(grid) + 0.5) * size / grid  # x or y of block centres

    def compute(self, gray: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Per-block normalised histograms, shape (grid*grid, 59), written into ``out``."""
        inner = self.size - 2
        centre = gray[1:-1, 1:-1]
        self._code.fill(0)
        for bit, (dy, dx) in enumerate(NEIGHBOURS):
            neighbour = gray[1 + dy:1 + dy + inner, 1 + dx:1 + dx + inner]
            np.greater_equal(neighbour, centre, out=self._bit)
            np.left_shift(self._bit.view(np.uint8), bit, out=self._shifted)
            np.bitwise_or(self._code, self._shifted, out=self._code)
        np.take(self._lut, self._code, out=self._bins)
        self._bins += self._block_offset
        counts = np.bincount(self._bins.ravel(), minlength=self.grid * self.grid * N_BINS)
        np.divide(counts.reshape(-1, N_BINS), counts.reshape(-1, N_BINS).sum(axis=1, keepdims=True), out=out)
        return out


class _FeatureRing(IndexedRing):
    def __init__(self, capacity: int, blocks: int) -> None:
        super().__init__(capacity)
        self.features = np.zeros((capacity, blocks, N_BINS))
        self.distance = np.zeros(capacity)  # F of the frame (once its head frame has arrived)


class LbpSpotter(DetectorSpotter):
    """Streaming LBP-chi-squared spotter for one face track (see the module doc)."""

    def __init__(self, lbp: LbpParams, detect: DetectParams, fps: float) -> None:
        self.params = lbp
        self.detector = SignalDetector(detect, fps)
        self.k = frames_for(lbp.half_window_s, fps)
        self.look_ahead_s = detect.look_ahead_s + 2 * self.k / fps
        self._ring: _FeatureRing | None = None
        self._features: LbpFeatures | None = None
        self._mask: np.ndarray | None = None
        self._average = None

    def push(self, gray: np.ndarray, t: float, index: int, points: np.ndarray) -> list[SpottedInterval]:
        if self._ring is None:
            self._features = LbpFeatures(gray.shape[0], self.params.grid)
            self._ring = _FeatureRing(4 * self.k + 4, self.params.grid ** 2)
            self._mask = self._block_mask(points, gray.shape[0])
            self._average = np.zeros((self.params.grid ** 2, N_BINS))
        ring = self._ring
        slot = ring._next_slot(index, t)
        self._features.compute(gray, ring.features[slot])
        # F for the frame k back (its head frame is this one), then C for the frame 2k back.
        if len(ring) <= 2 * self.k:
            return []
        centre = self._position_slot(self.k)
        tail = self._position_slot(2 * self.k)
        ring.distance[centre] = self._difference(ring.features[centre], ring.features[tail], ring.features[slot])
        if len(ring) <= 4 * self.k:
            return []
        middle = self._position_slot(2 * self.k)
        contrast = ring.distance[middle] - 0.5 * (ring.distance[centre] + ring.distance[self._position_slot(3 * self.k)])
        return self.detector.push(int(ring.indices[middle]), float(ring.times[middle]), max(0.0, contrast))

    def _position_slot(self, back: int) -> int:
        """Slot of the frame ``back`` pushes before the newest."""
        return (self._ring._latest_slot - back) % self._ring.capacity

    def _difference(self, current: np.ndarray, tail: np.ndarray, head: np.ndarray) -> float:
        average = self._average
        np.add(tail, head, out=average)
        average *= 0.5
        numerator = (current - average) ** 2
        denominator = current + average
        per_block = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0).sum(axis=1)
        per_block = per_block[self._mask]
        top = max(1, round(self.params.top_fraction * len(per_block)))
        return float(np.partition(per_block, len(per_block) - top)[-top:].sum())

    def _block_mask(self, points: np.ndarray, size: int) -> np.ndarray:
        """Blocks used: all, or all but those whose centre falls in an eye box."""
        grid = self.params.grid
        mask = np.ones((grid, grid), dtype=bool)
        if self.params.exclude_eyes:
            centres = self._features.block_centres
            for name in ("left_eye", "right_eye"):
                x0, y0, x1, y1 = spotting_rois(points)[name]
                rows = (centres >= y0) & (centres < y1)
                columns = (centres >= x0) & (centres < x1)
                mask[np.ix_(rows, columns)] = False
        return mask.ravel()
