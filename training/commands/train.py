"""``mer train`` and ``mer evaluate``: leave-one-subject-out training and evaluation.

Both pool every fold's predictions and write the same outputs (predictions.csv,
metrics.json, report.md, confusion.png); ``mer train`` also writes each fold's final
weights to ``OUT/weights/<subject>.pth``, the layout ``mer evaluate --weights-dir`` reads
(the original STSTNet release uses it too).

With ``--final``, each run then trains one more model, on every sample, with the same recipe and
seed, and saves it as ``OUT/final.pth``: the weights to deploy (``mer export --checkpoint
OUT/final.pth``). The LOSO folds measured the recipe; the final model is not scored (it has
no held-out subject), and the run's metrics describe how its recipe generalises.

``mer train`` runs one recipe with one seed, or a grid: several ``--recipe`` files and/or
several seeds (``--seed 1,2,3``), each run into ``OUT/<recipe>-seed<N>/`` with a summary of
all of them in ``OUT/runs.csv``. With ``--ray`` every fold of every run is a task on a Ray
cluster (``training/distributed.py``, docs/scale-out.md), with the same results.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from engines.config import json_object_option
from engines.errors import InputError, MerError

log = logging.getLogger(__name__)

PROTOCOLS = ("loso",)
FINAL_WEIGHTS = "final.pth"  # mer train --final: the model trained on every sample, beside the run's outputs
FINAL_FOLD = "(every subject)"  # its fold's name: what its seed is drawn from (training.trainer.fold_seed)


def _add_data_arguments(parser: argparse.ArgumentParser, model_help: str = "registered model name, e.g. ststnet") -> None:
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--dataset", required=True, help="dataset reader name, e.g. megc2019-flow")
    parser.add_argument("--root", required=True, type=Path, help="dataset folder")
    parser.add_argument("--sheet", type=Path, help="annotation sheet, when not the dataset's standard file in --root")
    parser.add_argument("--protocol", default="loso", choices=PROTOCOLS, help="evaluation protocol (default: loso)")
    parser.add_argument("--class-map", default="megc3", help="class map naming the task's classes (default: megc3)")
    parser.add_argument("--folds", help="comma-separated held-out subjects to run (default: all)")


def add_parser(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model with leave-one-subject-out folds",
        description="Train a fresh model per LOSO fold and score the pooled held-out predictions.",
    )
    _add_data_arguments(train, model_help="registered model name, e.g. ststnet; a comma list (ststnet,dual_atme) "
                        "runs each, a grid of models")
    train.add_argument("--out", required=True, type=Path, help="output folder")
    train.add_argument("--recipe", type=Path, action="append",
                       help="training recipe TOML (default: configs/train/<model>.toml); repeat for a grid of runs; "
                       "each runs its own model, which --model must name")
    train.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    train.add_argument("--seed", type=_seed_list, help="override the recipe's seed; a comma list (1,2,3) runs each")
    train.add_argument("--init-weights", type=Path,
                       help="start every fold from this state dict (e.g. mer pretrain's weights.pth); "
                       "overrides the recipe's init_weights")
    train.add_argument("--au-sheets", type=Path, metavar="DIR",
                       help="folder holding the CASME II and SAMM coding sheets (standard names): the composite's "
                            "samples take their action units from them, for a recipe with au_loss_weight")
    train.add_argument("--workers", type=int, help="parallel fold processes (default: number of cores)")
    train.add_argument("--resume", action="store_true", help="reuse the folds an interrupted run in --out already finished")
    train.add_argument("--final", action="store_true",
                       help=f"after the folds, train one model on every sample with the same recipe and save it as "
                       f"OUT/{FINAL_WEIGHTS}, the weights to export and deploy (the folds' metrics describe its recipe)")
    scale = train.add_argument_group("scale-out on Ray (pip install 'mer[ray]'; docs/scale-out.md)")
    scale.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="train the folds as tasks on a Ray cluster: its address (host:port, ray://host:port, "
                       "auto), or none to start one on this machine")
    scale.add_argument("--cpus-per-fold", type=float,
                       help="with --ray: CPUs (and torch threads) each fold takes (default: 1, as --workers does)")
    scale.add_argument("--gpus-per-fold", type=float,
                       help="with --ray: GPUs each fold reserves, for placement (default: 0; the trainer "
                       "itself computes on the CPU)")
    train.set_defaults(run=run_train)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate per-fold checkpoints on their held-out subjects",
        description="Apply WEIGHTS_DIR/<subject>.pth to each held-out subject and score the pooled predictions.",
    )
    _add_data_arguments(evaluate)
    evaluate.add_argument("--weights-dir", required=True, type=Path, help="folder of <subject>.pth checkpoints")
    evaluate.add_argument("--out", type=Path, help="also write the run outputs here")
    evaluate.add_argument(
        "--model-args",
        help="builder options the checkpoints were trained with, as a JSON object "
        "(default: the recipe's model_options recorded beside the weights by mer train)",
    )
    evaluate.add_argument("--json", action="store_true", help="print metrics.json's object on stdout")
    evaluate.set_defaults(run=run_evaluate)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed or a comma list of seeds, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds, got {text!r}")
    return seeds


class _Task(NamedTuple):
    """What a run trains and scores on: the samples, their inputs and labels, the folds, the model cfg,
    and the samples' action-unit targets (None when none is coded: ``au_target_matrix``)."""

    samples: list
    inputs: object  # a tensor, or JitteredInputs
    labels: torch.Tensor
    class_map: object  # ClassMap
    folds: list
    cfg: object  # ModelCfg
    action_units: torch.Tensor | None


