"""Weights files are read without ever unpickling arbitrary objects.

Legacy-format files are made here with ``torch.save(..., _use_new_zipfile_serialization=False)``,
the format of torch <= 1.5 that the original STSTNet release used, so the legacy path is
tested without the licensed data (the golden test reads the release's own 68 files).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from engines.checkpoints import load_weights, read_state_dict, subject_weights_path, write_state_dict
from engines.errors import InputError
from engines.models import create_model


def _trained_looking_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("ststnet")
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.1)
    return model.eval()


def _save_legacy(obj: object, path: Path) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


class _RunsAShellCommand:
    """Pickles to ``os.system(command)``: what a malicious .pth file does on a plain torch.load."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def test_legacy_format_reads_back_exactly_and_loads_strictly(tmp_path: Path) -> None:
    model = _trained_looking_model()
    path = _save_legacy(model.state_dict(), tmp_path / "sub01.pth")
    assert not zipfile.is_zipfile(path)
    state = read_state_dict(path)
    assert list(state) == list(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    fresh = load_weights(create_model("ststnet"), path).eval()
    x = torch.rand(2, 3, 28, 28) * 255
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_our_format_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    model = _trained_looking_model(1)
    path = write_state_dict(model.state_dict(), tmp_path / "weights" / "s01.pth")
    assert zipfile.is_zipfile(path)
    assert [p.name for p in path.parent.iterdir()] == ["s01.pth"]
    state = read_state_dict(path)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="names -> tensors"):
        write_state_dict({"fc.weight": [1.0]}, tmp_path / "bad.pth")  # type: ignore[dict-item]


@pytest.mark.parametrize("container", ["raw pickle", "torch zip", "torch legacy"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "it_ran"
    payload = _RunsAShellCommand(f"touch {marker}")
    path = tmp_path / "evil.pth"
    if container == "raw pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    elif container == "torch zip":
        torch.save({"fc.weight": payload}, path)
    else:
        _save_legacy({"fc.weight": payload}, path)
    with pytest.raises(InputError) as caught:
        read_state_dict(path)
    assert not marker.exists()
    assert caught.value.path == path
    assert "refused" in str(caught.value) and "system" in str(caught.value)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.6, 0.99])
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_truncated_file_is_a_clear_error(tmp_path: Path, fraction: float, legacy: bool) -> None:
    whole = tmp_path / "whole.pth"
    state = _trained_looking_model().state_dict()
    _save_legacy(state, whole) if legacy else write_state_dict(state, whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputError, match="damaged or truncated") as caught:
        read_state_dict(cut)
    assert caught.value.path == cut and str(cut) in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"state_dict": {"fc.weight": torch.zeros(3, 400)}}, "wrapped training checkpoint"),
        ([torch.zeros(1)], "expected a mapping"),
        ({1: torch.zeros(1)}, "expected parameter names"),
        ({"fc.weight": torch.zeros(1), "epoch": 7}, "'epoch' is a int, not a tensor"),
        ({}, "no tensors"),
    ],
    ids=["wrapped", "list", "int-key", "non-tensor", "empty"],
)
def test_anything_but_a_flat_name_to_tensor_mapping_is_refused(tmp_path: Path, content: object, message: str) -> None:
    path = _save_legacy(content, tmp_path / "odd.pth")
    with pytest.raises(InputError, match=message) as caught:
        read_state_dict(path)
    assert caught.value.path == path


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as caught:
        read_state_dict(tmp_path / "nope.pth")
    assert caught.value.path == tmp_path / "nope.pth"


def test_weights_for_another_head_are_refused_with_the_mismatch(tmp_path: Path) -> None:
    path = write_state_dict(_trained_looking_model().state_dict(), tmp_path / "three.pth")
    four_classes = create_model("ststnet", label_names=("a", "b", "c", "d"))
    with pytest.raises(InputError, match=r"wrong shape fc\.weight \(3, 400\) \(model has \(4, 400\)\)"):
        load_weights(four_classes, path)
    partial = {k: v for k, v in _trained_looking_model().state_dict().items() if not k.startswith("bn3")}
    partial["extra.weight"] = torch.zeros(1)
    path = write_state_dict(partial, tmp_path / "partial.pth")
    with pytest.raises(InputError, match=r"missing bn3\.weight.*and 1 more; unexpected extra\.weight"):
        load_weights(create_model("ststnet"), path)


def test_subject_weights_path(tmp_path: Path) -> None:
    write_state_dict(_trained_looking_model().state_dict(), tmp_path / "sub01.pth")
    assert subject_weights_path(tmp_path, "sub01") == tmp_path / "sub01.pth"
    with pytest.raises(InputError, match="no weights for subject 's02'"):
        subject_weights_path(tmp_path, "s02")
