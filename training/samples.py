"""The records every dataset reader yields.

A :class:`Sample` is one annotated micro-expression clip (recognition datasets); an
:class:`Interval` is one annotated expression inside a long video (spotting sheets).
Readers map each vendor's columns onto these, so everything downstream (LOSO splits,
metrics, ``mer data inspect``, the trainer) speaks one schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ExpressionKind = Literal["micro", "macro"]


@dataclass(frozen=True)
class Sample:
    """One micro-expression clip.

    ``onset``/``apex``/``offset`` are the dataset's own frame numbers (the numbers in its
    frame file names), or None where the dataset has none. ``labels`` maps a class-map
    name (see :mod:`training.classmaps`) to this sample's class under that map; a map
    that drops the sample's emotion has no entry. ``source`` is the original dataset of
    a sample in a composite (``casme2``, ``smic``, ``samm``); for other readers it equals
    ``dataset``.
    """

    dataset: str
    subject: str
    sample_id: str
    emotion: str
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None
    action_units: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    frames: tuple[Path, ...] = ()
    source: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", self.dataset)

    @property
    def key(self) -> str:
        """Unique name within a dataset: ``subject/sample_id``."""
        return f"{self.subject}/{self.sample_id}"


@dataclass(frozen=True)
class Interval:
    """One annotated expression in a long video (a spotting ground-truth row).

    ``offset`` is None where the sheet has no offset (CAS(ME)^2 writes 0); ``apex`` is
    None where the sheet did not annotate it (SAMM Long Videos writes -1).
    """

    dataset: str
    subject: str
    video: str
    onset: int
    apex: int | None
    offset: int | None
    kind: ExpressionKind
    action_units: tuple[str, ...] = ()
    emotion: str = ""
    expression_id: str = ""
