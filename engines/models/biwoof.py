"""Bi-WOOF + SVM: bi-weighted oriented optical flow histograms of the onset->apex flow, a linear SVM on top.

Liong, See, Wong, Phan, "Less is more: Micro-expression recognition from video using apex
frame", Signal Processing: Image Communication 62 (2018) 82-92 (arXiv:1606.01721), and the
first author's MATLAB release of the descriptor (github.com/christy1206/biwoof, ``biwoof.m``:
5 x 5 blocks, 8 bins). The face's onset->apex flow is cut into N x N blocks; in each block
every pixel votes for the bin of its flow orientation with its flow magnitude (the *local*
weight), the block's histogram is normalised and multiplied by the block's optical strain (the
*global* weight). The N*N*C values, L2-normalised, are classified by a linear SVM.

Here the flow comes from the MEGC2019 composite's 28x28 image (the STSTNet contract: BGR planes
(strain, v, u), each min-max normalised to 0..255 per image), which keeps the flow only up to an
unknown offset and scale per plane: :func:`decode_composite` says what is recovered and how.
Everything is torch, so the model exports to ONNX with its SVM (:class:`LinearSVMHead`).
``closed_form = True``: the trainer calls :meth:`BiWOOF.fit_closed_form` instead of running
epochs. See ``docs/models/biwoof.md``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from engines.models.blocks import block_assignment
from engines.models.linear_svm import DescriptorSVM, LinearSVMHead
from engines.models.registry import ModelCfg, class_builder, register_model
from engines.models.ststnet import MEGC2019_LABELS, STSTNET_CFG

__all__ = ["BIWOOF_CFG", "BiWOOF", "BiWOOFFeatures", "biwoof", "decode_composite"]

BIWOOF_CFG = dataclasses.replace(
    STSTNET_CFG,
    name="biwoof",
    source_url="https://arxiv.org/abs/1606.01721",
    paper=("S.-T. Liong, J. See, K. Wong, R.C.-W. Phan, Less is more: Micro-expression recognition from video "
           "using apex frame, Signal Processing: Image Communication 62 (2018) 82-92"),
    license_note=("reimplemented from the paper and the descriptor of the authors' MATLAB release "
                  "(github.com/christy1206/biwoof, no licence file; no code copied); cite the paper"),
    notes=("flow recovered from the min-max normalised composite up to scale: each flow plane centred at its "
           "per-image median (the zero-flow estimate), u and v each in units of their own span"),
)

_STRAIN_PLANE = STSTNET_CFG.channels.index("optical_strain")
_V_PLANE = STSTNET_CFG.channels.index("v")
_U_PLANE = STSTNET_CFG.channels.index("u")
TINY = 1e-12  # denominator floor: a block without motion, or a sample without any, gives zeros, not NaN


def decode_composite(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) BGR composite 0..255 -> centred u, v and strain, each (N, H, W).

    The composite stores each plane as ``255 * (p - min) / (max - min)`` of its own image, so a
    flow plane is known only up to ``p = min + span * value / 255`` with ``min`` and ``span``
    lost. What survives: the order of the values and the ratios of their differences (an
    affine map). What is lost: the zero-flow level of u and of v, the absolute magnitude, and
    the ratio of u's span to v's (so orientations are known up to an unknown stretch of one
    axis, which keeps every flow in its quadrant and every axis direction on its axis).

    Choices: u and v are centred at their per-image median, the zero-flow estimate (most of a
    face does not move in a micro-expression; on the 442 composite images the per-image medians
    of v range from 35 to 224 between their 5th and 95th percentiles, so a fixed 127.5 would be
    wrong for many images), and divided by 255, i.e. each measured in units of its own span
    (the same scale for both is assumed). Strain is a magnitude whose minimum over a face is
    near 0, so ``strain / 255`` is the strain relative to the image's largest.
    """
    u = x[:, _U_PLANE]
    v = x[:, _V_PLANE]
    u = (u - _median(u)) / 255.0
    v = (v - _median(v)) / 255.0
    return u, v, x[:, _STRAIN_PLANE] / 255.0


def _median(plane: torch.Tensor) -> torch.Tensor:
    """Per-image lower median of (N, H, W) as (N, 1, 1) (torch.median's definition, through a sort
    so that it exports to ONNX as TopK)."""
    flat = plane.flatten(1)
    ordered = flat.sort(dim=1).values
    middle = (flat.shape[1] - 1) // 2
    return ordered[:, middle : middle + 1].unsqueeze(-1)


