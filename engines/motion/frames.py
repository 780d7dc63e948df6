"""The frame and flow conventions shared by every motion kernel.

Frames: a batch of grayscale onset/apex pairs, ``(B, H, W)`` or ``(B, 1, H, W)``, as a
torch tensor or numpy array. ``uint8`` means intensities 0..255; floating point means
0..1 (OpenCV's DualTVL1 convention: it scales float input by 255).

Flow: ``(B, 2, H, W)`` float32 on the device of the input; channel 0 is ``u`` (x, to the
right), channel 1 is ``v`` (y, downwards), in pixels, defined on the onset grid and
pointing into the apex: ``onset[y, x] ~ apex[y + v, x + u]`` (OpenCV's convention for
``calc(I0=onset, I1=apex)``).
"""

from __future__ import annotations

import numpy as np
import torch

from engines.errors import InputError


def as_frame_batch(frames, name: str, min_side: int = 1) -> torch.Tensor:
    """Validate a frame batch and return it as ``(B, H, W)`` float32 in 0..255, same device.

    ``name`` ("onset", "apex") appears in the error message; flows need ``min_side`` 3.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise InputError(f"expected a tensor or array of frames, got {type(frames).__name__}", column=name)
    if frames.dim() == 4:
        if frames.shape[1] != 1:
            raise InputError(f"expected one (grayscale) channel, got shape {tuple(frames.shape)}", column=name)
        frames = frames[:, 0]
    if frames.dim() != 3:
        raise InputError(f"expected shape (B, H, W) or (B, 1, H, W), got {tuple(frames.shape)}", column=name)
    if min(frames.shape[-2:]) < min_side:
        raise InputError(f"frames must be at least {min_side}x{min_side} pixels, got {tuple(frames.shape[-2:])}", column=name)
    if frames.dtype == torch.uint8:
        return frames.to(torch.float32)
    if not frames.dtype.is_floating_point:
        raise InputError(f"expected uint8 or floating-point frames, got {frames.dtype}", column=name)
    return frames.to(torch.float32) * 255.0


def as_pair_batch(onset, apex, min_side: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Both frames of the pairs as ``(B, H, W)`` float32 0..255, checked to match."""
    first = as_frame_batch(onset, "onset", min_side)
    second = as_frame_batch(apex, "apex", min_side)
    if first.shape != second.shape:
        raise InputError(f"onset {tuple(first.shape)} and apex {tuple(second.shape)} shapes differ", column="apex")
    if first.device != second.device:
        raise InputError(f"onset on {first.device} but apex on {second.device}", column="apex")
    return first, second


def endpoint_error(flow: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-pair mean endpoint error (pixels) between two ``(B, 2, H, W)`` flows."""
    return torch.linalg.vector_norm(flow - reference, dim=1).mean(dim=(1, 2))
