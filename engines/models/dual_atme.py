"""Dual-ATME: a full-face branch with learned attention and a hand-picked "puzzle" branch.

Zhou, Huang, Li, Wang, "Dual-ATME: Dual-Branch Attention Network for Micro-Expression
Recognition", Entropy 25(3):460, 2023 (github.com/HaoliangZhou/Dual-ATME).

Two independent bi-Inception CNNs read the same sample: the AARS branch the whole-face motion
image, ending in CBAM attention, and the HARS branch a 28x28 "puzzle" tiled from the eyebrow
and mouth regions (no attention). Both end at 48x7x7; they are concatenated to 96x7x7 and
classified by FC -> ReLU -> Dropout -> FC. Training adds 0.01 * (1 - cosine similarity) of the
two branch embeddings to a focal loss (:meth:`DualATME.training_loss`).

The puzzle is built inside the model from FIXED normalised boxes of the aligned 28x28 face
motion image (the composite's images carry no landmarks), so the model takes exactly the
input STSTNet takes. See ``docs/models/dual-atme.md`` for every choice the paper leaves open.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from engines.models.blocks import CBAM, InceptionBlock, random_mirror
from engines.models.registry import class_builder, register_model
from engines.models.ststnet import MEGC2019_LABELS, STSTNET_CFG

__all__ = [
    "DUAL_ATME_CFG",
    "PUZZLE_BOXES",
    "PUZZLE_BOXES_NOTE",
    "Box",
    "DualATME",
    "FacePuzzle",
    "InceptionBranch",
    "dual_atme",
    "focal_loss",
]


@dataclass(frozen=True)
class Box:
    """A region of the image as fractions of its height (top, bottom) and width (left, right)."""

    top: float
    bottom: float
    left: float
    right: float

    def pixels(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) pixel bounds, bottom/right exclusive."""
        rows = (round(self.top * height), round(self.bottom * height))
        cols = (round(self.left * width), round(self.right * width))
        return (*rows, *cols)


# Where the composite's aligned 28x28 faces move (chosen from per-class mean |flow| maps, see the
# model card): brows in rows 0-6 above the eyes, mouth corners and lips in rows 15-24. Image-left
# is the subject's right brow (dlib landmarks 17-21). Each entry: source box -> puzzle tile.
PUZZLE_BOXES: dict[str, tuple[Box, Box]] = {
    "image_left_eyebrow": (Box(0 / 28, 7 / 28, 0 / 28, 14 / 28), Box(0.0, 0.5, 0.0, 0.5)),
    "image_right_eyebrow": (Box(0 / 28, 7 / 28, 14 / 28, 28 / 28), Box(0.0, 0.5, 0.5, 1.0)),
    "mouth": (Box(15 / 28, 25 / 28, 4 / 28, 24 / 28), Box(0.5, 1.0, 0.0, 1.0)),
}

# The boxes in pixels of the composite's 28x28 face, for the model cards' ``notes`` (every model
# with a puzzle branch states them).
PUZZLE_BOXES_NOTE = "puzzle boxes as (top, bottom, left, right) pixels of the 28x28 face, bottom/right exclusive: " + (
    "; ".join(f"{name} {src.pixels(28, 28)}" for name, (src, _) in PUZZLE_BOXES.items()))

# Plane index of the horizontal flow u in the BGR composite (strain, v, u).
_U_PLANE = STSTNET_CFG.channels.index("u")

DUAL_ATME_CFG = dataclasses.replace(
    STSTNET_CFG,
    name="dual_atme",
    motion=(
        "the MEGC2019 'norm_u_v_os' composite image read with cv2.imread (planes strain, v, u, each "
        "min-max normalised to 0..255) fed as float 0..255; the model itself rescales to -1..1 "
        "(x / 127.5 - 1, the public code's Normalize(0.5, 0.5)) and builds the eyebrow/mouth puzzle "
        "from fixed boxes of this image (on raw frames the puzzle will come from landmarks)"
    ),
    source_url="https://github.com/HaoliangZhou/Dual-ATME",
    paper="H. Zhou, S. Huang, J. Li, S.-J. Wang, Dual-ATME: Dual-Branch Attention Network for "
    "Micro-Expression Recognition, Entropy 25(3):460, 2023",
    license_note="reimplementation from the paper; the public code has no licence file; research use, cite the paper",
    train_datasets=("casme2", "smic-hs", "samm"),
    protocol="MEGC2019 composite, leave-one-subject-out over 68 subjects",
    notes="fixed " + PUZZLE_BOXES_NOTE,
)


