"""Golden fidelity: our STSTNet + the release's checkpoints = the release's published run.

For each of the 68 LOSO folds, the original release's checkpoint (STSTNet_Weights/<subject>.pth,
legacy torch format, read by the safe reader) is applied to its held-out subject's composite
flow images, read by the project's own reader and input path. Every one of the 442
predictions must equal STSTNet_python_logfile.txt, and the pooled UF1/UAR its final line.

Sample order within a subject: the release iterates ``<subject>/u_test/<label>/<file>`` folders,
so its lists are grouped by label id; within a label, sorted file name is the order that
reproduces the log (every one of the 442 positions is checked, so a wrong order fails).
"""

from __future__ import annotations

import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from engines.checkpoints import load_weights, read_state_dict
from engines.models import create_model
from training.classmaps import MEGC3
from training.datasets import load_dataset
from training.inputs import check_contract, load_motion_images
from training.metrics import pooled_metrics
from training.samples import Sample

pytestmark = pytest.mark.realdata

LOG_ENTRY = re.compile(
    r"Subject: (?P<subject>\S+)\s*\n"
    r"Predicted\s*: \[(?P<predicted>[^\]]*)\]\s*\n"
    r"Ground Truth: \[(?P<truth>[^\]]*)\]"
)
LOG_FINAL = re.compile(r"Final Evaluation:\s*\nUF1: (?P<uf1>[\d.]+) \| UAR: (?P<uar>[\d.]+)")


@dataclass(frozen=True)
class FoldResult:
    predicted: list[int]
    truth: list[int]


def _ints(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value.strip()]


def _parse_log(path: Path) -> tuple[dict[str, FoldResult], tuple[float, float]]:
    text = path.read_text(encoding="utf-8")
    folds = {
        m["subject"]: FoldResult(_ints(m["predicted"]), _ints(m["truth"])) for m in LOG_ENTRY.finditer(text)
    }
    final = LOG_FINAL.search(text)
    assert final, f"{path}: no 'Final Evaluation' line"
    return folds, (float(final["uf1"]), float(final["uar"]))


def _release_order(samples: list[Sample]) -> list[Sample]:
    """The release's test-folder order: label id, then file name."""
    return sorted(samples, key=lambda s: (MEGC3.index(s.labels[MEGC3.name]), s.frames[0].name))


@pytest.fixture(scope="module")
def release(shared_data: Path) -> Path:
    folder = shared_data / "STSTNet"
    if not (folder / "STSTNet_Weights").is_dir() or not (shared_data / "HTNet").is_dir():
        pytest.skip(f"STSTNet release or HTNet composite images not found under {shared_data}")
    return folder


@pytest.fixture(scope="module")
def logged(release: Path) -> tuple[dict[str, FoldResult], tuple[float, float]]:
    return _parse_log(release / "STSTNet_python_logfile.txt")


@pytest.fixture(scope="module")
def reproduced(release: Path, shared_data: Path) -> dict[str, FoldResult]:
    """Each fold's official checkpoint applied to its held-out subject, in the release's order."""
    by_subject: dict[str, list[Sample]] = defaultdict(list)
    for sample in load_dataset("megc2019-flow", root=shared_data / "HTNet"):
        by_subject[sample.subject].append(sample)
    results = {}
    with torch.no_grad():
        for subject, samples in sorted(by_subject.items()):
            ordered = _release_order(samples)
            model = create_model("ststnet").eval()
            load_weights(model, release / "STSTNet_Weights" / f"{subject}.pth")
            inputs = load_motion_images(ordered)
            check_contract(model.cfg, inputs)
            results[subject] = FoldResult(
                predicted=model(inputs).argmax(dim=1).tolist(),
                truth=[MEGC3.index(s.labels[MEGC3.name]) for s in ordered],
            )
    return results


def test_release_checkpoints_are_legacy_files_holding_the_release_architecture(release: Path) -> None:
    files = sorted((release / "STSTNet_Weights").glob("*.pth"))
    assert len(files) == 68
    model = create_model("ststnet")
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    parameter_names = {name for name, _ in model.named_parameters()}
    for path in files:
        assert not zipfile.is_zipfile(path), path  # the torch <= 1.5 format: the legacy path is exercised
        state = read_state_dict(path)
        assert {name: tuple(t.shape) for name, t in state.items()} == expected, path
        assert sum(state[name].numel() for name in parameter_names) == 1683, path


def test_every_logged_prediction_is_reproduced(
    logged: tuple[dict[str, FoldResult], tuple[float, float]], reproduced: dict[str, FoldResult]
) -> None:
    folds, _ = logged
    assert len(folds) == 68 and sorted(folds) == sorted(reproduced)
    assert sum(len(fold.predicted) for fold in folds.values()) == 442
    wrong_truth = [s for s in folds if reproduced[s].truth != folds[s].truth]
    wrong_prediction = [
        f"{s}: log {folds[s].predicted} ours {reproduced[s].predicted}"
        for s in folds
        if reproduced[s].predicted != folds[s].predicted
    ]
    assert not wrong_truth, f"label lists differ (sample order or labels): {wrong_truth}"
    assert not wrong_prediction, "\n".join(wrong_prediction)


def test_pooled_scores_equal_the_release(
    logged: tuple[dict[str, FoldResult], tuple[float, float]], reproduced: dict[str, FoldResult]
) -> None:
    truth = [label for fold in reproduced.values() for label in fold.truth]
    predicted = [label for fold in reproduced.values() for label in fold.predicted]
    report = pooled_metrics(truth, predicted, MEGC3.classes)
    assert report.samples == 442
    assert (round(report.uf1, 4), round(report.uar, 4)) == (0.7209, 0.7250)
    assert (round(report.uf1, 4), round(report.uar, 4)) == logged[1]
