"""The interface every spotter meets, and the factory that builds one from a profile."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from streamer.spotting.intervals import SpottedInterval
from streamer.spotting.params import SpotParams


class Spotter(Protocol):
    """Finds expression intervals in one face's stream of aligned crops."""

    look_ahead_s: float  # stream time from an interval's offset until it is returned

    def push(self, gray: np.ndarray, t: float, index: int, points: np.ndarray) -> list[SpottedInterval]:
        """Add one aligned crop (with crop-coordinate landmarks); returns the intervals that became final."""
        ...

    def flush(self) -> list[SpottedInterval]:
        """End of the face's stream: the intervals still pending."""
        ...

    @property
    def signal(self) -> float:
        """The last spotting-signal value, for the per-frame CSV."""
        ...

    @property
    def threshold(self) -> float:
        """The threshold the signal is compared with now (inf until the quiet level is known)."""
        ...

    @property
    def provisional(self) -> dict[int, tuple[int, int]]:
        """Intervals not final yet (inside the look-ahead): {region id: (onset frame, apex frame)}."""
        ...


def create_spotter(params: SpotParams, fps: float) -> Spotter:
    """A fresh spotter for one face track of a stream running at about ``fps`` frames per second.

    ``fps`` only sizes buffers and turns the profile's seconds into frame counts; every
    decision uses the frames' own timestamps.
    """
    if params.method == "lbp":
        from streamer.spotting.lbp_spotter import LbpSpotter

        return LbpSpotter(params.lbp, params.detect, fps)
    from streamer.spotting.flow_spotter import FlowSpotter

    return FlowSpotter(params.flow, params.detect, fps)


def warm_up(params: SpotParams) -> None:
    """Run the profile's compiled spotting code once, so that numba's one-time start in a process
    (about 0.5 s) is paid while a stream is being set up, not on the frame where a face appears."""
    if params.method == "flow":
        from streamer.spotting.flow_spotter import warm_up as warm_up_flow

        warm_up_flow()
    else:  # the LBP spotter's boxes
        from streamer.faces.rois import spotting_rois

        spotting_rois(np.zeros((68, 2), np.float32))
