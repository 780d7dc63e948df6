"""``mer bench gpu``: the GPU path measured against the CPU references in one run.

Three parts, each reported even when another fails:

* ``tvl1``: TV-L1 on batches of 112x112 synthetic pairs with known flow, OpenCV's CPU
  DualTVL1 (one pair at a time, 1 thread and all threads) against the torch solver on the
  device: eager, eager without host syncs, CUDA graphs, CUDA graphs with ``torch.compile``d
  kernels. Both OpenCV's default parameters and the default engine's. Agreement: endpoint
  error of each against the CPU torch solver and OpenCV, and against the true flow.
* ``engines``: every backend that runs here (torch and ONNX Runtime on the CPU, torch-cuda in
  float32 and with float16 where safe, TensorRT in fp32, fp16 and int8 when installed) on the
  default engine and on a Dual-ATME engine: batch-1 latency, batch-64 throughput, and the
  largest probability gap to the CPU torch backend (for int8: to its Q/DQ graph run by ONNX
  Runtime, calibrated on the bench's random batch).
* ``streams``: the shared batching recognizer (motion + engine on the device) fed by N
  simulated streams, each asking for one recognition per frame at 30 fps (far more than real
  micro-expression rates: it bounds the per-frame work a GPU spotter could add); the largest
  N whose requests all complete with p99 latency within one frame period.

Timings are medians of repeated runs after a warm-up, with the device synchronised before
each clock read. On a machine without CUDA it runs the CPU parts only (small sizes with
``--quick``), which is how the tests exercise it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import threading
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import torch

from engines.motion import endpoint_error, opencv_tvl1_flow, tvl1_flow
from engines.motion.synthetic import synthetic_batch
from engines.motion.tvl1 import TVL1Params
from engines.motion.tvl1_graph import TVL1Runner

__all__ = ["add_parser", "run_gpu_bench"]

log = logging.getLogger(__name__)

FRAME_PERIOD_S = 1 / 30


def add_parser(targets) -> None:
    gpu = targets.add_parser("gpu", help="GPU path vs CPU references: TV-L1, engines, streams per GPU")
    gpu.add_argument("--parts", default="tvl1,engines,streams", help="comma-separated subset (default: all)")
    gpu.add_argument("--pairs", type=int, default=64, help="TV-L1 batch (default 64)")
    gpu.add_argument("--size", type=int, default=112, help="TV-L1 frame side (default 112)")
    gpu.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    gpu.add_argument("--stream-seconds", type=float, default=3.0, help="load per stream count (default 3 s)")
    gpu.add_argument("--max-streams", type=int, default=1024, help="largest stream count tried (default 1024)")
    gpu.add_argument("--stream-batches", default="64",
                     help="comma-separated max batch sizes of the shared recognizer to try (default 64)")
    gpu.add_argument("--quick", action="store_true", help="tiny sizes (for tests and CPU-only machines)")
    gpu.add_argument("--out", type=Path, help="also write the JSON report here")
    gpu.set_defaults(run=run_gpu_bench)


# --- timing helpers ---------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_s(fn, device: torch.device, repeat: int, warmup: int = 1) -> tuple[float, object]:
    result = None
    for _ in range(warmup):
        result = fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def _engine_flow_params() -> dict:
    from streamer.recognizer import default_engine_dir
    from engines.manifest import read_manifest

    return dict(read_manifest(default_engine_dir()).preprocessing.get("flow_params") or {})


# --- part 1: TV-L1 ------------------------------------------------------------------------------


def _opencv_ms_per_pair(onset, apex, params: TVL1Params, threads: int) -> tuple[float, torch.Tensor]:
    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        start = time.perf_counter()
        flow = opencv_tvl1_flow(onset, apex, params)
        return 1000 * (time.perf_counter() - start) / onset.shape[0], flow
    finally:
        cv2.setNumThreads(previous)


def bench_tvl1(device: torch.device, pairs: int, size: int, compile_kernels: bool, quick: bool) -> list[dict]:
    rows = []
    param_sets = {"opencv-defaults": TVL1Params(), "default-engine": TVL1Params.from_kwargs(**_engine_flow_params())}
    onset, apex, truth = synthetic_batch(size, pairs, seed=0)
    repeat = 3 if quick else 10
    for label, params in param_sets.items():
        row: dict = {"params": label, "pairs": pairs, "size": size, "device": str(device)}
        cpu_ms, cv_flow = _opencv_ms_per_pair(onset, apex, params, threads=1)
        row["opencv_1thread_ms_per_pair"] = cpu_ms
        row["opencv_1thread_ms_batch"] = cpu_ms * pairs
        all_threads = os.cpu_count() or 1
        row["opencv_all_threads"] = all_threads
        row["opencv_all_threads_ms_per_pair"], _ = _opencv_ms_per_pair(onset, apex, params, threads=all_threads)
        cpu_torch = tvl1_flow(onset, apex, params)  # the CPU reference of the same solver
        row["epe_cpu_torch_vs_opencv_px"] = float(endpoint_error(cpu_torch, cv_flow).mean())
        row["epe_opencv_vs_truth_px"] = float(endpoint_error(cv_flow, truth).mean())
        on_dev = onset.to(device), apex.to(device)
        variants = {
            "eager": lambda: tvl1_flow(*on_dev, params, sync_free=False),
            "eager-sync-free": lambda: tvl1_flow(*on_dev, params, sync_free=True),
        }
        if device.type == "cuda":
            graphs = TVL1Runner(params, device)
            variants["cuda-graphs"] = lambda: graphs(*on_dev)
            if compile_kernels:
                compiled = TVL1Runner(params, device, compile_kernels=True)
                variants["cuda-graphs-compiled"] = lambda: compiled(*on_dev)
        row["variants"] = {}
        for name, fn in variants.items():
            try:
                started = time.perf_counter()
                fn()  # first call: graph capture / compilation, reported apart
                _sync(device)
                setup_s = time.perf_counter() - started
                seconds, flow = _median_s(fn, device, repeat=1 if name.startswith("eager") and label == "opencv-defaults"
                                          and device.type == "cpu" else repeat)
                flow = flow.float().cpu()
                row["variants"][name] = {
                    "ms_batch": 1000 * seconds,
                    "ms_per_pair": 1000 * seconds / pairs,
                    "speedup_vs_opencv_1thread": row["opencv_1thread_ms_batch"] / (1000 * seconds),
                    "first_call_s": setup_s,
                    "epe_vs_cpu_torch_px": float(endpoint_error(flow, cpu_torch).mean()),
                    "max_abs_vs_cpu_torch_px": float((flow - cpu_torch).abs().max()),
                    "epe_vs_opencv_px": float(endpoint_error(flow, cv_flow).mean()),
                    "epe_vs_truth_px": float(endpoint_error(flow, truth).mean()),
                }
            except Exception as exc:  # noqa: BLE001 - one variant failing must not hide the others
                row["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                log.error("tvl1 variant %s failed:\n%s", name, traceback.format_exc())
        rows.append(row)
    if device.type == "cuda":
        rows.append(_tvl1_batch_scaling(device, size, compile_kernels))
    return rows


def _tvl1_batch_scaling(device: torch.device, size: int, compile_kernels: bool) -> dict:
    """Per-pair cost of the graphed solver as the batch grows (default-engine parameters)."""
    params = TVL1Params.from_kwargs(**_engine_flow_params())
    runner = TVL1Runner(params, device, compile_kernels=compile_kernels)
    scaling = {}
    for batch in (1, 4, 16, 64, 256):
        onset, apex, _ = synthetic_batch(size, batch, seed=1)
        pair = onset.to(device), apex.to(device)
        seconds, _ = _median_s(lambda: runner(*pair), device, repeat=20)
        scaling[str(batch)] = {"ms_batch": 1000 * seconds, "us_per_pair": 1e6 * seconds / batch}
    return {"params": "default-engine", "size": size, "compiled": compile_kernels, "batch_scaling": scaling}


# --- part 2: engines -----------------------------------------------------------------------------


def _engine_dirs(workdir: Path) -> dict[str, Path]:
    from engines.export import export_model
    from engines.models import create_model
    from streamer.recognizer import default_engine_dir

    torch.manual_seed(0)
    dual = workdir / "dual_atme"
    export_model(create_model("dual_atme").eval(), dual, overwrite=True)
    return {"default-engine (ststnet)": default_engine_dir(), "dual_atme (random weights)": dual}


def _backends_here(device: torch.device) -> list[tuple[str, str, dict]]:
    from engines.runtime import probe_backends

    probes = probe_backends()
    rows = [("torch", "torch cpu", {"threads": os.cpu_count()})]
    if probes["onnxruntime"] is None:
        rows.append(("onnxruntime", "onnxruntime cpu", {"threads": os.cpu_count()}))
    if device.type == "cuda":
        rows.append(("torch-cuda", "torch-cuda fp32", {"half": False}))
        rows.append(("torch-cuda", "torch-cuda auto-half", {"half": "auto"}))
        if probes["tensorrt"] is None:
            rows.append(("tensorrt", "tensorrt fp32", {"half": False}))
            rows.append(("tensorrt", "tensorrt fp16", {"half": True}))
            rows.append(("tensorrt", "tensorrt int8", {"precision": "int8"}))
    return rows


def _int8_options(engine_dir: Path, workdir: Path, inputs: np.ndarray) -> tuple[dict, np.ndarray]:
    """The int8 row's calibration set (``inputs``: the bench's own random batch, as no dataset
    is assumed here) and the scores its Q/DQ graph gives in ONNX Runtime on the CPU, which
    TensorRT's INT8 plan should reproduce (against fp32 it differs by the quantization itself)."""
    from engines.manifest import read_manifest
    from engines.runtime.precision_graphs import cpu_scores, precision_graph
    from engines.runtime.tensorrt_support import calibration_contract, read_calibration_set, write_calibration_set

    contract = calibration_contract(read_manifest(engine_dir).data)
    path = write_calibration_set(workdir / f"{engine_dir.name}-calibration.npz", inputs, contract,
                                 [str(i) for i in range(len(inputs))])
    graph = precision_graph(engine_dir / "model.onnx", "int8", read_calibration_set(path))
    return {"precision": "int8", "calibration": path}, cpu_scores(graph, inputs)


