"""What a raw-frame model is fed: the contract between ``mer prepare``, the trainer and the stream.

Flow-image models (STSTNet, Dual-ATME, OFF-ApexNet, Bi-WOOF) eat the composite's 28x28 motion
image and say so with ``ModelCfg.clip = None``. Every other model eats aligned face crops taken
from a clip between its onset, apex and offset; its :class:`ClipSpec` says exactly how those
crops become the tensor, and ``engines.clip_input.build_clip_input`` is the one function that
does it, for training (``mer prepare`` / ``mer train``) and for the live stream alike. The spec
travels in the engine's manifest, so an engine is fed at run time what it was trained on.

Tensor layout of one sample (``ClipSpec.sample_shape``):

* ``frames == 1``: ``(C, H, W)``: the apex crop (after magnification when the spec asks).
* ``frames >= 2``: ``(T, C, H, W)``, oldest first.

Channels are the colour planes (``rgb``: R, G, B; ``gray``: one plane) in 0..1, followed,
when ``flow`` is set, by the (u, v) optical flow in pixels *from this frame to the next one*
(at the model's input size); the last frame has no next one and its flow planes are zero.

Temporal sampling (``anchors`` x ``interpolation``):

* ``apex``: the apex frame (``frames`` must be 1).
* ``onset_apex``: ``frames`` evenly spaced from onset to apex inclusive (2: onset, apex).
* ``onset_apex_offset``: with ``linear`` interpolation, onset->apex fills the first half and
  apex->offset the second, so the apex lands at index ``frames // 2`` (EDMDBN's 9 frames:
  onset, 3 between, apex, 3 between, offset); with ``tim``, the whole onset..offset clip is
  resampled to ``frames`` by the temporal interpolation model (DSTAN, LBP-TOP).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ClipSpec", "Anchors", "Interpolation"]

Anchors = Literal["apex", "onset_apex", "onset_apex_offset"]
Interpolation = Literal["linear", "tim"]


@dataclass(frozen=True)
class ClipSpec:
    """How aligned face crops of one clip become one model input sample (see the module doc)."""

    frames: int
    anchors: Anchors
    size: int
    color: Literal["rgb", "gray"] = "rgb"
    interpolation: Interpolation = "linear"
    # Optical flow to the next frame, appended as (u, v) planes: a method of
    # engines.motion.FLOW_METHODS ("tvl1", "farneback", "dis", ...) and its parameters.
    flow: str | None = None
    flow_params: dict[str, Any] = field(default_factory=dict)
    # Linear Eulerian magnification of the whole onset..offset clip before sampling:
    # keyword arguments of engines.motion.magnify.eulerian_magnify (alpha, low_hz, high_hz, levels).
    magnify: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if (self.anchors == "apex") != (self.frames == 1):
            raise ValueError(f"anchors {self.anchors!r} with {self.frames} frames: the apex alone is exactly 1 frame")
        if self.anchors == "onset_apex_offset" and self.interpolation == "linear" and self.frames % 2 == 0:
            raise ValueError("linear onset->apex->offset sampling needs an odd number of frames (apex in the middle)")
        if self.size < 8:
            raise ValueError(f"size must be >= 8 px, got {self.size}")
        if self.flow is not None and self.frames < 2:
            raise ValueError("flow to the next frame needs at least 2 frames")

    @property
    def colour_planes(self) -> int:
        return 3 if self.color == "rgb" else 1

    @property
    def channels(self) -> tuple[str, ...]:
        names = ("r", "g", "b") if self.color == "rgb" else ("gray",)
        return names + (("u_next", "v_next") if self.flow else ())

    @property
    def sample_shape(self) -> tuple[int, ...]:
        planes = (len(self.channels), self.size, self.size)
        return planes if self.frames == 1 else (self.frames, *planes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown clip spec field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**data)

    def with_size(self, size: int) -> ClipSpec:
        return dataclasses.replace(self, size=size)
