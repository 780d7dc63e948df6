"""Every reader, on sheets and layouts written by the project's own writers (no real data).

Each schema is written with ``training.datasets.sheets`` into tmp_path, read back with
``load_dataset`` and compared field by field; malformed sheets must name row and column.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import InputError
from training.classmaps import labels_for
from training.datasets import DATASET_NAMES, load_dataset
from training.datasets.sheets import (
    write_casme2_coding_sheet,
    write_casme2spot_sheet,
    write_casme3_sheet,
    write_clip_frames,
    write_composite_flow_images,
    write_composite_sheet,
    write_mmew_sheet,
    write_samm_lv_sheet,
    write_samm_sheet,
)
from training.datasets.tables import cell_text, read_rows, write_rows
from training.samples import Interval, Sample


def tiny_frames(count: int) -> list[np.ndarray]:
    return [np.full((8, 8, 3), 10 * index, dtype=np.uint8) for index in range(count)]


def casme2_sample(subject="sub01", sample_id="EP02_01f", emotion="happiness", onset=46, apex=59, offset=86, aus=("12",)):
    return Sample("casme2", subject, sample_id, emotion, onset, apex, offset, aus, labels_for("casme2", emotion))


CASME2_SAMPLES = [
    casme2_sample(),
    casme2_sample("sub04", "EP12_01f", "disgust", 261, None, 321, ("4", "7", "L10")),
    casme2_sample("sub17", "EP15_03f", "fear", 10, 20, 20, ("R4",)),
]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_casme2_sheet_round_trip_with_missing_apex(tmp_path, suffix):
    sheet = tmp_path / f"coding{suffix}"
    write_casme2_coding_sheet(sheet, CASME2_SAMPLES)
    assert load_dataset("casme2", sheet=sheet) == CASME2_SAMPLES
    rows = read_rows(sheet)
    assert [cell_text(cell) for cell in rows[0]] == [
        "Subject", "Filename", "", "OnsetFrame", "ApexFrame", "OffsetFrame", "", "Action Units", "Estimated Emotion",
    ]
    assert rows[2][0] == "04" and rows[2][4] == "/"


def test_casme2_objective_class_column_and_frames_in_onset_offset_range(tmp_path):
    sample = Sample("casme2", "sub01", "EP02_01f", "happiness", 3, 4, 5, ("12",), labels_for("casme2", "happiness"),
                    attributes={"objective_class": "1"})
    write_casme2_coding_sheet(tmp_path / "CASME2-coding-20190701.xlsx", [sample])
    # Frames 2..6 on disk: 2 and 6 lie outside onset..offset and are not the sample's.
    written = write_clip_frames("casme2", tmp_path, Sample(**{**sample.__dict__, "onset": 2}), tiny_frames(5))
    assert [path.name for path in written] == ["img2.jpg", "img3.jpg", "img4.jpg", "img5.jpg", "img6.jpg"]
    (loaded,) = load_dataset("casme2", root=tmp_path)
    assert loaded.attributes == {"objective_class": "1"}
    assert [path.name for path in loaded.frames] == ["img3.jpg", "img4.jpg", "img5.jpg"]
    assert loaded.frames[0].parent == tmp_path / "sub01" / "EP02_01f"


def test_casme2_cropped_reg_img_frames_are_found(tmp_path):
    sample = casme2_sample(onset=1, apex=2, offset=3)
    write_casme2_coding_sheet(tmp_path / "sheet.csv", [sample])
    folder = tmp_path / "sub01" / "EP02_01f"
    folder.mkdir(parents=True)
    for number in (1, 2, 3, 10):
        (folder / f"reg_img{number}.jpg").write_bytes(b"")
    (loaded,) = load_dataset("casme2", root=tmp_path, sheet=tmp_path / "sheet.csv")
    assert [path.name for path in loaded.frames] == ["reg_img1.jpg", "reg_img2.jpg", "reg_img3.jpg"]


SAMM_SAMPLES = [
    Sample("samm", "006", "006_1_2", "anger", 5562, 5588, 5632, ("4", "7"), labels_for("samm", "anger"),
           attributes={"inducement_code": "1", "objective_class": "3"}),
    Sample("samm", "011", "011_2_1", "other", 10, 12, 14, ("4(B/C)", "7B"), labels_for("samm", "other"),
           attributes={"inducement_code": "2", "objective_class": "7", "notes": "While blinking"}),
]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_samm_sheet_round_trip_finds_header_after_preamble(tmp_path, suffix):
    sheet = tmp_path / f"samm{suffix}"
    write_samm_sheet(sheet, SAMM_SAMPLES)
    assert load_dataset("samm", sheet=sheet) == SAMM_SAMPLES
    assert read_rows(sheet)[0] == ["SAMM Dataset - Master FACS Codes"]


def test_samm_csv_export_subject_without_padding_and_frames(tmp_path):
    header = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
              "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
    write_rows(tmp_path / "s.csv", [["a preamble line"], [], header, [6, "006_1_2", 1, 3, 4, 5, 3, "Micro - 1/2", 4, "Happiness", 1]])
    sample = Sample("samm", "006", "006_1_2", "happiness", 3, 4, 5)
    write_clip_frames("samm", tmp_path, sample, tiny_frames(4))
    (loaded,) = load_dataset("samm", root=tmp_path, sheet=tmp_path / "s.csv")
    assert (loaded.subject, loaded.action_units, loaded.emotion) == ("006", ("4",), "happiness")
    assert [path.name for path in loaded.frames] == ["006_00003.jpg", "006_00004.jpg", "006_00005.jpg"]
    assert loaded.frames[0].parent == tmp_path / "006" / "006_1_2"


def test_samm_known_sheet_error_is_fixed_and_an_unexpected_value_is_refused(tmp_path):
    broken = Sample("samm", "028", "028_4_1", "contempt", 1071, 1143, 1134)
    write_samm_sheet(tmp_path / "s.xlsx", [broken])
    (loaded,) = load_dataset("samm", sheet=tmp_path / "s.xlsx")
    assert loaded.apex == 1100
    write_samm_sheet(tmp_path / "t.xlsx", [Sample("samm", "028", "028_4_1", "contempt", 1071, 1120, 1134)])
    with pytest.raises(InputError) as caught:
        load_dataset("samm", sheet=tmp_path / "t.xlsx")
    assert (caught.value.row, caught.value.column) == (12, "Apex Frame")


def test_smic_layout_gives_onset_offset_from_frames_and_middle_apex(tmp_path):
    negative = Sample("smic", "s01", "s1_ne_01", "negative", 106720)
    positive = Sample("smic", "s12", "s12_po_02", "positive", 500)
    write_clip_frames("smic", tmp_path, negative, tiny_frames(4))
    write_clip_frames("smic", tmp_path, positive, tiny_frames(3))
    assert (tmp_path / "HS" / "s1" / "micro" / "negative" / "s1_ne_01" / "image106720.bmp").is_file()
    loaded = load_dataset("smic", root=tmp_path)
    assert [(s.subject, s.sample_id, s.emotion, s.onset, s.apex, s.offset) for s in loaded] == [
        ("s01", "s1_ne_01", "negative", 106720, 106721, 106723),
        ("s12", "s12_po_02", "positive", 500, 501, 502),
    ]
    assert [path.name for path in loaded[0].frames] == [f"image{n:06d}.bmp" for n in range(106720, 106724)]
    assert loaded[1].labels == {"megc3": "positive"}
    assert load_dataset("smic", root=tmp_path / "HS") == loaded


def test_smic_refuses_a_sheet_and_a_folder_without_subjects(tmp_path):
    with pytest.raises(InputError, match="no annotation sheet"):
        load_dataset("smic", root=tmp_path, sheet=tmp_path / "x.csv")
    with pytest.raises(InputError, match="SMIC-HS folder not found"):
        load_dataset("smic", root=tmp_path)
    (tmp_path / "HS").mkdir()
    with pytest.raises(InputError, match="no subject folders"):
        load_dataset("smic", root=tmp_path)


def test_mmew_round_trip_with_frames(tmp_path):
    samples = [
        Sample("mmew", "S01", "01_001", "disgust", 1, 2, 3, ("4", "L10"), labels_for("mmew", "disgust"),
               attributes={"remarks": "blink"}),
        Sample("mmew", "S02", "02_003", "anger", 10, 15, 20, ("4",), labels_for("mmew", "anger")),
    ]
    write_mmew_sheet(tmp_path / "MMEW_Final.xlsx", samples)
    frames = write_clip_frames("mmew", tmp_path / "Micro_Expression", samples[0], tiny_frames(3))
    loaded = load_dataset("mmew", root=tmp_path)
    assert loaded[0].frames == frames and frames[0] == tmp_path / "Micro_Expression" / "disgust" / "01_001" / "1.jpg"
    assert [Sample(**{**s.__dict__, "frames": ()}) for s in loaded] == samples
    assert loaded[1].labels == {"megc3": "negative"}


def test_casme3_round_trip_and_label_column_check(tmp_path):
    samples = [
        Sample("casme3", "spNO.1", "b_166", "disgust", 166, 175, 179, ("4",), labels_for("casme3", "disgust"),
               attributes={"clip": "b", "objective_class": "III"}),
        Sample("casme3", "spNO.1", "b_300", "others", 300, 301, 305, ("12",), labels_for("casme3", "others"),
               attributes={"clip": "b", "objective_class": "VII"}),
    ]
    write_casme3_sheet(tmp_path / "cas(me)3_part_A_edited.csv", samples)
    write_clip_frames("casme3", tmp_path, samples[0], tiny_frames(2))
    loaded = load_dataset("casme3", root=tmp_path)
    assert [path.name for path in loaded[0].frames] == ["166.jpg", "167.jpg"]
    assert [Sample(**{**s.__dict__, "frames": ()}) for s in loaded] == samples
    rows = read_rows(tmp_path / "cas(me)3_part_A_edited.csv")
    assert rows[1][8:10] == ["4", "0"] and rows[2][8:10] == ["0", ""]
    rows[1][9] = "2"
    write_rows(tmp_path / "bad.csv", rows)
    with pytest.raises(InputError) as caught:
        load_dataset("casme3", sheet=tmp_path / "bad.csv")
    assert (caught.value.row, caught.value.column) == (2, "label_for_3")


def test_casme2_spot_round_trip_with_missing_offset_apex_and_aus(tmp_path):
    intervals = [
        Interval("casme2-spot", "s15", "15_0401girlcrashing", 557, 572, 608, "macro", ("4", "10"), "negative", "anger1_1"),
        Interval("casme2-spot", "s15", "15_0402beatingpregnantwoman", 2155, 2163, None, "macro", (), "negative", "anger2_1"),
        Interval("casme2-spot", "s34", "34_0401girlcrashing", 1763, None, 1787, "micro", ("24",), "others", "anger1_1"),
    ]
    sheet = tmp_path / "CAS(ME)^2code_final(Updated).csv"
    write_casme2spot_sheet(sheet, intervals)
    assert read_rows(sheet)[1][4:6] == ["0", "NULL"]
    assert load_dataset("casme2-spot", root=tmp_path) == intervals


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_samm_lv_round_trip_with_missing_apex(tmp_path, suffix):
    intervals = [
        Interval("samm-lv", "006", "006_1", 566, 648, 743, "macro", ("4(B/C)", "7B"), "", "006_1_1"),
        Interval("samm-lv", "006", "006_1", 3562, None, 3632, "micro", ("4", "7"), "", "006_1_2"),
    ]
    sheet = tmp_path / f"lv{suffix}"
    write_samm_lv_sheet(sheet, intervals)
    rows = read_rows(sheet)
    assert [cell_text(cell) for cell in rows[9]] == ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset",
                                                "Duration", "Type", "Action Units", "Notes"]
    assert [cell_text(cell) for cell in rows[11][3:8]] == ["3562", "-1", "3632", "71", "Micro - 1/2"]
    assert load_dataset("samm-lv", sheet=sheet) == intervals


def test_composite_csv_and_flow_pngs_round_trip(tmp_path):
    samples = [
        Sample("megc2019-flow", "sub01", "EP02_01f", "positive", labels={"megc3": "positive"}, source="casme2",
               attributes={"imagename": "sub01_EP02_01f.jpg"}),
        Sample("megc2019-flow", "s01", "s01_ne_01", "negative", labels={"megc3": "negative"}, source="smic",
               attributes={"imagename": "s01_s1_ne_01.jpg"}),
        Sample("megc2019-flow", "006", "006_1_2", "surprise", labels={"megc3": "surprise"}, source="samm",
               attributes={"imagename": "006_006_1_2.jpg"}),
    ]
    write_composite_sheet(tmp_path / "combined_3_class2_for_optical_flow.csv", samples)
    write_composite_flow_images(tmp_path, [(s, np.zeros((28, 28, 3), np.uint8)) for s in samples[:2]])
    apex = tmp_path / "datasets" / "combined_datasets_whole" / "s01_s1_ne_01.jpg"
    apex.parent.mkdir(parents=True)
    apex.write_bytes(b"")
    loaded = load_dataset("megc2019-flow", root=tmp_path)
    flow = tmp_path / "datasets" / "STSNet_whole_norm_u_v_os"
    assert loaded[0].frames == (flow / "sub01_EP02_01f .png",)
    assert loaded[1].frames == (flow / "s01_s01_ne_01 .png",)
    assert loaded[1].attributes == {"imagename": "s01_s1_ne_01.jpg", "apex_image": str(apex)}
    assert loaded[2].frames == () and loaded[2].attributes == {"imagename": "006_006_1_2.jpg"}
    assert [Sample(**{**s.__dict__, "frames": (), "attributes": {"imagename": s.attributes["imagename"]}}) for s in loaded] == samples
    assert read_rows(tmp_path / "combined_3_class2_for_optical_flow.csv")[1][:4] == ["casme2", "sub01", "EP02_01f", "1"]


# ---- malformed sheets: the error names the file, the row and the column --------------------

CASME2_HEADER = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units", "Estimated Emotion"]


@pytest.mark.parametrize(
    ("row", "column", "message"),
    [
        (["01", "EP01", None, "4x", 5, 6, None, "12", "happiness"], "OnsetFrame", "integer"),
        (["01", "EP01", None, 4, 5.5, 6, None, "12", "happiness"], "ApexFrame", "integer"),
        (["01", "EP01", None, 9, 5, 6, None, "12", "happiness"], "OffsetFrame", "after offset"),
        (["01", "EP01", None, 4, 5, 6, None, "12", "joy"], "Estimated Emotion", "unknown emotion 'joy'"),
        (["01", "", None, 4, 5, 6, None, "12", "happiness"], "Filename", "empty"),
    ],
)
@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_malformed_casme2_rows_name_row_and_column(tmp_path, suffix, row, column, message):
    sheet = tmp_path / f"bad{suffix}"
    good = ["01", "EP00", None, 1, 2, 3, None, "12", "happiness"]
    write_rows(sheet, [CASME2_HEADER, good, row])
    with pytest.raises(InputError, match=message) as caught:
        load_dataset("casme2", sheet=sheet)
    assert (caught.value.path, caught.value.row, caught.value.column) == (sheet, 3, column)
    assert f"{sheet}, row 3, column '{column}'" in str(caught.value)


def test_missing_column_is_named(tmp_path):
    sheet = tmp_path / "bad.csv"
    write_rows(sheet, [[c for c in CASME2_HEADER if c != "ApexFrame"], ["01", "EP01", None, 4, 6, None, "12", "happiness"]])
    with pytest.raises(InputError) as caught:
        load_dataset("casme2", sheet=sheet)
    assert (caught.value.row, caught.value.column, caught.value.reason) == (1, "ApexFrame", "missing column")


def test_spotting_sheet_errors_name_row_and_column(tmp_path):
    good = Interval("casme2-spot", "s15", "15_0401girlcrashing", 557, 572, 608, "macro", ("4",), "negative", "anger1_1")
    write_casme2spot_sheet(tmp_path / "spot.csv", [good, good])
    rows = read_rows(tmp_path / "spot.csv")
    rows[1][7] = "meso-expression"
    write_rows(tmp_path / "spot.csv", rows)
    with pytest.raises(InputError) as caught:
        load_dataset("casme2-spot", sheet=tmp_path / "spot.csv")
    assert (caught.value.row, caught.value.column) == (2, "type")
    write_rows(tmp_path / "short.csv", [rows[0][:10]])
    with pytest.raises(InputError) as caught:
        load_dataset("casme2-spot", sheet=tmp_path / "short.csv")
    assert (caught.value.row, caught.value.column) == (1, "video path")


def test_registry_names_and_errors(tmp_path):
    assert DATASET_NAMES == ("casme2", "samm", "smic", "mmew", "casme3", "fer2013", "rafdb", "ckplus", "megc2019-apex",
                             "casme2-spot", "samm-lv", "megc2019-flow", "prepared")
    with pytest.raises(InputError, match="unknown dataset 'casme4'"):
        load_dataset("casme4", root=tmp_path)
    with pytest.raises(InputError, match="give a sheet or a root"):
        load_dataset("casme2")
    with pytest.raises(InputError, match="none of CASME2-coding-20190701.xlsx"):
        load_dataset("casme2", root=tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_dataset("casme2", sheet=tmp_path / "absent.xlsx")
    (tmp_path / "sheet.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported sheet format"):
        load_dataset("casme2", sheet=tmp_path / "sheet.txt")
