"""Everything about TensorRT engines that can be decided without TensorRT or a GPU.

* :func:`check_onnx_for_tensorrt`: static checks that TensorRT 10's ONNX parser will take a
  model (opset range, every operator in its support matrix, one input whose only dynamic
  axis is the batch, a profile batch range TensorRT accepts). Run by ``mer export`` before
  any build, and by the tests on every registered model.
* :class:`PlanCache`: where built plans live. A plan is only valid for one ONNX file, one
  TensorRT version, one GPU model and one set of build options, so all of them are in the
  cache key (the file name) and again in the plan file's header, which is checked on load.
* Calibration sets for INT8 builds: :func:`write_calibration_set` / :func:`read_calibration_set`,
  a ``.npz`` holding model inputs exactly as the engine takes them plus the engine input
  contract they were made for, so a set made for another input is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.cache import mer_cache_dir
from engines.errors import InputError

__all__ = [
    "PRECISIONS",
    "TENSORRT_OPSETS",
    "TENSORRT_ONNX_OPS",
    "CalibrationSet",
    "PlanCache",
    "PlanKey",
    "check_onnx_for_tensorrt",
    "default_plan_cache_dir",
    "graph_inputs",
    "read_calibration_set",
    "read_graph",
    "write_calibration_set",
]

PRECISIONS = ("fp32", "fp16", "int8")

# ONNX opsets TensorRT 10's parser documents support for.
TENSORRT_OPSETS = range(9, 21)

# The ONNX operators of TensorRT 10's parser support matrix (onnx-tensorrt, docs/operators.md)
# that a vision model can produce. An operator outside this list is reported, not guessed at.
TENSORRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GridSample GroupNormalization HardSigmoid HardSwish Identity If InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM
MatMul Max MaxPool Mean Min Mod Mul Neg NonZero Not OneHot Or Pad PRelu Pow QuantizeLinear Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize RoiAlign Round ScatterElements ScatterND Selu Shape
Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub
Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# TensorRT profiles: the batch range of one optimisation profile.
_MAX_PROFILE_BATCH = 4096


def check_onnx_for_tensorrt(onnx_model, max_batch: int) -> list[str]:
    """Problems TensorRT 10 would have with this ONNX model (a file or an ``onnx.ModelProto``) and
    batch range (empty: none found)."""
    import onnx

    model = onnx_model if isinstance(onnx_model, onnx.ModelProto) else read_graph(onnx_model, load_external_data=False)
    problems = []
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    opset = opsets.get("ai.onnx")
    if opset is None or opset not in TENSORRT_OPSETS:
        problems.append(f"ONNX opset {opset} is outside TensorRT 10's range "
                        f"{TENSORRT_OPSETS.start}..{TENSORRT_OPSETS.stop - 1}")
    unsupported = sorted({
        f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        for node in _all_nodes(model.graph)
        if node.domain not in ("", "ai.onnx") or node.op_type not in TENSORRT_ONNX_OPS
    })
    if unsupported:
        problems.append(f"operators outside TensorRT's ONNX support matrix: {', '.join(unsupported)}")
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        problems.append(f"expected one input tensor, found {len(inputs)}: {[value.name for value in inputs]}")
    else:
        dims = inputs[0].type.tensor_type.shape.dim
        dynamic = [index for index, dim in enumerate(dims) if not dim.HasField("dim_value")]
        if dynamic != [0]:
            problems.append(f"input {inputs[0].name!r}: only axis 0 (the batch) may be dynamic, dynamic axes are {dynamic}")
    if not 1 <= max_batch <= _MAX_PROFILE_BATCH:
        problems.append(f"profile batch range 1..{max_batch} is outside 1..{_MAX_PROFILE_BATCH}")
    return problems


def read_graph(path: str | Path, load_external_data: bool = True):
    """An ONNX file as a ``ModelProto``, or an :class:`InputError` naming the file."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        raise InputError(f"not a readable ONNX model ({exc})", path=Path(path)) from None


