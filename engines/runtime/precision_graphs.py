"""The ONNX graph that carries a TensorRT plan's precision (strong typing).

TensorRT 11 removed the weak-typing builder flags (``BuilderFlag.FP16``, ``BuilderFlag.INT8``)
and the INT8 calibrator API (deprecated since 10.1); TensorRT 10.x accepts strongly typed
networks as well. A strongly typed network takes every tensor's type from the graph, so a
plan's precision is decided here, on the ONNX graph, before TensorRT parses it. One build path
then serves TensorRT 10 and 11:

* ``fp32``: the exported graph as it is.
* ``fp16``: every float tensor and weight in float16, the input and output kept float32 by a
  Cast at each end (ONNX Runtime's float16 converter, which ships with the ``onnxruntime``
  package mer already depends on), nodes sorted again into topological order (the converter
  appends its Casts; TensorRT's parser and the ONNX spec want producers first).
* ``int8``: explicit quantization. QuantizeLinear/DequantizeLinear pairs in front of every
  Conv, ConvTranspose, Gemm and MatMul, signed INT8 with every zero point 0 (TensorRT only takes
  symmetric quantization), one weight scale per output channel, activation ranges from ONNX
  Runtime's entropy calibrator run over a calibration set (``tensorrt_support.CalibrationSet``).

Every one of these graphs runs in ONNX Runtime on a CPU, so how far a precision moves the
engine's probabilities is measured here, before any GPU (:func:`graph_agreement`); TensorRT
computes the same graph with its own kernels, so its figures can differ slightly.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engines.errors import InputError
from engines.runtime.tensorrt_support import PRECISIONS, CalibrationSet, graph_inputs, read_graph

__all__ = [
    "CALIBRATION_BATCH",
    "FLOAT32_OPS",
    "QUANTIZED_OPS",
    "cpu_scores",
    "fp16_graph",
    "graph_agreement",
    "graph_recipe",
    "int8_graph",
    "precision_graph",
    "quantization_problems",
]

log = logging.getLogger(__name__)

#: The operators whose inputs get Q/DQ pairs: TensorRT's guidance is to quantize the inputs of
#: weighted operations and let it propagate INT8 through the layers between them.
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Operators an fp16 graph keeps in float32 (besides ONNX Runtime's own list): scatters that
#: accumulate, such as LBP-TOP's histograms, whose counts float16 cannot hold exactly past 2048.
FLOAT32_OPS = ("ScatterElements", "ScatterND")
#: Calibration batches: the set is fed to the calibrator this many samples at a time, and its
#: activations are held for one batch only.
CALIBRATION_BATCH = 8


def graph_recipe(precision: str) -> str | None:
    """How the graph for ``precision`` is made, versions included (part of a plan's cache key):
    a new converter or calibrator can give another graph, and then another plan."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", column="precision")
    if precision == "fp32":
        return None
    import onnxruntime

    if precision == "fp16":
        return f"onnxruntime {onnxruntime.__version__} float16, float32 input and output"
    return (f"onnxruntime {onnxruntime.__version__} QDQ int8 symmetric, per-channel weights, entropy calibration, "
            f"ops {','.join(QUANTIZED_OPS)}")


def precision_graph(onnx_path: str | Path, precision: str, calibration: CalibrationSet | None = None):
    """The ``onnx.ModelProto`` a strongly typed TensorRT network is parsed from for ``precision``."""
    graph_recipe(precision)  # refuses an unknown precision
    path = Path(onnx_path)
    if precision == "int8":
        if calibration is None:
            raise InputError("an int8 plan needs a calibration set (--calibration FILE)", column="calibration")
        return int8_graph(path, calibration)
    model = read_graph(path)
    return model if precision == "fp32" else fp16_graph(model)


