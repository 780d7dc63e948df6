"""TensorRT backend (TensorRT 10 Python API, NVIDIA GPU): builds a plan from ``model.onnx`` and runs it.

TensorRT is an optional extra (``pip install mer[tensorrt]``, NVIDIA machines only); it is
imported only here, when this backend is asked for, and its absence is a clear
:class:`MerError`. The plan is built with one optimisation profile covering batch 1..max_batch
(FP32, or FP16 with ``half=True``) and cached next to the engine as ``model.<precision>.plan``.

A plan is only valid for the TensorRT version and GPU that built it, and for one ONNX file, so
each plan file starts with a header: 4-byte little-endian length, then JSON naming the ONNX
sha256, TensorRT version, GPU, precision and batch range. A cached plan whose header does not
match is rebuilt, never run. Inference binds torch CUDA tensors with ``set_tensor_address`` and
runs ``execute_async_v3`` on torch's current stream.

Verified here: the import guard and its error, the plan header format. Not verified here: the
build and execute path (no GPU and no installable TensorRT on the development machine).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.errors import InputError, MerError
from engines.manifest import EngineManifest, make_world_readable, sha256_file
from engines.runtime.base import Backend

__all__ = [
    "INSTALL_HINT",
    "TensorRTBackend",
    "build_plan_file",
    "import_tensorrt",
    "read_plan_file",
    "require_tensorrt",
    "tensorrt_unavailable_reason",
    "write_plan_file",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "install mer[tensorrt] on an NVIDIA machine (pip install 'mer[tensorrt]', TensorRT >= 10)"
ONNX_NAME = "model.onnx"
_HEADER_LENGTH = struct.Struct("<I")
_WORKSPACE_BYTES = 1 << 30


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


def _plan_header(trt, onnx_sha256: str, half: bool, max_batch: int) -> dict:
    return {
        "onnx_sha256": onnx_sha256,
        "tensorrt": trt.__version__,
        "device": torch.cuda.get_device_name(),
        "precision": "fp16" if half else "fp32",
        "max_batch": max_batch,
    }


def _build_plan(trt, onnx_path: Path, sample_shape: tuple[int, ...], half: bool, max_batch: int) -> bytes:
    """Parse the ONNX file and build a serialised plan with a dynamic-batch profile (1..max_batch)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT cannot parse the ONNX model: {errors}", path=onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
    if half:
        if not builder.platform_has_fast_fp16:
            raise MerError(f"FP16 requested but {torch.cuda.get_device_name()} has no fast FP16")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    profile.set_shape(input_name, (1, *sample_shape), (1, *sample_shape), (max_batch, *sample_shape))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise MerError(f"TensorRT failed to build a plan from {onnx_path} (see the TensorRT log above)")
    return bytes(plan)


def require_tensorrt():
    """The ``tensorrt`` module when TensorRT can build and run here (package and CUDA device), else MerError."""
    trt = import_tensorrt()
    if not torch.cuda.is_available():
        raise MerError(f"TensorRT needs a CUDA device and none is visible; {INSTALL_HINT}")
    return trt


def build_plan_file(onnx_path: Path, out_dir: Path, *, sample_shape: tuple[int, ...], half: bool = False,
                    max_batch: int = 64) -> tuple[Path, dict]:
    """Build ``out_dir/model.<precision>.plan`` from ``onnx_path``; returns its path and header."""
    trt = require_tensorrt()
    header = _plan_header(trt, sha256_file(onnx_path), half, max_batch)
    plan = _build_plan(trt, onnx_path, tuple(sample_shape), half, max_batch)
    path = write_plan_file(Path(out_dir) / f"model.{header['precision']}.plan", header, plan)
    log.info("built TensorRT plan %s (%s, batch 1..%d)", path, header["precision"], max_batch)
    return path, header


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, manifest: EngineManifest, *, half: bool = False, max_batch: int = 64,
                 cache_dir: str | Path | None = None, device: int = 0) -> None:
        super().__init__(manifest)
        trt = require_tensorrt()
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)
        self.max_batch = max_batch
        plan = self._plan(trt, manifest, half, max_batch, Path(cache_dir) if cache_dir else manifest.engine_dir)
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

    @staticmethod
    def _plan(trt, manifest: EngineManifest, half: bool, max_batch: int, cache_dir: Path) -> bytes:
        """A cached plan whose header matches this ONNX file, TensorRT, GPU and options; else a fresh build."""
        onnx_path = manifest.file_path(ONNX_NAME)
        wanted = _plan_header(trt, manifest.files[ONNX_NAME]["sha256"], half, max_batch)
        cached = cache_dir / f"model.{wanted['precision']}.plan"
        if cached.is_file():
            header, plan = read_plan_file(cached)
            if header == wanted:
                log.info("using cached TensorRT plan %s", cached)
                return plan
            log.info("cached TensorRT plan %s was built for %s; rebuilding", cached, header)
        cache_dir.mkdir(parents=True, exist_ok=True)
        path, _ = build_plan_file(onnx_path, cache_dir, sample_shape=manifest.sample_shape, half=half,
                                  max_batch=max_batch)
        return read_plan_file(path)[1]

    def predict(self, batch) -> np.ndarray:
        """Like every backend; a CUDA tensor input stays on the GPU (no host round trip)."""
        if isinstance(batch, torch.Tensor):
            self._check_batch_shape(tuple(batch.shape))
            tensor = batch
        else:
            tensor = torch.from_numpy(self._as_input_array(batch))
        return self._run(tensor.to(self.device, torch.float32).contiguous()).cpu().numpy()

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
