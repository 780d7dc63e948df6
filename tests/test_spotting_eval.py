"""MEGC spotting evaluation (`training.spotting_eval`, `mer eval-spot`).

Hand-built cases pin the protocol (IoU >= 0.5 on inclusive frames, one-to-one, per
video, micro/macro split); the real-data tests replay a MEGC2024 entrant's TP/FP/FN-tagged
detector output against the real CAS(ME)^2 and SAMM Long Videos sheets.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from engines.errors import InputError
from streamer.cli import main
from training.commands.spot import infer_dataset, read_predictions
from training.datasets import load_dataset
from training.datasets.sheets import write_casme2spot_sheet, write_samm_lv_sheet
from training.samples import Interval
from training.spotting_eval import (
    Counts,
    GroundTruth,
    Prediction,
    evaluate,
    frame_iou,
    match_video,
    prediction_kind,
    resolve_ground_truth,
    video_key,
)


def truth(onset: int, offset: int, kind: str = "macro", video: str = "v1") -> GroundTruth:
    return GroundTruth(video, onset, offset, kind)


def pred(onset: int, offset: int, video: str = "v1") -> Prediction:
    return Prediction(video, onset, offset)


def counts(result, part: str = "overall") -> tuple[int, int, int]:
    c = getattr(result, part)
    return c.tp, c.fp, c.fn


# --- IoU and scores -------------------------------------------------------------------------


def test_iou_counts_inclusive_frames():
    assert frame_iou(0, 9, 5, 14) == 5 / 15
    assert frame_iou(3, 3, 3, 3) == 1.0
    assert frame_iou(0, 4, 5, 9) == 0.0  # adjacent, no shared frame
    assert frame_iou(0, 4, 4, 9) == 1 / 10  # one shared frame


def test_scores_and_zero_denominators():
    c = Counts(tp=3, fp=1, fn=2)
    assert (c.precision, c.recall, c.f1) == (0.75, 0.6, 6 / 9)
    assert Counts().as_dict() == {"tp": 0, "fp": 0, "fn": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert Counts(1, 2, 3) + Counts(10, 20, 30) == Counts(11, 22, 33)


# --- matching -------------------------------------------------------------------------------


def test_iou_of_exactly_half_is_a_match():
    result = evaluate([truth(0, 9)], [pred(0, 4)], fps=30)  # 5 of 10 frames
    assert counts(result) == (1, 0, 0)


def test_iou_just_below_half_is_not_a_match():
    result = evaluate([truth(0, 99)], [pred(0, 48)], fps=30)  # 49 of 100 frames
    assert counts(result) == (0, 1, 1)


def test_one_prediction_over_two_truths_matches_once():
    result = evaluate([truth(0, 9), truth(1, 10)], [pred(0, 10)], fps=30)  # IoU 10/11 with both
    assert counts(result) == (1, 0, 1)


def test_two_predictions_on_one_truth_give_one_tp_one_fp():
    result = evaluate([truth(0, 9)], [pred(0, 9), pred(1, 9)], fps=30)
    assert counts(result) == (1, 1, 0)
    assert result.matches == ((truth(0, 9), pred(0, 9)),)  # the better overlap wins


def test_matching_is_per_video():
    result = evaluate([truth(0, 9, video="a")], [pred(0, 9, video="b")], fps=30)
    assert counts(result) == (0, 1, 1)
    assert result.unknown_videos == ("b",)


def test_empty_predictions_and_empty_ground_truth():
    result = evaluate([truth(0, 9, "micro"), truth(50, 90)], [], fps=30)
    assert counts(result) == (0, 0, 2)
    assert result.as_dict()["overall"] == {"tp": 0, "fp": 0, "fn": 2, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert counts(evaluate([], [pred(0, 9)], fps=30)) == (0, 1, 0)


def test_maximum_matching_finds_more_pairs_than_greedy():
    # A=[0,9], B=[0,14]; P1=[0,9] fits A (IoU 1) and B (0.67); P2=[5,9] fits only A (0.5).
    truths, predictions = [truth(0, 9), truth(0, 14)], [pred(0, 9), pred(5, 9)]
    assert match_video(truths, predictions, matching="greedy") == [(0, 0)]
    assert match_video(truths, predictions, matching="maximum") == [(0, 1), (1, 0)]
    assert counts(evaluate(truths, predictions, fps=30)) == (2, 0, 0)


def test_maximum_matching_prefers_larger_total_iou_among_equal_counts():
    truths = [truth(0, 9), truth(20, 29)]
    predictions = [pred(0, 5), pred(0, 8), pred(20, 29)]  # IoU 0.6, 0.9 with the first truth
    assert match_video(truths, predictions) == [(0, 1), (1, 2)]


def test_micro_macro_split():
    truths = [truth(0, 10, "micro"), truth(100, 160, "macro"), truth(300, 310, "micro")]
    predictions = [
        pred(0, 10),  # TP of a micro truth
        pred(400, 415),  # FP, offset - onset = 15 = 0.5 s at 30 fps: micro
        pred(500, 516),  # FP, 16 frames: macro
        pred(100, 120),  # overlaps the macro truth with IoU 21/61: FP, 20 frames: macro
    ]
    result = evaluate(truths, predictions, fps=30)
    assert counts(result, "micro") == (1, 1, 1)
    assert counts(result, "macro") == (0, 2, 1)
    assert counts(result, "overall") == (1, 3, 2)
    # At 200 fps (SAMM-LV) the limit is 100 frames.
    assert prediction_kind(pred(0, 100), fps=200) == "micro"
    assert prediction_kind(pred(0, 101), fps=200) == "macro"


# --- ground truth and names -----------------------------------------------------------------


def test_missing_offset_is_apex_plus_frames_or_onset_plus_frames():
    intervals = [
        Interval("casme2-spot", "s15", "15_0101x", onset=10, apex=14, offset=None, kind="macro"),
        Interval("casme2-spot", "s15", "15_0101x", onset=10, apex=None, offset=None, kind="micro"),
        Interval("casme2-spot", "s15", "15_0101x", onset=10, apex=12, offset=18, kind="micro"),
    ]
    assert [(t.onset, t.offset) for t in resolve_ground_truth(intervals)] == [(10, 34), (10, 30), (10, 18)]
    assert [t.offset for t in resolve_ground_truth(intervals, missing_offset_frames=5)] == [19, 15, 18]


def test_video_key_normalises_paths_and_suffixes():
    assert video_key("s15/15_0101disgustingteeth") == "15_0101disgustingteeth"
    assert video_key(" 006_1 ") == "006_1"
    assert video_key(r"D:\SAMM\006_1.mp4") == "006_1"


# --- predictions csv ------------------------------------------------------------------------


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_predictions_without_and_with_header(tmp_path):
    plain = write_text(tmp_path / "plain.csv", "s15/15_0101x,2,39,s15\n\n006_1,337.0,435.0\n")
    assert read_predictions(plain) == [Prediction("s15/15_0101x", 2, 39), Prediction("006_1", 337, 435)]
    headed = write_text(tmp_path / "headed.csv", "subject,Offset,Onset,Video\ns15,39,2,s15/15_0101x\n")
    assert read_predictions(headed) == [Prediction("s15/15_0101x", 2, 39)]
    assert read_predictions(write_text(tmp_path / "empty.csv", "")) == []
    assert read_predictions(write_text(tmp_path / "header_only.csv", "video,onset,offset\n")) == []


@pytest.mark.parametrize(
    ("text", "row", "column"),
    [
        ("v,1,5\nv,x,9\n", 2, "onset"),
        ("v,1,5\nv,3\n", 2, "offset"),
        ("v,1,5\n\nv,9,3\n", 3, "offset"),
        ("v,1,5\n,1,5\n", 2, "video"),
        ("v,1,5\nv,-1,5\n", 2, "onset"),
        ("video,start,stop\nv,1,5\n", 1, "offset"),
    ],
)
def test_malformed_prediction_row_names_file_row_column(tmp_path, text, row, column):
    path = write_text(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as caught:
        read_predictions(path)
    assert (caught.value.path, caught.value.row, caught.value.column) == (path, row, column)


# --- the command, on sheets written in the official formats ---------------------------------


CASME2_INTERVALS = [
    Interval("casme2-spot", "s15", "15_0101disgustingteeth", 100, 110, 130, "macro",
             expression_id="disgust1_1", emotion="negative"),
    Interval("casme2-spot", "s15", "15_0101disgustingteeth", 200, 205, 210, "micro",
             expression_id="disgust1_2", emotion="negative"),
    Interval("casme2-spot", "s16", "16_0102eatingworms", 50, 60, None, "macro",  # offset 0 in the sheet
             expression_id="disgust2_1", emotion="others"),
]
SAMM_INTERVALS = [
    Interval("samm-lv", "006", "006_1", 500, 550, 700, "macro", expression_id="006_1_1"),
    Interval("samm-lv", "006", "006_1", 1000, 1040, 1080, "micro", expression_id="006_1_2"),
]


@pytest.fixture
def casme2_sheet(tmp_path) -> Path:
    path = tmp_path / "CAS(ME)^2code_final(Updated).csv"
    write_casme2spot_sheet(path, CASME2_INTERVALS)
    return path


@pytest.fixture
def samm_sheet(tmp_path) -> Path:
    path = tmp_path / "SAMM_LongVideos_V2_Release.csv"
    write_samm_lv_sheet(path, SAMM_INTERVALS)
    return path


def test_dataset_is_recognised_from_the_sheet(casme2_sheet, samm_sheet, tmp_path):
    assert infer_dataset(casme2_sheet) == "casme2-spot"
    assert infer_dataset(samm_sheet) == "samm-lv"
    with pytest.raises(InputError, match="give --dataset"):
        infer_dataset(write_text(tmp_path / "other.csv", "a,b,c\n1,2,3\n"))


def test_eval_spot_json_on_casme2_sheet(casme2_sheet, tmp_path, capsys, caplog):
    predictions = write_text(tmp_path / "pred.csv", "\n".join([
        "s15/15_0101disgustingteeth,101,131,s15",  # TP macro
        "s15/15_0101disgustingteeth,300,310,s15",  # FP, 10 frames: micro
        "s16/16_0102eatingworms,52,80,s16",  # TP: the missing offset is apex 60 + 20 = 80
        "s99/99_0101unknown,1,40,s99",  # unknown video: FP, 39 frames: macro
    ]) + "\n")
    with caplog.at_level(logging.WARNING):
        assert main(["eval-spot", "--gt", str(casme2_sheet), "--pred", str(predictions), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["overall", "micro", "macro"]
    assert {part: (v["tp"], v["fp"], v["fn"]) for part, v in report.items()} == {
        "overall": (2, 2, 1), "micro": (0, 1, 1), "macro": (2, 1, 0)}
    assert report["overall"]["f1"] == 4 / 7
    assert "99_0101unknown" in caplog.text


def test_eval_spot_text_on_samm_sheet_with_fps_option(samm_sheet, tmp_path, capsys):
    predictions = write_text(tmp_path / "pred.csv", "video,onset,offset\n006_1,505,700\n006_1,1000,1090\n")
    assert main(["eval-spot", "--gt", str(samm_sheet), "--pred", str(predictions)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("samm-lv: 2 ground truths, 2 predictions")
    assert lines[2].split()[:4] == ["overall", "2", "0", "0"]
    # --fps 30 does not change matching, only which FPs count as micro: none here.
    assert main(["eval-spot", "--gt", str(samm_sheet), "--pred", str(predictions), "--fps", "30", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["micro"]["tp"] == 1


def test_eval_spot_reports_bad_predictions_as_one_line_error(casme2_sheet, tmp_path, capsys):
    predictions = write_text(tmp_path / "pred.csv", "s15/15_0101disgustingteeth,1,x\n")
    assert main(["eval-spot", "--gt", str(casme2_sheet), "--pred", str(predictions)]) == 2
    assert f"{predictions}, row 1, column 'offset': expected an integer frame number" in capsys.readouterr().err


# --- real data: a MEGC2024 entrant's tagged detector output ---------------------------------

LABELS = Path("MEGC2024-CODE/label")


def tagged_rows(shared_data: Path, name: str) -> list[list[str]]:
    """Rows of my_*1.csv: video, gt_on, gt_off, pred_on, pred_off, tag, subject ('nan' when absent)."""
    path = shared_data / LABELS / "labeled_spot_result_for_train" / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with path.open(newline="") as handle:
        return [row for row in csv.reader(handle) if row]


def real_truths(shared_data: Path, dataset: str, sheet: str) -> list[GroundTruth]:
    return resolve_ground_truth(load_dataset(dataset, sheet=shared_data / LABELS / "datasetlabel" / sheet))


def tagged_predictions(rows: list[list[str]]) -> list[Prediction]:
    """One prediction per row that has one: a prediction the entrant matched to two
    ground truths appears on two TP rows, and so counts twice (see docs/spotting-eval.md)."""
    return [Prediction(r[0], int(float(r[3])), int(float(r[4]))) for r in rows if r[3] != "nan"]


def tagged_truths(rows: list[list[str]]) -> set[tuple[str, int, int]]:
    return {(video_key(r[0]), int(float(r[1])), int(float(r[2]))) for r in rows if r[5] == "TP"}


@pytest.mark.realdata
def test_real_casme2_tagged_output_is_reproduced_exactly(shared_data):
    rows = tagged_rows(shared_data, "my_casme1.csv")
    truths = real_truths(shared_data, "casme2-spot", "CAS(ME)^2code_final(Updated).csv")
    predictions = tagged_predictions(rows)
    for matching in ("maximum", "greedy"):
        result = evaluate(truths, predictions, fps=30, matching=matching)
        assert counts(result) == (194, 490, 163)
        assert counts(result, "micro") == (19, 112, 38)
        assert counts(result, "macro") == (175, 378, 125)
    # The very same ground truths are spotted (the file's gt columns use apex + 20 too).
    assert {(t.video, t.onset, t.offset) for t, _ in result.matches} == tagged_truths(rows)
    # Two videos in the file have no annotated expression: their predictions are FPs.
    assert result.unknown_videos == ("15_0508funnydunkey", "23_0503unnyfarting")


@pytest.mark.realdata
def test_real_samm_tagged_output_within_two_true_positives(shared_data):
    rows = tagged_rows(shared_data, "my_samm1.csv")
    truths = real_truths(shared_data, "samm-lv", "SAMM_LongVideos_V2_Release.csv")
    result = evaluate(truths, tagged_predictions(rows), fps=200)
    # The entrant tagged TP 183, FP 321, FN 319; the protocol gives 2 TPs more.
    assert counts(result) == (185, 319, 317)
    assert counts(result, "micro") == (28, 72, 131)
    assert counts(result, "macro") == (157, 247, 186)
    assert counts(evaluate(truths, tagged_predictions(rows), fps=200, matching="greedy")) == (185, 319, 317)
    # The file's SAMM gt frames are often one less than the sheet's; compare with that tolerance.
    ours = {(t.video, t.onset, t.offset) for t, _ in result.matches}
    theirs = tagged_truths(rows)
    extra = {
        (video, onset, offset) for video, onset, offset in ours
        if not any(v == video and abs(on - onset) <= 1 and abs(off - offset) <= 1 for v, on, off in theirs)
    }
    # Both are clear matches the entrant's tagging left out (IoU 0.63 and 0.73 with a prediction tagged FP).
    assert extra == {("007_7", 596, 1044), ("011_5", 1778, 1950)}
    assert len(ours) - len(extra) == 183


@pytest.mark.realdata
def test_real_spot_result_files_through_the_command(shared_data, capsys):
    labels = shared_data / LABELS
    expected = {
        ("CAS(ME)^2code_final(Updated).csv", "casme_spot_result_test.csv"): (176, 435, 181),
        ("SAMM_LongVideos_V2_Release.csv", "samm_spot_result_test.csv"): (173, 319, 329),
    }
    for (sheet, predictions), overall in expected.items():
        if not (labels / "spot_result_test" / predictions).is_file():
            pytest.skip(f"{predictions} not present")
        argv = ["-q", "eval-spot", "--gt", str(labels / "datasetlabel" / sheet),
                "--pred", str(labels / "spot_result_test" / predictions), "--json"]
        assert main(argv) == 0
        report = json.loads(capsys.readouterr().out)["overall"]
        assert (report["tp"], report["fp"], report["fn"]) == overall
