"""The Temporal Interpolation Model (TIM): resample a clip to any number of frames.

Zhou, Zhao & Pietikäinen (CVPR 2011, "Towards a practical lipreading system"), used for
micro-expressions by Pfister et al. (ICCV 2011) and since then by DSTAN and LBP-TOP
pipelines. Their method, for a clip of ``n`` frames ``x_1..x_n`` (vectorised images):

1. Centre the frames on their mean ``mu`` and reduce them by PCA (SVD, ``n - 1`` dimensions:
   centring removes one) to ``Y = S V^T``.
2. Treat the clip as a *path graph* (frame ``i`` linked to ``i + 1``), Laplacian ``L``, and
   find the linear projections ``t_j`` that embed the frames like the graph's eigenvectors:
   the generalised eigenproblem ``Y L Y^T t = e Y Y^T t`` (locality preserving projections).
   The path graph's eigenvectors are known in closed form, ``v_j(i) = sin(j pi i / n +
   pi (n - j) / (2 n))`` for ``j = 1..n-1``, so each frame lies on the continuous curve
   ``F(p)_j = sin(j pi p + pi (n - j) / (2 n))`` at ``p = i / n``, up to scales ``m_j``.
3. Sample the curve at ``N`` evenly spaced ``p`` in ``[1/n, 1]`` (first to last frame) and
   map each point back: ``x(p) = mu + U T^{-T} (m * F(p))``.

**What we compute.** When the ``n - 1`` centred frames are linearly independent (any real
clip: images have far more pixels than a clip has frames), step 2 recovers the Laplacian
eigenvectors exactly, and the three steps collapse into a weighting of the input frames
that does not depend on their content:

    x(p) = sum_i w_i(p) x_i,   w_i(p) = 1/n + (2/n) sum_j v_j(i) F(p)_j

(``Y^T T = Phi M`` with ``Phi^T Phi = n/2 I`` gives ``U T^{-T} M = (2/n) (X - mu) Phi``; the
``Phi`` columns sum to zero, which turns ``mu`` into the ``1/n`` term). This is the
interpolation with the clip's cosine (DCT-II) basis: at ``p = i/n`` it returns ``x_i``
exactly, and between frames it is smooth. :func:`tim_weights` builds the ``(N, n)`` matrix;
``tests/test_tim.py`` checks it against a literal transcription of Zhou's algorithm.

**Regularisation.** The closed form inverts nothing, so it needs none. The original code
inverts ``Y Y^T``, singular when frames repeat (a still face, duplicated frames): Zhou adds
0.01 to the singular values, later copies add random noise; both only approximate, for such
clips, the content-independent weights used here, which stay well defined for any clip.
Values may overshoot the input range slightly between frames (the cosine basis rings at a
sharp change): callers clip.
"""

from __future__ import annotations

import numpy as np

from engines.errors import InputError

__all__ = ["tim_positions", "tim_weights", "tim_interpolate"]


def tim_positions(n_in: int, n_out: int) -> np.ndarray:
    """Where the ``n_out`` output frames sit on the curve: evenly from 1/n (first frame) to 1 (last)."""
    if n_out == 1:
        return np.array([1.0 / n_in])  # as Zhou's code: a single frame is the first
    return np.linspace(1.0 / n_in, 1.0, n_out)


def tim_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` float64 weights: output frame ``k`` is ``sum_i weights[k, i] * input_i``."""
    if n_in < 2:
        raise InputError(f"temporal interpolation needs a clip of at least 2 frames, got {n_in}", column="frames")
    if n_out < 1:
        raise InputError(f"temporal interpolation makes at least 1 frame, asked for {n_out}", column="frames")
    j = np.arange(1, n_in)  # the non-constant eigenvectors of the path graph
    phase = np.pi * (n_in - j) / (2 * n_in)
    frames = np.arange(1, n_in + 1)[:, None] / n_in  # each input frame's place on the curve
    basis_in = np.sin(np.pi * j * frames + phase)  # (n_in, n_in - 1): v_j(i)
    basis_out = np.sin(np.pi * j * tim_positions(n_in, n_out)[:, None] + phase)  # (n_out, n_in - 1): F(p)_j
    return 1.0 / n_in + (2.0 / n_in) * basis_out @ basis_in.T


def tim_interpolate(frames: np.ndarray, n_out: int) -> np.ndarray:
    """``frames`` ``(n, ...)`` resampled to ``(n_out, ...)`` float32 by TIM (see the module doc)."""
    frames = np.asarray(frames)
    if frames.ndim < 1:
        raise InputError("expected a clip of frames (n, ...), got a scalar", column="frames")
    weights = tim_weights(frames.shape[0], n_out)
    flat = frames.reshape(frames.shape[0], -1).astype(np.float64)
    return (weights @ flat).astype(np.float32).reshape(n_out, *frames.shape[1:])