class BiWOOFFeatures(nn.Module):
    """Bi-WOOF histograms of a flow field: (u, v, strain) (N, H, W) each -> (N, blocks * blocks * bins).

    As the authors' release computes them (``biwoof.m`` in github.com/christy1206/biwoof):

    1. every pixel votes for the bin of its flow orientation with its flow magnitude;
    2. each block's histogram is divided by its sum (the block's total magnitude), so it sums to
       1 (0 for a block without motion, where the release divides 0 by 0);
    3. it is multiplied by the block's sum of optical strain (the global weight);
    4. the concatenated vector is divided by its L2 norm.

    Orientation bins: bin ``k`` holds the orientations ``atan2(v, u)`` in
    ``[-pi + 2 pi k / bins, -pi + 2 pi (k + 1) / bins)``, the release's edges (-180, -135, ...,
    135 degrees for 8 bins: the axes and the diagonals are edges). A pixel's bin is the bin
    centre its flow projects on most (the nearest centre in angle), which needs no ``atan2``;
    a flow exactly on an edge (u or v exactly 0 is common once an integer plane is centred)
    goes to one of the two bins, the same one in torch and ONNX Runtime. Values are ordered
    block by block (row-major), bins within a block: ``feature[(row * blocks + col) * bins + k]``.
    """

    def __init__(self, size: int, blocks: int, bins: int) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.blocks, self.bins = blocks, bins
        # Centres (2k + 1 - bins) pi / bins, symmetric about 0: a flow along +u or -u ties exactly
        # between its two bins (argmax takes the first), whatever the rounding of the cosines.
        centres = (2 * torch.arange(bins, dtype=torch.float64) + 1 - bins) * math.pi / bins
        self.register_buffer("bin_cos", centres.cos().float().view(1, bins, 1, 1), persistent=False)
        self.register_buffer("bin_sin", centres.sin().float().view(1, bins, 1, 1), persistent=False)
        self.register_buffer("assignment", block_assignment(size, blocks), persistent=False)

    @property
    def num_features(self) -> int:
        return self.blocks * self.blocks * self.bins

    def _block_sums(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, B, B): sums over each block."""
        return self.assignment.t() @ maps @ self.assignment

    def orientation_bins(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(N, H, W) flow -> (N, H, W) int64 orientation bin of every pixel."""
        projection = u.unsqueeze(1) * self.bin_cos + v.unsqueeze(1) * self.bin_sin  # (N, bins, H, W)
        return projection.argmax(dim=1)

    def forward(self, u: torch.Tensor, v: torch.Tensor, strain: torch.Tensor) -> torch.Tensor:
        magnitude = torch.sqrt(u * u + v * v).unsqueeze(1)
        bins = torch.arange(self.bins, device=u.device).view(1, -1, 1, 1)
        votes = (self.orientation_bins(u, v).unsqueeze(1) == bins).to(u.dtype) * magnitude
        histograms = self._block_sums(votes)  # local weight: magnitude, (N, bins, B, B)
        histograms = histograms / histograms.sum(dim=1, keepdim=True).clamp_min(TINY)
        weighted = histograms * self._block_sums(strain.unsqueeze(1))  # global weight: the block's strain
        vector = weighted.permute(0, 2, 3, 1).flatten(1)
        return vector / vector.norm(dim=1, keepdim=True).clamp_min(TINY)


class BiWOOF(DescriptorSVM):
    """Bi-WOOF features of the composite's flow, classified by a linear SVM (fitted, not trained).

    5x5 blocks, 8 orientation bins: 200 values.
    """

    feature_batch = 256  # samples per no-grad pass when extracting the SVM's training features

    def __init__(
        self, label_names: tuple[str, ...] = MEGC2019_LABELS, blocks: int = 5, bins: int = 8, svm_c: float = 1.0
    ) -> None:
        super().__init__()
        label_names = tuple(label_names)
        self.cfg: ModelCfg = (
            BIWOOF_CFG if label_names == BIWOOF_CFG.label_names
            else dataclasses.replace(BIWOOF_CFG, label_names=label_names, train_datasets=(), protocol="")
        )
        self.num_classes = len(label_names)
        self.features = BiWOOFFeatures(self.cfg.input_size[-1], blocks, bins)
        self.num_features = self.features.num_features
        self.svm = LinearSVMHead(self.num_features, self.num_classes, svm_c, standardize=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 28, 28) BGR composite -> (N, blocks * blocks * bins) Bi-WOOF vector."""
        return self.features(*decode_composite(x))



biwoof = register_model(class_builder(BiWOOF, "biwoof"))
