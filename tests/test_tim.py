"""The temporal interpolation model: faithful to Zhou et al.'s algorithm, exact on the input frames."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from engines.errors import InputError
from engines.motion.tim import tim_interpolate, tim_positions, tim_weights


def zhou_tim(frames: np.ndarray, n_out: int) -> np.ndarray:
    """A literal transcription of Zhou et al.'s TIM (CVPR 2011): PCA, path-graph LPP, curve, back-projection."""
    x = frames.reshape(len(frames), -1).T.astype(np.float64)  # (m, n): one column per frame
    n = x.shape[1]
    mu = x.mean(axis=1, keepdims=True)
    u, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    u, s, vt = u[:, : n - 1], s[: n - 1], vt[: n - 1]  # centring leaves n - 1 dimensions
    y = np.diag(s) @ vt
    adjacency = np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    laplacian = np.diag(adjacency.sum(axis=1)) - adjacency
    _, t = scipy.linalg.eigh(y @ laplacian @ y.T, y @ y.T)  # ascending eigenvalues
    j = np.arange(1, n)
    phase = np.pi * (n - j) / (2 * n)
    m = (y[:, 0] @ t) / np.sin(np.pi * j / n + phase)  # scales, from the first frame
    out = [u @ np.linalg.solve(t.T, np.sin(np.pi * j * p + phase) * m) + mu[:, 0]
           for p in np.linspace(1 / n, 1, n_out)]
    return np.stack(out).reshape(n_out, *frames.shape[1:])


@pytest.mark.parametrize("n_in,n_out", [(5, 9), (12, 9), (7, 7), (2, 4)])
def test_matches_the_original_algorithm_on_random_clips(n_in, n_out):
    frames = np.random.default_rng(n_in).random((n_in, 6, 5)) * 255
    np.testing.assert_allclose(tim_interpolate(frames, n_out), zhou_tim(frames, n_out), atol=1e-3)


@pytest.mark.parametrize("n", [2, 3, 9, 40])
def test_same_number_of_frames_is_the_identity(n):
    np.testing.assert_allclose(tim_weights(n, n), np.eye(n), atol=1e-10)
    frames = np.random.default_rng(n).integers(0, 256, (n, 4, 4, 3)).astype(np.uint8)
    np.testing.assert_allclose(tim_interpolate(frames, n), frames, atol=1e-3)


def test_first_and_last_frames_are_kept_and_weights_sum_to_one():
    weights = tim_weights(11, 4)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-10)  # a constant clip stays constant
    np.testing.assert_allclose(weights[0], np.eye(11)[0], atol=1e-10)
    np.testing.assert_allclose(weights[-1], np.eye(11)[-1], atol=1e-10)
    np.testing.assert_allclose(tim_positions(11, 4), [3 / 33, 13 / 33, 23 / 33, 1.0])  # frames 1, 13/3, 23/3, 11


def test_linearly_brightening_clip_is_interpolated_smoothly():
    n_in, n_out = 30, 9
    levels = np.linspace(20.0, 200.0, n_in)
    clip = levels[:, None, None] * np.ones((n_in, 3, 3))
    out = tim_interpolate(clip, n_out)[:, 0, 0]
    assert np.all(np.diff(out) > 0)
    np.testing.assert_allclose(out, np.linspace(20.0, 200.0, n_out), atol=0.1)  # cosine basis: near-linear
    up = tim_interpolate(clip, 100)[:, 0, 0]
    np.testing.assert_allclose(up, np.linspace(20.0, 200.0, 100), atol=0.5)


def test_shapes_and_dtype():
    out = tim_interpolate(np.zeros((6, 8, 7, 3), dtype=np.uint8), 9)
    assert out.shape == (9, 8, 7, 3) and out.dtype == np.float32
    assert tim_weights(6, 9).shape == (9, 6)


@pytest.mark.parametrize("n_in", [0, 1])
def test_too_short_clips_are_refused(n_in):
    with pytest.raises(InputError, match="at least 2 frames"):
        tim_interpolate(np.zeros((n_in, 4, 4)), 9)


def test_asking_for_no_frames_is_refused():
    with pytest.raises(InputError, match="at least 1 frame"):
        tim_weights(5, 0)
