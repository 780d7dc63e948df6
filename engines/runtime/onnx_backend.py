"""ONNX Runtime backend: runs ``model.onnx`` (CPU by default).

The session is created from the verified file; a file ONNX Runtime cannot parse is refused
naming it. The ONNX ``metadata_props`` written by export are compared with the manifest, so a
``model.onnx`` from another engine cannot be paired with this manifest's class names.
A requested execution provider that this onnxruntime build lacks is an error, never a quiet
fall back to the CPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np

from engines.errors import InputError, MerError
from engines.manifest import EngineManifest
from engines.runtime.base import Backend

__all__ = ["OnnxRuntimeBackend"]

log = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        manifest: EngineManifest,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
    ) -> None:
        super().__init__(manifest)
        import onnxruntime as ort

        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise MerError(
                f"onnxruntime provider {missing[0]} is not available here "
                f"(available: {', '.join(ort.get_available_providers())})"
            )
        path = manifest.file_path(ONNX_NAME)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        except Exception as exc:  # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"not a loadable ONNX model (corrupt or truncated?): {reason}", path=path) from None
        self._check_shapes(path)
        self._check_metadata(path)
        self._input_name = self.session.get_inputs()[0].name
        log.debug("onnxruntime session for %s: providers %s", path, self.session.get_providers())

    def _check_shapes(self, path) -> None:
        """The graph's own input and output shapes must be the manifest's (the class count above all)."""
        graph_input, graph_output = self.session.get_inputs()[0], self.session.get_outputs()[0]
        classes = graph_output.shape[-1] if graph_output.shape else None
        if isinstance(classes, int) and classes != len(self.class_names):
            raise InputError(f"the model outputs {classes} class scores per sample, but the manifest's class_names "
                             f"lists {len(self.class_names)}", path=path, column="class_names")
        sample = tuple(graph_input.shape[1:])
        if all(isinstance(d, int) for d in sample) and sample != self.manifest.sample_shape:
            raise InputError(f"the model takes samples of shape {sample}, but the manifest's input.shape says "
                             f"{self.manifest.sample_shape}", path=path, column="input.shape")

    def _check_metadata(self, path) -> None:
        """model.onnx must carry this manifest's engine id and class names (written by export)."""
        props = self.session.get_modelmeta().custom_metadata_map
        expected = {"mer.engine": self.engine_id, "mer.class_names": list(self.class_names)}
        found = {"mer.engine": props.get("mer.engine"), "mer.class_names": _json_or_none(props.get("mer.class_names"))}
        for key, value in expected.items():
            if found[key] != value:
                raise InputError(f"metadata {key} is {found[key]!r}, the manifest says {value!r} "
                                 "(model.onnx belongs to another engine)", path=path, column=key)

    def _scores(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: batch})[0]


def _json_or_none(text: str | None):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
