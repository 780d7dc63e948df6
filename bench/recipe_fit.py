"""How well a training recipe fits its *training* subjects: a diagnostic for choosing recipes honestly.

Run from the repository root::

    .venv/bin/python -m bench.recipe_fit --recipe configs/train/ststnet_fast.toml \\
        --root ../shared/data/HTNet [--fold 0] [--set lr=3e-4 --set model=hars_ststnet,lr=3e-4 ...]

It trains one LOSO fold (``--fold``: its index in subject order) with the recipe, once as written
and once per ``--set`` override (``key=value[,key=value]``), then scores the model on the samples
it was trained on: accuracy, macro F1 and cross-entropy on the training subjects. The held-out
subject's scores are thrown away unread. A recipe that cannot fit its own training data
(underfitting) shows it here, and a recipe can be changed on that evidence without looking at
a held-out subject: that is how ``configs/train/ststnet_lr3e-4.toml`` was chosen (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch

from engines.config import load_config
from engines.models import create_model
from training.metrics import pooled_metrics
from training.recipes import TrainRecipe
from training.trainer import train_fold


def _overrides(text: str, recipe) -> dict:
    """``key=value,key=value`` into typed recipe fields (each value cast like the recipe's own)."""
    changes = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        if not hasattr(recipe, key):
            raise SystemExit(f"recipe has no field {key!r}")
        current = getattr(recipe, key)
        changes[key] = value if current is None else type(current)(value)
    return changes


def training_fit(recipe, fold, inputs, labels, subjects, class_names) -> dict:
    """Train ``fold`` with ``recipe``; accuracy, UF1 and cross-entropy on its training samples only."""
    started = time.perf_counter()
    result = train_fold(recipe, fold, inputs, labels, subjects, class_names)
    model = create_model(recipe.model, label_names=tuple(class_names), **recipe.model_options)
    model.load_state_dict(result.state_dict)
    model.eval()
    train = list(fold.train)
    with torch.inference_mode():
        logits = model(inputs[train])
    truth = labels[train].numpy()
    predicted = logits.argmax(1).numpy()
    report = pooled_metrics(truth, predicted, class_names)
    return {
        "train_acc": report.acc,
        "train_uf1": report.uf1,
        "train_ce": float(torch.nn.functional.cross_entropy(logits, labels[train])),
        "seconds": time.perf_counter() - started,
    }


def main(argv=None) -> None:
    from training.commands.train import _load_task

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--dataset", default="megc2019-flow")
    parser.add_argument("--root", required=True)
    parser.add_argument("--fold", type=int, default=0, help="index of the held-out subject (subject order)")
    parser.add_argument("--set", action="append", default=[], help="recipe overrides key=value[,key=value]")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    base = load_config(args.recipe, TrainRecipe)
    task_args = SimpleNamespace(dataset=args.dataset, root=args.root, sheet=None, class_map="megc3", folds=None)
    rows, tasks = [], {}
    for spec in ["", *args.set]:
        recipe = base.model_copy(update=_overrides(spec, base)) if spec else base
        # The model's inputs, read once per model and options (the same samples and folds for every model).
        key = json.dumps([recipe.model, recipe.model_options], sort_keys=True)
        if key not in tasks:
            tasks[key] = _load_task(task_args, recipe.model, dict(recipe.model_options))
        task = tasks[key]
        samples, inputs, labels, class_map, folds = task.samples, task.inputs, task.labels, task.class_map, task.folds
        fold = folds[args.fold]
        subjects = [sample.subject for sample in samples]
        row = {"recipe": args.recipe + (f" + {spec}" if spec else ""), "fold": fold.test_subject,
               **training_fit(recipe, fold, inputs, labels, subjects, class_map.classes)}
        rows.append(row)
        if not args.json:
            print(f"{row['recipe']}: train acc {row['train_acc']:.3f}, train UF1 {row['train_uf1']:.3f}, "
                  f"train CE {row['train_ce']:.3f} ({row['seconds']:.0f} s)", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
