"""The leave-one-subject-out trainer.

Every fold starts from a freshly built model (``engines.models.create_model``), trains on
the other subjects with the recipe's fixed schedule, and predicts the held-out subject
once, at the end. With ``validation_fraction > 0`` a few *training* subjects are held
back and the epoch with the lowest loss on them is kept (early stopping); the held-out
subject is never used for any choice. Folds run in worker processes, one thread each,
so a 2-core machine trains two folds at a time.

Models that are not trained by gradient descent say so: ``model.closed_form = True`` and
``model.fit_closed_form(inputs, labels, weight, seed)`` (LBP-TOP + SVM, Bi-WOOF + SVM: the
SVM is fitted on the fold's training samples and becomes the model's final linear layer).
A model with an ``after_training(inputs, labels, weight, seed)`` method gets it called on
the training samples once its epochs are done (DSTAN fits its SVM fusion there).

With ``recipe.au_loss_weight > 0`` the fold also trains an action-unit head (a linear layer on
the model's pre-logit features, ``training.action_unit_targets``) on the training samples'
FACS codes. It exists only while training: the fold's weights and the exported engine are the
model's own.

Determinism: a fold's randomness (initial weights, batch order, inner split) comes from
``(recipe.seed, subject)`` only, so a fold gives the same result whether it runs alone,
in a pool, or in any order. On CPU torch's kernels are deterministic for these models
(``torch.use_deterministic_algorithms`` is enabled in the workers).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from engines.models import create_model
from training.anchor_jitter import JitteredInputs
from training.protocol import Fold, validation_subjects
from training.recipes import TrainRecipe

log = logging.getLogger(__name__)

__all__ = ["FoldResult", "train_fold", "run_folds", "fold_seed", "load_matching_weights"]


@dataclass
class FoldResult:
    """What one fold produced: test-set scores and the final weights."""

    test_subject: str
    test_indices: tuple[int, ...]
    scores: np.ndarray  # (n_test, n_classes) softmax probabilities
    state_dict: dict[str, torch.Tensor]
    epochs_run: int
    validation_subjects: tuple[str, ...] = ()
    best_epoch: int | None = None


def fold_seed(seed: int, subject: str) -> int:
    """A fold's seed depends on the run seed and the held-out subject only."""
    return (seed * 1_000_003 + zlib.crc32(subject.encode())) % (2**31 - 1)


