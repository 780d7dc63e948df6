"""Assemble a pipeline from a stream profile: the one place ``mer stream`` and ``mer analyze``
share, so that live and offline runs spot and classify identically."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from streamer.front_end import build_tracker
from streamer.metrics import StreamMetrics
from streamer.pipeline import Pipeline
from streamer.recognizer import Recognizer
from streamer.spotting import SpotParams, create_spotter, load_spot_params
from streamer.spotting.spotter import warm_up as warm_up_spotter
from streamer.stream_config import StreamConfig, spot_profile_path

log = logging.getLogger(__name__)

__all__ = ["build_pipeline", "load_spot_profile", "open_recognizer"]


def load_spot_profile(config: StreamConfig) -> SpotParams:
    """The spotting profile the stream profile names; load it before opening anything, so that
    a bad one is reported as the config error it is, not after the stream has started."""
    return load_spot_params(spot_profile_path(config.spot.profile))


def open_recognizer(config: StreamConfig, engine: str | Path | None) -> Recognizer:
    """``--engine`` if given, else the profile's engine, else the engine shipped with mer.

    The engine is checked here, on crops of the profile's size, so that a broken, mismatched
    or hand-edited engine stops ``mer stream`` / ``mer analyze`` before they bind a socket,
    create an output or read a frame (see ``Recognizer``).

    Also caps torch's threads at the profile's count: the motion kernels work on one small
    pair at a time, where extra threads only fight the capture thread for the cores.
    """
    import torch

    torch.set_num_threads(config.engine.threads)
    chosen = engine if engine is not None else config.engine.path
    return Recognizer(chosen, backend=config.engine.backend, threads=config.engine.threads,
                      crop_size=config.faces.crop_size)


def build_pipeline(
    config: StreamConfig,
    *,
    stream_id: str,
    fps: float,
    recognizer: Recognizer,
    emit: Callable[[dict], dict | None],
    metrics: StreamMetrics | None = None,
    spot_params: SpotParams | None = None,
    tracker=None,
) -> Pipeline:
    """The pipeline of one stream; ``spot_params`` is ``load_spot_profile(config)`` when already loaded,
    ``tracker`` the face front end when it was built ahead (``mer stream`` loads its models before
    the source opens) or runs elsewhere (``front_end_worker.RemoteTracker``)."""
    if spot_params is None:
        spot_params = load_spot_profile(config)
    warm_up_spotter(spot_params)
    if metrics is not None:
        metrics.set_engine(recognizer.engine_id, recognizer.backend, recognizer.device)
    return Pipeline(
        stream_id=stream_id,
        tracker=build_tracker(config.faces) if tracker is None else tracker,
        make_spotter=lambda rate: create_spotter(spot_params, rate),
        recognizer=recognizer,
        fps=fps,
        emit=emit,
        ring_seconds=config.spot.ring_seconds,
        metrics=metrics,
    )
