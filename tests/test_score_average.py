"""score_average: several checkpoints as one engine that scores a sample as ``mer ensemble`` does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.errors import InputError
from engines.export import export_checkpoint, export_checkpoints
from engines.manifest import read_manifest, sha256_file
from engines.models import create_model
from engines.runtime import load
from streamer.cli import main as mer
from tests.model_zoo import fake_run, random_images

CLASSES = ("negative", "positive", "surprise")


def test_the_output_is_the_log_of_the_members_mean_probability() -> None:
    torch.manual_seed(0)
    model = create_model("score_average", members=[{"model": "ststnet"}, {"model": "off_apexnet"},
                                                   {"model": "ststnet", "args": {"drop_rate": 0.2}}]).eval()
    x = 255 * torch.rand(5, 3, 28, 28)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(member(x), dim=1) for member in model.members]).mean(0)
        output = model(x)
    torch.testing.assert_close(torch.softmax(output, dim=1), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(output.exp(), expected, atol=1e-6, rtol=0)
    assert model.cfg.name == "score_average" and model.cfg.input_size == (3, 28, 28)
    assert model.member_specs[2] == {"model": "ststnet", "args": {"drop_rate": 0.2}}
    # Logits far apart (a member certain of one class) stay finite: no log of an underflowed zero.
    with torch.no_grad():
        certain = model.forward_head(torch.tensor([[1e4, 0.0, 0.0] * 3]))
    assert torch.isfinite(certain).all()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([{"model": "ststnet"}], "at least two members"),
        ([{"model": "ststnet"}, {"model": "tldn"}], r"members\[1\] \(tldn\) reads another input.*input_size"),
        ([{"model": "ststnet"}, {"model": "biwoof"}], r"members\[1\] \(biwoof\) is a closed-form model"),
        ([{"model": "ststnet"}, {"name": "off_apexnet"}], r"members\[1\] must be"),
        ([{"model": "ststnet"}, {"model": "ststnet", "args": {"label_names": ["a", "b"]}}], "label_names apply"),
    ],
)
def test_members_that_cannot_be_averaged_are_refused(members, message) -> None:
    with pytest.raises(InputError, match=message) as caught:
        create_model("score_average", members=members)
    assert caught.value.column == "members"


def _runs(tmp_path: Path) -> list[Path]:
    return [fake_run(tmp_path / "ststnet_run", "ststnet", CLASSES, seed=1),
            fake_run(tmp_path / "off_run", "off_apexnet", CLASSES, seed=2)]


def test_checkpoints_export_as_one_engine_that_averages_the_single_engines(tmp_path: Path, capsys) -> None:
    checkpoints = _runs(tmp_path)
    ensemble_metrics = tmp_path / "ens" / "metrics.json"
    ensemble_metrics.parent.mkdir()
    ensemble_metrics.write_text(json.dumps({"all": {"uf1": 0.7488, "uar": 0.7642, "acc": 0.7692}}))
    code = mer(["-q", "export", "--checkpoint", str(checkpoints[0]), "--checkpoint", str(checkpoints[1]),
                "--out", str(tmp_path / "engine"), "--metrics", str(ensemble_metrics)])
    assert code == 0, capsys.readouterr().err
    manifest = read_manifest(tmp_path / "engine")
    assert manifest.model_name == "score_average" and manifest.class_names == CLASSES
    assert manifest.data["model"]["args"]["members"] == [{"model": "ststnet", "args": {}},
                                                         {"model": "off_apexnet", "args": {}}]
    assert manifest.data["metrics"] == {"all": {"uf1": 0.7488, "uar": 0.7642, "acc": 0.7692}}
    members = manifest.data["training"]["members"]
    assert [m["model"] for m in members] == ["ststnet", "off_apexnet"]
    assert manifest.data["source"]["checkpoints"] == [{"checkpoint": "s01.pth", "checkpoint_sha256": sha256_file(path)}
                                                      for path in checkpoints]
    assert all(m["weights"] == "the LOSO fold that held out subject s01" for m in members)

    singles = []
    for index, checkpoint in enumerate(checkpoints):
        export_checkpoint(checkpoint, tmp_path / f"single{index}")
        singles.append(load(tmp_path / f"single{index}", "onnxruntime"))
    images = random_images((3, 28, 28), 6, seed=4)
    expected = np.mean([engine.predict(images) for engine in singles], axis=0)
    for backend in ("onnxruntime", "torch"):  # torch rebuilds both members from the manifest alone
        np.testing.assert_allclose(load(tmp_path / "engine", backend).predict(images), expected, atol=1e-5, rtol=0)


def test_an_ensemble_export_refuses_what_would_mislead(tmp_path: Path, capsys) -> None:
    checkpoints = _runs(tmp_path)
    with pytest.raises(InputError, match="at least two checkpoints"):
        export_checkpoints(checkpoints[:1], tmp_path / "engine")
    other = fake_run(tmp_path / "other_classes", "ststnet", ("a", "b"))
    with pytest.raises(InputError, match="predict different classes"):
        export_checkpoints([checkpoints[0], other], tmp_path / "engine")
    assert not (tmp_path / "engine").exists()
    code = mer(["export", "--checkpoint", str(checkpoints[0]), "--checkpoint", str(checkpoints[1]),
                "--out", str(tmp_path / "engine"), "--model", "ststnet"])
    assert code == 2 and "an ensemble's members are read from their run folders" in capsys.readouterr().err
