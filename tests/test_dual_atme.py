"""Dual-ATME: stage shapes, the fixed-box puzzle, attention placement, the joint loss, flip."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from engines.models import create_model, list_models
from engines.models.blocks import CBAM
from engines.models.dual_atme import PUZZLE_BOXES, DualATME, FacePuzzle, focal_loss

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "dual-atme.md"


def _batch(n: int = 2) -> torch.Tensor:
    return 255 * torch.rand((n, 3, 28, 28), generator=torch.Generator().manual_seed(0))


def test_registered_with_the_composite_contract() -> None:
    assert "dual_atme" in list_models()
    model = create_model("dual_atme")
    assert isinstance(model, DualATME)
    assert model.cfg.input_size == (3, 28, 28)
    assert model.cfg.channel_order == "BGR" and model.cfg.channels == ("optical_strain", "v", "u")
    assert model.cfg.value_range == (0.0, 255.0) and model.cfg.mean is None and model.cfg.std is None
    assert model.num_classes == 3


def test_shapes_at_every_stage() -> None:
    model = create_model("dual_atme").eval()
    x = _batch()
    normalised = x / 127.5 - 1
    with torch.no_grad():
        first = model.face_branch[0](normalised)
        assert first.shape == (2, 24, 28, 28)
        assert model.face_branch[1](first).shape == (2, 24, 14, 14)
        assert model.face_branch(normalised).shape == (2, 48, 7, 7)
        assert model.puzzle(normalised).shape == (2, 3, 28, 28)
        assert model.puzzle_branch(model.puzzle(normalised)).shape == (2, 48, 7, 7)
        face, puzzle = model.branches(x)
        assert face.shape == puzzle.shape == (2, 48, 7, 7)
        features = model.forward_features(x)
        assert features.shape == (2, 96, 7, 7)
        assert torch.equal(features[:, :48], face) and torch.equal(features[:, 48:], puzzle)
        assert model.fc1.in_features == 96 * 7 * 7
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        assert model(x).shape == (2, 3)


def test_puzzle_puts_each_box_in_its_tile() -> None:
    # A face whose eyebrow and mouth boxes hold distinct constants; everything else is -1.
    face = torch.full((1, 3, 28, 28), -1.0)
    face[..., 0:7, 0:14] = 10.0  # image-left eyebrow
    face[..., 0:7, 14:28] = 20.0  # image-right eyebrow
    face[..., 15:25, 4:24] = 30.0  # mouth
    face[:, 1] += 1  # planes stay apart
    puzzle = FacePuzzle()(face)
    assert puzzle.shape == (1, 3, 28, 28)
    tiles = {(0, 14, 0, 14): 10.0, (0, 14, 14, 28): 20.0, (14, 28, 0, 28): 30.0}
    for plane, offset in ((0, 0.0), (1, 1.0), (2, 0.0)):
        for (top, bottom, left, right), value in tiles.items():
            tile = puzzle[0, plane, top:bottom, left:right]
            # Bilinear weights summing to 1 in float: equal to the constant up to rounding.
            torch.testing.assert_close(tile, torch.full_like(tile, value + offset), rtol=0, atol=1e-5)


def test_puzzle_resizes_the_box_content_not_its_surroundings() -> None:
    # A horizontal ramp inside the mouth box only: the mouth tile is that ramp stretched 20 -> 28 wide.
    face = torch.zeros((1, 1, 28, 28))
    ramp = torch.arange(1, 21, dtype=torch.float32)  # the surroundings (0) must not leak in
    face[..., 15:25, 4:24] = ramp
    tile = FacePuzzle()(face)[0, 0, 14:28]
    expected = F.interpolate(ramp.expand(1, 1, 10, 20), size=(14, 28), mode="bilinear", align_corners=False)[0, 0]
    assert torch.equal(tile, expected)
    assert tile.min().item() == 1 and tile.max().item() == pytest.approx(20, abs=1e-5)
    assert set(PUZZLE_BOXES) == {"image_left_eyebrow", "image_right_eyebrow", "mouth"}


def test_puzzle_source_mask_is_exactly_what_the_puzzle_reads() -> None:
    puzzle = FacePuzzle()
    mask = puzzle.source_mask()
    assert mask.shape == (28, 28) and int(mask.sum()) == 7 * 28 + 10 * 20  # both brows' rows, the mouth box
    face = torch.rand((1, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    outside = torch.where(mask, face, torch.rand((1, 1, 28, 28)))
    assert torch.equal(puzzle(outside), puzzle(face))
    for row, col in mask.nonzero()[:: 37].tolist():
        moved = face.clone()
        moved[..., row, col] += 1.0
        assert not torch.equal(puzzle(moved), puzzle(face)), (row, col)


def test_cbam_only_on_the_full_face_branch() -> None:
    model = create_model("dual_atme")
    attention = [name for name, module in model.named_modules() if isinstance(module, CBAM)]
    assert attention == ["face_attention"]
    assert not any(isinstance(m, CBAM) for m in model.puzzle_branch.modules())
    # The attention really acts on the face features and nothing else: zeroing its spatial
    # conv halves the face output (sigmoid(0) = 0.5) and leaves the puzzle output unchanged.
    model.eval()
    x = _batch()
    with torch.no_grad():
        face, puzzle = model.branches(x)
        model.face_attention.spatial.conv.weight.zero_()
        face_half, puzzle_same = model.branches(x)
        channel = model.face_attention.channel(model.face_branch(x / 127.5 - 1))
    assert torch.equal(puzzle, puzzle_same)
    torch.testing.assert_close(face_half, 0.5 * model.face_branch(x / 127.5 - 1) * channel)
    assert not torch.allclose(face, face_half)


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 1.0, 4.0]])
    target = torch.tensor([0, 2, 1])
    weight = torch.tensor([0.5, 2.0, 1.0])
    torch.testing.assert_close(focal_loss(logits, target, 0.0), F.cross_entropy(logits, target))
    torch.testing.assert_close(focal_loss(logits, target, 0.0, weight), F.cross_entropy(logits, target, weight=weight))


def test_focal_matches_the_formula_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(1.0), math.log(4.0)]])
    target = torch.tensor([1, 0])
    # p_y = 3/4 for the first sample, 1/5 for the second; gamma = 2.
    expected = ((1 / 4) ** 2 * -math.log(3 / 4) + (4 / 5) ** 2 * -math.log(1 / 5)) / 2
    assert focal_loss(logits, target, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_training_loss_is_focal_plus_weighted_one_minus_cosine() -> None:
    model = create_model("dual_atme").train()
    x = _batch(3)
    target = torch.tensor([0, 1, 2])
    torch.manual_seed(1)
    logits = model(x)
    face, puzzle = (e.detach() for e in model._last_embeddings)
    loss = model.training_loss(logits, target, None)
    # By hand: cosine = a.b / (|a| |b|) per sample, focal with gamma 2.
    cosine = (face * puzzle).sum(1) / (face.norm(dim=1) * puzzle.norm(dim=1))
    p = torch.softmax(logits.detach(), 1)[torch.arange(3), target]
    focal = (-((1 - p) ** 2) * torch.log(p)).mean()
    torch.testing.assert_close(loss.detach(), focal + 0.01 * (1 - cosine).mean())
    assert 0 < cosine.min() and cosine.max() < 1  # a real, non-trivial similarity term
    loss.backward()
    assert model.face_attention.spatial.conv.weight.grad.abs().sum() > 0
    # The stashed embeddings are used once: a second call without a forward is refused.
    with pytest.raises(RuntimeError, match="forward pass in training mode"):
        model.training_loss(logits, target, None)


def test_eval_forward_keeps_nothing_and_is_deterministic() -> None:
    model = create_model("dual_atme", flip_prob=1.0).eval()
    x = _batch()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert model._last_embeddings is None


def test_training_flip_mirrors_the_image_and_negates_u() -> None:
    x = _batch()
    mirrored = x.flip(-1)
    mirrored[:, 2] = 255 - mirrored[:, 2]  # plane 2 of the BGR composite is u
    flipping = create_model("dual_atme", flip_prob=1.0).train()
    plain = create_model("dual_atme", flip_prob=0.0).train()
    plain.load_state_dict(flipping.state_dict())
    torch.testing.assert_close(flipping._normalise(x), plain._normalise(mirrored))
    torch.testing.assert_close(flipping._normalise(mirrored), plain._normalise(x))


def test_parameter_count_stated_in_the_card() -> None:
    model = create_model("dual_atme")
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    match = re.search(r"Trainable parameters \(measured\): ([\d,]+)", CARD.read_text(encoding="utf-8"))
    assert match, "the model card must state the parameter count"
    assert int(match.group(1).replace(",", "")) == count


def test_puzzle_refuses_an_image_of_another_size() -> None:
    with pytest.raises(ValueError, match=r"fixed for \(28, 28\) images, got \(32, 32\)"):
        FacePuzzle()(torch.zeros(1, 3, 32, 32))


def test_exports_to_onnx_with_the_same_scores(tmp_path: Path) -> None:
    # The project's exporter traces the model: the puzzle must use constant bounds, and the
    # graph must keep a dynamic batch axis (exported at batch 2, run here at batch 3).
    import onnxruntime

    from engines.export import DEFAULT_OPSET, INPUT_NAME, export_onnx

    model = create_model("dual_atme").eval()
    path = export_onnx(model, tmp_path / "dual_atme.onnx", DEFAULT_OPSET, {})
    x = _batch(3) * 0.5
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1).numpy()
    assert scores.shape == (3, 3)
    torch.testing.assert_close(torch.from_numpy(scores), torch.from_numpy(expected), rtol=1e-4, atol=1e-5)
