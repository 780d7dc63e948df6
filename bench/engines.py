"""CPU benchmark of the engine runtimes: ONNX Runtime vs torch for every registered model.

Run from the repository root::

    .venv/bin/python -m bench.engines [--threads 1] [--iterations 300] [--batch-repeats 40] [--json]

Each registered model (seeded random weights: latency does not depend on the values) is
exported to a temporary engine directory and loaded by both backends with the same thread
count. Calls alternate between the two backends, so both see the same machine load: batch 1
latency (median and p90 over ``--iterations`` calls) and batch 64 throughput (samples/s from
the median of ``--batch-repeats`` calls); a model too slow for that many calls within
``--budget`` seconds gets fewer (the table says how many). Inputs are uniform over the
model's value range; SVM models are first fitted on random labels. A model that cannot be
exported is reported as such.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engines.errors import MerError
from engines.export import export_model
from engines.models import create_model, list_models
from engines.runtime import load

BACKENDS = ("onnxruntime", "torch")


def _interleaved_times(engines: dict, batch: np.ndarray, calls: int) -> dict[str, np.ndarray]:
    """Seconds per ``predict`` for each engine, alternating engines call by call (after a warm-up)."""
    for engine in engines.values():
        for _ in range(min(5, max(1, calls // 5))):
            engine.predict(batch)
    times = {name: [] for name in engines}
    for _ in range(calls):
        for name, engine in engines.items():
            started = time.perf_counter()
            engine.predict(batch)
            times[name].append(time.perf_counter() - started)
    return {name: np.asarray(values) for name, values in times.items()}


def _random_inputs(cfg, count: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform values over the model's input range (0..255 flow images, 0..1 face crops)."""
    low, high = cfg.value_range
    return rng.uniform(low, high, size=(count, *cfg.input_size)).astype(np.float32)


def _fit_if_closed_form(model, rng: np.random.Generator) -> None:
    """An SVM model must be fitted before it predicts; random labels do (timing does not depend on them)."""
    if getattr(model, "closed_form", False):
        inputs = torch.from_numpy(_random_inputs(model.cfg, 24, rng))
        labels = torch.arange(24) % model.num_classes
        model.fit_closed_form(inputs, labels, None, 0)


def _calls_within(engines: dict, batch: np.ndarray, wanted: int, budget_s: float) -> int:
    """``wanted`` calls, or fewer so that a slow model's timing stays within ``budget_s`` per backend."""
    slowest = 0.0
    for engine in engines.values():
        started = time.perf_counter()
        engine.predict(batch)
        slowest = max(slowest, time.perf_counter() - started)
    return max(3, min(wanted, int(budget_s / max(slowest, 1e-6))))


def bench_model(name: str, threads: int, iterations: int, batch_repeats: int, workdir: Path,
                budget_s: float = 60.0) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model(name).eval()
    _fit_if_closed_form(model, rng)
    engine_dir = workdir / name
    try:
        export_model(model, engine_dir, overwrite=True)
    except MerError as exc:
        return {"model": name, "error": str(exc).splitlines()[0]}
    engines = {backend: load(engine_dir, backend, threads=threads) for backend in BACKENDS}
    single = _random_inputs(model.cfg, 1, rng)
    batch64 = _random_inputs(model.cfg, 64, rng)
    latency = _interleaved_times(engines, single, _calls_within(engines, single, iterations, budget_s))
    throughput = _interleaved_times(engines, batch64, _calls_within(engines, batch64, batch_repeats, budget_s))
    row = {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
           "input": list(model.cfg.input_size), "b1_calls": len(latency["torch"]),
           "b64_calls": len(throughput["torch"])}
    for backend in BACKENDS:
        row[backend] = {
            "b1_median_ms": float(np.median(latency[backend]) * 1e3),
            "b1_p90_ms": float(np.percentile(latency[backend], 90) * 1e3),
            "b64_samples_per_s": float(64 / np.median(throughput[backend])),
        }
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | input | params | ORT b1 median ms | ORT b1 p90 ms | torch b1 median ms | torch b1 p90 ms | "
        "b1 median ORT/torch | ORT b64 samples/s | torch b64 samples/s | b64 throughput ORT/torch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | – | – | not exportable: {row['error']} |" + " |" * 7)
            continue
        o, t = row["onnxruntime"], row["torch"]
        lines.append(
            f"| {row['model']} | {'×'.join(map(str, row['input']))} | {row['parameters']:,} | {o['b1_median_ms']:.3f} | {o['b1_p90_ms']:.3f} | "
            f"{t['b1_median_ms']:.3f} | {t['b1_p90_ms']:.3f} | {o['b1_median_ms'] / t['b1_median_ms']:.2f} | "
            f"{o['b64_samples_per_s']:,.0f} | {t['b64_samples_per_s']:,.0f} | "
            f"{o['b64_samples_per_s'] / t['b64_samples_per_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for both runtimes (default 1, equal footing)")
    parser.add_argument("--iterations", type=int, default=300, help="batch-1 calls per backend (default 300)")
    parser.add_argument("--batch-repeats", type=int, default=40, help="batch-64 calls per backend (default 40)")
    parser.add_argument("--models", help="comma-separated model names (default: every registered model)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of timed calls per model, backend and batch size at most: slow models "
                        "get fewer calls (default 60)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = args.models.split(",") if args.models else list_models()
    with tempfile.TemporaryDirectory(prefix="mer-bench-engines-") as workdir:
        rows = [bench_model(n, args.threads, args.iterations, args.batch_repeats, Path(workdir), args.budget)
                for n in names]
    import onnxruntime

    info = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at the end",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "iterations": args.iterations,
        "batch_repeats": args.batch_repeats,
    }
    if args.json:
        print(json.dumps({"info": info, "rows": rows}, indent=2))
    else:
        print(", ".join(f"{k}: {v}" for k, v in info.items()))
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
