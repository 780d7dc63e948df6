"""Export a trained model to an engine directory (``model.onnx`` + ``weights.pth`` + ``manifest.json``).

One table, :data:`FORMATS`, lists what mer can export; it drives ``mer export --format``'s
choices and help, and the validation of format-specific options. ONNX is always written (it
is what every other format is built from); ``tensorrt`` additionally builds a serialised
TensorRT plan on an NVIDIA machine.

The exported graph ends in a softmax, so every backend returns class probabilities. The ONNX
file is made by torch's TorchScript-based exporter (``dynamo=False``): it needs only ``onnx``
(the dynamo exporter needs ``onnxscript``), writes one self-contained file, and gets a dynamic
batch axis from ``dynamic_axes``. Each engine is checked before its manifest is written: ONNX
Runtime must reproduce torch's probabilities within :data:`PARITY_ATOL`, so a broken export
never produces a directory that looks complete.

How export knows the model of a bare ``.pth``: ``--model NAME``; or, for a checkpoint written
by ``mer train`` (``OUT/weights/<subject>.pth``), the run's ``OUT/metrics_detail.json``, which
also supplies the class names, the training data and (with ``OUT/metrics.json``) the metrics.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import platform
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.checkpoints import load_weights, write_state_dict
from engines.errors import InputError, MerError
from engines.manifest import (
    MANIFEST_NAME,
    SCHEMA,
    EngineManifest,
    file_entry,
    make_world_readable,
    preprocessing_signature,
    read_manifest,
    write_manifest,
)
from engines.models import create_model, list_models, model_entrypoint

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "ONNX_NAME",
    "PARITY_ATOL",
    "WEIGHTS_NAME",
    "ExportFormat",
    "RunRecord",
    "LoadedCheckpoint",
    "export_checkpoint",
    "export_checkpoints",
    "export_model",
    "load_checkpoint_model",
    "find_run_record",
]

log = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
WEIGHTS_NAME = "weights.pth"
INPUT_NAME = "input"
OUTPUT_NAME = "scores"
DEFAULT_OPSET = 17
# The largest |ORT - torch| probability difference an export may show on its self-check.
PARITY_ATOL = 1e-4
# Keys of the ONNX metadata_props that carry the manifest's essentials inside model.onnx.
METADATA_PREFIX = "mer."


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table."""

    name: str
    file_suffix: str
    needs_gpu: bool
    options: tuple[str, ...]
    description: str


FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in (
        ExportFormat("onnx", ".onnx", False, ("opset",), "ONNX graph, dynamic batch (ONNX Runtime and torch backends)"),
        ExportFormat(
            "tensorrt", ".plan", True, ("opset", "precision", "max_batch", "calibration"),
            "ONNX plus a serialised TensorRT plan (NVIDIA GPU with TensorRT 10 or 11)",
        ),
    )
}


@dataclass(frozen=True)
class RunRecord:
    """What a ``mer train`` run folder says about a checkpoint (all optional)."""

    folder: Path | None = None
    run: dict = field(default_factory=dict)
    metrics: dict | None = None
    class_names: tuple[str, ...] | None = None


def _export_step(step: Callable[..., Path]) -> Callable[..., Path]:
    """Time one export step, refuse an empty output file, and log one line (errors re-raise)."""

    @functools.wraps(step)
    def wrapper(*args, **kwargs) -> Path:
        started = time.perf_counter()
        path = step(*args, **kwargs)
        if not path.is_file() or path.stat().st_size == 0:
            raise MerError(f"{step.__name__} produced no output at {path}")
        log.info("%s: wrote %s (%.1f kB) in %.2f s", step.__name__, path, path.stat().st_size / 1e3,
                 time.perf_counter() - started)
        return path

    return wrapper


