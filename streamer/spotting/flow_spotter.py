"""Default spotter: optical-flow motion in facial regions (MEGC winners' method, anchors.md C(3)).

Per frame: dense optical flow (OpenCV DIS, or Farneback) from a *reference* frame to the
current aligned crop; the crop's own motion (alignment jitter) is fitted and removed; then
the mean flow vector of each region (the two eyebrows, the two halves of the mouth and the
chin) minus the nose region's, and the frame's signal is the largest of those magnitudes, in
crop pixels.

**Global motion.** An affine motion is fitted by least squares to the flow on a 4-px grid
*inside the face outline* (jaw line and forehead), ``fit_margin`` away from the brow, eye
and mouth boxes, and subtracted. Samples off the face would see the background slide
whenever the head moves; samples next to the eyes would see a blink's pull on the skin and
turn it into a false scale change that moves the mouth.

**Mouth halves.** Lip corners pulled apart (AU12, AU14) or down (AU15) move the two halves
of the mouth in opposite directions: the mean over the whole mouth cancels them.

**Chin.** The chin raiser (AU17) pushes the skin under the lower lip up; the mouth box sees
little of it. The chin box runs from under the mouth box 60 % of the way down to the chin's tip,
between jaw points 7 and 9 (not to the jaw's edge, where the background slides when the head
turns).

**Reference frame.** The flow runs from the newest *quiet* frame (signal below the
threshold) that is at least ``reference_lag_s`` old and is followed by ``reference_guard_s``
of calm frames (no region, eyes included, above the threshold: a reference never sits at
the start of a blink), and the reference stops advancing while the face is moving. So
during an expression the signal is the displacement from the neutral face just before it
(one hump from onset to offset), never from a frame inside another expression, which would
echo it ``lag`` later. A reference is never older than ``max_reference_age_s``.

**After an expression** the reference jumps to the frame where its region closed: the face
need not come back exactly to the neutral frame before it (a slow tail, the alignment drifting
meanwhile), and measured from that old frame the leftover would hold the signal over the threshold.
When the region was *released* (the signal fell to ``release_fraction`` of its peak without
getting under the threshold, see signal.py) the reference follows the face frame to frame
until the signal is under the threshold again.

**Blinks** are the most frequent false positive: a blink moves the lids by several pixels
and drags the skin below the brows with it. The eye regions are measured but never part of
the signal, the eyebrow boxes end ``brow_eye_gap`` above the upper lids, and each brow's
motion is reduced by ``blink_leak`` times its eye's (measured: a blink moves the brow box by
about a third of the eye box). Every emotion's action-unit combination moves the brows or the
mouth, so nothing is lost; AU5/6/7 alone would be.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from streamer.faces.rois import spotting_rois
from streamer.spotting.intervals import SpottedInterval
from streamer.spotting.params import DetectParams, FlowParams
from streamer.spotting.ring_buffer import FaceRingBuffer
from streamer.spotting.signal import DetectorSpotter, SignalDetector

BROW_EYE = {"left_eyebrow": "left_eye", "right_eyebrow": "right_eye"}  # brow -> the eye below it (image sides)
EYE_ROIS = tuple(BROW_EYE.values())
MOUTH_HALVES = ("mouth_left", "mouth_right")
UPPER_LID_POINTS = [37, 38, 43, 44]
LIP_MIDLINE_POINTS = [51, 57, 62, 66]
REFERENCE_ROI = "nose"
# No global-motion samples in these boxes. The chin stays in the fit: excluding it too cost more
# false positives than it won chin raisers (measured, docs/spotting.md).
FIT_EXCLUDED = ("left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "mouth")
CHIN_POINTS = [7, 8, 9]  # the chin box spans these jaw points' width, from under the mouth box ...
CHIN_DEPTH = 0.6  # ... down this share of the way to the chin's tip (point 8), off the jaw's edge
FOREHEAD = 0.1  # the face outline reaches this far (share of the crop) above the brows
GRID_STEP = 4  # pixels between the flow samples the global motion is fitted to


class FlowSpotter(DetectorSpotter):
    """Streaming optical-flow ROI spotter for one face track (see the module doc)."""

    def __init__(self, flow: FlowParams, detect: DetectParams, fps: float) -> None:
        self.params = flow
        self.detector = SignalDetector(detect, fps)
        self.look_ahead_s = detect.look_ahead_s
        self.fps = fps
        self._capacity = math.ceil(flow.max_reference_age_s * fps) + 2
        self.buffer: FaceRingBuffer | None = None  # made on the first frame, when the crop size is known
        self._flow: np.ndarray | None = None
        self._points = np.zeros((68, 2), dtype=np.float32)  # running average the ROI boxes come from
        signal_regions = [name for name in flow.rois if name != "mouth"]
        if "mouth" in flow.rois:
            signal_regions += [*MOUTH_HALVES] if flow.split_mouth else ["mouth"]
        self._signal_regions = tuple(signal_regions)
        self.motion: dict[str, float] = {}  # last frame's compensated motion per region (eyes too), crop pixels
        self._fit_canvas: np.ndarray | None = None  # grid mask of the global-motion samples (reused)
        self._fit_samples: np.ndarray | None = None  # the mask the pseudo-inverse below was made for
        self._fit_inverse: np.ndarray | None = None
        self._fit_xs = self._fit_ys = np.zeros(0, dtype=np.intp)
        self._calm = np.zeros(self._capacity, dtype=bool)  # per buffer slot: no region (eyes included) moved
        self._guard_n = round(flow.reference_guard_s * fps)
        self._reference: int | None = None  # frame index of the reference
        self._reference_t = 0.0
        self._last_t: float | None = None
        self._previous: int | None = None  # the frame before the current one (the reference after a region)
        self._previous_t = 0.0
        self._engine = _flow_engine(flow)

    def push(self, gray: np.ndarray, t: float, index: int, points: np.ndarray) -> list[SpottedInterval]:
        """Add one aligned crop; returns the intervals that became final with it."""
        if self.buffer is None:
            self.buffer = FaceRingBuffer(self._capacity, gray.shape[0])
            self._flow = np.zeros((gray.shape[0], gray.shape[0], 2), dtype=np.float32)
            np.copyto(self._points, points, casting="same_kind")
        slot = self.buffer.push(gray, t, index, points)
        self._calm[slot] = False
        self._smooth_points(points, t)
        value = self._signal(gray, t, index)
        self._calm[slot] = bool(self.motion) and max(self.motion.values()) <= self.detector.threshold
        self._last_t = t
        self._previous, self._previous_t = index, t
        return self.detector.push(index, t, value)

    def _smooth_points(self, points: np.ndarray, t: float) -> None:
        tau = self.params.landmark_smoothing_s
        dt = t - self._last_t if self._last_t is not None else 0.0
        if tau <= 0:
            np.copyto(self._points, points, casting="same_kind")
            return
        alpha = 1.0 - math.exp(-dt / tau)
        self._points *= 1.0 - alpha
        self._points += alpha * points

    def _signal(self, gray: np.ndarray, t: float, index: int) -> float:
        reference = self._choose_reference(t, index)
        self.motion = {}
        if reference is None:
            return 0.0
        reference_gray, _, _ = self.buffer.get(reference)
        # OpenCV's DIS starts from the flow it is handed: zeros, so that each frame's flow depends on its
        # pair of crops alone, not on the frame before (measured from another reference, maybe).
        self._flow.fill(0.0)
        flow = self._engine(reference_gray, gray, self._flow)
        boxes = self._boxes(gray.shape[0])
        model = self._global_motion(flow, boxes)
        nose_u, nose_v = _residual(flow, boxes[REFERENCE_ROI], model)
        for name in (*self._signal_regions, *EYE_ROIS):
            u, v = _residual(flow, boxes[name], model)
            self.motion[name] = math.hypot(u - nose_u, v - nose_v)
        value = 0.0
        for name in self._signal_regions:
            motion = self.motion[name]
            if name in BROW_EYE:
                motion -= self.params.blink_leak * self.motion[BROW_EYE[name]]
            value = max(value, motion)
        return value

    def _choose_reference(self, t: float, index: int) -> int | None:
        """Advance the reference to the newest quiet frame at least ``reference_lag_s`` old, unless
        the face is moving now; force it forward when it grows older than ``max_reference_age_s``."""
        buffer, detector = self.buffer, self.detector
        if self._reference is not None and self._reference not in buffer:
            self._reference = None  # overwritten (a gap in the track): start afresh
        if (detector.closed or detector.settling) and self._previous is not None and self._previous in buffer:
            # an expression has just ended: measure from its end, not from the neutral face before it (the
            # face need not return exactly there); after a release, follow the face frame to frame until
            # it is still again
            self._reference, self._reference_t = self._previous, self._previous_t
        forced = self._reference is not None and (
            t - self._reference_t > self.params.max_reference_age_s or self._plateau())
        if self._reference is not None and not detector.quiet and not forced:
            return self._reference
        slot = buffer.slot_at_or_before(t - self.params.reference_lag_s)
        if slot is None:
            if self._reference is None:  # the stream has just begun: the first frame is the reference
                self._reference, self._reference_t = index, t
            return self._reference if self._reference != index else None
        history = detector.history
        oldest = buffer.oldest_index
        while True:
            candidate = int(buffer.indices[slot])
            if self._reference is not None and candidate <= self._reference:
                return self._reference
            if forced or candidate not in history or (history.quiet[history.slot(candidate)] and self._settled(slot)):
                break
            if candidate == oldest:
                return self._reference
            slot = (slot - 1) % buffer.capacity
        self._reference, self._reference_t = candidate, float(buffer.times[slot])
        return self._reference

    def _settled(self, slot: int) -> bool:
        """The frame in ``slot`` and the ``reference_guard_s`` after it were calm (no blink starting)."""
        capacity = self.buffer.capacity
        return all(self._calm[(slot + k) % capacity] for k in range(self._guard_n + 1))

    def _global_motion(self, flow: np.ndarray, boxes) -> np.ndarray:
        """Motion of the whole crop (alignment jitter: shift, rotation, scale), fitted by least squares
        to the flow on a coarse grid of samples inside the face but outside the expression regions.
        The background is left out (it moves against the face whenever the head does), and so are
        the brows, eyes and mouth. The sample set changes only when the ROI boxes do, so its
        pseudo-inverse is kept between frames."""
        mask = self._fit_mask(flow.shape[0], boxes)
        if self._fit_inverse is None or not np.array_equal(mask, self._fit_samples):
            self._fit_samples = mask
            ys, xs = np.nonzero(mask)
            self._fit_ys, self._fit_xs = ys * GRID_STEP + GRID_STEP // 2, xs * GRID_STEP + GRID_STEP // 2
            design = np.stack([self._fit_xs, self._fit_ys, np.ones_like(self._fit_xs)], axis=1).astype(np.float64)
            self._fit_inverse = np.linalg.pinv(design)  # (3, n)
        target = flow[self._fit_ys, self._fit_xs]  # (n, 2)
        return (self._fit_inverse @ target).T  # (2, 3): flow = model @ (x, y, 1)

    def _fit_mask(self, size: int, boxes) -> np.ndarray:
        """Grid samples (one per GRID_STEP px) inside the face outline (jaw line, and the brows raised
        by a tenth of the crop for the forehead), outside every expression box."""
        n = size // GRID_STEP
        mask = self._fit_canvas
        if mask is None or mask.shape[0] != n:
            mask = self._fit_canvas = np.zeros((n, n), dtype=np.uint8)
        mask[:] = 0
        outline = np.concatenate([self._points[:17], self._points[26:16:-1] - (0.0, FOREHEAD * size)])
        cv2.fillConvexPoly(mask, np.round(outline / GRID_STEP - 0.5).astype(np.int32), 1)
        margin = self.params.fit_margin * size
        for name in FIT_EXCLUDED:
            x0, y0, x1, y1 = boxes[name]
            x0, y0, x1, y1 = (_grid_start(v) for v in (x0 - margin, y0 - margin, x1 + margin, y1 + margin))
            mask[y0:y1, x0:x1] = 0
        return mask.astype(bool)

    def _plateau(self) -> bool:
        """Above threshold but flat for ``plateau_s``: the face (or its crop) changed for good, e.g. a head
        move the alignment did not fully undo; an expression rises and falls instead."""
        detector = self.detector
        if detector.quiet:
            return False
        n = max(3, round(self.params.plateau_s * self.fps))
        recent = detector.history.recent(n)
        if len(recent) < n or recent.min() <= detector.threshold:
            return False
        return float(recent.max() - recent.min()) < self.params.plateau_tolerance * float(recent.mean())

    def _boxes(self, size: int) -> dict[str, tuple[int, int, int, int]]:
        """ROI boxes from the averaged landmarks, clipped to the crop; brows end above the upper lids;
        the mouth also as its two halves, split at the lips' midline."""
        boxes = {name: _clip(box, size) for name, box in spotting_rois(self._points).items()}
        lid_top = float(self._points[UPPER_LID_POINTS, 1].min()) - self.params.brow_eye_gap * size
        for name in BROW_EYE:
            x0, y0, x1, y1 = boxes[name]
            boxes[name] = (x0, y0, x1, max(y0 + 2, min(y1, int(lid_top))))
        x0, y0, x1, y1 = boxes["mouth"]
        middle = int(round(float(self._points[LIP_MIDLINE_POINTS, 0].mean())))
        middle = min(max(middle, x0 + 2), x1 - 2)
        boxes["mouth_left"], boxes["mouth_right"] = (x0, y0, middle, y1), (middle, y0, x1, y1)
        chin = self._points[CHIN_POINTS]
        bottom = y1 + CHIN_DEPTH * (float(self._points[8, 1]) - y1)  # the background slides at the jaw's edge
        boxes["chin"] = _clip((chin[:, 0].min(), y1, chin[:, 0].max(), bottom), size)
        return boxes


