"""The tap-major ``remap_bicubic`` is bit-identical to the broadcast version it replaced.

TV-L1 is checked against OpenCV to a tolerance, but its solver is iterative: a warp that
differs in the last bit changes the flow, so the faster warp must give exactly the same
floats as the old one, including the order of its 16 additions and the zero border.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engines.motion import cv_compat
from engines.motion.cv_compat import remap_bicubic


def _reference_cubic_weights(frac: torch.Tensor) -> torch.Tensor:
    a = -0.75
    x1 = frac + 1.0
    w0 = ((a * x1 - 5.0 * a) * x1 + 8.0 * a) * x1 - 4.0 * a
    w1 = ((a + 2.0) * frac - (a + 3.0)) * frac * frac + 1.0
    r = 1.0 - frac
    w2 = ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0
    w3 = 1.0 - w0 - w1 - w2
    return torch.stack((w0, w1, w2, w3), dim=-1)


def _reference_remap_bicubic(images: torch.Tensor, map_x: torch.Tensor, map_y: torch.Tensor) -> torch.Tensor:
    """Frozen copy of the previous implementation (checked against ``cv2.remap`` elsewhere)."""
    batch, channels, height, width = images.shape
    pad = 4
    padded = F.pad(images, (pad, pad, pad, pad))
    padded_w = width + 2 * pad
    flat = padded.reshape(batch, channels, -1)

    base_x = torch.floor(map_x)
    base_y = torch.floor(map_y)
    wx = _reference_cubic_weights(map_x - base_x)  # (B, H, W, 4)
    wy = _reference_cubic_weights(map_y - base_y)
    ix = base_x.clamp_(-3, width + 1).to(torch.int64) + (pad - 1)
    iy = base_y.clamp_(-3, height + 1).to(torch.int64) + (pad - 1)
    taps = torch.arange(4, device=images.device)
    cols = ix.unsqueeze(-1) + taps  # (B, H, W, 4)
    rows = iy.unsqueeze(-1) + taps
    index = (rows.unsqueeze(-1) * padded_w + cols.unsqueeze(-2)).reshape(batch, 1, -1)  # (B,1,H*W*16)
    values = torch.gather(flat, 2, index.expand(batch, channels, -1))
    weights = (wy.unsqueeze(-1) * wx.unsqueeze(-2)).reshape(batch, 1, -1, 16)
    values = values.reshape(batch, channels, -1, 16)
    return (values * weights).sum(-1).reshape(batch, channels, height, width)


def _assert_same_bits(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal floats including the sign of zeros (``torch.equal`` alone takes -0 == +0)."""
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    as_int = torch.int32 if ours.dtype == torch.float32 else torch.int64
    assert torch.equal(ours.view(as_int), ref.view(as_int))


