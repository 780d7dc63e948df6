"""Nuisance motion and appearance change: blinks, head moves, illumination drift, sensor noise.

Real long videos are full of motion that is not an expression; a spotter that fires on
every blink or head turn is useless. Each distractor is planned up front (drawn from the
clip's random generator) and logged, so the ground truth says exactly which frames it
touches. Blinks and head moves are placed in the gaps between expression events (so an
annotated interval is never explained by a distractor); illumination drift and noise are
continuous.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from training.synthetic.events import Timing, draw_timing, frame_time, place_intervals
from training.synthetic.fields import Anchor
from training.synthetic.landmarks import FaceFrame
from training.synthetic.settings import DistractorSettings

log = logging.getLogger(__name__)

BLINK_RADIUS_IOD = 0.35
BLINK_APEX_FRACTION = (0.3, 0.45)  # lids close faster than they open
MIN_GAP_S = 0.2  # distractors keep this far from events and each other


def blink_anchors(face: FaceFrame) -> list[Anchor]:
    """The upper eyelids (landmarks 37, 38 and 43, 44) pulled straight down."""
    down = -face.up
    return [
        Anchor(centre=(float(p[0]), float(p[1])), direction=(float(down[0]), float(down[1])),
               radius=BLINK_RADIUS_IOD * face.interocular)
        for p in face.landmarks[[37, 38, 43, 44]]
    ]


def eye_opening(face: FaceFrame) -> float:
    """Mean distance (px) between the upper and lower lid landmarks of both eyes."""
    upper = face.landmarks[[37, 38, 43, 44]]
    lower = face.landmarks[[41, 40, 47, 46]]
    return float(np.linalg.norm(upper - lower, axis=1).mean())


@dataclass(frozen=True)
class Blink:
    timing: Timing
    amplitude_px: float

    def describe(self) -> dict:
        return {"amplitude_px": round(self.amplitude_px, 6), **self.timing.describe()}


@dataclass(frozen=True)
class HeadMove:
    """A smooth move of the whole head from one pose to another; the pose holds afterwards.

    A pose is (dx, dy) in pixels and an in-plane rotation in degrees about the face centre.
    """

    start: int
    end: int
    fps: float
    start_pose: tuple[float, float, float]
    end_pose: tuple[float, float, float]

    def pose(self, index: int) -> tuple[float, float, float] | None:
        """The pose at ``index`` if it lies inside this move, else None."""
        if not self.start <= index <= self.end:
            return None
        ramp = 0.5 * (1.0 - math.cos(math.pi * (index - self.start) / (self.end - self.start)))
        return tuple(a + ramp * (b - a) for a, b in zip(self.start_pose, self.end_pose))

    def describe(self) -> dict:
        return {
            "start": frame_time(self.start, self.fps),
            "end": frame_time(self.end, self.fps),
            "start_pose": {"dx": self.start_pose[0], "dy": self.start_pose[1], "rotation_deg": self.start_pose[2]},
            "end_pose": {"dx": self.end_pose[0], "dy": self.end_pose[1], "rotation_deg": self.end_pose[2]},
        }


@dataclass(frozen=True)
class IlluminationDrift:
    """Brightness ``gain(t) * I + offset(t)``, each a slow sinusoid of random period and phase."""

    gain_amplitude: float
    gain_period_s: float
    gain_phase: float
    offset_amplitude: float
    offset_period_s: float
    offset_phase: float

    def at(self, t: float) -> tuple[float, float]:
        gain = 1.0 + self.gain_amplitude * math.sin(2 * math.pi * t / self.gain_period_s + self.gain_phase)
        offset = self.offset_amplitude * math.sin(2 * math.pi * t / self.offset_period_s + self.offset_phase)
        return gain, offset


@dataclass(frozen=True)
class DistractorPlan:
    """Everything that is not an expression, for one clip."""

    fps: float
    blinks: tuple[Blink, ...] = ()
    head_moves: tuple[HeadMove, ...] = ()
    illumination: IlluminationDrift | None = None
    noise_sigma: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def head_pose(self, index: int) -> tuple[float, float, float]:
        pose = (0.0, 0.0, 0.0)
        for move in self.head_moves:
            if index >= move.start:
                pose = move.pose(index) or move.end_pose
        return pose

    def light(self, index: int) -> tuple[float, float]:
        return (1.0, 0.0) if self.illumination is None else self.illumination.at(index / self.fps)

    def describe(self, n_frames: int) -> dict:
        lights = [self.light(i) for i in range(n_frames)] if self.illumination else []
        return {
            "blinks": [blink.describe() for blink in self.blinks],
            "head_moves": [move.describe() for move in self.head_moves],
            "illumination": None if self.illumination is None else {
                **{k: round(v, 6) for k, v in vars(self.illumination).items()},
                "gain": [round(g, 6) for g, _ in lights],
                "offset": [round(o, 6) for _, o in lights],
            },
            "noise_sigma": self.noise_sigma,
            "notes": list(self.notes),
        }


def plan_distractors(
    rng: np.random.Generator,
    settings: DistractorSettings,
    face: FaceFrame,
    n_frames: int,
    fps: float,
    busy: list[tuple[int, int]],
    max_blink_px: float,
) -> DistractorPlan:
    """Draw the distractors of one clip of ``n_frames``, keeping blinks and head moves out of ``busy`` frames.

    Every part draws from ``rng`` whether or not it is enabled, so switching one part off
    leaves the others (and the expression events) exactly as they were.
    """
    duration_s = n_frames / fps
    gap = max(1, round(MIN_GAP_S * fps))
    notes = []
    taken = list(busy)

    n_blinks = int(rng.poisson(settings.blink_rate_hz * duration_s))
    blink_timings = [draw_timing(rng, 0, fps, settings.blink_duration_s, BLINK_APEX_FRACTION) for _ in range(n_blinks)]
    closures = rng.uniform(*settings.blink_closure, size=n_blinks)
    blinks = []
    starts = place_intervals(rng, [t.length for t in blink_timings], n_frames, taken, gap)
    for timing, closure, start in zip(blink_timings, closures, starts):
        if start < 0:
            if settings.blinks:
                notes.append("a blink did not fit between the events and was left out")
            continue
        moved = Timing(start, start + timing.apex - timing.onset, start + timing.offset - timing.onset, fps)
        blinks.append(Blink(moved, min(float(closure) * eye_opening(face), max_blink_px)))
        taken.append((moved.onset, moved.offset))  # kept free even when blinks are off: same plan either way

    n_moves = int(rng.poisson(settings.head_move_rate_hz * duration_s))
    lengths = [max(2, round(rng.uniform(*settings.head_move_duration_s) * fps)) for _ in range(n_moves)]
    targets = [
        (float(rng.uniform(-1, 1) * settings.head_translation_px), float(rng.uniform(-1, 1) * settings.head_translation_px),
         float(rng.uniform(-1, 1) * settings.head_rotation_deg))
        for _ in range(n_moves)
    ]
    moves = []
    starts = place_intervals(rng, lengths, n_frames, taken, gap)
    placed = sorted((s, n, target) for s, n, target in zip(starts, lengths, targets) if s >= 0)
    if settings.head_motion:
        notes += ["a head move did not fit between the events and was left out"] * (n_moves - len(placed))
    pose = (0.0, 0.0, 0.0)
    for start, length, target in placed:
        moves.append(HeadMove(start, start + length - 1, fps, pose, target))
        pose = target

    light = IlluminationDrift(
        gain_amplitude=settings.illumination_gain,
        gain_period_s=float(rng.uniform(*settings.illumination_period_s)),
        gain_phase=float(rng.uniform(0, 2 * math.pi)),
        offset_amplitude=settings.illumination_offset,
        offset_period_s=float(rng.uniform(*settings.illumination_period_s)),
        offset_phase=float(rng.uniform(0, 2 * math.pi)),
    )
    for note in notes:
        log.debug(note)
    return DistractorPlan(
        fps=fps,
        blinks=tuple(sorted(blinks, key=lambda b: b.timing.onset)) if settings.blinks else (),
        head_moves=tuple(moves) if settings.head_motion else (),
        illumination=light if settings.illumination else None,
        noise_sigma=settings.noise_sigma if settings.noise else 0.0,
        notes=tuple(notes),
    )
