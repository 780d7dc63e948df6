"""The readers on the licensed sheets in ../shared/data: exact published counts and rows.

Skipped when the data folder is absent (see conftest.shared_data).
"""

from __future__ import annotations

from collections import Counter

import pytest

from training.datasets import load_dataset

pytestmark = pytest.mark.realdata

CASME2_XLSX = "AnalyseMiE-CNN_LSTM_SE/CASME2-coding-20190701.xlsx"
SHEETS = "MEGC2024-CODE/label/datasetlabel"


@pytest.mark.parametrize("sheet", [CASME2_XLSX, f"{SHEETS}/CASME2-coding-20190701.csv"])
def test_casme2_counts_and_rows(shared_data, sheet):
    samples = load_dataset("casme2", sheet=shared_data / sheet)
    assert (len(samples), len({s.subject for s in samples})) == (255, 26)
    first = samples[0]
    assert (first.subject, first.sample_id, first.onset, first.apex, first.offset) == ("sub01", "EP02_01f", 46, 59, 86)
    assert (first.action_units, first.emotion, first.labels) == (("12",), "happiness", {"megc3": "positive", "casme2-5": "happiness"})
    (no_apex,) = [s for s in samples if s.apex is None]  # the sheet's '/' apex
    assert (no_apex.key, no_apex.onset, no_apex.offset, no_apex.action_units) == ("sub04/EP12_01f", 261, 321, ("4", "7", "L10"))
    assert Counter(s.emotion for s in samples) == {
        "others": 99, "disgust": 63, "happiness": 32, "surprise": 28, "repression": 27, "sadness": 4, "fear": 2,
    }
    # The 2019 sheet regrouped gives 90/32/28, the MEGC2019 composite (older sheet) 88/32/25.
    assert Counter(s.labels.get("megc3") for s in samples) == {None: 105, "negative": 90, "positive": 32, "surprise": 28}


@pytest.mark.parametrize("sheet", ["AnalyseMiE-CNN_LSTM_SE/SAMM_Micro_FACS_Codes_v2.xlsx", f"{SHEETS}/SAMM_Micro_FACS_Codes_v2.csv"])
def test_samm_counts_rows_and_fixes(shared_data, sheet):
    samples = load_dataset("samm", sheet=shared_data / sheet)
    assert (len(samples), len({s.subject for s in samples})) == (159, 29)
    first = samples[0]
    assert (first.key, first.onset, first.apex, first.offset, first.action_units, first.emotion) == (
        "006/006_1_2", 5562, 5588, 5632, ("4", "7"), "anger",
    )
    by_key = {s.key: s for s in samples}
    assert by_key["028/028_4_1"].apex == 1100 and by_key["032/032_3_1"].apex == 4930
    assert Counter(s.labels.get("megc3") for s in samples) == {"negative": 92, "positive": 26, "surprise": 15, None: 26}
    assert Counter(s.labels.get("samm-5") for s in samples) == {
        "anger": 57, "other": 26, "happiness": 26, "surprise": 15, "contempt": 12, None: 23,
    }


def test_composite_counts_subjects_and_files(shared_data):
    root = shared_data / "HTNet"
    samples = load_dataset("megc2019-flow", root=root)
    assert len(samples) == 442
    counts = Counter((s.source, s.labels["megc3"]) for s in samples)
    assert counts == {
        ("casme2", "negative"): 88, ("casme2", "positive"): 32, ("casme2", "surprise"): 25,
        ("smic", "negative"): 70, ("smic", "positive"): 51, ("smic", "surprise"): 43,
        ("samm", "negative"): 92, ("samm", "positive"): 26, ("samm", "surprise"): 15,
    }
    checkpoints = {path.stem for path in (shared_data / "STSTNet" / "STSTNet_Weights").glob("*.pth")}
    assert {s.subject for s in samples} == checkpoints and len(checkpoints) == 68
    names = (shared_data / "STSTNet" / "video442Names.txt").read_text().split()
    assert [f"{s.subject}_{s.sample_id}" for s in samples] == names
    assert all(len(s.frames) == 1 and s.frames[0].is_file() for s in samples)
    smic = next(s for s in samples if s.key == "s03/s03_ne_01")
    assert smic.frames[0].name == "s03_s03_ne_01 .png"
    assert smic.attributes["apex_image"] == str(root / "datasets" / "combined_datasets_whole" / "s03_s3_ne_01.jpg")


def test_casme2_spot_counts_and_missing_frames(shared_data):
    intervals = load_dataset("casme2-spot", root=shared_data / SHEETS)
    assert len(intervals) == 357
    assert Counter(i.kind for i in intervals) == {"macro": 300, "micro": 57}
    assert sum(i.offset is None for i in intervals) == 44
    no_offset = next(i for i in intervals if i.video == "15_0402beatingpregnantwoman" and i.expression_id == "anger2_1")
    assert (no_offset.subject, no_offset.onset, no_offset.apex, no_offset.offset, no_offset.action_units) == ("s15", 2155, 2163, None, ())
    first = intervals[0]
    assert (first.subject, first.video, first.onset, first.apex, first.offset, first.emotion) == (
        "s15", "15_0401girlcrashing", 557, 572, 608, "negative",
    )


def test_samm_lv_counts_and_missing_apex(shared_data):
    intervals = load_dataset("samm-lv", root=shared_data / SHEETS)
    assert len(intervals) == 502
    assert Counter(i.kind for i in intervals) == {"macro": 343, "micro": 159}
    assert sum(i.apex is None for i in intervals) == 6
    by_id = {i.expression_id: i for i in intervals}
    micro = by_id["006_1_2"]
    assert (micro.subject, micro.video, micro.onset, micro.apex, micro.offset, micro.kind, micro.action_units) == (
        "006", "006_1", 3562, 3588, 3632, "micro", ("4", "7"),
    )
    missing = next(i for i in intervals if i.apex is None)
    assert missing.onset is not None and missing.offset is not None


def test_casme3_counts_and_label_columns_agree(shared_data):
    samples = load_dataset("casme3", root=shared_data / "HTNet")
    assert (len(samples), len({s.subject for s in samples}), len({s.key for s in samples})) == (687, 87, 687)
    assert Counter(s.labels["casme3-3"] for s in samples) == {"negative": 449, "surprise": 184, "positive": 54}
    first = samples[0]
    assert (first.subject, first.sample_id, first.onset, first.apex, first.offset, first.emotion) == (
        "spNO.1", "b_166", 166, 175, 179, "disgust",
    )
