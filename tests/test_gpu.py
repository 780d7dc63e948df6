"""The GPU path against the CPU path: run on a machine with a CUDA device (skipped elsewhere).

CI has no GPU; these run on a lent GPU machine (``bash bench/gpu_device.sh``) and their
results are recorded in docs/benchmarks.md. Tolerances, as mean endpoint error against the CPU
solver on the same pairs (float32 on both; the GPU sums in another order and fuses
multiply-adds): 1e-3 px for the default engine's parameters (one outer iteration, no median
filter); 0.05 px for OpenCV's defaults, where the per-pair stopping test is a threshold on a
sum, so a last-bit difference can stop a pair one iteration earlier or later and the 5x5
median filter spreads that (measured on an H100: 0.012-0.016 px; torch and OpenCV themselves
differ by 0.025 px, against the 0.15 px the motion kernels must meet). Class probabilities
within 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.motion import endpoint_error, frame_difference, optical_strain, tvl1_flow
from engines.motion.synthetic import synthetic_batch
from engines.motion.tvl1 import TVL1Params
from engines.motion.tvl1_graph import TVL1Runner
from engines.runtime import load, probe_backends
from streamer.batching import BatchingRecognizer
from streamer.recognizer import default_engine_dir

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (a lent GPU machine)")

FAST = dict(nscales=2, warps=2, inner_iterations=10, outer_iterations=1, median_filtering=1)
MOTION_TOLERANCE_PX = {"fast": 1e-3, "opencv-defaults": 0.05}
PROBABILITY_TOLERANCE = 1e-3


@pytest.mark.parametrize("name", ["opencv-defaults", "fast"])
@pytest.mark.parametrize("mode", ["eager", "graphs", "graphs-compiled"])
def test_tvl1_on_cuda_matches_the_cpu_solver(name: str, mode: str) -> None:
    params = TVL1Params(**FAST) if name == "fast" else TVL1Params()
    onset, apex, truth = synthetic_batch(112, 6, seed=3)
    cpu = tvl1_flow(onset, apex, params)
    if mode == "eager":
        gpu = tvl1_flow(onset.cuda(), apex.cuda(), params)
    else:
        gpu = TVL1Runner(params, "cuda", compile_kernels=mode == "graphs-compiled")(onset.cuda(), apex.cuda())
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    epe = endpoint_error(gpu.cpu(), cpu)
    assert float(epe.mean()) <= MOTION_TOLERANCE_PX[name], f"mean EPE {float(epe.mean()):.2e} px"
    assert float(endpoint_error(gpu.cpu(), truth).mean()) < 0.5


def test_graph_runner_pads_odd_batches_and_reuses_its_graphs() -> None:
    runner = TVL1Runner(TVL1Params(**FAST), "cuda")
    onset, apex, _ = synthetic_batch(64, 5, seed=4)
    flow = runner(onset.cuda(), apex.cuda())
    again = runner(onset.cuda(), apex.cuda())
    assert flow.shape == (5, 2, 64, 64) and torch.equal(flow, again)
    assert list(runner._solvers) == [(8, 64, 64)]
    single = runner(onset[:1].cuda(), apex[:1].cuda())
    torch.testing.assert_close(single, flow[:1], atol=1e-5, rtol=0)


def test_strain_and_difference_on_cuda_match_cpu() -> None:
    onset, apex, truth = synthetic_batch(64, 4, seed=5)
    torch.testing.assert_close(optical_strain(truth.cuda()).cpu(), optical_strain(truth), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(frame_difference(onset.cuda(), apex.cuda()).cpu(), frame_difference(onset, apex))


@pytest.mark.parametrize("half", [False, "auto"])
def test_torch_cuda_engine_matches_the_cpu_engine(half) -> None:
    reference = load(default_engine_dir(), "torch")
    engine = load(default_engine_dir(), "torch-cuda", half=half)
    batch = np.random.default_rng(0).uniform(0, 255, (37, *engine.manifest.sample_shape)).astype(np.float32)
    expected = reference.predict(batch)
    for rows in (batch[:1], batch[:3], batch, np.concatenate([batch, batch])):  # graphs 1, 4, 64, eager 74
        got = engine.predict(rows)
        assert np.abs(got - reference.predict(rows)).max() <= PROBABILITY_TOLERANCE
    on_device = engine.probabilities(torch.from_numpy(batch).cuda())
    assert on_device.device.type == "cuda"
    assert np.abs(on_device.cpu().numpy() - expected).max() <= PROBABILITY_TOLERANCE


def test_auto_picks_a_gpu_backend_here() -> None:
    probes = probe_backends()
    engine = load(default_engine_dir())
    assert engine.backend == ("tensorrt" if probes["tensorrt"] is None else "torch-cuda")


def test_shared_recognizer_on_cuda_matches_the_cpu_recognizer() -> None:
    rng = np.random.default_rng(1)
    crops = [(rng.integers(0, 256, (112, 112), dtype=np.uint8), rng.integers(0, 256, (112, 112), dtype=np.uint8))
             for _ in range(9)]
    with BatchingRecognizer(load(default_engine_dir(), "torch")) as cpu, \
            BatchingRecognizer(load(default_engine_dir(), "torch-cuda", half=False)) as gpu:
        expected = [cpu.submit(*pair) for pair in crops]
        got = [gpu.submit(*pair) for pair in crops]
        expected = np.stack([f.result(timeout=60) for f in expected])
        got = np.stack([f.result(timeout=60) for f in got])
    assert got.shape == (9, 3)
    assert np.abs(got - expected).max() <= PROBABILITY_TOLERANCE


NO_TENSORRT = __import__("engines.runtime.tensorrt_backend", fromlist=["x"]).tensorrt_unavailable_reason()


@pytest.mark.skipif(NO_TENSORRT is not None, reason=f"TensorRT cannot run here: {NO_TENSORRT}")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_matches_the_cpu_engine(precision: str, tmp_path) -> None:
    from engines.manifest import read_manifest
    from engines.runtime.tensorrt_support import calibration_contract, write_calibration_set

    reference = load(default_engine_dir(), "torch")
    rng = np.random.default_rng(2)
    batch = rng.uniform(0, 255, (40, *reference.manifest.sample_shape)).astype(np.float32)
    options = {"precision": precision, "cache_dir": tmp_path}
    if precision == "int8":
        contract = calibration_contract(read_manifest(default_engine_dir()).data)
        calibration = rng.uniform(0, 255, (128, *reference.manifest.sample_shape)).astype(np.float32)
        options["calibration"] = write_calibration_set(tmp_path / "calib.npz", calibration, contract,
                                                       [str(i) for i in range(128)])
    engine = load(default_engine_dir(), "tensorrt", **options)
    expected = reference.predict(batch)
    if precision == "int8":  # TensorRT's INT8 kernels against the same Q/DQ graph run by ONNX Runtime
        from engines.runtime.precision_graphs import cpu_scores, precision_graph
        from engines.runtime.tensorrt_support import read_calibration_set

        graph = precision_graph(default_engine_dir() / "model.onnx", "int8", read_calibration_set(options["calibration"]))
        expected = cpu_scores(graph, batch)
    gap = np.abs(engine.predict(batch) - expected).max()
    assert gap <= {"fp32": PROBABILITY_TOLERANCE, "fp16": 1e-2, "int8": 0.05}[precision]
    on_device = engine.probabilities(torch.from_numpy(batch).cuda())
    assert on_device.is_cuda and np.abs(on_device.cpu().numpy() - engine.predict(batch)).max() <= 1e-6
    again = load(default_engine_dir(), "tensorrt", **options)  # second load: from the plan cache
    np.testing.assert_allclose(again.predict(batch), engine.predict(batch), atol=1e-6)


def test_eulerian_magnification_on_cuda_matches_cpu() -> None:
    from engines.motion.magnify import eulerian_magnify

    clips = torch.rand(2, 30, 64, 64) * 255
    cpu = eulerian_magnify(clips, 30.0, 1.0, 4.0, 10.0)
    gpu = eulerian_magnify(clips.cuda(), 30.0, 1.0, 4.0, 10.0)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-2, rtol=0)  # 0..255 scale, float32 FFTs


def test_shared_motion_worker_on_cuda_matches_cpu() -> None:
    from streamer.batching import BatchingFlow

    onset, apex, _ = synthetic_batch(64, 6, seed=9)
    onset, apex = (onset * 255).round().to(torch.uint8), (apex * 255).round().to(torch.uint8)
    with BatchingFlow(TVL1Params(**FAST), "cuda") as motion:
        flows = torch.stack([f.result(timeout=120).cpu() for f in [motion.submit(o, a) for o, a in zip(onset, apex)]])
    expected = tvl1_flow(onset, apex, TVL1Params(**FAST))
    assert float(endpoint_error(flows, expected).mean()) <= MOTION_TOLERANCE_PX["fast"]
