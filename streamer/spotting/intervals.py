"""What a spotter reports: one expression interval found in a face's stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IntervalKind = Literal["micro", "macro"]

# MEGC convention (training/spotting_eval.py): micro when offset - onset <= 0.5 s.
MICRO_MAX_S = 0.5


@dataclass(frozen=True)
class SpottedInterval:
    """An expression from ``onset`` to ``offset`` (frame indices, inclusive) peaking at ``apex``.

    ``score`` is the peak of the spotting signal; ``intensity`` is how far that peak rose
    above the signal's quiet level (same units as the signal: crop pixels for the flow
    spotter), so events of one stream can be ranked by strength.
    """

    onset: int
    apex: int
    offset: int
    onset_t: float
    apex_t: float
    offset_t: float
    kind: IntervalKind
    score: float
    intensity: float

    @property
    def duration_s(self) -> float:
        return self.offset_t - self.onset_t


def interval_kind(onset_t: float, offset_t: float, micro_max_s: float = MICRO_MAX_S) -> IntervalKind:
    """Micro when ``offset_t - onset_t <= micro_max_s`` (the rule the evaluator applies to predictions)."""
    # A tiny tolerance so that exactly 0.5 s computed from frame times (e.g. 15/30) stays micro.
    return "micro" if offset_t - onset_t <= micro_max_s + 1e-9 else "macro"
