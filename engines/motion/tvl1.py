"""Batched TV-L1 optical flow in torch, numerically following OpenCV's DualTVL1.

Zach, Pock and Bischof (2007), in the form of Sánchez Pérez, Meinhardt-Llopis and
Facciolo, "TV-L1 optical flow estimation" (IPOL 2013), as implemented in OpenCV
(``opencv_contrib/modules/optflow/src/tvl1flow.cpp``), step for step:

* pyramid: ``cv2.resize`` INTER_LINEAR by ``scale_step`` until a side would drop below
  16 px; flow upsampled by INTER_LINEAR to the finer size and multiplied by
  ``1/scale_step``;
* per scale: centred gradient of the apex image, dual variables reset to zero;
* per warp: bicubic remap (border 0) of the apex image and its gradient by the current
  flow, linearised data term;
* per outer iteration: 5x5 (``median_filtering``) median of the flow;
* per inner iteration: thresholding step (v), primal step (u = v + theta div p),
  dual step (p) with forward differences; stop a pair once the summed squared flow
  update is at most ``epsilon^2 * H * W`` (OpenCV's test, per pair).

Why our own solver: it runs many onset/apex pairs as one batch, on CPU or CUDA, which
OpenCV's single-pair CPU solver cannot. Here it runs eagerly and drops converged pairs; the
fast CPU path is ``tvl1_compiled.CompiledTVL1`` (the step fused by ``torch.compile``, bit for
bit the flows of ``tvl1_flow(..., portable=True)``). On a GPU, ``sync_free`` freezes converged pairs instead, so the solve
never waits for the device, and ``tvl1_graph.TVL1Runner`` replays it as CUDA graphs with
compiled kernels (docs/motion.md).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engines.errors import InputError
from engines.motion.cv_compat import (
    centered_gradient,
    median_blur,
    opencv_resized_length,
    remap_bicubic,
    resize_bilinear,
)
from engines.motion.frames import as_pair_batch

log = logging.getLogger(__name__)

_MIN_PYRAMID_SIDE = 16  # OpenCV stops building the pyramid below this side length
_FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV DualTVL1's parameters, with its defaults (snake_case names)."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5

    def __post_init__(self) -> None:
        positive = ("tau", "lambda_", "theta", "nscales", "warps", "inner_iterations", "outer_iterations")
        for name in positive:
            if not getattr(self, name) > 0:
                raise InputError(f"must be > 0, got {getattr(self, name)!r}", column=name)
        if not self.epsilon >= 0:
            raise InputError(f"must be >= 0, got {self.epsilon!r}", column="epsilon")
        if not 0 < self.scale_step < 1:
            raise InputError(f"must be in (0, 1), got {self.scale_step!r}", column="scale_step")
        if not self.gamma >= 0:
            raise InputError(f"must be >= 0, got {self.gamma!r}", column="gamma")
        if self.median_filtering > 1 and self.median_filtering not in (3, 5):
            raise InputError(
                f"must be <= 1 (off), 3 or 5 (OpenCV's float median), got {self.median_filtering!r}",
                column="median_filtering",
            )

    @classmethod
    def from_kwargs(cls, **params) -> TVL1Params:
        """Build from keyword arguments, naming an unknown one in the error."""
        known = {f.name for f in dataclasses.fields(cls)}
        for name in params:
            if name not in known:
                raise InputError(f"unknown TV-L1 parameter; known: {', '.join(sorted(known))}", column=name)
        return cls(**params)

    def opencv_args(self) -> tuple:
        """Positional arguments of ``cv2.optflow.DualTVL1OpticalFlow_create``."""
        return (
            self.tau,
            self.lambda_,
            self.theta,
            self.nscales,
            self.warps,
            self.epsilon,
            self.inner_iterations,
            self.outer_iterations,
            self.scale_step,
            self.gamma,
            self.median_filtering,
            False,  # useInitialFlow
        )


def pyramid_sizes(height: int, width: int, params: TVL1Params) -> list[tuple[int, int]]:
    """Image sizes of OpenCV's pyramid, finest first (it may hold fewer than nscales)."""
    sizes = [(height, width)]
    for _ in range(1, params.nscales):
        h = opencv_resized_length(sizes[-1][0], params.scale_step)
        w = opencv_resized_length(sizes[-1][1], params.scale_step)
        if h < _MIN_PYRAMID_SIDE or w < _MIN_PYRAMID_SIDE:
            break
        sizes.append((h, w))
    return sizes


# ---------------------------------------------------------------------------------------
# The primal-dual iteration. State per pair: flow u (B, C, H, W) with C = 2 (u1, u2) or 3
# when gamma > 0 (u3, the illumination term); duals px, py (B, C, H, W).


