"""``mer prepare``: cache a dataset's aligned colour face crops for clip models (docs/prepare.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from engines.errors import InputError
from training.prepare import DEFAULT_SIZE, PREPARE_DATASETS, prepare_dataset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="track and align the face through every labelled clip and cache the crops",
        description="Reads each sample's onset..offset frames, aligns the face with the stream's face front end "
        "(dlib 68 points) and writes CACHE/clips/<subject>/<sample_id>.npz plus CACHE/manifest.json. "
        "Rerunning with the same options resumes. Train on the result with --dataset prepared --root CACHE.",
    )
    parser.add_argument("--dataset", required=True, choices=PREPARE_DATASETS, help="which reader to use")
    parser.add_argument("--root", type=Path, required=True, help="the dataset folder (frames; the standard sheet)")
    parser.add_argument("--sheet", type=Path, help="the annotation sheet (default: the standard name in --root)")
    parser.add_argument("--out", type=Path, required=True, help="the cache folder to write (or resume)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"side of the aligned crops in pixels, 32..512 (default {DEFAULT_SIZE})")
    parser.add_argument("--workers", type=int, default=1, help="processes tracking clips in parallel (default 1)")
    parser.add_argument("--limit", type=int, help="prepare only the first N samples (a trial run; resumable)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    if not 32 <= args.size <= 512:
        raise InputError(f"--size must lie within 32..512, got {args.size}", column="size")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}", column="workers")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}", column="limit")
    result = prepare_dataset(args.dataset, args.root, args.out, sheet=args.sheet, size=args.size,
                             workers=args.workers, limit=args.limit, progress=not args.no_progress)
    print(f"prepared {result.written} clips ({result.skipped} already there); {result.cached} samples in "
          f"{result.cache}")
    return 0
