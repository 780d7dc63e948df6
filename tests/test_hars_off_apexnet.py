"""HARS-OFF-ApexNet: OFF-ApexNet's flow streams twice, on the face and on Dual-ATME's puzzle of it."""

from __future__ import annotations

from pathlib import Path

import torch

from engines.models import create_model, list_models
from engines.models.complexity import count_flops, count_parameters
from engines.models.hars_off_apexnet import HarsOFFApexNet
from engines.models.off_apexnet import OFF_APEXNET_CFG

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "hars-off-apexnet.md"
CONTRACT = ("input_size", "channel_order", "channels", "value_range", "mean", "std", "motion", "clip", "label_names")


def _batch(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 28, 28), generator=torch.Generator().manual_seed(seed)).float()


def test_registered_with_off_apexnets_input_contract() -> None:
    assert "hars_off_apexnet" in list_models()
    model = create_model("hars_off_apexnet")
    assert isinstance(model, HarsOFFApexNet)
    for field in CONTRACT:
        assert getattr(model.cfg, field) == getattr(OFF_APEXNET_CFG, field), field
    assert model.cfg.name == "hars_off_apexnet"
    assert create_model("hars_off_apexnet", label_names=("a", "b")).cfg.label_names == ("a", "b")


def test_parameters_and_flops_are_two_stream_pairs_and_a_wider_head_and_the_cards() -> None:
    model = create_model("hars_off_apexnet")
    stream = (25 * 6 + 6) + (6 * 25 * 16 + 16)
    expected = 4 * stream + (3136 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 3 + 3)
    assert count_parameters(model) == expected == 4_275_251
    assert model.fc1.in_features == 64 * 7 * 7
    flops = count_flops(model)
    off_flops = count_flops(create_model("off_apexnet"))
    assert flops == off_flops + 2_352_000 + 1568 * 1024 * 2  # another pair of streams; fc1 twice as wide
    text = CARD.read_text(encoding="utf-8")
    assert f"{expected:,}" in text and f"{flops:,}" in text
    assert "configs/train/hars_off_apexnet.toml" in text


def test_face_streams_are_off_apexnets_and_maps_are_face_then_puzzle() -> None:
    model = create_model("hars_off_apexnet").eval()
    off = create_model("off_apexnet").eval()
    off.stream_u.load_state_dict(model.stream_u.state_dict())
    off.stream_v.load_state_dict(model.stream_v.state_dict())
    x = _batch()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (4, 64, 7, 7)
        assert torch.equal(features[:, :32], off.forward_features(x))
        off.stream_u.load_state_dict(model.puzzle_stream_u.state_dict())
        off.stream_v.load_state_dict(model.puzzle_stream_v.state_dict())
        assert torch.equal(features[:, 32:], off.forward_features(model.puzzle(x)))
        assert model.forward_head(features, pre_logits=True).shape == (4, 1024)
        assert model(x).shape == (4, 3)


def test_the_strain_plane_is_not_read() -> None:
    model = create_model("hars_off_apexnet").eval()
    x = _batch(1, seed=1)
    strain = x.clone()
    strain[:, 0] = 255.0 - strain[:, 0]
    with torch.no_grad():
        assert torch.equal(model.forward_features(strain), model.forward_features(x))


def test_a_mirrored_sample_mirrors_face_and_puzzle_together() -> None:
    """With flip_prob 1 in training mode, both views are those of the mirrored image."""
    flipping = create_model("hars_off_apexnet", flip_prob=1.0, drop_rate=0.0).train()
    plain = create_model("hars_off_apexnet", drop_rate=0.0).eval()
    plain.load_state_dict(flipping.state_dict())
    x = _batch(2, seed=2)
    mirrored = x.flip(-1)
    mirrored[:, 2] = 255.0 - mirrored[:, 2]  # u is plane 2 of (strain, v, u)
    with torch.no_grad():
        assert torch.allclose(flipping.forward_features(x), plain.forward_features(mirrored))
