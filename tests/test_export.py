"""Export round trips for every registered model, and ``mer export``'s choices and refusals.

Parametrised over ``list_models()``: a model added to the registry is exported, reloaded by
both runtimes and checked for ONNX Runtime / torch parity the day it is registered.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engines.checkpoints import write_state_dict
from engines.errors import InputError, MerError
from engines.export import DEFAULT_OPSET, PARITY_ATOL, export_checkpoint, export_model, weights_digest
from engines.manifest import SCHEMA, preprocessing_signature, read_manifest, sha256_file
from engines.models import is_model, list_models
from engines.runtime import load
from engines.runtime.tensorrt_backend import tensorrt_unavailable_reason
from streamer.cli import main as mer
from tests.model_zoo import random_images as model_zoo_images
from tests.model_zoo import fake_run, small_model, small_options

MODEL_NAMES = list_models()
# The registered model with the fewest parameters: the one the option and CLI tests export.
SMALLEST = "ststnet"


def make_model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A registry model at its small test size (tests/model_zoo.py) with seeded random weights and
    non-trivial BatchNorm statistics."""
    model = small_model(name, seed, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return model.eval()


def random_images(shape: tuple[int, ...], batch: int, seed: int = 0, value_range=(0.0, 255.0)) -> np.ndarray:
    """Random whole numbers in the engine's value range (0..255 images), or uniform values in a
    narrower range (0..1 face crops), of the engine's input shape, as float32."""
    low, high = value_range
    if high - low >= 255:
        return np.random.default_rng(seed).integers(int(low), int(high) + 1, size=(batch, *shape)).astype(np.float32)
    return model_zoo_images(shape, batch, value_range, seed)


@pytest.fixture(scope="module", params=MODEL_NAMES)
def exported(request, tmp_path_factory):
    """(model, engine directory) for each registered model, exported once per module."""
    model = make_model(request.param)
    out = tmp_path_factory.mktemp(f"engine_{request.param}")
    export_model(model, out, overwrite=True, model_args=small_options(request.param))
    return model, out


def test_manifest_describes_the_model(exported) -> None:
    model, out = exported
    manifest = read_manifest(out)
    cfg = model.cfg
    data = manifest.data
    assert data["schema"] == SCHEMA == "mer.engine/1"
    assert data["model"]["name"] == cfg.name
    assert data["model"]["version"] == weights_digest(model.state_dict())[:12] == manifest.version
    assert data["model"]["args"] == {**small_options(cfg.name), "label_names": list(cfg.label_names)}
    assert data["input"]["shape"] == ["batch", *cfg.input_size]
    assert data["input"]["dtype"] == "float32"
    assert data["input"]["layout"] == ("NCHW" if len(cfg.input_size) == 3 else "NTCHW")
    assert data["input"]["channel_order"] == cfg.channel_order
    assert data["input"]["value_range"] == list(cfg.value_range)
    assert data["output"]["shape"] == ["batch", cfg.num_classes]
    assert data["class_names"] == list(cfg.label_names)
    assert data["preprocessing"] == preprocessing_signature(cfg)
    assert data["preprocessing"]["size"] == list(cfg.input_size[-2:])
    assert data["model_cfg"] == json.loads(json.dumps(cfg.to_dict()))
    assert data["metrics"] is None and data["training"]["datasets"] == list(cfg.train_datasets)
    assert set(data["files"]) == {"model.onnx", "weights.pth"}
    for name, entry in data["files"].items():
        assert entry["sha256"] == sha256_file(out / name)
        assert entry["bytes"] == (out / name).stat().st_size
    assert data["export"]["parity_max_abs_error"] <= PARITY_ATOL


def test_onnx_file_is_single_opset17_dynamic_batch_with_metadata(exported) -> None:
    model, out = exported
    graph = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(graph)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "weights.pth"]
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= DEFAULT_OPSET
    (graph_input,) = graph.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == list(model.cfg.input_size)
    manifest = read_manifest(out)
    props = {p.key: p.value for p in graph.metadata_props}
    assert props["mer.schema"] == SCHEMA
    assert props["mer.engine"] == manifest.engine_id
    assert json.loads(props["mer.class_names"]) == list(model.cfg.label_names)
    assert json.loads(props["mer.input"]) == manifest.data["input"]
    assert json.loads(props["mer.preprocessing"]) == manifest.preprocessing


