"""``mer data inspect``: what a dataset holds, read the same way training will read it.

It works from the annotation sheet alone (no frames needed), so a user can check a
sheet and a layout before spending hours on preprocessing.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from training.classmaps import MEGC3
from training.datasets import DATASET_NAMES, SPOTTING_DATASETS, load_dataset
from training.samples import Interval, Sample

COMPOSITE_DATASETS = frozenset({"megc2019-flow", "megc2019-apex"})


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect the real datasets' annotations and layouts")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    inspect = actions.add_parser("inspect", help="count samples, subjects and classes of a dataset")
    inspect.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="which reader to use")
    inspect.add_argument("--root", type=Path, help="the dataset folder (frames; the standard sheet inside it)")
    inspect.add_argument("--sheet", type=Path, help="the annotation sheet (default: the standard name in --root)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    inspect.add_argument(
        "--list", action="store_true", help="also print one line per sample (interval) and the count per subject"
    )
    inspect.set_defaults(run=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    records = load_dataset(args.dataset, root=args.root, sheet=args.sheet)
    summary = summarize(args.dataset, records)
    if args.json:
        print(json.dumps(summary, sort_keys=False))
    else:
        print(format_summary(args.dataset, summary, records))
        if args.list:
            print("\n".join(format_records(records)))
    return 0


def summarize(dataset: str, records: list[Sample] | list[Interval]) -> dict[str, object]:
    """Counts for ``--json``: samples, subjects, own emotions, and the keys that apply.

    ``megc3`` appears where that class map applies to the dataset (zero counts
    included); ``datasets`` (per source dataset) only for a composite; ``kinds`` only
    for spotting sheets.
    """
    summary: dict[str, object] = {
        "samples": len(records),
        "subjects": len({record.subject for record in records}),
        "emotions": dict(sorted(Counter(record.emotion for record in records if record.emotion).items())),
    }
    if dataset in SPOTTING_DATASETS:
        kinds = Counter(record.kind for record in records)
        summary["kinds"] = {"micro": kinds["micro"], "macro": kinds["macro"]}
        return summary
    if any(MEGC3.applies_to(record.source) or MEGC3.name in record.labels for record in records):
        summary[MEGC3.name] = _megc3_counts(records)
    if dataset in COMPOSITE_DATASETS:
        sources = sorted({record.source for record in records})
        summary["datasets"] = {source: _megc3_counts([r for r in records if r.source == source]) for source in sources}
    return summary


def format_summary(dataset: str, summary: dict[str, object], records: list[Sample] | list[Interval]) -> str:
    noun = "intervals" if dataset in SPOTTING_DATASETS else "samples"
    lines = [f"{dataset}: {summary['samples']} {noun}, {summary['subjects']} subjects"]
    lines.append(f"  emotions: {_counts_text(summary['emotions'])}")
    for key in ("kinds", MEGC3.name):
        if key in summary:
            lines.append(f"  {key}: {_counts_text(summary[key])}")
    for source, counts in summary.get("datasets", {}).items():
        lines.append(f"  {source}: {_counts_text(counts)}")
    if dataset not in SPOTTING_DATASETS:
        with_frames = sum(1 for record in records if record.frames)
        lines.append(f"  frames on disk: {with_frames} of {len(records)} samples")
    return "\n".join(lines)


def format_records(records: list[Sample] | list[Interval]) -> list[str]:
    """One tab-separated line per record, then the number of records of each subject."""
    lines = ["subject\tid\tonset\tapex\toffset\temotion\tclasses"]
    for record in records:
        if isinstance(record, Interval):
            name = f"{record.video}/{record.expression_id}" if record.expression_id else record.video
            classes = record.kind
        else:
            name, classes = record.sample_id, ",".join(f"{k}={v}" for k, v in sorted(record.labels.items()))
        frames = ["-" if value is None else str(value) for value in (record.onset, record.apex, record.offset)]
        lines.append("\t".join([record.subject, name, *frames, record.emotion or "-", classes or "-"]))
    per_subject = Counter(record.subject for record in records)
    lines.append("per subject: " + ", ".join(f"{subject} {count}" for subject, count in sorted(per_subject.items())))
    return lines


def _megc3_counts(samples: list[Sample]) -> dict[str, int]:
    counts = Counter(sample.labels[MEGC3.name] for sample in samples if MEGC3.name in sample.labels)
    return {class_name: counts[class_name] for class_name in MEGC3.classes}


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "(none)"
