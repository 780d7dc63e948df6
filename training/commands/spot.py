"""``mer eval-spot``: score predicted expression intervals against a spotting sheet (MEGC protocol).

The ground truth is a CAS(ME)^2 or SAMM Long Videos sheet, read by the dataset
readers; the predictions are a csv of ``video, onset, offset[, subject]`` rows (the
format MEGC entrants submit, header optional). docs/spotting-eval.md has the rules.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from engines.errors import InputError
from training.datasets import SPOTTING_DATASETS, load_dataset, reader_module
from training.datasets.tables import Cell, cell_int, cell_text, read_rows
from training.spotting_eval import (
    IOU_THRESHOLD,
    MATCHINGS,
    MISSING_OFFSET_FRAMES,
    Prediction,
    SpottingResult,
    evaluate,
    resolve_ground_truth,
)

log = logging.getLogger(__name__)

# Header names accepted in a predictions csv (case-insensitive); the first is the column's name in errors.
PREDICTION_COLUMNS: dict[str, tuple[str, ...]] = {
    "video": ("video", "video path", "vid"),
    "onset": ("onset", "start", "pred_on"),
    "offset": ("offset", "end", "pred_off"),
}
SAMM_HEADER = {"filename", "onset"}
CASME2_PATH_COLUMN = 10  # the video path ('s15/15_0401girlcrashing') is the 11th cell
DETECTION_ROWS = 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-spot",
        help="score predicted intervals against CAS(ME)^2 / SAMM-LV ground truth (MEGC protocol)",
        description="A ground truth is spotted by a prediction of the same video with IoU >= 0.5 (inclusive "
        "frames), each matched at most once. Prints TP, FP, FN, precision, recall and F1 overall, micro and "
        "macro. See docs/spotting-eval.md.",
    )
    parser.add_argument("--gt", required=True, type=Path,
                        help="ground-truth sheet: CAS(ME)^2 code_final csv or SAMM_LongVideos_V2_Release csv/xlsx")
    parser.add_argument("--pred", required=True, type=Path,
                        help="predictions csv: video, onset, offset[, subject]; header optional")
    parser.add_argument("--dataset", choices=sorted(SPOTTING_DATASETS),
                        help="sheet format (default: recognised from the sheet)")
    parser.add_argument("--fps", type=float,
                        help="frame rate, sets the micro/macro length limit of 0.5 s "
                        "(default: 30 for casme2-spot, 200 for samm-lv)")
    parser.add_argument("--iou", type=float, default=IOU_THRESHOLD,
                        help=f"IoU a match needs (default {IOU_THRESHOLD})")
    parser.add_argument("--matching", choices=MATCHINGS, default="maximum",
                        help="one-to-one matching: maximum (most matches) or greedy (by descending IoU) "
                        "(default maximum)")
    parser.add_argument("--missing-offset-frames", type=int, default=MISSING_OFFSET_FRAMES,
                        help=f"a ground truth without offset ends this many frames after its apex, or its onset "
                        f"when the apex is missing too (default {MISSING_OFFSET_FRAMES})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(run=run_eval_spot)


def run_eval_spot(args: argparse.Namespace) -> int:
    if not 0 < args.iou <= 1:
        raise InputError(f"--iou must lie in (0, 1], got {args.iou}")
    if args.missing_offset_frames < 0:
        raise InputError(f"--missing-offset-frames must be 0 or more, got {args.missing_offset_frames}")
    dataset = args.dataset or infer_dataset(args.gt)
    fps = args.fps if args.fps is not None else reader_module(dataset).FPS
    if fps <= 0:
        raise InputError(f"--fps must be positive, got {fps}")
    truths = resolve_ground_truth(load_dataset(dataset, sheet=args.gt), args.missing_offset_frames)
    predictions = read_predictions(args.pred)
    result = evaluate(truths, predictions, fps, threshold=args.iou, matching=args.matching)
    if result.unknown_videos:
        log.warning("%s: %d videos are not in the ground truth, their predictions count as FP: %s",
                    args.pred, len(result.unknown_videos), ", ".join(result.unknown_videos))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        header = (f"{dataset}: {len(truths)} ground truths, {len(predictions)} predictions, "
                  f"IoU >= {args.iou:g}, {args.matching} matching, micro if offset - onset <= {0.5 * fps:g} frames")
        print("\n".join([header, *format_table(result)]))
        if result.unknown_videos:
            print(f"videos without ground truth (their predictions are FP): {', '.join(result.unknown_videos)}")
    return 0


def format_table(result: SpottingResult) -> list[str]:
    lines = [f"{'':8}{'TP':>6}{'FP':>6}{'FN':>6}{'precision':>11}{'recall':>8}{'F1':>8}"]
    for name, counts in (("overall", result.overall), ("micro", result.micro), ("macro", result.macro)):
        lines.append(f"{name:8}{counts.tp:6d}{counts.fp:6d}{counts.fn:6d}"
                     f"{counts.precision:11.4f}{counts.recall:8.4f}{counts.f1:8.4f}")
    return lines


def infer_dataset(sheet: Path) -> str:
    """samm-lv when a header row holds Filename and Onset; casme2-spot when rows carry a
    subject/video path in their 11th cell; otherwise ask for --dataset."""
    rows = [row for row in read_rows(sheet) if row][:DETECTION_ROWS]
    for row in rows:
        if SAMM_HEADER <= {cell_text(cell).lower() for cell in row}:
            return "samm-lv"
    if rows and all(len(row) > CASME2_PATH_COLUMN and "/" in cell_text(row[CASME2_PATH_COLUMN]) for row in rows):
        return "casme2-spot"
    raise InputError("cannot tell whether this is a CAS(ME)^2 or a SAMM Long Videos sheet; give --dataset", path=sheet)


def read_predictions(path: Path) -> list[Prediction]:
    """Predicted intervals, one per non-blank row, in file order (duplicates kept: each is a prediction).

    Without a header the columns are video, onset, offset[, subject]. The first row is
    a header when its onset cell is not a number; its columns are then found by name.
    """
    rows = read_rows(path)
    first = next((index for index, row in enumerate(rows) if row), None)
    if first is None:
        return []
    positions = {"video": 0, "onset": 1, "offset": 2}
    body_start = first
    if not _is_number(rows[first][1] if len(rows[first]) > 1 else None):
        positions = _header_positions(rows[first], path, row=first + 1)
        body_start = first + 1
    predictions = []
    for index in range(body_start, len(rows)):
        row = rows[index]
        if row:
            predictions.append(_prediction(row, positions, path, row_number=index + 1))
    return predictions


def _header_positions(header: list[Cell], path: Path, row: int) -> dict[str, int]:
    names = [cell_text(cell).lower() for cell in header]
    positions = {}
    for column, spellings in PREDICTION_COLUMNS.items():
        found = next((names.index(spelling) for spelling in spellings if spelling in names), None)
        if found is None:
            raise InputError(f"header has no {' / '.join(spellings)} column "
                             "(or, without a header, the second cell is not an onset frame number)",
                             path=path, row=row, column=column)
        positions[column] = found
    return positions


def _prediction(row: list[Cell], positions: dict[str, int], path: Path, row_number: int) -> Prediction:
    cells = {column: row[index] if index < len(row) else None for column, index in positions.items()}
    video = cell_text(cells["video"])
    if not video:
        raise InputError("empty video name", path=path, row=row_number, column="video")
    frames = {}
    for column in ("onset", "offset"):
        if not cell_text(cells[column]):
            raise InputError("missing frame number", path=path, row=row_number, column=column)
        frames[column] = cell_int(cells[column], path=path, row=row_number, column=column)
        if frames[column] < 0:
            raise InputError(f"negative frame number {frames[column]}", path=path, row=row_number, column=column)
    if frames["onset"] > frames["offset"]:
        raise InputError(f"onset {frames['onset']} is after offset {frames['offset']}",
                         path=path, row=row_number, column="offset")
    return Prediction(video, frames["onset"], frames["offset"])


def _is_number(cell: Cell) -> bool:
    try:
        float(cell_text(cell))
    except ValueError:
        return False
    return True
