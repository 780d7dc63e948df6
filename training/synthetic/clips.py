"""One synthetic clip: a subject, its events and distractors, ready to render, with its ground truth.

The two layouts (short CASME II-style clips and long videos) differ only in how many
events they place and how long they run; both build a :class:`Clip` here. Each clip
draws from its own random streams, spawned from (seed, layout, subject, clip), so a clip
does not change when another clip is added or removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from training.synthetic.action_units import EMOTION_AUS, STILL_EMOTION_AUS, expression_field, face_region
from training.synthetic.distractors import DistractorPlan, blink_anchors, plan_distractors
from training.synthetic.events import Event, Kind, Timing, draw_action_units, draw_timing, place_intervals
from training.synthetic.fields import max_fold_free_amplitude
from training.synthetic.identities import Identity
from training.synthetic.landmarks import FaceFrame
from training.synthetic.render import Renderer
from training.synthetic.settings import SynthSettings

FOLD_MARGIN = 0.95
EVENT_GAP_S = 0.5  # quiet time kept between expressions in a long video
STILL_FPS = 30.0  # the clock a still expression is timed on (only its apex frame is rendered)


@dataclass(frozen=True)
class ClipStreams:
    """Independent random streams of one clip."""

    events: np.random.Generator
    distractors: np.random.Generator
    noise_seed: int

    @classmethod
    def spawn(cls, seed: int, *key: int) -> "ClipStreams":
        events, distractors, noise = np.random.SeedSequence([seed, *key]).spawn(3)
        return cls(np.random.default_rng(events), np.random.default_rng(distractors), int(noise.generate_state(1)[0]))


@dataclass(frozen=True)
class Clip:
    identity: Identity
    fps: float
    n_frames: int
    events: tuple[Event, ...]
    distractors: DistractorPlan
    noise_seed: int

    def renderer(self) -> Renderer:
        return Renderer(self.identity, self.events, self.distractors, self.noise_seed)

    def describe(self) -> dict:
        return {
            "subject": self.identity.subject,
            "fps": self.fps,
            "n_frames": self.n_frames,
            "duration_s": round(self.n_frames / self.fps, 6),
            "size": list(self.identity.size),
            "events": [event.describe() for event in self.events],
            "distractors": self.distractors.describe(self.n_frames),
        }


def draw_event(
    rng: np.random.Generator, identity: Identity, emotion: str, kind: Kind, start: int, fps: float, settings: SynthSettings,
    emotions: Mapping[str, tuple[tuple[str, ...], ...]] = EMOTION_AUS,
) -> Event:
    """An event of ``emotion`` starting at frame ``start``: AU combination (from ``emotions``),
    timing and amplitude drawn.

    The amplitude is capped just below the largest one that keeps this face's warp
    one-to-one (a small face cannot show a large macro-expression).
    """
    timing_settings = settings.timing
    action_units = draw_action_units(rng, emotion, emotions)
    durations = timing_settings.micro_duration_s if kind == "micro" else timing_settings.macro_duration_s
    timing = draw_timing(rng, start, fps, durations, timing_settings.apex_fraction)
    amplitudes = timing_settings.micro_amplitude_px if kind == "micro" else timing_settings.macro_amplitude_px
    amplitude = float(rng.uniform(*amplitudes))
    face = FaceFrame(identity.landmarks)
    region = face_region(face, identity.size, blink_anchors(face))
    limit = FOLD_MARGIN * max_fold_free_amplitude(expression_field(action_units, face, region))
    return Event(timing, min(amplitude, limit), action_units, emotion, kind)


def blink_limit(identity: Identity) -> float:
    return FOLD_MARGIN * Renderer.blink_limit(identity)


def short_clip(identity: Identity, emotion: str, fps: float, settings: SynthSettings, streams: ClipStreams) -> Clip:
    """A CASME II-style clip: a few neutral frames, one micro-expression, a few neutral frames."""
    rng = streams.events
    lead = max(2, round(rng.uniform(0.05, 0.15) * fps))
    tail = max(2, round(rng.uniform(0.05, 0.1) * fps))
    event = draw_event(rng, identity, emotion, "micro", lead, fps, settings)
    n_frames = event.timing.offset + 1 + tail
    return _with_distractors(identity, fps, n_frames, (event,), settings, streams)


def still_expression(identity: Identity, emotion: str, settings: SynthSettings, streams: ClipStreams) -> tuple[Clip, int]:
    """A macro-expression of one of RAF-DB's basic emotions and the frame of its apex: a still
    face photo of a posed expression, as the macro-expression datasets hold (render that frame)."""
    rng = streams.events
    event = draw_event(rng, identity, emotion, "macro", 1, STILL_FPS, settings, STILL_EMOTION_AUS)
    return _with_distractors(identity, STILL_FPS, event.timing.offset + 2, (event,), settings, streams), event.timing.apex


def long_clip(
    identity: Identity, duration_s: float, fps: float, n_micro: int, n_macro: int, settings: SynthSettings,
    streams: ClipStreams, emotions: tuple[str, ...],
) -> Clip:
    """A long video with ``n_micro`` micro- and ``n_macro`` macro-expressions at random, non-overlapping times."""
    rng = streams.events
    n_frames = max(2, round(duration_s * fps))
    kinds: list[Kind] = ["macro"] * n_macro + ["micro"] * n_micro
    drafts = [draw_event(rng, identity, emotions[int(rng.integers(len(emotions)))], kind, 0, fps, settings)
              for kind in kinds]
    starts = place_intervals(rng, [d.timing.length for d in drafts], n_frames, [], max(1, round(EVENT_GAP_S * fps)))
    events = [_shifted(draft, start) for draft, start in zip(drafts, starts) if start >= 0]
    events.sort(key=lambda event: event.timing.onset)
    return _with_distractors(identity, fps, n_frames, tuple(events), settings, streams)


def _shifted(event: Event, start: int) -> Event:
    t = event.timing
    timing = Timing(start, start + t.apex - t.onset, start + t.offset - t.onset, t.fps)
    return Event(timing, event.amplitude_px, event.action_units, event.emotion, event.kind)


def _with_distractors(
    identity: Identity, fps: float, n_frames: int, events: tuple[Event, ...], settings: SynthSettings, streams: ClipStreams
) -> Clip:
    busy = [(e.timing.onset, e.timing.offset) for e in events]
    plan = plan_distractors(
        streams.distractors, settings.distractors, FaceFrame(identity.landmarks), n_frames, fps, busy, blink_limit(identity)
    )
    return Clip(identity, fps, n_frames, events, plan, streams.noise_seed)
