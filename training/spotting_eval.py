"""MEGC spotting evaluation: match predicted intervals to ground truth, count TP/FP/FN.

The protocol (MEGC 2019-2024, see docs/spotting-eval.md): a ground-truth interval is
spotted when a predicted interval overlaps it with IoU >= 0.5, computed on inclusive
frame ranges; each ground truth and each prediction is matched at most once, and only
within the same video. Matched pairs are TPs, unmatched predictions FPs, unmatched
ground truths FNs. Counts are pooled over the dataset and split micro/macro: TPs and
FNs take the ground truth's kind, an FP is micro when it lasts at most half a second.

Everything here is pure (no files), so the command and the tests share it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from training.samples import ExpressionKind, Interval

IOU_THRESHOLD = 0.5
MICRO_MAX_SECONDS = 0.5
# CAS(ME)^2 leaves 44 offsets blank; MEGC2024 entrant He Yuhong closed them at apex + 20.
MISSING_OFFSET_FRAMES = 20
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")

Matching = Literal["maximum", "greedy"]
MATCHINGS: tuple[str, ...] = ("maximum", "greedy")


@dataclass(frozen=True)
class GroundTruth:
    """A ground-truth interval with a known offset (see :func:`resolve_ground_truth`)."""

    video: str
    onset: int
    offset: int
    kind: ExpressionKind


@dataclass(frozen=True)
class Prediction:
    """One predicted interval, frames inclusive, in the ground truth's frame numbering."""

    video: str
    onset: int
    offset: int


