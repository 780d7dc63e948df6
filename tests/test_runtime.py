"""The runtime: one ``load`` for every backend, the ``auto`` order, and every refusal.

Corruption tests copy one exported engine and damage the copy the way a bad transfer or a
hand edit would: a flipped byte, a truncated file, a swapped model, an edited manifest.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.errors import InputError, MerError
from engines.export import export_model
from engines.manifest import preprocessing_differences, sha256_file
from engines.runtime import AUTO_ORDER, choose_backend, load, probe_backends
from engines.runtime.tensorrt_backend import read_plan_file, tensorrt_unavailable_reason, write_plan_file
from tests.test_export import SMALLEST, make_model, random_images

NO_TENSORRT = tensorrt_unavailable_reason() is not None


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("engine")
    export_model(make_model(SMALLEST), out, overwrite=True)
    return out


@pytest.fixture
def engine_copy(engine_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(engine_dir, tmp_path / "engine"))


def _edit_manifest(engine: Path, edit) -> None:
    path = engine / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _resign(engine: Path, name: str) -> None:
    """Make the manifest's sha256 match a (damaged) file, as a careless re-packer would."""
    _edit_manifest(engine, lambda data: data["files"][name].update(sha256=sha256_file(engine / name)))


# --- backend choice -------------------------------------------------------------------------


def test_auto_order_prefers_tensorrt_then_torch_cuda_then_onnxruntime_then_torch() -> None:
    assert AUTO_ORDER == ("tensorrt", "torch-cuda", "onnxruntime", "torch")
    everything = dict.fromkeys(AUTO_ORDER)
    assert choose_backend(everything) == ("tensorrt", [])
    assert choose_backend({**everything, "tensorrt": "not installed"}) == ("torch-cuda", ["tensorrt: not installed"])
    assert choose_backend({**everything, "tensorrt": "no CUDA device", "torch-cuda": "no CUDA device"}) == (
        "onnxruntime", ["tensorrt: no CUDA device", "torch-cuda: no CUDA device"])
    assert choose_backend({"tensorrt": "a", "torch-cuda": "b", "onnxruntime": "not installed", "torch": None}) == (
        "torch", ["tensorrt: a", "torch-cuda: b", "onnxruntime: not installed"])
    with pytest.raises(MerError, match=r"no inference backend.*torch: broken"):
        choose_backend({"tensorrt": "a", "torch-cuda": "b", "onnxruntime": "c", "torch": "broken"})


@pytest.mark.skipif(not NO_TENSORRT or torch.cuda.is_available(), reason="a GPU is present here")
def test_auto_picks_onnxruntime_here_and_says_so(engine_dir: Path, caplog) -> None:
    probes = probe_backends()
    assert probes["tensorrt"] in {"tensorrt is not installed", "no CUDA device"}
    assert probes["torch-cuda"] == "no CUDA device visible to torch"
    assert probes["onnxruntime"] is None and probes["torch"] is None
    with caplog.at_level(logging.INFO, logger="engines.runtime"):
        engine = load(engine_dir)
    assert engine.backend == "onnxruntime"
    skipped = f"tensorrt: {probes['tensorrt']}; torch-cuda: no CUDA device visible to torch"
    assert any(f"backend auto -> onnxruntime (skipped {skipped})" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not NO_TENSORRT, reason="TensorRT and a GPU are present here")
def test_tensorrt_backend_without_tensorrt_says_how_to_get_it(engine_dir: Path) -> None:
    with pytest.raises(MerError, match=r"install mer\[tensorrt\] on an NVIDIA machine"):
        load(engine_dir, "tensorrt")


def test_unknown_backend_is_refused(engine_dir: Path) -> None:
    with pytest.raises(InputError, match=r"unknown backend 'openvino'.*auto, tensorrt, torch-cuda, onnxruntime, torch"):
        load(engine_dir, "openvino")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present here")
def test_torch_cuda_backend_without_a_gpu_says_so(engine_dir: Path) -> None:
    with pytest.raises(MerError, match=r"torch-cuda backend needs a CUDA device: no CUDA device visible"):
        load(engine_dir, "torch-cuda")


# --- predict --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_predict_contract(engine_dir: Path, backend: str) -> None:
    engine = load(engine_dir, backend)
    assert engine.backend == backend
    assert engine.class_names == tuple(engine.manifest.data["class_names"])
    images = random_images(engine.manifest.sample_shape, 5)
    scores = engine.predict(images)
    assert scores.dtype == np.float32 and scores.shape == (5, len(engine.class_names))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(engine.predict(torch.from_numpy(images)), scores)  # torch input, same result
    np.testing.assert_allclose(engine.predict(images.astype(np.uint8)), scores, atol=1e-6)  # uint8 is cast


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("bad_shape", [(2, 3, 32, 32), (3, 28, 28), (0, 3, 28, 28), (2, 1, 28, 28)])
def test_wrong_input_shape_is_refused(engine_dir: Path, backend: str, bad_shape: tuple[int, ...]) -> None:
    engine = load(engine_dir, backend)
    expected = ", ".join(map(str, engine.manifest.sample_shape))
    with pytest.raises(InputError, match=rf"expects a batch of shape \(N>=1, {expected}\), got \({bad_shape[0]}") as caught:
        engine.predict(np.zeros(bad_shape, dtype=np.float32))
    assert caught.value.column == "input"


# --- refusals at load -----------------------------------------------------------------------


def test_missing_engine_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"engine directory not found") as caught:
        load(tmp_path / "nowhere")
    assert caught.value.path == tmp_path / "nowhere"


