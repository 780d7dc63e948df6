"""EDMDBN: clip contract, motions, Token Attention, Swin windows, augmentation, export, learning."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engines.clip_spec import ClipSpec
from engines.export import export_model
from engines.models import create_model, list_models
from engines.models.complexity import count_parameters
from engines.models.augment import random_clip_affine
from engines.models.edmdbn import EDMDBN, IMAGENET_STD, TokenAttention
from engines.models.swin import fit_window, shifted_window_mask, window_merge, window_partition
from training.protocol import Fold
from training.recipes import RECIPE_DIR, load_recipe
from training.trainer import train_fold

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "edmdbn.md"
# The CI size: 32x32 frames, embedding 16 (16 -> 32 -> 64), 1 -> 2 -> 4 heads, 4x4 windows
# (token grids 8x8 shifted, 4x4 and 2x2 whole), paper depths (2, 2, 6), nothing random but the augmentation.
SMALL = {"image_size": 32, "embed_dim": 16, "num_heads": 1, "window_size": 4, "drop_path_rate": 0.0}
STD = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)


def small_model(seed: int = 0, **options) -> EDMDBN:
    torch.manual_seed(seed)
    return create_model("edmdbn", **{**SMALL, **options})


def random_clips(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 9, 3, size, size), generator=torch.Generator().manual_seed(seed))


# Small tensors: intra-op threads only contend on the shared 2-core CI machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def paper_size_model() -> EDMDBN:
    """The 224 px model, built once (about a second); never run forward here (that is a benchmark)."""
    return create_model("edmdbn")


def test_registered_with_the_nine_frame_clip_contract(paper_size_model) -> None:
    assert "edmdbn" in list_models()
    cfg = paper_size_model.cfg
    assert cfg.clip == ClipSpec(frames=9, anchors="onset_apex_offset", size=224, color="rgb", interpolation="linear")
    assert cfg.input_size == cfg.clip.sample_shape == (9, 3, 224, 224)
    assert cfg.channel_order == "RGB" and cfg.channels == ("r", "g", "b")
    assert cfg.value_range == (0.0, 1.0) and cfg.mean is None and cfg.std is None
    assert paper_size_model.num_classes == 3 and cfg.label_names == ("negative", "positive", "surprise")
    small = small_model(label_names=("a", "b"))
    assert small.cfg.input_size == small.cfg.clip.sample_shape == (9, 3, 32, 32)
    assert small.cfg.train_datasets == () and small.num_classes == 2


def _expected_parameters(embed_dim: int, depths, heads: int, window: int, side: int, classes: int) -> int:
    """Parameters of the architecture the card describes, counted from its formula."""
    total = 0
    for patch_volume in (4 * 4, 8 * 4 * 4):  # entire: 2-D 4x4 patches; detail: 3-D 8x4x4 patches
        total += 3 * patch_volume * embed_dim + embed_dim + 2 * embed_dim  # conv + its LayerNorm
        dim, h = embed_dim, heads
        for stage, depth in enumerate(depths):
            table = (2 * window - 1) ** 2 * h  # one token step: a (1, w, w) window
            block = 2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + table + (8 * dim * dim + 5 * dim)
            total += depth * block + 3  # + Token Attention: FC 2 -> 1
            if stage < len(depths) - 1:
                total += 2 * 4 * dim + 4 * dim * 2 * dim  # merge: LayerNorm(4C) + Linear(4C -> 2C, no bias)
                dim, h = 2 * dim, 2 * h
        total += 2 * dim  # final LayerNorm
    return total + dim * side * side * classes + classes  # one linear layer on the flattened 4C x side x side map


def test_parameter_count_at_224_matches_the_architecture_and_the_card(paper_size_model) -> None:
    measured = count_parameters(paper_size_model)
    assert measured == _expected_parameters(128, (2, 2, 6), 4, 7, 14, 3)
    assert paper_size_model.head.in_features == 512 * 14 * 14
    card = re.search(r"Trainable parameters \(measured\): ([\d,]+)", CARD.read_text(encoding="utf-8"))
    assert card is not None, f"{CARD} does not state the measured parameter count"
    assert int(card.group(1).replace(",", "")) == measured


def test_shapes_through_both_branches() -> None:
    model = small_model().eval()
    x = random_clips(2)
    entire, detail = model.motions(x)
    assert entire.shape == (2, 3, 32, 32) and detail.shape == (2, 8, 3, 32, 32)
    with torch.no_grad():
        entire_tokens = model.entire_branch(entire)
        detail_tokens = model.detail_branch(detail.transpose(1, 2))
        features = model.forward_features(x)
        assert entire_tokens.shape == detail_tokens.shape == (2, 1, 2, 2, 64)  # one token step, 32/16 = 2
        torch.testing.assert_close(features, (entire_tokens + detail_tokens)[:, 0].permute(0, 3, 1, 2))
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features) == (2, 64 * 2 * 2)
        assert model(x).shape == (2, 3)
    # A shorter temporal patch keeps several token steps; the fused map averages them over time.
    temporal = small_model(temporal_patch=2).eval()
    with torch.no_grad():
        steps = temporal.detail_branch(temporal.motions(x)[1].transpose(1, 2))
        assert steps.shape == (2, 4, 2, 2, 64)
        fused = temporal.forward_features(x)
        expected = temporal.entire_branch(temporal.motions(x)[0])[:, 0] + steps.mean(dim=1)
        torch.testing.assert_close(fused, expected.permute(0, 3, 1, 2))


def test_entire_and_detail_motions_are_the_papers_differences() -> None:
    model = small_model().eval()
    x = random_clips(2)
    entire, detail = model.motions(x)
    torch.testing.assert_close(entire, (x[:, 4] - x[:, 0]) / STD)  # apex (index 4) - onset
    for k in range(8):
        torch.testing.assert_close(detail[:, k], (x[:, k + 1] - x[:, k]) / STD)
    # Only the apex frame moves: both motions see it; only a post-apex frame moves: entire does not.
    still = x[:, :1].expand(-1, 9, -1, -1, -1).clone()
    apex_only, late_only = still.clone(), still.clone()
    apex_only[:, 4] += 0.1
    late_only[:, 6] += 0.1
    assert model.motions(apex_only)[0].abs().min() > 0 and model.motions(late_only)[0].abs().max() == 0
    assert model.motions(late_only)[1][:, 5:7].abs().min() > 0


def test_a_still_clip_is_classified_without_regard_to_the_face() -> None:
    # Frames that never change have zero motion, so two different still faces give the same logits,
    # and a clip that moves gives others.
    model = small_model().eval()
    faces = random_clips(2, seed=1)[:, :1].expand(-1, 9, -1, -1, -1)
    with torch.no_grad():
        still = model(faces)
        moving = model(random_clips(1, seed=2))
    torch.testing.assert_close(still[0], still[1], rtol=0, atol=1e-6)
    assert (moving[0] - still[0]).abs().max() > 1e-4


def test_token_attention_on_a_hand_made_map() -> None:
    attention = TokenAttention()
    with torch.no_grad():
        attention.fc.weight.copy_(torch.tensor([[2.0, -1.0]]))  # 2 * max - 1 * mean + 0.5
        attention.fc.bias.fill_(0.5)
    # Four tokens (a 2x2 grid, one step) of two channels.
    tokens = torch.tensor([[1.0, 3.0], [0.0, 0.0], [-2.0, 2.0], [4.0, -4.0]]).reshape(1, 1, 2, 2, 2)
    logits = torch.tensor([2 * 3 - 2 + 0.5, 0.5, 2 * 2 - 0 + 0.5, 2 * 4 - 0 + 0.5]).reshape(1, 1, 2, 2)
    out, current = attention(tokens)
    torch.testing.assert_close(current, torch.sigmoid(logits))
    torch.testing.assert_close(out, tokens * torch.sigmoid(logits)[..., None])
    # The previous stage's map (4x4) is max-pooled 2x2 and multiplied in: accumulated attention.
    previous = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) / 16
    pooled = torch.tensor([[5.0, 7.0], [13.0, 15.0]]).reshape(1, 1, 2, 2) / 16
    out, accumulated = attention(tokens, previous)
    torch.testing.assert_close(accumulated, torch.sigmoid(logits) * pooled)
    torch.testing.assert_close(out, tokens * accumulated[..., None])


def test_window_partition_round_trip_and_shift_mask() -> None:
    grid, window = (2, 8, 8), (2, 4, 4)
    x = torch.randn(3, *grid, 5)
    windows = window_partition(x, grid, window)
    assert windows.shape == (3 * 4, 32, 5)
    torch.testing.assert_close(windows[0].reshape(2, 4, 4, 5), x[0, :, :4, :4])  # first window, raster order
    assert torch.equal(window_merge(windows, grid, window), x)
    # Axes no longer than the window get one window and no shift; longer axes must divide.
    assert fit_window((1, 8, 8), (8, 4, 4), (4, 2, 2)) == ((1, 4, 4), (0, 2, 2))
    with pytest.raises(ValueError, match="not a multiple"):
        fit_window((1, 10, 10), (1, 4, 4), (0, 2, 2))
    mask = shifted_window_mask((1, 8, 8), (1, 4, 4), (0, 2, 2))
    assert mask.shape == (4, 16, 16)
    assert mask[0].abs().max() == 0  # the top-left window holds one region of the shifted map
    assert (mask[3] == -100).any() and (torch.diagonal(mask[3]) == 0).all()  # wrapped corner: four regions
    assert shifted_window_mask((1, 8, 8), (1, 4, 4), (0, 0, 0)) is None


def test_augmentation_moves_all_nine_frames_alike() -> None:
    torch.manual_seed(0)
    face = torch.rand(4, 1, 3, 32, 32)
    offsets = 0.01 * torch.arange(9, dtype=torch.float32).reshape(1, 9, 1, 1, 1)
    clip = face + offsets
    moved = random_clip_affine(clip, flip_prob=0.5, max_degrees=4.0, max_shift=4 / 32)
    assert not torch.allclose(moved, clip, atol=1e-3)
    # One transform for the whole clip: frame k - frame 0 is still k * 0.01 everywhere.
    torch.testing.assert_close(moved - moved[:, :1], (offsets - offsets[:, :1]).expand_as(moved), rtol=0, atol=1e-5)
    # A certain flip alone is an exact mirror; all amounts 0 leave the clip untouched.
    torch.testing.assert_close(random_clip_affine(clip, 1.0, 0.0, 0.0), clip.flip(-1), rtol=0, atol=1e-6)
    assert random_clip_affine(clip, 0.0, 0.0, 0.0) is clip
    # Rotation alone keeps the centre pixel's neighbourhood but not the corners.
    rotated = random_clip_affine(clip, 0.0, 4.0, 0.0)
    assert (rotated - clip)[..., 15:17, 15:17].abs().max() < (rotated - clip)[..., :4, :4].abs().max()


def test_augmentation_runs_in_training_only() -> None:
    x = random_clips(2)
    flipping = small_model(flip_prob=1.0, max_rotation=0.0, crop_shift=0.0)
    plain = small_model(flip_prob=0.0, max_rotation=0.0, crop_shift=0.0)
    plain.load_state_dict(flipping.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(flipping.eval()(x), plain.eval()(x), rtol=0, atol=0)
        trained_view = flipping.train()(x)
        torch.testing.assert_close(trained_view, plain.eval()(x.flip(-1)), rtol=0, atol=1e-5)
        assert (trained_view - plain(x)).abs().max() > 1e-4


def test_bad_options_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        create_model("edmdbn", image_size=40)
    with pytest.raises(ValueError, match="temporal_patch 3"):
        create_model("edmdbn", **SMALL, temporal_patch=3)
    with pytest.raises(ValueError, match="cannot be split into 3 heads"):
        create_model("edmdbn", **{**SMALL, "num_heads": 3})
    with pytest.raises(ValueError, match=r"takes \(N, 9, 3, 32, 32\) clips"):
        small_model().eval()(torch.rand(1, 8, 3, 32, 32))


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    model = small_model(seed=3).eval()
    with torch.no_grad():
        model.head.weight.mul_(200)  # spread the scores, so probabilities far from uniform are compared
    export_model(model, tmp_path, model_args=SMALL)  # refuses itself beyond 1e-4
    x = random_clips(3, seed=5)
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1).numpy()
    assert expected.max() > 0.9
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


def _toy_clips(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Still random faces; a patch brightens to the apex and fades: upper face (class 0) or lower (1)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    clips = (0.3 + 0.4 * torch.rand(n, 1, 3, 32, 32, generator=generator)).repeat(1, 9, 1, 1, 1)
    profile = torch.tensor([0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0]).reshape(9, 1, 1, 1)
    for i in range(n):
        top = 4 if labels[i] == 0 else 20
        clips[i, :, :, top : top + 8, 8:24] += 0.25 * profile
    clips += 0.01 * torch.randn(clips.shape, generator=generator)
    return clips.clamp(0, 1), labels


def test_synthetic_recipe_learns_a_separable_toy_task() -> None:
    recipe = load_recipe("edmdbn", RECIPE_DIR / "edmdbn_synth.toml")
    assert recipe.model_options["image_size"] == 32
    x, y = _toy_clips(48)
    subjects = [f"s{i // 8}" for i in range(48)]  # 6 subjects, 4 clips of each class
    held_out = tuple(i for i, s in enumerate(subjects) if s == "s0")
    fold = Fold("s0", tuple(i for i in range(48) if i not in held_out), held_out)
    # The recipe's model, optimiser and rate; 5 of its 15 epochs keep the test at a few seconds.
    result = train_fold(recipe.model_copy(update={"epochs": 5}), fold, x, y, subjects, ("upper", "lower"))
    truth = y[list(held_out)].numpy()
    assert (result.scores.argmax(1) == truth).mean() >= 0.875  # chance: 0.5
    assert result.scores[np.arange(len(truth)), truth].mean() > 0.75
    assert result.epochs_run == 5