def _residual(flow: np.ndarray, box: tuple[int, int, int, int], model: np.ndarray) -> tuple[float, float]:
    """Mean flow in ``box`` minus the global motion ``model`` at its centre (linear, so = its mean)."""
    u, v = _mean_vector(flow, box)
    cx, cy = (box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2
    return (u - (model[0, 0] * cx + model[0, 1] * cy + model[0, 2]),
            v - (model[1, 0] * cx + model[1, 1] * cy + model[1, 2]))


def _grid_start(pixel: float) -> int:
    """The first grid sample (at GRID_STEP * k + GRID_STEP // 2) at or right of ``pixel``, as k >= 0."""
    return max(0, math.ceil((pixel - GRID_STEP // 2) / GRID_STEP))


def _clip(box, size: int) -> tuple[int, int, int, int]:
    """``box`` rounded and clipped to the crop, at least 2 pixels wide and high (runs for every box of
    every frame: plain arithmetic, no generator)."""
    x0, y0, x1, y1 = box
    x0, y0 = min(max(int(round(x0)), 0), size - 2), min(max(int(round(y0)), 0), size - 2)
    return x0, y0, max(min(int(round(x1)), size), x0 + 2), max(min(int(round(y1)), size), y0 + 2)


def _mean_vector(flow: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    mean = cv2.mean(flow[y0:y1, x0:x1])  # a tuple: no array allocated
    return mean[0], mean[1]


def _flow_engine(params: FlowParams):
    """A callable (previous, current, out) -> flow written into ``out``."""
    if params.algorithm == "farneback":
        # anchors.md C(3) step 2 settings (He Yuhong); about 10 ms per 128x128 pair on the 2-core box.
        def farneback(previous, current, out):
            return cv2.calcOpticalFlowFarneback(previous, current, out, 0.5, 3, 15, 5, 7, 1.5, 0)
        return farneback
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    dis.setFinestScale(params.dis_finest_scale)
    dis.setPatchSize(params.dis_patch_size)
    dis.setPatchStride(params.dis_patch_stride)
    dis.setGradientDescentIterations(params.dis_gradient_iterations)
    dis.setVariationalRefinementIterations(0)
    return dis.calc
