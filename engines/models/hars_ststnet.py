"""HARS-STSTNet: STSTNet with Dual-ATME's hand-picked puzzle branch beside it.

Dual-ATME (Zhou et al., Entropy 2023) reads the face twice: the whole motion image, and a
"puzzle" tiled from the eyebrow and mouth regions, where micro-expressions move (its HARS
branch). This model applies that idea to STSTNet's backbone instead of Dual-ATME's
Inception branches: two STSTNet feature extractors with weights of their own, one on the
whole 28x28 composite image and one on its puzzle (:class:`~engines.models.dual_atme.FacePuzzle`,
the same fixed boxes as Dual-ATME on the composite), their 400-value features concatenated
and mapped to the classes by one linear layer, as STSTNet's own head does. Loss, recipe and
input contract are STSTNet's (cross-entropy; the composite image as ``cv2.imread`` returns
it, float 0..255), so the two compare one to one. See ``docs/models/hars-ststnet.md``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engines.models.dual_atme import PUZZLE_BOXES, PUZZLE_BOXES_NOTE, FacePuzzle
from engines.models.registry import class_builder, register_model
from engines.models.ststnet import MEGC2019_LABELS, STSTNET_CFG, STSTNet

__all__ = ["HARS_STSTNET_CFG", "HarsSTSTNet", "hars_ststnet"]

HARS_STSTNET_CFG = dataclasses.replace(
    STSTNET_CFG,
    name="hars_ststnet",
    # This project's combination; its two sources: STSTNet's release and Dual-ATME's code.
    source_url="https://github.com/christy1206/STSTNet https://github.com/HaoliangZhou/Dual-ATME",
    paper="STSTNet (Liong et al., FG 2019) with the HARS puzzle branch of Dual-ATME (Zhou et al., Entropy 2023); "
    "a combination of this project's, not a published model",
    license_note="this project's model; cite both papers",
    notes="Dual-ATME's " + PUZZLE_BOXES_NOTE,
)


class HarsSTSTNet(nn.Module):
    """Two STSTNet feature extractors, face (``face``) and puzzle (``puzzle_net``), one linear head
    over their concatenated 2 x 400 features (3,363 trainable parameters for 3 classes)."""

    def __init__(self, label_names: tuple[str, ...] = MEGC2019_LABELS, drop_rate: float = 0.5) -> None:
        super().__init__()
        label_names = tuple(label_names)
        self.cfg = dataclasses.replace(HARS_STSTNET_CFG, label_names=label_names)
        if label_names != MEGC2019_LABELS:
            self.cfg = dataclasses.replace(self.cfg, train_datasets=(), protocol="")
        self.num_classes = len(label_names)
        self.puzzle = FacePuzzle(PUZZLE_BOXES, self.cfg.input_size[1:], self.cfg.input_size[1:])
        # Each branch is a whole STSTNet whose own head stays unused: its features are what count.
        self.face = STSTNet(label_names, drop_rate)
        self.puzzle_net = STSTNet(label_names, drop_rate)
        del self.face.fc, self.puzzle_net.fc
        self.num_features = self.face.num_features + self.puzzle_net.num_features
        self.fc = nn.Linear(self.num_features, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 28, 28) composite image -> (N, 32, 5, 5): face channels first, then puzzle channels."""
        return torch.cat((self.face.forward_features(x), self.puzzle_net.forward_features(self.puzzle(x))), dim=1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, 32, 5, 5) -> (N, num_classes) logits, or the flat (N, 800) vector if ``pre_logits``."""
        flat = features.flatten(1)
        return flat if pre_logits else self.fc(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


hars_ststnet = register_model(class_builder(HarsSTSTNet, "hars_ststnet"))
