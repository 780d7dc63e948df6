"""Bi-WOOF + SVM: contract, the release's orientation histograms and weights, composite decoding, fit, export.

The shared SVM layer has its own tests (tests/test_linear_svm.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.checkpoints import load_weights, write_state_dict
from engines.errors import MerError
from engines.models import create_model
from engines.models.biwoof import BiWOOF, BiWOOFFeatures, decode_composite
from engines.models.blocks import block_assignment
from engines.models.complexity import count_parameters
from engines.models.linear_svm import NotFittedError
from engines.models.ststnet import STSTNET_CFG
from engines.motion.representation import flow_image
from training.protocol import Fold
from training.recipes import load_recipe
from training.trainer import train_fold

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "biwoof.md"
CONTRACT = ("input_size", "channel_order", "channels", "value_range", "mean", "std", "motion", "clip")


def test_registered_with_ststnets_input_contract() -> None:
    model = create_model("biwoof")
    assert isinstance(model, BiWOOF) and model.closed_form
    for field in CONTRACT:
        assert getattr(model.cfg, field) == getattr(STSTNET_CFG, field), field
    assert model.num_features == 5 * 5 * 8 == model.svm.linear.in_features
    assert count_parameters(model) == 200 * 3 + 3


def test_blocks_split_28_pixels_as_evenly_as_possible() -> None:
    assignment = block_assignment(28, 5)
    assert assignment.sum(0).tolist() == [6, 6, 5, 6, 5] and (assignment.sum(1) == 1).all()
    with pytest.raises(ValueError, match="blocks must be"):
        block_assignment(28, 29)


def _constant_field(angle: float, magnitude: float, strain: float, size: int = 28):
    u = torch.full((1, size, size), magnitude * math.cos(angle))
    v = torch.full((1, size, size), magnitude * math.sin(angle))
    return u, v, torch.full((1, size, size), strain)


def _centre(k: int, bins: int = 8) -> float:
    """The middle of bin k: bins span [-pi + 2 pi k / bins, -pi + 2 pi (k + 1) / bins)."""
    return -math.pi + 2 * math.pi * (k + 0.5) / bins


@pytest.mark.parametrize("k", range(8))
@pytest.mark.parametrize("off_centre", [0.0, 0.35, -0.35])  # within half a bin (pi / 8 = 0.39)
def test_a_constant_flow_fills_its_bin_in_every_block_weighted_by_the_blocks_strain(k: int, off_centre: float) -> None:
    features = BiWOOFFeatures(size=28, blocks=5, bins=8)
    vector = features(*_constant_field(_centre(k) + off_centre, 0.5, 0.3)).view(5, 5, 8)
    # Each block's histogram is 1 in bin k (normalised by the block's magnitude), times the
    # block's strain sum 0.3 x pixels; then the whole vector is divided by its L2 norm.
    pixels = block_assignment(28, 5).sum(0)
    strain_sums = 0.3 * pixels[:, None] * pixels[None, :]
    expected = torch.zeros(5, 5, 8)
    expected[..., k] = strain_sums / strain_sums.norm()
    torch.testing.assert_close(vector, expected)


def test_bin_edges_are_the_axes_and_the_diagonals_as_in_the_release() -> None:
    features = BiWOOFFeatures(size=28, blocks=1, bins=8)
    # (u, v) -> bin: just either side of each axis, and either side of the +u+v diagonal.
    cases = [((1.0, 0.1), 4), ((1.0, -0.1), 3), ((0.1, 1.0), 5), ((-0.1, 1.0), 6), ((-1.0, 0.1), 7),
             ((-1.0, -0.1), 0), ((-0.1, -1.0), 1), ((0.1, -1.0), 2), ((1.0, 0.9), 4), ((0.9, 1.0), 5)]
    for (u, v), expected_bin in cases:
        assert features.orientation_bins(torch.tensor([[[u]]]), torch.tensor([[[v]]])).item() == expected_bin, (u, v)
    # A flow exactly along +u or -u ties between two bins and goes to the first, the same every time.
    assert features.orientation_bins(torch.tensor([[[2.0, -2.0]]]), torch.zeros(1, 1, 2)).tolist() == [[[3, 0]]]


def test_local_weight_is_the_magnitude_share_of_each_bin_within_its_block() -> None:
    features = BiWOOFFeatures(size=28, blocks=1, bins=8)
    u, v, strain = _constant_field(_centre(4), 3.0, 1.0)  # top half: bin 4, magnitude 3
    bottom_u, bottom_v, _ = _constant_field(_centre(5), 1.0, 1.0)  # bottom half: bin 5, magnitude 1
    u[:, 14:], v[:, 14:] = bottom_u[:, 14:], bottom_v[:, 14:]
    vector = features(u, v, strain)[0]
    expected = torch.zeros(8)
    expected[4], expected[5] = 0.75, 0.25
    torch.testing.assert_close(vector, expected / expected.norm())


def test_global_weight_is_each_blocks_strain_sum() -> None:
    features = BiWOOFFeatures(size=28, blocks=2, bins=4)
    u, v, strain = _constant_field(0.3, 1.0, 0.0)  # bin 2 of 4 ([0, pi / 2))
    strain[:, :14, :14] = 0.5  # top-left block: sum 98
    strain[:, 14:, 14:] = torch.linspace(0, 1, 14)  # bottom-right block: same sum, varying
    strain[:, 14:, :14] = 0.25  # bottom-left block: half of it
    vector = features(u, v, strain).view(2, 2, 4)
    expected = torch.zeros(2, 2, 4)
    expected[0, 0, 2], expected[1, 1, 2], expected[1, 0, 2] = 1.0, 1.0, 0.5
    torch.testing.assert_close(vector, expected / expected.norm())  # no strain (top right), no weight


def test_features_ignore_the_flows_and_the_strains_scale_and_motionless_input_gives_zeros() -> None:
    # The composite loses both scales; both normalisations make the descriptor blind to them.
    features = BiWOOFFeatures(size=28, blocks=5, bins=8)
    generator = torch.Generator().manual_seed(0)
    u, v, strain = (torch.randn((2, 28, 28), generator=generator) for _ in range(3))
    strain = strain.abs()
    torch.testing.assert_close(features(3 * u, 3 * v, 0.1 * strain), features(u, v, strain))
    still = features(torch.zeros(1, 28, 28), torch.zeros(1, 28, 28), strain[:1])
    assert torch.equal(still, torch.zeros(1, 200))


def test_decoding_the_composite_centres_the_static_face_at_zero_flow() -> None:
    # A 28x28 flow that is zero on most of the face: the composite's min-max normalisation moves
    # zero to some grey level per plane; the median puts it back at exactly 0.
    flow = torch.zeros(1, 2, 28, 28)
    flow[0, 0, 4:10, 4:10] = 2.0  # a patch moving right
    flow[0, 1, 18:24, 10:20] = -1.5  # another moving up
    composite = flow_image(flow, size=28, channel_order="bgr")
    assert composite[0, 2, 0, 0] == 0 and composite[0, 1, 0, 0] == 255  # zero flow is u's min and v's max here
    u, v, strain = decode_composite(composite)
    static = (flow[:, 0] == 0) & (flow[:, 1] == 0)
    assert (u[static] == 0).all() and (v[static] == 0).all()
    assert (u[0, 4:10, 4:10] == 1).all()  # +2 px is u's whole span: 255 / 255
    assert (v[0, 18:24, 10:20] == -1).all()
    assert torch.equal(strain, composite[:, 0] / 255)


def test_an_unfitted_model_refuses_to_predict_and_to_export(tmp_path: Path) -> None:
    from engines.export import DEFAULT_OPSET, export_onnx

    model = create_model("biwoof").eval()
    with pytest.raises(NotFittedError, match="not fitted"):
        model(torch.zeros(1, 3, 28, 28))
    assert isinstance(NotFittedError("x"), MerError)  # the command line reports it as one line
    with pytest.raises(MerError, match="not fitted"):
        export_onnx(model, tmp_path / "unfitted.onnx", DEFAULT_OPSET, {})


def _toy_composites(subjects: int, per_class: int, seed: int):
    """Composites of 3 classes told apart by the direction of a moving patch (+u, -u, +v), with noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(subjects * per_class)
    flow = 0.05 * torch.randn((len(labels), 2, 28, 28), generator=generator)
    direction = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])[labels]
    flow[:, :, 14:22, 6:22] += direction.view(-1, 2, 1, 1)
    subjects_of = [f"s{i // (3 * per_class) + 1}" for i in range(len(labels))]
    return flow_image(flow, size=28, channel_order="bgr"), labels, subjects_of


