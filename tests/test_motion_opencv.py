"""OpenCV wrappers and frame difference share the torch kernels' conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.errors import InputError
from engines.motion import compute_flow, frame_difference
from engines.motion.synthetic import shift_field, synthetic_pair


@pytest.fixture(scope="module")
def shifted():
    onset, apex, truth = synthetic_pair(64, shift_field(1.0, -0.5), seed=9)
    return onset[None], apex[None], truth


@pytest.mark.parametrize("method", ["opencv-tvl1", "opencv-farneback", "opencv-dis"])
def test_wrappers_recover_a_shift_in_the_shared_convention(shifted, method):
    onset, apex, _ = shifted
    flow = compute_flow(method, onset, apex)
    assert flow.shape == (1, 2, 64, 64) and flow.dtype == torch.float32
    mean_uv = flow[0, :, 8:-8, 8:-8].mean(dim=(1, 2))
    assert torch.allclose(mean_uv, torch.tensor([1.0, -0.5]), atol=0.2), mean_uv


def test_numpy_and_torch_inputs_agree(shifted):
    onset, apex, _ = shifted
    from_numpy = compute_flow("opencv-dis", onset.numpy(), apex.numpy())
    torch.testing.assert_close(from_numpy, compute_flow("opencv-dis", onset, apex))


def test_unknown_parameters_are_named(shifted):
    onset, apex, _ = shifted
    with pytest.raises(InputError, match="winsz"):
        compute_flow("opencv-farneback", onset, apex, winsz=3)
    with pytest.raises(InputError, match="preset"):
        compute_flow("opencv-dis", onset, apex, preset="slow")


def test_frame_difference_is_apex_minus_onset_in_unit_scale():
    onset = np.array([[[0, 100], [255, 50]]], dtype=np.uint8)
    apex = np.array([[[255, 100], [0, 51]]], dtype=np.uint8)
    diff = frame_difference(onset, apex)
    assert diff.shape == (1, 1, 2, 2)
    torch.testing.assert_close(diff[0, 0], torch.tensor([[1.0, 0.0], [-1.0, 1 / 255]]))
    torch.testing.assert_close(frame_difference(onset / 255.0, apex / 255.0), diff)