def test_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no manifest.json") as caught:
        load(tmp_path)
    assert caught.value.path == tmp_path / "manifest.json"


def test_manifest_that_is_not_json(engine_copy: Path) -> None:
    (engine_copy / "manifest.json").write_text('{\n  "schema": "mer.engine/1",\n  oops\n}')
    with pytest.raises(InputError, match=r"not valid JSON") as caught:
        load(engine_copy)
    assert caught.value.row == 3


def test_unknown_schema_version(engine_copy: Path) -> None:
    _edit_manifest(engine_copy, lambda data: data.update(schema="mer.engine/2"))
    with pytest.raises(InputError, match=r"unknown manifest schema 'mer.engine/2'; this mer reads 'mer.engine/1'") as caught:
        load(engine_copy)
    assert caught.value.column == "schema"


def test_manifest_missing_a_field(engine_copy: Path) -> None:
    _edit_manifest(engine_copy, lambda data: data["model"].pop("version"))
    with pytest.raises(InputError, match=r"missing") as caught:
        load(engine_copy)
    assert caught.value.column == "model.version"


def test_missing_model_file(engine_copy: Path) -> None:
    (engine_copy / "model.onnx").unlink()
    with pytest.raises(InputError, match=r"file listed in the manifest is missing") as caught:
        load(engine_copy, "torch")  # every listed file is checked, whichever backend runs
    assert caught.value.path == engine_copy / "model.onnx"


@pytest.mark.parametrize("name", ["model.onnx", "weights.pth"])
def test_sha256_mismatch(engine_copy: Path, name: str) -> None:
    path = engine_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"sha256 mismatch") as caught:
        load(engine_copy)
    assert caught.value.path == path
    assert caught.value.column == f"files.{name}.sha256"


def test_truncated_model_onnx_is_refused_by_hash_then_by_parser(engine_copy: Path) -> None:
    path = engine_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match=r"sha256 mismatch"):
        load(engine_copy, "onnxruntime")
    _resign(engine_copy, "model.onnx")
    with pytest.raises(InputError, match=r"not a loadable ONNX model \(corrupt or truncated\?\)") as caught:
        load(engine_copy, "onnxruntime")
    assert caught.value.path == path


def test_truncated_weights_are_refused_by_the_torch_backend(engine_copy: Path) -> None:
    path = engine_copy / "weights.pth"
    path.write_bytes(path.read_bytes()[:100])
    _resign(engine_copy, "weights.pth")
    with pytest.raises(InputError, match=r"not a readable torch weights file") as caught:
        load(engine_copy, "torch")
    assert caught.value.path == path


def test_model_onnx_of_another_engine_is_refused(engine_copy: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    export_model(make_model(SMALLEST, seed=7), other)
    shutil.copy(other / "model.onnx", engine_copy / "model.onnx")
    _resign(engine_copy, "model.onnx")
    with pytest.raises(InputError, match=r"belongs to another engine") as caught:
        load(engine_copy, "onnxruntime")
    assert caught.value.column == "mer.engine"


# --- preprocessing ---------------------------------------------------------------------------


def test_matching_preprocessing_is_accepted(engine_dir: Path) -> None:
    engine = load(engine_dir, "onnxruntime")
    signature = dict(engine.manifest.preprocessing)
    engine.check_preprocessing(signature)
    assert load(engine_dir, "torch", expect_preprocessing=signature).backend == "torch"


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", [112, 112]), ("channel_order", "RGB"), ("flow_method", "opencv-farneback"), ("value_range", [0.0, 1.0])],
)
def test_different_preprocessing_names_the_field(engine_dir: Path, field: str, value) -> None:
    engine = load(engine_dir, "onnxruntime")
    signature = {**engine.manifest.preprocessing, field: value}
    with pytest.raises(InputError, match=rf"{field}: engine .*, caller {re.escape(json.dumps(value))}") as caught:
        engine.check_preprocessing(signature)
    assert caught.value.column == f"preprocessing.{field}"
    with pytest.raises(InputError, match=rf"preprocessing differs.*{field}"):
        load(engine_dir, "onnxruntime", expect_preprocessing=signature)


def test_preprocessing_differences_lists_every_field() -> None:
    engine = {"size": [28, 28], "flow_params": {"nscales": 5}, "mean": None}
    caller = {"size": (28, 28), "flow_params": {"nscales": 3}, "extra": 1}
    assert preprocessing_differences(engine, caller) == [
        "extra: engine (missing), caller 1",
        'flow_params: engine {"nscales": 5}, caller {"nscales": 3}',
        "mean: engine null, caller (missing)",
    ]


# --- TensorRT plan files (the part of the TensorRT path that runs without TensorRT) ----------


def test_plan_file_round_trip_and_refusals(tmp_path: Path) -> None:
    header = {"onnx_sha256": "ab" * 32, "tensorrt": "10.3.0", "precision": "fp16", "max_batch": 64}
    path = write_plan_file(tmp_path / "model.fp16.plan", header, b"\x00plan-bytes\xff")
    assert read_plan_file(path) == (header, b"\x00plan-bytes\xff")
    path.write_bytes(path.read_bytes()[:2])
    with pytest.raises(InputError, match=r"too short for a header"):
        read_plan_file(path)
    path.write_bytes((1000).to_bytes(4, "little") + b"{}")
    with pytest.raises(InputError, match=r"header length 1000 exceeds the file"):
        read_plan_file(path)
    path.write_bytes((2).to_bytes(4, "little") + b"{}")
    with pytest.raises(InputError, match=r"no plan after it"):
        read_plan_file(path)