def fp16_graph(model):
    """``model`` with float16 weights and activations, float32 input and output."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    blocked = [*DEFAULT_OP_BLOCK_LIST, *FLOAT32_OPS]
    converted = OnnxModel(convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked))
    converted.topological_sort()
    return converted.model


def int8_graph(onnx_path: str | Path, calibration: CalibrationSet):
    """The explicitly quantized (Q/DQ) graph of ``onnx_path``, calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    path = Path(onnx_path)
    input_name = _input_name(path)

    batches = np.array_split(calibration.inputs, max(1, -(-len(calibration.inputs) // CALIBRATION_BATCH)))

    class Batches(CalibrationDataReader):
        """The calibration set a batch at a time; with ``CalibStridedMinMax`` = 1 the calibrator
        takes one batch per pass and folds it into its histograms before the next, so memory
        holds one batch's activations, not the whole set's (large models at the papers' sizes)."""

        def __init__(self) -> None:
            self.window: Iterator[np.ndarray] = iter(batches)

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.window = iter(batches[start_index:end_index])

        def get_next(self):
            batch = next(self.window, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    with tempfile.TemporaryDirectory(prefix="mer-int8-") as tmp:
        out = Path(tmp) / "model.int8.onnx"
        progress = io.StringIO()  # the calibrator prints its progress; it belongs in the debug log
        with contextlib.redirect_stdout(progress):
            quantize_static(
                str(path), str(out), Batches(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.Entropy,
                op_types_to_quantize=list(QUANTIZED_OPS),
                extra_options={
                    "ActivationSymmetric": True,  # zero points 0: TensorRT refuses anything else
                    "WeightSymmetric": True,
                    "AddQDQPairToWeight": True,  # float weights behind Q/DQ: TensorRT quantizes them itself
                    "DedicatedQDQPair": True,  # one pair per consumer, the form TensorRT fuses
                    "QuantizeBias": False,  # float biases: TensorRT has no INT32 dequantization
                    "CalibStridedMinMax": 1,  # one batch per calibration pass (any method, despite the name)
                },
            )
        log.debug("int8 calibration of %s on %d samples:\n%s", path, len(calibration.inputs), progress.getvalue())
        model = read_graph(out)
    problems = quantization_problems(model)
    if problems:  # a quantizer release that changed its output must not reach a build
        raise InputError("the quantized graph is not what TensorRT takes: " + "; ".join(problems), path=path)
    return model


def quantization_problems(model) -> list[str]:
    """Why TensorRT would refuse the Q/DQ nodes of ``model`` (empty: none): it takes signed INT8
    with every zero point 0, and no quantized graph is without Q/DQ pairs."""
    from onnx import TensorProto, numpy_helper

    constants = {init.name: init for init in model.graph.initializer}
    quantizers = [node for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not quantizers:
        return ["no QuantizeLinear/DequantizeLinear node: nothing would run in INT8"]
    problems = []
    for node in quantizers:
        if len(node.input) < 3 or node.input[2] not in constants:
            problems.append(f"{node.op_type} {node.name!r} has no constant zero point")
            continue
        zero_point = constants[node.input[2]]
        if zero_point.data_type != TensorProto.INT8:
            problems.append(f"{node.op_type} {node.name!r} quantizes to {TensorProto.DataType.Name(zero_point.data_type)}, "
                            "not INT8")
        elif np.any(numpy_helper.to_array(zero_point) != 0):
            problems.append(f"{node.op_type} {node.name!r} has a non-zero zero point (asymmetric)")
    return problems


def cpu_scores(model, inputs: np.ndarray) -> np.ndarray:
    """What ``model`` (an ONNX file or ``ModelProto``) outputs for ``inputs``, run by ONNX Runtime on
    the CPU: the reference a precision graph is held to, here and on a GPU."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]


def graph_agreement(reference, graph, inputs: np.ndarray) -> dict[str, float]:
    """How far ``graph``'s probabilities are from ``reference``'s on ``inputs``, both run by ONNX
    Runtime on the CPU: the largest probability gap and the share of samples whose top class agrees.
    ``reference`` and ``graph`` are ONNX files or ``ModelProto``s."""
    expected, got = cpu_scores(reference, inputs), cpu_scores(graph, inputs)
    return {
        "samples": int(len(inputs)),
        "max_probability_gap": float(np.abs(got - expected).max()),
        "top1_agreement": float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1))),
    }


def _input_name(path: Path) -> str:
    inputs = [value.name for value in graph_inputs(read_graph(path, load_external_data=False))]
    if len(inputs) != 1:
        raise InputError(f"expected one input tensor, found {len(inputs)}: {inputs}", path=path)
    return inputs[0]
