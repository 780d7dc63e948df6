"""Per-face ring buffers and expression spotters of the streaming recognizer.

Modules: ``intervals`` (SpottedInterval), ``ring_buffer`` (FaceRingBuffer), ``params``
(configs/spot/*.toml schema), ``signal`` (smoothing, threshold, boundaries: shared),
``flow_spotter`` (default, optical flow in facial regions), ``lbp_spotter`` (LBP-chi^2),
``spotter`` (the Spotter interface and ``create_spotter``), ``offline`` (a whole recording).
"""

from streamer.spotting.intervals import SpottedInterval
from streamer.spotting.params import SpotParams, load_spot_params
from streamer.spotting.ring_buffer import FaceRingBuffer, FrameEvictedError
from streamer.spotting.spotter import Spotter, create_spotter

__all__ = ["FaceRingBuffer", "FrameEvictedError", "SpotParams", "SpottedInterval", "Spotter", "create_spotter",
           "load_spot_params"]