class _Probabilities(nn.Module):
    """The model followed by a softmax over classes: what every engine outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the tensors themselves (names, dtypes, shapes, values), independent of file format."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()


def _example_input(model: nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    low, high = model.cfg.value_range
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand((batch, *model.cfg.input_size), generator=generator)


@_export_step
def export_onnx(model: nn.Module, path: Path, opset: int, metadata: Mapping[str, str]) -> Path:
    """Write ``model`` + softmax as a single ONNX file with a dynamic batch axis and ``metadata``."""
    import onnx

    wrapped = _Probabilities(model).eval()
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation; it is the one that needs no onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(
                wrapped,
                (_example_input(model, 2),),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
        except Exception as exc:  # tracing runs the model's own code: any error is "not exportable"
            raise MerError(
                f"model {model.cfg.name!r} cannot be exported to ONNX (its forward fails under torch.jit tracing): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))
    return path


@_export_step
def export_weights(model: nn.Module, path: Path) -> Path:
    write_state_dict(model.state_dict(), path)
    make_world_readable(path)
    return path


def _check_parity(model: nn.Module, onnx_path: Path) -> float:
    """Max |ORT - torch| on a random batch; refuses the export beyond PARITY_ATOL."""
    import onnxruntime as ort

    batch = _example_input(model, 4, seed=1)
    with torch.inference_mode():
        expected = _Probabilities(model).eval()(batch).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {INPUT_NAME: batch.numpy()})[0]
    error = float(np.abs(actual - expected).max())
    if not error <= PARITY_ATOL:
        raise MerError(f"{onnx_path}: ONNX Runtime differs from torch by {error:.2e} (> {PARITY_ATOL}); export refused")
    return error


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("exists and is not a directory", path=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(p.name for p in out_dir.iterdir())
    if existing and not overwrite:
        raise InputError(f"output directory is not empty ({', '.join(existing[:4])}); pass --force to replace",
                         path=out_dir)
    # The manifest goes first, so an interrupted re-export never leaves a directory that looks complete.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)


def _builder_args(model: nn.Module, model_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The builder options that rebuild this model: ``model_args`` (the non-default options it was built
    with) plus its label names, if the builder takes them. Refuses options the builder does not know."""
    accepted = inspect.signature(model_entrypoint(model.cfg.name)).parameters
    args = dict(model_args or {})
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise InputError(f"model {model.cfg.name!r} has no option {unknown[0]!r} (its options: {', '.join(accepted)})",
                         column="model_args")
    if "label_names" in accepted:
        args["label_names"] = list(model.cfg.label_names)
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"model options are not JSON-serialisable: {exc}", column="model_args") from None
    return args


def export_model(
    model: nn.Module,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("onnx",),
    version: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    flow_method: str | None = None,
    flow_params: Mapping[str, Any] | None = None,
    flow_size: Sequence[int] | None = None,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    precision: str = "fp32",
    calibration: str | Path | None = None,
    max_batch: int = 64,
    overwrite: bool = False,
) -> EngineManifest:
    """Write the engine directory for a built, weight-loaded registry model; returns its manifest.

    ``model_args`` are the builder options the model was built with besides its label names
    (e.g. a non-default width); the torch backend rebuilds the model with them.
    """
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise InputError(f"unknown export format {unknown[0]!r}; known: {', '.join(FORMATS)}", column="format")
    if opset < DEFAULT_OPSET:
        raise InputError(f"opset {opset} is too old; mer engines need opset >= {DEFAULT_OPSET}", column="opset")
    if max_batch < 1:
        raise InputError(f"max_batch must be >= 1, got {max_batch}", column="max_batch")
    if "tensorrt" in formats:
        from engines.runtime.tensorrt_backend import require_tensorrt
        from engines.runtime.tensorrt_support import PRECISIONS, read_calibration_set

        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", column="precision")
        if (precision == "int8") != (calibration is not None):
            raise InputError("an int8 plan needs a calibration set, and only an int8 plan takes one",
                             column="calibration")
        calibration_set = read_calibration_set(calibration) if calibration is not None else None
        require_tensorrt()  # before anything is written
    cfg = model.cfg
    model = model.eval()
    builder_args = _builder_args(model, model_args)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    digest = weights_digest(model.state_dict())
    version = version or digest[:12]
    signature = preprocessing_signature(cfg, flow_method, flow_params, flow_size)
    sample_shape = [int(v) for v in cfg.input_size]
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "model": {"name": cfg.name, "version": version, "args": builder_args, "weights_digest": digest},
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", *sample_shape],
            "dtype": "float32",
            "layout": "NCHW" if len(sample_shape) == 3 else "NTCHW",
            "channel_order": cfg.channel_order,
            "channels": list(cfg.channels),
            "value_range": list(cfg.value_range),
            "mean": cfg.mean,
            "std": cfg.std,
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", cfg.num_classes], "dtype": "float32",
                   "meaning": "softmax probabilities over class_names"},
        "preprocessing": signature,
        "class_names": list(cfg.label_names),
        "model_cfg": cfg.to_dict(),
        "training": dict(training) if training else {
            "datasets": list(cfg.train_datasets), "protocol": cfg.protocol, "from": "model cfg (no run record)"},
        "metrics": dict(metrics) if metrics else None,
        "source": dict(source or {}),
        "export": {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "exporter": "torch.onnx.export(dynamo=False)",
            "opset": opset,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    metadata = {
        f"{METADATA_PREFIX}schema": SCHEMA,
        f"{METADATA_PREFIX}engine": f"{cfg.name}@{version}",
        f"{METADATA_PREFIX}class_names": json.dumps(list(cfg.label_names)),
        f"{METADATA_PREFIX}input": json.dumps(manifest["input"]),
        f"{METADATA_PREFIX}preprocessing": json.dumps(signature),
    }
    onnx_path = export_onnx(model, out_dir / ONNX_NAME, opset, metadata)
    weights_path = export_weights(model, out_dir / WEIGHTS_NAME)
    manifest["export"]["parity_max_abs_error"] = _check_parity(model, onnx_path)
    files = {ONNX_NAME: onnx_path, WEIGHTS_NAME: weights_path}
    if "tensorrt" in formats:
        from engines.runtime.tensorrt_backend import build_plan_file
        from engines.runtime.tensorrt_support import calibration_contract, check_onnx_for_tensorrt

        problems = check_onnx_for_tensorrt(onnx_path, max_batch)
        if problems:
            raise InputError("TensorRT would refuse this model: " + "; ".join(problems), path=onnx_path)
        if calibration_set is not None:
            wanted = calibration_contract(manifest)
            if calibration_set.contract != wanted:
                raise InputError(f"calibration set made for {calibration_set.contract}, the engine takes {wanted}",
                                 path=calibration_set.path)
        written, plan_info = build_plan_file(onnx_path, out_dir, sample_shape=tuple(sample_shape),
                                             precision=precision, max_batch=max_batch, calibration=calibration_set)
        files.update({path.name: path for path in written})
        manifest["tensorrt"] = plan_info
    manifest["files"] = {name: file_entry(path) for name, path in files.items()}
    write_manifest(out_dir, manifest)
    log.info("engine %s@%s written to %s", cfg.name, version, out_dir)
    return read_manifest(out_dir)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path=path, row=exc.lineno) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", path=path)
    return data


