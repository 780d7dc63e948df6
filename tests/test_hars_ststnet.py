"""HARS-STSTNet: STSTNet's backbone twice, on the face and on Dual-ATME's puzzle of it."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from engines.models import create_model, list_models
from engines.models.hars_ststnet import HarsSTSTNet
from engines.models.ststnet import STSTNET_CFG

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "hars-ststnet.md"


def _batch(n: int = 4) -> torch.Tensor:
    return 255 * torch.rand((n, 3, 28, 28), generator=torch.Generator().manual_seed(0))


def test_registered_with_ststnets_input_contract() -> None:
    assert "hars_ststnet" in list_models()
    model = create_model("hars_ststnet")
    assert isinstance(model, HarsSTSTNet)
    for field in ("input_size", "channel_order", "channels", "value_range", "mean", "std", "motion", "label_names"):
        assert getattr(model.cfg, field) == getattr(STSTNET_CFG, field), field
    assert model.cfg.name == "hars_ststnet"


def test_parameters_are_two_ststnet_backbones_and_one_head() -> None:
    model = create_model("hars_ststnet")
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    backbone = 1683 - (400 * 3 + 3)  # STSTNet without its head
    assert count == 2 * backbone + 800 * 3 + 3 == 3363
    assert not hasattr(model.face, "fc") and not hasattr(model.puzzle_net, "fc")


def test_face_branch_is_ststnet_and_features_are_face_then_puzzle() -> None:
    model = create_model("hars_ststnet").eval()
    ststnet = create_model("ststnet").eval()
    ststnet.load_state_dict({**ststnet.state_dict(), **{k: v for k, v in model.face.state_dict().items()}})
    x = _batch()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (4, 32, 5, 5)
        assert torch.equal(features[:, :16], ststnet.forward_features(x))
        assert torch.equal(features[:, 16:], model.puzzle_net.forward_features(model.puzzle(x)))
        assert model.forward_head(features, pre_logits=True).shape == (4, 800)
        assert model(x).shape == (4, 3)


def test_model_card_states_the_measured_parameter_count() -> None:
    text = CARD.read_text()
    assert re.search(r"\b3,363\b", text)
    assert "configs/train/hars_ststnet.toml" in text
