"""``mer export``: a checkpoint in, an engine directory out (see docs/engines.md).

The format choices and their help come from ``engines.export.FORMATS``. The model of a bare
``.pth`` is ``--model``, or the one named by the ``mer train`` run folder it sits in. Several
``--checkpoint`` make one ``score_average`` engine (engines/models/score_average.py).
"""

from __future__ import annotations

from pathlib import Path

from engines.config import json_object_option
from engines.errors import InputError


def add_parser(subparsers) -> None:
    from engines.export import DEFAULT_OPSET, FORMATS

    formats = "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to an engine directory (ONNX, TensorRT)",
        description="Write DIR/model.onnx, DIR/weights.pth and DIR/manifest.json (schema mer.engine/1). "
        f"Formats: {formats}.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, action="append",
                        help="weights file (.pth state dict); given several times (each in its mer train run "
                        "folder), one score_average engine that averages their probabilities")
    parser.add_argument("--format", default="onnx", choices=list(FORMATS), help="engine format (default: onnx)")
    parser.add_argument("--out", required=True, type=Path, help="engine directory to write")
    parser.add_argument("--model", help="registered model name (default: the model of the run folder the checkpoint is in)")
    parser.add_argument("--labels", help="comma-separated class names (default: the run's classes, else the model's)")
    parser.add_argument("--metrics", type=Path, help="the run's metrics.json (default: found beside the checkpoint or its folder)")
    parser.add_argument("--model-args", help="builder options the checkpoint was trained with, as a JSON object "
                        "(default: the model's defaults)")
    parser.add_argument("--version", help="engine version (default: the first 12 hex digits of the weights' sha256)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 17 (default {DEFAULT_OPSET})")
    parser.add_argument("--flow-method", help="motion method recorded in the preprocessing signature (default: tvl1)")
    parser.add_argument("--flow-params", help="its parameters as a JSON object (default: the method's defaults)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                        help="tensorrt: plan precision (default fp32; int8 needs --calibration)")
    parser.add_argument("--calibration", type=Path,
                        help="tensorrt int8: calibration set (.npz from `mer calibration-set`)")
    parser.add_argument("--half", action="store_true", help="tensorrt: the same as --precision fp16")
    parser.add_argument("--max-batch", type=int, default=64, help="tensorrt: largest batch of the plan (default 64)")
    parser.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out")
    parser.set_defaults(run=run_export)


def run_export(args) -> int:
    from engines.export import FORMATS, export_checkpoint, export_checkpoints

    fmt = FORMATS[args.format]
    precision = "fp16" if args.half else args.precision
    tensorrt_only = args.half or args.max_batch != 64 or precision != "fp32" or args.calibration is not None
    if tensorrt_only and "precision" not in fmt.options:
        raise InputError(f"--precision/--calibration/--half/--max-batch only apply to a format with a TensorRT "
                         f"plan, not {fmt.name}", column="--format")
    labels = [name.strip() for name in args.labels.split(",") if name.strip()] if args.labels else None
    options = dict(
        label_names=labels,
        metrics_path=args.metrics,
        formats=("onnx", fmt.name) if fmt.name != "onnx" else ("onnx",),
        version=args.version,
        opset=args.opset,
        flow_method=args.flow_method,
        flow_params=json_object_option(args.flow_params, "--flow-params"),
        precision=precision,
        calibration=args.calibration,
        max_batch=args.max_batch,
        overwrite=args.force,
    )
    if len(args.checkpoint) > 1:
        if args.model or args.model_args:
            raise InputError("--model and --model-args apply to one checkpoint; an ensemble's members are "
                             "read from their run folders", column="--model")
        manifest = export_checkpoints(args.checkpoint, args.out, **options)
    else:
        manifest = export_checkpoint(args.checkpoint[0], args.out, model_name=args.model,
                                     model_args=json_object_option(args.model_args, "--model-args"), **options)
    print(f"{manifest.engine_id} ({', '.join(manifest.class_names)}) -> {manifest.engine_dir} "
          f"[{', '.join(manifest.files)}]")
    return 0
