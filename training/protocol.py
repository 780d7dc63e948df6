"""Leave-one-subject-out (LOSO) splits, the evaluation protocol of every ME paper.

Each fold holds out every sample of one subject. Folds are ordered by subject id and
index lists are sorted, so the same samples always give the same folds. Anything used
to pick epochs, checkpoints or thresholds must come from the training subjects of a
fold only; :func:`validation_subjects` draws such an inner split.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from training.samples import Sample

__all__ = ["Fold", "leave_one_subject_out", "natural_key", "validation_subjects"]


def natural_key(text: str) -> tuple:
    """Sort key that orders ``sub2`` before ``sub10`` (digits compare as numbers)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


@dataclass(frozen=True)
class Fold:
    """One LOSO fold: indices into the sample list it was made from."""

    test_subject: str
    train: tuple[int, ...]
    test: tuple[int, ...]


def leave_one_subject_out(samples: Sequence[Sample], subjects: Sequence[str] | None = None) -> list[Fold]:
    """One fold per subject (or per subject in ``subjects``), in natural subject order."""
    by_subject: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        by_subject.setdefault(sample.subject, []).append(index)
    wanted = sorted(by_subject, key=natural_key) if subjects is None else list(subjects)
    unknown = [subject for subject in wanted if subject not in by_subject]
    if unknown:
        raise ValueError(f"no samples for subject(s) {', '.join(unknown)}; known: {', '.join(sorted(by_subject, key=natural_key))}")
    folds = []
    for subject in wanted:
        test = tuple(by_subject[subject])
        held_out = set(test)
        train = tuple(index for index in range(len(samples)) if index not in held_out)
        folds.append(Fold(subject, train, test))
    return folds


def validation_subjects(train_subjects: Sequence[str], fraction: float, seed: int) -> tuple[str, ...]:
    """A deterministic random subset of a fold's *training* subjects for inner validation.

    Takes at least one subject and always leaves at least one for training.
    """
    unique = sorted(set(train_subjects), key=natural_key)
    if len(unique) < 2:
        raise ValueError("inner validation needs at least two training subjects")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    count = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    chosen = random.Random(seed).sample(unique, count)
    return tuple(sorted(chosen, key=natural_key))
