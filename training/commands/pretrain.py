"""``mer pretrain``: pretrain a model on merged macro-expression datasets (paper 002's transfer step).

    mer pretrain --model tldn --dataset fer2013,rafdb,ckplus --root F,R,C --out DIR

writes ``DIR/weights.pth`` (the best-validation weights, for a fine-tuning recipe's
``init_weights`` or ``mer train --init-weights``) and ``DIR/pretrain.json`` (the data counts,
the split, every epoch's losses and accuracy). See :mod:`training.pretrain`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engines.errors import InputError


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    pretrain = subparsers.add_parser(
        "pretrain",
        help="pretrain a model on merged macro-expression datasets (3 classes)",
        description="Merge macro-expression datasets into one class-balanced 3-class set, hold out a stratified "
        "validation share, train, and keep the weights of the best validation accuracy.",
    )
    pretrain.add_argument("--model", required=True, help="registered model name, e.g. tldn")
    pretrain.add_argument("--dataset", required=True, help="comma-separated readers: fer2013, rafdb, ckplus")
    pretrain.add_argument("--root", required=True,
                          help="comma-separated dataset folders, one per --dataset, in the same order")
    pretrain.add_argument("--out", required=True, type=Path, help="output folder (weights.pth, pretrain.json)")
    pretrain.add_argument("--recipe", type=Path, help="recipe TOML (default: configs/train/<model>_pretrain.toml)")
    pretrain.add_argument("--epochs", type=int, help="override the recipe's maximum number of epochs")
    pretrain.add_argument("--seed", type=int, help="override the recipe's seed")
    pretrain.add_argument("--threads", type=int,
                          help="torch CPU threads (default: torch's own, one per core). Set it beside other jobs: "
                               "more threads than free cores slow training several-fold. The count can change the "
                               "last digits of the sums, so pretrain.json records it")
    pretrain.set_defaults(run=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    import torch

    from training.pretrain import load_pretrain_recipe, run_pretraining

    recipe = load_pretrain_recipe(args.model, args.recipe)
    overrides = {key: value for key, value in (("epochs", args.epochs), ("seed", args.seed)) if value is not None}
    recipe = recipe.model_copy(update=overrides)
    if recipe.model != args.model:
        raise InputError(f"recipe is for model {recipe.model!r}, not {args.model!r}", path=args.recipe)
    if recipe.epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {recipe.epochs}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"must be >= 1, got {args.threads}", column="--threads")
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        summary = run_pretraining(recipe, _names(args.dataset), _names(args.root), args.out)
    finally:
        torch.set_num_threads(threads_before)
    used = sum(summary["train"].values()) + sum(summary["validation"].values())
    print(f"{args.model} pretrained on {args.dataset} ({used} images): best validation accuracy "
          f"{summary['best_val_acc']:.4f} at epoch {summary['best_epoch']} of {summary['epochs_run']} -> {args.out}")
    return 0
