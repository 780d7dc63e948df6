"""OFF-ApexNet: two small CNN streams on the horizontal and vertical optical flow, fused by two FC layers.

Gan, Liong, Yau, Huang, Tan, "OFF-ApexNet on micro-expression recognition system", Signal
Processing: Image Communication 74 (2019) 129-139 (arXiv:1805.08699). The flow between a
clip's onset and apex frames is split into its horizontal (u) and vertical (v) component; each
28x28 component goes through its own stream, conv 5x5 (6) -> ReLU -> max-pool 2 -> conv 5x5
(16) -> ReLU -> max-pool 2 ('same' padding), and the two 16x7x7 maps are flattened,
concatenated (1,568 values) and classified by FC 1024 -> FC 1024 -> FC K, with ReLU and
dropout 0.5 after each hidden FC layer.

Input: the MEGC2019 composite's 28x28 image exactly as STSTNet is fed it (same ``ModelCfg``
contract: BGR planes (strain, v, u), float 0..255); the strain plane is not read. See
``docs/models/off-apexnet.md`` for every choice the paper leaves open.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engines.models.blocks import random_mirror
from engines.models.registry import ModelCfg, class_builder, register_model
from engines.models.ststnet import MEGC2019_LABELS, STSTNET_CFG

__all__ = ["OFF_APEXNET_CFG", "FlowStream", "OFFApexNet", "flow_stream_features", "off_apexnet"]

OFF_APEXNET_CFG = dataclasses.replace(
    STSTNET_CFG,
    name="off_apexnet",
    source_url="https://doi.org/10.1016/j.image.2019.02.005",
    paper=("Y.S. Gan, S.-T. Liong, W.-C. Yau, Y.-C. Huang, L.-K. Tan, OFF-ApexNet on micro-expression "
           "recognition system, Signal Processing: Image Communication 74 (2019) 129-139"),
    license_note="reimplemented from the paper (no public code from its authors); cite the paper",
    notes="reads only the u and v planes of the composite; the strain plane is ignored",
)

# Plane indices in the BGR composite (strain, v, u).
_U_PLANE = STSTNET_CFG.channels.index("u")
_V_PLANE = STSTNET_CFG.channels.index("v")


class FlowStream(nn.Module):
    """One flow component (N, 1, 28, 28) -> (N, 16, 7, 7): conv 5x5 -> ReLU -> pool, twice ('same' padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, padding=2)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.conv2(self.pool(self.relu(self.conv1(x))))))


def flow_stream_features(x: torch.Tensor, stream_u: FlowStream, stream_v: FlowStream) -> torch.Tensor:
    """(N, 3, 28, 28) BGR composite, 0..255 -> (N, 32, 7, 7): its u plane through ``stream_u``, its v
    plane through ``stream_v``, each rescaled to -1..1 first (the strain plane is not read)."""
    x = x / 127.5 - 1.0
    u, v = x[:, _U_PLANE : _U_PLANE + 1], x[:, _V_PLANE : _V_PLANE + 1]
    return torch.cat((stream_u(u), stream_v(v)), dim=1)


class OFFApexNet(nn.Module):
    """OFF-ApexNet as the paper describes it (3 classes: 2,664,475 trainable parameters);
    ``label_names`` sets the number of outputs (3 for MEGC2019).

    The composite's 0..255 flow planes are rescaled to -1..1 (``x / 127.5 - 1``) inside the
    model. ``flip_prob > 0`` mirrors training samples left-right (u becomes 255 - u), an
    augmentation the paper does not use; it adds no parameters.
    """

    feature_maps = 32
    """Maps that ``forward_features`` returns (16 per flow stream); sizes the first FC layer."""

    def __init__(
        self,
        label_names: tuple[str, ...] = MEGC2019_LABELS,
        hidden_features: int = 1024,
        drop_rate: float = 0.5,
        flip_prob: float = 0.0,
    ) -> None:
        super().__init__()
        label_names = tuple(label_names)
        self.cfg: ModelCfg = (
            OFF_APEXNET_CFG if label_names == OFF_APEXNET_CFG.label_names
            else dataclasses.replace(OFF_APEXNET_CFG, label_names=label_names, train_datasets=(), protocol="")
        )
        self.num_classes = len(label_names)
        self.flip_prob = flip_prob
        self.stream_u = FlowStream()
        self.stream_v = FlowStream()
        size = self.cfg.input_size[-1] // 4  # two 2x2 poolings: 28 -> 7
        self.fc1 = nn.Linear(self.feature_maps * size * size, hidden_features)
        self.fc2 = nn.Linear(hidden_features, hidden_features)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p=drop_rate)
        self.num_features = hidden_features
        self.fc = nn.Linear(hidden_features, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 28, 28) BGR composite -> (N, 32, 7, 7): the u stream's 16 maps, then the v stream's."""
        if self.training:
            x = random_mirror(x, self.flip_prob, _U_PLANE, 255.0)
        return self.flow_features(x)

    def flow_features(self, x: torch.Tensor) -> torch.Tensor:
        """The maps of the (already mirrored) input: ``forward_features`` after augmentation, the
        part a model built on these streams extends (``hars_off_apexnet`` adds its puzzle's)."""
        return flow_stream_features(x, self.stream_u, self.stream_v)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, 32, 7, 7) -> (N, K) logits, or the (N, 1024) output of the second FC layer if ``pre_logits``."""
        hidden = self.dropout(self.relu(self.fc1(features.flatten(1))))
        hidden = self.dropout(self.relu(self.fc2(hidden)))
        return hidden if pre_logits else self.fc(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


off_apexnet = register_model(class_builder(OFFApexNet, "off_apexnet"))