@pytest.fixture(scope="module")
def toy_fold():
    """One LOSO fold of the real recipe on toy composites: (result, composites, labels, test indices)."""
    recipe = load_recipe("biwoof")
    x, labels, subjects = _toy_composites(subjects=4, per_class=4, seed=0)
    test = tuple(i for i, s in enumerate(subjects) if s == "s4")
    fold = Fold("s4", tuple(i for i in range(len(labels)) if i not in test), test)
    return train_fold(recipe, fold, x, labels, subjects, ("a", "b", "c")), x, labels, test


def test_closed_form_training_beats_chance_on_a_separable_toy_task(toy_fold, tmp_path: Path) -> None:
    result, x, labels, test = toy_fold
    assert result.epochs_run == 0 and bool(result.state_dict["svm.fitted"])
    accuracy = (result.scores.argmax(1) == labels[list(test)].numpy()).mean()
    assert accuracy > 2 / 3, accuracy  # chance is 1/3
    # The fitted SVM travels in the checkpoint.
    model = create_model("biwoof", label_names=("a", "b", "c")).eval()
    reloaded = load_weights(model, write_state_dict(result.state_dict, tmp_path / "biwoof.pth"))
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(x[list(test)]).softmax(1).numpy(), result.scores, atol=1e-6)


def test_exports_to_onnx_and_matches_onnx_runtime(toy_fold, tmp_path: Path) -> None:
    from engines.export import export_model
    from engines.runtime import load

    result, x, _, _ = toy_fold
    model = create_model("biwoof", label_names=("a", "b", "c")).eval()
    model.load_state_dict(result.state_dict)
    export_model(model, tmp_path, overwrite=True)
    batch = x[:7].numpy()  # exported at batch 2, run at batch 7
    scores = load(tmp_path, "onnxruntime").predict(batch)
    with torch.no_grad():
        expected = model(x[:7]).softmax(1).numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
    assert np.ptp(expected, axis=0).max() > 0.1  # the scores depend on the sample


def test_card_states_the_measured_size() -> None:
    text = CARD.read_text(encoding="utf-8")
    model = create_model("biwoof")
    assert re.search(rf"\b{model.num_features}\b", text) and f"{count_parameters(model):,}" in text
