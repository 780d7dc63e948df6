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
import numba
import numpy as np

from streamer.faces.rois import SPOTTING_GROUPS, spotting_box_array
from streamer.spotting.intervals import SpottedInterval
from streamer.spotting.params import DetectParams, FlowParams
from streamer.spotting.ring_buffer import FaceRingBuffer
from streamer.spotting.signal import DetectorSpotter, SignalDetector

BROW_EYE = {"left_eyebrow": "left_eye", "right_eyebrow": "right_eye"}  # brow -> the eye below it (image sides)
EYE_ROIS = tuple(BROW_EYE.values())
MOUTH_HALVES = ("mouth_left", "mouth_right")
UPPER_LID_POINTS = (37, 38, 43, 44)
LIP_MIDLINE_POINTS = (51, 57, 62, 66)
REFERENCE_ROI = "nose"
# No global-motion samples in these boxes. The chin stays in the fit: excluding it too cost more
# false positives than it won chin raisers (measured, docs/spotting.md).
FIT_EXCLUDED = ("left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "mouth")
CHIN_POINTS = (7, 8, 9)  # the chin box spans these jaw points' width, from under the mouth box ...
CHIN_DEPTH = 0.6  # ... down this share of the way to the chin's tip (point 8), off the jaw's edge
FOREHEAD = 0.1  # the face outline reaches this far (share of the crop) above the brows
GRID_STEP = 4  # pixels between the flow samples the global motion is fitted to
# The spotter's boxes, in the order of the array ``_layout`` makes: the spotting ROIs, then the
# mouth's halves and the chin.
BOX_NAMES = (*SPOTTING_GROUPS, *MOUTH_HALVES, "chin")
BROW_BOXES = (BOX_NAMES.index("left_eyebrow"), BOX_NAMES.index("right_eyebrow"))
MOUTH_BOX, CHIN_BOX = BOX_NAMES.index("mouth"), BOX_NAMES.index("chin")
MOUTH_HALF_BOXES = (BOX_NAMES.index("mouth_left"), BOX_NAMES.index("mouth_right"))


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
        self._fit_key: tuple | None = None  # what the last mask was drawn from
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
        if mask is not self._fit_samples and (self._fit_inverse is None or not np.array_equal(mask, self._fit_samples)):
            self._fit_samples = mask
            ys, xs = np.nonzero(mask)
            self._fit_ys, self._fit_xs = ys * GRID_STEP + GRID_STEP // 2, xs * GRID_STEP + GRID_STEP // 2
            design = np.stack([self._fit_xs, self._fit_ys, np.ones_like(self._fit_xs)], axis=1).astype(np.float64)
            self._fit_inverse = np.linalg.pinv(design)  # (3, n)
        target = flow[self._fit_ys, self._fit_xs]  # (n, 2)
        return (self._fit_inverse @ target).T  # (2, 3): flow = model @ (x, y, 1)

    def _fit_mask(self, size: int, boxes) -> np.ndarray:
        """Grid samples (one per GRID_STEP px) inside the face outline (jaw line, and the brows raised
        by a tenth of the crop for the forehead), outside every expression box. Drawn afresh only
        when the outline's grid vertices or the excluded grid rectangles changed."""
        n = size // GRID_STEP
        polygon, excluded = _fit_layout(self._points, np.array([boxes[name] for name in FIT_EXCLUDED]), size,
                                        self.params.fit_margin)
        key = (n, polygon.tobytes(), excluded.tobytes())
        if key == self._fit_key:
            return self._fit_samples
        self._fit_key = key
        mask = self._fit_canvas
        if mask is None or mask.shape[0] != n:
            mask = self._fit_canvas = np.zeros((n, n), dtype=np.uint8)
        mask[:] = 0
        cv2.fillConvexPoly(mask, polygon, 1)
        for x0, y0, x1, y1 in excluded.tolist():
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
        the mouth also as its two halves, split at the lips' midline (``_layout``, compiled: this
        runs every frame)."""
        boxes = _layout(self._points, spotting_box_array(self._points), size, self.params.brow_eye_gap)
        return dict(zip(BOX_NAMES, map(tuple, boxes.tolist())))


def warm_up() -> None:
    """Call the compiled box code once (see ``streamer.spotting.spotter.warm_up``)."""
    points = np.zeros((68, 2), np.float32)
    points[:, 0] = np.arange(68)
    boxes = _layout(points, spotting_box_array(points), 128, 0.0)
    _fit_layout(points, boxes[:len(FIT_EXCLUDED)], 128, 0.0)


def _residual(flow: np.ndarray, box: tuple[int, int, int, int], model: np.ndarray) -> tuple[float, float]:
    """Mean flow in ``box`` minus the global motion ``model`` at its centre (linear, so = its mean)."""
    u, v = _mean_vector(flow, box)
    cx, cy = (box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2
    return (u - (model[0, 0] * cx + model[0, 1] * cy + model[0, 2]),
            v - (model[1, 0] * cx + model[1, 1] * cy + model[1, 2]))


@numba.njit(cache=True, nogil=True)
def _clip(x0, y0, x1, y1, size):
    """A box rounded (half to even, as Python rounds) and clipped to the crop, at least 2 pixels
    wide and high."""
    x0, y0 = min(max(int(np.rint(x0)), 0), size - 2), min(max(int(np.rint(y0)), 0), size - 2)
    return x0, y0, max(min(int(np.rint(x1)), size), x0 + 2), max(min(int(np.rint(y1)), size), y0 + 2)


@numba.njit(cache=True, nogil=True)
def _layout(points, groups, size, brow_eye_gap):
    """The spotter's boxes in ``BOX_NAMES`` order from the averaged (float32) landmarks and their
    ``spotting_box_array``: clipped to the crop, the brows ending ``brow_eye_gap`` (share of the
    crop) above the upper lids, the mouth's two halves split at the lips' midline, and the chin."""
    boxes = np.empty((len(BOX_NAMES), 4), np.int64)
    for g in range(groups.shape[0]):
        boxes[g] = _clip(groups[g, 0], groups[g, 1], groups[g, 2], groups[g, 3], size)
    lid_top = float(points[37, 1])
    for k in UPPER_LID_POINTS[1:]:
        lid_top = min(lid_top, float(points[k, 1]))
    lid_top -= brow_eye_gap * size
    for b in BROW_BOXES:
        boxes[b, 3] = max(boxes[b, 1] + 2, min(boxes[b, 3], int(lid_top)))
    x0, y0, x1, y1 = boxes[MOUTH_BOX, 0], boxes[MOUTH_BOX, 1], boxes[MOUTH_BOX, 2], boxes[MOUTH_BOX, 3]
    total = np.float32(0.0)  # the float32 mean numpy takes of these four values
    for k in LIP_MIDLINE_POINTS:
        total += points[k, 0]
    middle = min(max(int(np.rint(float(total / np.float32(len(LIP_MIDLINE_POINTS))))), x0 + 2), x1 - 2)
    boxes[MOUTH_HALF_BOXES[0]] = (x0, y0, middle, y1)
    boxes[MOUTH_HALF_BOXES[1]] = (middle, y0, x1, y1)
    left = min(points[CHIN_POINTS[0], 0], points[CHIN_POINTS[1], 0], points[CHIN_POINTS[2], 0])
    right = max(points[CHIN_POINTS[0], 0], points[CHIN_POINTS[1], 0], points[CHIN_POINTS[2], 0])
    bottom = y1 + CHIN_DEPTH * (float(points[8, 1]) - y1)  # the background slides at the jaw's edge
    boxes[CHIN_BOX] = _clip(float(left), float(y1), float(right), bottom, size)
    return boxes


@numba.njit(cache=True, nogil=True)
def _fit_layout(points, excluded, size, fit_margin):
    """What the global-motion sample mask is drawn from, on the grid of GRID_STEP px: the face
    outline's vertices (jaw line, then the brows raised by FOREHEAD of the crop), and the
    ``excluded`` boxes widened by ``fit_margin`` (share of the crop) as grid rectangles, each
    edge at the first sample (at GRID_STEP * k + GRID_STEP // 2) at or past it."""
    polygon = np.empty((27, 2), np.int32)
    for j in range(27):
        k = j if j < 17 else 43 - j  # points 0..16, then 26 down to 17
        raise_by = 0.0 if j < 17 else FOREHEAD * size
        polygon[j, 0] = np.rint(float(points[k, 0]) / GRID_STEP - 0.5)
        polygon[j, 1] = np.rint((float(points[k, 1]) - raise_by) / GRID_STEP - 0.5)
    margin = fit_margin * size
    rectangles = np.empty(excluded.shape, np.int64)
    for b in range(excluded.shape[0]):
        for c in range(4):
            pixel = excluded[b, c] + (margin if c >= 2 else -margin)
            rectangles[b, c] = max(0, math.ceil((pixel - GRID_STEP // 2) / GRID_STEP))
    return polygon, rectangles


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
