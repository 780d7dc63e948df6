"""What every runtime backend shares: the manifest, input checks, and the ``predict`` contract.

A backend subclass only implements ``_scores(batch)`` on a checked float32 NCHW array; the
base class turns numpy or torch input into that array, refuses a wrong shape naming the
expected one, and guarantees the result is an ``(N, C)`` float32 numpy array of probabilities.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np

from engines.errors import InputError
from engines.manifest import EngineManifest

__all__ = ["Backend"]


class Backend(abc.ABC):
    """A loaded engine: ``predict(batch) -> (N, C)`` softmax probabilities as float32 numpy."""

    #: The name ``load(..., backend=...)`` uses for this class.
    name: str = ""

    def __init__(self, manifest: EngineManifest) -> None:
        self.manifest = manifest

    @property
    def backend(self) -> str:
        return self.name

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    @property
    def engine_id(self) -> str:
        return self.manifest.engine_id

    def check_preprocessing(self, signature: Mapping[str, Any]) -> None:
        """Refuse a caller whose preprocessing differs from the one the engine was trained with."""
        self.manifest.check_preprocessing(signature)

    def predict(self, batch: Any) -> np.ndarray:
        """Class probabilities ``(N, C)`` for a batch ``(N, *input shape)`` (numpy or torch)."""
        array = self._as_input_array(batch)
        scores = np.asarray(self._scores(array), dtype=np.float32)
        expected = (array.shape[0], len(self.class_names))
        if scores.shape != expected:
            raise RuntimeError(f"{self.name} backend returned scores of shape {scores.shape}, expected {expected}")
        return scores

    def _as_input_array(self, batch: Any) -> np.ndarray:
        if hasattr(batch, "detach") and hasattr(batch, "cpu"):  # a torch tensor, on any device
            batch = batch.detach().cpu().numpy()
        array = np.asarray(batch)
        self._check_batch_shape(tuple(array.shape))
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise InputError(f"expected numbers, got dtype {array.dtype}", column=self.manifest.input_name)
        return np.ascontiguousarray(array, dtype=np.float32)

    def _check_batch_shape(self, shape: tuple[int, ...]) -> None:
        sample = self.manifest.sample_shape
        if len(shape) != len(sample) + 1 or tuple(shape[1:]) != sample or shape[0] == 0:
            raise InputError(
                f"engine {self.engine_id} expects a batch of shape (N>=1, {', '.join(map(str, sample))}), got {shape}",
                column=self.manifest.input_name,
            )

    @abc.abstractmethod
    def _scores(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a checked float32 batch."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.engine_id} from {self.manifest.engine_dir}>"
