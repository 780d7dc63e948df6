"""Synthetic onset/apex pairs with an exactly known flow, for tests and benchmarks.

The texture is a sum of random sinusoids, evaluated analytically at any point, so the
apex frame carries no interpolation error: ``apex(y) = texture(y - g(y))`` for a smooth
displacement field ``g``. The true flow ``f`` on the onset grid (``onset(x) =
apex(x + f(x))``) solves ``f(x) = g(x + f(x))``, found by fixed-point iteration.
"""

from __future__ import annotations

import math

import torch


def _texture(xs: torch.Tensor, ys: torch.Tensor, generator: torch.Generator, waves: int = 24) -> torch.Tensor:
    """Band-limited random texture (wavelengths 5..25 px) in roughly 0.1..0.9."""
    wavelength = 5.0 + 20.0 * torch.rand(waves, generator=generator, dtype=torch.float64)
    angle = 2 * math.pi * torch.rand(waves, generator=generator, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(waves, generator=generator, dtype=torch.float64)
    amp = 0.4 / math.sqrt(waves) * (0.5 + torch.rand(waves, generator=generator, dtype=torch.float64))
    kx = (2 * math.pi / wavelength * torch.cos(angle)).view(-1, 1, 1)
    ky = (2 * math.pi / wavelength * torch.sin(angle)).view(-1, 1, 1)
    waves_sum = (amp.view(-1, 1, 1) * torch.sin(kx * xs + ky * ys + phase.view(-1, 1, 1))).sum(0)
    return (0.5 + waves_sum).clamp(0.0, 1.0)


def smooth_field(size: int, amplitude: float, seed: int):
    """A smooth displacement field g(x, y) -> (gx, gy), at most ``amplitude`` px per axis."""
    generator = torch.Generator().manual_seed(seed + 7919)
    phases = 2 * math.pi * torch.rand(4, generator=generator, dtype=torch.float64)

    def field(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gx = amplitude * torch.sin(2 * math.pi * xs / size + phases[0]) * torch.cos(2 * math.pi * ys / size + phases[1])
        gy = amplitude * torch.cos(2 * math.pi * xs / size + phases[2]) * torch.sin(2 * math.pi * ys / size + phases[3])
        return gx, gy

    return field


def shift_field(dx: float, dy: float):
    """A constant displacement (dx, dy) px."""

    def field(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(xs, dx), torch.full_like(ys, dy)

    return field


def synthetic_pair(size: int, field, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pair: onset ``(H, W)``, apex ``(H, W)`` float32 in 0..1, true flow ``(2, H, W)``."""
    generator = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float64)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    state = generator.get_state()
    onset = _texture(xs, ys, generator)
    generator.set_state(state)  # same texture for the apex
    gx, gy = field(xs, ys)
    apex = _texture(xs - gx, ys - gy, generator)
    fx, fy = gx.clone(), gy.clone()
    for _ in range(50):  # f = g(x + f): a contraction for smooth, small g
        fx, fy = field(xs + fx, ys + fy)
    flow = torch.stack((fx, fy)).to(torch.float32)
    return onset.to(torch.float32), apex.to(torch.float32), flow


def synthetic_batch(size: int, pairs: int, seed: int = 0):
    """``pairs`` pairs alternating sub-pixel shifts and smooth fields (max 2 px).

    Returns onset ``(B, H, W)``, apex ``(B, H, W)`` and true flow ``(B, 2, H, W)``.
    """
    onsets, apexes, flows = [], [], []
    generator = torch.Generator().manual_seed(seed)
    for index in range(pairs):
        if index % 2 == 0:
            dx, dy = (torch.rand(2, generator=generator) * 4.0 - 2.0).tolist()
            field = shift_field(dx, dy)
        else:
            field = smooth_field(size, 1.0 + float(torch.rand(1, generator=generator)), seed + index)
        onset, apex, flow = synthetic_pair(size, field, seed + index)
        onsets.append(onset)
        apexes.append(apex)
        flows.append(flow)
    return torch.stack(onsets), torch.stack(apexes), torch.stack(flows)
