"""Onset and apex face crops in, exactly the model input an engine's manifest asks for, out.

The manifest's ``preprocessing`` block (``engines.manifest.preprocessing_signature``) names
the flow method and its parameters, the crop size the flow is computed at, the planes the
model sees and their order, the output size and the value normalisation. The streaming path
and the trainer both build inputs through :class:`MotionInputBuilder`, so a model is fed at
run time what it was trained on, and an engine whose recipe this builder cannot follow is
refused when it is loaded, not silently fed something else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from engines.errors import InputError
from engines.motion import FLOW_METHODS, compute_flow
from engines.motion.frames import as_pair_batch
from engines.motion.representation import flow_image

__all__ = ["MotionInputBuilder", "FLOW_PLANES", "LIVE_FLOW"]

# Motion for the live path, and for flow-image models trained on face crops (`mer prepare`):
# TV-L1 (the papers' flow) on a 64x64 crop with a short schedule (two scales suffice: a
# micro-expression moves the 64x64 face by well under 2 px), so one event's input costs about
# 10 ms of one CPU core instead of seconds (docs/benchmarks.md). The shipped engine uses it.
LIVE_FLOW = {
    "flow_method": "tvl1",
    "flow_params": {"nscales": 2, "warps": 2, "inner_iterations": 10, "outer_iterations": 1, "median_filtering": 1},
    "flow_size": (64, 64),
}

# The planes flow_image produces, in its "rgb" order.
FLOW_PLANES = ("u", "v", "optical_strain")


class MotionInputBuilder:
    """Builds ``(B, C, H, W)`` float32 model inputs from batches of onset/apex grayscale crops."""

    def __init__(self, signature: Mapping[str, Any], flow_runner: Callable | None = None) -> None:
        """``flow_runner(onset, apex) -> flow`` replaces ``compute_flow`` for the signature's method
        (a ``TVL1Runner`` on a GPU); it must compute the same flow with the same parameters."""
        self.signature = dict(signature)
        if "clip" in self.signature:
            raise InputError("this engine takes clips of face crops (engines.clip_input.build_clip_input), "
                             "not an onset/apex flow image", column="preprocessing.clip")
        self.flow_runner = flow_runner
        method = self._field("flow_method")
        if method not in FLOW_METHODS:
            raise InputError(f"unknown flow method {method!r}; known: {', '.join(FLOW_METHODS)}",
                             column="preprocessing.flow_method")
        self.flow_method = method
        self.flow_params = dict(self._field("flow_params") or {})
        flow_size = self.signature.get("flow_size")
        self.flow_size = None if flow_size is None else (int(flow_size[0]), int(flow_size[1]))
        height, width = self._field("size")
        if height != width:
            raise InputError(f"only square inputs are supported, got {height}x{width}", column="preprocessing.size")
        self.size = int(height)
        channels = tuple(self._field("channels"))
        if sorted(channels) != sorted(FLOW_PLANES):
            raise InputError(f"channels must be a permutation of {FLOW_PLANES}, got {channels}",
                             column="preprocessing.channels")
        self.plane_index = [FLOW_PLANES.index(name) for name in channels]
        if list(self._field("value_range")) != [0.0, 255.0]:
            raise InputError("only the 0..255 min-max flow image is supported", column="preprocessing.value_range")
        mean, std = self.signature.get("mean"), self.signature.get("std")
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    @classmethod
    def from_manifest(cls, manifest, flow_runner: Callable | None = None) -> MotionInputBuilder:
        """The builder for an ``EngineManifest`` (or a loaded runtime backend's manifest)."""
        return cls(manifest.preprocessing, flow_runner)

    def tvl1_runner(self, device: str | torch.device, compile_kernels: bool = False) -> MotionInputBuilder:
        """This builder with its TV-L1 run by a batched :class:`TVL1Runner` on ``device``
        (CUDA graphs on a GPU); refused for an engine whose flow is not TV-L1."""
        from engines.motion.tvl1 import TVL1Params
        from engines.motion.tvl1_graph import TVL1Runner

        if self.flow_method != "tvl1":
            raise InputError(f"the engine's flow is {self.flow_method!r}, not tvl1", column="preprocessing.flow_method")
        params = TVL1Params.from_kwargs(**self.flow_params)
        return type(self)(self.signature, TVL1Runner(params, device, compile_kernels=compile_kernels))

    def _field(self, name: str) -> Any:
        if name not in self.signature:
            raise InputError("the engine's preprocessing does not say", column=f"preprocessing.{name}")
        return self.signature[name]

    def __call__(self, onset, apex) -> torch.Tensor:
        """Model inputs for a batch of pairs: ``(B, H, W)`` grey frames, uint8 or float 0..1
        (the motion kernels' convention, ``engines.motion.frames``)."""
        onset, apex = (x / 255.0 for x in as_pair_batch(onset, apex))
        if self.flow_size is not None and tuple(onset.shape[-2:]) != self.flow_size:
            onset, apex = (F.interpolate(x.unsqueeze(1), size=self.flow_size, mode="area").squeeze(1)
                           for x in (onset, apex))
        if self.flow_runner is not None:
            flow = self.flow_runner(onset, apex)
        else:
            flow = compute_flow(self.flow_method, onset, apex, **self.flow_params)
        image = flow_image(flow, size=self.size, channel_order="rgb")[:, self.plane_index]
        if self.mean is not None:
            image = image - self.mean
        if self.std is not None:
            image = image / self.std
        return image.contiguous()
