"""``mer ensemble RUN_DIR... --out DIR``: average the held-out scores of finished LOSO runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "ensemble", help="average the pooled LOSO scores of several finished mer train runs",
        description="Average the held-out softmax scores of several finished `mer train` runs (seeds or models) "
                    "and score the result like a run: predictions.csv, metrics.json, report.md, confusion.png.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="mer train output folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--json", action="store_true", help="print metrics.json's object")
    parser.set_defaults(run=run_ensemble)


def run_ensemble(args: argparse.Namespace) -> int:
    import json

    from training.ensemble import average_runs
    from training.metrics import summaries
    from training.reports import write_run_outputs

    predictions = average_runs(args.runs)
    reports = write_run_outputs(args.out, predictions, {"model": "ensemble", "protocol": "loso",
                                                        "runs": [str(run) for run in args.runs]})
    if args.json:
        print(json.dumps(summaries(reports)))
    else:
        overall = reports["all"]
        print(f"ensemble of {len(args.runs)} runs: UF1 {overall.uf1:.4f} UAR {overall.uar:.4f} acc {overall.acc:.4f} "
              f"-> {args.out}")
    return 0
