"""OFF-ApexNet: the STSTNet input contract, stream shapes, parameter count, u/v streams only, flip, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engines.models import create_model
from engines.models.complexity import count_flops, count_parameters
from engines.models.off_apexnet import FlowStream, OFFApexNet
from engines.models.ststnet import STSTNET_CFG

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "off-apexnet.md"
CONTRACT = ("input_size", "channel_order", "channels", "value_range", "mean", "std", "motion", "clip")


def _batch(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 28, 28), generator=torch.Generator().manual_seed(seed)).float()


def test_registered_with_ststnets_input_contract() -> None:
    model = create_model("off_apexnet")
    assert isinstance(model, OFFApexNet) and not getattr(model, "closed_form", False)
    for field in CONTRACT:
        assert getattr(model.cfg, field) == getattr(STSTNET_CFG, field), field
    assert model.num_classes == 3


def test_shapes_at_every_stage() -> None:
    model = create_model("off_apexnet").eval()
    x = _batch()
    with torch.no_grad():
        u = x[:, 2:] / 127.5 - 1
        assert model.stream_u.pool(model.stream_u.relu(model.stream_u.conv1(u))).shape == (2, 6, 14, 14)
        assert model.stream_u(u).shape == (2, 16, 7, 7)
        features = model.forward_features(x)
        assert features.shape == (2, 32, 7, 7)
        assert model.fc1.in_features == 2 * 16 * 7 * 7 == 1568
        assert model.forward_head(features, pre_logits=True).shape == (2, 1024)
        assert model(x).shape == (2, 3)


def test_parameter_count_is_the_papers_layers_and_the_cards() -> None:
    model = create_model("off_apexnet")
    stream = (25 * 6 + 6) + (6 * 25 * 16 + 16)
    expected = 2 * stream + (1568 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 3 + 3)
    assert count_parameters(model) == expected == 2_664_475
    assert sum(p.numel() for p in FlowStream().parameters()) == stream
    text = CARD.read_text(encoding="utf-8")
    assert f"{expected:,}" in text and f"{count_flops(model):,}" in text


def test_ignores_the_strain_plane_and_each_stream_reads_its_own_component() -> None:
    model = create_model("off_apexnet").eval()
    x = _batch(seed=1)
    other_strain = x.clone()
    other_strain[:, 0] = torch.rand(2, 28, 28) * 255
    other_v, other_u = x.clone(), x.clone()
    other_v[:, 1] = 255 - other_v[:, 1]
    other_u[:, 2] = 255 - other_u[:, 2]
    with torch.no_grad():
        assert torch.equal(model(other_strain), model(x))
        base = model.forward_features(x)
        with_v, with_u = model.forward_features(other_v), model.forward_features(other_u)
    assert torch.equal(with_v[:, :16], base[:, :16]) and not torch.equal(with_v[:, 16:], base[:, 16:])
    assert torch.equal(with_u[:, 16:], base[:, 16:]) and not torch.equal(with_u[:, :16], base[:, :16])
    # The streams see the planes rescaled to -1..1.
    torch.testing.assert_close(base[:, :16], model.stream_u(x[:, 2:3] / 127.5 - 1))


def test_flip_mirrors_the_image_and_negates_u_and_dropout_acts_only_in_training() -> None:
    torch.manual_seed(0)
    flipping = create_model("off_apexnet", flip_prob=1.0, drop_rate=0.0)
    x = _batch(seed=2)
    mirrored = x.flip(-1)
    mirrored[:, 2] = 255 - mirrored[:, 2]
    with torch.no_grad():
        trained_view = flipping.train()(x)
        torch.testing.assert_close(trained_view, flipping.eval()(mirrored))
    model = create_model("off_apexnet").eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_exports_to_onnx_and_matches_onnx_runtime(tmp_path: Path) -> None:
    from engines.export import export_model
    from engines.runtime import load

    torch.manual_seed(3)
    model = create_model("off_apexnet").eval()
    export_model(model, tmp_path, overwrite=True)
    batch = _batch(9, seed=4)
    scores = load(tmp_path, "onnxruntime").predict(batch.numpy())
    with torch.no_grad():
        expected = model(batch).softmax(1).numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
    assert np.ptp(expected, axis=0).max() > 1e-3