def graph_inputs(model) -> list:
    """The inputs a caller feeds (``graph.input`` less the initializers some exporters list there)."""
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _all_nodes(graph):
    """Every node of a graph, including those inside If/Loop subgraphs."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


# --- the plan cache -------------------------------------------------------------------------------


def default_plan_cache_dir() -> Path:
    """``$MER_CACHE/tensorrt``, else ``$XDG_CACHE_HOME/mer/tensorrt``, else ``~/.cache/mer/tensorrt``."""
    return mer_cache_dir() / "tensorrt"


@dataclass(frozen=True)
class PlanKey:
    """What a TensorRT plan is valid for; a plan built for any other key is never run."""

    onnx_sha256: str
    tensorrt: str
    device: str
    precision: str
    max_batch: int
    calibration_sha256: str | None = None  # int8 only: the calibration set it was built from
    graph_recipe: str | None = None  # fp16 / int8: how the precision graph was made (precision_graphs)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
                             column="precision")
        if self.precision == "int8" and not self.calibration_sha256:
            raise InputError("an int8 plan needs a calibration set", column="calibration")

    def header(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if value is not None}

    def file_name(self) -> str:
        """A readable, unique file name: ONNX digest, GPU, TensorRT version, precision, batch range."""
        device = re.sub(r"[^A-Za-z0-9]+", "-", self.device).strip("-").lower() or "gpu"
        digest = hashlib.sha256(json.dumps(self.header(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.onnx_sha256[:16]}-{device}-trt{self.tensorrt}-{self.precision}-b{self.max_batch}-{digest}.plan"


class PlanCache:
    """Plans in one folder, each under its key's file name with the key again in its header."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_plan_cache_dir()

    def path(self, key: PlanKey) -> Path:
        return self.directory / key.file_name()

    def load(self, key: PlanKey) -> bytes | None:
        """The cached plan for ``key``, or None (missing, unreadable or built for another key)."""
        from engines.runtime.tensorrt_backend import read_plan_file

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            header, plan = read_plan_file(path)
        except InputError:
            return None
        return plan if header == key.header() else None

    def store(self, key: PlanKey, plan: bytes) -> Path:
        from engines.runtime.tensorrt_backend import write_plan_file

        self.directory.mkdir(parents=True, exist_ok=True)
        return write_plan_file(self.path(key), key.header(), plan)

    def get_or_build(self, key: PlanKey, build) -> tuple[bytes, bool]:
        """(plan, built): the cached plan for ``key``, else ``build()``'s, stored for next time."""
        plan = self.load(key)
        if plan is not None:
            return plan, False
        plan = build()
        self.store(key, plan)
        return plan, True


# --- calibration sets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationSet:
    """Model inputs for INT8 calibration, and the input contract they follow."""

    inputs: np.ndarray  # (N, *sample_shape) float32, exactly what the engine takes
    contract: dict[str, Any]  # {"shape": [...], "channel_order": ..., "value_range": [...], "preprocessing": {...}}
    sample_ids: tuple[str, ...]
    path: Path | None = None

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.inputs, dtype=np.float32).tobytes())
        digest.update(json.dumps(self.contract, sort_keys=True).encode())
        return digest.hexdigest()

    def check_for(self, manifest) -> None:
        """Refuse a set made for another input shape, plane order, value range or preprocessing."""
        expected = calibration_contract(manifest.data)
        for field, value in expected.items():
            if self.contract.get(field) != value:
                raise InputError(
                    f"calibration set made for {field} {self.contract.get(field)!r}, the engine takes {value!r}",
                    path=self.path, column=field,
                )


def calibration_contract(manifest_data: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an engine manifest a calibration set must match."""
    spec = manifest_data["input"]
    return {
        "shape": list(spec["shape"][1:]),
        "channel_order": spec.get("channel_order"),
        "value_range": list(spec.get("value_range") or []),
        "preprocessing": json.loads(json.dumps(manifest_data.get("preprocessing", {}))),
    }


def write_calibration_set(path: str | Path, inputs: np.ndarray, contract: Mapping[str, Any],
                          sample_ids: Sequence[str]) -> Path:
    """Write ``inputs`` (N, *shape) with their contract and sample ids to a ``.npz`` file."""
    path = Path(path)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise InputError(f"a calibration set needs at least one sample, got shape {inputs.shape}", path=path)
    if list(inputs.shape[1:]) != list(contract["shape"]):
        raise InputError(f"inputs of shape {inputs.shape[1:]} do not match the contract's {contract['shape']}",
                         path=path, column="shape")
    if len(sample_ids) != inputs.shape[0]:
        raise InputError(f"{len(sample_ids)} sample ids for {inputs.shape[0]} inputs", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # np.savez would append .npz to a name without it
        np.savez(handle, inputs=inputs, contract=np.array(json.dumps(dict(contract), sort_keys=True)),
                 sample_ids=np.array(list(sample_ids)))
    return path


def read_calibration_set(path: str | Path) -> CalibrationSet:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = data["inputs"].astype(np.float32)
            contract = json.loads(str(data["contract"]))
            sample_ids = tuple(str(s) for s in data["sample_ids"])
    except FileNotFoundError:
        raise InputError("calibration set not found", path=path) from None
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"not a mer calibration set ({exc})", path=path) from None
    if list(inputs.shape[1:]) != list(contract.get("shape", [])):
        raise InputError(f"inputs of shape {inputs.shape[1:]} do not match the recorded {contract.get('shape')}",
                         path=path, column="shape")
    return CalibrationSet(inputs, contract, sample_ids, path)