def bench_engines(device: torch.device, quick: bool) -> list[dict]:
    from engines.runtime import load

    rows = []
    iterations, repeats = (20, 3) if quick else (300, 30)
    with tempfile.TemporaryDirectory(prefix="mer-bench-gpu-") as tmp:
        for label, engine_dir in _engine_dirs(Path(tmp)).items():
            reference = load(engine_dir, "torch")
            shape = reference.manifest.sample_shape
            rng = np.random.default_rng(0)
            batch64 = rng.uniform(0, 255, (64, *shape)).astype(np.float32)
            expected = reference.predict(batch64)
            for backend, name, options in _backends_here(device):
                row: dict = {"engine": label, "backend": name}
                try:
                    if options.get("precision") == "int8":
                        options, int8_expected = _int8_options(engine_dir, Path(tmp), batch64)
                        gap_name, reference_scores = "max_prob_gap_vs_int8_graph_onnxruntime", int8_expected
                    else:
                        gap_name, reference_scores = "max_prob_gap_vs_torch_cpu", expected
                    engine = load(engine_dir, backend, **options)
                    row["half"] = getattr(engine, "half", False)
                    row[gap_name] = float(np.abs(engine.predict(batch64) - reference_scores).max())
                    one = batch64[:1]
                    seconds, _ = _median_s(lambda: engine.predict(one), torch.device("cpu"), iterations, warmup=5)
                    row["batch1_latency_ms"] = 1000 * seconds
                    seconds, _ = _median_s(lambda: engine.predict(batch64), torch.device("cpu"), repeats, warmup=3)
                    row["batch64_samples_per_s"] = 64 / seconds
                    if hasattr(engine, "probabilities"):  # GPU-resident input: no host round trip
                        on_gpu = torch.from_numpy(batch64).to(engine.device)
                        dev = torch.device(engine.device)
                        seconds, _ = _median_s(lambda: engine.probabilities(on_gpu), dev, repeats, warmup=3)
                        row["batch64_on_device_samples_per_s"] = 64 / seconds
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    log.error("engine %s on %s failed:\n%s", label, name, traceback.format_exc())
                rows.append(row)
    return rows


