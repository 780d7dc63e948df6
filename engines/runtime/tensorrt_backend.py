"""TensorRT backend (TensorRT 10 and 11 Python API, NVIDIA GPU): builds a plan from ``model.onnx`` and runs it.

TensorRT is an optional extra (``pip install mer[tensorrt]``, NVIDIA machines only); it is
imported only here, when this backend is asked for, and its absence is a clear
:class:`MerError`. A plan is built from a strongly typed network parsed from the precision
graph of ``model.onnx`` (``precision_graphs``: the graph itself for FP32, a float16 graph for
FP16, an explicitly quantized Q/DQ graph calibrated on a calibration set for INT8), with one
optimisation profile covering batch 1..max_batch. No precision builder flag or calibrator is
used, so the same code builds on TensorRT 10 and on 11, which removed both.

A plan is only valid for one ONNX file, one TensorRT version, one GPU model and one set of
build options. Each plan file starts with a header: 4-byte little-endian length, then JSON
naming all of them (``PlanKey``). Loading uses the engine directory's own plan when its header
matches this machine, else the plan cache (``PlanCache``: ``~/.cache/mer/tensorrt``, one file
per key), else builds one and caches it; a plan built for another key is never run.
Inference binds torch CUDA tensors with ``set_tensor_address`` and runs ``execute_async_v3``
on torch's current stream; :meth:`TensorRTBackend.probabilities` takes and returns CUDA
tensors, so a batch already on the GPU never visits the host.

Verified here (no GPU, TensorRT not installable): the import guard and its error, the plan
header format, the cache keys and lookups, the ONNX checks, calibration sets, and the precision
graphs, which ONNX Runtime runs on the CPU. The build and execute path runs only where TensorRT
is installed (``tests/test_gpu.py`` on a GPU machine).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.errors import InputError, MerError
from engines.manifest import EngineManifest, make_world_readable, sha256_file
from engines.runtime.base import Backend
from engines.runtime.precision_graphs import graph_agreement, graph_recipe, precision_graph
from engines.runtime.tensorrt_support import (
    PRECISIONS,
    CalibrationSet,
    PlanCache,
    PlanKey,
    check_onnx_for_tensorrt,
    read_calibration_set,
    read_graph,
)

__all__ = [
    "INSTALL_HINT",
    "TensorRTBackend",
    "build_plan_file",
    "import_tensorrt",
    "plan_source",
    "read_plan_file",
    "require_tensorrt",
    "shipped_precision",
    "tensorrt_unavailable_reason",
    "write_plan_file",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "install mer[tensorrt] on an NVIDIA machine (pip install 'mer[tensorrt]', TensorRT >= 10)"
ONNX_NAME = "model.onnx"
_HEADER_LENGTH = struct.Struct("<I")
_WORKSPACE_BYTES = 1 << 30
_OPT_BATCH = 32  # the batch size the profile is tuned for


def import_tensorrt():
    """The ``tensorrt`` module, or a :class:`MerError` saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MerError(f"the TensorRT backend needs the tensorrt package ({exc}); {INSTALL_HINT}") from None
    if int(tensorrt.__version__.split(".")[0]) < 10:
        raise MerError(f"TensorRT {tensorrt.__version__} is too old; {INSTALL_HINT}")
    return tensorrt


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT can run here, else why not (used by ``backend="auto"``)."""
    try:
        import_tensorrt()
    except MerError:
        return "tensorrt is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def write_plan_file(path: Path, header: Mapping[str, Any], plan: bytes) -> Path:
    """Write ``[length][JSON header][plan]`` atomically."""
    encoded = json.dumps(dict(header), sort_keys=True).encode("utf-8")
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(_HEADER_LENGTH.pack(len(encoded)) + encoded + bytes(plan))
        make_world_readable(Path(tmp_name))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_plan_file(path: Path) -> tuple[dict, bytes]:
    """The header and the serialised plan of a file written by :func:`write_plan_file`."""
    data = Path(path).read_bytes()
    if len(data) < _HEADER_LENGTH.size:
        raise InputError("not a mer TensorRT plan (too short for a header)", path=path)
    (length,) = _HEADER_LENGTH.unpack_from(data)
    end = _HEADER_LENGTH.size + length
    if end > len(data):
        raise InputError(f"not a mer TensorRT plan (header length {length} exceeds the file)", path=path)
    try:
        header = json.loads(data[_HEADER_LENGTH.size:end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError("not a mer TensorRT plan (unreadable header)", path=path) from None
    if not isinstance(header, dict) or end == len(data):
        raise InputError("not a mer TensorRT plan (no header object or no plan after it)", path=path)
    return header, data[end:]


def plan_key(trt, onnx_sha256: str, precision: str, max_batch: int, calibration: CalibrationSet | None = None,
             *, recorded: Mapping[str, Any] | None = None) -> PlanKey:
    """The cache key of a plan built here (this TensorRT, this GPU) from that ONNX file; with
    ``recorded`` (a plan header from the engine's manifest), from the precision graph that header
    describes rather than from one made now."""
    if recorded is not None:
        calibration_sha256, recipe = recorded.get("calibration_sha256"), recorded.get("graph_recipe")
    else:
        calibration_sha256 = calibration.sha256 if precision == "int8" and calibration is not None else None
        recipe = graph_recipe(precision)
    return PlanKey(
        onnx_sha256=onnx_sha256,
        tensorrt=trt.__version__,
        device=torch.cuda.get_device_name(),
        precision=precision,
        max_batch=max_batch,
        calibration_sha256=calibration_sha256,
        graph_recipe=recipe,
    )


def shipped_precision(manifest: EngineManifest) -> str:
    """The precision of the plan the engine was exported with (``mer export --format tensorrt
    --precision P``), or fp32 for an engine exported without one."""
    return (manifest.data.get("tensorrt") or {}).get("precision") or "fp32"


def plan_source(trt, manifest: EngineManifest, precision: str, max_batch: int,
                calibration: CalibrationSet | None = None) -> tuple[PlanKey, Callable[[], Any]]:
    """The key of the plan that loading ``manifest``'s engine here needs, and how to make the graph
    should it have to be built. An engine exported with an fp16 or int8 plan ships that plan's
    precision graph (``model.<precision>.onnx``); without a calibration set given, a build on
    another GPU or TensorRT uses it, so an int8 engine moves without its calibration set. With one
    given, or with no shipped graph, the graph is made from ``model.onnx``."""
    onnx_sha256 = manifest.files[ONNX_NAME]["sha256"]
    shipped_name = f"model.{precision}.onnx"
    recorded = manifest.data.get("tensorrt") or {}
    if (calibration is None and precision != "fp32" and shipped_name in manifest.files
            and recorded.get("precision") == precision):
        key = plan_key(trt, onnx_sha256, precision, max_batch, recorded=recorded)
        return key, lambda: read_graph(manifest.file_path(shipped_name))
    key = plan_key(trt, onnx_sha256, precision, max_batch, calibration)
    return key, lambda: precision_graph(manifest.file_path(ONNX_NAME), precision, calibration)


def _build_plan(trt, graph, source: Path, sample_shape: tuple[int, ...], max_batch: int) -> bytes:
    """A serialised plan with a dynamic-batch profile (1..max_batch) from a precision graph
    (``precision_graphs``): a strongly typed network, so no precision flag is set; every
    tensor's type comes from the graph. ``source`` is the ONNX file it came from, for errors."""
    problems = check_onnx_for_tensorrt(graph, max_batch)
    if problems:
        raise InputError("TensorRT would refuse this model: " + "; ".join(problems), path=source)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10: opt in to strong typing (networks are always explicit-batch); 11: always on, the flag ignored.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT cannot parse the ONNX model: {errors}", path=source)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    opt_batch = min(max_batch, _OPT_BATCH)
    profile.set_shape(input_name, (1, *sample_shape), (opt_batch, *sample_shape), (max_batch, *sample_shape))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise MerError(f"TensorRT failed to build a plan from {source} (see the TensorRT log above)")
    return bytes(plan)


def require_tensorrt():
    """The ``tensorrt`` module when TensorRT can build and run here (package and CUDA device), else MerError."""
    trt = import_tensorrt()
    if not torch.cuda.is_available():
        raise MerError(f"TensorRT needs a CUDA device and none is visible; {INSTALL_HINT}")
    return trt


def build_plan_file(onnx_path: Path, out_dir: Path, *, sample_shape: tuple[int, ...], precision: str = "fp32",
                    max_batch: int = 64, calibration: CalibrationSet | None = None) -> tuple[list[Path], dict]:
    """Build ``out_dir/model.<precision>.plan`` from ``onnx_path``; returns the files written and the plan's
    header. An fp16 or int8 plan's precision graph is written beside it (``model.<precision>.onnx``) and,
    for int8, the header records how closely that graph follows the fp32 one on the calibration set."""
    trt = require_tensorrt()
    key = plan_key(trt, sha256_file(onnx_path), precision, max_batch, calibration)
    graph = precision_graph(onnx_path, precision, calibration)
    plan = _build_plan(trt, graph, Path(onnx_path), tuple(sample_shape), max_batch)
    header = key.header()
    written = [write_plan_file(Path(out_dir) / f"model.{precision}.plan", header, plan)]
    info = dict(header)
    if precision != "fp32":
        graph_path = Path(out_dir) / f"model.{precision}.onnx"
        graph_path.write_bytes(graph.SerializeToString())
        make_world_readable(graph_path)
        written.append(graph_path)
        if calibration is not None:
            info["calibration_agreement"] = graph_agreement(onnx_path, graph, calibration.inputs)
    log.info("built TensorRT plan %s (%s, batch 1..%d)", written[0], precision, max_batch)
    return written, info


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, manifest: EngineManifest, *, precision: str | None = None, half: bool | None = None,
                 max_batch: int = 64, calibration: str | Path | CalibrationSet | None = None,
                 cache_dir: str | Path | None = None, device: int = 0, threads: int | None = None) -> None:
        # ``threads`` is accepted (and unused: inference runs on the GPU) so that callers can
        # pass the same options to ``load(..., backend="auto")`` whichever backend it picks.
        # ``half`` is the older spelling: True for ``precision="fp16"``, False for "fp32". Neither
        # given: the precision the engine was exported with (``shipped_precision``), so an int8
        # engine runs as int8.
        super().__init__(manifest)
        if precision is None and half is not None:
            precision = "fp16" if half else "fp32"
        precision = precision or shipped_precision(manifest)
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", column="precision")
        if isinstance(calibration, (str, Path)):
            calibration = read_calibration_set(calibration)
        if calibration is not None:
            calibration.check_for(manifest)
        trt = require_tensorrt()
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)
        self.max_batch = max_batch
        self.precision = precision
        self.half = precision != "fp32"
        key, make_graph = plan_source(trt, manifest, precision, max_batch, calibration)
        plan = self._plan(trt, manifest, key, make_graph, PlanCache(cache_dir))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise MerError("TensorRT could not deserialize the plan (see the TensorRT log above)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise MerError(f"expected one input and one output tensor, the plan has {inputs} and {outputs}")
        self._input, self._output = inputs[0], outputs[0]
        output_shape = tuple(self.engine.get_tensor_shape(self._output))
        classes = output_shape[-1] if output_shape else -1
        if classes >= 0 and classes != len(self.class_names):  # predict() sizes the output buffer from class_names
            raise InputError(f"the plan outputs {classes} class scores per sample, but the manifest's class_names "
                             f"lists {len(self.class_names)}", path=manifest.file_path(ONNX_NAME), column="class_names")

    @staticmethod
    def _plan(trt, manifest: EngineManifest, key: PlanKey, make_graph: Callable[[], Any], cache: PlanCache) -> bytes:
        """The engine directory's own plan if it was built for ``key``; else the cache's; else a fresh build."""
        shipped = manifest.engine_dir / f"model.{key.precision}.plan"
        if shipped.is_file():
            header, plan = read_plan_file(shipped)
            if header == key.header():
                log.info("using the engine's TensorRT plan %s", shipped)
                return plan
            log.info("the engine's plan %s was built for %s, not this machine; using the plan cache", shipped, header)
        onnx_path = manifest.file_path(ONNX_NAME)

        def build() -> bytes:
            log.info("building a TensorRT %s plan for %s (batch 1..%d) into %s", key.precision, manifest.engine_id,
                     key.max_batch, cache.directory)
            return _build_plan(trt, make_graph(), onnx_path, manifest.sample_shape, key.max_batch)

        plan, built = cache.get_or_build(key, build)
        if not built:
            log.info("using cached TensorRT plan %s", cache.path(key))
        return plan

    def predict(self, batch) -> np.ndarray:
        """Like every backend: ``(N, C)`` float32 probabilities as numpy."""
        if isinstance(batch, torch.Tensor):
            return self.probabilities(batch).cpu().numpy()
        return self._scores(self._as_input_array(batch))

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, C) float32 probabilities on the GPU for a (N, *input shape) tensor (any device): a batch
        already on the GPU is read where it is, and the result stays there (as ``torch-cuda``'s)."""
        self._check_batch_shape(tuple(batch.shape))
        return self._run(batch.to(self.device, torch.float32).contiguous())

    def _scores(self, batch: np.ndarray) -> np.ndarray:
        return self._run(torch.from_numpy(batch).to(self.device)).cpu().numpy()

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] > self.max_batch:  # the profile's limit: run in chunks
            return torch.cat([self._run(part) for part in batch.split(self.max_batch)])
        output = torch.empty((batch.shape[0], len(self.class_names)), dtype=torch.float32, device=self.device)
        self.context.set_input_shape(self._input, tuple(batch.shape))
        self.context.set_tensor_address(self._input, batch.data_ptr())
        self.context.set_tensor_address(self._output, output.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise MerError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        stream.synchronize()
        return output
