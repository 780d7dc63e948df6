"""Pretraining on merged macro-expression datasets, the transfer-learning step of paper 002 (TLDN).

The paper pretrains on CK+, RAF-DB and FER-2013 merged into one 3-class set (negative /
positive / surprise, its Table 2, which the readers apply under the ``megc3`` class map, so the
classes and their order are the fine-tuning task's and even the head transfers), with the
classes balanced, 20 % of the samples held out for validation, and keeps the weights of the
best validation accuracy; a LOSO fine-tuning then starts from them (recipe ``init_weights``).

What is fixed here, the paper being silent:

* **Balance by undersampling**: every class is cut, at random (seeded), to the size of the
  smallest one before the split; "we maintain the balance of the sample size in the three
  categories" reads as equal counts. ``balance = "weights"`` keeps every sample and weights
  the loss inversely to the class counts instead.
* **Split**: stratified, the same fraction of every class goes to validation (seeded).
* **Schedule** (Table 3): Adam, batch 16, lr 0.01, up to 200 epochs; the lr is multiplied by
  ``plateau_factor`` (0.1) when the validation loss has not improved for ``plateau_patience``
  (20) epochs, and training stops when the validation accuracy has not improved for
  ``patience`` (20) epochs, as the paper's "early stopping" text says. The best-accuracy
  weights are kept.
* **Inputs**: the images are pre-cropped faces (FER-2013, RAF-DB aligned) or cropped here to
  the detector-like box of a sample's ``face_box`` attribute (CK+, from its landmarks), so no
  face detector runs. Each crop becomes the model's input with ``engines.clip_input``, the
  function the fine-tuning and the stream use (RGB 0..1 at the model's size), without
  magnification: the macro sets are still images. They are kept as uint8 (rounding the
  0..1 values to 1/255) so the 17k images of the real sets fit in memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from tqdm import tqdm

from engines.config import load_config
from engines.errors import InputError
from training.classmaps import MEGC3
from training.recipes import RECIPE_DIR, TrainRecipe
from training.samples import Sample

__all__ = [
    "MACRO_DATASETS",
    "PretrainRecipe",
    "PretrainResult",
    "load_face_inputs",
    "load_pretrain_recipe",
    "macro_samples",
    "run_pretraining",
    "stratified_split",
    "train_with_validation",
    "undersample",
]

log = logging.getLogger(__name__)

MACRO_DATASETS = ("fer2013", "rafdb", "ckplus")
CLASS_MAP = MEGC3
WEIGHTS_NAME = "weights.pth"
SUMMARY_NAME = "pretrain.json"
EVAL_BATCH = 256


class PretrainRecipe(TrainRecipe):
    """A training recipe plus the pretraining-only knobs (defaults: the paper's Table 3).

    ``validation_fraction`` is the stratified held-out share, ``patience`` the early stopping
    patience on validation accuracy. The extra keys have defaults, so the shipped
    ``configs/train/*_pretrain.toml`` files stay valid training recipes too.
    """

    epochs: int = Field(200, ge=1, le=100_000)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.01, gt=0)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    patience: int = Field(20, ge=1)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    plateau_patience: int = Field(20, ge=1)
    balance: Literal["undersample", "weights"] = "undersample"


def load_pretrain_recipe(model: str, path: str | Path | None = None) -> PretrainRecipe:
    """The recipe at ``path``, or ``configs/train/<model>_pretrain.toml``."""
    recipe = load_config(Path(path) if path is not None else RECIPE_DIR / f"{model}_pretrain.toml", PretrainRecipe)
    unsupported = {
        "lr_schedule": recipe.lr_schedule != "constant",
        "warmup_epochs": recipe.warmup_epochs > 0,
        "average_last_epochs": recipe.average_last_epochs > 0,
        "class_weighting": recipe.class_weighting != "none",
    }
    bad = [key for key, is_set in unsupported.items() if is_set]
    if bad:
        raise InputError(f"pretraining does not use {', '.join(bad)} (the lr follows plateaus; classes are "
                         "balanced by the 'balance' key)", path=path, column=bad[0])
    return recipe


def macro_samples(datasets: Sequence[str], roots: Sequence[str | Path]) -> tuple[list[Sample], dict[str, dict]]:
    """Every sample of the datasets with a 3-class label and a face image, and per-dataset counts."""
    from training.datasets import load_dataset

    if len(datasets) != len(roots):
        raise InputError(f"give one root per dataset: {len(datasets)} dataset(s), {len(roots)} root(s)")
    unknown = [name for name in datasets if name not in MACRO_DATASETS]
    if unknown:
        raise InputError(f"not a macro-expression dataset: {', '.join(unknown)} (known: {', '.join(MACRO_DATASETS)})")
    kept: list[Sample] = []
    counts: dict[str, dict] = {}
    for name, root in zip(datasets, roots):
        samples = load_dataset(name, root=root)
        labelled = [s for s in samples if CLASS_MAP.name in s.labels]
        usable = [s for s in labelled if s.frames]
        counts[name] = {
            "root": str(root),
            "samples": len(samples),
            "labelled": len(labelled),
            "with_image": len(usable),
            "classes": _class_counts(usable),
        }
        if len(usable) < len(labelled):
            log.warning("%s: %d labelled samples have no image file and are left out",
                        name, len(labelled) - len(usable))
        kept.extend(usable)
    if not kept:
        raise InputError(f"no labelled face image in {', '.join(datasets)}")
    return kept, counts


def _class_counts(samples: Sequence[Sample]) -> dict[str, int]:
    counted = Counter(sample.labels[CLASS_MAP.name] for sample in samples)
    return {name: counted[name] for name in CLASS_MAP.classes}


def undersample(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random subset with every class cut to the smallest non-empty class (sorted)."""
    present = [c for c in range(num_classes) if np.any(labels == c)]
    smallest = min(int(np.sum(labels == c)) for c in present)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=smallest, replace=False) for c in present]
    return np.sort(np.concatenate(chosen))


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices; round(fraction * n_c) of each class c is held out (at least 1)."""
    train, validation = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < 2:
            raise InputError(f"class {CLASS_MAP.classes[c]!r} has {len(members)} sample(s): too few to split")
        held = min(len(members) - 1, max(1, round(fraction * len(members))))
        validation.append(members[:held])
        train.append(members[held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def load_face_inputs(samples: Sequence[Sample], spec) -> torch.Tensor:
    """(N, C, S, S) uint8: each sample's face image (``frames[0]``, cropped to its ``face_box``
    attribute when it has one) made into the model's input by ``engines.clip_input``, times 255."""
    import cv2

    from engines.clip_input import build_clip_input

    still = dataclasses.replace(spec, magnify=None)  # still images: nothing to magnify
    inputs = np.empty((len(samples), *still.sample_shape), dtype=np.uint8)
    for index, sample in enumerate(samples):
        path = sample.frames[0]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("cannot read face image (missing or not an image)", path=path)
        face = _crop(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), sample)
        inputs[index] = np.rint(build_clip_input([face], 0, 0, 0, still) * 255.0)
    return torch.from_numpy(inputs)


def _crop(image: np.ndarray, sample: Sample) -> np.ndarray:
    """The image inside the sample's face box (clamped to the image), or the whole image."""
    text = sample.attributes.get("face_box")
    if not text:
        return image
    x0, y0, x1, y1 = (float(value) for value in text.split(","))
    height, width = image.shape[:2]
    left, top = max(0, round(x0)), max(0, round(y0))
    right, bottom = min(width, round(x1)), min(height, round(y1))
    if right - left < 2 or bottom - top < 2:
        raise InputError(f"face box {text} lies outside the {width}x{height} image", path=sample.frames[0])
    return np.ascontiguousarray(image[top:bottom, left:right])


@dataclass
class PretrainResult:
    """The kept (best-validation) weights and what led to them."""

    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_val_acc: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)


def train_with_validation(
    recipe: PretrainRecipe,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    class_names: Sequence[str],
    progress: bool = True,
) -> PretrainResult:
    """Train a fresh model; keep the weights of the best validation accuracy (inputs uint8, 0..255)."""
    from engines.models import create_model
    from training.trainer import _class_weights, _loss, _optimizer, load_matching_weights

    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = create_model(recipe.model, label_names=tuple(class_names), **recipe.model_options)
    if recipe.init_weights:
        load_matching_weights(model, recipe.init_weights)
    optimizer = _optimizer(recipe, model)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=recipe.plateau_factor, patience=recipe.plateau_patience
    )
    weight = _class_weights(y_train, len(class_names), "balanced" if recipe.balance == "weights" else "none")
    best = PretrainResult({}, 0, -1.0, 0)
    for epoch in tqdm(range(1, recipe.epochs + 1), desc=f"pretrain {recipe.model}", unit="epoch", disable=not progress):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(model, model(x_train[batch].float() / 255.0), y_train[batch], weight)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(batch), seen + len(batch)
        val_loss, val_acc = _evaluate(model, x_val, y_val, weight)
        best.history.append({"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss, "val_acc": val_acc,
                             "lr": optimizer.param_groups[0]["lr"]})
        best.epochs_run = epoch
        plateau.step(val_loss)
        if val_acc > best.best_val_acc:
            best.best_val_acc, best.best_epoch = val_acc, epoch
            best.state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best.best_epoch >= recipe.patience:
            break
    return best


@torch.inference_mode()
def _evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, weight) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on ``inputs`` in eval mode."""
    model.eval()
    logits = torch.cat([model(inputs[start : start + EVAL_BATCH].float() / 255.0)
                        for start in range(0, len(inputs), EVAL_BATCH)])
    loss = nn.functional.cross_entropy(logits, labels, weight=weight)
    return float(loss), float((logits.argmax(1) == labels).float().mean())


def run_pretraining(
    recipe: PretrainRecipe, datasets: Sequence[str], roots: Sequence[str | Path], out: str | Path, progress: bool = True
) -> dict:
    """Merge, balance, split, train; write ``out/weights.pth`` and ``out/pretrain.json`` (returned)."""
    from engines.checkpoints import write_state_dict
    from engines.models import create_model

    started = time.perf_counter()
    out = Path(out)
    samples, per_dataset = macro_samples(datasets, roots)
    labels = np.array([CLASS_MAP.index(s.labels[CLASS_MAP.name]) for s in samples], dtype=np.int64)
    rng = np.random.default_rng(recipe.seed)
    if recipe.balance == "undersample":
        chosen = undersample(labels, len(CLASS_MAP.classes), rng)
    else:
        chosen = np.arange(len(samples))
    train_index, val_index = stratified_split(labels[chosen], recipe.validation_fraction, rng)
    train_index, val_index = chosen[train_index], chosen[val_index]

    cfg = create_model(recipe.model, label_names=CLASS_MAP.classes, **recipe.model_options).cfg
    if cfg.clip is None or cfg.clip.anchors != "apex":
        raise InputError(f"model {recipe.model} does not take one face image (its cfg has no apex-only clip spec)")
    inputs = load_face_inputs([samples[i] for i in np.concatenate([train_index, val_index])], cfg.clip)
    targets = torch.from_numpy(labels[np.concatenate([train_index, val_index])])
    n_train = len(train_index)
    result = train_with_validation(recipe, inputs[:n_train], targets[:n_train], inputs[n_train:], targets[n_train:],
                                   CLASS_MAP.classes, progress)
    write_state_dict(result.state_dict, out / WEIGHTS_NAME)
    summary = {
        "model": recipe.model,
        "model_options": dict(recipe.model_options),
        "classes": list(CLASS_MAP.classes),
        "class_map": CLASS_MAP.name,
        "datasets": per_dataset,
        "balance": recipe.balance,
        "train": _class_counts([samples[i] for i in train_index]),
        "validation": _class_counts([samples[i] for i in val_index]),
        "validation_samples": [f"{samples[i].dataset}:{samples[i].key}" for i in val_index],
        "best_val_acc": result.best_val_acc,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "history": result.history,
        "recipe": recipe.model_dump(),
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
    return summary
