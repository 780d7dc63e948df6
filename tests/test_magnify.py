"""Eulerian magnification amplifies in-band motion about (1 + alpha) times and leaves the rest."""

from __future__ import annotations

import math

import pytest
import torch

from engines.errors import InputError
from engines.motion.magnify import collapse_pyramid, eulerian_magnify, laplacian_pyramid, temporal_bandpass

FPS, FRAMES, SIDE, WAVELENGTH, AMPLITUDE = 30.0, 60, 64, 32.0, 0.05


def _clip(motion_hz: float) -> torch.Tensor:
    """A vertical-stripe texture shifted horizontally by AMPLITUDE * sin(2 pi f t) px: (1, T, H, W)."""
    t = torch.arange(FRAMES) / FPS
    shift = AMPLITUDE * torch.sin(2 * math.pi * motion_hz * t)
    x = torch.arange(SIDE).float()
    rows = 128 + 60 * torch.sin(2 * math.pi * (x[None, :] - shift[:, None]) / WAVELENGTH)
    return rows[:, None, :].expand(FRAMES, SIDE, SIDE)[None].clone()


def _shift_amplitude(clip: torch.Tensor) -> float:
    """Peak horizontal displacement of the stripes over the clip, from their phase (px)."""
    row = clip[0, :, SIDE // 2, :]
    row = row - row.mean(1, keepdim=True)
    phase = torch.angle((row * torch.exp(-2j * math.pi * torch.arange(SIDE) / WAVELENGTH)).sum(1))
    return float(((phase - phase.mean()) * WAVELENGTH / (2 * math.pi)).abs().max())


def test_pyramid_collapses_back_exactly() -> None:
    x = torch.rand(3, 1, 48, 64) * 255
    torch.testing.assert_close(collapse_pyramid(laplacian_pyramid(x, 3)), x, atol=1e-4, rtol=0)


def test_in_band_motion_is_magnified_and_out_of_band_motion_is_not() -> None:
    alpha = 10.0
    slow, fast = _clip(2.0), _clip(8.0)
    magnified = eulerian_magnify(torch.cat([slow, fast]), FPS, 1.0, 4.0, alpha)
    assert magnified.shape == (2, FRAMES, SIDE, SIDE) and magnified.dtype == torch.float32
    gain_in = _shift_amplitude(magnified[:1]) / _shift_amplitude(slow)
    gain_out = _shift_amplitude(magnified[1:]) / _shift_amplitude(fast)
    assert 0.7 * (1 + alpha) <= gain_in <= 1.05 * (1 + alpha), gain_in
    assert gain_out == pytest.approx(1.0, abs=0.02)
    # alpha 0 is the identity.
    torch.testing.assert_close(eulerian_magnify(slow, FPS, 1.0, 4.0, 0.0), slow, atol=1e-3, rtol=0)


def test_bandpass_keeps_only_the_band() -> None:
    t = torch.arange(FRAMES) / FPS
    signal = (torch.sin(2 * math.pi * 2 * t) + torch.sin(2 * math.pi * 10 * t))[None, :, None]
    kept = temporal_bandpass(signal, FPS, 1.0, 4.0)
    torch.testing.assert_close(kept[0, :, 0], torch.sin(2 * math.pi * 2 * t), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(frames=torch.zeros(2, 8, 8)), r"shape \(B, T, H, W\)"),
    (dict(frames=torch.zeros(1, 1, 64, 64)), "at least 2 frames"),
    (dict(low_hz=5.0, high_hz=20.0), r"band 5.0..20.0 Hz must lie within 0..15.0 Hz"),
    (dict(frames=torch.zeros(1, 4, 16, 16)), "at least 32 px for 4 levels"),
])
def test_bad_arguments_are_named(kwargs, match) -> None:
    arguments = dict(frames=torch.zeros(1, 4, 64, 64), fps=FPS, low_hz=1.0, high_hz=4.0, alpha=5.0) | kwargs
    with pytest.raises(InputError, match=match):
        eulerian_magnify(**arguments)
