"""Torch backend: rebuilds the model from the registry by the manifest's name and loads ``weights.pth``.

It is the reference the other backends are checked against, and the fallback where neither
TensorRT nor ONNX Runtime is present. The rebuilt model's cfg must agree with the manifest
(class names and input shape), so an engine exported from an older model definition is
refused rather than run with mismatched layers.
"""

from __future__ import annotations

import numpy as np
import torch

from engines.checkpoints import load_weights
from engines.errors import InputError
from engines.manifest import EngineManifest
from engines.models import create_model
from engines.runtime.base import Backend

__all__ = ["TorchBackend"]

WEIGHTS_NAME = "weights.pth"


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, manifest: EngineManifest, *, device: str | torch.device = "cpu", threads: int | None = None) -> None:
        super().__init__(manifest)
        if threads is not None:
            torch.set_num_threads(threads)
        args = manifest.data["model"].get("args", {})
        model = create_model(manifest.model_name, **args)
        cfg = model.cfg
        if tuple(cfg.label_names) != self.class_names:
            raise InputError(f"model {cfg.name} rebuilt with {len(cfg.label_names)} classes {tuple(cfg.label_names)}, "
                             f"but class_names lists {len(self.class_names)}: {self.class_names}",
                             path=manifest.path, column="class_names")
        if tuple(cfg.input_size) != manifest.sample_shape:
            raise InputError(f"model {cfg.name} takes {cfg.input_size}, manifest says {manifest.sample_shape}",
                             path=manifest.path, column="input.shape")
        load_weights(model, manifest.file_path(WEIGHTS_NAME))
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def predict(self, batch) -> np.ndarray:
        if isinstance(batch, torch.Tensor):  # keep torch input on its way to the model's device without numpy
            self._check_batch_shape(tuple(batch.shape))
            return self._run(batch.to(self.device, torch.float32))
        return super().predict(batch)

    def _scores(self, batch: np.ndarray) -> np.ndarray:
        return self._run(torch.from_numpy(batch).to(self.device))

    def _run(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(self.model(batch), dim=1).float().cpu().numpy()
