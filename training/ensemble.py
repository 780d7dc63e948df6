"""Score averaging across finished LOSO runs: an ensemble that needs no held-out choice.

Each run's ``predictions.csv`` holds, for every sample, the softmax scores of the model that
never saw that sample's subject. Averaging those scores over runs (seeds, or different
models) is itself a leave-one-subject-out prediction: no fold, epoch or weight is chosen by
looking at a held-out subject, as long as the list of runs is fixed before looking at the
result. The runs must cover the same samples with the same labels and classes.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engines.errors import InputError
from training.reports import Predictions
from training.samples import Sample

__all__ = ["read_predictions", "average_runs"]

_FIXED = ("sample", "subject", "dataset", "label", "prediction")


def read_predictions(path: Path) -> tuple[list[tuple[str, str, str, str]], tuple[str, ...], np.ndarray]:
    """(rows of sample, subject, dataset, label), class names, scores) of one ``predictions.csv``."""
    if not path.is_file():
        raise InputError("no predictions.csv here (is this a finished mer train run?)", path=path)
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header[:5]) != _FIXED or len(header) < 7:
            raise InputError(f"expected columns {', '.join(_FIXED)}, score_<class>...", path=path, row=1)
        classes = tuple(name.removeprefix("score_") for name in header[5:])
        rows, scores = [], []
        for number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise InputError(f"expected {len(header)} cells, got {len(row)}", path=path, row=number)
            rows.append((row[0], row[1], row[2], row[3]))
            try:
                scores.append([float(value) for value in row[5:]])
            except ValueError:
                raise InputError("scores must be numbers", path=path, row=number) from None
    return rows, classes, np.asarray(scores, dtype=np.float64)


def average_runs(run_dirs: Sequence[Path]) -> Predictions:
    """The mean scores of several runs over the same samples, as pooled predictions."""
    if len(run_dirs) < 2:
        raise InputError("an ensemble needs at least two runs")
    first_rows, classes, total = read_predictions(Path(run_dirs[0]) / "predictions.csv")
    for run in run_dirs[1:]:
        path = Path(run) / "predictions.csv"
        rows, other_classes, scores = read_predictions(path)
        if other_classes != classes:
            raise InputError(f"classes {other_classes} differ from the first run's {classes}", path=path, row=1)
        if rows != first_rows:
            mismatch = next((i for i, (a, b) in enumerate(zip(rows, first_rows)) if a != b), min(len(rows), len(first_rows)))
            raise InputError("samples or labels differ from the first run's (same dataset, protocol and order needed)",
                             path=path, row=mismatch + 2)
        total = total + scores
    for label in {row[3] for row in first_rows} - set(classes):
        raise InputError(f"label {label!r} is not one of the classes {classes}", path=Path(run_dirs[0]) / "predictions.csv")
    samples = [Sample(dataset=dataset, subject=subject, sample_id=sample, emotion=label, source=dataset)
               for sample, subject, dataset, label in first_rows]
    labels = np.array([classes.index(row[3]) for row in first_rows])
    return Predictions(samples, labels, total / len(run_dirs), classes)
