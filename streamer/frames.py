"""The unit that flows through the online path: one decoded video frame and its times.

Two clocks travel with every frame because they answer different questions: ``t`` is
*stream* time (where in the video the frame is, what the spotter's durations are
measured in), ``captured_at`` is *machine* time (when mer got it, what latency is
measured from).

A frame that does not follow on from the one before it (the first after a reconnection,
the first of a new pass over a looping file) says so: faces are then tracked afresh, since
a spotter comparing it with the frames before the cut would see motion that never happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Frame", "cut_before"]


@dataclass(frozen=True, slots=True)
class Frame:
    index: int  # 0-based frame number in the stream; only increases, may skip (dropped frames)
    t: float  # stream time, seconds: container pts for files, capture clock since start for live sources
    image: np.ndarray  # H x W x 3 BGR uint8; H x W grey (luma) uint8 from a source opened with color=False
    captured_at: float  # time.monotonic() when the frame was read (latency is measured from it)
    decode_s: float = 0.0  # seconds spent demuxing, decoding and converting this frame (the "decode" stage)
    discontinuous: bool = False  # the stream was cut before this frame (reconnection, loop restart)


def cut_before(frame: Frame, previous_shape: tuple[int, ...] | None, first: bool) -> str | None:
    """Why ``frame`` does not follow on from the frame before it (of shape ``previous_shape``),
    if it does not: ``"resolution_change"`` or ``"discontinuity"``; None for the first frame.

    One rule for every place that tracks faces over a stream (the pipeline, and the face
    front end when it runs in its own process), so that they start afresh on the same frames.
    """
    if previous_shape is not None and previous_shape != frame.image.shape:
        return "resolution_change"
    if frame.discontinuous and not first:
        return "discontinuity"
    return None