@dataclass(frozen=True)
class Counts:
    """TP/FP/FN with the scores MEGC reports; a score whose denominator is 0 is 0.0."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        # 2PR/(P+R) written without P and R, so it is defined whenever anything was counted.
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict[str, int | float]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass(frozen=True)
class SpottingResult:
    """Pooled counts; ``matches`` lists (ground truth, prediction) pairs; videos with
    predictions but no ground truth are in ``unknown_videos`` (their predictions are FPs)."""

    micro: Counts
    macro: Counts
    matches: tuple[tuple[GroundTruth, Prediction], ...] = ()
    unknown_videos: tuple[str, ...] = field(default=())

    @property
    def overall(self) -> Counts:
        return self.micro + self.macro

    def as_dict(self) -> dict[str, dict[str, int | float]]:
        return {"overall": self.overall.as_dict(), "micro": self.micro.as_dict(), "macro": self.macro.as_dict()}


def video_key(name: str) -> str:
    """The name both sides are matched on: the last path part, without a video suffix.

    Predictions name CAS(ME)^2 videos 's15/15_0101disgustingteeth' while the reader's
    ``Interval.video`` is '15_0101disgustingteeth' (its name already holds the subject
    number); SAMM-LV uses '006_1' on both sides. A spotter may also write a file path.
    """
    last = PurePosixPath(name.strip().replace("\\", "/")).name
    for suffix in VIDEO_SUFFIXES:
        if last.lower().endswith(suffix):
            return last[: -len(suffix)]
    return last


def frame_iou(a_onset: int, a_offset: int, b_onset: int, b_offset: int) -> float:
    """|A ∩ B| / |A ∪ B| counting frames of inclusive ranges (onset..offset has offset-onset+1 frames)."""
    overlap = min(a_offset, b_offset) - max(a_onset, b_onset) + 1
    if overlap <= 0:
        return 0.0
    union = (a_offset - a_onset + 1) + (b_offset - b_onset + 1) - overlap
    return overlap / union


def resolve_ground_truth(
    intervals: Iterable[Interval], missing_offset_frames: int = MISSING_OFFSET_FRAMES
) -> list[GroundTruth]:
    """Close each interval without offset at apex + ``missing_offset_frames`` (onset + it
    when the apex is missing too), never before the onset."""
    resolved = []
    for interval in intervals:
        offset = interval.offset
        if offset is None:
            anchor = interval.apex if interval.apex is not None else interval.onset
            offset = max(interval.onset, anchor + missing_offset_frames)
        resolved.append(GroundTruth(video_key(interval.video), interval.onset, offset, interval.kind))
    return resolved


def prediction_kind(prediction: Prediction, fps: float) -> ExpressionKind:
    """Micro when offset - onset <= 0.5 s x fps (the sheets' own duration column).

    This threshold reproduces every SAMM-LV type and all but one CAS(ME)^2 type of
    each kind from the ground-truth durations (docs/spotting-eval.md).
    """
    return "micro" if prediction.offset - prediction.onset <= MICRO_MAX_SECONDS * fps else "macro"


def match_video(
    truths: Sequence[GroundTruth],
    predictions: Sequence[Prediction],
    threshold: float = IOU_THRESHOLD,
    matching: Matching = "maximum",
) -> list[tuple[int, int]]:
    """One-to-one (truth index, prediction index) pairs with IoU >= ``threshold``, in truth order.

    ``maximum``: as many pairs as possible, and among those the largest total IoU
    (remaining ties go to the earlier rows: scipy's solver is deterministic).
    ``greedy``: take pairs by descending IoU, ties by truth then prediction order.
    """
    if not truths or not predictions:
        return []
    iou = np.array([[frame_iou(t.onset, t.offset, p.onset, p.offset) for p in predictions] for t in truths])
    eligible = iou >= threshold
    if matching == "greedy":
        pairs = _greedy(iou, eligible)
    elif matching == "maximum":
        pairs = _maximum(iou, eligible)
    else:
        raise ValueError(f"unknown matching {matching!r} (expected one of {', '.join(MATCHINGS)})")
    return sorted(pairs)


def evaluate(
    truths: Sequence[GroundTruth],
    predictions: Sequence[Prediction],
    fps: float,
    threshold: float = IOU_THRESHOLD,
    matching: Matching = "maximum",
) -> SpottingResult:
    """Match per video, pool the counts and split them micro/macro."""
    truths_by_video: dict[str, list[GroundTruth]] = defaultdict(list)
    for truth in truths:
        truths_by_video[video_key(truth.video)].append(truth)
    predictions_by_video: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        predictions_by_video[video_key(prediction.video)].append(prediction)

    tp = {"micro": 0, "macro": 0}
    fp = {"micro": 0, "macro": 0}
    fn = {"micro": 0, "macro": 0}
    matches: list[tuple[GroundTruth, Prediction]] = []
    for video in sorted(truths_by_video.keys() | predictions_by_video.keys()):
        video_truths, video_predictions = truths_by_video.get(video, []), predictions_by_video.get(video, [])
        pairs = match_video(video_truths, video_predictions, threshold, matching)
        matched_truths = {t for t, _ in pairs}
        matched_predictions = {p for _, p in pairs}
        for t, p in pairs:
            tp[video_truths[t].kind] += 1
            matches.append((video_truths[t], video_predictions[p]))
        for index, truth in enumerate(video_truths):
            if index not in matched_truths:
                fn[truth.kind] += 1
        for index, prediction in enumerate(video_predictions):
            if index not in matched_predictions:
                fp[prediction_kind(prediction, fps)] += 1
    unknown = tuple(sorted(predictions_by_video.keys() - truths_by_video.keys()))
    return SpottingResult(
        micro=Counts(tp["micro"], fp["micro"], fn["micro"]),
        macro=Counts(tp["macro"], fp["macro"], fn["macro"]),
        matches=tuple(matches),
        unknown_videos=unknown,
    )


def _greedy(iou: np.ndarray, eligible: np.ndarray) -> list[tuple[int, int]]:
    candidates = sorted(zip(*np.nonzero(eligible)), key=lambda pair: (-iou[pair], pair[0], pair[1]))
    used_truths: set[int] = set()
    used_predictions: set[int] = set()
    pairs = []
    for t, p in candidates:
        if t not in used_truths and p not in used_predictions:
            used_truths.add(int(t))
            used_predictions.add(int(p))
            pairs.append((int(t), int(p)))
    return pairs


def _maximum(iou: np.ndarray, eligible: np.ndarray) -> list[tuple[int, int]]:
    # Weight 1 + IoU/(n+1) per eligible pair, 0 otherwise: any matching with one more pair
    # outweighs every matching with fewer (k pairs weigh < k + 1), so the solver maximises
    # the number of pairs first and the summed IoU second.
    size = min(iou.shape)
    weights = np.where(eligible, 1.0 + iou / (size + 1), 0.0)
    rows, columns = linear_sum_assignment(weights, maximize=True)
    return [(int(t), int(p)) for t, p in zip(rows, columns) if eligible[t, p]]


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0
