"""Recognition metrics as MEGC computes them.

MEGC scores a LOSO run once, on the predictions of all folds pooled together, not as
an average of per-fold scores (a fold with one subject and two classes would otherwise
dominate). UF1 is the unweighted (macro) mean of per-class F1 and UAR the unweighted
mean of per-class recall. A class that never occurs in ``y_true`` gets recall 0/0: it
is left out of UAR, as MEGC's reference code does, and left out of UF1 unless it was
predicted (then its F1 is 0, since every such prediction is a false positive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ClassificationReport", "confusion_matrix", "pooled_metrics", "metrics_by_group"]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``C[t, p]`` counts samples of true class ``t`` predicted as ``p``."""
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {true.shape} and {pred.shape}")
    for name, values in (("y_true", true), ("y_pred", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds a label outside 0..{num_classes - 1}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


@dataclass(frozen=True)
class ClassificationReport:
    """Pooled scores of one set of predictions."""

    class_names: tuple[str, ...]
    confusion: np.ndarray
    uf1: float
    uar: float
    acc: float
    recall: dict[str, float | None]
    f1: dict[str, float | None]
    support: dict[str, int]

    @property
    def samples(self) -> int:
        return int(self.confusion.sum())

    def summary(self) -> dict[str, float]:
        """The three headline numbers, as ``metrics.json`` stores them."""
        return {"uf1": self.uf1, "uar": self.uar, "acc": self.acc}

    def to_dict(self) -> dict:
        return {
            **self.summary(),
            "samples": self.samples,
            "classes": list(self.class_names),
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "confusion": self.confusion.tolist(),
        }


def pooled_metrics(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> ClassificationReport:
    """UF1, UAR, accuracy, per-class recall/F1 and the confusion matrix of pooled predictions."""
    names = tuple(class_names)
    matrix = confusion_matrix(y_true, y_pred, len(names))
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    recall: dict[str, float | None] = {}
    f1: dict[str, float | None] = {}
    for index, name in enumerate(names):
        recall[name] = float(tp[index] / support[index]) if support[index] else None
        denominator = support[index] + predicted[index]
        f1[name] = float(2.0 * tp[index] / denominator) if denominator else None
    present_recall = [value for value in recall.values() if value is not None]
    present_f1 = [value for value in f1.values() if value is not None]
    total = int(matrix.sum())
    return ClassificationReport(
        class_names=names,
        confusion=matrix,
        uf1=float(np.mean(present_f1)) if present_f1 else 0.0,
        uar=float(np.mean(present_recall)) if present_recall else 0.0,
        acc=float(tp.sum() / total) if total else 0.0,
        recall=recall,
        f1=f1,
        support={name: int(count) for name, count in zip(names, support)},
    )


def metrics_by_group(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    groups: Sequence[str],
    class_names: Sequence[str],
) -> dict[str, ClassificationReport]:
    """Pooled metrics for the whole set (key ``"all"``) and for each group (e.g. source dataset)."""
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    group_array = np.asarray(groups)
    if not (len(true) == len(pred) == len(group_array)):
        raise ValueError("y_true, y_pred and groups must have equal lengths")
    reports: dict[str, ClassificationReport] = {"all": pooled_metrics(true, pred, class_names)}
    for group in sorted(set(group_array.tolist())):
        mask = group_array == group
        reports[group] = pooled_metrics(true[mask], pred[mask], class_names)
    return reports


def summaries(reports: Mapping[str, ClassificationReport]) -> dict[str, dict[str, float]]:
    """``{"all": {"uf1", "uar", "acc"}, "casme2": {...}, ...}``, the ``metrics.json`` layout."""
    return {group: report.summary() for group, report in reports.items()}