def _class_weights(labels: torch.Tensor, num_classes: int, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, labels.numel() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights


def load_matching_weights(model: nn.Module, path: str) -> list[str]:
    """Load the tensors of the state dict at ``path`` whose name and shape match ``model``'s.

    Returns the names left at their fresh initialisation (a pretrained head for another
    label set, say). Refuses a file that shares no tensor with the model: that is the wrong
    checkpoint, not a fine-tuning start.
    """
    from engines.checkpoints import read_state_dict
    from engines.errors import InputError

    pretrained = read_state_dict(path)
    own = model.state_dict()
    usable = {k: v for k, v in pretrained.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not usable:
        raise InputError(f"no tensor of the checkpoint matches model {type(model).__name__}", path=path)
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def _scheduler(recipe: TrainRecipe, optimizer: torch.optim.Optimizer):
    """The per-epoch learning-rate schedule: optional linear warm-up, then constant, cosine or exponential."""
    lr = torch.optim.lr_scheduler
    if recipe.warmup_epochs >= recipe.epochs:
        raise ValueError(f"warmup_epochs ({recipe.warmup_epochs}) must be fewer than epochs ({recipe.epochs})")
    rest = recipe.epochs - recipe.warmup_epochs
    main = {
        "constant": lambda: lr.ConstantLR(optimizer, factor=1.0, total_iters=0),
        "cosine": lambda: lr.CosineAnnealingLR(optimizer, T_max=rest),
        "exponential": lambda: lr.ExponentialLR(optimizer, gamma=recipe.lr_gamma),
    }[recipe.lr_schedule]()
    if not recipe.warmup_epochs:
        return None if recipe.lr_schedule == "constant" else main
    warmup = lr.LinearLR(optimizer, start_factor=1.0 / (recipe.warmup_epochs + 1), total_iters=recipe.warmup_epochs)
    return lr.SequentialLR(optimizer, [warmup, main], milestones=[recipe.warmup_epochs])


def _optimizer(recipe: TrainRecipe, model: nn.Module, au_head: nn.Module | None = None) -> torch.optim.Optimizer:
    parameters = list(model.parameters()) + ([] if au_head is None else list(au_head.parameters()))
    if recipe.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(parameters, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def mixup_draw(rng: np.random.Generator, alpha: float, size: int) -> tuple[float, torch.Tensor]:
    """One batch's mixup: the share ``m ~ Beta(alpha, alpha)`` of each sample's own image, and the
    partner (a permutation of the batch) that contributes the rest."""
    return float(rng.beta(alpha, alpha)), torch.from_numpy(rng.permutation(size))


def mixup_blend(x: torch.Tensor, share: float, partner: torch.Tensor) -> torch.Tensor:
    """``share·x + (1 - share)·x[partner]``, sample by sample."""
    return share * x + (1 - share) * x[partner]


def _loss(model: nn.Module, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
          label_smoothing: float = 0.0) -> torch.Tensor:
    """The model's own training loss when it defines one (e.g. Dual-ATME), else cross-entropy
    (with ``label_smoothing``: the recipe's)."""
    own = getattr(model, "training_loss", None)
    if own is not None:
        return own(logits, target, weight)
    return nn.functional.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing)


def _au_head(recipe: TrainRecipe, model: nn.Module, action_units: torch.Tensor | None) -> nn.Linear | None:
    """The training-only AU head a recipe with ``au_loss_weight`` asks for (None without one)."""
    if not recipe.au_loss_weight:
        return None
    if action_units is None:
        raise ValueError("the recipe trains an action-unit head (au_loss_weight) but no sample carries AU codes "
                         "(mer train --au-sheets names the CASME II / SAMM sheets for the composite)")
    classifier = getattr(model, "fc", None)
    if getattr(model, "closed_form", False) or not isinstance(classifier, nn.Linear) or not hasattr(model, "num_features"):
        raise ValueError(f"au_loss_weight needs a model with forward_head(features, pre_logits=True) and a linear "
                         f"'fc' head; {recipe.model} has none")
    return nn.Linear(model.num_features, action_units.shape[1])


def _logits_and_hidden(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The class logits and the pre-logit features they come from, in one pass (dropout drawn once)."""
    hidden = model.forward_head(model.forward_features(x), pre_logits=True)
    return model.fc(hidden), hidden


def au_loss(au_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the AUs of the coded samples (rows of ``targets`` without NaN);
    zero, still attached to the graph, for a batch without any."""
    coded = ~torch.isnan(targets[:, 0])
    if not coded.any():
        return au_logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(au_logits[coded], targets[coded])


@torch.inference_mode()
def _predict(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    outputs = [model(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)]
    logits = torch.cat(outputs) if outputs else torch.empty(0, model.num_classes)
    return torch.softmax(logits, dim=1)


def _test_scores(model: nn.Module, inputs, fold: Fold, batch_size: int, num_classes: int) -> np.ndarray:
    """The held-out samples' scores; none for a fold that holds nothing out (``mer train --final``)."""
    if not fold.test:
        return np.zeros((0, num_classes))
    return _predict(model, inputs[list(fold.test)], batch_size).numpy()


def train_fold(
    recipe: TrainRecipe,
    fold: Fold,
    inputs: torch.Tensor | JitteredInputs,
    labels: torch.Tensor,
    subjects: Sequence[str],
    class_names: Sequence[str],
    action_units: torch.Tensor | None = None,
) -> FoldResult:
    """Train a fresh model on ``fold.train`` and score ``fold.test``.

    ``inputs`` indexes like a tensor; ``JitteredInputs`` also draws each epoch's training frames.
    ``action_units`` ((N, AUs), NaN rows for uncoded samples: ``au_target_matrix``) feeds the AU
    head of a recipe with ``au_loss_weight``; only the training samples' rows are read.
    """
    seed = fold_seed(recipe.seed, fold.test_subject)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    num_classes = len(class_names)
    model = create_model(recipe.model, label_names=tuple(class_names), **recipe.model_options)
    if recipe.label_smoothing and getattr(model, "training_loss", None) is not None:
        raise ValueError(f"label_smoothing applies to cross-entropy; {recipe.model} trains with a loss of its own")
    if recipe.init_weights:
        load_matching_weights(model, recipe.init_weights)
    au_head = _au_head(recipe, model, action_units)
    optimizer = _optimizer(recipe, model, au_head)
    scheduler = _scheduler(recipe, optimizer)

    train_index = list(fold.train)
    held_back: tuple[str, ...] = ()
    if recipe.validation_fraction > 0:
        held_back = validation_subjects([subjects[i] for i in train_index], recipe.validation_fraction, seed)
        validation_index = [i for i in train_index if subjects[i] in held_back]
        train_index = [i for i in train_index if subjects[i] not in held_back]
        x_val, y_val = inputs[validation_index], labels[validation_index]
    x_train, y_train = inputs[train_index], labels[train_index]
    au_train = None if au_head is None else action_units[train_index]
    weight = _class_weights(y_train, num_classes, recipe.class_weighting)
    if getattr(model, "closed_form", False):
        model.fit_closed_form(x_train, y_train, weight, seed)
        scores = _test_scores(model, inputs, fold, recipe.batch_size, num_classes)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return FoldResult(fold.test_subject, fold.test, scores, state, 0, held_back, None)

    best_loss, best_epoch, best_state, since_best = float("inf"), None, None, 0
    if recipe.average_last_epochs and held_back:
        raise ValueError("weight averaging and early stopping are two ways of choosing the final weights; pick one")
    averaged = torch.optim.swa_utils.AveragedModel(model) if recipe.average_last_epochs else None
    epochs_run = 0
    # Onset/apex jitter (training.anchor_jitter): each epoch trains on frames drawn near the labelled
    # ones, from a generator of its own so that a run without it draws exactly as before; mixup too.
    jitter = torch.Generator().manual_seed(seed + 1) if isinstance(inputs, JitteredInputs) else None
    mixing = np.random.default_rng(seed + 2) if recipe.mixup_alpha > 0 else None
    for epoch in range(recipe.epochs):
        model.train()
        if au_head is not None:
            au_head.train()
        x_epoch = x_train if jitter is None else inputs.draw(train_index, jitter)
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            optimizer.zero_grad(set_to_none=True)
            if mixing is None:
                x_batch = x_epoch[batch]
            else:
                share, partner = mixup_draw(mixing, recipe.mixup_alpha, len(batch))
                x_batch = mixup_blend(x_epoch[batch], share, partner)
            if au_head is None:
                logits = model(x_batch)
            else:
                logits, hidden = _logits_and_hidden(model, x_batch)
            y = y_train[batch]
            if mixing is None:
                loss = _loss(model, logits, y, weight, recipe.label_smoothing)
            else:
                loss = (share * _loss(model, logits, y, weight, recipe.label_smoothing)
                        + (1 - share) * _loss(model, logits, y[partner], weight, recipe.label_smoothing))
            if au_head is not None:
                au_logits, au_batch = au_head(hidden), au_train[batch]
                au_term = (au_loss(au_logits, au_batch) if mixing is None
                           else share * au_loss(au_logits, au_batch) + (1 - share) * au_loss(au_logits, au_batch[partner]))
                loss = loss + recipe.au_loss_weight * au_term
            loss.backward()
            optimizer.step()
        if scheduler is not None and (recipe.lr_decay_epochs is None or epoch < recipe.lr_decay_epochs):
            scheduler.step()
        epochs_run = epoch + 1
        if averaged is not None and epoch >= recipe.epochs - recipe.average_last_epochs:
            averaged.update_parameters(model)
        if held_back:
            model.eval()
            with torch.inference_mode():
                val_loss = float(nn.functional.cross_entropy(model(x_val), y_val, weight=weight))
            if val_loss < best_loss:
                best_loss, best_epoch, since_best = val_loss, epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
                if since_best >= recipe.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif averaged is not None and averaged.n_averaged.item() > 0:
        _use_averaged_weights(model, averaged, x_train, recipe.batch_size)
    after_training = getattr(model, "after_training", None)
    if after_training is not None:
        after_training(x_train, y_train, weight, seed)
    scores = _test_scores(model, inputs, fold, recipe.batch_size, num_classes)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return FoldResult(fold.test_subject, fold.test, scores, state, epochs_run, held_back, best_epoch)


def _use_averaged_weights(model: nn.Module, averaged, inputs: torch.Tensor, batch_size: int) -> None:
    """Load the averaged weights into ``model`` and recompute its BatchNorm statistics on
    ``inputs`` (the averaged weights never ran, so the running statistics of any single epoch
    do not describe their activations)."""
    mean_parameters = dict(averaged.module.named_parameters())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(mean_parameters[name])
    batches = [inputs[start : start + batch_size] for start in range(0, len(inputs), batch_size)]
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches, model)


# Worker-process state, set once per worker by _init_worker so the arrays travel once.
_WORKER: dict = {}


def _init_worker(recipe, inputs, labels, subjects, class_names, action_units=None) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    _WORKER.update(recipe=recipe, inputs=inputs, labels=labels, subjects=subjects, class_names=class_names,
                   action_units=action_units)


def _run_in_worker(fold: Fold) -> FoldResult:
    w = _WORKER
    return train_fold(w["recipe"], fold, w["inputs"], w["labels"], w["subjects"], w["class_names"], w["action_units"])


def run_folds(
    recipe: TrainRecipe,
    folds: Sequence[Fold],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    subjects: Sequence[str],
    class_names: Sequence[str],
    workers: int | None = None,
    progress: bool = True,
    on_result: Callable[[FoldResult], None] | None = None,
    action_units: torch.Tensor | None = None,
) -> list[FoldResult]:
    """Train every fold, in parallel worker processes when ``workers > 1``; results in fold order.

    ``on_result`` is called in this process with each fold's result as soon as it is done
    (``mer train`` saves it there, so an interrupted run keeps its finished folds).
    """
    workers = min(len(folds), workers if workers is not None else (os.cpu_count() or 1))
    if not folds:
        return []
    results: dict[str, FoldResult] = {}
    bar = tqdm(total=len(folds), desc=f"LOSO {recipe.model}", unit="fold", disable=not progress)
    init_args = (recipe, inputs, labels, list(subjects), tuple(class_names), action_units)
    def finished(result: FoldResult) -> None:
        results[result.test_subject] = result
        if on_result is not None:
            on_result(result)
        bar.update()

    if workers <= 1:
        for fold in folds:
            finished(train_fold(recipe, fold, inputs, labels, subjects, class_names, action_units))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=init_args) as pool:
            futures = [pool.submit(_run_in_worker, fold) for fold in folds]
            for future in as_completed(futures):
                finished(future.result())
    bar.close()
    return [results[fold.test_subject] for fold in folds]
