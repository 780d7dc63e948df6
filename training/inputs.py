"""Turn dataset samples into the tensors a model's input contract asks for.

The composite's published motion images are fed exactly as the original STSTNet release
feeds them: ``cv2.imread`` (BGR planes), float32 0..255, NCHW, no normalisation. The
model cfg (``engines.models.ModelCfg``) states that contract; this module checks it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from engines.errors import InputError
from training.samples import Sample

__all__ = ["load_motion_images", "check_contract"]


def load_motion_images(samples: Sequence[Sample], size: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, 3, H, W) float32 0..255 in the file's BGR plane order, from each sample's first frame."""
    images = []
    for sample in samples:
        if not sample.frames:
            raise InputError(f"sample {sample.key} has no motion image", path=None)
        path = sample.frames[0]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("cannot read motion image (missing or not an image)", path=path)
        if size is not None and image.shape[:2] != size:
            raise InputError(f"motion image is {image.shape[1]}x{image.shape[0]}, expected {size[1]}x{size[0]}", path=path)
        images.append(image)
    if not images:
        return torch.empty(0, 3, *(size or (0, 0)))
    batch = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(batch))


def check_contract(cfg, inputs: torch.Tensor) -> None:
    """Refuse inputs whose shape differs from the model's declared input size."""
    expected = tuple(cfg.input_size)
    if tuple(inputs.shape[1:]) != expected:
        raise InputError(f"model {cfg.name} expects inputs of shape (N, {', '.join(map(str, expected))}), got {tuple(inputs.shape)}")
