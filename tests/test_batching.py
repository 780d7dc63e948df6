"""The shared recognizer batches requests from many threads and loses none silently."""

from __future__ import annotations

import threading

import numpy as np
import torch
import pytest

from engines.errors import MerError
from engines.preprocess import MotionInputBuilder
from engines.runtime import load
from streamer.batching import BatchingRecognizer, QueueFull
from streamer.recognizer import default_engine_dir


@pytest.fixture(scope="module")
def engine():
    return load(default_engine_dir(), "torch", threads=1)


def _pairs(count: int, side: int = 64, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (side, side), dtype=np.uint8), rng.integers(0, 256, (side, side), dtype=np.uint8))
            for _ in range(count)]


def test_batched_results_equal_one_pair_at_a_time(engine) -> None:
    builder = MotionInputBuilder.from_manifest(engine.manifest)
    pairs = _pairs(6)
    expected = np.concatenate([engine.predict(builder(onset[None], apex[None])) for onset, apex in pairs])
    with BatchingRecognizer(engine, max_batch=8, max_wait_s=0.5) as shared:
        futures = [shared.submit(onset, apex) for onset, apex in pairs]
        got = np.stack([f.result(timeout=60) for f in futures])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Submitted together, well inside the 0.5 s window: fewer batches than requests.
    assert shared.stats.completed == 6 and shared.stats.batches < 6 and shared.stats.mean_batch > 1


def test_requests_from_many_threads_all_complete(engine) -> None:
    pairs = _pairs(4, seed=1)
    results: list = []
    with BatchingRecognizer(engine, max_batch=16, max_wait_s=0.01) as shared:
        def stream(index: int) -> None:
            onset, apex = pairs[index % len(pairs)]
            results.extend(shared.submit(onset, apex).result(timeout=60) for _ in range(3))

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 24 and shared.stats.requests == shared.stats.completed == 24
    assert all(row.shape == (3,) and abs(float(row.sum()) - 1) < 1e-5 for row in results)


class _HeldBuilder:
    """A builder that blocks until released, so the queue behind it fills up."""

    def __init__(self, builder: MotionInputBuilder) -> None:
        self.builder, self.release, self.entered = builder, threading.Event(), threading.Event()

    def __call__(self, onset, apex):
        self.entered.set()
        self.release.wait(30)
        return self.builder(onset, apex)


def test_a_full_queue_refuses_and_counts(engine) -> None:
    held = _HeldBuilder(MotionInputBuilder.from_manifest(engine.manifest))
    (onset, apex), = _pairs(1, seed=2)
    with BatchingRecognizer(engine, held, max_batch=1, max_wait_s=0, max_pending=2) as shared:
        first = shared.submit(onset, apex)
        assert held.entered.wait(30)  # the worker holds the first request
        queued = [shared.submit(onset, apex) for _ in range(2)]
        refused = shared.submit(onset, apex)
        with pytest.raises(QueueFull, match=r"queue full \(2 pending\)"):
            refused.result(timeout=5)
        held.release.set()
        assert all(f.result(timeout=60).shape == (3,) for f in [first, *queued])
    assert shared.stats.requests == 4 and shared.stats.refused == 1 and shared.stats.completed == 3


def test_a_failing_batch_fails_its_requests_and_the_worker_lives_on(engine) -> None:
    small, large = _pairs(1, side=64, seed=3)[0], _pairs(1, side=80, seed=4)[0]
    with BatchingRecognizer(engine, max_batch=2, max_wait_s=5) as shared:
        mixed = [shared.submit(*small), shared.submit(*large)]  # one batch, two crop shapes
        for future in mixed:
            with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
                future.result(timeout=60)
        assert shared.submit(*small).result(timeout=60).shape == (3,)
    assert shared.stats.failed == 2 and shared.stats.completed == 1


def test_a_closed_recognizer_refuses(engine) -> None:
    shared = BatchingRecognizer(engine)
    shared.close()
    with pytest.raises(MerError, match="closed"):
        shared.submit(*_pairs(1)[0]).result(timeout=5)


def test_shared_motion_worker_returns_each_pairs_flow() -> None:
    from engines.motion import tvl1_flow
    from engines.motion.tvl1 import TVL1Params
    from streamer.batching import BatchingFlow

    params = TVL1Params(nscales=2, warps=2, inner_iterations=10, outer_iterations=1, median_filtering=1)
    pairs = _pairs(5, side=48, seed=5)
    with BatchingFlow(params, max_batch=8, max_wait_s=0.5) as motion:
        flows = [f.result(timeout=60) for f in [motion.submit(onset, apex) for onset, apex in pairs]]
    assert motion.stats.completed == 5 and motion.stats.batches < 5
    for (onset, apex), flow in zip(pairs, flows):
        assert flow.shape == (2, 48, 48)
        torch.testing.assert_close(flow, tvl1_flow(onset[None], apex[None], params)[0], atol=1e-5, rtol=0)
