"""training.ensemble / mer ensemble: averaged held-out scores of finished runs."""

import json

import numpy as np
import pytest

from engines.errors import InputError
from streamer.cli import main
from training.ensemble import average_runs

HEADER = "sample,subject,dataset,label,prediction,score_negative,score_positive,score_surprise\n"
ROWS = [("s1", "01", "casme2", "negative"), ("s2", "01", "casme2", "positive"), ("s3", "02", "samm", "surprise"),
        ("s4", "02", "samm", "negative")]


def _run(folder, scores, rows=ROWS, header=HEADER):
    folder.mkdir()
    lines = [header]
    for (sample, subject, dataset, label), row in zip(rows, scores):
        lines.append(f"{sample},{subject},{dataset},{label},x," + ",".join(str(v) for v in row) + "\n")
    (folder / "predictions.csv").write_text("".join(lines))
    return folder


def test_scores_are_averaged_and_scored(tmp_path):
    a = _run(tmp_path / "a", [[0.6, 0.4, 0.0], [0.5, 0.1, 0.4], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1]])
    b = _run(tmp_path / "b", [[0.9, 0.0, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.6, 0.2]])
    predictions = average_runs([a, b])
    np.testing.assert_allclose(predictions.scores[1], [0.3, 0.45, 0.25])
    assert list(predictions.predicted) == [0, 1, 2, 1]  # the last sample stays wrong
    assert predictions.reports()["all"].acc == 0.75
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "e"), "--json"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["all"]["acc"] == 0.75 and set(metrics) == {"all", "casme2", "samm"}


def test_runs_over_different_samples_are_refused(tmp_path):
    a = _run(tmp_path / "a", [[1, 0, 0]] * 4)
    shuffled = [ROWS[1], ROWS[0], *ROWS[2:]]
    b = _run(tmp_path / "b", [[1, 0, 0]] * 4, rows=shuffled)
    with pytest.raises(InputError, match="samples or labels differ") as caught:
        average_runs([a, b])
    assert caught.value.row == 2


def test_a_run_without_predictions_or_with_other_classes_is_refused(tmp_path):
    a = _run(tmp_path / "a", [[1, 0, 0]] * 4)
    with pytest.raises(InputError, match="no predictions.csv"):
        average_runs([a, tmp_path / "missing"])
    b = _run(tmp_path / "b", [[1, 0, 0]] * 4, header=HEADER.replace("score_surprise", "score_other"))
    with pytest.raises(InputError, match="classes"):
        average_runs([a, b])
    with pytest.raises(InputError, match="at least two"):
        average_runs([a])