def _load_task(args, model: str, model_options: dict, *, training: bool = True) -> _Task:
    """Samples with a label under the class map, their inputs, labels, the folds to run and the model cfg.

    The inputs are what the model built with ``model_options`` takes (its cfg says: the
    composite's flow images, or clips of face crops), so the model is built once here. The
    samples' AUs come from their own sheet (CASME II, SAMM) or, with ``--au-sheets``, from their
    source datasets' sheets (the composite).
    """
    from engines.models import create_model
    from training.action_unit_targets import attach_source_action_units, au_target_matrix
    from training.classmaps import CLASS_MAPS
    from training.datasets import SPOTTING_DATASETS, load_dataset
    from training.inputs import load_model_inputs
    from training.protocol import leave_one_subject_out

    if args.dataset in SPOTTING_DATASETS:
        raise InputError(f"{args.dataset} is a spotting sheet; training needs a recognition dataset")
    class_map = CLASS_MAPS.get(args.class_map)
    if class_map is None:
        raise InputError(f"unknown class map {args.class_map!r} (known: {', '.join(CLASS_MAPS)})")
    samples = [s for s in load_dataset(args.dataset, root=args.root, sheet=args.sheet) if class_map.name in s.labels]
    if not samples:
        raise InputError(f"no sample of {args.dataset} has a {class_map.name} label", path=args.root)
    au_sheets = getattr(args, "au_sheets", None)
    if au_sheets is not None:
        samples = attach_source_action_units(samples, au_sheets)
    built = create_model(model, label_names=class_map.classes, **model_options)
    cfg = built.cfg
    # Training-time onset/apex jitter (MMNet's), drawn from the cached clips; evaluation uses the labelled frames.
    jitter = getattr(built, "anchor_jitter", "none") if training else "none"
    inputs = load_model_inputs(cfg, args.dataset, samples, args.root, anchor_jitter=jitter)
    labels = torch.tensor([class_map.index(s.labels[class_map.name]) for s in samples], dtype=torch.int64)
    wanted = None if not args.folds else [name.strip() for name in args.folds.split(",") if name.strip()]
    try:
        folds = leave_one_subject_out(samples, wanted)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return _Task(samples, inputs, labels, class_map, folds, cfg, au_target_matrix(samples))


def _pooled(samples, folds, scores_by_fold, labels, class_names):
    from training.reports import Predictions

    order = [index for fold in folds for index in fold.test]
    scores = np.concatenate(scores_by_fold) if scores_by_fold else np.empty((0, len(class_names)))
    return Predictions([samples[i] for i in order], labels[order].numpy(), scores, class_names)


@dataclass
class _Run:
    """One recipe with one seed: its folds, where it is stored, what is already done."""

    name: str
    out: Path
    recipe: object  # TrainRecipe
    task: _Task
    store: object  # FoldStore
    fold_keys: dict[str, list[str]]
    resumed: dict[str, object]  # subject -> FoldResult read back from the store