@pytest.mark.parametrize("batch", [1, 64])
def test_onnxruntime_matches_torch(exported, batch: int) -> None:
    model, out = exported
    ort_engine, torch_engine = load(out, "onnxruntime"), load(out, "torch")
    images = random_images(tuple(model.cfg.input_size), batch, seed=batch, value_range=model.cfg.value_range)
    with torch.inference_mode():
        reference = torch.softmax(model(torch.from_numpy(images)), dim=1).numpy()
    ort_scores, torch_scores = ort_engine.predict(images), torch_engine.predict(images)
    assert ort_scores.shape == torch_scores.shape == (batch, model.cfg.num_classes)
    assert ort_scores.dtype == torch_scores.dtype == np.float32
    np.testing.assert_allclose(torch_scores, reference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ort_scores, torch_scores, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(ort_scores.argmax(1), torch_scores.argmax(1))
    np.testing.assert_allclose(ort_scores.sum(1), 1.0, atol=1e-5)


def test_checkpoint_in_a_run_folder_needs_no_model_name(tmp_path: Path) -> None:
    classes = ("a", "b", "c", "d")
    checkpoint = fake_run(tmp_path / "run", SMALLEST, classes)
    manifest = export_checkpoint(checkpoint, tmp_path / "engine")
    assert manifest.model_name == SMALLEST
    assert manifest.class_names == classes
    assert manifest.data["model"]["args"]["label_names"] == list(classes)
    assert manifest.data["metrics"] == {"all": {"uf1": 0.5, "uar": 0.25, "acc": 0.75}}
    assert manifest.data["training"]["dataset"] == "megc2019-flow"
    assert manifest.data["training"]["class_map"] == "test4"
    assert manifest.data["source"] == {"checkpoint": "s01.pth", "checkpoint_sha256": sha256_file(checkpoint)}
    # The torch backend rebuilds a 4-class model from the manifest alone.
    scores = load(tmp_path / "engine", "torch").predict(random_images(manifest.sample_shape, 2))
    assert scores.shape == (2, 4)


def test_bare_checkpoint_without_model_is_refused(tmp_path: Path) -> None:
    checkpoint = write_state_dict(make_model(SMALLEST).state_dict(), tmp_path / "bare.pth")
    with pytest.raises(InputError, match=r"pass --model NAME") as caught:
        export_checkpoint(checkpoint, tmp_path / "engine")
    assert caught.value.path == checkpoint
    assert not (tmp_path / "engine").exists()


def test_model_name_contradicting_the_run_is_refused(tmp_path: Path) -> None:
    checkpoint = fake_run(tmp_path / "run", SMALLEST, ("a", "b"))
    with pytest.raises(InputError, match=r"run record says") as caught:
        export_checkpoint(checkpoint, tmp_path / "engine", model_name="not_" + SMALLEST)
    assert caught.value.column == "run.model"


def test_weights_of_another_class_count_are_refused(tmp_path: Path) -> None:
    checkpoint = write_state_dict(make_model(SMALLEST, label_names=("x", "y")).state_dict(), tmp_path / "w.pth")
    with pytest.raises(InputError, match=r"weights do not fit"):
        export_checkpoint(checkpoint, tmp_path / "engine", model_name=SMALLEST)


def test_non_empty_output_is_refused_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "engine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    model = make_model(SMALLEST)
    with pytest.raises(InputError, match=r"not empty.*--force"):
        export_model(model, out)
    manifest = export_model(model, out, overwrite=True)
    assert manifest.path == out / "manifest.json"


@pytest.mark.parametrize(
    ("options", "column"),
    [({"formats": ("onnx", "coreml")}, "format"), ({"opset": 13}, "opset"), ({"model_args": {"widht": 3}}, "model_args")],
)
def test_bad_export_options_are_refused_before_writing(tmp_path: Path, options: dict, column: str) -> None:
    with pytest.raises(InputError) as caught:
        export_model(make_model(SMALLEST), tmp_path / "engine", **options)
    assert caught.value.column == column
    assert not (tmp_path / "engine").exists()


@pytest.mark.skipif(tensorrt_unavailable_reason() is None, reason="TensorRT and a GPU are present here")
def test_tensorrt_format_without_tensorrt_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(MerError, match=r"install mer\[tensorrt\] on an NVIDIA machine"):
        export_model(make_model(SMALLEST), tmp_path / "engine", formats=("onnx", "tensorrt"))
    assert not (tmp_path / "engine").exists()


@pytest.mark.skipif(not is_model("dual_atme"), reason="dual_atme is not registered")
def test_non_default_builder_options_are_recorded_and_rebuilt(tmp_path: Path) -> None:
    model = make_model("dual_atme", hidden_features=32)
    manifest = export_model(model, tmp_path / "engine", model_args={"hidden_features": 32})
    assert manifest.data["model"]["args"]["hidden_features"] == 32
    images = random_images(manifest.sample_shape, 3)
    np.testing.assert_allclose(load(tmp_path / "engine", "torch").predict(images),
                               load(tmp_path / "engine", "onnxruntime").predict(images), atol=1e-4, rtol=0)


def test_cli_exports_and_reports_errors_in_one_line(tmp_path: Path, capsys) -> None:
    checkpoint = write_state_dict(make_model(SMALLEST).state_dict(), tmp_path / "bare.pth")
    out = tmp_path / "engine"
    assert mer(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "pass --model NAME" in capsys.readouterr().err
    flow = '{"nscales": 3}'
    code = mer(["-q", "export", "--checkpoint", str(checkpoint), "--out", str(out), "--model", SMALLEST,
                "--version", "1.2.0", "--flow-method", "tvl1", "--flow-params", flow])
    assert code == 0
    manifest = read_manifest(out)
    assert manifest.engine_id == f"{SMALLEST}@1.2.0"
    assert manifest.preprocessing["flow_params"] == {"nscales": 3}
    assert f"{SMALLEST}@1.2.0" in capsys.readouterr().out
    assert mer(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--model", SMALLEST,
                "--flow-params", "[1]", "--force"]) == 2
    assert "--flow-params must be a JSON object" in capsys.readouterr().err


def test_explicit_metrics_file_is_used_or_refused_when_missing(tmp_path: Path) -> None:
    checkpoint = write_state_dict(make_model(SMALLEST).state_dict(), tmp_path / "bare.pth")
    with pytest.raises(InputError, match=r"metrics file not found"):
        export_checkpoint(checkpoint, tmp_path / "engine", model_name=SMALLEST, metrics_path=tmp_path / "none.json")
    metrics = tmp_path / "elsewhere" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"all": {"uf1": 0.7}}))
    manifest = export_checkpoint(checkpoint, tmp_path / "engine", model_name=SMALLEST, metrics_path=metrics)
    assert manifest.data["metrics"] == {"all": {"uf1": 0.7}}
    assert manifest.data["training"]["from"] == "model cfg (no run record)"  # no metrics_detail.json beside it