def find_run_record(checkpoint: Path, metrics_path: Path | None = None) -> RunRecord:
    """The training run a checkpoint came from: ``--metrics FILE``'s folder, or the checkpoint's
    folder or its parent (``mer train`` writes ``OUT/weights/<subject>.pth`` beside ``OUT/metrics*.json``)."""
    if metrics_path is not None:
        if not metrics_path.is_file():
            raise InputError("metrics file not found", path=metrics_path)
        candidates = [metrics_path.parent]
    else:
        candidates = [checkpoint.parent, checkpoint.parent.parent]
    for folder in candidates:
        detail_path, summary_path = folder / "metrics_detail.json", metrics_path or folder / "metrics.json"
        if not detail_path.is_file() and not summary_path.is_file():
            continue
        detail = _read_json(detail_path) if detail_path.is_file() else {}
        run = detail.get("run", {}) if isinstance(detail.get("run"), dict) else {}
        classes = detail.get("reports", {}).get("all", {}).get("classes") if isinstance(detail.get("reports"), dict) else None
        metrics = _read_json(summary_path) if summary_path.is_file() else None
        return RunRecord(folder, run, metrics, tuple(classes) if classes else None)
    return RunRecord()


def _weights_trained_on(checkpoint: Path, record: RunRecord) -> str | None:
    """What the checkpoint of a ``mer train`` run was trained on, for the manifest: every sample
    (``--final``'s ``OUT/final.pth``), or one fold's training subjects (``OUT/weights/<subject>.pth``)."""
    final = record.run.get("final") if isinstance(record.run.get("final"), dict) else {}
    if checkpoint.parent == record.folder and checkpoint.name == final.get("weights"):
        return (f"every sample of the dataset ({final.get('samples')} samples, {final.get('subjects')} subjects; "
                "mer train --final): the run's metrics measure its recipe under LOSO")
    if checkpoint.parent.name == "weights" and checkpoint.parent.parent == record.folder:
        return f"the LOSO fold that held out subject {checkpoint.stem}"
    return None


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint's model with its weights loaded, and what its run folder says about it."""

    model: nn.Module
    model_args: dict[str, Any]
    record: RunRecord
    training: dict[str, Any] | None
    flow: dict[str, Any]  # flow_method / flow_params / flow_size the run recorded for its inputs
    source: dict[str, str]


