"""TV-L1 for a fixed batch shape as replayed CUDA graphs: the GPU path of ``tvl1_flow``.

The eager solver launches tens of small kernels per inner iteration and, to keep OpenCV's
per-pair stopping rule, reads a flag back from the device every iteration; on a GPU both
costs dwarf the arithmetic. Here the solve is cut into a few segments whose tensors live in
buffers allocated once per shape, each segment is captured as a CUDA graph, and the host
only replays them:

* ``prelude``: copy the input pairs in, build the pyramid and each level's apex gradient;
* per level, ``enter`` (upsample the coarser flow, reset the duals), ``warp`` (the
  linearised data term for the current flow, every pair active again) and ``outer`` (median
  filter, then ``inner_iterations`` masked primal-dual steps).

Converged pairs are frozen by the masked step (``masked_primal_dual_step``), which is exactly
OpenCV's per-pair stop. The host looks at the device only between outer iterations, and only
when there is more than one: once no pair of the batch is active, the remaining outer
iterations of that warp are skipped, as OpenCV skips them. With ``compile_kernels=True`` the
step and the median filter are fused by ``torch.compile`` before capture.

On a CPU device nothing is captured: the same segments run eagerly, which is how the tests
prove that the segmentation computes what ``tvl1_flow`` computes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from engines.buckets import BATCH_BUCKETS, bucket_for
from engines.errors import InputError
from engines.motion.cv_compat import resize_bilinear
from engines.motion.frames import as_pair_batch
from engines.motion.tvl1 import (
    TVL1Params,
    apex_with_gradient,
    masked_median,
    masked_primal_dual_step,
    pyramid_sizes,
    stop_threshold,
    warp_terms,
)

__all__ = ["GraphedTVL1", "TVL1Runner"]


@dataclass
class _Level:
    """The buffers of one pyramid level (all allocated once, written in place)."""

    i0: torch.Tensor
    i1: torch.Tensor
    apex_stack: torch.Tensor
    u: torch.Tensor
    px: torch.Tensor
    py: torch.Tensor
    coef: torch.Tensor
    rho_c: torch.Tensor
    inv_grad: torch.Tensor
    active: torch.Tensor
    scaled_epsilon: float


class GraphedTVL1:
    """TV-L1 for batches of exactly ``batch`` pairs of ``height`` x ``width`` on one device."""

    def __init__(
        self,
        params: TVL1Params,
        batch: int,
        height: int,
        width: int,
        device: str | torch.device = "cuda",
        *,
        compile_kernels: bool = False,
        early_exit: bool = True,
    ) -> None:
        self.params = params
        self.device = torch.device(device)
        self.shape = (batch, height, width)
        self.early_exit = early_exit
        self.sizes = pyramid_sizes(height, width, params)
        self._l_t = params.lambda_ * params.theta
        self._taut = params.tau / params.theta
        channels = 3 if params.gamma != 0 else 2
        self.onset = torch.zeros(batch, height, width, device=self.device)
        self.apex = torch.zeros_like(self.onset)
        self.levels: list[_Level] = []
        for h, w in self.sizes:
            plane = lambda *lead: torch.zeros(batch, *lead, h, w, device=self.device)  # noqa: E731
            self.levels.append(
                _Level(
                    i0=plane(), i1=plane(), apex_stack=plane(3),
                    u=plane(channels), px=plane(channels), py=plane(channels),
                    coef=plane(channels), rho_c=plane(), inv_grad=plane(),
                    active=torch.ones(batch, dtype=torch.bool, device=self.device),
                    scaled_epsilon=stop_threshold(params, h, w),
                )
            )
        self._step = masked_primal_dual_step
        self._median = masked_median
        if compile_kernels:
            # Every (batch, level) shape compiles once; the default limit (8 per function) would
            # silently fall back to eager after a few buckets.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 128)
            self._step = torch.compile(masked_primal_dual_step, fullgraph=True, dynamic=False)
            self._median = torch.compile(masked_median, fullgraph=True, dynamic=False)
        self._graphs: dict[tuple[str, int], torch.cuda.CUDAGraph] = {}
        self.outer_runs = 0  # outer-iteration segments run by the last call (early exit shows here)
        if self.device.type == "cuda":
            self._capture()

    # -- the segments ------------------------------------------------------------------

    def _prelude(self) -> None:
        params = self.params
        first = self.levels[0]
        first.i0.copy_(self.onset)
        first.i1.copy_(self.apex)
        for finer, level in zip(self.levels, self.levels[1:]):
            level.i0.copy_(resize_bilinear(finer.i0, factor=params.scale_step))
            level.i1.copy_(resize_bilinear(finer.i1, factor=params.scale_step))
        for level in self.levels:
            level.apex_stack.copy_(apex_with_gradient(level.i1))

    def _enter(self, index: int) -> None:
        level = self.levels[index]
        if index == len(self.levels) - 1:
            level.u.zero_()
        else:
            coarser = self.levels[index + 1]
            level.u.copy_(resize_bilinear(coarser.u, size=self.sizes[index]))
            level.u[:, :2] *= 1.0 / self.params.scale_step
        level.px.zero_()
        level.py.zero_()

    def _warp(self, index: int) -> None:
        level = self.levels[index]
        coef, rho_c, inv_grad = warp_terms(level.i0, level.apex_stack, level.u, self.params.gamma)
        level.coef.copy_(coef)
        level.rho_c.copy_(rho_c)
        level.inv_grad.copy_(inv_grad)
        level.active.fill_(True)

    def _outer(self, index: int) -> None:
        level, params = self.levels[index], self.params
        u, px, py, active = level.u, level.px, level.py, level.active
        if params.median_filtering > 1:
            u = self._median(u, active, params.median_filtering)
        fixed = (level.coef, level.rho_c, level.inv_grad)
        for _ in range(params.inner_iterations):
            u, px, py, active = self._step(
                u, px, py, active, *fixed, self._l_t, params.theta, self._taut, level.scaled_epsilon
            )
        level.u.copy_(u)
        level.px.copy_(px)
        level.py.copy_(py)
        level.active.copy_(active)

    def _segments(self) -> list[tuple[tuple[str, int], object]]:
        segments = [(("prelude", 0), self._prelude)]
        for index in range(len(self.levels)):
            for name, fn in (("enter", self._enter), ("warp", self._warp), ("outer", self._outer)):
                segments.append(((name, index), lambda fn=fn, index=index: fn(index)))
        return segments

    # -- capture and replay ----------------------------------------------------------

    def _capture(self) -> None:
        """Warm every segment up on a side stream (compiles, caches), then capture each."""
        segments = self._segments()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):
                for _, fn in segments:
                    fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        with torch.no_grad():
            for key, fn in segments:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    fn()
                self._graphs[key] = graph
        torch.cuda.synchronize(self.device)

    def _run(self, name: str, index: int) -> None:
        graph = self._graphs.get((name, index))
        if graph is not None:
            graph.replay()
            return
        with torch.no_grad():
            if name == "prelude":
                self._prelude()
            else:
                getattr(self, f"_{name}")(index)

    def __call__(self, onset: torch.Tensor, apex: torch.Tensor) -> torch.Tensor:
        """Flow ``(batch, 2, H, W)`` for checked float32 0..255 frames ``(batch, H, W)`` (a new tensor)."""
        if tuple(onset.shape) != self.shape or tuple(apex.shape) != self.shape:
            raise InputError(f"this runner takes pairs of shape {self.shape}, got {tuple(onset.shape)}", column="onset")
        self.onset.copy_(onset)
        self.apex.copy_(apex)
        self._run("prelude", 0)
        self.outer_runs = 0
        params = self.params
        for index in range(len(self.levels) - 1, -1, -1):
            self._run("enter", index)
            for _ in range(params.warps):
                self._run("warp", index)
                for outer in range(params.outer_iterations):
                    self._run("outer", index)
                    self.outer_runs += 1
                    last = outer == params.outer_iterations - 1
                    if self.early_exit and not last and not bool(self.levels[index].active.any()):
                        break
        return self.levels[0].u[:, :2].clone()


class TVL1Runner:
    """TV-L1 for batches of any size on one device: pads to a bucket and reuses its graphs.

    ``runner(onset, apex)`` takes frames as ``tvl1_flow`` does and returns the same flows.
    One :class:`GraphedTVL1` is built (and, on CUDA, captured) per (bucket, height, width)
    the first time that shape is seen; batches larger than the largest bucket are split.
    """

    def __init__(
        self,
        params: TVL1Params | None = None,
        device: str | torch.device = "cuda",
        *,
        compile_kernels: bool = False,
        buckets: tuple[int, ...] = BATCH_BUCKETS,
        **param_overrides,
    ) -> None:
        params = params or TVL1Params()
        self.params = dataclasses.replace(params, **param_overrides) if param_overrides else params
        self.device = torch.device(device)
        self.compile_kernels = compile_kernels
        self.buckets = tuple(sorted(buckets))
        self._solvers: dict[tuple[int, int, int], GraphedTVL1] = {}

    def solver(self, batch: int, height: int, width: int) -> GraphedTVL1:
        """The (cached) solver for a bucket-sized batch of this frame size."""
        key = (batch, height, width)
        if key not in self._solvers:
            self._solvers[key] = GraphedTVL1(
                self.params, batch, height, width, self.device, compile_kernels=self.compile_kernels
            )
        return self._solvers[key]

    def __call__(self, onset, apex) -> torch.Tensor:
        i0, i1 = as_pair_batch(onset, apex)
        i0, i1 = i0.to(self.device), i1.to(self.device)
        total, height, width = i0.shape
        flows = []
        largest = self.buckets[-1]
        for start in range(0, total, largest):
            part0, part1 = i0[start : start + largest], i1[start : start + largest]
            count = part0.shape[0]
            size = bucket_for(count, self.buckets) or count
            if size != count:  # pad with copies of the first pair; pairs never interact
                pad = size - count
                part0 = torch.cat((part0, part0[:1].expand(pad, -1, -1)))
                part1 = torch.cat((part1, part1[:1].expand(pad, -1, -1)))
            flows.append(self.solver(size, height, width)(part0, part1)[:count])
        return torch.cat(flows) if len(flows) > 1 else flows[0]