def _flow_maps(batch: int, height: int, width: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity grid plus random displacements, with points placed on and past the border."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width)
    map_x = xs + spread * torch.randn(batch, height, width, generator=gen)
    map_y = ys + spread * torch.randn(batch, height, width, generator=gen)
    map_x[:, 0, 0], map_y[:, 0, 0] = -100.0, 3.5  # far left: only zeros
    map_x[:, 1, 1], map_y[:, 1, 1] = 2.25, 500.0  # far below
    map_x[:, 2, 2], map_y[:, 2, 2] = -1.5, -1.5  # outside, but its last tap is pixel (0, 0)
    map_x[:, 3, 3], map_y[:, 3, 3] = -3.5, height + 1.0  # clamped corners: only zeros
    map_x[:, 4, 4], map_y[:, 4, 4] = width + 2.5, -4.0
    map_x[:, -1, -1], map_y[:, -1, -1] = -0.5, height - 1.0  # negative fraction, integer row
    map_x[:, -1, 0], map_y[:, -1, 0] = 7.0, 4.0  # exact pixel: fraction 0
    return map_x, map_y


def _images(batch: int, channels: int, height: int, width: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, channels, height, width, generator=gen, dtype=torch.float64) * 255
    images[:, :, ::5] -= 127.5  # mixed signs, as the gradient channels have
    return images.to(dtype)


@pytest.mark.parametrize(
    ("batch", "channels", "height", "width", "spread"),
    [  # the first three are summed one tap at a time, the others all taps at once
        (1, 3, 112, 112, 2.0),
        (16, 3, 112, 112, 1.0),
        (4, 3, 37, 53, 3.0),
        (3, 1, 5, 7, 4.0),  # smaller than the cubic support plus border
        (2, 4, 20, 9, 40.0),  # most points outside the image
    ],
)
def test_remap_bicubic_is_bit_identical_to_the_previous_version(batch, channels, height, width, spread):
    images = _images(batch, channels, height, width, seed=height * width)
    map_x, map_y = _flow_maps(batch, height, width, spread, seed=batch + channels)
    ours = remap_bicubic(images, map_x.clone(), map_y.clone())
    ref = _reference_remap_bicubic(images, map_x.clone(), map_y.clone())
    assert ours.shape == (batch, channels, height, width)
    _assert_same_bits(ours, ref)
    for far in (0, 1, 3, 4):
        assert ours[:, :, far, far].abs().max() == 0  # constant-zero border
    assert ours[:, :, 2, 2].abs().min() > 0


def test_remap_bicubic_with_warp_terms_maps_is_bit_identical():
    """The call TV-L1 makes: apex image and gradients, maps ``grid + flow`` (flow with gamma)."""
    from engines.motion.tvl1 import apex_with_gradient

    apex = _images(4, 1, 48, 40, seed=7)[:, 0]
    stack = apex_with_gradient(apex)
    gen = torch.Generator().manual_seed(8)
    flow = 1.5 * torch.randn(4, 3, 48, 40, generator=gen)
    xs = torch.arange(40, dtype=torch.float32).view(1, 1, 40)
    ys = torch.arange(48, dtype=torch.float32).view(1, 48, 1)
    ours = remap_bicubic(stack, xs + flow[:, 0], ys + flow[:, 1])
    _assert_same_bits(ours, _reference_remap_bicubic(stack, xs + flow[:, 0], ys + flow[:, 1]))


def test_remap_bicubic_keeps_the_sign_of_zero_sums():
    """Whole-pixel maps over -0 pixels: all 16 products are -0, and ``.sum`` gave +0."""
    images = _images(2, 3, 48, 60, seed=9)  # above _TAPS_AT_ONCE_MAX: the tap-at-a-time sum
    images[:, :, 4:12, 3:9] = -0.0
    ys = torch.arange(48, dtype=torch.float32).view(1, 48, 1).expand(2, 48, 60)
    xs = torch.arange(60, dtype=torch.float32).view(1, 1, 60).expand(2, 48, 60)
    ref = _reference_remap_bicubic(images, xs.clone(), ys.clone())
    assert ref[:, :, 6, 5].abs().max() == 0 and not ref[:, :, 6, 5].signbit().any()
    _assert_same_bits(remap_bicubic(images, xs.clone(), ys.clone()), ref)


@pytest.mark.parametrize(("image_dtype", "map_dtype"), [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_remap_bicubic_other_dtypes_match_the_previous_version(image_dtype, map_dtype):
    """Outside float32 the replayed addition order does not apply; torch's own sum is used."""
    images = _images(2, 3, 21, 18, seed=5, dtype=image_dtype)
    map_x, map_y = (m.to(map_dtype) for m in _flow_maps(2, 21, 18, 2.0, seed=6))
    ours = remap_bicubic(images, map_x.clone(), map_y.clone())
    ref = _reference_remap_bicubic(images, map_x.clone(), map_y.clone())
    assert ref.dtype == torch.float64
    _assert_same_bits(ours, ref)


def test_sum_order_probe_finds_this_cpus_vector_width():
    """The fast path is taken: torch sums with 16 float lanes under AVX512 and 8 otherwise."""
    expected = 16 if torch.backends.cpu.get_cpu_capability() == "AVX512" else 8
    assert cv_compat._cpu_sum_lanes() == expected
