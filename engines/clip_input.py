"""Aligned face crops of a clip -> one model sample, exactly as the clip's ClipSpec says.

This is the one place a clip model's input is made: ``mer prepare`` / ``mer train`` build
training samples from cached crops with it and the live recognizer builds each event's
sample from its ring of crops with it, so an engine sees at run time what it learnt from.
It knows nothing of datasets: crops, indices into them, the frame rate, the spec.

Steps (see :mod:`engines.clip_spec` for the tensor layout):

1. **Which frames.** :func:`temporal_weights` says how each of the spec's ``frames`` output
   frames mixes the crops of the anchors' span (``apex``: one-hot; ``linear``: evenly spaced
   positions, a fractional position blends its two neighbouring crops linearly; ``tim``: the
   temporal interpolation model of :mod:`engines.motion.tim` over onset..apex or onset..offset).
2. **Size and colour.** The crops involved are resized to ``spec.size`` (``cv2.INTER_AREA``
   when shrinking, ``cv2.INTER_LINEAR`` when enlarging), in float; for a ``gray`` spec a colour
   crop is first made grey by ``cv2.cvtColor`` (ITU-R 601 luma, whole grey levels), as the face
   front end makes the stream's grey crops. Resizing first makes the sample the
   same whatever crop size the front end used (training caches 224 px, the stream 128 px).
3. **Magnification** (``spec.magnify``): linear Eulerian magnification of every crop of
   onset..offset at ``spec.size``, each colour plane on its own (the filter is linear, so this
   is magnification in any linear colour space, without the paper's chroma attenuation); it
   needs the clip's frame rate. Then the weights of step 1 apply to the magnified clip.
4. **Range.** Values are clipped to 0..255 (magnification and TIM may overshoot) and scaled
   to 0..1.
5. **Flow** (``spec.flow``): the (u, v) flow from each output frame to the next, on their
   grey versions at ``spec.size``, by ``engines.motion.compute_flow`` batched over all pairs
   of all clips; zero for the last frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from engines.clip_spec import ClipSpec
from engines.errors import InputError
from engines.motion import compute_flow
from engines.motion.magnify import eulerian_magnify
from engines.motion.tim import tim_weights

__all__ = ["ClipFrames", "build_clip_input", "build_clip_inputs", "temporal_weights", "LUMA"]

# ITU-R BT.601 luma weights of R, G, B: what cv2's RGB2GRAY uses, so grey crops match the front end's.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Flow pairs solved in one call: enough to batch the torch TV-L1, small enough for memory at 224 px.
FLOW_BATCH = 64


@dataclass(frozen=True)
class ClipFrames:
    """One clip: its aligned crops (``n`` x H x W x 3 RGB or ``n`` x H x W grey, uint8) and anchors
    as indices into them (``offset`` None: the last crop); ``fps`` is needed for magnification."""

    frames: Any
    onset: int
    apex: int
    offset: int | None = None
    fps: float | None = None


def build_clip_input(frames, onset: int, apex: int, offset: int | None, spec: ClipSpec,
                     fps: float | None = None) -> np.ndarray:
    """One sample of shape ``spec.sample_shape``, float32 (see the module doc)."""
    return build_clip_inputs([ClipFrames(frames, onset, apex, offset, fps)], spec)[0]


def build_clip_inputs(clips: Sequence[ClipFrames], spec: ClipSpec) -> np.ndarray:
    """``(N, *spec.sample_shape)`` float32 for N clips; their flows are solved in batches."""
    if not clips:
        return np.zeros((0, *spec.sample_shape), dtype=np.float32)
    planes = np.stack([_sampled_planes(clip, spec) for clip in clips])  # (N, T, P, S, S): colour in 0..1
    if spec.flow:
        planes = np.concatenate([planes, _flow_to_next(planes, spec)], axis=2)
    if spec.frames == 1:
        planes = planes[:, 0]
    return np.ascontiguousarray(planes, dtype=np.float32)


def temporal_weights(spec: ClipSpec, onset: int, apex: int, offset: int) -> np.ndarray:
    """``(spec.frames, offset - onset + 1)``: output frame k is ``sum_i w[k, i] * crop[onset + i]``."""
    length, apex_at = offset - onset + 1, apex - onset
    if spec.anchors == "apex":
        return _linear_weights(np.array([apex_at], dtype=np.float64), length)
    if spec.interpolation == "tim":
        span = apex_at + 1 if spec.anchors == "onset_apex" else length
        if span < 2:
            field = "apex" if spec.anchors == "onset_apex" else "offset"
            raise InputError(f"temporal interpolation needs at least 2 frames from onset to {field}, got {span}",
                             column=field)
        weights = np.zeros((spec.frames, length))
        weights[:, :span] = tim_weights(span, spec.frames)
        return weights
    if spec.anchors == "onset_apex":
        return _linear_weights(np.linspace(0.0, apex_at, spec.frames), length)
    half = spec.frames // 2  # onset..apex fills indices 0..half, apex..offset half..frames-1
    positions = np.concatenate([np.linspace(0.0, apex_at, half + 1), np.linspace(apex_at, length - 1, half + 1)[1:]])
    return _linear_weights(positions, length)


def _linear_weights(positions: np.ndarray, length: int) -> np.ndarray:
    """One row per position: a whole position picks its crop, a fractional one blends its two neighbours."""
    weights = np.zeros((len(positions), length))
    for row, position in enumerate(positions):
        below = min(int(np.floor(position)), length - 1)
        fraction = position - below
        weights[row, below] += 1.0 - fraction
        if fraction > 1e-9:
            weights[row, below + 1] += fraction
    return weights


def _sampled_planes(clip: ClipFrames, spec: ClipSpec) -> np.ndarray:
    """``(T, P, S, S)`` colour planes in 0..1 of one clip's output frames (steps 1-4)."""
    frames = _as_frames(clip.frames, spec)
    onset, apex, offset = _anchors(clip, len(frames))
    weights = temporal_weights(spec, onset, apex, offset)
    if spec.magnify:
        used = np.arange(weights.shape[1])
        planes = _magnified(np.stack([_planes(frames[onset + i], spec) for i in used]), spec, clip.fps)
    else:
        used = np.flatnonzero(np.abs(weights).sum(axis=0) > 0)
        planes = np.stack([_planes(frames[onset + i], spec) for i in used])
    mixed = np.tensordot(weights[:, used].astype(np.float32), planes, axes=1)
    return np.clip(mixed, 0.0, 255.0) / 255.0


