"""LBP-TOP + SVM: contract, codes by hand, the uniform mapping, histograms, symmetries, scikit-image, fit, export."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.models import create_model
from engines.models.complexity import count_parameters
from engines.models.lbp_top import LBPTOP, LBPTOPFeatures, circle_offsets, uniform_bins, uniform_pattern_table
from engines.models.linear_svm import NotFittedError
from training.protocol import Fold
from training.recipes import RECIPE_DIR, load_recipe
from training.trainer import train_fold

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "lbp-top.md"


def test_registered_with_a_tim10_grey_clip_contract() -> None:
    model = create_model("lbp_top")
    assert isinstance(model, LBPTOP) and model.closed_form
    spec = model.cfg.clip
    assert (spec.frames, spec.anchors, spec.size, spec.color, spec.interpolation) == (
        10, "onset_apex_offset", 128, "gray", "tim")
    assert model.cfg.input_size == (10, 1, 128, 128) and model.cfg.value_range == (0.0, 1.0)
    assert model.num_features == 5 * 5 * 3 * 59
    assert count_parameters(model) == 4425 * 3 + 3


def _centre_code(patch: list[list[float]], plane: str = "xy") -> int:
    """The code of the centre of a 3x3 patch (the middle frame of a 3-frame clip)."""
    clip = torch.zeros(1, 3, 3, 3)
    clip[0, 1] = torch.tensor(patch)
    features = LBPTOPFeatures(frames=3, size=3, blocks=1, points=8, radius_xy=1, radius_t=1)
    return int(features.codes(clip, plane).item())


def test_codes_of_hand_made_neighbourhoods() -> None:
    # Bit p is the neighbour at 45p degrees counter-clockwise from the right; diagonals are
    # bilinear: e.g. up-right of [[9, 1, 9], [1, 5, 9], [1, 1, 1]] mixes up (1), up-right (9),
    # centre (5), right (9) with weights 0.207, 0.5, 0.086, 0.207: 7.0 >= 5.
    # bits: right 1, up-right 1, up 0, up-left 1 (5.34), left 0, down-left 0 (1.34), down 0,
    # down-right 0 (3.0) -> 1 + 2 + 8 = 11.
    assert _centre_code([[9, 1, 9], [1, 5, 9], [1, 1, 1]]) == 11
    # Top row bright: up-right, up and up-left set -> 2 + 4 + 8 = 14.
    assert _centre_code([[9, 9, 9], [1, 5, 1], [1, 1, 1]]) == 14
    # Ties count as "at least the centre": a flat patch sets every bit.
    assert _centre_code([[5, 5, 5], [5, 5, 5], [5, 5, 5]]) == 255


def test_uniform_mapping_has_59_labels_for_8_points() -> None:
    table = uniform_pattern_table(8)
    assert uniform_bins(8) == 59 and uniform_bins(4) == 15
    assert sorted(set(table.tolist())) == list(range(59))
    # 58 uniform codes (0 or 2 circular transitions) each get their own label; the other 198 share one.
    transitions = [sum(((c >> i) & 1) != ((c >> ((i + 1) % 8)) & 1) for i in range(8)) for c in range(256)]
    uniform = [c for c in range(256) if transitions[c] <= 2]
    assert len(uniform) == 58 and len({table[c].item() for c in uniform}) == 58
    assert {table[c].item() for c in range(256) if transitions[c] > 2} == {58}
    assert table[0] == 0 and table[255] == 57
    assert table[11] == 58 and table[14] == 24  # the hand-made codes above: non-uniform; 3 ones from bit 1


@pytest.mark.filterwarnings("ignore:Applying `local_binary_pattern` to floating-point images")
@pytest.mark.parametrize("radius", [1, 2])
def test_xy_codes_and_labels_equal_scikit_image(radius: int) -> None:
    from skimage.feature import local_binary_pattern

    frame = np.random.default_rng(radius).random((40, 40))  # float64: no tie is left to rounding
    clip = torch.from_numpy(np.stack([np.zeros_like(frame), frame, np.zeros_like(frame)]))[None]
    features = LBPTOPFeatures(frames=3, size=40, blocks=5, points=8, radius_xy=radius, radius_t=1)
    inner = slice(radius, 40 - radius)
    codes = features.codes(clip, "xy")[0, 0].numpy()
    np.testing.assert_array_equal(codes, local_binary_pattern(frame, 8, radius, "default")[inner, inner])
    labels = features.labels(clip, "xy")[0, 0].numpy()
    np.testing.assert_array_equal(labels, local_binary_pattern(frame, 8, radius, "nri_uniform")[inner, inner])


def test_neighbours_are_sampled_where_scikit_image_samples_them() -> None:
    offsets = circle_offsets(8, 1, 1)
    assert offsets[0] == (0.0, 1.0) and offsets[2] == (-1.0, 0.0) and offsets[4] == (0.0, -1.0)
    assert offsets[1] == (-0.70711, 0.70711)
    assert circle_offsets(4, 2, 1) == [(0.0, 1.0), (-2.0, 0.0), (0.0, -1.0), (2.0, 0.0)]  # an ellipse in XT / YT


def test_a_constant_clip_puts_every_voxel_in_the_all_ones_bin() -> None:
    features = LBPTOPFeatures(frames=10, size=32, blocks=5, points=8, radius_xy=1, radius_t=1)
    histograms = features(torch.full((2, 10, 32, 32), 0.4)).view(2, 25, 3, 59)
    expected = torch.zeros(59)
    expected[57] = 1.0  # all 8 neighbours equal the centre: code 255, label P(P-1) + 1
    torch.testing.assert_close(histograms, expected.expand(2, 25, 3, 59))


def test_histograms_sum_to_one_per_block_and_plane() -> None:
    features = LBPTOPFeatures(frames=6, size=23, blocks=4, points=8, radius_xy=1, radius_t=1)
    histograms = features(torch.rand(3, 6, 23, 23)).view(3, 16, 3, 59)
    torch.testing.assert_close(histograms.sum(-1), torch.ones(3, 16, 3))
    assert features.block_voxels.sum().item() == 4 * 21 * 21  # every core voxel in exactly one block


def _rotate_left(code: torch.Tensor, steps: int) -> torch.Tensor:
    return ((code << steps) | (code >> (8 - steps))) & 255


def test_a_translated_frame_has_translated_codes_and_a_rotated_one_rotated_codes() -> None:
    features = LBPTOPFeatures(frames=3, size=24, blocks=1, points=8, radius_xy=1, radius_t=1)
    frame = torch.rand(24, 24, dtype=torch.float64)
    clip = torch.stack([frame, frame, frame])[None]
    codes = features.codes(clip, "xy")[0, 0]
    shifted = torch.roll(frame, shifts=(3, 5), dims=(0, 1))
    shifted_codes = features.codes(torch.stack([shifted] * 3)[None], "xy")[0, 0]
    torch.testing.assert_close(shifted_codes[4:, 6:], codes[1:-3, 1:-5], rtol=0, atol=0)
    # Turning the image 90 degrees counter-clockwise turns every neighbourhood: bit p moves to p + 2.
    turned = torch.rot90(frame, 1, dims=(0, 1))
    turned_codes = features.codes(torch.stack([turned] * 3)[None], "xy")[0, 0]
    torch.testing.assert_close(turned_codes, _rotate_left(torch.rot90(codes, 1, dims=(0, 1)), 2), rtol=0, atol=0)


def test_xt_and_yt_are_the_xy_operator_on_the_clips_other_planes() -> None:
    features = LBPTOPFeatures(frames=12, size=12, blocks=1, points=8, radius_xy=1, radius_t=1)
    clip = torch.rand(2, 12, 12, 12, dtype=torch.float64)  # (N, T, Y, X), a cube
    xy_of = lambda volume: features.codes(volume, "xy")  # noqa: E731
    # XT: rows t, columns x; as XY of the volume with t and y swapped.
    torch.testing.assert_close(features.codes(clip, "xt"), xy_of(clip.transpose(1, 2)).transpose(1, 2), rtol=0, atol=0)
    # YT: rows t, columns y; as XY of the volume (N, X, T, Y).
    yt_as_xy = xy_of(clip.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(features.codes(clip, "yt"), yt_as_xy, rtol=0, atol=0)


def test_a_static_clip_has_no_temporal_texture_in_xt_and_yt() -> None:
    # Every frame equal: the temporal neighbours (up and down in XT / YT) equal the centre, so bits
    # 2 and 6 are always set; a texture moving in x changes XT, while its XY histogram (the same
    # texture, shifted) stays nearly the same.
    features = LBPTOPFeatures(frames=6, size=16, blocks=1, points=8, radius_xy=1, radius_t=1)
    frame = torch.rand(16, 16, dtype=torch.float64)
    static = torch.stack([frame] * 6)[None]
    xt = features.codes(static, "xt")
    assert ((xt & 4) > 0).all() and ((xt & 64) > 0).all()
    moving = torch.stack([torch.roll(frame, t, dims=1) for t in range(6)])[None]
    static_hist, moving_hist = features(static).view(3, 59), features(moving).view(3, 59)
    assert not torch.equal(static_hist[1], moving_hist[1])  # XT sees the motion
    torch.testing.assert_close(static_hist[0], moving_hist[0], atol=0.05, rtol=0)


def test_wrong_clip_shape_is_refused_and_unfitted_model_refuses_to_predict() -> None:
    model = create_model("lbp_top", size=32).eval()
    with pytest.raises(ValueError, match=r"lbp_top expects clips of shape \(N, 10, 1, 32, 32\)"):
        model(torch.rand(1, 10, 32, 32))
    with pytest.raises(NotFittedError, match="not fitted"):
        model(torch.rand(1, 10, 1, 32, 32))


def _toy_clips(subjects: int, per_class: int, seed: int, size: int):
    """Grey 10-frame clips of random texture: static, moving right or moving down (1 px a frame)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(subjects * per_class)
    clips = torch.empty(len(labels), 10, 1, size, size)
    for i, label in enumerate(labels.tolist()):
        frame = torch.rand(size, size, generator=generator)
        for t in range(10):
            shift = {0: (0, 0), 1: (0, t), 2: (t, 0)}[label]
            clips[i, t, 0] = torch.roll(frame, shifts=shift, dims=(0, 1))
    subjects_of = [f"s{i // (3 * per_class) + 1}" for i in range(len(labels))]
    return clips, labels, subjects_of