def _model_names(args) -> list[str]:
    """``--model``: one registered name, or a comma list for a grid over models."""
    from engines.models.registry import model_entrypoint

    models = list(dict.fromkeys(name.strip() for name in args.model.split(",") if name.strip()))
    if not models:
        raise InputError("--model names no model")
    for name in models:
        model_entrypoint(name)  # an unknown name fails here, with the known ones and the closest match
    return models


def _plan_runs(args) -> list[_Run]:
    """Every (model, recipe, seed) the arguments ask for; a single run keeps ``--out`` itself as its folder.

    Each ``--recipe`` runs the model it names; a model of ``--model`` that no recipe names runs
    its default recipe (configs/train/<model>.toml)."""
    from engines.config import parse_config
    from training.fold_store import FoldStore
    from training.recipes import load_recipe

    models = _model_names(args)
    seeds = args.seed or [None]
    if args.init_weights is not None and not args.init_weights.is_file():
        raise InputError("no such weights file", path=args.init_weights)
    recipes = []  # (path or None, recipe)
    for path in args.recipe or []:
        recipe = load_recipe(models[0], path)
        if recipe.model not in models:
            raise InputError(f"recipe is for model {recipe.model!r}, which --model does not name "
                             f"({', '.join(models)})", path=path)
        recipes.append((path, recipe))
    named = {recipe.model for _, recipe in recipes}
    recipes += [(None, load_recipe(model)) for model in models if model not in named]
    names = [path.stem if path is not None else recipe.model for path, recipe in recipes]
    if len(set(names)) != len(names):
        raise InputError("two runs would share a folder: --recipe files must have different names, none of them a "
                         f"model's name that runs its default recipe ({', '.join(names)})")
    plans = []
    for path, recipe in recipes:
        for seed in seeds:
            overrides = {key: value for key, value in (("epochs", args.epochs), ("seed", seed)) if value is not None}
            if args.init_weights is not None:
                overrides["init_weights"] = str(args.init_weights)
            # Checked like the file itself: --epochs 0 must fail as epochs = 0 in the recipe would.
            plans.append((path, parse_config({**recipe.model_dump(mode="json"), **overrides}, type(recipe),
                                             source=f"{path or recipe.model} with the command line's overrides")))
    single = len(plans) == 1
    tasks: dict[str, _Task] = {}  # model options -> the loaded task, shared by runs that use the same inputs
    runs = []
    for path, recipe in plans:
        name = f"{path.stem if path is not None else recipe.model}-seed{recipe.seed}"
        options_key = json.dumps([recipe.model, recipe.model_options], sort_keys=True)
        if options_key not in tasks:
            tasks[options_key] = _load_task(args, recipe.model, recipe.model_options)
        task = tasks[options_key]
        samples, class_map, folds = task.samples, task.class_map, task.folds
        if recipe.au_loss_weight and task.action_units is None:
            raise InputError(f"the recipe trains an action-unit head (au_loss_weight = {recipe.au_loss_weight}), but no "
                             f"sample of {args.dataset} carries AU codes: give --au-sheets (the folder holding the "
                             "CASME II and SAMM coding sheets)", path=path)
        out = args.out if single else args.out / name
        keys = [sample.key for sample in samples]
        store = FoldStore(out, {
            "model": recipe.model, "dataset": args.dataset, "protocol": args.protocol, "class_map": class_map.name,
            "recipe": recipe.model_dump(), "samples": keys,
        }, added_defaults={"recipe": _recipe_defaults(type(recipe))})
        done = store.open(args.resume)
        fold_keys = {fold.test_subject: [keys[i] for i in fold.test] for fold in folds}
        resumed = {fold.test_subject: FoldStore.result_from_record(done[fold.test_subject], fold.test,
                                                                   fold_keys[fold.test_subject])
                   for fold in folds if fold.test_subject in done}
        if resumed:
            log.info("%s: resuming: %d of %d folds already finished in %s", name, len(resumed), len(folds), out)
        runs.append(_Run(name, out, recipe, task, store, fold_keys, resumed))
    return runs


def _recipe_defaults(recipe_class) -> dict:
    """The default of every recipe field that has one (what a run recorded before the field existed used)."""
    return {name: field.get_default(call_default_factory=True) for name, field in recipe_class.model_fields.items()
            if not field.is_required()}


