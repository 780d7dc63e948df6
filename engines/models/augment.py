"""Training-time augmentation of clips, shared by the clip models (EDMDBN, MMNet).

One random draw per clip, applied identically to all its frames, so that frame differences
stay motion and not augmentation. Both run inside a model's ``forward`` in training mode only.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["LUMA", "random_clip_affine", "random_colour_jitter"]

# ITU-R BT.601 luma weights (OpenCV's RGB -> grey).
LUMA = (0.299, 0.587, 0.114)


def random_clip_affine(clip: torch.Tensor, flip_prob: float, max_degrees: float, max_shift: float) -> torch.Tensor:
    """One random horizontal flip, rotation and shift per clip, applied identically to all its frames.

    ``clip`` is (N, T, C, H, W). Each sample draws a flip (probability ``flip_prob``), an angle
    uniform in +-``max_degrees`` and a shift uniform in +-``max_shift`` of the side along each
    axis (a random crop of a padded frame), composed into one affine matrix. The T*C planes of a
    sample are resampled together by one ``grid_sample`` (bilinear, border padding), so every
    frame moves the same way and frame differences stay motion, not augmentation.
    """
    if flip_prob <= 0 and max_degrees <= 0 and max_shift <= 0:
        return clip
    n, t, c, h, w = clip.shape
    device, dtype = clip.device, clip.dtype
    mirror = torch.where(torch.rand(n, device=device) < flip_prob, -1.0, 1.0).to(dtype)
    angle = (2 * torch.rand(n, device=device, dtype=dtype) - 1) * math.radians(max_degrees)
    # Normalised coordinates span 2 per side, so a shift of a fraction f of the side is 2f.
    shift = (2 * torch.rand(n, 2, device=device, dtype=dtype) - 1) * 2 * max_shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output pixel p samples the input at R(angle) @ diag(mirror, 1) @ p + shift.
    theta = torch.stack(
        (torch.stack((cos * mirror, -sin, shift[:, 0]), dim=1), torch.stack((sin * mirror, cos, shift[:, 1]), dim=1)),
        dim=1,
    )
    planes = clip.reshape(n, t * c, h, w)
    grid = F.affine_grid(theta, list(planes.shape), align_corners=False)
    moved = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return moved.reshape(n, t, c, h, w)


def random_colour_jitter(clip: torch.Tensor, strength: float) -> torch.Tensor:
    """One random brightness, contrast and saturation change per clip, the same for all its frames.

    ``clip`` is (N, T, 3, H, W) RGB in 0..1. Each factor is uniform in [1 - strength, 1 + strength]
    (torchvision's ``ColorJitter(strength, strength, strength)``); contrast blends towards the
    clip's mean grey level and saturation towards each pixel's grey value; the result is clamped to
    0..1 after each step. One draw per clip keeps the onset and apex comparable.
    """
    if strength <= 0:
        return clip
    n = clip.shape[0]
    factors = 1 + strength * (2 * torch.rand(3, n, 1, 1, 1, 1, device=clip.device, dtype=clip.dtype) - 1)
    luma = clip.new_tensor(LUMA).reshape(1, 1, 3, 1, 1)
    clip = (clip * factors[0]).clamp(0, 1)
    grey_level = (clip * luma).sum(dim=2, keepdim=True).mean(dim=(1, 2, 3, 4), keepdim=True)
    clip = (grey_level + factors[1] * (clip - grey_level)).clamp(0, 1)
    grey = (clip * luma).sum(dim=2, keepdim=True)
    return (grey + factors[2] * (clip - grey)).clamp(0, 1)
