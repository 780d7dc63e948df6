"""Each finished LOSO fold on disk, so an interrupted run keeps its work and can resume.

A LOSO run of hundreds of epochs over 68 folds takes an hour on a small machine; losing it
to a Ctrl-C or a reboot is not acceptable. As each fold finishes, its weights
(``weights/<subject>.pth``) and its held-out scores (``folds/<subject>.json``, plain JSON)
are written. ``run_state.json`` records what the run is (model, data, class map, recipe,
sample list); ``mer train --resume`` reuses finished folds only when that record matches
exactly, so a resumed run gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engines.checkpoints import write_state_dict
from engines.errors import InputError
from training.trainer import FoldResult

__all__ = ["FoldStore"]

STATE_NAME = "run_state.json"


def _write_json_atomically(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as tmp:
        json.dump(data, tmp)
    os.replace(tmp_name, path)


class FoldStore:
    """Finished folds of one run in ``out_dir``."""

    def __init__(self, out_dir: Path, identity: dict[str, Any],
                 added_defaults: dict[str, dict[str, Any]] | None = None) -> None:
        """``added_defaults``: per section of ``identity`` (e.g. ``"recipe"``), the default of every
        field it may hold. A run recorded before a field existed trained with that field's default
        (a field is only ever added with a default that keeps the old behaviour), so its record is
        read with the defaults filled in and stays resumable."""
        self.out_dir = Path(out_dir)
        self.identity = json.loads(json.dumps(identity))  # normalised (tuples -> lists)
        self.added_defaults = json.loads(json.dumps(added_defaults or {}))
        self.folds_dir = self.out_dir / "folds"
        self.weights_dir = self.out_dir / "weights"

    def open(self, resume: bool) -> dict[str, dict[str, Any]]:
        """Start or resume the run; returns the records of folds already finished (by subject)."""
        state_path = self.out_dir / STATE_NAME
        finished = sorted(self.folds_dir.glob("*.json")) if self.folds_dir.is_dir() else []
        if state_path.is_file():
            try:
                recorded = json.loads(state_path.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON: {exc.msg}", path=state_path, row=exc.lineno) from None
            for section, defaults in self.added_defaults.items():
                if isinstance(recorded.get(section), dict):
                    recorded[section] = {**defaults, **recorded[section]}
            if finished and not resume:
                raise InputError(f"holds {len(finished)} finished folds of an earlier run: pass --resume to continue "
                                 "it, or choose another --out", path=self.out_dir)
            if resume and recorded != self.identity:
                differing = sorted(k for k in set(recorded) | set(self.identity) if recorded.get(k) != self.identity.get(k))
                raise InputError(f"cannot resume: the earlier run differs in {', '.join(differing)}", path=state_path)
        _write_json_atomically(state_path, self.identity)
        if not resume:
            return {}
        records = {}
        for path in finished:
            record = json.loads(path.read_text())
            if (self.weights_dir / f"{record['subject']}.pth").is_file():
                records[record["subject"]] = record
        return records

    def save(self, result: FoldResult, sample_keys: list[str]) -> None:
        """Weights first, then the scores: a fold counts as finished only once both exist."""
        write_state_dict(result.state_dict, self.weights_dir / f"{result.test_subject}.pth")
        _write_json_atomically(self.folds_dir / f"{result.test_subject}.json", {
            "subject": result.test_subject,
            "samples": sample_keys,
            "scores": np.asarray(result.scores, dtype=float).round(8).tolist(),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "validation_subjects": list(result.validation_subjects),
        })

    @staticmethod
    def result_from_record(record: dict[str, Any], test_indices: tuple[int, ...], sample_keys: list[str]) -> FoldResult:
        if record["samples"] != sample_keys:
            raise InputError(f"fold {record['subject']}: its samples differ from this run's", path=None)
        return FoldResult(
            test_subject=record["subject"],
            test_indices=test_indices,
            scores=np.asarray(record["scores"], dtype=np.float64),
            state_dict={},
            epochs_run=int(record["epochs_run"]),
            validation_subjects=tuple(record["validation_subjects"]),
            best_epoch=record["best_epoch"],
        )
