"""Frame difference: the cheapest motion signal (MMNet / EDMDBN feed apex - onset)."""

from __future__ import annotations

import torch

from engines.motion.frames import as_pair_batch


def frame_difference(onset, apex) -> torch.Tensor:
    """``apex - onset`` per pair as ``(B, 1, H, W)`` float32 in the 0..1 intensity scale.

    Frames follow ``engines.motion.frames`` (uint8 0..255 or float 0..1), so a uint8
    pair and the same pair as floats give the same difference.
    """
    first, second = as_pair_batch(onset, apex, min_side=1)
    return ((second - first) / 255.0).unsqueeze(1)