def load_checkpoint_model(
    checkpoint: str | Path,
    *,
    model_name: str | None = None,
    label_names: Sequence[str] | None = None,
    metrics_path: str | Path | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> LoadedCheckpoint:
    """Build the checkpoint's model from the registry (``model_name``, else its run record's) and load its weights."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError("checkpoint not found", path=checkpoint)
    record = find_run_record(checkpoint, None if metrics_path is None else Path(metrics_path))
    run_model = record.run.get("model")
    if model_name and run_model and model_name != run_model:
        raise InputError(f"--model {model_name!r} but the run record says {run_model!r}",
                         path=record.folder / "metrics_detail.json", column="run.model")
    model_name = model_name or run_model
    if not model_name:
        raise InputError(
            "cannot tell which model these weights are for: pass --model NAME "
            f"(known: {', '.join(list_models())}), or export from a mer train run folder", path=checkpoint)
    labels = tuple(label_names) if label_names else record.class_names
    # Options the run trained the model with (recipe.model_options), unless given explicitly.
    recorded = record.run.get("recipe", {}).get("model_options") if isinstance(record.run.get("recipe"), dict) else None
    model_args = {**(recorded or {}), **(model_args or {})}
    model = create_model(model_name, **{**model_args, **({"label_names": labels} if labels else {})})
    load_weights(model, checkpoint)
    training = None
    if record.run:
        keys = ("dataset", "protocol", "class_map", "folds", "recipe")
        training = {key: record.run[key] for key in keys if key in record.run}
        training["run_folder"] = str(record.folder)
        trained_on = _weights_trained_on(checkpoint, record)
        if trained_on:
            training["weights"] = trained_on
    # A flow-image model trained on face crops (mer prepare) records the flow its inputs were made with.
    recorded_flow = record.run.get("flow_input") if isinstance(record.run.get("flow_input"), dict) else {}
    flow = {key: recorded_flow[key] for key in ("flow_method", "flow_params", "flow_size") if key in recorded_flow}
    source = {"checkpoint": checkpoint.name, "checkpoint_sha256": file_entry(checkpoint)["sha256"]}
    return LoadedCheckpoint(model, model_args, record, training, flow, source)


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    model_name: str | None = None,
    label_names: Sequence[str] | None = None,
    metrics_path: str | Path | None = None,
    model_args: Mapping[str, Any] | None = None,
    **options: Any,
) -> EngineManifest:
    """Build the checkpoint's model from the registry, load its weights, and export it."""
    loaded = load_checkpoint_model(checkpoint, model_name=model_name, label_names=label_names,
                                   metrics_path=metrics_path, model_args=model_args)
    return export_model(loaded.model, out_dir, model_args=loaded.model_args, training=loaded.training,
                        metrics=loaded.record.metrics, source=loaded.source,
                        **_with_recorded_flow(options, loaded.flow))


def export_checkpoints(
    checkpoints: Sequence[str | Path],
    out_dir: str | Path,
    *,
    label_names: Sequence[str] | None = None,
    metrics_path: str | Path | None = None,
    **options: Any,
) -> EngineManifest:
    """Several checkpoints, each with its run folder, as one ``score_average`` engine.

    Each member is built as :func:`export_checkpoint` would build it alone; they must share
    their classes and their input (the ``score_average`` model checks the contract). The
    engine's metrics come only from ``metrics_path`` (e.g. the ``metrics.json`` that
    ``mer ensemble`` wrote for the same runs): no member's own metrics describe the average.
    """
    from engines.models.score_average import ScoreAverage

    if len(checkpoints) < 2:
        raise InputError("an ensemble engine needs at least two checkpoints", column="--checkpoint")
    loaded = [load_checkpoint_model(path, label_names=label_names) for path in checkpoints]
    classes = {tuple(item.model.cfg.label_names) for item in loaded}
    if len(classes) > 1:
        raise InputError(f"the checkpoints predict different classes: {sorted(classes)}", column="--checkpoint")
    flows = {json.dumps(item.flow, sort_keys=True) for item in loaded}
    if len(flows) > 1:
        raise InputError(f"the checkpoints' runs made their inputs with different flows: {sorted(flows)}",
                         column="--checkpoint")
    members = [{"model": item.model.cfg.name, "args": item.model_args} for item in loaded]
    model = ScoreAverage(members, label_names=loaded[0].model.cfg.label_names)
    for member, item in zip(model.members, loaded):
        member.load_state_dict(item.model.state_dict())
    metrics = None
    if metrics_path is not None:
        if not Path(metrics_path).is_file():
            raise InputError("metrics file not found", path=Path(metrics_path))
        metrics = _read_json(Path(metrics_path))
    training = {"members": [{"model": member["model"], **(item.training or {})}
                            for item, member in zip(loaded, members)]}
    source = {"checkpoints": [item.source for item in loaded]}  # member by member, as in training.members
    return export_model(model, out_dir, model_args={"members": members}, training=training, metrics=metrics,
                        source=source, **_with_recorded_flow(options, loaded[0].flow))


def _with_recorded_flow(options: Mapping[str, Any], flow: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the flow a run recorded for its inputs filling the flow options not given."""
    return {**options, **{key: value for key, value in flow.items() if options.get(key) is None}}
