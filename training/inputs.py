"""Turn dataset samples into the tensors a model's input contract asks for.

Two kinds of models, told apart by ``ModelCfg.clip``:

* flow-image models (``clip is None``) get the composite's published motion images exactly as
  the original STSTNet release feeds them: ``cv2.imread`` (BGR planes), float32 0..255, NCHW,
  no normalisation; from a ``mer prepare`` cache of face crops they get the same kind of image
  computed from each clip's onset and apex crops the way the live stream does
  (:func:`prepared_flow_signature`, recorded with the run so ``mer export`` writes it);
* clip models get what their :class:`~engines.clip_spec.ClipSpec` asks for, built by
  ``engines.clip_input.build_clip_input`` (the function the live stream uses too): from a
  ``mer prepare`` cache of aligned face crops, or, for an apex-only spec, from a dataset of
  apex face crops (``megc2019-apex``).

The model cfg (``engines.models.ModelCfg``) states the contract; this module checks it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from engines.errors import InputError
from training.samples import Sample

__all__ = ["load_motion_images", "load_face_images", "load_model_inputs", "check_contract"]

# Datasets whose samples are single face crops (frames[0]), usable by apex-only clip models.
FACE_IMAGE_DATASETS = frozenset({"megc2019-apex"})


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


def load_face_images(samples: Sequence[Sample], spec) -> torch.Tensor:
    """(N, *spec.sample_shape) from each sample's already-cropped face image (``frames[0]``).

    The image is the clip's only frame, so it is its onset, apex and offset at once; the
    spec must be apex-only, and cannot ask for magnification (which needs the whole clip).
    """
    from engines.clip_input import build_clip_input

    if spec.anchors != "apex":
        raise InputError(f"a dataset of single face crops cannot feed a {spec.anchors} clip model")
    if spec.magnify:
        raise InputError("magnification needs the whole clip; a dataset of single face crops has one frame "
                         "(build the model without it, e.g. magnify=false)")
    images = []
    for sample in samples:
        if not sample.frames:
            raise InputError(f"sample {sample.key} has no face image")
        path = sample.frames[0]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("cannot read face image (missing or not an image)", path=path)
        images.append(build_clip_input([cv2.cvtColor(image, cv2.COLOR_BGR2RGB)], 0, 0, 0, spec))
    if not images:
        return torch.empty(0, *spec.sample_shape)
    return torch.from_numpy(np.stack(images).astype(np.float32))


def load_model_inputs(cfg, dataset: str, samples: Sequence[Sample], root=None, *, anchor_jitter: str = "none"):
    """The inputs ``cfg``'s model takes, for ``samples`` of ``dataset`` (see the module doc): a tensor, or
    with ``anchor_jitter`` (a rule of ``training.anchor_jitter``) a ``JitteredInputs`` that indexes like one."""
    if cfg.clip is None:
        if dataset in FACE_IMAGE_DATASETS:
            raise InputError(f"model {cfg.name} takes onset->apex flow images; {dataset} holds single face crops")
        if dataset == "prepared":
            from training.datasets.prepared import load_flow_images

            inputs = load_flow_images(samples, prepared_flow_signature(cfg), root)
        else:
            inputs = load_motion_images(samples)
    elif dataset in FACE_IMAGE_DATASETS:
        inputs = load_face_images(samples, cfg.clip)
    elif dataset == "prepared":
        from training.datasets.prepared import load_clip_inputs

        inputs = load_clip_inputs(samples, cfg.clip, root)
    else:
        raise InputError(f"model {cfg.name} takes face clips ({cfg.clip.frames} frame(s)); make them with "
                         f"`mer prepare --dataset {dataset} --root ... --out CACHE`, then train with "
                         "--dataset prepared --root CACHE")
    check_contract(cfg, inputs)
    if anchor_jitter != "none":
        from training.anchor_jitter import jittered_inputs

        return jittered_inputs(inputs, samples, cfg.clip, anchor_jitter)
    return inputs


def prepared_flow_signature(cfg) -> dict:
    """How a flow-image model's input is made from face crops (a ``mer prepare`` cache): the live
    path's flow (``engines.preprocess.LIVE_FLOW``), so the trained model serves as an engine as is."""
    from engines.manifest import preprocessing_signature
    from engines.preprocess import LIVE_FLOW

    return preprocessing_signature(cfg, **LIVE_FLOW)


def check_contract(cfg, inputs: torch.Tensor) -> None:
    """Refuse inputs whose shape differs from the model's declared input size."""
    expected = tuple(cfg.input_size)
    if tuple(inputs.shape[1:]) != expected:
        raise InputError(f"model {cfg.name} expects inputs of shape (N, {', '.join(map(str, expected))}), got {tuple(inputs.shape)}")
