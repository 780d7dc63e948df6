"""The sync-free TV-L1 (what CUDA graphs capture) computes exactly what the eager solver does.

The graph runner's segments run eagerly on a CPU device, so the cut into prelude / enter /
warp / outer segments, the early exit between outer iterations and the batch padding are all
checked here; tests/test_gpu.py checks the captured graphs on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from engines.buckets import bucket_for
from engines.errors import InputError
from engines.motion import tvl1_flow
from engines.motion.synthetic import synthetic_batch
from engines.motion.tvl1 import TVL1Params
from engines.motion.tvl1_graph import GraphedTVL1, TVL1Runner

FAST = dict(nscales=2, warps=2, inner_iterations=10, outer_iterations=1, median_filtering=1)
# Several outer iterations with the median filter and an early stop: every branch of the solver.
STOPPING = dict(nscales=3, warps=2, inner_iterations=8, outer_iterations=4, median_filtering=5, epsilon=0.05)


@pytest.mark.parametrize("params", [FAST, STOPPING, dict(STOPPING, gamma=0.1)], ids=["fast", "stopping", "gamma"])
def test_sync_free_solver_equals_the_dropping_solver(params: dict) -> None:
    onset, apex, _ = synthetic_batch(48, 5, seed=2)
    dropping = tvl1_flow(onset, apex, sync_free=False, **params)
    frozen = tvl1_flow(onset, apex, sync_free=True, **params)
    assert torch.equal(dropping, frozen)


@pytest.mark.parametrize("params", [FAST, STOPPING], ids=["fast", "stopping"])
def test_segmented_runner_equals_tvl1_flow(params: dict) -> None:
    onset, apex, _ = synthetic_batch(40, 3, seed=6)
    expected = tvl1_flow(onset, apex, **params)
    runner = TVL1Runner(TVL1Params(**params), device="cpu")
    got = runner(onset, apex)
    assert got.shape == (3, 2, 40, 40)
    assert torch.equal(got, expected)
    # Three pairs ran in a bucket of four (padded with a copy of the first pair).
    assert list(runner._solvers) == [(4, 40, 40)]


def test_early_exit_skips_outer_iterations_without_changing_the_flow() -> None:
    params = TVL1Params(**STOPPING)
    onset, apex, _ = synthetic_batch(40, 2, seed=7)
    eager, exhaustive = (GraphedTVL1(params, 2, 40, 40, "cpu", early_exit=flag) for flag in (True, False))
    i0, i1 = onset * 255, apex * 255
    torch.testing.assert_close(eager(i0, i1), exhaustive(i0, i1), rtol=0, atol=0)
    levels, warps, outer = 3, STOPPING["warps"], STOPPING["outer_iterations"]
    assert exhaustive.outer_runs == levels * warps * outer
    assert eager.outer_runs < exhaustive.outer_runs


def test_runner_splits_batches_beyond_the_largest_bucket() -> None:
    onset, apex, _ = synthetic_batch(32, 5, seed=8)
    runner = TVL1Runner(TVL1Params(**FAST), device="cpu", buckets=(1, 2))
    assert torch.equal(runner(onset, apex), tvl1_flow(onset, apex, **FAST))
    assert sorted(runner._solvers) == [(1, 32, 32), (2, 32, 32)]


def test_a_solver_refuses_another_shape() -> None:
    solver = GraphedTVL1(TVL1Params(**FAST), 2, 32, 32, "cpu")
    with pytest.raises(InputError, match=r"pairs of shape \(2, 32, 32\), got \(3, 32, 32\)"):
        solver(torch.zeros(3, 32, 32), torch.zeros(3, 32, 32))


def test_bucket_for() -> None:
    assert [bucket_for(n) for n in (1, 2, 3, 5, 64, 65)] == [1, 2, 4, 8, 64, 128]
    assert bucket_for(300) is None
    assert bucket_for(3, (2, 8)) == 8