def _as_frames(frames, spec: ClipSpec) -> np.ndarray:
    """The crops as one ``(n, H, W[, 3])`` uint8 array, checked against the spec's colour."""
    try:
        array = frames if isinstance(frames, np.ndarray) else np.stack([np.asarray(f) for f in frames])
    except ValueError as exc:  # ragged shapes, or no frames at all
        raise InputError(f"crops must be a non-empty sequence of equal-size images ({exc})", column="frames") from exc
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] != 3):
        raise InputError(f"expected uint8 crops (n, H, W, 3) RGB or (n, H, W) grey, got {array.dtype} "
                         f"{array.shape}", column="frames")
    if len(array) == 0:
        raise InputError("the clip has no crops", column="frames")
    if spec.color == "rgb" and array.ndim == 3:
        raise InputError("the spec asks for rgb but the crops are grey", column="frames")
    return array


def _anchors(clip: ClipFrames, count: int) -> tuple[int, int, int]:
    offset = count - 1 if clip.offset is None else clip.offset
    values = {"onset": clip.onset, "apex": clip.apex, "offset": offset}
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or not 0 <= value < count:
            raise InputError(f"{name} {value!r} is not an index into the clip's {count} crops", column=name)
    if not clip.onset <= clip.apex <= offset:
        raise InputError(f"anchors must satisfy onset <= apex <= offset, got {clip.onset}, {clip.apex}, {offset}",
                         column="apex")
    return int(clip.onset), int(clip.apex), int(offset)


def _planes(frame: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """One crop as ``(P, S, S)`` float32 0..255 at the spec's size and colour.

    A colour crop for a grey spec is first made grey exactly as the face front end makes its
    grey crops (``cv2.cvtColor``, whole grey levels), so a sample built from a training cache's
    colour crops equals the one the stream builds from its grey ring, bit for bit (LBP-TOP's
    comparisons flip on the smallest difference).
    """
    if spec.color == "gray" and frame.ndim == 3:
        frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    image = frame.astype(np.float32)
    if image.shape[:2] != (spec.size, spec.size):
        shrinking = image.shape[0] > spec.size or image.shape[1] > spec.size
        method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (spec.size, spec.size), interpolation=method)
    if image.ndim == 2:
        return image[None]
    return image.transpose(2, 0, 1)


def _magnified(planes: np.ndarray, spec: ClipSpec, fps: float | None) -> np.ndarray:
    """Eulerian magnification of a ``(n, P, S, S)`` clip, each plane on its own."""
    if fps is None or fps <= 0:
        raise InputError("magnification needs the clip's frame rate (fps)", column="fps")
    by_plane = torch.from_numpy(np.ascontiguousarray(planes.transpose(1, 0, 2, 3)))  # (P, n, S, S)
    magnified = eulerian_magnify(by_plane, fps, **spec.magnify).numpy()
    return np.clip(magnified, 0.0, 255.0).transpose(1, 0, 2, 3)


def _flow_to_next(colour: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """``(N, T, 2, S, S)`` flow from each output frame to the next (zero for the last)."""
    grey = colour[:, :, 0] if colour.shape[2] == 1 else np.einsum("ntphw,p->nthw", colour, LUMA)
    count, length = grey.shape[:2]
    first = grey[:, :-1].reshape(-1, spec.size, spec.size)
    second = grey[:, 1:].reshape(-1, spec.size, spec.size)
    parts = []
    for start in range(0, len(first), FLOW_BATCH):
        stop = start + FLOW_BATCH
        flow = compute_flow(spec.flow, torch.from_numpy(np.ascontiguousarray(first[start:stop])),
                            torch.from_numpy(np.ascontiguousarray(second[start:stop])), **spec.flow_params)
        parts.append(flow.cpu().numpy())
    flows = np.zeros((count, length, 2, spec.size, spec.size), dtype=np.float32)
    flows[:, :-1] = np.concatenate(parts).reshape(count, length - 1, 2, spec.size, spec.size)
    return flows
