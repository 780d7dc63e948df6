"""What a LOSO run writes: predictions, pooled metrics, a paper-style table, a confusion plot.

One place builds these files so that ``mer train`` and ``mer evaluate`` report alike.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from training.metrics import ClassificationReport, metrics_by_group, summaries
from training.samples import Sample

__all__ = ["Predictions", "write_run_outputs"]

# Order of the per-dataset columns in reports: the MEGC2019 composite's.
DATASET_ORDER = ("casme2", "smic", "samm")
DATASET_TITLES = {"all": "Full (composite)", "casme2": "CASME II", "smic": "SMIC-HS", "samm": "SAMM"}


class Predictions:
    """Pooled LOSO predictions: one row per sample, in the order of ``samples``."""

    def __init__(self, samples: Sequence[Sample], labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str]):
        if scores.shape != (len(samples), len(class_names)):
            raise ValueError(f"scores must be ({len(samples)}, {len(class_names)}), got {scores.shape}")
        self.samples = list(samples)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.scores = np.asarray(scores, dtype=np.float64)
        self.class_names = tuple(class_names)

    @property
    def predicted(self) -> np.ndarray:
        return self.scores.argmax(axis=1)

    def reports(self) -> dict[str, ClassificationReport]:
        groups = [sample.source for sample in self.samples]
        reports = metrics_by_group(self.labels, self.predicted, groups, self.class_names)
        ordered = {"all": reports.pop("all")}
        for name in DATASET_ORDER:
            if name in reports:
                ordered[name] = reports.pop(name)
        ordered.update(reports)
        return ordered

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sample", "subject", "dataset", "label", "prediction", *[f"score_{c}" for c in self.class_names]])
            for sample, label, predicted, row in zip(self.samples, self.labels, self.predicted, self.scores):
                writer.writerow(
                    [sample.sample_id, sample.subject, sample.source, self.class_names[label], self.class_names[predicted]]
                    + [f"{value:.6f}" for value in row]
                )


def markdown_table(reports: Mapping[str, ClassificationReport], title: str) -> str:
    """A table laid out like the MEGC2019 papers': one column pair (UF1, UAR) per dataset."""
    keys = list(reports)
    header = "| " + title + " | " + " | ".join(f"{DATASET_TITLES.get(k, k)} UF1 | {DATASET_TITLES.get(k, k)} UAR" for k in keys) + " |"
    rule = "|---" * (1 + 2 * len(keys)) + "|"
    row = "| mer | " + " | ".join(f"{reports[k].uf1:.4f} | {reports[k].uar:.4f}" for k in keys) + " |"
    return "\n".join([header, rule, row])


def _confusion_png(report: ClassificationReport, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = report.confusion
    figure, axis = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    axis.imshow(matrix, cmap="Blues")
    names = report.class_names
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), value in np.ndenumerate(matrix):
        axis.text(column, row, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_run_outputs(out_dir: Path, predictions: Predictions, run_info: Mapping[str, object]) -> dict[str, ClassificationReport]:
    """Writes predictions.csv, metrics.json, report.md and confusion.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = predictions.reports()
    predictions.write_csv(out_dir / "predictions.csv")
    (out_dir / "metrics.json").write_text(json.dumps(summaries(reports), indent=2) + "\n")
    (out_dir / "metrics_detail.json").write_text(
        json.dumps({"run": dict(run_info), "reports": {k: r.to_dict() for k, r in reports.items()}}, indent=2) + "\n"
    )
    title = f"{run_info.get('model', 'model')} ({run_info.get('protocol', 'loso')})"
    lines = [
        f"# {title}",
        "",
        "Pooled over all folds' predictions (MEGC convention).",
        "",
        markdown_table(reports, "Method"),
        "",
        "| dataset | samples | acc | " + " | ".join(f"recall {c}" for c in predictions.class_names) + " |",
        "|---" * (3 + len(predictions.class_names)) + "|",
    ]
    for key, report in reports.items():
        recalls = " | ".join("–" if report.recall[c] is None else f"{report.recall[c]:.4f}" for c in report.class_names)
        lines.append(f"| {DATASET_TITLES.get(key, key)} | {report.samples} | {report.acc:.4f} | {recalls} |")
    lines += ["", "## Run", ""] + [f"- {key}: `{value}`" for key, value in run_info.items()] + [""]
    (out_dir / "report.md").write_text("\n".join(lines))
    _confusion_png(reports["all"], out_dir / "confusion.png", f"{title}: UF1 {reports['all'].uf1:.4f}")
    return reports
