"""`mer export --format tensorrt` up to TensorRT's builder, with a stand-in for the tensorrt module.

TensorRT cannot be installed here, so these tests put a small stand-in in its place: it offers
only the TensorRT 11 Python API this build path may use (no ``BuilderFlag``, no
``int8_calibrator``, no ``platform_has_fast_fp16``: 11 removed them), records every call, and
returns fixed plan bytes. What it proves is mer's side: the network is strongly typed, the graph
parsed is the precision graph, the profile spans the batch range, and the engine directory and
manifest list what was written. TensorRT's own behaviour is ``tests/test_gpu.py``'s, on a GPU.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

import engines.runtime.tensorrt_backend as tensorrt_backend
from engines.errors import InputError
from engines.export import export_model
from engines.manifest import read_manifest, verify_files
from engines.runtime.tensorrt_backend import read_plan_file
from engines.runtime.tensorrt_support import calibration_contract, read_calibration_set, write_calibration_set
from tests.test_export import make_model

PLAN = b"PLAN FROM THE STAND-IN"


class _Recorder:
    def __init__(self, calls: list) -> None:
        self.calls = calls


class _Network(_Recorder):
    def get_input(self, index: int):
        self.calls.append(("network.get_input", index))
        return SimpleNamespace(name="input")


class _Parser(_Recorder):
    num_errors = 0

    def parse(self, data: bytes) -> bool:
        self.calls.append(("parser.parse", onnx.load_from_string(data)))
        return True


class _Profile(_Recorder):
    def set_shape(self, name, low, opt, high) -> None:
        self.calls.append(("profile.set_shape", name, low, opt, high))


class _Config(_Recorder):
    def set_memory_pool_limit(self, pool, size) -> None:
        self.calls.append(("config.set_memory_pool_limit", pool, size))

    def add_optimization_profile(self, profile) -> None:
        self.calls.append(("config.add_optimization_profile",))


class _Builder(_Recorder):
    def create_network(self, flags: int):
        self.calls.append(("builder.create_network", flags))
        return _Network(self.calls)

    def create_builder_config(self):
        return _Config(self.calls)

    def create_optimization_profile(self):
        return _Profile(self.calls)

    def build_serialized_network(self, network, config) -> bytes:
        self.calls.append(("builder.build_serialized_network",))
        return PLAN


def _tensorrt_11(calls: list):
    """A stand-in for ``import tensorrt`` offering only what TensorRT 11 still has."""

    class Logger:
        WARNING = 2

        def __init__(self, severity) -> None:
            pass

    return SimpleNamespace(
        __version__="11.1.0",
        Logger=Logger,
        Builder=lambda logger: _Builder(calls),
        OnnxParser=lambda network, logger: _Parser(calls),
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0),
        MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
    )


@pytest.fixture
def calls(monkeypatch):
    recorded: list = []
    monkeypatch.setattr(tensorrt_backend, "require_tensorrt", lambda: _tensorrt_11(recorded))
    monkeypatch.setattr(tensorrt_backend.torch.cuda, "get_device_name", lambda *args: "Stand-in GPU")
    return recorded


def _parsed(calls) -> onnx.ModelProto:
    (model,) = [call[1] for call in calls if call[0] == "parser.parse"]
    return model


def _op_types(model) -> set[str]:
    return {node.op_type for node in model.graph.node}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_plans_are_built_from_a_strongly_typed_network_of_the_precision_graph(calls, precision, tmp_path) -> None:
    manifest = export_model(make_model("ststnet"), tmp_path / "e", formats=("onnx", "tensorrt"),
                            precision=precision, max_batch=48)
    assert ("builder.create_network", 1 << 0) in calls  # STRONGLY_TYPED; no precision flag exists to set
    assert ("profile.set_shape", "input", (1, 3, 28, 28), (32, 3, 28, 28), (48, 3, 28, 28)) in calls
    parsed = _parsed(calls)
    weights = {init.name: init.data_type for init in parsed.graph.initializer}
    want = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT
    assert weights["model.conv1.weight"] == want
    header, plan = read_plan_file(tmp_path / "e" / f"model.{precision}.plan")
    assert plan == PLAN and header["tensorrt"] == "11.1.0" and header["device"] == "Stand-in GPU"
    assert header["precision"] == precision and header["max_batch"] == 48
    assert manifest.data["tensorrt"] == header
    names = set(manifest.data["files"])
    assert (f"model.{precision}.onnx" in names) == (precision == "fp16")
    verify_files(read_manifest(tmp_path / "e"))  # every listed file is there with its sha256
    if precision == "fp16":
        assert onnx.load(str(tmp_path / "e" / "model.fp16.onnx")) == parsed


def test_an_int8_plan_is_built_from_the_calibrated_qdq_graph_and_records_its_agreement(calls, tmp_path) -> None:
    plain = export_model(make_model("ststnet"), tmp_path / "plain")
    inputs = np.random.default_rng(0).uniform(0, 255, (40, 3, 28, 28)).astype(np.float32)
    calibration = write_calibration_set(tmp_path / "calib.npz", inputs, calibration_contract(plain.data),
                                        [str(i) for i in range(40)])
    manifest = export_model(make_model("ststnet"), tmp_path / "e", formats=("onnx", "tensorrt"),
                            precision="int8", calibration=calibration)
    parsed = _parsed(calls)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= _op_types(parsed)
    assert onnx.load(str(tmp_path / "e" / "model.int8.onnx")) == parsed
    info = manifest.data["tensorrt"]
    assert info["calibration_sha256"] and "QDQ int8" in info["graph_recipe"]
    agreement = info["calibration_agreement"]
    assert agreement["samples"] == 40 and 0 <= agreement["max_probability_gap"] <= 1
    assert 0 <= agreement["top1_agreement"] <= 1
    header, _ = read_plan_file(tmp_path / "e" / "model.int8.plan")
    assert "calibration_agreement" not in header  # the plan's key names what it depends on, nothing else
    assert {name: value for name, value in info.items() if name != "calibration_agreement"} == header
    assert json.loads(json.dumps(manifest.data))["files"]["model.int8.onnx"]["bytes"] > 0


def test_an_int8_plan_without_a_calibration_set_is_refused_before_any_build(calls, tmp_path) -> None:
    with pytest.raises(InputError, match="calibration"):
        export_model(make_model("ststnet"), tmp_path / "e", formats=("onnx", "tensorrt"), precision="int8")
    assert not any(call[0] == "builder.build_serialized_network" for call in calls)


def test_an_exported_int8_engine_rebuilds_elsewhere_from_its_own_graph_without_its_calibration_set(calls, tmp_path):
    plain = export_model(make_model("ststnet"), tmp_path / "plain")
    inputs = np.random.default_rng(1).uniform(0, 255, (32, 3, 28, 28)).astype(np.float32)
    path = write_calibration_set(tmp_path / "calib.npz", inputs, calibration_contract(plain.data),
                                 [str(i) for i in range(32)])
    export_model(make_model("ststnet"), tmp_path / "e", formats=("onnx", "tensorrt"), precision="int8", calibration=path)
    manifest = read_manifest(tmp_path / "e")
    other_gpu = _tensorrt_11([])
    other_gpu.__version__ = "11.2.0"  # another TensorRT: the shipped plan cannot be run, a build is due
    key, make_graph = tensorrt_backend.plan_source(other_gpu, manifest, "int8", 64)
    assert key.tensorrt == "11.2.0" and key.precision == "int8"
    assert key.calibration_sha256 == manifest.data["tensorrt"]["calibration_sha256"]
    assert key.graph_recipe == manifest.data["tensorrt"]["graph_recipe"]
    assert make_graph() == onnx.load(str(tmp_path / "e" / "model.int8.onnx"))  # the shipped graph, not a new one
    # With a calibration set given, the graph is made anew from model.onnx and keyed by that set.
    other_set = read_calibration_set(write_calibration_set(
        tmp_path / "other.npz", inputs * 0.5, calibration_contract(plain.data), [str(i) for i in range(32)]))
    key, make_graph = tensorrt_backend.plan_source(other_gpu, manifest, "int8", 64, other_set)
    assert key.calibration_sha256 == other_set.sha256 != manifest.data["tensorrt"]["calibration_sha256"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(make_graph())
    # The engine ships no fp16 graph: fp16 is made from model.onnx; fp32 is model.onnx itself.
    key, make_graph = tensorrt_backend.plan_source(other_gpu, manifest, "fp16", 64)
    assert key.calibration_sha256 is None and "float16" in key.graph_recipe
    key, make_graph = tensorrt_backend.plan_source(other_gpu, manifest, "fp32", 64)
    assert key.graph_recipe is None and make_graph() == onnx.load(str(tmp_path / "e" / "model.onnx"))


def test_without_a_precision_asked_an_engine_loads_at_the_precision_it_was_exported_with(calls, tmp_path):
    plain = export_model(make_model("ststnet"), tmp_path / "plain")
    assert tensorrt_backend.shipped_precision(plain) == "fp32"
    fp16 = export_model(make_model("ststnet"), tmp_path / "fp16", formats=("onnx", "tensorrt"), precision="fp16")
    assert tensorrt_backend.shipped_precision(fp16) == "fp16"
