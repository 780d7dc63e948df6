"""Timing: when an expression (or a blink) starts, peaks and ends, and how strong it is meanwhile.

Durations are drawn in seconds and then snapped to the frame grid of the clip's frame
rate, so that the annotated onset, apex and offset frames are exactly the frames where
the rendered motion starts, peaks and ends: the onset frame is still neutral, the apex
frame shows the full amplitude, the offset frame is neutral again. Between them the
strength follows a raised cosine up and a raised cosine down, smooth like real muscle
action (no velocity jump at onset or apex).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engines.errors import InputError
from training.synthetic.action_units import EMOTION_AUS

Kind = Literal["micro", "macro"]
MICRO_LIMITS_S = (1 / 25, 1 / 2)  # shortest and longest micro-expression (MEGC convention)
MACRO_LIMITS_S = (1 / 2, 4.0)


def frame_time(index: int, fps: float) -> dict:
    """A frame as the ground truth states it: 0-based decode ``index``, 1-based file/sheet ``frame``, time ``t``."""
    return {"index": int(index), "frame": int(index) + 1, "t": round(index / fps, 6)}


@dataclass(frozen=True)
class Timing:
    """Onset, apex and offset as 0-based frame indices at ``fps``."""

    onset: int
    apex: int
    offset: int
    fps: float

    def __post_init__(self) -> None:
        if not self.onset < self.apex < self.offset:
            raise InputError(
                f"timing needs onset < apex < offset in frames, got {self.onset}, {self.apex}, {self.offset} "
                f"at {self.fps} fps (too short for this frame rate?)"
            )

    @classmethod
    def from_seconds(cls, onset_s: float, apex_s: float, offset_s: float, fps: float) -> "Timing":
        """Snap times to the nearest frames, keeping at least one frame between the three."""
        onset = round(onset_s * fps)
        apex = max(round(apex_s * fps), onset + 1)
        offset = max(round(offset_s * fps), apex + 1)
        return cls(onset, apex, offset, fps)

    @property
    def length(self) -> int:
        """Frames from onset to offset inclusive."""
        return self.offset - self.onset + 1

    def strength(self, index: int) -> float:
        """0 outside (onset, offset), 1 at the apex, raised-cosine in between."""
        if index <= self.onset or index >= self.offset:
            return 0.0
        if index <= self.apex:
            phase = (index - self.onset) / (self.apex - self.onset)
            return 0.5 * (1.0 - math.cos(math.pi * phase))
        phase = (index - self.apex) / (self.offset - self.apex)
        return 0.5 * (1.0 + math.cos(math.pi * phase))

    def describe(self) -> dict:
        return {
            "onset": frame_time(self.onset, self.fps),
            "apex": frame_time(self.apex, self.fps),
            "offset": frame_time(self.offset, self.fps),
            "duration_s": round((self.offset - self.onset) / self.fps, 6),
        }


@dataclass(frozen=True)
class Event:
    """One rendered expression: its timing, peak displacement (px), action units and emotion."""

    timing: Timing
    amplitude_px: float
    action_units: tuple[str, ...]
    emotion: str
    kind: Kind

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "emotion": self.emotion,
            "action_units": list(self.action_units),
            "amplitude_px": round(self.amplitude_px, 6),
            **self.timing.describe(),
        }


def draw_timing(
    rng: np.random.Generator, start: int, fps: float, duration_s: tuple[float, float], apex_fraction: tuple[float, float]
) -> Timing:
    """A timing starting at frame ``start`` with a random duration and apex position."""
    duration = rng.uniform(*duration_s)
    apex = rng.uniform(*apex_fraction) * duration
    onset_s = start / fps
    return Timing.from_seconds(onset_s, onset_s + apex, onset_s + duration, fps)


def draw_action_units(
    rng: np.random.Generator, emotion: str, table: Mapping[str, tuple[tuple[str, ...], ...]] = EMOTION_AUS
) -> tuple[str, ...]:
    """One of the AU combinations that ``table`` lists for ``emotion``."""
    try:
        variants = table[emotion]
    except KeyError:
        raise InputError(f"no action units defined for emotion {emotion!r} (known: {', '.join(table)})") from None
    return variants[int(rng.integers(len(variants)))]


def place_intervals(
    rng: np.random.Generator, lengths: list[int], n_frames: int, busy: list[tuple[int, int]], gap: int
) -> list[int]:
    """Random start frames for intervals of ``lengths`` frames, apart from ``busy`` ones and each other by ``gap``.

    Intervals that do not fit after a number of tries are dropped (start -1), so a short
    video just gets fewer of them; callers log what was dropped.
    """
    taken = list(busy)
    starts = []
    for length in lengths:
        start = -1
        for _ in range(200):
            candidate = int(rng.integers(gap, max(gap + 1, n_frames - length - gap)))
            end = candidate + length - 1
            if end < n_frames - 1 and all(end + gap < a or candidate > b + gap for a, b in taken):
                start = candidate
                taken.append((candidate, end))
                break
        starts.append(start)
    return starts