@pytest.fixture(scope="module")
def toy_fold():
    """One LOSO fold of the synthetic recipe (64 px) on toy clips: (recipe, result, clips, labels, test)."""
    recipe = load_recipe("lbp_top", RECIPE_DIR / "lbp_top_synth.toml")
    x, labels, subjects = _toy_clips(subjects=4, per_class=3, seed=0, size=recipe.model_options["size"])
    test = tuple(i for i, s in enumerate(subjects) if s == "s4")
    fold = Fold("s4", tuple(i for i in range(len(labels)) if i not in test), test)
    return recipe, train_fold(recipe, fold, x, labels, subjects, ("a", "b", "c")), x, labels, test


def test_closed_form_training_beats_chance_on_a_toy_motion_task(toy_fold) -> None:
    _, result, _, labels, test = toy_fold
    assert result.epochs_run == 0 and bool(result.state_dict["svm.fitted"])
    accuracy = (result.scores.argmax(1) == labels[list(test)].numpy()).mean()
    assert accuracy > 2 / 3, accuracy  # chance is 1/3


def test_exports_to_onnx_and_matches_onnx_runtime(toy_fold, tmp_path: Path) -> None:
    from engines.export import export_model
    from engines.runtime import load

    recipe, result, x, _, _ = toy_fold
    model = create_model("lbp_top", label_names=("a", "b", "c"), **recipe.model_options).eval()
    model.load_state_dict(result.state_dict)
    manifest = export_model(model, tmp_path, overwrite=True, model_args=recipe.model_options)
    assert manifest.data["input"]["layout"] == "NTCHW"
    batch = x[:5].numpy()  # exported at batch 2, run at batch 5
    scores = load(tmp_path, "onnxruntime").predict(batch)
    with torch.no_grad():
        expected = model(x[:5]).softmax(1).numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
    assert np.ptp(expected, axis=0).max() > 0.1  # the scores depend on the clip


def test_card_states_the_measured_size() -> None:
    text = CARD.read_text(encoding="utf-8")
    model = create_model("lbp_top")
    assert re.search(rf"\b{model.num_features:,}\b", text) and f"{count_parameters(model):,}" in text
