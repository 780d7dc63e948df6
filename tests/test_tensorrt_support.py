"""What can be known about TensorRT engines without TensorRT: ONNX checks, plan cache, calibration sets."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engines.errors import InputError
from engines.manifest import read_manifest
from engines.runtime.tensorrt_backend import write_plan_file
from engines.runtime.tensorrt_support import (
    CalibrationSet,
    PlanCache,
    PlanKey,
    calibration_contract,
    check_onnx_for_tensorrt,
    default_plan_cache_dir,
    read_calibration_set,
    write_calibration_set,
)
from streamer.cli import main
from training.calibration import choose_calibration_samples
from training.samples import Sample



# --- ONNX checks ------------------------------------------------------------------------------


def test_every_registered_model_exports_a_graph_tensorrt_accepts(engines) -> None:
    for name, engine_dir in engines.items():
        assert check_onnx_for_tensorrt(engine_dir / "model.onnx", max_batch=64) == [], name


def _graph_file(tmp_path, nodes, inputs, outputs, opset=17, name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("custom", 1)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_unsupported_operators_opset_and_dynamic_axes_are_reported(tmp_path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Unique", ["x"], ["u"]), helper.make_node("Magic", ["u"], ["y"], domain="custom")]
    problems = check_onnx_for_tensorrt(_graph_file(tmp_path, nodes, [x], [y], opset=7), max_batch=0)
    assert any("opset 7 is outside TensorRT 10's range 9..20" in p for p in problems)
    assert any("outside TensorRT's ONNX support matrix: Unique, custom::Magic" in p for p in problems)
    assert any("only axis 0 (the batch) may be dynamic, dynamic axes are [0, 1]" in p for p in problems)
    assert any("batch range 1..0" in p for p in problems)


def test_operators_inside_subgraphs_are_checked(tmp_path) -> None:
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [1])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    branch_out = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
    branch = helper.make_graph([helper.make_node("StringNormalizer", [], ["b"])], "then", [], [branch_out])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    problems = check_onnx_for_tensorrt(_graph_file(tmp_path, [node], [cond], [out]), max_batch=8)
    assert any("StringNormalizer" in p for p in problems)


def test_an_unreadable_onnx_file_is_named(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(InputError, match="bad.onnx"):
        check_onnx_for_tensorrt(bad, 8)


# --- plan cache -----------------------------------------------------------------------------------

KEY = PlanKey(onnx_sha256="ab" * 32, tensorrt="10.9.0", device="NVIDIA H100 80GB HBM3", precision="fp16", max_batch=64)


def test_plan_keys_name_everything_a_plan_depends_on() -> None:
    assert KEY.file_name().startswith("abababababababab-nvidia-h100-80gb-hbm3-trt10.9.0-fp16-b64-")
    variants = [
        PlanKey(**{**KEY.__dict__, field: value})
        for field, value in (("onnx_sha256", "cd" * 32), ("tensorrt", "10.10.0"), ("device", "NVIDIA L4"),
                             ("precision", "fp32"), ("max_batch", 32),
                             ("graph_recipe", "onnxruntime 1.33.0 float16, float32 input and output"))
    ]
    names = {key.file_name() for key in [KEY, *variants]}
    assert len(names) == 7
    int8 = PlanKey(**{**KEY.__dict__, "precision": "int8", "calibration_sha256": "ef" * 32})
    other_set = PlanKey(**{**int8.__dict__, "calibration_sha256": "01" * 32})
    assert int8.file_name() != other_set.file_name()
    with pytest.raises(InputError, match="int8 plan needs a calibration set"):
        PlanKey(**{**KEY.__dict__, "precision": "int8"})
    with pytest.raises(InputError, match="precision must be one of fp32, fp16, int8"):
        PlanKey(**{**KEY.__dict__, "precision": "fp8"})


def test_plan_cache_builds_once_then_reuses(tmp_path) -> None:
    cache = PlanCache(tmp_path / "cache")
    builds = []

    def build() -> bytes:
        builds.append(1)
        return b"PLAN-BYTES"

    assert cache.get_or_build(KEY, build) == (b"PLAN-BYTES", True)
    assert cache.get_or_build(KEY, build) == (b"PLAN-BYTES", False)
    assert len(builds) == 1 and cache.path(KEY).is_file()
    # Another GPU gets its own plan; the first one stays.
    other = PlanKey(**{**KEY.__dict__, "device": "NVIDIA L4"})
    assert cache.get_or_build(other, build) == (b"PLAN-BYTES", True) and len(builds) == 2
    assert cache.load(KEY) == b"PLAN-BYTES"


def test_a_cached_plan_with_a_foreign_or_broken_header_is_rebuilt(tmp_path) -> None:
    cache = PlanCache(tmp_path)
    write_plan_file(cache.path(KEY), {**KEY.header(), "tensorrt": "10.0.0"}, b"OLD")
    assert cache.load(KEY) is None
    assert cache.get_or_build(KEY, lambda: b"NEW") == (b"NEW", True)
    cache.path(KEY).write_bytes(b"\xff\xff")  # truncated
    assert cache.get_or_build(KEY, lambda: b"NEWER") == (b"NEWER", True)
    assert cache.load(KEY) == b"NEWER"


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MER_CACHE", str(tmp_path / "mer"))
    assert default_plan_cache_dir() == tmp_path / "mer" / "tensorrt"
    monkeypatch.delenv("MER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_plan_cache_dir() == tmp_path / "xdg" / "mer" / "tensorrt"


# --- calibration sets ---------------------------------------------------------------------------------


def test_calibration_set_round_trip_and_contract_check(engines, tmp_path) -> None:
    manifest = read_manifest(engines["ststnet"])
    contract = calibration_contract(manifest.data)
    assert contract["shape"] == [3, 28, 28] and contract["channel_order"] == "BGR"
    inputs = np.random.default_rng(0).uniform(0, 255, (5, 3, 28, 28)).astype(np.float32)
    path = write_calibration_set(tmp_path / "calib", inputs, contract, [f"s{i}" for i in range(5)])
    loaded = read_calibration_set(path)
    assert path.name == "calib" and np.array_equal(loaded.inputs, inputs)
    assert loaded.sample_ids == tuple(f"s{i}" for i in range(5)) and loaded.contract == json.loads(json.dumps(contract))
    loaded.check_for(manifest)
    assert loaded.sha256 == read_calibration_set(path).sha256
    assert CalibrationSet(inputs + 1, loaded.contract, loaded.sample_ids).sha256 != loaded.sha256
    other = CalibrationSet(inputs, {**loaded.contract, "channel_order": "RGB"}, loaded.sample_ids, path)
    with pytest.raises(InputError, match=r"calib.*made for channel_order 'RGB', the engine takes 'BGR'"):
        other.check_for(manifest)


def test_calibration_set_refusals(tmp_path) -> None:
    contract = {"shape": [3, 28, 28]}
    with pytest.raises(InputError, match=r"do not match the contract's \[3, 28, 28\]"):
        write_calibration_set(tmp_path / "a.npz", np.zeros((2, 3, 32, 32)), contract, ["a", "b"])
    with pytest.raises(InputError, match="1 sample ids for 2 inputs"):
        write_calibration_set(tmp_path / "a.npz", np.zeros((2, 3, 28, 28)), contract, ["a"])
    with pytest.raises(InputError, match="calibration set not found"):
        read_calibration_set(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a mer calibration set"):
        read_calibration_set(tmp_path / "junk.npz")


def test_calibration_samples_take_classes_in_turn_and_skip_excluded_subjects(tmp_path) -> None:
    frame = (tmp_path / "x.png",)
    samples = [Sample("d", f"p{i % 4}", f"c{i}", label, frames=frame) for i, label in
               enumerate(["negative"] * 10 + ["positive"] * 3 + ["surprise"] * 2)]
    chosen = choose_calibration_samples(samples, 6, seed=1)
    assert sorted(s.emotion for s in chosen) == ["negative", "negative", "positive", "positive", "surprise", "surprise"]
    assert [s.key for s in choose_calibration_samples(samples, 6, seed=1)] == [s.key for s in chosen]
    kept = choose_calibration_samples(samples, 100, exclude_subjects=["p0"])
    assert len(kept) == len([s for s in samples if s.subject != "p0"]) and all(s.subject != "p0" for s in kept)
    with pytest.raises(InputError, match="no sample with a motion image"):
        choose_calibration_samples(samples, 5, exclude_subjects=["p0", "p1", "p2", "p3"])


def test_calibration_set_command_on_a_composite(engines, toy_composite, tmp_path, capsys) -> None:
    out = tmp_path / "calib.npz"
    assert main(["-q", "calibration-set", "--engine", str(engines["ststnet"]), "--root", str(toy_composite),
                 "--out", str(out), "--count", "9", "--exclude-subjects", "sub01"]) == 0
    assert "9 samples" in capsys.readouterr().out
    loaded = read_calibration_set(out)
    assert loaded.inputs.shape == (9, 3, 28, 28) and loaded.inputs.max() > 150
    assert not any(key.startswith("sub01") for key in loaded.sample_ids)
    loaded.check_for(read_manifest(engines["ststnet"]))


def test_export_refuses_tensorrt_options_for_onnx(engines, tmp_path, capsys) -> None:
    weights = engines["ststnet"] / "weights.pth"
    assert main(["export", "--checkpoint", str(weights), "--model", "ststnet", "--out", str(tmp_path / "e"),
                 "--precision", "int8"]) == 2
    assert "--precision/--calibration/--half/--max-batch only apply to a format with a TensorRT plan, not onnx" \
        in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
