"""Load an engine directory behind one interface: ``load(engine_dir, backend="auto")``.

Every backend returns the same thing from ``predict(batch)``: ``(N, C)`` float32 softmax
probabilities, in ``class_names`` order. ``load`` first reads and validates the manifest and
checks the sha256 of every file it lists, then (if given) compares the caller's preprocessing
with the engine's, and only then builds the backend.

``backend="auto"`` picks, in order: TensorRT if it is importable and a CUDA device is visible,
else torch on the CUDA device (``torch-cuda``), else ONNX Runtime on the CPU, else torch on the
CPU. It logs what it chose and why, and the returned object's ``.backend`` says which it is
(the streamer exports it as the ``mer_engine`` metric's ``backend`` label).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engines.errors import InputError, MerError
from engines.manifest import EngineManifest, read_manifest, verify_files
from engines.runtime.base import Backend

__all__ = ["AUTO_ORDER", "BACKENDS", "Backend", "backend_class", "choose_backend", "load", "probe_backends"]

log = logging.getLogger(__name__)

# ONNX Runtime (1.2x on Linux) keeps usage telemetry in an SQLite file under
# ~/.cache/Microsoft/DeveloperTools unless this is set before it is imported. mer looks at
# faces: nothing about a run is recorded that the user did not ask for, and no file is written
# besides the ones they named (a full disk or a read-only home must not break a stream).
# Setting ORT_DISABLE_TELEMETRY=0 in the environment keeps the runtime's default.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# Fastest first; "auto" takes the first that can run here.
AUTO_ORDER = ("tensorrt", "torch-cuda", "onnxruntime", "torch")
BACKENDS = AUTO_ORDER


def backend_class(name: str) -> type[Backend]:
    """The class for a backend name (imported on demand so optional runtimes stay optional)."""
    if name == "onnxruntime":
        from engines.runtime.onnx_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend
    if name == "torch":
        from engines.runtime.torch_backend import TorchBackend

        return TorchBackend
    if name == "tensorrt":
        from engines.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend
    if name == "torch-cuda":
        from engines.runtime.torch_cuda_backend import TorchCudaBackend

        return TorchCudaBackend
    raise InputError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}", column="backend")


def _onnxruntime_unavailable_reason() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed"
    return None


def probe_backends() -> dict[str, str | None]:
    """For each backend in AUTO_ORDER: None if it can run here, else the reason it cannot."""
    from engines.runtime.tensorrt_backend import tensorrt_unavailable_reason
    from engines.runtime.torch_cuda_backend import torch_cuda_unavailable_reason

    probes: dict[str, Callable[[], str | None]] = {
        "tensorrt": tensorrt_unavailable_reason,
        "torch-cuda": torch_cuda_unavailable_reason,
        "onnxruntime": _onnxruntime_unavailable_reason,
        "torch": lambda: None,  # torch is a core dependency
    }
    return {name: probes[name]() for name in AUTO_ORDER}


def choose_backend(availability: Mapping[str, str | None]) -> tuple[str, list[str]]:
    """The first backend of AUTO_ORDER that ``availability`` marks runnable, and why earlier ones were skipped."""
    skipped = []
    for name in AUTO_ORDER:
        reason = availability.get(name, "not probed")
        if reason is None:
            return name, skipped
        skipped.append(f"{name}: {reason}")
    raise MerError("no inference backend can run here (" + "; ".join(skipped) + ")")


def load(
    engine_dir: str | Path,
    backend: str = "auto",
    *,
    expect_preprocessing: Mapping[str, Any] | None = None,
    verify: bool = True,
    **options: Any,
) -> Backend:
    """Open an engine directory with the named backend (or the best available with ``"auto"``).

    ``options`` go to the backend (``threads`` for onnxruntime/torch, ``device`` for torch and
    torch-cuda, ``half``/``graph_batches`` for torch-cuda, ``half``/``max_batch``/``cache_dir``
    for tensorrt). ``verify=False`` skips the sha256
    check (only for tools that have just verified the directory themselves).
    """
    manifest: EngineManifest = read_manifest(engine_dir)
    if verify:
        verify_files(manifest)
    if expect_preprocessing is not None:
        manifest.check_preprocessing(expect_preprocessing)
    if backend == "auto":
        backend, skipped = choose_backend(probe_backends())
        log.info("engine %s: backend auto -> %s%s", manifest.engine_id, backend,
                 f" (skipped {'; '.join(skipped)})" if skipped else "")
    engine = backend_class(backend)(manifest, **options)
    log.info("loaded engine %s from %s with the %s backend", manifest.engine_id, manifest.engine_dir, engine.backend)
    return engine
