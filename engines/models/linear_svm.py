"""A linear SVM fitted by scikit-learn and served as a torch linear layer.

Three models of the zoo end in a linear SVM: LBP-TOP + SVM and Bi-WOOF + SVM classify their
hand-made features with one, and DSTAN fuses its two streams with one. scikit-learn fits it;
its one-vs-rest decision function ``X @ coef.T + intercept`` is then copied into torch
tensors, so the classifier lives inside the torch graph: checkpoints, ONNX export and every
runtime carry it, and the layer returns exactly ``decision_function``.

:func:`fit_linear_svm` is the fitting step (numpy in, weight and bias out) that every such
model shares; :class:`LinearSVMHead` is the layer the hand-crafted baselines end in, which
refuses to predict before it has been fitted. (DSTAN keeps its SVM in buffers beside an
averaging fallback: ``engines.models.dstan.SVMFusion``.)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.errors import MerError

__all__ = ["DescriptorSVM", "ABSENT_CLASS_SCORE", "FittedSVM", "LinearSVMHead", "NotFittedError", "fit_linear_svm"]

# Decision value given to a class with no training sample (the SVM never saw it): far below
# any real decision value, so such a class is never predicted.
ABSENT_CLASS_SCORE = -1e4


class NotFittedError(MerError, RuntimeError):
    """A model whose SVM has not been fitted was asked to predict (or to be exported)."""


@dataclass(frozen=True)
class FittedSVM:
    """A fitted SVM as a linear layer: ``features @ weight.T + bias`` (weight (K, D), bias (K,),
    float64, over all K classes, on the raw features) plus scikit-learn's estimator, for
    inspection (it saw the standardised features when ``standardize`` was asked for)."""

    weight: np.ndarray
    bias: np.ndarray
    estimator: Any


def fit_linear_svm(
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    class_weight: Sequence[float] | torch.Tensor | None = None,
    seed: int = 0,
    c: float = 1.0,
    standardize: bool = False,
) -> FittedSVM:
    """Fit a one-vs-rest linear SVM on (features (N, D), labels (N,)) and return it as a linear layer.

    scikit-learn's ``LinearSVC`` (liblinear) with the hinge loss, the classic SVM objective, and
    ``random_state=seed``: liblinear's coordinate order is its only randomness, so a refit on the
    same data gives the same SVM. ``class_weight`` (one weight per class index, e.g. the
    trainer's balanced weights ``n / (K * count)``) scales each class's ``C``. With two classes
    present liblinear fits one decision ``d`` for the second; it is split as ``-d/2, +d/2`` so
    the argmax and the difference of the two outputs are preserved. A class absent from
    ``labels`` gets weight 0 and bias :data:`ABSENT_CLASS_SCORE`.

    ``standardize``: each feature is first scaled to zero mean and unit variance over the
    training samples (scikit-learn's ``StandardScaler``; a constant feature is left unscaled),
    so that ``C`` means the same whatever the features' units; the scaling is folded into the
    returned weight and bias, which therefore apply to the raw features.
    """
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if c <= 0:
        raise ValueError(f"the SVM's C must be > 0, got {c}")
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features must be (N, D) with one label per row, got {features.shape} "
                         f"and {labels.shape} labels")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"a linear SVM needs training samples of two classes or more, got only {present.tolist()}")
    if present.min() < 0 or present.max() >= num_classes:
        raise ValueError(f"labels must be class indices 0..{num_classes - 1}, got {present.tolist()}")
    weights = None if class_weight is None else {int(k): float(class_weight[int(k)]) for k in present}
    mean, scale = np.zeros(features.shape[1]), np.ones(features.shape[1])
    if standardize:
        scaler = StandardScaler().fit(features)
        mean, scale = scaler.mean_, scaler.scale_
    svm = LinearSVC(C=c, loss="hinge", dual=True, class_weight=weights, random_state=seed, max_iter=100_000)
    svm.fit((features - mean) / scale, labels)
    coef = svm.coef_ / scale
    intercept = svm.intercept_ - coef @ mean
    if len(svm.classes_) == 2:
        coef = np.concatenate((-coef, coef)) / 2
        intercept = np.concatenate((-intercept, intercept)) / 2
    weight = np.zeros((num_classes, features.shape[1]))
    bias = np.full(num_classes, ABSENT_CLASS_SCORE)
    weight[svm.classes_], bias[svm.classes_] = coef, intercept
    return FittedSVM(weight, bias, svm)


class LinearSVMHead(nn.Module):
    """``nn.Linear`` holding a fitted SVM, plus a ``fitted`` flag that travels in the state dict.

    The weights are ordinary parameters, so the layer is a linear head to generic code (the
    registry's tests, the trainer's optimiser), but nothing trains them by gradient: :meth:`fit`
    sets them. Until then ``forward`` raises :class:`NotFittedError` instead of returning the
    scores of an all-zero classifier (and so does an export, which runs ``forward``).
    """

    def __init__(self, in_features: int, num_classes: int, c: float = 1.0, standardize: bool = False) -> None:
        super().__init__()
        if c <= 0:
            raise ValueError(f"the SVM's C must be > 0, got {c}")
        self.c, self.standardize = c, standardize
        self.linear = nn.Linear(in_features, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("fitted", torch.tensor(False))

    def is_fitted(self) -> bool:
        """The ``fitted`` flag as a Python bool (read without the tracer's warning during export)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return bool(self.fitted)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.is_fitted():
            raise NotFittedError("this model's SVM is not fitted yet: train it (mer train) or load fitted weights "
                                 "before predicting or exporting")
        return self.linear(features)

    @torch.no_grad()
    def fit(
        self,
        features: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        class_weight: torch.Tensor | None = None,
        seed: int = 0,
    ) -> FittedSVM:
        """Fit the SVM on ``features`` (N, D) and copy it into the linear layer (see :func:`fit_linear_svm`)."""
        features = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features
        labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
        fitted = fit_linear_svm(features, labels, self.linear.out_features, class_weight, seed, self.c,
                                self.standardize)
        self.linear.weight.copy_(torch.from_numpy(fitted.weight))
        self.linear.bias.copy_(torch.from_numpy(fitted.bias))
        self.fitted.fill_(True)
        return fitted


class DescriptorSVM(nn.Module):
    """A hand-crafted descriptor followed by a fitted linear SVM (Bi-WOOF, LBP-TOP).

    Subclasses set ``self.svm`` (a :class:`LinearSVMHead`), ``self.num_features`` and
    ``feature_batch``, and define ``forward_features``; the rest is the same for every such
    baseline: the trainer calls :meth:`fit_closed_form` instead of running epochs.
    """

    closed_form = True
    feature_batch = 64  # samples per no-grad pass when extracting the SVM's training features

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The SVM's decision values (N, K), or the features themselves if ``pre_logits``."""
        return features if pre_logits else self.svm(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def extract_features(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Descriptors of many samples, in batches."""
        step = batch_size or self.feature_batch
        parts = [self.forward_features(x[start : start + step]) for start in range(0, len(x), step)]
        return torch.cat(parts) if parts else torch.empty(0, self.num_features)

    def fit_closed_form(
        self, inputs: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, seed: int
    ) -> None:
        """Fit the SVM on the training samples' descriptors."""
        self.svm.fit(self.extract_features(inputs), labels, weight, seed)
