"""The precision graphs TensorRT plans are built from (fp16, explicit-quantization int8), run here by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto

from streamer.recognizer import default_engine_dir
from engines.errors import InputError
from engines.manifest import read_manifest
from engines.runtime.precision_graphs import (
    CALIBRATION_BATCH,
    QUANTIZED_OPS,
    graph_agreement,
    graph_recipe,
    int8_graph,
    precision_graph,
    quantization_problems,
)
from engines.runtime.tensorrt_support import CalibrationSet, check_onnx_for_tensorrt, read_calibration_set
from training.calibration import write_dataset_calibration_set
from training.datasets import load_dataset

CLOSED_FORM = {"biwoof", "lbp_top"}  # histograms and an SVM, not a network: float16 moves them more



def _random_set(shape, count: int, seed: int) -> CalibrationSet:
    inputs = np.random.default_rng(seed).uniform(0, 255, (count, *shape)).astype(np.float32)
    return CalibrationSet(inputs, {}, tuple(str(i) for i in range(count)))


def _io_types(model) -> set[int]:
    return {value.type.tensor_type.elem_type for value in (*model.graph.input, *model.graph.output)}


def test_fp16_graphs_of_every_registered_model_compute_in_float16_behind_float32_io(engines) -> None:
    for name, engine_dir in engines.items():
        source = engine_dir / "model.onnx"
        graph = precision_graph(source, "fp16")
        onnx.checker.check_model(graph, full_check=True)  # includes: nodes in topological order
        assert _io_types(graph) == {TensorProto.FLOAT}, name
        weights = {init.name: init.data_type for init in graph.graph.initializer}
        weighted = [node for node in graph.graph.node if node.op_type in ("Conv", "Gemm")]
        assert weighted, name
        assert all(weights.get(node.input[1]) == TensorProto.FLOAT16 for node in weighted), name
        assert check_onnx_for_tensorrt(graph, max_batch=64) == [], name
        shape = read_manifest(engine_dir).sample_shape
        agreement = graph_agreement(source, graph, _random_set(shape, 8, seed=1).inputs)
        assert agreement["max_probability_gap"] <= (0.05 if name in CLOSED_FORM else 1e-3), (name, agreement)


def test_fp16_keeps_accumulating_scatters_in_float32(engines) -> None:
    graph = precision_graph(engines["lbp_top"] / "model.onnx", "fp16")
    types = {value.name: value.type.tensor_type.elem_type for value in graph.graph.value_info}
    scatters = [node for node in graph.graph.node if node.op_type == "ScatterElements"]
    assert scatters
    # LBP-TOP's histogram counts run past 2048, which float16 cannot count exactly.
    assert all(types.get(node.output[0], TensorProto.FLOAT) == TensorProto.FLOAT for node in scatters)


def test_int8_graphs_of_every_registered_model_are_symmetric_qdq_in_front_of_every_weighted_op(engines) -> None:
    for name, engine_dir in engines.items():
        source = engine_dir / "model.onnx"
        shape = read_manifest(engine_dir).sample_shape
        graph = precision_graph(source, "int8", _random_set(shape, 16, seed=2))
        onnx.checker.check_model(graph, full_check=True)
        assert quantization_problems(graph) == [], name
        assert check_onnx_for_tensorrt(graph, max_batch=64) == [], name
        assert _io_types(graph) == {TensorProto.FLOAT}, name
        made_by = {output: node.op_type for node in graph.graph.node for output in node.output}
        weighted = [node for node in graph.graph.node if node.op_type in QUANTIZED_OPS]
        assert weighted, name
        for node in weighted:  # activation and weight both arrive dequantized from INT8
            assert [made_by.get(tensor) for tensor in node.input[:2]] == ["DequantizeLinear"] * 2, (name, node.name)
        biases = [node.input[2] for node in weighted if len(node.input) > 2 and node.input[2]]
        assert all(made_by.get(bias) != "DequantizeLinear" for bias in biases), name  # float biases


def test_int8_calibration_follows_its_set_and_keeps_stdout_clean(engines, capsys) -> None:
    source = engines["ststnet"] / "model.onnx"
    quiet = _random_set((3, 28, 28), 16, seed=3)
    loud = CalibrationSet(quiet.inputs * 4, {}, quiet.sample_ids)  # wider activation ranges
    assert capsys.readouterr().out == ""
    scales = []
    for calibration in (quiet, quiet, loud):
        graph = int8_graph(source, calibration)
        first = next(node for node in graph.graph.node if node.op_type == "QuantizeLinear")
        scale = next(init for init in graph.graph.initializer if init.name == first.input[1])
        scales.append(float(onnx.numpy_helper.to_array(scale)))
    assert scales[0] == scales[1]  # deterministic
    assert scales[2] > 2 * scales[0]  # the input's range is calibrated from the set
    assert capsys.readouterr().out == ""  # the calibrator's progress goes to the debug log


def test_int8_calibration_folds_in_every_batch_of_its_set(engines) -> None:
    """The calibrator sees the set a batch at a time (bounded memory); a loud first or last batch
    must widen the input's range as much as a set that is loud throughout."""
    source = engines["ststnet"] / "model.onnx"
    quiet = _random_set((3, 28, 28), 2 * CALIBRATION_BATCH, seed=6).inputs

    def input_scale(inputs: np.ndarray) -> float:
        graph = int8_graph(source, CalibrationSet(inputs, {}, tuple(str(i) for i in range(len(inputs)))))
        first = next(node for node in graph.graph.node if node.op_type == "QuantizeLinear")
        return float(onnx.numpy_helper.to_array(next(i for i in graph.graph.initializer if i.name == first.input[1])))

    loud_first, loud_last = quiet.copy(), quiet.copy()
    loud_first[:CALIBRATION_BATCH] *= 4
    loud_last[CALIBRATION_BATCH:] *= 4
    everywhere = input_scale(quiet * 4)
    assert input_scale(quiet) < everywhere / 3
    assert input_scale(loud_first) == pytest.approx(everywhere, rel=0.01)
    assert input_scale(loud_last) == pytest.approx(everywhere, rel=0.01)


