"""``mer calibration-set``: model inputs for an INT8 TensorRT build, from a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibration-set", help="write an INT8 calibration set for an engine from a dataset's motion images",
        description="Write a .npz of model inputs (classes in turn, deterministic for --seed) and the engine input "
                    "contract they follow, for `mer export --format tensorrt --precision int8 --calibration FILE`.")
    parser.add_argument("--engine", type=Path, required=True, help="engine directory the set is for")
    parser.add_argument("--dataset", default="megc2019-flow", help="dataset with motion images (default megc2019-flow)")
    parser.add_argument("--root", type=Path, required=True, help="dataset root")
    parser.add_argument("--out", type=Path, required=True, help="output .npz file")
    parser.add_argument("--count", type=int, default=256, help="samples (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="sample order seed (default 0)")
    parser.add_argument("--exclude-subjects", default="",
                        help="comma-separated subjects never to calibrate on (e.g. a held-out subject)")
    parser.set_defaults(run=run_calibration_set)


def run_calibration_set(args: argparse.Namespace) -> int:
    from training.calibration import write_dataset_calibration_set
    from training.datasets import load_dataset

    samples = load_dataset(args.dataset, root=args.root)
    excluded = [s.strip() for s in args.exclude_subjects.split(",") if s.strip()]
    path = write_dataset_calibration_set(args.engine, samples, args.out, count=args.count, seed=args.seed,
                                         exclude_subjects=excluded)
    from engines.runtime.tensorrt_support import read_calibration_set

    print(f"calibration set for {args.engine}: {read_calibration_set(path).inputs.shape[0]} samples -> {path}")
    return 0