def run_train(args) -> int:
    from training.trainer import run_folds

    if args.ray is not None and args.workers is not None:
        raise InputError("--workers sets local fold processes; with --ray, each fold is a Ray task (--cpus-per-fold)")
    if args.ray is None and (args.cpus_per_fold is not None or args.gpus_per_fold is not None):
        raise InputError("--cpus-per-fold and --gpus-per-fold are the resources of --ray's fold tasks")
    runs = _plan_runs(args)
    pending = {run.name: [f for f in run.task.folds if f.test_subject not in run.resumed] for run in runs}
    if args.ray is not None:
        from training.distributed import FoldJob, run_folds_on_ray

        started = time.perf_counter()
        jobs = [FoldJob(run.name, run.recipe, pending[run.name], run.task.inputs, run.task.labels,
                        [s.subject for s in run.task.samples], run.task.class_map.classes,
                        on_result=lambda result, run=run: run.store.save(result, run.fold_keys[result.test_subject]),
                        action_units=run.task.action_units)
                for run in runs]
        fresh = run_folds_on_ray(jobs, address=None if args.ray == "local" else args.ray,
                                 cpus_per_fold=1.0 if args.cpus_per_fold is None else args.cpus_per_fold,
                                 gpus_per_fold=0.0 if args.gpus_per_fold is None else args.gpus_per_fold)
        # The runs' folds interleave on the cluster: only the whole grid has a wall time.
        together = round(time.perf_counter() - started, 1)
        seconds = {run.name: together for run in runs}
    else:
        fresh, seconds = {}, {}
        for run in runs:
            task, run_started = run.task, time.perf_counter()
            fresh[run.name] = run_folds(run.recipe, pending[run.name], task.inputs, task.labels,
                                        [s.subject for s in task.samples], task.class_map.classes, args.workers,
                                        on_result=lambda result, run=run: run.store.save(
                                            result, run.fold_keys[result.test_subject]),
                                        action_units=task.action_units)
            seconds[run.name] = round(time.perf_counter() - run_started, 1)
    summary, failed = [], []
    for run in runs:
        if isinstance(fresh[run.name], str):
            failed.append(f"{run.name}: {fresh[run.name]}")
            continue
        final = _train_final(run) if args.final else None
        overall = _finish_run(args, run, fresh[run.name], seconds[run.name], final,
                              shared_by=len(runs) if args.ray is not None and len(runs) > 1 else 1)
        summary.append({"run": run.name, "seed": run.recipe.seed, "uf1": overall.uf1, "uar": overall.uar,
                        "acc": overall.acc})
    if len(runs) > 1:
        _write_runs_summary(args.out, summary)
    if failed:
        raise MerError(f"{len(failed)} of {len(runs)} runs failed: " + "; ".join(failed))
    return 0


def _train_final(run: _Run) -> dict:
    """One model on every sample of the run, with its recipe and seed, saved as ``OUT/final.pth``;
    returns what the run's record says of it. It trains in this process, after the folds."""
    from engines.checkpoints import write_state_dict
    from training.protocol import Fold, natural_key
    from training.trainer import train_fold

    samples = run.task.samples
    started = time.perf_counter()
    everything = Fold(FINAL_FOLD, tuple(range(len(samples))), ())
    result = train_fold(run.recipe, everything, run.task.inputs, run.task.labels, [s.subject for s in samples],
                        run.task.class_map.classes, run.task.action_units)
    write_state_dict(result.state_dict, run.out / FINAL_WEIGHTS)
    subjects = sorted({s.subject for s in samples}, key=natural_key)
    log.info("%s: final model on all %d samples of %d subjects -> %s", run.name, len(samples), len(subjects),
             run.out / FINAL_WEIGHTS)
    return {"weights": FINAL_WEIGHTS, "samples": len(samples), "subjects": len(subjects),
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "validation_subjects": list(result.validation_subjects),
            "seconds": round(time.perf_counter() - started, 1)}


