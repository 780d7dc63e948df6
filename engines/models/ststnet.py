"""STSTNet, exactly as the original release (github.com/christy1206/STSTNet, main.py).

Liong et al., "Shallow Triple Stream Three-dimensional CNN (STSTNet) for Micro-expression
Recognition", FG 2019. Three parallel 3x3 convolutions (3, 5 and 8 filters) look at the same
28x28 composite motion image (optical strain, v, u); each stream is conv -> ReLU -> BatchNorm ->
MaxPool 3/3 -> Dropout 0.5 (that order, as the release). The 16 concatenated channels are
average-pooled to 5x5 and a single linear layer maps the 400 values to the classes.

The layer names (``conv1..3``, ``bn1..3``, ``fc``) are the release's, so its 68 per-subject
checkpoints load with ``load_state_dict(strict=True)``; ``tests/test_ststnet_golden.py`` checks
that they reproduce its logged predictions. See ``docs/models/ststnet.md``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engines.models.blocks import random_mirror, random_shift
from engines.models.registry import ModelCfg, class_builder, register_model

__all__ = ["MEGC2019_LABELS", "STSTNET_CFG", "STSTNet", "ststnet"]

# Class index order of the MEGC2019 composite (the release's label folders 0, 1, 2).
MEGC2019_LABELS = ("negative", "positive", "surprise")

STSTNET_CFG = ModelCfg(
    name="ststnet",
    input_size=(3, 28, 28),
    # cv2.imread of the composite PNG: the PNG's R, G, B planes are u, v, strain, so the BGR
    # array fed to the model is (strain, v, u). The release never converted to RGB.
    channel_order="BGR",
    channels=("optical_strain", "v", "u"),
    value_range=(0.0, 255.0),
    mean=None,
    std=None,
    motion=(
        "TV-L1 optical flow between the onset and apex frames of a 28x28 face crop; u, v and the "
        "optical strain magnitude, each min-max normalised to 0..255 and stored as one 8-bit PNG "
        "(the MEGC2019 'norm_u_v_os' composite images); fed as float, no further normalisation"
    ),
    label_names=MEGC2019_LABELS,
    source_url="https://github.com/christy1206/STSTNet",
    paper="S.-T. Liong, Y.S. Gan, J. See, H.-Q. Khor, Y.-C. Huang, STSTNet, FG 2019 (MEGC2019)",
    license_note="code and weights published without a licence; research use, cite the paper",
    train_datasets=("casme2", "smic-hs", "samm"),
    protocol="MEGC2019 composite, leave-one-subject-out over 68 subjects",
)

# Plane index of the horizontal flow u in the BGR composite (strain, v, u).
_U_PLANE = STSTNET_CFG.channels.index("u")


class STSTNet(nn.Module):
    """STSTNet as released for MEGC2019 (3 classes, 1,683 trainable parameters); ``label_names``
    sets the number of outputs (3 for MEGC2019).

    Two training augmentations the release did not use: ``flip_prob > 0`` mirrors training
    samples left-right (u becomes 255 - u); ``shift_px > 0`` translates each by up to that many
    pixels in x and y (edges repeated). They add no parameters, so checkpoints stay
    interchangeable.
    """

    def __init__(
        self, label_names: tuple[str, ...] = MEGC2019_LABELS, drop_rate: float = 0.5, flip_prob: float = 0.0,
        shift_px: int = 0,
    ) -> None:
        super().__init__()
        self.flip_prob = flip_prob
        self.shift_px = shift_px
        label_names = tuple(label_names)
        self.cfg = STSTNET_CFG if label_names == STSTNET_CFG.label_names else _cfg_with_labels(label_names)
        self.num_classes = len(label_names)
        in_chans = self.cfg.input_size[0]
        self.conv1 = nn.Conv2d(in_chans, 3, kernel_size=3, padding=2)
        self.conv2 = nn.Conv2d(in_chans, 5, kernel_size=3, padding=2)
        self.conv3 = nn.Conv2d(in_chans, 8, kernel_size=3, padding=2)
        self.bn1 = nn.BatchNorm2d(3)
        self.bn2 = nn.BatchNorm2d(5)
        self.bn3 = nn.BatchNorm2d(8)
        # Parameter-free layers are shared by the three streams, as in the release.
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=3, padding=1)
        self.dropout = nn.Dropout(p=drop_rate)
        self.avgpool = nn.AvgPool2d(kernel_size=2, stride=2)
        # 28 -> conv pad 2 -> 30 -> maxpool -> 10 -> avgpool -> 5; 16 channels x 5 x 5.
        self.num_features = 16 * 5 * 5
        self.fc = nn.Linear(self.num_features, self.num_classes)

    def _stream(self, x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
        return self.dropout(self.maxpool(bn(self.relu(conv(x)))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 28, 28) motion image -> (N, 16, 5, 5) pooled feature map."""
        if self.training:
            x = random_shift(random_mirror(x, self.flip_prob, _U_PLANE, 255.0), self.shift_px)
        streams = (
            self._stream(x, self.conv1, self.bn1),
            self._stream(x, self.conv2, self.bn2),
            self._stream(x, self.conv3, self.bn3),
        )
        return self.avgpool(torch.cat(streams, dim=1))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, 16, 5, 5) -> (N, num_classes) logits, or the flat (N, 400) vector if ``pre_logits``."""
        flat = features.flatten(1)
        return flat if pre_logits else self.fc(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg_with_labels(label_names: tuple[str, ...]) -> ModelCfg:
    """The release's input contract with another label set (e.g. for CAS(ME)^3 classes)."""
    return dataclasses.replace(STSTNET_CFG, label_names=label_names, train_datasets=(), protocol="")


ststnet = register_model(class_builder(STSTNet, "ststnet"))