class FacePuzzle(nn.Module):
    """Crop fixed boxes of the face image, resize each (bilinear) and tile them into one image.

    Stands in for the paper's landmark-driven HARS crop on the composite's aligned faces. The
    pixel bounds are fixed at construction for ``in_size``, so tracing and ONNX export see
    constants, not shape arithmetic.
    """

    def __init__(
        self,
        boxes: dict[str, tuple[Box, Box]] = PUZZLE_BOXES,
        in_size: tuple[int, int] = (28, 28),
        out_size: tuple[int, int] = (28, 28),
    ) -> None:
        super().__init__()
        self.in_size = tuple(in_size)
        self.out_size = tuple(out_size)
        self.rects = [(source.pixels(*self.in_size), tile.pixels(*self.out_size)) for source, tile in boxes.values()]

    def source_mask(self) -> torch.Tensor:
        """(*in_size) booleans: True on the face pixels that some box crops (all the puzzle sees)."""
        mask = torch.zeros(self.in_size, dtype=torch.bool)
        for (top, bottom, left, right), _ in self.rects:
            mask[top:bottom, left:right] = True
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *in_size) face -> (N, C, *out_size) puzzle."""
        if not torch.jit.is_tracing() and tuple(x.shape[-2:]) != self.in_size:
            raise ValueError(f"puzzle boxes are fixed for {self.in_size} images, got {tuple(x.shape[-2:])}")
        puzzle = x.new_zeros((*x.shape[:-2], *self.out_size))
        for (top, bottom, left, right), (t_top, t_bottom, t_left, t_right) in self.rects:
            crop = x[..., top:bottom, left:right]
            tile_size = (t_bottom - t_top, t_right - t_left)
            resized = F.interpolate(crop, size=tile_size, mode="bilinear", align_corners=False)
            puzzle[..., t_top:t_bottom, t_left:t_right] = resized
        return puzzle


class InceptionBranch(nn.Sequential):
    """The paper's bi-Inception branch: two Inception blocks (6 then 12 filters per path), each
    followed by a 2x2 max-pool: 3x28x28 -> 24x14x14 -> 48x7x7."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, int] = (6, 12), reduce_channels: int = 6) -> None:
        first = InceptionBlock(in_channels, widths[0], reduce_channels)
        second = InceptionBlock(first.out_channels, widths[1], reduce_channels)
        super().__init__(first, nn.MaxPool2d(2), second, nn.MaxPool2d(2))
        self.out_channels = second.out_channels


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): mean of w_y (1 - p_y)^gamma (-log p_y).

    With class weights the mean is weighted like ``F.cross_entropy`` (divided by the summed
    weights), so gamma = 0 is exactly (weighted) cross-entropy.
    """
    log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    loss = -((1.0 - log_p.exp()) ** gamma) * log_p
    if weight is None:
        return loss.mean()
    w = weight[target]
    return (w * loss).sum() / w.sum()


class DualATME(nn.Module):
    """Dual-ATME's dual-branch network for the MEGC2019 composite (3 classes); forward takes the
    composite's BGR 0..255 (N, 3, 28, 28) image.

    In training mode the forward keeps the two branch embeddings of its last call so that
    :meth:`training_loss` (called by the trainer with the logits) can add the similarity term;
    with ``flip_prob > 0`` it also mirrors samples (u negated), the paper's flip augmentation.
    """

    def __init__(
        self,
        label_names: tuple[str, ...] = MEGC2019_LABELS,
        hidden_features: int = 1024,
        drop_rate: float = 0.5,
        focal_gamma: float = 2.0,
        similarity_weight: float = 0.01,
        flip_prob: float = 0.0,
        cbam_reduction: int = 16,
        cbam_kernel: int = 3,
    ) -> None:
        super().__init__()
        label_names = tuple(label_names)
        self.cfg = dataclasses.replace(DUAL_ATME_CFG, label_names=label_names)
        if label_names != MEGC2019_LABELS:
            self.cfg = dataclasses.replace(self.cfg, train_datasets=(), protocol="")
        self.num_classes = len(label_names)
        self.focal_gamma = focal_gamma
        self.similarity_weight = similarity_weight
        self.flip_prob = flip_prob
        in_channels = self.cfg.input_size[0]
        self.puzzle = FacePuzzle(PUZZLE_BOXES, self.cfg.input_size[1:], self.cfg.input_size[1:])
        self.face_branch = InceptionBranch(in_channels)  # AARS
        self.face_attention = CBAM(self.face_branch.out_channels, cbam_reduction, cbam_kernel)
        self.puzzle_branch = InceptionBranch(in_channels)  # HARS, no attention
        side = self.cfg.input_size[1] // 4  # two 2x2 max-pools: 28 -> 7
        fused = (self.face_branch.out_channels + self.puzzle_branch.out_channels) * side * side
        self.fc1 = nn.Linear(fused, hidden_features)
        self.dropout = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden_features, self.num_classes)
        self.num_features = hidden_features
        self._last_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x / 127.5 - 1.0
        if self.training:
            x = random_mirror(x, self.flip_prob, _U_PLANE, 0.0)  # after rescaling, 255 - u becomes -u
        return x

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 28, 28) 0..255 -> (V_e, V_p): attended face features and puzzle features, 48x7x7 each."""
        x = self._normalise(x)
        face = self.face_attention(self.face_branch(x))
        puzzle = self.puzzle_branch(self.puzzle(x))
        return face, puzzle

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 28, 28) -> (N, 96, 7, 7): face channels first, then puzzle channels."""
        return torch.cat(self.branches(x), dim=1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, 96, 7, 7) -> logits, or the (N, hidden_features) vector before the last FC."""
        hidden = self.dropout(F.relu(self.fc1(features.flatten(1))))
        return hidden if pre_logits else self.fc2(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        face, puzzle = self.branches(x)
        if self.training:
            self._last_embeddings = (face.flatten(1), puzzle.flatten(1))
        return self.forward_head(torch.cat((face, puzzle), dim=1))

    def training_loss(
        self, logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None
    ) -> torch.Tensor:
        """Focal loss + similarity_weight * mean(1 - cos(V_e, V_p)) for the last training forward."""
        if self._last_embeddings is None:
            raise RuntimeError("training_loss needs the embeddings of a forward pass in training mode")
        (face, puzzle), self._last_embeddings = self._last_embeddings, None
        if face.shape[0] != logits.shape[0]:
            raise RuntimeError(f"embeddings are for {face.shape[0]} samples, logits for {logits.shape[0]}")
        similarity = F.cosine_similarity(face, puzzle, dim=1)
        classification = focal_loss(logits, target, self.focal_gamma, class_weight)
        return classification + self.similarity_weight * (1.0 - similarity).mean()


dual_atme = register_model(class_builder(DualATME, "dual_atme"))
