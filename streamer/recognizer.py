"""Classify a spotted interval: face crops -> engine input -> class scores.

The engine's manifest says how its input is made. A flow-image engine (STSTNet and kin)
needs the onset and apex crops; the recognizer builds its input with
``engines.preprocess.MotionInputBuilder``. A clip engine (EDMDBN, MMNet, DSTAN, ...) carries
a :class:`~engines.clip_spec.ClipSpec`; the recognizer builds its input from the interval's
crops with ``engines.clip_input.build_clip_input``, the very function ``mer prepare`` and
``mer train`` use. Either way the engine runs through the one runtime interface
(``engines.runtime.load``), so any exported engine can be swapped in with ``--engine``.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from engines.clip_spec import ClipSpec
from engines.errors import InputError
from engines.motion import FLOW_METHODS
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


@contextmanager
def _as_manifest_error(manifest, field: str, inner: str | None = None):
    """Re-raise a failure inside the block as one ``InputError`` naming the manifest and ``field``.

    The input builders and backends name what they choke on relative to themselves (a flow
    parameter is ``nscales``); the user needs the manifest's path and field. A field name
    the failure gives that is not under ``field`` is put under ``field.inner``.
    """
    try:
        yield
    except InputError as exc:
        column = exc.column or field
        if not column.startswith(field):
            column = ".".join(part for part in (field, inner, column) if part)
        where = "" if exc.path in (None, manifest.path) else f"{exc.path}: "
        raise InputError(where + exc.reason, path=manifest.path, column=column) from None
    except (ValueError, TypeError, RuntimeError) as exc:  # a malformed value reached a kernel or a runtime
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise InputError(f"the engine cannot be run as its manifest says ({reason})", path=manifest.path,
                         column=field) from None


def _clip_spec(data, sample_shape: tuple[int, ...]) -> ClipSpec:
    """The manifest's clip spec, which must describe the model's input shape and a known flow method."""
    if not isinstance(data, dict):
        raise InputError(f"expected a clip spec object, got {data!r}", column="preprocessing.clip")
    try:
        spec = ClipSpec.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc), column="preprocessing.clip") from None
    if spec.sample_shape != sample_shape:
        raise InputError(f"the clip spec makes inputs of shape {spec.sample_shape}, the model takes {sample_shape}",
                         column="preprocessing.clip")
    if spec.flow is not None and spec.flow not in FLOW_METHODS:
        raise InputError(f"unknown flow method {spec.flow!r}; known: {', '.join(FLOW_METHODS)}",
                         column="preprocessing.clip.flow")
    return spec


@dataclass(frozen=True)
class Recognition:
    """One interval's result; the timings feed the per-stage latency metrics."""

    label: str
    scores: dict[str, float]
    motion_s: float
    inference_s: float


class Recognizer:
    """An engine plus the input builder its manifest asks for.

    Opening one is the check that the engine can serve a stream: besides the manifest and
    file checks of ``engines.runtime.load``, the manifest's preprocessing must be one this
    recognizer can follow, and one input built by it on ``crop_size`` crops (the front end's)
    must be scored by the engine into one probability per class name. An engine that fails
    is refused here, with the manifest's path and field, before a stream binds a socket or
    reads a frame, and not at its first event.
    """

    def __init__(self, engine_dir: str | Path | None = None, backend: str = "auto", threads: int = 1,
                 *, crop_size: int = 128) -> None:
        engine_dir = default_engine_dir() if engine_dir is None else Path(engine_dir)
        self.engine = load(engine_dir, backend=backend, threads=threads)
        manifest = self.engine.manifest
        with _as_manifest_error(manifest, "preprocessing"):
            clip = manifest.preprocessing.get("clip")
            self.clip_spec = None if clip is None else _clip_spec(clip, manifest.sample_shape)
            self.builder = MotionInputBuilder.from_manifest(manifest) if self.clip_spec is None else None
        self.class_names = self.engine.class_names
        self._self_test(crop_size)

    def _self_test(self, crop_size: int) -> None:
        """Build one input as the stream will and score it; refuse the engine if either step fails."""
        manifest = self.engine.manifest
        if self.builder is not None:
            with _as_manifest_error(manifest, "preprocessing", inner="flow_params"):
                crops = np.random.default_rng(0).integers(0, 256, (2, crop_size, crop_size), dtype=np.uint8)
                batch = self.builder(crops[:1], crops[1:])
            if tuple(batch.shape[1:]) != manifest.sample_shape:
                raise InputError(f"the preprocessing makes inputs of shape {tuple(batch.shape[1:])}, the model "
                                 f"takes {manifest.sample_shape}", path=manifest.path, column="preprocessing")
        else:
            batch = np.zeros((1, *manifest.sample_shape), dtype=np.float32)
        with _as_manifest_error(manifest, "class_names"):
            self.engine.predict(batch)

    @property
    def needs_color(self) -> bool:
        """Whether the engine looks at colour crops (the ring must keep them)."""
        return self.clip_spec is not None and self.clip_spec.color == "rgb"

    @property
    def needs_offset(self) -> bool:
        """Whether the input depends on the interval's offset (no classifying before it is final)."""
        return self.clip_spec is not None and (self.clip_spec.anchors == "onset_apex_offset"
                                               or self.clip_spec.magnify is not None)

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
        if self.builder is None:
            raise InputError(f"engine {self.engine_id} takes clips; call classify_clip", column="preprocessing.clip")
        start = time.perf_counter()
        batch = self.builder(onset[None], apex[None])
        return self._score(batch, start)

    def classify_clip(self, frames: np.ndarray, onset: int, apex: int, offset: int | None,
                      fps: float | None) -> Recognition:
        """Scores for one interval of a clip engine: ``frames`` are its aligned crops (colour RGB
        when the engine needs colour), ``onset``/``apex``/``offset`` indices into them."""
        from engines.clip_input import build_clip_input

        if self.clip_spec is None:
            raise InputError(f"engine {self.engine_id} takes onset/apex pairs; call classify",
                             column="preprocessing")
        start = time.perf_counter()
        sample = build_clip_input(frames, onset, apex, offset, self.clip_spec, fps=fps)
        return self._score(sample[None], start)

    def _score(self, batch: np.ndarray, start: float) -> Recognition:
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