# --- part 3: streams --------------------------------------------------------------------------------


def _offer_load(recognizer, streams: int, seconds: float, crop: np.ndarray) -> dict:
    """``streams`` streams at 30 fps, one request per frame each, spread evenly over time."""
    interval = FRAME_PERIOD_S / streams
    total = int(round(seconds * streams / FRAME_PERIOD_S))
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Event()
    remaining = [total]

    def finished(started: float, future) -> None:
        elapsed = time.perf_counter() - started
        with lock:
            if future.exception() is None:
                latencies.append(elapsed)
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    start = time.perf_counter()
    for index in range(total):
        due = start + index * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        submitted = time.perf_counter()
        recognizer.submit(crop, crop).add_done_callback(lambda f, s=submitted: finished(s, f))
    offered_s = time.perf_counter() - start
    done.wait(timeout=60)
    lat = np.asarray(latencies)
    return {
        "streams": streams,
        "requests": total,
        "completed": int(lat.size),
        "offer_lag_s": max(0.0, offered_s - seconds),
        "latency_p50_ms": float(np.percentile(lat, 50) * 1000) if lat.size else None,
        "latency_p99_ms": float(np.percentile(lat, 99) * 1000) if lat.size else None,
    }


def bench_streams(device: torch.device, seconds: float, max_streams: int, quick: bool,
                  max_batches: tuple[int, ...] = (64,)) -> list[dict]:
    """One sweep over stream counts per shared-recognizer max batch size."""
    return [_stream_sweep(device, seconds, max_streams, quick, max_batch) for max_batch in max_batches]


