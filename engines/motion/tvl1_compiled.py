"""TV-L1 on the CPU with kernels fused by ``torch.compile``: a faster CPU path for ``tvl1_flow``.

The eager solver is bound by memory traffic and dispatch on a CPU: every inner iteration is
a dozen small tensor operations, each reading and writing whole planes, and the bicubic warp
and the median filter are tens more. Inductor fuses each of these groups into a few C++
loops. What makes compilation pay off is keeping the per-pair stopping rule out of the
compiled code's way:

* converged pairs are frozen by the masked step (``torch.where``), which is
  exactly OpenCV's per-pair stop, so a compiled chunk of ``check_every`` inner iterations
  runs without looking at Python;
* the host reads the stopping flags only between chunks: once no pair of the batch is
  active, the rest of the warp (its remaining inner and outer iterations) is skipped, as
  OpenCV skips it.

Compiled: the pyramid, the flow upsampling, the median filter and the inner iterations; every
one of them gives the eager solver's bits with ``portable=True`` (``portable_primal_dual_step`` is
written for that; the default step is within OpenCV's tolerance of it, not bit-identical). The
bicubic warp stays eager: inductor sums its 16 taps in another order than ATen (last-bit
differences that grow into visible ones over the iterations), and compiled it was no faster.

Compilation happens per pyramid level shape and batch size the first time they are seen:
1.5-3 minutes on one core for OpenCV's defaults at 112x112 and one batch size. Inductor caches
the generated code on disk, so a later process pays only the tracing (~25 s). A live stream must never compile mid-stream: call :meth:`CompiledTVL1.warm_up`
at start-up with the frame size and batch sizes it will see.
"""

from __future__ import annotations

import dataclasses

import torch

from engines.motion.cv_compat import resize_bilinear
from engines.motion.frames import as_pair_batch
from engines.motion.tvl1 import (
    TVL1Params,
    apex_with_gradient,
    masked_median,
    masked_portable_primal_dual_step,
    pyramid_sizes,
    stop_threshold,
    warp_terms,
)

__all__ = ["CompiledTVL1"]


def _inner_chunk(u, px, py, active, coef, rho_c, inv_grad, l_t: float, theta: float, taut: float,
                 scaled_epsilon: float, steps: int):
    """``steps`` masked inner iterations in a row (one compiled graph when compiled)."""
    for _ in range(steps):
        u, px, py, active = masked_portable_primal_dual_step(
            u, px, py, active, coef, rho_c, inv_grad, l_t, theta, taut, scaled_epsilon
        )
    return u, px, py, active


def _level_inputs(i0, i1, scale_step: float, levels: int):
    """The onset and apex pyramids (finest first) and each level's apex-with-gradient stack."""
    onsets, apexes = [i0], [i1]
    for _ in range(levels - 1):
        onsets.append(resize_bilinear(onsets[-1], factor=scale_step))
        apexes.append(resize_bilinear(apexes[-1], factor=scale_step))
    return onsets, [apex_with_gradient(a) for a in apexes]


def _upsample_flow(u, size: tuple[int, int], scale_step: float):
    """The coarser level's flow on the finer grid, displacements scaled by ``1/scale_step``."""
    up = resize_bilinear(u, size=size)
    scaled = up[:, :2] * (1.0 / scale_step)
    return scaled if u.shape[1] == 2 else torch.cat((scaled, up[:, 2:]), dim=1)


class CompiledTVL1:
    """TV-L1 for batches of pairs on the CPU with compiled kernels; the flows of ``tvl1_flow(portable=True)``.

    ``solver(onset, apex)`` takes frames as ``tvl1_flow`` does and returns ``(B, 2, H, W)``.
    ``check_every`` inner iterations run between two looks at the stopping flags (it does not
    change the flows, only how much work a converged batch wastes). ``compile=False`` runs the
    very same code eagerly (what the tests check against ``tvl1_flow(portable=True)``).
    """

    def __init__(
        self,
        params: TVL1Params | None = None,
        *,
        check_every: int = 10,
        compile: bool = True,
        **param_overrides,
    ) -> None:
        params = params or TVL1Params()
        self.params = dataclasses.replace(params, **param_overrides) if param_overrides else params
        self.check_every = max(1, min(check_every, self.params.inner_iterations))
        self.compiled = compile
        self.chunks_run = 0  # compiled inner chunks run by the last call (early exit shows here)
        if compile:
            # Each level shape, batch size and chunk length compiles once; the default limit
            # (8 per function) would silently fall back to eager after a few of them.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
            options = dict(fullgraph=True, dynamic=False)
            self._chunk = torch.compile(_inner_chunk, **options)
            self._median = torch.compile(masked_median, **options)
            self._inputs = torch.compile(_level_inputs, **options)
            self._upsample = torch.compile(_upsample_flow, **options)
        else:
            self._chunk, self._median = _inner_chunk, masked_median
            self._inputs, self._upsample = _level_inputs, _upsample_flow

    def warm_up(self, height: int, width: int, batches: tuple[int, ...] = (1,)) -> None:
        """Compile for these frame sizes and batch sizes now (at start-up, not mid-stream)."""
        for batch in batches:
            frames = torch.rand(batch, height, width, generator=torch.Generator().manual_seed(0))
            self(frames, frames.roll(1, dims=-1))

    def __call__(self, onset, apex) -> torch.Tensor:
        i0, i1 = as_pair_batch(onset, apex)
        if i0.device.type != "cpu":
            i0, i1 = i0.cpu(), i1.cpu()
        with torch.no_grad():
            return self._solve(i0, i1)

    def _solve(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        params = self.params
        batch, height, width = i0.shape
        sizes = pyramid_sizes(height, width, params)
        onsets, apex_stacks = self._inputs(i0, i1, params.scale_step, len(sizes))
        channels = 3 if params.gamma != 0 else 2
        u = i0.new_zeros(batch, channels, *sizes[-1])
        self.chunks_run = 0
        for level in range(len(sizes) - 1, -1, -1):
            if level != len(sizes) - 1:
                u = self._upsample(u, sizes[level], params.scale_step)
            u = self._solve_level(onsets[level], apex_stacks[level], u)
        return u[:, :2].contiguous()

    def _solve_level(self, i0: torch.Tensor, apex_stack: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        params = self.params
        height, width = u.shape[-2:]
        constants = (
            params.lambda_ * params.theta,
            params.theta,
            params.tau / params.theta,
            stop_threshold(params, height, width),
        )
        full, rest = divmod(params.inner_iterations, self.check_every)
        chunks = [self.check_every] * full + ([rest] if rest else [])
        px = torch.zeros_like(u)
        py = torch.zeros_like(u)
        for _ in range(params.warps):
            fixed = warp_terms(i0, apex_stack, u, params.gamma)  # eager: see the module docstring
            active = torch.ones(u.shape[0], dtype=torch.bool)
            for _ in range(params.outer_iterations):
                if params.median_filtering > 1:
                    u = self._median(u, active, params.median_filtering)
                for steps in chunks:
                    u, px, py, active = self._chunk(u, px, py, active, *fixed, *constants, steps)
                    self.chunks_run += 1
                    if not bool(active.any()):
                        break
                if not bool(active.any()):
                    break
        return u
