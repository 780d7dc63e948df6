"""TLDN (paper 002): input contract, dense and residual blocks, mixed attention, size, export, learning."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engines.clip_spec import ClipSpec
from engines.errors import ConfigError
from engines.export import DEFAULT_OPSET, INPUT_NAME, export_onnx
from engines.models import create_model, list_models
from engines.models.complexity import count_flops, count_parameters
from engines.models.tldn import (
    DenseBlock,
    MixedAttention,
    ResidualBlock,
    block_depths,
    evm_settings,
    residual_width,
)
from engines.motion.magnify import eulerian_magnify
from training.protocol import Fold
from training.recipes import RECIPE_DIR, load_recipe
from training.trainer import train_fold

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "tldn.md"
PAPER_PARAMETERS = 3_115_000
# A small TLDN for the behaviour tests (the synthetic recipe's size).
SMALL = {"image_size": 32, "magnify": False, "stem_channels": 4, "growth_rate": 4, "first_block_layers": 1}


# Small tensors: intra-op threads only contend on the shared 2-core CI machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return create_model("tldn").eval()


def _conv_layer_parameters(in_channels: int, out_channels: int, kernel: int = 5) -> int:
    return in_channels * out_channels * kernel * kernel + out_channels + 2 * out_channels  # conv + bias + BN


def _expected_parameters(stem=16, growth=16, first=2, side=7, classes=3, attention="mixed", reduction=16) -> int:
    """The dense TLDN's parameters counted from the card's description, layer by layer."""
    total = _conv_layer_parameters(3, stem)
    channels = stem
    for layers in (first, 2 * first, 4 * first, 8 * first):
        for _ in range(layers):
            total += _conv_layer_parameters(channels, growth)
            channels += growth
        if attention in ("channel", "mixed"):
            total += 2 * channels * (channels // reduction)  # shared MLP C -> C/r -> C, no bias
        if attention in ("spatial", "mixed"):
            total += 2 * 5 * 5  # 5x5 conv over the [max; mean] maps, no bias
    return total + channels * side * side * classes + classes


def test_registered_with_the_apex_rgb_contract(paper_model) -> None:
    assert "tldn" in list_models()
    cfg = paper_model.cfg
    assert cfg.clip == ClipSpec(frames=1, anchors="apex", size=112, color="rgb", magnify=evm_settings())
    assert cfg.input_size == cfg.clip.sample_shape == (3, 112, 112)
    assert cfg.channel_order == "RGB" and cfg.channels == ("r", "g", "b")
    assert cfg.value_range == (0.0, 1.0) and cfg.mean is None and cfg.std is None
    assert cfg.label_names == ("negative", "positive", "surprise") and paper_model.num_classes == 3
    magnify = cfg.clip.magnify
    assert (magnify["low_hz"], magnify["high_hz"], magnify["alpha"]) == (0.1, 0.4, 15.0)
    # The settings are keyword arguments of the kernel: it accepts them as they are.
    eulerian_magnify(torch.rand(1, 4, 32, 32), fps=200.0, **magnify)
    plain = create_model("tldn", image_size=64, magnify=False, label_names=("a", "b"))
    assert plain.cfg.clip.magnify is None and plain.cfg.input_size == (3, 64, 64)
    assert plain.num_classes == 2 and plain.cfg.train_datasets == ()


def test_shapes_at_every_stage_at_112(paper_model) -> None:
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    expected = [(48, 56), (112, 28), (240, 14), (496, 7)]  # 16 + 2*16, + 4*16, + 8*16, + 16*16 channels
    assert block_depths(2) == (2, 4, 8, 16)
    with torch.no_grad():
        h = paper_model.stem(x)
        assert h.shape == (2, 16, 112, 112)
        h = paper_model.pool(h)
        for index, (stage, attention) in enumerate(zip(paper_model.blocks, paper_model.attentions)):
            h = attention(stage(h))
            assert h.shape[1:] == (expected[index][0], expected[index][1], expected[index][1])
            if index < 3:
                h = paper_model.pool(h)
        features = paper_model.forward_features(x)
        torch.testing.assert_close(features, h, rtol=0, atol=0)
        assert paper_model.fc.in_features == paper_model.num_features == 496 * 7 * 7
        assert paper_model(x).shape == (2, 3)


def test_parameter_count_is_the_architectures_and_near_the_papers(paper_model) -> None:
    measured = count_parameters(paper_model)
    assert measured == _expected_parameters()
    assert abs(measured - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.01  # paper: 3.115 M
    # The card states the count and the FLOPs that were measured here.
    card = CARD.read_text()
    assert f"{measured:,}" in card
    assert f"{count_flops(paper_model):,}" in card


def test_attention_variants_add_exactly_their_parameters() -> None:
    kinds = ("none", "channel", "spatial", "mixed")
    counts = {kind: count_parameters(create_model("tldn", attention=kind)) for kind in kinds}
    for kind, count in counts.items():
        assert count == _expected_parameters(attention=kind), kind
    mlp = counts["channel"] - counts["none"]
    assert mlp == sum(2 * c * (c // 16) for c in (48, 112, 240, 496))
    assert counts["spatial"] - counts["none"] == 4 * 50
    assert counts["mixed"] == counts["none"] + mlp + 4 * 50


def test_mixed_attention_is_channel_then_spatial_with_a_leaky_mlp() -> None:
    torch.manual_seed(0)
    module = MixedAttention(32, "mixed", reduction=4, leaky_slope=0.3).eval()
    x = torch.randn(2, 32, 6, 6)
    mlp = module.channel.mlp
    assert isinstance(mlp[1], torch.nn.LeakyReLU) and mlp[1].negative_slope == 0.3
    # Eq. 5-8 by hand: channel weights from avg- and max-pooled vectors, then spatial weights of H'.
    w0, w1 = mlp[0].weight[:, :, 0, 0], mlp[2].weight[:, :, 0, 0]
    def shared(v):
        return torch.nn.functional.leaky_relu(v @ w0.T, 0.3) @ w1.T
    m_c = torch.sigmoid(shared(x.mean((2, 3))) + shared(x.amax((2, 3))))
    h1 = x * m_c[:, :, None, None]
    maps = torch.stack((h1.amax(1), h1.mean(1)), dim=1)
    m_s = torch.sigmoid(torch.nn.functional.conv2d(maps, module.spatial.conv.weight, padding=2))
    with torch.no_grad():
        torch.testing.assert_close(module(x), h1 * m_s, rtol=1e-5, atol=1e-6)
    # Zero weights make each map sigmoid(0) = 1/2: channel-only halves, mixed quarters.
    for kind, factor in (("channel", 0.5), ("spatial", 0.5), ("mixed", 0.25)):
        attention = MixedAttention(8, kind, reduction=2)
        for parameter in attention.parameters():
            torch.nn.init.zeros_(parameter)
        torch.testing.assert_close(attention(x[:, :8]), factor * x[:, :8])


def test_dense_block_concatenates_and_residual_block_adds() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 8)
    dense = DenseBlock(6, growth_rate=3, layers=4).eval()
    assert [layer[0].in_channels for layer in dense.layers] == [6, 9, 12, 15]
    with torch.no_grad():
        out = dense(x)
        assert out.shape == (2, 6 + 4 * 3, 8, 8) == (2, dense.out_channels, 8, 8)
        torch.testing.assert_close(out[:, :6], x, rtol=0, atol=0)  # the input rides along unchanged
        torch.testing.assert_close(out[:, 6:9], dense.layers[0](x), rtol=0, atol=0)
    residual = ResidualBlock(6, width=10, layers=4).eval()
    for layer in residual.layers:  # BN to zero: every 5x5 layer adds nothing
        torch.nn.init.zeros_(layer[2].weight)
        torch.nn.init.zeros_(layer[2].bias)
    with torch.no_grad():
        torch.testing.assert_close(residual(x), residual.entry(x), rtol=0, atol=0)
    assert [layer[0].kernel_size for layer in residual.layers] == [(5, 5)] * 4


def test_residual_variant_keeps_depth_and_about_the_dense_weights() -> None:
    dense, residual = create_model("tldn"), create_model("tldn", block="residual")
    assert [len(b.layers) for b in residual.blocks] == [len(b.layers) for b in dense.blocks] == [2, 4, 8, 16]
    for d_block, r_block in zip(dense.blocks, residual.blocks):
        d_weights = sum(layer[0].weight.numel() for layer in d_block.layers)
        r_weights = sum(layer[0].weight.numel() for layer in r_block.layers)
        assert 0.85 < r_weights / d_weights < 1.25
    assert residual_width(240, 16, 16) == 76  # sqrt(16 * (240 + 15 * 8)) = 75.9 -> 76
    assert residual.blocks[-1].out_channels == 76 and residual.fc.in_features == 76 * 49
    with torch.no_grad():
        assert residual.eval()(torch.rand(1, 3, 112, 112)).shape == (1, 3)


def test_bad_options_are_refused_naming_the_option() -> None:
    for options, name in (({"image_size": 100}, "image_size"), ({"attention": "cbam"}, "attention"),
                          ({"block": "dense121"}, "block"), ({"growth_rate": 0}, "growth_rate")):
        with pytest.raises(ConfigError, match=name):
            create_model("tldn", **options)


def test_paper_band_leaves_a_clip_shorter_than_2_5_s_unchanged() -> None:
    # An ideal 0.1-0.4 Hz band-pass keeps FFT bins k * fps / n only; for n frames at 200 fps the
    # first non-zero bin is 200 / n Hz, inside the band only when n >= 500 frames (2.5 s).
    settings = evm_settings()
    generator = torch.Generator().manual_seed(0)
    short = 255 * torch.rand(1, 120, 32, 32, generator=generator)  # 0.6 s: a long micro-expression
    torch.testing.assert_close(eulerian_magnify(short, 200.0, **settings), short, rtol=0, atol=1e-3)
    # A 5 s clip whose brightness pattern varies at 0.2 Hz (in the band) is changed.
    t = torch.arange(1000) / 200.0
    pattern = torch.zeros(32, 32)
    pattern[8:24, 8:24] = 1.0
    slow = 128 + 10 * torch.sin(2 * torch.pi * 0.2 * t)[:, None, None] * pattern
    assert (eulerian_magnify(slow[None], 200.0, **settings) - slow[None]).abs().max() > 5.0


def test_onnx_export_matches_torch_at_a_small_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("tldn", image_size=32, magnify=False).eval()  # the paper's widths at 32 px
    path = export_onnx(model, tmp_path / "tldn.onnx", DEFAULT_OPSET, {})
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1).numpy()
    assert scores.shape == (3, 3)
    assert np.abs(scores - expected).max() <= 1e-4


def _toy_faces(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy grey images whose class is where a bright patch sits: top, middle or bottom band."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = 0.3 + 0.1 * torch.rand((n, 3, 32, 32), generator=generator)
    for index, label in enumerate(labels.tolist()):
        top = 2 + 10 * label
        images[index, :, top : top + 8, 8:24] += 0.5
    return images, labels


def test_synthetic_recipe_learns_a_toy_task() -> None:
    from training.pretrain import load_pretrain_recipe

    recipe = load_recipe("tldn", RECIPE_DIR / "tldn_synth.toml")
    assert recipe.model_options == SMALL
    # Its pretraining (tests/test_zoo_synthetic.py) must build the same network, or the weights would not load.
    assert load_pretrain_recipe("tldn", RECIPE_DIR / "tldn_synth_pretrain.toml").model_options == SMALL
    x, y = _toy_faces(90)
    subjects = [f"s{i // 6}" for i in range(90)]  # 15 subjects, 2 images of each class
    held_out = tuple(i for i, s in enumerate(subjects) if s in ("s0", "s1"))
    fold = Fold("s0", tuple(i for i in range(90) if i not in held_out), held_out)
    result = train_fold(recipe, fold, x, y, subjects, ("top", "middle", "bottom"))
    truth = y[list(held_out)].numpy()
    assert (result.scores.argmax(1) == truth).mean() >= 0.9  # chance: 1/3
    assert result.epochs_run == recipe.epochs


def test_card_names_the_model_and_its_options() -> None:
    card = CARD.read_text()
    assert re.search(r"Transfer-Learning Dense Network", card)
    for option in ("image_size", "magnify", "attention", "block", "stem_channels", "growth_rate",
                   "first_block_layers", "attention_reduction", "leaky_slope"):
        assert f"`{option}`" in card, option
