"""Optical strain as MEAN/SOFTNet compute it: analytic values and their border fill."""

from __future__ import annotations

import numpy as np
import torch

from engines.motion import optical_strain


def grid(h=9, w=11):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return xs, ys


def test_translation_has_zero_strain():
    flow = torch.stack((torch.full((9, 11), 1.7), torch.full((9, 11), -0.4)))[None]
    assert optical_strain(flow).abs().max() == 0


def test_linear_field_gives_the_analytic_strain_everywhere():
    xs, ys = grid()
    a, b, c, d = 0.03, -0.02, 0.05, 0.01  # u = a x + b y, v = c x + d y
    flow = torch.stack((a * xs + b * ys, c * xs + d * ys))[None]
    expected = np.sqrt(a**2 + d**2 + 0.5 * (b + c) ** 2)
    strain = optical_strain(flow)
    assert strain.shape == (1, 1, 9, 11)
    np.testing.assert_allclose(strain.numpy(), expected, rtol=1e-5)


def test_matches_mean_formula_with_forward_filled_border():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 6, 7))
    # MEAN: u - shift(-1) differences, NaN in the last column/row, then ffill(1).ffill(0).
    u_x = u[:-1, :-1] - u[:-1, 1:]
    v_y = v[:-1, :-1] - v[1:, :-1]
    u_y = u[:-1, :-1] - u[1:, :-1]
    v_x = v[:-1, :-1] - v[:-1, 1:]
    inner = np.sqrt(u_x**2 + v_y**2 + 0.5 * (u_y + v_x) ** 2)
    expected = np.empty((6, 7))
    expected[:-1, :-1] = inner
    expected[:-1, -1] = inner[:, -1]
    expected[-1] = expected[-2]
    ours = optical_strain(torch.from_numpy(np.stack((u, v))[None]).float())[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
