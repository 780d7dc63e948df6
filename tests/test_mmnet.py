"""MMNet: input contract, stage shapes, the continuous-attention chain, which frame feeds which
branch, augmentation only in training, ONNX parity, and a toy task the model learns."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from engines.config import load_config
from engines.models import create_model, list_models
from engines.models.complexity import count_parameters
from engines.models.mmnet import IMAGENET_MEAN, IMAGENET_STD, CABlock, ContinuousAttention, MMNet
from training.classmaps import CLASS_MAPS
from training.protocol import Fold
from training.recipes import TrainRecipe
from training.trainer import train_fold

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "docs" / "models" / "mmnet.md"
SYNTH_RECIPE = ROOT / "configs" / "train" / "mmnet_synth.toml"
# The toy size of configs/train/mmnet_synth.toml: 32 px, widths 8 -> 8 -> 16 -> 32, a 2x2 grid.
SMALL = dict(image_size=32, stem_width=8, base_width=8, num_heads=2)


# Small tensors: intra-op threads only contend on the shared 2-core CI machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clips(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 2, 3, size, size), generator=torch.Generator().manual_seed(seed))


def _small(**options) -> MMNet:
    torch.manual_seed(0)
    return create_model("mmnet", **{**SMALL, **options})


def _std() -> torch.Tensor:
    return torch.tensor(IMAGENET_STD).reshape(3, 1, 1)


def test_registered_with_the_onset_apex_clip_contract() -> None:
    assert "mmnet" in list_models()
    model = create_model("mmnet")
    cfg = model.cfg
    assert isinstance(model, MMNet)
    assert cfg.input_size == (2, 3, 224, 224)
    assert cfg.clip is not None and cfg.clip.frames == 2 and cfg.clip.anchors == "onset_apex"
    assert cfg.clip.size == 224 and cfg.clip.color == "rgb" and cfg.clip.flow is None
    assert cfg.channel_order == "RGB" and cfg.channels == ("r", "g", "b")
    assert cfg.value_range == (0.0, 1.0) and cfg.mean is None and cfg.std is None
    # The default labels are the project's CASME II 5-class task, in its order.
    assert cfg.label_names == CLASS_MAPS["casme2-5"].classes and model.num_classes == 5
    small = _small(label_names=("a", "b", "c"))
    assert small.cfg.input_size == small.cfg.clip.sample_shape == (2, 3, 32, 32)
    assert small.num_classes == 3 and small.cfg.train_datasets == ()


def test_shapes_at_every_stage() -> None:
    model = _small().eval()
    x = _clips(3)
    with torch.no_grad():
        motion, onset = model.prepare(x)
        assert motion.shape == onset.shape == (3, 3, 32, 32)
        features = model.stem(motion)
        assert features.shape == (3, 8, 16, 16)
        attention = None
        for block, (channels, side) in zip(model.blocks, ((8, 16), (8, 8), (16, 4), (32, 2)), strict=True):
            features, attention = block(features, attention)
            assert features.shape == (3, channels, side, side)
            assert attention.shape == (3, 1, side, side)
        motion_features, position = model.branches(x)
        assert motion_features.shape == position.shape == (3, 32, 2, 2)
        fused = model.forward_features(x)
        torch.testing.assert_close(fused, motion_features + position, rtol=0, atol=0)
        assert model.head.in_features == model.num_features == 32 * 2 * 2
        assert model.forward_head(fused, pre_logits=True).shape == (3, 128)
        assert model(x).shape == (3, 5)


def test_paper_size_parameter_count_is_the_cards() -> None:
    model = create_model("mmnet")
    count = count_parameters(model)
    match = re.search(r"Trainable parameters \(measured\): ([\d,]+)", CARD.read_text(encoding="utf-8"))
    assert match, "the model card must state the parameter count"
    assert int(match.group(1).replace(",", "")) == count
    # The digest's count from the public code's configuration, 9.44 M used in the forward pass,
    # differs only by the 1x1 shortcut of block 1 (128 x 128 conv + BatchNorm) that the code omits.
    assert count - (128 * 128 + 2 * 128) == pytest.approx(9.44e6, abs=0.01e6)
    assert model.num_features == 512 * 14 * 14
    assert count_parameters(model.position) == 6_408_192  # 2 ViT blocks of 512, 196 positions


def test_attention_is_the_local_map_times_the_max_pooled_previous_map() -> None:
    # Two 2x2 channels; the 1x1 conv takes max - mean; BatchNorm is the identity up to its eps.
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [5.0, -4.0]]]])
    previous = (torch.arange(16.0) / 16).reshape(1, 1, 4, 4)
    attention = ContinuousAttention(stride=2).eval()
    with torch.no_grad():
        attention.conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1))
    # max over channels [[1, 2], [5, 4]], mean [[0.5, 1], [4, 0]]; 3x3/2 max-pool of the 4x4 ramp
    # (padding 1) keeps the bottom-right of each window: 5, 7, 13, 15 (/16).
    local = torch.sigmoid(torch.tensor([[0.5, 1.0], [1.0, 4.0]]) / math.sqrt(1 + 1e-5))
    pooled = torch.tensor([[5.0, 7.0], [13.0, 15.0]]) / 16
    with torch.no_grad():
        torch.testing.assert_close(attention(features, previous)[0, 0], local * pooled)
        torch.testing.assert_close(attention(features, None)[0, 0], local)
        independent = ContinuousAttention(stride=2, continuous=False).eval()
        independent.load_state_dict(attention.state_dict())
        torch.testing.assert_close(independent(features, previous)[0, 0], local)


def test_blocks_chain_their_attention_and_weight_every_channel_by_it() -> None:
    model = _small().eval()
    features = model.stem(model.prepare(_clips())[0]).detach()
    attention = None
    with torch.no_grad():
        for index, block in enumerate(model.blocks):
            raw = F.relu(block.conv1x1(F.relu(block.conv3x3(features))) + block.shortcut(features))
            local = block.attention(raw, None)
            expected = local if attention is None else local * F.max_pool2d(attention, 3, 2, 1)
            features, attention = block(features, attention)
            torch.testing.assert_close(attention, expected)
            torch.testing.assert_close(features, raw * expected)  # one map broadcast over all channels
            assert block.attention.continuous
            assert isinstance(block.attention.prior_pool, torch.nn.Identity) == (index == 0)  # block 1: stride 1


def test_ablation_switches_drop_the_attention_or_the_position_module() -> None:
    plain = _small(attention="none", position_calibration=False).eval()
    assert all(block.attention is None for block in plain.blocks) and plain.position is None
    x = _clips()
    with torch.no_grad():
        motion_features, position = plain.branches(x)
        assert position is None
        torch.testing.assert_close(plain.forward_features(x), motion_features, rtol=0, atol=0)
    independent = _small(attention="independent")
    assert not any(block.attention.continuous for block in independent.blocks)
    assert isinstance(CABlock(4, 4, 1, "none").shortcut[0], torch.nn.Conv2d)  # Eq. 2's 1x1 shortcut in every block
    with pytest.raises(ValueError, match="multiple of 16"):
        create_model("mmnet", image_size=40)
    with pytest.raises(ValueError, match="'continuous', 'independent' or 'none'"):
        create_model("mmnet", **SMALL, attention="chained")


@pytest.mark.parametrize("training", [False, True])
def test_main_branch_sees_apex_minus_onset_and_zeros_when_they_are_equal(training: bool) -> None:
    model = _small().train(training)
    seen = []
    model.stem[0][0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    onset = _clips(2)[:, 0]
    still = torch.stack((onset, onset), dim=1)
    with torch.no_grad():
        model(still)
    # Also in training: the colour jitter and the flip/rotation/shift move both frames alike.
    assert seen[-1].shape == (2, 3, 32, 32) and torch.equal(seen[-1], torch.zeros_like(seen[-1]))
    if not training:
        clip = _clips(2, seed=1)
        with torch.no_grad():
            model(clip)
        torch.testing.assert_close(seen[-1], (clip[:, 1] - clip[:, 0]) / _std())


def test_position_calibration_reads_the_onset_only() -> None:
    model = _small().eval()
    clip = _clips(2)
    other_apex = clip.clone()
    other_apex[:, 1] = torch.rand(other_apex[:, 1].shape, generator=torch.Generator().manual_seed(5))
    other_onset = clip.clone()
    other_onset[:, 0] = other_apex[:, 1]
    seen = []
    model.position.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    with torch.no_grad():
        position = model.branches(clip)[1]
        torch.testing.assert_close(model.branches(other_apex)[1], position, rtol=0, atol=0)
        assert not torch.allclose(model.branches(other_onset)[1], position, atol=1e-3)
    mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
    torch.testing.assert_close(seen[0], (clip[:, 0] - mean) / _std())
    # The onset is averaged over 16x16 cells, one token per cell of the 2x2 grid.
    cells = torch.stack([seen[0][..., r:r + 16, c:c + 16].mean(dim=(-2, -1)) for r in (0, 16) for c in (0, 16)], -1)
    tokens = model.position.embed(cells.transpose(1, 2)) + model.position.position
    expected = model.position.norm(model.position.blocks(tokens)).transpose(1, 2).reshape(2, 32, 2, 2)
    torch.testing.assert_close(position, expected)


def test_augmentation_only_in_training() -> None:
    augmenting = _small().eval()
    plain = _small(flip_prob=0.0, max_rotation=0.0, crop_shift=0.0, colour_jitter=0.0).eval()
    plain.load_state_dict(augmenting.state_dict())
    clip = _clips(4)
    with torch.no_grad():
        torch.testing.assert_close(augmenting(clip), augmenting(clip), rtol=0, atol=0)
        torch.testing.assert_close(augmenting(clip), plain(clip), rtol=0, atol=0)
        torch.manual_seed(0)
        moved = augmenting.train().prepare(clip)[0]
        still = plain.train().prepare(clip)[0]
    assert not torch.allclose(moved, still, atol=1e-3)  # training mode does augment
    torch.testing.assert_close(still, (clip[:, 1] - clip[:, 0]) / _std())


def test_refuses_a_clip_of_another_shape() -> None:
    with pytest.raises(ValueError, match=r"takes \(N, 2, 3, 32, 32\) clips \(onset, apex\), got \(1, 2, 3, 64, 64\)"):
        _small()(torch.zeros(1, 2, 3, 64, 64))


def test_exports_to_onnx_with_the_same_scores(tmp_path: Path) -> None:
    # Exported at batch 2 by the project's exporter, run here at batch 3 (dynamic batch axis).
    import onnxruntime

    from engines.export import DEFAULT_OPSET, INPUT_NAME, export_onnx

    model = _small().eval()
    with torch.no_grad():  # a smaller head keeps the probabilities away from 0/1, so the check can fail
        model.head.weight.mul_(0.1)
    path = export_onnx(model, tmp_path / "mmnet.onnx", DEFAULT_OPSET, {})
    clip = _clips(3, seed=2)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {INPUT_NAME: clip.numpy()})
    with torch.no_grad():
        expected = torch.softmax(model(clip), dim=1)
    assert scores.shape == (3, 5) and expected.max() < 0.99
    torch.testing.assert_close(torch.from_numpy(scores), expected, rtol=0, atol=1e-4)


def _toy_clips(per_class: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a patch brightens in the upper half of the face between onset and apex; class 1: in
    the lower half. The onsets are random smooth textures, so only the motion tells them apart."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(2 * per_class) % 2
    onset = 0.2 + 0.6 * F.avg_pool2d(torch.rand(len(labels), 3, size, size, generator=generator), 3, 1, 1)
    apex = onset.clone()
    half = size // 2
    for index, label in enumerate(labels.tolist()):
        low, high = (2, half - 6) if label == 0 else (half + 2, size - 6)
        top = int(torch.randint(low, high, (1,), generator=generator))
        left = int(torch.randint(4, size - 10, (1,), generator=generator))
        apex[index, :, top : top + 4, left : left + 6] += 0.25
    return torch.stack((onset, apex.clamp(0, 1)), dim=1), labels


def test_learns_a_separable_toy_task_with_the_synthetic_recipe() -> None:
    recipe = load_config(SYNTH_RECIPE, TrainRecipe)
    assert recipe.model == "mmnet" and {**recipe.model_options, "image_size": 32} == SMALL
    clips, labels = _toy_clips(per_class=24, seed=0, size=recipe.model_options["image_size"])
    subjects = ["train"] * 32 + ["test"] * 16
    fold = Fold("test", tuple(range(32)), tuple(range(32, 48)))
    result = train_fold(recipe, fold, clips, labels, subjects, ("upper", "lower"))
    accuracy = float((result.scores.argmax(1) == labels[32:].numpy()).mean())
    assert accuracy >= 0.85, accuracy  # chance is 0.5; 0.94-1.0 over recipe seeds 0-3
