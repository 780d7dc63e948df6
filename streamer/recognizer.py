"""Classify a spotted interval: onset and apex face crops -> engine input -> class scores.

The engine's manifest says how its input is made (flow method, crop size, planes); the
recognizer builds exactly that input with ``engines.preprocess.MotionInputBuilder`` and runs
the engine through the one runtime interface (``engines.runtime.load``), so any exported
engine can be swapped in with ``--engine``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from engines.errors import InputError
from engines.preprocess import MotionInputBuilder
from engines.runtime import load

log = logging.getLogger(__name__)

__all__ = ["Recognition", "Recognizer", "default_engine_dir"]


def default_engine_dir() -> Path:
    """The engine shipped inside the package (trained on synthetic data only, see its manifest)."""
    path = Path(str(resources.files("engines") / "default_engine"))
    if not (path / "manifest.json").is_file():
        raise InputError("the default engine is missing from this installation; pass --engine DIR", path=path)
    return path


@dataclass(frozen=True)
class Recognition:
    """One interval's result; the timings feed the per-stage latency metrics."""

    label: str
    scores: dict[str, float]
    motion_s: float
    inference_s: float


class Recognizer:
    """An engine plus the input builder its manifest asks for."""

    def __init__(self, engine_dir: str | Path | None = None, backend: str = "auto", threads: int = 1) -> None:
        engine_dir = default_engine_dir() if engine_dir is None else Path(engine_dir)
        self.engine = load(engine_dir, backend=backend, threads=threads)
        self.builder = MotionInputBuilder.from_manifest(self.engine.manifest)
        self.class_names = self.engine.class_names

    @property
    def engine_id(self) -> str:
        """``name@version``, as events carry it."""
        return self.engine.engine_id

    @property
    def backend(self) -> str:
        return self.engine.backend

    @property
    def device(self) -> str:
        """Where the engine runs: "cpu", or the CUDA device of a GPU backend."""
        return str(getattr(self.engine, "device", "cpu"))

    def classify(self, onset: np.ndarray, apex: np.ndarray) -> Recognition:
        """Scores for one onset/apex pair of aligned grey crops (uint8, same shape)."""
        start = time.perf_counter()
        batch = self.builder(onset[None], apex[None])
        motion_done = time.perf_counter()
        scores = self.engine.predict(batch)[0]
        done = time.perf_counter()
        best = int(np.argmax(scores))
        return Recognition(
            label=self.class_names[best],
            scores={name: round(float(value), 6) for name, value in zip(self.class_names, scores, strict=True)},
            motion_s=motion_done - start,
            inference_s=done - motion_done,
        )
