"""What both HARS models (a backbone on the face plus a copy on Dual-ATME's puzzle) must do: a
puzzle branch that sees only its boxes, and learning from motion that only those boxes contain."""

from __future__ import annotations

import pytest
import torch

from engines.models import create_model


@pytest.mark.parametrize(("name", "face_maps"), [("hars_ststnet", 16), ("hars_off_apexnet", 32)])
def test_the_puzzle_branch_sees_only_the_eyebrow_and_mouth_boxes(name: str, face_maps: int) -> None:
    """``forward_features`` returns the face branch's maps, then the puzzle branch's."""
    model = create_model(name).eval()
    inside = model.puzzle.source_mask()
    assert not inside[10, 0] and inside[20, 10]  # a cheek pixel and a mouth pixel
    x = torch.randint(0, 256, (1, 3, 28, 28), generator=torch.Generator().manual_seed(1)).float()
    cheek, mouth = x.clone(), x.clone()
    cheek[..., 10, 0] = 255.0 - cheek[..., 10, 0]
    mouth[..., 20, 10] = 255.0 - mouth[..., 20, 10]
    with torch.no_grad():
        base = model.forward_features(x)
        moved_cheek = model.forward_features(cheek)
        moved_mouth = model.forward_features(mouth)
    assert torch.equal(moved_cheek[:, face_maps:], base[:, face_maps:])  # the puzzle never saw the cheek
    assert not torch.equal(moved_cheek[:, :face_maps], base[:, :face_maps])  # the face branch did
    assert not torch.equal(moved_mouth[:, face_maps:], base[:, face_maps:])


@pytest.mark.parametrize(("name", "lr", "steps"), [("hars_ststnet", 3e-3, 60), ("hars_off_apexnet", 1e-4, 40)])
def test_learns_a_signal_only_the_mouth_box_holds(name: str, lr: float, steps: int) -> None:
    """Three classes that differ only inside the mouth box: a few Adam steps separate them."""
    torch.manual_seed(0)
    model = create_model(name, drop_rate=0.0)
    x = 128 + 10 * torch.randn(90, 3, 28, 28)
    y = torch.arange(90) % 3
    x[:, :, 15:25, 4:24] += 40.0 * (y.float() - 1.0)[:, None, None, None]
    assert model.puzzle.source_mask()[15:25, 4:24].all()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy > 0.9