def _divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Backward differences with p[-1] = 0, as OpenCV."""
    return px - F.pad(px[..., :, :-1], (1, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))


def _forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, zero in the last column / row, as OpenCV."""
    return (F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1)), F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1)))


def _threshold_step(u, coef, rho_c, inv_grad, l_t: float) -> torch.Tensor:
    """OpenCV's three-case thresholding rule as one clamp: d = clamp(-rho/|grad I1w|^2, -l_t, l_t)."""
    rho = rho_c + (coef * u).sum(1)
    return (rho * inv_grad).neg_().clamp_(-l_t, l_t).unsqueeze(1)


def gradient_norm(grad_x: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """``|grad|`` of the dual step: ``sqrt(x*x + y*y)`` in float32, the root correctly rounded.

    Within an ulp of OpenCV's ``hypot``, and the same bits eager or compiled: eager
    ``torch.sqrt`` of float32 is not correctly rounded on the CPU (SLEEF, ~15% of values off by
    an ulp) while inductor's is, so the root is taken in float64 (exact for a float32
    argument once rounded back). Inductor's vectorised ``hypot`` would cost more than the rest
    of the fused step.
    """
    return torch.sqrt((grad_x * grad_x + grad_y * grad_y).double()).float()


def primal_dual_step(
    u: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    coef: torch.Tensor,
    rho_c: torch.Tensor,
    inv_grad: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One inner iteration for a batch; returns (u, px, py, summed squared update per pair).

    ``coef`` holds (I1wx, I1wy[, gamma]) per pixel; the thresholding step is OpenCV's
    three-case rule written as one clamp: d = clamp(-rho/|grad I1w|^2, -l_t, l_t).
    Divergence: backward differences with p[-1] = 0; gradient: forward differences, zero
    in the last column / row (both as OpenCV).
    """
    v = torch.addcmul(u, coef, _threshold_step(u, coef, rho_c, inv_grad, l_t))
    u_new = v.add_(_divergence(px, py), alpha=theta)
    change = u_new - u
    error = (change * change).sum(dim=(1, 2, 3))
    grad_x, grad_y = _forward_gradient(u_new)
    denom = torch.hypot(grad_x, grad_y).mul_(taut).add_(1.0)
    px = px.add(grad_x, alpha=taut).div_(denom)
    py = py.add(grad_y, alpha=taut).div_(denom)
    return u_new, px, py, error


def portable_primal_dual_step(
    u: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    coef: torch.Tensor,
    rho_c: torch.Tensor,
    inv_grad: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`primal_dual_step` written so that ``torch.compile`` computes bit for bit what
    eager torch computes (the numerics of ``tvl1_compiled.CompiledTVL1``): no
    ``alpha=`` / ``addcmul`` (ATen fuses those into FMAs, inductor does not), and the
    summed update accumulated in float64, so that a different summation order cannot move a
    pair's stop (it could only if a sum lay within ~1e-12 of the threshold). Eagerly it is
    12-19 % slower than :func:`primal_dual_step` (the float64 root and sum), hence not the default;
    the two agree with OpenCV equally (tests/test_tvl1_cpu_fast.py).
    """
    v = (coef * _threshold_step(u, coef, rho_c, inv_grad, l_t)).add_(u)
    u_new = v.add_(_divergence(px, py).mul_(theta))
    error = (u_new - u).square_().sum(dim=(1, 2, 3), dtype=torch.float64)
    grad_x, grad_y = _forward_gradient(u_new)
    denom = gradient_norm(grad_x, grad_y).mul_(taut).add_(1.0)
    px = grad_x.mul_(taut).add_(px).div_(denom)
    py = grad_y.mul_(taut).add_(py).div_(denom)
    return u_new, px, py, error


def _masked(step):
    """The masked form of an inner step: converged pairs are frozen instead of dropped."""

    def masked_step(
        u: torch.Tensor,
        px: torch.Tensor,
        py: torch.Tensor,
        active: torch.Tensor,
        coef: torch.Tensor,
        rho_c: torch.Tensor,
        inv_grad: torch.Tensor,
        l_t: float,
        theta: float,
        taut: float,
        scaled_epsilon: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One inner iteration that freezes converged pairs instead of dropping them.

        ``active`` (B,) bool marks the pairs still iterating; a pair that has converged keeps its
        state, which is exactly OpenCV's per-pair stop. No value leaves the device, so a whole
        solve can be captured as one CUDA graph (and this function fused by ``torch.compile``).
        """
        u_new, px_new, py_new, error = step(u, px, py, coef, rho_c, inv_grad, l_t, theta, taut)
        keep = active.view(-1, 1, 1, 1)
        return (
            torch.where(keep, u_new, u),
            torch.where(keep, px_new, px),
            torch.where(keep, py_new, py),
            active & (error > scaled_epsilon),
        )

    masked_step.__name__ = masked_step.__qualname__ = f"masked_{step.__name__}"
    return masked_step


masked_primal_dual_step = _masked(primal_dual_step)
masked_portable_primal_dual_step = _masked(portable_primal_dual_step)


class _WorkingSet:
    """The pairs still iterating in one warp; a pair leaves once it has converged.

    ``state`` (u, px, py) evolves; ``fixed`` (coef, rho_c, inv_grad) is per warp. Dropping
    converged pairs keeps the per-pair stopping rule of OpenCV and saves their work.
    """

    def __init__(self, state: list[torch.Tensor], fixed: list[torch.Tensor]):
        self.index: torch.Tensor | None = None  # None = every pair
        self.state = [t.clone() for t in state]
        self.fixed = fixed

    def keep(self, mask: torch.Tensor, targets: list[torch.Tensor]) -> bool:
        """Write the state back into ``targets``, then keep only the pairs where ``mask``."""
        self.write_back(targets)
        rows = mask.nonzero().squeeze(1)
        if rows.numel() == 0:
            return False
        self.index = rows if self.index is None else self.index[rows]
        self.state = [t[rows] for t in self.state]
        self.fixed = [t[rows] for t in self.fixed]
        return True

    def write_back(self, targets: list[torch.Tensor]) -> None:
        for target, value in zip(targets, self.state):
            if self.index is None:
                target.copy_(value)
            else:
                target[self.index] = value


def stop_threshold(params: TVL1Params, height: int, width: int) -> float:
    """OpenCV's per-pair stopping threshold on the summed squared update: eps^2 * H * W."""
    return float(np.float32(params.epsilon * params.epsilon * height * width))


def apex_with_gradient(i1: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)``: the apex image and its centred x and y gradients (warped together)."""
    i1x, i1y = centered_gradient(i1)
    return torch.stack((i1, i1x, i1y), dim=1)


def warp_terms(
    i0: torch.Tensor, apex_stack: torch.Tensor, u: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One warp's linearised data term: (coef, rho_c, 1/|grad I1w|^2) for the current flow ``u``.

    ``coef`` is (I1wx, I1wy[, gamma]) per pixel, ``rho_c`` the residual at zero update; the
    inverse squared gradient is 0 where the gradient vanishes (OpenCV's guard).
    """
    height, width = u.shape[-2:]
    ys = torch.arange(height, dtype=u.dtype, device=u.device).view(1, height, 1)
    xs = torch.arange(width, dtype=u.dtype, device=u.device).view(1, 1, width)
    warped = remap_bicubic(apex_stack, xs + u[:, 0], ys + u[:, 1])
    i1w, i1wx, i1wy = warped.unbind(1)
    grad_sq = i1wx * i1wx + i1wy * i1wy
    rho_c = i1w - i1wx * u[:, 0] - i1wy * u[:, 1] - i0
    coef_parts = [i1wx, i1wy]
    if u.shape[1] == 3:
        coef_parts.append(torch.full_like(i1wx, gamma))
    coef = torch.stack(coef_parts, dim=1)
    inv_grad = torch.where(grad_sq > _FLT_EPSILON, 1.0 / grad_sq, torch.zeros_like(grad_sq))
    return coef, rho_c, inv_grad


def masked_median(u: torch.Tensor, active: torch.Tensor, ksize: int) -> torch.Tensor:
    """``u`` with the displacement planes median-filtered for the active pairs only."""
    filtered = median_blur(u[:, :2], ksize)
    out = u.clone()
    out[:, :2] = torch.where(active.view(-1, 1, 1, 1), filtered, u[:, :2])
    return out


def _solve_scale(
    i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, params: TVL1Params, masked_step=None, step=primal_dual_step
) -> torch.Tensor:
    """OpenCV's ``procOneScale`` for a batch; ``u`` (B, C, H, W) is refined in place.

    With ``masked_step`` (``masked_primal_dual_step`` or a compiled copy of it) converged pairs
    are frozen rather than dropped, and the solve never waits for the device.
    """
    batch, channels, height, width = u.shape
    scaled_epsilon = stop_threshold(params, height, width)
    l_t = params.lambda_ * params.theta
    taut = params.tau / params.theta
    apex_stack = apex_with_gradient(i1)
    px = u.new_zeros(batch, channels, height, width)
    py = u.new_zeros(batch, channels, height, width)

    for _ in range(params.warps):
        coef, rho_c, inv_grad = warp_terms(i0, apex_stack, u, params.gamma)
        if masked_step is not None:
            _iterate_warp_masked(u, px, py, (coef, rho_c, inv_grad), params, scaled_epsilon, masked_step)
            continue
        work = _WorkingSet([u, px, py], [coef, rho_c, inv_grad])
        running = True
        for _ in range(params.outer_iterations):
            if params.median_filtering > 1:
                flow = work.state[0]
                flow[:, :2] = median_blur(flow[:, :2], params.median_filtering)
            for _ in range(params.inner_iterations):
                *work.state, error = step(*work.state, *work.fixed, l_t, params.theta, taut)
                unfinished = error > scaled_epsilon
                if not bool(unfinished.all()):
                    running = work.keep(unfinished, [u, px, py])
                    if not running:
                        break
            if not running:
                break
        if running:
            work.write_back([u, px, py])
    return u


def _iterate_warp_masked(
    u: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    fixed: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    params: TVL1Params,
    scaled_epsilon: float,
    masked_step,
) -> None:
    """The outer/inner iterations of one warp with every pair in the batch (state in place)."""
    l_t = params.lambda_ * params.theta
    taut = params.tau / params.theta
    active = torch.ones(u.shape[0], dtype=torch.bool, device=u.device)
    state_u, state_px, state_py = u, px, py
    for _ in range(params.outer_iterations):
        if params.median_filtering > 1:
            state_u = masked_median(state_u, active, params.median_filtering)
        for _ in range(params.inner_iterations):
            state_u, state_px, state_py, active = masked_step(
                state_u, state_px, state_py, active, *fixed, l_t, params.theta, taut, scaled_epsilon
            )
    u.copy_(state_u)
    px.copy_(state_px)
    py.copy_(state_py)


def tvl1_flow(
    onset,
    apex,
    params: TVL1Params | None = None,
    *,
    sync_free: bool | None = None,
    portable: bool = False,
    **param_overrides,
) -> torch.Tensor:
    """TV-L1 flow from onset to apex for a batch of pairs: ``(B, 2, H, W)`` float32.

    Frames follow ``engines.motion.frames`` (uint8 0..255 or float 0..1); the result is
    on the frames' device.
    Parameters: a ``TVL1Params`` or OpenCV's names as keywords (``tau=``, ``warps=`` ...).
    ``sync_free`` (default: on for CUDA tensors) freezes converged pairs instead of dropping
    them, so the host never waits for the device mid-solve; the flows are the same.
    ``portable`` uses :func:`portable_primal_dual_step`, the numerics whose flows
    ``tvl1_compiled.CompiledTVL1`` reproduces bit for bit (slower eagerly).
    """
    if params is None:
        params = TVL1Params.from_kwargs(**param_overrides)
    elif param_overrides:
        params = dataclasses.replace(params, **param_overrides)
    i0, i1 = as_pair_batch(onset, apex)
    if sync_free is None:
        sync_free = i0.device.type == "cuda"
    step = portable_primal_dual_step if portable else primal_dual_step
    masked = masked_portable_primal_dual_step if portable else masked_primal_dual_step
    return solve_tvl1(i0, i1, params, masked if sync_free else None, step)


def solve_tvl1(
    i0: torch.Tensor, i1: torch.Tensor, params: TVL1Params, masked_step=None, step=primal_dual_step
) -> torch.Tensor:
    """The solver on checked ``(B, H, W)`` float32 0..255 frames (see :func:`tvl1_flow`).

    ``masked_step=None`` drops converged pairs (cheapest on CPU), iterating with ``step``; a
    masked step keeps the whole solve on the device (what a CUDA graph needs).
    """
    batch, height, width = i0.shape
    sizes = pyramid_sizes(height, width, params)
    onsets, apexes = [i0], [i1]
    for _ in sizes[1:]:
        onsets.append(resize_bilinear(onsets[-1], factor=params.scale_step))
        apexes.append(resize_bilinear(apexes[-1], factor=params.scale_step))
    channels = 3 if params.gamma != 0 else 2
    coarse_h, coarse_w = sizes[-1]
    u = i0.new_zeros(batch, channels, coarse_h, coarse_w)
    with torch.no_grad():
        for level in range(len(sizes) - 1, -1, -1):
            u = _solve_scale(onsets[level], apexes[level], u, params, masked_step, step)
            if level == 0:
                break
            u = resize_bilinear(u, size=sizes[level - 1])
            u[:, :2] *= 1.0 / params.scale_step  # u3 (illumination) is not a displacement
    log.debug("tvl1: %d pairs %dx%d, %d scales", batch, height, width, len(sizes))
    return u[:, :2].contiguous()