def _stream_sweep(device: torch.device, seconds: float, max_streams: int, quick: bool, max_batch: int) -> dict:
    from engines.runtime import load
    from streamer.batching import BatchingRecognizer
    from streamer.recognizer import default_engine_dir

    backend = "torch-cuda" if device.type == "cuda" else "torch"
    engine = load(default_engine_dir(), backend)
    crop_side = 112
    rng = np.random.default_rng(0)
    onset = rng.integers(0, 256, (crop_side, crop_side), dtype=np.uint8)
    report: dict = {"engine": engine.engine_id, "backend": backend, "crop": crop_side, "max_batch": max_batch,
                    "max_wait_ms": 4.0, "runs": []}
    counts = [1, 2] if quick else [8, 16, 32, 64, 128, 192, 256, 384, 512, 768, 1024]
    with BatchingRecognizer(engine, max_batch=max_batch, max_wait_s=0.004) as recognizer:
        recognizer.warm_up((crop_side, crop_side), sizes=tuple(2**k for k in range(12) if 2**k <= max_batch))
        sustained = 0
        for streams in counts:
            if streams > max_streams:
                break
            refused_before = recognizer.stats.refused
            run = _offer_load(recognizer, streams, seconds, onset)
            run["refused"] = recognizer.stats.refused - refused_before
            run["keeps_up"] = bool(
                run["completed"] == run["requests"] and run["refused"] == 0
                and run["latency_p99_ms"] is not None and run["latency_p99_ms"] <= 1000 * FRAME_PERIOD_S
                and run["offer_lag_s"] < 0.1 * seconds
            )
            report["runs"].append(run)
            if not run["keeps_up"]:
                break
            sustained = streams
        report["mean_batch"] = recognizer.stats.mean_batch
    report["sustained_streams_30fps"] = sustained
    return report


# --- the command ---------------------------------------------------------------------------------


def run_gpu_bench(args) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"tvl1", "engines", "streams"}
    if unknown:
        from engines.errors import InputError

        raise InputError(f"unknown part(s) {sorted(unknown)}; choose from tvl1, engines, streams", column="--parts")
    pairs, size = (4, 32) if args.quick else (args.pairs, args.size)
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu only (no CUDA device)",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
    }
    steps = {
        "tvl1": lambda: bench_tvl1(device, pairs, size, not args.no_compile and device.type == "cuda", args.quick),
        "engines": lambda: bench_engines(device, args.quick),
        "streams": lambda: bench_streams(device, 0.5 if args.quick else args.stream_seconds, args.max_streams,
                                         args.quick, tuple(int(b) for b in args.stream_batches.split(","))),
    }
    for part in parts:
        started = time.perf_counter()
        try:
            report[part] = steps[part]()
        except Exception as exc:  # noqa: BLE001 - report what failed, keep the other parts
            report[part] = {"error": f"{type(exc).__name__}: {exc}"}
            log.error("part %s failed:\n%s", part, traceback.format_exc())
        report.setdefault("part_seconds", {})[part] = time.perf_counter() - started
        if args.out:
            args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m streamer.gpu_bench`` (the same as ``mer bench gpu``, without the full CLI)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m streamer.gpu_bench")
    add_parser(parser.add_subparsers(dest="target", required=True))
    args = parser.parse_args(["gpu", *(argv if argv is not None else __import__("sys").argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
