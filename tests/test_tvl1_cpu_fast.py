"""The compiled CPU TV-L1 (engines/motion/tvl1_compiled.py) computes exactly what
tvl1_flow(portable=True) does, and the portable numerics agree with OpenCV as the default ones do.

Compiling the whole solver takes minutes on a CI core, so the solver's loop structure (chunks
of inner iterations, stopping flags read only between chunks, frozen pairs) is checked here
with compile=False, and compilation itself on the kernels that run most, the primal-dual step
and the median filter, on a tiny shape. `mer bench motion --compile` checks the whole compiled
solver against tvl1_flow(portable=True) at full size.
"""

from __future__ import annotations

import pytest
import torch

from engines.motion import endpoint_error, opencv_tvl1_flow, tvl1_flow
from engines.motion.synthetic import synthetic_batch
from engines.motion.tvl1 import (TVL1Params, apex_with_gradient, gradient_norm, masked_median,
                                 masked_portable_primal_dual_step, warp_terms)
from engines.motion.tvl1_compiled import CompiledTVL1, _inner_chunk

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(nscales=2, warps=2, inner_iterations=10, outer_iterations=1, median_filtering=1)
# Several outer iterations with the median filter and early stops: every branch of the solver.
STOPPING = dict(nscales=3, warps=2, inner_iterations=8, outer_iterations=4, median_filtering=5, epsilon=0.05)


@pytest.mark.parametrize("params", [FAST, STOPPING, dict(STOPPING, gamma=0.1)], ids=["fast", "stopping", "gamma"])
@pytest.mark.parametrize("check_every", [1, 3, 8])
def test_chunked_solver_equals_tvl1_flow(params: dict, check_every: int) -> None:
    onset, apex, _ = synthetic_batch(40, 3, seed=2)
    expected = tvl1_flow(onset, apex, portable=True, **params)
    got = CompiledTVL1(TVL1Params(**params), check_every=check_every, compile=False)(onset, apex)
    assert got.shape == (3, 2, 40, 40)
    assert torch.equal(got, expected)


def test_reading_the_flags_less_often_only_wastes_work() -> None:
    onset, apex, _ = synthetic_batch(40, 2, seed=7)
    often = CompiledTVL1(TVL1Params(**STOPPING), check_every=1, compile=False)
    rarely = CompiledTVL1(TVL1Params(**STOPPING), check_every=8, compile=False)
    assert torch.equal(often(onset, apex), rarely(onset, apex))
    # Pairs converge before the last inner iteration, so whole warps are cut short.
    exhaustive = 3 * STOPPING["warps"] * STOPPING["outer_iterations"] * STOPPING["inner_iterations"]
    assert often.chunks_run < exhaustive
    assert rarely.chunks_run < 3 * STOPPING["warps"] * STOPPING["outer_iterations"]


def test_portable_numerics_agree_with_opencv_as_the_default_ones_do() -> None:
    onset, apex, truth = synthetic_batch(48, 4, seed=5)
    reduced = dict(nscales=3, warps=3, inner_iterations=10, outer_iterations=3)  # OpenCV's, reduced for time
    opencv = opencv_tvl1_flow(onset, apex, TVL1Params(**reduced))
    default, portable = tvl1_flow(onset, apex, **reduced), tvl1_flow(onset, apex, portable=True, **reduced)
    assert not torch.equal(default, portable)  # different roundings ...
    assert float(endpoint_error(portable, default).mean()) < 0.01  # ... the same solution
    for flow in (default, portable):
        assert float(endpoint_error(flow, opencv).mean()) < 0.05
    assert float(endpoint_error(portable, truth).mean()) <= float(endpoint_error(opencv, truth).mean()) * 1.05


def test_gradient_norm_is_hypot_within_an_ulp() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1_000_000, generator=generator) * torch.logspace(-3, 3, 1_000_000)
    y = torch.randn(1_000_000, generator=generator)
    ours, reference = gradient_norm(x, y), torch.hypot(x, y)
    assert ((ours - reference).abs() <= torch.finfo(torch.float32).eps * reference).all()


def test_compiled_step_is_bit_identical_to_the_eager_step() -> None:
    onset, apex, _ = synthetic_batch(20, 2, seed=4)
    i0, i1 = onset * 255, apex * 255
    u = torch.randn(2, 2, 20, 20, generator=torch.Generator().manual_seed(1))
    coef, rho_c, inv_grad = warp_terms(i0, apex_with_gradient(i1), u, 0.0)
    px, py = torch.zeros_like(u), torch.zeros_like(u)
    active = torch.tensor([True, False])
    args = (u, px, py, active, coef, rho_c, inv_grad, 0.045, 0.3, 0.25 / 0.3, 0.02)
    eager = _inner_chunk(*args, 2)
    compiled = torch.compile(_inner_chunk, fullgraph=True, dynamic=False)(*args, 2)
    for e, c in zip(eager, compiled):
        assert torch.equal(e, c)
    assert torch.equal(eager[0][1], u[1])  # the inactive pair stayed frozen
    assert not torch.equal(eager[0][0], u[0])
    # ... and one step of the chunk is the solver's masked step.
    assert torch.equal(_inner_chunk(*args, 1)[0], masked_portable_primal_dual_step(*args)[0])
    # The median filter (a min/max network) compiles to the same bits as well.
    compiled_median = torch.compile(masked_median, fullgraph=True, dynamic=False)
    assert torch.equal(compiled_median(eager[0], active, 5), masked_median(eager[0], active, 5))
