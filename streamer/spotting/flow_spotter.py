"""Default spotter: optical-flow magnitude in facial regions (MEGC winners' method, anchors.md C(3)).

Per frame: dense optical flow (OpenCV DIS, or Farneback) from a *reference* frame to the
current aligned crop; the mean flow vector in each region of interest (eyebrows, mouth;
boxes from ``streamer.faces.rois.spotting_rois``) minus the mean flow of the nose region
(head-motion compensation: what moves the nose moves the whole face); the frame's
signal is the largest compensated magnitude over the regions, in crop pixels.

**Reference frame.** The flow runs from the newest *quiet* frame (signal below the
threshold) that is at least ``reference_lag_s`` old, and the reference stops advancing
while the face is moving. So during an expression the signal is the displacement from
the neutral face just before it (one hump from onset to offset, whose boundaries are
the expression's), and never from a frame inside another expression, which would echo
the expression ``lag`` later. A reference is never older than ``max_reference_age_s``
(slow drift, a lost face).

**Blinks** are the most frequent false positive: a blink moves the lids by several
pixels, more than most micro-expressions. They are kept out in two ways: the eye regions
are off by default (``eye_weight = 0``), and the eyebrow boxes are cut to end
``brow_eye_gap`` above the upper lids, so lid motion does not leak into them. Every
emotion's action-unit combination moves the brows or the mouth (AU1/2/4 or AU9-26), so
nothing is lost; AU5/6/7 alone would be. This is what the MEGC methods do: He Yuhong's
winning entries use eyebrow, nose and mouth regions only.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from streamer.faces.rois import spotting_rois
from streamer.spotting.intervals import SpottedInterval
from streamer.spotting.params import DetectParams, FlowParams
from streamer.spotting.ring_buffer import FaceRingBuffer
from streamer.spotting.signal import SignalDetector

EYE_ROIS = ("left_eye", "right_eye")
BROW_ROIS = ("left_eyebrow", "right_eyebrow")
UPPER_LID_POINTS = [37, 38, 43, 44]
REFERENCE_ROI = "nose"
GRID_STEP = 4
BROW_EYE = {"left_eyebrow": "left_eye", "right_eyebrow": "right_eye"}
MOUTH_HALVES = ("mouth_left", "mouth_right")
_ZERO_MODEL = np.zeros((2, 3))  # pixels between the flow samples the global motion is fitted to


class FlowSpotter:
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
        self._weights = {name: (flow.eye_weight if name in EYE_ROIS else 1.0) for name in flow.rois}
        self._weights = {name: w for name, w in self._weights.items() if w > 0}
        regions = [n for n in flow.rois if n not in EYE_ROIS]
        if flow.split_mouth and "mouth" in regions:
            regions.remove("mouth")
            regions += list(MOUTH_HALVES)
        self._regions = tuple(regions) + EYE_ROIS
        self.motion: dict[str, float] = {}
        self._calm = np.zeros(self._capacity, dtype=bool)  # per buffer slot: no region (eyes included) moved
        self._guard_n = round(flow.reference_guard_s * fps)
        self._reference: int | None = None  # frame index of the reference
        self._reference_t = 0.0
        self._last_t: float | None = None
        self._engine = _flow_engine(flow)

    @property
    def signal(self) -> float:
        """Last frame's signal value (crop pixels), for the per-frame CSV."""
        return self.detector.value

    @property
    def threshold(self) -> float:
        return self.detector.threshold

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
        self._calm[slot] = max(self.motion.values(), default=0.0) <= self.detector.threshold
        self._last_t = t
        return self.detector.push(index, t, value)

    def flush(self) -> list[SpottedInterval]:
        return self.detector.flush()

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
        if reference is None:
            return 0.0
        reference_gray, _, _ = self.buffer.get(reference)
        flow = self._engine(reference_gray, gray, self._flow)
        boxes = self._boxes(gray.shape[0])
        if self.params.compensation == "affine":
            model = self._global_motion(flow, boxes)
        else:
            model = _ZERO_MODEL
        nose = _residual(flow, boxes[REFERENCE_ROI], model)
        motion = {}
        for name in self._regions:
            u, v = _residual(flow, boxes[name], model)
            motion[name] = math.hypot(u - nose[0], v - nose[1])
        self.motion = motion
        value = 0.0
        leak = self.params.blink_leak
        for name in self._regions:
            if name in EYE_ROIS:
                continue
            m = motion[name]
            if name in BROW_EYE:
                m -= leak * motion[BROW_EYE[name]]
            value = max(value, m)
        return value

    def _choose_reference(self, t: float, index: int) -> int | None:
        """Advance the reference to the newest quiet frame at least ``reference_lag_s`` old, unless
        the face is moving now; force it forward when it grows older than ``max_reference_age_s``."""
        buffer, detector = self.buffer, self.detector
        if self._reference is not None and self._reference not in buffer:
            self._reference = None  # overwritten (a gap in the track): start afresh
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
        """Motion of the whole crop (alignment jitter), fitted by least squares to the flow on a coarse
        grid inside the face but outside the expression regions; a second fit drops the samples the
        first one explains worst (skin an expression moves that no box covers)."""
        size = flow.shape[0]
        step = GRID_STEP
        ys, xs = np.mgrid[step // 2:size:step, step // 2:size:step]
        keep = np.ones(xs.shape, dtype=bool)
        if self.params.fit_face_only:
            hull = cv2.convexHull(np.concatenate([self._points[:17], self._points[17:27] - [0, 0.1 * size]]).astype(np.float32))
            inside = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0 for x, y in zip(xs.ravel(), ys.ravel())])
            keep &= inside.reshape(xs.shape)
        for name in ("left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "mouth"):
            x0, y0, x1, y1 = boxes[name]
            keep &= ~((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1))
        x, y = xs[keep].astype(np.float64), ys[keep].astype(np.float64)
        design = np.stack([x, y, np.ones_like(x)], axis=1)
        target = flow[ys[keep], xs[keep]].astype(np.float64)
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        for _ in range(self.params.robust_passes):
            error = np.hypot(*(design @ solution - target).T)
            inliers = error <= 2.0 * np.median(error) + 1e-6
            solution, *_ = np.linalg.lstsq(design[inliers], target[inliers], rcond=None)
        return solution.T  # (2, 3): flow = model @ (x, y, 1)

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
        """ROI boxes from the averaged landmarks, clipped to the crop; brows end above the upper lids."""
        boxes = {name: _clip(box, size) for name, box in spotting_rois(self._points).items()}
        lid_top = float(self._points[UPPER_LID_POINTS, 1].min()) - self.params.brow_eye_gap * size
        for name in BROW_ROIS:
            x0, y0, x1, y1 = boxes[name]
            boxes[name] = (x0, y0, x1, max(y0 + 2, min(y1, int(lid_top))))
        x0, y0, x1, y1 = boxes["mouth"]
        middle = int(round(float(self._points[[51, 57, 62, 66], 0].mean())))
        middle = min(max(middle, x0 + 2), x1 - 2)
        boxes["mouth_left"], boxes["mouth_right"] = (x0, y0, middle, y1), (middle, y0, x1, y1)
        return boxes


def _residual(flow: np.ndarray, box: tuple[int, int, int, int], model: np.ndarray) -> tuple[float, float]:
    """Mean flow in ``box`` minus the global motion ``model`` at its centre (linear, so = its mean)."""
    u, v = _mean_vector(flow, box)
    cx, cy = (box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2
    return (u - (model[0, 0] * cx + model[0, 1] * cy + model[0, 2]),
            v - (model[1, 0] * cx + model[1, 1] * cy + model[1, 2]))


def _clip(box, size: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = min(max(x0, 0), size - 2), min(max(y0, 0), size - 2)
    return x0, y0, max(min(x1, size), x0 + 2), max(min(y1, size), y0 + 2)


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
