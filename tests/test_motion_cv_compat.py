"""The OpenCV-compatible torch ops equal OpenCV's own results."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engines.motion.cv_compat import centered_gradient, median_blur, remap_bicubic, resize_bilinear


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = (rng.random((3, 37, 41)) * 255).astype(np.float32)
    img[0, 5:10, 5:10] = 7.0  # ties inside windows
    return img


@pytest.mark.parametrize("ksize", [3, 5])
def test_median_blur_equals_opencv_exactly(images, ksize):
    ours = median_blur(torch.from_numpy(images), ksize).numpy()
    ref = np.stack([cv2.medianBlur(i, ksize) for i in images])
    np.testing.assert_array_equal(ours, ref)


def test_resize_by_factor_matches_opencv_size_and_values(images):
    ours = resize_bilinear(torch.from_numpy(images), factor=0.8).numpy()
    ref = np.stack([cv2.resize(i, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR) for i in images])
    assert ours.shape == ref.shape == (3, 30, 33)  # rounded, not floored as torch would
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_resize_to_size_matches_opencv(images):
    ours = resize_bilinear(torch.from_numpy(images), size=(50, 52)).numpy()
    ref = np.stack([cv2.resize(i, (52, 50), interpolation=cv2.INTER_LINEAR) for i in images])
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_remap_bicubic_matches_opencv_including_border(images):
    rng = np.random.default_rng(4)
    xs, ys = np.meshgrid(np.arange(41, dtype=np.float32), np.arange(37, dtype=np.float32))
    map_x = (xs + rng.normal(0, 2, xs.shape)).astype(np.float32)
    map_y = (ys + rng.normal(0, 2, ys.shape)).astype(np.float32)
    map_x[0, 0], map_y[3, 3] = -100.0, 500.0  # far outside: zero border
    ours = remap_bicubic(torch.from_numpy(images)[None], torch.from_numpy(map_x)[None], torch.from_numpy(map_y)[None])
    ref = np.stack([cv2.remap(i, map_x, map_y, cv2.INTER_CUBIC) for i in images])
    np.testing.assert_allclose(ours[0].numpy(), ref, atol=2e-3)
    assert ours[0, :, 0, 0].abs().max() == 0


def test_centered_gradient_border_formulas():
    x = torch.tensor([[0.0, 1.0, 4.0, 9.0], [2.0, 3.0, 8.0, 20.0], [5.0, 5.0, 5.0, 5.0]])
    dx, dy = centered_gradient(x)
    assert dx[0].tolist() == [0.5, 2.0, 4.0, 2.5]  # one-sided halves at both ends
    assert dy[:, 0].tolist() == [1.0, 2.5, 1.5]