def test_quantization_problems_name_what_tensorrt_refuses(engines, tmp_path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    source = engines["ststnet"] / "model.onnx"
    assert quantization_problems(onnx.load(str(source))) == [
        "no QuantizeLinear/DequantizeLinear node: nothing would run in INT8"]
    inputs = _random_set((3, 28, 28), 8, seed=4).inputs

    class Once(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": inputs}])

        def get_next(self):
            return next(self.batches, None)

    out = tmp_path / "asymmetric.onnx"
    quantize_static(str(source), str(out), Once(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    problems = quantization_problems(onnx.load(str(out)))
    assert any("quantizes to UINT8, not INT8" in problem for problem in problems)
    assert any("quantizes to INT32, not INT8" in problem for problem in problems)  # ONNX Runtime's int32 biases


def test_precision_graph_refusals(engines, tmp_path) -> None:
    source = engines["ststnet"] / "model.onnx"
    with pytest.raises(InputError, match=r"int8 plan needs a calibration set \(--calibration FILE\)"):
        precision_graph(source, "int8")
    with pytest.raises(InputError, match="precision must be one of fp32, fp16, int8, got 'fp8'"):
        precision_graph(source, "fp8")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(InputError, match="broken.onnx.*not a readable ONNX model"):
        precision_graph(broken, "fp16")
    with pytest.raises(InputError, match="broken.onnx.*not a readable ONNX model"):
        precision_graph(broken, "int8", _random_set((3, 28, 28), 4, seed=5))


def test_graph_recipes_name_the_converter_and_its_version() -> None:
    assert graph_recipe("fp32") is None
    fp16, int8 = graph_recipe("fp16"), graph_recipe("int8")
    assert f"onnxruntime {onnxruntime.__version__}" in fp16 and f"onnxruntime {onnxruntime.__version__}" in int8
    assert "float16" in fp16 and "entropy" in int8 and fp16 != int8


def test_int8_default_engine_follows_fp32_better_when_calibrated_on_inputs_like_its_own(toy_composite, tmp_path) -> None:
    """The shipped engine quantized the way `mer export --precision int8` quantizes it, from a
    `mer calibration-set` file, against the fp32 graph on subjects it was not calibrated on; and
    against a calibration set whose inputs are 20 times too faint, whose ranges clip real inputs."""
    samples = load_dataset("megc2019-flow", root=toy_composite)
    held_out = ["sub01", "s01", "006"]
    path = write_dataset_calibration_set(default_engine_dir(), samples, tmp_path / "calib.npz",
                                         count=24, exclude_subjects=held_out)
    calibration = read_calibration_set(path)
    calibration.check_for(read_manifest(default_engine_dir()))
    faint = CalibrationSet(calibration.inputs / 20, calibration.contract, calibration.sample_ids)
    unseen = write_dataset_calibration_set(
        default_engine_dir(), [s for s in samples if s.subject in held_out], tmp_path / "unseen.npz", count=12)
    inputs = read_calibration_set(unseen).inputs
    source = default_engine_dir() / "model.onnx"
    matched = graph_agreement(source, precision_graph(source, "int8", calibration), inputs)
    clipped = graph_agreement(source, precision_graph(source, "int8", faint), inputs)
    assert matched["samples"] == clipped["samples"] == 12
    assert matched["top1_agreement"] >= 0.75, matched
    assert clipped["top1_agreement"] <= matched["top1_agreement"] - 0.25, (matched, clipped)
    assert clipped["max_probability_gap"] > matched["max_probability_gap"], (matched, clipped)


def test_int8_and_fp16_default_engine_on_the_real_composite(shared_data, tmp_path) -> None:
    """On the 442 real flow images: int8 calibrated on 256 of them, none from the first 10 subjects."""
    samples = load_dataset("megc2019-flow", root=shared_data / "HTNet")
    subjects = sorted({s.subject for s in samples})
    path = write_dataset_calibration_set(default_engine_dir(), samples, tmp_path / "calib.npz",
                                         count=256, exclude_subjects=subjects[:10])
    everything = write_dataset_calibration_set(default_engine_dir(), samples, tmp_path / "all.npz", count=442)
    inputs = read_calibration_set(everything).inputs
    assert len(inputs) == 442
    source = default_engine_dir() / "model.onnx"
    int8 = graph_agreement(source, precision_graph(source, "int8", read_calibration_set(path)), inputs)
    assert int8["top1_agreement"] >= 0.97 and int8["max_probability_gap"] <= 0.15, int8
    fp16 = graph_agreement(source, precision_graph(source, "fp16"), inputs)
    assert fp16["top1_agreement"] == 1.0 and fp16["max_probability_gap"] <= 5e-3, fp16