def _finish_run(args, run: _Run, fresh, seconds: float, final: dict | None = None, shared_by: int = 1):
    """Pool a finished run's folds and write its outputs; returns its overall report.

    ``seconds`` is the run's own training time, or with ``shared_by > 1`` (a grid on Ray, whose
    runs train at once) the whole grid's, which the record then says."""
    from training.reports import write_run_outputs

    task = run.task
    samples, labels, class_map, folds, cfg = task.samples, task.labels, task.class_map, task.folds, task.cfg
    by_subject = {**run.resumed, **{result.test_subject: result for result in fresh}}
    results = [by_subject[fold.test_subject] for fold in folds]
    predictions = _pooled(samples, folds, [r.scores for r in results], labels, class_map.classes)
    run_info = {
        "model": run.recipe.model,
        "dataset": args.dataset,
        "protocol": args.protocol,
        "class_map": class_map.name,
        "folds": len(folds),
        "resumed_folds": len(run.resumed),
        "recipe": run.recipe.model_dump(),
        "epochs_run": {r.test_subject: r.epochs_run for r in results},
        "seconds": seconds,
        **({"seconds_for": f"all {shared_by} runs of the grid, trained together on Ray"} if shared_by > 1 else {}),
        **({"au_sheets": str(args.au_sheets)} if getattr(args, "au_sheets", None) is not None else {}),
        **({"final": final} if final else {}),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if cfg.clip is None and args.dataset == "prepared":
        from engines.preprocess import LIVE_FLOW

        # The flow the inputs were made with, for mer export to write into the engine's manifest.
        run_info["flow_input"] = {key: list(value) if isinstance(value, tuple) else value
                                  for key, value in LIVE_FLOW.items()}
    reports = write_run_outputs(run.out, predictions, run_info)
    overall = reports["all"]
    print(f"{run.recipe.model} {args.protocol} on {args.dataset}: {len(folds)} folds, UF1 {overall.uf1:.4f} UAR {overall.uar:.4f} "
          f"acc {overall.acc:.4f} -> {run.out}")
    return overall


def _write_runs_summary(out: Path, summary: list[dict]) -> None:
    """OUT/runs.csv: one row per run, then the mean and standard deviation over the seeds of each recipe."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [[row["run"], row["seed"], f"{row['uf1']:.4f}", f"{row['uar']:.4f}", f"{row['acc']:.4f}"] for row in summary]
    groups: dict[str, list[dict]] = {}
    for row in summary:
        groups.setdefault(row["run"].rsplit("-seed", 1)[0], []).append(row)
    for recipe, members in groups.items():
        if len(members) > 1:
            for label, reduce in (("mean", np.mean), ("std", np.std)):
                rows.append([f"{recipe} {label}", "",
                             *(f"{reduce([m[k] for m in members]):.4f}" for k in ("uf1", "uar", "acc"))])
    with open(out / "runs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", "seed", "uf1", "uar", "acc"])
        writer.writerows(rows)
    for row in rows:
        print("  ".join(str(value) for value in row))


def _recorded_model_options(weights_dir: Path) -> dict:
    """``recipe.model_options`` of the mer train run that wrote ``weights_dir`` ({} if none is recorded)."""
    detail = weights_dir.parent / "metrics_detail.json"
    if not detail.is_file():
        return {}
    try:
        recipe = json.loads(detail.read_text()).get("run", {}).get("recipe", {})
    except (json.JSONDecodeError, AttributeError):
        raise InputError("cannot read the run record", path=detail) from None
    return dict(recipe.get("model_options") or {})


def run_evaluate(args) -> int:
    from engines.checkpoints import load_weights, subject_weights_path
    from engines.models import create_model
    from training.reports import write_run_outputs
    from training.metrics import summaries

    model_options = json_object_option(args.model_args, "--model-args")
    if model_options is None:
        model_options = _recorded_model_options(args.weights_dir)
    task = _load_task(args, args.model, model_options, training=False)
    samples, inputs, labels, class_map, folds = task.samples, task.inputs, task.labels, task.class_map, task.folds
    scores_by_fold = []
    for fold in folds:
        model = create_model(args.model, label_names=class_map.classes, **model_options)
        load_weights(model, subject_weights_path(args.weights_dir, fold.test_subject))
        model.eval()
        with torch.inference_mode():
            scores_by_fold.append(torch.softmax(model(inputs[list(fold.test)]), dim=1).numpy())
    predictions = _pooled(samples, folds, scores_by_fold, labels, class_map.classes)
    if args.out is not None:
        run_info = {"model": args.model, "dataset": args.dataset, "protocol": args.protocol,
                    "weights_dir": str(args.weights_dir), "folds": len(folds)}
        reports = write_run_outputs(args.out, predictions, run_info)
    else:
        reports = predictions.reports()
    if args.json:
        print(json.dumps(summaries(reports)))
    else:
        for name, report in reports.items():
            print(f"{name:>8}: UF1 {report.uf1:.4f}  UAR {report.uar:.4f}  acc {report.acc:.4f}  ({report.samples} samples)")
    return 0
