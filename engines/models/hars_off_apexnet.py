"""HARS-OFF-ApexNet: OFF-ApexNet with Dual-ATME's hand-picked puzzle branch beside it.

The second backbone this project gives Dual-ATME's HARS idea (Zhou et al., Entropy 2023), after
STSTNet (``hars_ststnet``): the face is read twice, whole and as the "puzzle" tiled from its
eyebrow and mouth regions (:class:`~engines.models.dual_atme.FacePuzzle`, the same fixed boxes
as Dual-ATME on the composite). Each view goes through OFF-ApexNet's own pair of u/v flow
streams, with weights of its own; the four streams' 64 maps of 7x7 are flattened and classified
by OFF-ApexNet's head (FC 1024 -> FC 1024 -> FC K, ReLU and dropout 0.5). Input contract,
loss and recipe are OFF-ApexNet's, so the two compare one to one. See
``docs/models/hars-off-apexnet.md``.
"""

from __future__ import annotations

import dataclasses

import torch

from engines.models.dual_atme import PUZZLE_BOXES, PUZZLE_BOXES_NOTE, FacePuzzle
from engines.models.off_apexnet import FlowStream, OFFApexNet, flow_stream_features
from engines.models.registry import class_builder, register_model
from engines.models.ststnet import MEGC2019_LABELS

__all__ = ["HarsOFFApexNet", "hars_off_apexnet"]


class HarsOFFApexNet(OFFApexNet):
    """OFF-ApexNet's u/v streams on the face (``stream_u``, ``stream_v``) and a second pair on the
    puzzle (``puzzle_stream_u``, ``puzzle_stream_v``), one OFF-ApexNet head over all 64 maps
    (4,275,251 trainable parameters for 3 classes). ``flip_prob`` mirrors the input once, before
    the puzzle is cut, so both views of a sample are mirrored together."""

    feature_maps = 64

    def __init__(
        self,
        label_names: tuple[str, ...] = MEGC2019_LABELS,
        hidden_features: int = 1024,
        drop_rate: float = 0.5,
        flip_prob: float = 0.0,
    ) -> None:
        super().__init__(label_names, hidden_features, drop_rate, flip_prob)
        self.cfg = dataclasses.replace(
            self.cfg,
            name="hars_off_apexnet",
            source_url="https://doi.org/10.1016/j.image.2019.02.005 https://github.com/HaoliangZhou/Dual-ATME",
            paper="OFF-ApexNet (Gan et al., Signal Processing: Image Communication 2019) with the HARS puzzle "
            "branch of Dual-ATME (Zhou et al., Entropy 2023); a combination of this project's, not a published model",
            license_note="this project's model; cite both papers",
            notes="reads only the u and v planes; Dual-ATME's " + PUZZLE_BOXES_NOTE,
        )
        self.puzzle = FacePuzzle(PUZZLE_BOXES, self.cfg.input_size[1:], self.cfg.input_size[1:])
        self.puzzle_stream_u = FlowStream()
        self.puzzle_stream_v = FlowStream()

    def flow_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 28, 28) BGR composite (mirrored by ``forward_features`` when training) -> (N, 64, 7, 7):
        the face's u and v maps, then the puzzle's."""
        puzzle = flow_stream_features(self.puzzle(x), self.puzzle_stream_u, self.puzzle_stream_v)
        return torch.cat((super().flow_features(x), puzzle), dim=1)


hars_off_apexnet = register_model(class_builder(HarsOFFApexNet, "hars_off_apexnet"))
