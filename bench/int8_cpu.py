"""Would the int8 precision graphs (made for TensorRT) pay on a CPU? ONNX Runtime, fp32 against int8.

Run from the repository root::

    .venv/bin/python -m bench.int8_cpu [--models ststnet,off_apexnet,dual_atme] [--threads 1] [--repeats 20]

Each model (seeded random weights: speed does not depend on the values) is exported, its int8
graph is made as ``mer export --precision int8`` makes it (``engines.runtime.precision_graphs``,
calibrated here on 64 random inputs), and ONNX Runtime runs ``model.onnx`` and the int8 graph in
alternating calls with the same thread count: the median ms of a batch-1 and a batch-64 call, and
the int8/fp32 speed ratio. The answer decides whether mer offers int8 on CPUs (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.engines import _fit_if_closed_form, _interleaved_times, _random_inputs
from engines.export import export_model
from engines.models import create_model
from engines.runtime.precision_graphs import precision_graph
from engines.runtime.tensorrt_support import CalibrationSet

DEFAULT_MODELS = "ststnet,off_apexnet,dual_atme,edmdbn,mmnet"


class _Session:
    """An ONNX Runtime session with ``predict(batch)``, as ``_interleaved_times`` calls it."""

    def __init__(self, model, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        source = str(model) if isinstance(model, Path) else model.SerializeToString()
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.name: batch})[0]


def bench_model(name: str, threads: int, repeats: int, workdir: Path) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model(name).eval()
    _fit_if_closed_form(model, rng)
    export_model(model, workdir / name, overwrite=True)
    source = workdir / name / "model.onnx"
    calibration = _random_inputs(model.cfg, 64, rng)
    int8 = precision_graph(source, "int8", CalibrationSet(calibration, {}, tuple(map(str, range(64)))))
    sessions = {"fp32": _Session(source, threads), "int8": _Session(int8, threads)}
    row = {"model": name}
    for size in (1, 64):
        times = _interleaved_times(sessions, _random_inputs(model.cfg, size, rng), repeats)
        for precision, seconds in times.items():
            row[f"{precision}_b{size}_ms"] = float(np.median(seconds) * 1e3)
        row[f"int8_speed_b{size}"] = row[f"fp32_b{size}_ms"] / row[f"int8_b{size}_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per precision and batch size")
    args = parser.parse_args(argv)
    print("| model | fp32 b1 ms | int8 b1 ms | int8 speed b1 | fp32 b64 ms | int8 b64 ms | int8 speed b64 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="mer-bench-int8-") as workdir:
        for name in args.models.split(","):
            r = bench_model(name, args.threads, args.repeats, Path(workdir))
            print(f"| {name} | {r['fp32_b1_ms']:.3f} | {r['int8_b1_ms']:.3f} | {r['int8_speed_b1']:.2f}× | "
                  f"{r['fp32_b64_ms']:.2f} | {r['int8_b64_ms']:.2f} | {r['int8_speed_b64']:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
