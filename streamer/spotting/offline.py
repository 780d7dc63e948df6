"""Spot a whole recording at once: frames -> face tracker -> one spotter per face.

Shared by the tests and ``mer analyze``: it returns every final interval per face and the
per-frame signal rows for the CSV.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamer.spotting.intervals import SpottedInterval
from streamer.spotting.params import SpotParams
from streamer.spotting.spotter import Spotter, create_spotter

if TYPE_CHECKING:
    from streamer.faces.tracker import FaceTracker
    from streamer.frames import Frame


@dataclass(frozen=True)
class SignalRow:
    """One face on one frame: the spotting signal and the threshold it was compared with."""

    index: int
    t: float
    face: int
    value: float
    threshold: float


@dataclass
class SpotResult:
    intervals: dict[int, list[SpottedInterval]] = field(default_factory=dict)  # track id -> intervals in time order
    signal: list[SignalRow] = field(default_factory=list)
    frames: int = 0


def spot_frames(frames: Iterable[Frame], tracker: FaceTracker, params: SpotParams, fps: float) -> SpotResult:
    """Run the tracker and a spotter per track over ``frames``; flush every track at the end."""
    result = SpotResult()
    spotters: dict[int, Spotter] = {}

    def finish(track_id: int) -> None:
        spotter = spotters.pop(track_id, None)
        if spotter is not None:
            result.intervals.setdefault(track_id, []).extend(spotter.flush())

    for frame in frames:
        result.frames += 1
        for face in tracker.update(frame):
            spotter = spotters.get(face.track_id)
            if spotter is None:
                spotter = spotters[face.track_id] = create_spotter(params, fps)
            found = spotter.push(face.aligned.gray, frame.t, frame.index, face.aligned.points)
            result.intervals.setdefault(face.track_id, []).extend(found)
            result.signal.append(SignalRow(frame.index, frame.t, face.track_id, spotter.signal, spotter.threshold))
        for track_id in tracker.ended():
            finish(track_id)
    for track_id in list(spotters):
        finish(track_id)
    return result
