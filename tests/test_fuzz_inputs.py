"""Hostile input for every reader of user files and wire payloads: a result, or one clear error.

Property-based tests (hypothesis) of the readers issue 7 names: the annotation-sheet readers
(csv and xlsx, and the label files of SMIC, CK+, RAF-DB and a prepared cache), ``mer
eval-spot``'s predictions csv, the TOML config loader, and the event decoder (``decode_event``,
the journal reader, and ``EventSubscriber`` on real ZeroMQ sockets). Inputs start from valid
files written by the project's own writers and are damaged cell by cell, byte by byte or key
by key. Two outcomes are allowed: a result that keeps the reader's contract, or a ``MerError``
whose one-line message names the file (or endpoint) and, where there is one, the row, column,
key or field. Anything else (KeyError, zipfile.BadZipFile, RecursionError ...) fails the test.

CI runs each property on a small sample that is the same on every run (``derandomize``);
``bench/fuzz.py`` runs the same properties on fresh random samples of any size by setting
``MER_FUZZ_EXAMPLES``. docs/reliability.md lists what they found.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import os
import shutil
import tempfile
import threading
import tomllib
import zipfile
from collections.abc import Callable
from datetime import date, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from engines.config import load_config
from engines.errors import ConfigError, InputError, MerError
from streamer.cli import main
from streamer.events import EventSchemaError, decode_event, is_integer, validate_event
from streamer.journal import EventJournal, encode_event, read_journal
from streamer.publisher import topic_for
from streamer.spotting.params import SpotParams
from streamer.stream_config import StreamConfig
from streamer.subscriber import EventSubscriber, ReplayError
from tests.test_datasets_fixtures import CASME2_SAMPLES, SAMM_SAMPLES
from tests.test_events import full_event
from tests.test_macro_datasets import COMPOSITE, _ck_landmarks, fer_row, write_ckplus_sequence, write_fer_csv
from tests.test_spotting_eval import CASME2_INTERVALS, SAMM_INTERVALS
from training.classmaps import labels_for
from training.commands.spot import read_predictions
from training.datasets import SPOTTING_DATASETS, load_dataset
from training.datasets.prepared import CACHE_FORMAT
from training.datasets.sheets import (
    write_casme2_coding_sheet,
    write_casme2spot_sheet,
    write_casme3_sheet,
    write_composite_sheet,
    write_mmew_sheet,
    write_samm_lv_sheet,
    write_samm_sheet,
)
from training.datasets.smic import EMOTION_FOLDERS
from training.datasets.tables import cell_text, read_rows, write_rows
from training.prepare import sample_entry
from training.recipes import TrainRecipe
from training.samples import Interval, Sample
from training.synthetic.settings import SynthSettings

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# hypothesis keeps caches (its unicode tables) under a home folder: never the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "mer-hypothesis")

LONG_RUN_EXAMPLES = int(os.environ.get("MER_FUZZ_EXAMPLES", "0"))


def budget(examples: int) -> settings:
    """``examples`` per property in CI, the same ones every run; bench/fuzz.py's count of fresh ones otherwise."""
    return settings(
        max_examples=LONG_RUN_EXAMPLES or examples,
        derandomize=not LONG_RUN_EXAMPLES,
        print_blob=bool(LONG_RUN_EXAMPLES),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---- the two allowed outcomes ----------------------------------------------------------------


def assert_clear(error: MerError, *names: object) -> None:
    """One line that names the input (a file, an endpoint) and, for a row, a real 1-based one."""
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert any(str(name) in message for name in names), f"{message!r} names none of {names}"
    if isinstance(error, InputError) and error.row is not None:
        assert error.row >= 1, message


def result_or_clear_error(read: Callable[[], T], *names: object) -> T | None:
    """``read()``'s result, or None when it raised a clear ``MerError``; any other exception fails."""
    try:
        return read()
    except MerError as error:
        assert_clear(error, *names)
        return None


# ---- hostile values ---------------------------------------------------------------------------

# Text that readers give a meaning to (frame numbers, "missing" markers, labels, types) or that
# trips parsers: numbers Python parses but int() refuses, digits that are not 0-9, separators.
TRICKY_TEXT = (
    "", " ", "/", "-1", "0", "1", "3", "12.0", "1.5", "-0", "+7", "nan", "NaN", "inf", "-inf", "1e400", "9" * 40,
    "99999999999999999999", "0x1f", "1_000", "NULL", "²", "١٢", "𝟙", "\u2028", "\x0b", "\x00", "\ufeff", "=1+1",
    '"', ",", "\n", "\r", ";", "sub01", "EP02_01f", "happiness", "Happiness", "others", "disgust", "Micro - 1/2",
    "Macro", "macro-expression", "micro-expression", "s15/15_0401girlcrashing", "15_0101disgustingteeth", "006_1",
    "006_1_2", "a/b", "casme2", "smic", "samm", "Training", "PublicTest", "4+7+L10", "spNO.1", "0 255 7",
    "train_00001.jpg 4",
)
BIG_NUMBERS = (10**30, -(2**63), 2**63, 2**64 + 1, -1, 0, 2**53 + 1)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=16)  # no lone surrogates: not encodable
CELLS = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(BIG_NUMBERS), st.floats(),
                  st.sampled_from(TRICKY_TEXT), TEXT)
KEYS = st.one_of(st.sampled_from(["seq", "frame", "t", "events", "more", "format", "samples", "labels", "schema",
                                  "", "x"]), TEXT)


def _containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3)


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(BIG_NUMBERS), st.floats(),
                        st.sampled_from(TRICKY_TEXT), TEXT)
JSON_VALUES = st.recursive(JSON_LEAVES, _containers, max_leaves=6)
TOML_LEAVES = st.one_of(st.booleans(), st.integers(), st.sampled_from(BIG_NUMBERS), st.floats(),
                        st.sampled_from(TRICKY_TEXT), TEXT, st.datetimes(), st.dates(), st.times())
TOML_VALUES = st.recursive(TOML_LEAVES, _containers, max_leaves=6)


def json_bytes(value: Any) -> bytes:
    """JSON as Python writes it, NaN and Infinity included (Python's reader accepts them too)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def mutate_bytes(blob: bytes, data: st.DataObject) -> bytes:
    """``blob`` with one to four edits: a byte changed, junk inserted, a range cut or repeated, the tail cut."""
    blob = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4), label="byte edits")):
        at = data.draw(st.integers(0, len(blob)), label="at byte")
        edit = data.draw(st.sampled_from(["set", "insert", "cut", "repeat", "truncate"]), label="byte edit")
        if edit == "set" and at < len(blob):
            blob[at] = data.draw(st.integers(0, 255), label="byte")
        elif edit == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=16), label="junk")
        elif edit == "cut":
            del blob[at:at + data.draw(st.integers(1, 64), label="length")]
        elif edit == "repeat":
            blob[at:at] = blob[at:at + data.draw(st.integers(1, 64), label="length")]
        elif edit == "truncate":
            del blob[at:]
    return bytes(blob)


def _places(tree: Any, path: tuple = ()) -> list[tuple[tuple, Any, Any]]:
    """(path, container, key) of every value nested in ``tree``'s dicts and lists."""
    found = []
    keys = list(tree) if isinstance(tree, dict) else range(len(tree)) if isinstance(tree, list) else []
    for key in keys:
        found.append((path + (key,), tree, key))
        found.extend(_places(tree[key], path + (key,)))
    return found


def mutate_tree(tree: Any, values: st.SearchStrategy, data: st.DataObject, *, whole: bool = True) -> Any:
    """A copy of nested dicts/lists with one to three values replaced, removed or added at any depth
    (or, when ``whole``, the whole thing replaced)."""
    tree = copy.deepcopy(tree)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        places = _places(tree)
        edits = ["replace", "replace", "remove", "add"] + (["whole"] if whole else [])
        edit = data.draw(st.sampled_from(edits), label="edit")
        if edit == "whole":
            tree = data.draw(values, label="whole value")
        elif edit == "add" or not places:
            containers = [tree] + [place[1][place[2]] for place in places]
            containers = [c for c in containers if isinstance(c, (dict, list))]
            if not containers:
                continue
            container = containers[data.draw(st.integers(0, len(containers) - 1), label="into")]
            value = data.draw(values, label="added value")
            if isinstance(container, dict):
                container[data.draw(KEYS, label="key")] = value
            else:
                container.insert(data.draw(st.integers(0, len(container)), label="index"), value)
        else:
            path, container, key = places[data.draw(st.integers(0, len(places) - 1), label="place")]
            note(f"{edit} {path}")
            if edit == "remove":
                del container[key]
            else:
                container[key] = data.draw(values, label="new value")
    return tree


# ---- annotation sheets -------------------------------------------------------------------------

MMEW_SAMPLES = [
    Sample("mmew", "S01", "01_001", "disgust", 1, 2, 3, ("4", "L10"), labels_for("mmew", "disgust"),
           attributes={"remarks": "blink"}),
    Sample("mmew", "S02", "02_003", "anger", 10, 15, 20, ("4",), labels_for("mmew", "anger")),
]
CASME3_SAMPLES = [
    Sample("casme3", "spNO.1", "b_166", "disgust", 166, 175, 179, ("4",), labels_for("casme3", "disgust"),
           attributes={"clip": "b", "objective_class": "III"}),
    Sample("casme3", "spNO.1", "b_300", "others", 300, 301, 305, ("12",), labels_for("casme3", "others"),
           attributes={"clip": "b"}),
]
VALID_SHEETS: dict[str, Callable[[Path], None]] = {
    "casme2": lambda path: write_casme2_coding_sheet(path, CASME2_SAMPLES),
    "samm": lambda path: write_samm_sheet(path, SAMM_SAMPLES),
    "mmew": lambda path: write_mmew_sheet(path, MMEW_SAMPLES),
    "casme3": lambda path: write_casme3_sheet(path, CASME3_SAMPLES),
    "casme2-spot": lambda path: write_casme2spot_sheet(path, CASME2_INTERVALS),
    "samm-lv": lambda path: write_samm_lv_sheet(path, SAMM_INTERVALS),
    "megc2019-flow": lambda path: write_composite_sheet(path, COMPOSITE),
    "megc2019-apex": lambda path: write_composite_sheet(path, COMPOSITE),
    "fer2013": lambda path: write_fer_csv(path, [fer_row(3, 0), fer_row(5, 1)]),
}
WORKSHEETS = {"samm": "MICRO_ONLY"}  # the workbook sheet a reader asks for, where it asks for one
SHEET_DATASETS = sorted(VALID_SHEETS)
SUFFIXES = (".csv", ".xlsx")


@functools.cache
def valid_sheet_bytes(dataset: str, suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"sheet{suffix}"
        VALID_SHEETS[dataset](path)
        return path.read_bytes()


@functools.cache
def valid_sheet_rows(dataset: str, suffix: str) -> tuple[tuple, ...]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"sheet{suffix}"
        path.write_bytes(valid_sheet_bytes(dataset, suffix))
        return tuple(tuple(row) for row in read_rows(path, WORKSHEETS.get(dataset) if suffix == ".xlsx" else None))


def mutate_rows(rows: tuple[tuple, ...], data: st.DataObject) -> list[list]:
    """One to four edits of a sheet: cells set, removed or inserted, rows removed, repeated, swapped or cut."""
    rows = [list(row) for row in rows]
    for _ in range(data.draw(st.integers(1, 4), label="sheet edits")):
        if not rows:
            break
        edit = data.draw(st.sampled_from(["set cell"] * 4 + ["delete cell", "insert cell", "delete row", "repeat row",
                                                             "swap rows", "cut row", "cut sheet"]), label="sheet edit")
        # Half of the edits hit the last rows: the data rows, below any preamble and header.
        r = data.draw(st.integers(0, len(rows) - 1) | st.integers(max(0, len(rows) - 3), len(rows) - 1), label="row")
        row = rows[r]
        c = data.draw(st.integers(0, len(row)), label="column")
        note(f"{edit} at row {r + 1}, column {c + 1}")
        if edit == "set cell":
            row.extend([None] * (c + 1 - len(row)))
            row[c] = data.draw(CELLS, label="cell")
        elif edit == "delete cell":
            del row[c:c + 1]
        elif edit == "insert cell":
            row.insert(c, data.draw(CELLS, label="cell"))
        elif edit == "delete row":
            del rows[r]
        elif edit == "repeat row":
            rows.insert(r, list(row))
        elif edit == "swap rows":
            s = data.draw(st.integers(0, len(rows) - 1), label="other row")
            rows[r], rows[s] = rows[s], rows[r]
        elif edit == "cut row":
            del row[c:]
        elif edit == "cut sheet":
            del rows[r:]
    return rows


def excel_safe(rows: list[list]) -> list[list]:
    """Cells openpyxl can store: it refuses control characters, which no workbook holds."""
    return [[ILLEGAL_CHARACTERS_RE.sub("", cell) if isinstance(cell, str) else cell for cell in row] for row in rows]


def write_sheet(path: Path, dataset: str, rows: list[list]) -> None:
    if path.suffix == ".xlsx":
        write_rows(path, excel_safe(rows), sheet_name=WORKSHEETS.get(dataset, "Sheet1"))
    else:
        write_rows(path, rows)


def check_records(records: list, dataset: str) -> None:
    """What every reader promises of the records it returns."""
    assert isinstance(records, list)
    for record in records:
        assert record.dataset == dataset
        frames = (record.onset, record.apex, record.offset)
        assert all(frame is None or is_integer(frame) for frame in frames), frames
        if record.onset is not None and record.offset is not None:
            assert record.onset <= record.offset, frames
        assert all(isinstance(unit, str) and unit for unit in record.action_units)
        if isinstance(record, Sample):
            assert all(isinstance(text, str) and text for text in (record.subject, record.sample_id, record.emotion))
            assert all(isinstance(key, str) and isinstance(value, str) for key, value in record.labels.items())
            assert all(isinstance(value, str) for value in record.attributes.values())
        else:
            assert isinstance(record, Interval) and record.kind in ("micro", "macro")
            assert record.subject and record.video


def load_sheet(dataset: str, sheet: Path, root: Path | None = None) -> list | None:
    records = result_or_clear_error(lambda: load_dataset(dataset, root=root, sheet=sheet), sheet)
    if records is not None:
        check_records(records, dataset)
    return records


@pytest.mark.parametrize("dataset", SHEET_DATASETS)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_the_valid_sheets_the_properties_start_from_are_read(tmp_path, dataset, suffix):
    sheet = tmp_path / f"sheet{suffix}"
    sheet.write_bytes(valid_sheet_bytes(dataset, suffix))
    assert len(load_sheet(dataset, sheet)) >= 2


@budget(120)
@given(dataset=st.sampled_from(SHEET_DATASETS), suffix=st.sampled_from(SUFFIXES), data=st.data())
def test_edited_sheets_give_records_or_an_error_naming_the_file(tmp_path, dataset, suffix, data):
    sheet = tmp_path / f"sheet{suffix}"
    write_sheet(sheet, dataset, mutate_rows(valid_sheet_rows(dataset, suffix), data))
    load_sheet(dataset, sheet, root=tmp_path / "frames")


@budget(120)
@given(dataset=st.sampled_from(SHEET_DATASETS), suffix=st.sampled_from(SUFFIXES), data=st.data())
def test_corrupted_sheet_files_give_records_or_an_error_naming_the_file(tmp_path, dataset, suffix, data):
    sheet = tmp_path / f"sheet{suffix}"
    sheet.write_bytes(mutate_bytes(valid_sheet_bytes(dataset, suffix), data))
    load_sheet(dataset, sheet)


@budget(120)
@given(dataset=st.sampled_from(SHEET_DATASETS), data=st.data())
def test_workbooks_with_a_damaged_part_give_records_or_an_error_naming_the_file(tmp_path, dataset, data):
    """An xlsx is a zip of XML parts, read lazily: damage inside a valid zip reaches the sheet parser."""
    parts = zip_members(valid_sheet_bytes(dataset, ".xlsx"))
    name = data.draw(st.sampled_from(sorted(parts)), label="part")
    if data.draw(st.booleans(), label="drop the part"):
        del parts[name]
    else:
        parts[name] = mutate_bytes(parts[name], data)
    sheet = tmp_path / "sheet.xlsx"
    with zipfile.ZipFile(sheet, "w", zipfile.ZIP_DEFLATED) as archive:
        for part, content in parts.items():
            archive.writestr(part, content)
    load_sheet(dataset, sheet)


def zip_members(blob: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@budget(80)
@given(rows=st.lists(st.lists(st.one_of(st.sampled_from(TRICKY_TEXT), TEXT), max_size=4), min_size=1, max_size=4),
       suffix=st.sampled_from(SUFFIXES))
def test_any_text_cells_read_back_as_written(tmp_path, rows, suffix):
    """What a sheet holds is what the readers see: no cell is split, merged or lost."""
    if suffix == ".xlsx":
        # openpyxl refuses control characters and writes a carriage return raw, which XML reads back as
        # a line feed (Excel itself writes _x000D_): limits of the test's writer, not of the reader.
        rows = [[ILLEGAL_CHARACTERS_RE.sub("", cell).replace("\r", "") for cell in row] for row in rows]
        assume(not any(cell.startswith("=") for row in rows for cell in row))  # a formula, not text
    else:
        assume(not (rows[0] and rows[0][0].startswith("\ufeff")))  # read as the byte-order mark of a UTF-8 file
    sheet = tmp_path / f"cells{suffix}"
    write_rows(sheet, rows)
    expected = [[cell_text(cell) for cell in row] for row in rows]
    while expected and not any(expected[-1]):
        expected.pop()  # a workbook does not keep trailing empty rows
    got = [[cell_text(cell) for cell in row] for row in read_rows(sheet)]
    assert [_trimmed(row) for row in got[:len(expected)]] == [_trimmed(row) for row in expected]
    assert not any(any(row) for row in got[len(expected):])


def _trimmed(row: list[str]) -> list[str]:
    while row and not row[-1]:
        row = row[:-1]
    return row


# -- the layouts whose folder and file names are the annotation: SMIC, CK+ --

# File and folder names, control characters and line separators included (a name holding a line
# break once made an InputError two lines; engines/errors.py now escapes unprintable paths).
NAMES = st.one_of(
    st.sampled_from(["s1", "s01", "s²", "s١", "s", "S2", "s1 ", "s_1", "negative", "s1_ne_01"]),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"), min_size=1,
            max_size=12),
).filter(lambda name: name not in {".", ".."} and len(name.encode()) <= 100)
FRAME_NAMES = st.tuples(
    st.sampled_from(["image", "reg_image", "", "img"]),
    st.one_of(st.sampled_from(["000001", "106720", "²", "١٢", "𝟙", "-1", "1.5", ""]), NAMES),
    st.sampled_from([".bmp", ".jpg", ".png", ".BMP", ".txt", ""]),
).map("".join).filter(lambda name: name not in {"", ".", ".."} and "/" not in name and len(name.encode()) <= 100)


@budget(60)
@given(subject=NAMES, emotion=st.sampled_from(EMOTION_FOLDERS + ("neutral",)), clip=NAMES,
       frames=st.lists(FRAME_NAMES, max_size=4, unique=True))
def test_smic_folders_of_any_names_give_samples_or_an_error_naming_the_folder(tmp_path, subject, emotion, clip, frames):
    root = tmp_path / "smic"
    shutil.rmtree(root, ignore_errors=True)
    clip_folder = root / "HS" / subject / "micro" / emotion / clip
    clip_folder.mkdir(parents=True)
    for name in frames:
        (clip_folder / name).write_bytes(b"")
    samples = result_or_clear_error(lambda: load_dataset("smic", root=root), root)
    if samples is not None:
        check_records(samples, "smic")
        for sample in samples:
            assert sample.onset <= sample.apex <= sample.offset and sample.sample_id == clip


CK_LANDMARKS = "\n".join(" ".join(f"{value:15.7e}" for value in point) for point in _ck_landmarks(320, 250)).encode()
CK_EMOTION = b"   3.0000000e+00\n"


@budget(60)
@given(frame=st.one_of(st.sampled_from(["00000001", "²", "١", "1a", "", "00000001_x"]), NAMES), data=st.data())
def test_ckplus_label_and_landmark_files_give_samples_or_an_error_naming_the_file(tmp_path, frame, data):
    root = tmp_path / "ck"
    if not (root / "cohn-kanade-images").is_dir():
        write_ckplus_sequence(root, "S005", "001", 1, None, landmarks=False)
    for folder in ("Emotion", "Landmarks"):
        shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder / "S005" / "001").mkdir(parents=True)
    assume("/" not in frame and len(frame.encode()) < 100)
    peak = f"S005_001_{frame}"
    emotion = data.draw(st.one_of(st.just(CK_EMOTION), st.binary(max_size=40)), label="emotion file")
    (root / "Emotion" / "S005" / "001" / f"{peak}_emotion.txt").write_bytes(mutate_bytes(emotion, data))
    if data.draw(st.booleans(), label="with landmarks"):
        landmarks = mutate_bytes(CK_LANDMARKS, data)
        (root / "Landmarks" / "S005" / "001" / f"{peak}_landmarks.txt").write_bytes(landmarks)
    samples = result_or_clear_error(lambda: load_dataset("ckplus", root=root), root)
    if samples is not None:
        check_records(samples, "ckplus")


# -- label files that are not sheets: RAF-DB's list, a prepared cache's manifest --

RAFDB_LIST = b"train_00001.jpg 4\ntrain_00002.jpg 1\ntest_0001.jpg 7\n"


@budget(80)
@given(data=st.data())
def test_rafdb_label_lists_give_samples_or_an_error_naming_the_line(tmp_path, data):
    basic = tmp_path / "basic"
    labels = basic / "EmoLabel" / "list_patition_label.txt"
    labels.parent.mkdir(parents=True, exist_ok=True)
    if data.draw(st.booleans(), label="lines of tokens"):
        lines = data.draw(st.lists(st.lists(st.one_of(st.sampled_from(TRICKY_TEXT), TEXT), max_size=3), max_size=4))
        content = "\n".join(" ".join(line) for line in lines).encode("utf-8")
    else:
        content = mutate_bytes(RAFDB_LIST, data)
    labels.write_bytes(content)
    samples = result_or_clear_error(lambda: load_dataset("rafdb", root=basic), labels)
    if samples is not None:
        check_records(samples, "rafdb")


def valid_manifest() -> dict:
    entries = [sample_entry(sample, f"clips/{sample.key}.npz", 3, 1, "sheet") for sample in CASME2_SAMPLES[:2]]
    return json.loads(json.dumps({"format": CACHE_FORMAT, "samples": entries}))


@budget(100)
@given(data=st.data())
def test_prepared_manifests_give_samples_or_an_error_naming_the_file(tmp_path, data):
    manifest = tmp_path / "manifest.json"
    if data.draw(st.booleans(), label="edit the JSON"):
        manifest.write_bytes(json_bytes(mutate_tree(valid_manifest(), JSON_VALUES, data)))
    else:
        manifest.write_bytes(mutate_bytes(json_bytes(valid_manifest()), data))
    samples = result_or_clear_error(lambda: load_dataset("prepared", sheet=manifest), manifest)
    if samples is not None:
        check_records(samples, samples[0].dataset if samples else "casme2")


# ---- mer eval-spot's predictions csv -----------------------------------------------------------

PREDICTION_CELLS = st.one_of(CELLS, st.integers(0, 2500), st.sampled_from(
    ["s15/15_0101disgustingteeth", "s16/16_0102eatingworms", "006_1", "video", "onset", "offset", "Start", "end"]))
PREDICTION_HEADERS = st.sampled_from([None, ["video", "onset", "offset"], ["Vid", "pred_on", "pred_off", "subject"],
                                      ["start", "end", "video path"], ["video", "begin", "end"]])


@pytest.fixture(scope="module")
def ground_truths(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ground_truth")
    sheets = {"casme2-spot": folder / "casme2.csv", "samm-lv": folder / "samm.csv"}
    for dataset, path in sheets.items():
        path.write_bytes(valid_sheet_bytes(dataset, ".csv"))
    return sheets


@budget(50)
@given(header=PREDICTION_HEADERS, rows=st.lists(st.lists(PREDICTION_CELLS, max_size=5), max_size=6),
       truth=st.sampled_from(sorted(SPOTTING_DATASETS)), data=st.data())
def test_eval_spot_scores_any_predictions_or_exits_with_one_line_naming_the_file(
        tmp_path, capsys, ground_truths, header, rows, truth, data):
    predictions = tmp_path / "predictions.csv"
    write_rows(predictions, ([header] if header else []) + rows)
    gt = ground_truths[truth]
    if data.draw(st.booleans(), label="damage the ground truth"):
        gt = tmp_path / "gt.csv"
        write_rows(gt, mutate_rows(valid_sheet_rows(truth, ".csv"), data))
    code = main(["-q", "eval-spot", "--gt", str(gt), "--pred", str(predictions), "--json"])
    out, err = capsys.readouterr()
    if code == 0:
        counts = json.loads(out)["overall"]
        assert counts["tp"] + counts["fp"] == len(read_predictions(predictions))  # each one is a TP or an FP
        assert all(0 <= counts[key] <= 1 for key in ("precision", "recall", "f1"))
    else:
        assert code == 2 and err.startswith("mer eval-spot: error: ") and err.count("\n") == 1, err
        assert str(predictions) in err or str(gt) in err, err


# ---- config files ------------------------------------------------------------------------------

SHIPPED_CONFIGS = sorted((REPO / "configs").rglob("*.toml"))


def config_schema(path: Path) -> type:
    """The schema each folder of configs/ is loaded with (as its ``load_*`` function does)."""
    if path.parent.name == "train":
        if path.stem.endswith("_pretrain"):
            from training.pretrain import PretrainRecipe  # imports torch: only when drawn

            return PretrainRecipe
        return TrainRecipe
    return {"stream": StreamConfig, "spot": SpotParams, "synth": SynthSettings}[path.parent.name]


def toml_text(table: dict) -> str:
    """A TOML document holding ``table``: keys quoted, nested tables as [sections]."""
    lines: list[str] = []
    _toml_table(table, (), lines)
    return "\n".join(lines) + "\n"


def _toml_table(table: dict, name: tuple, lines: list[str]) -> None:
    sections = {key: value for key, value in table.items() if isinstance(value, dict)}
    lines += [f"{_toml_string(key)} = {toml_value(value)}" for key, value in table.items() if key not in sections]
    for key, value in sections.items():
        lines.append("[" + ".".join(_toml_string(part) for part in (*name, key)) + "]")
        _toml_table(value, (*name, key), lines)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (datetime, date, clock_time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{_toml_string(key)} = {toml_value(item)}" for key, item in value.items()) + "}"


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML's escapes are JSON's


def load_or_refuse(path: Path, schema: type) -> Any:
    """A config, or a ConfigError that starts with the file and names the key when a value is bad."""
    try:
        config = load_config(path, schema)
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        return None
    floats = [value for value in _leaves(config.model_dump()) if isinstance(value, float)]
    assert all(math.isfinite(value) for value in floats), floats  # nan and inf are never a setting
    return config


def _leaves(value: Any) -> list:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def test_every_shipped_config_loads_through_the_fuzzed_path(tmp_path):
    for source in SHIPPED_CONFIGS:
        path = tmp_path / source.name
        path.write_text(toml_text(tomllib.loads(source.read_text())), encoding="utf-8")
        assert load_or_refuse(path, config_schema(source)) == load_config(source, config_schema(source))


@budget(120)
@given(source=st.sampled_from(SHIPPED_CONFIGS), data=st.data())
def test_edited_configs_load_or_name_the_file_and_key(tmp_path, source, data):
    table = mutate_tree(tomllib.loads(source.read_text()), TOML_VALUES, data, whole=False)
    path = tmp_path / source.name
    path.write_text(toml_text(table), encoding="utf-8")
    load_or_refuse(path, config_schema(source))


@budget(100)
@given(source=st.sampled_from(SHIPPED_CONFIGS), data=st.data())
def test_corrupted_config_files_load_or_name_the_file(tmp_path, source, data):
    path = tmp_path / source.name
    path.write_bytes(mutate_bytes(source.read_bytes(), data))
    load_or_refuse(path, config_schema(source))


@pytest.mark.parametrize(("text", "expected"), [
    (b"queue_size = 8\xff\n", "UTF-8"),
    (b"x = " + b"[" * 5000, "not valid TOML"),
    (b"[capture]\nqueue_size = " + b"9" * 5000 + b"\n", "not valid TOML"),
    (b"[capture.reconnect]\nmax_delay_s = inf\n", "key 'capture.reconnect.max_delay_s': expected"),
    (b"[capture.network]\nopen_timeout_s = nan\n", "key 'capture.network.open_timeout_s': expected"),
])
def test_pathological_stream_profiles_are_refused_in_one_line(tmp_path, text, expected):
    path = tmp_path / "stream.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, StreamConfig)
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)
    assert "\n" not in str(caught.value)


# ---- events: the decoder, the journal, the subscriber --------------------------------------------


def event_with_seq(seq: int) -> dict:
    return {**full_event(), "seq": seq}


def hostile_payload(data: st.DataObject) -> bytes:
    """Random bytes, random JSON, deep nesting, or a valid event with edited fields or bytes."""
    source = data.draw(st.sampled_from(["bytes", "json", "nesting", "edited event", "edited event", "edited bytes"]),
                       label="payload")
    if source == "bytes":
        return data.draw(st.binary(max_size=300), label="bytes")
    if source == "json":
        return json_bytes(data.draw(JSON_VALUES, label="json"))
    if source == "nesting":
        depth = data.draw(st.sampled_from([10, 900, 5_000, 100_000]), label="depth")
        return data.draw(st.sampled_from([b"[" * depth + b"]" * depth, b'{"seq":' * depth + b"1" + b"}" * depth]))
    if source == "edited event":
        return json_bytes(mutate_tree(full_event(), JSON_VALUES, data))
    return mutate_bytes(encode_event(full_event()), data)


def decodes(payload: bytes) -> bool:
    try:
        decode_event(payload)
    except InputError:
        return False
    return True


@budget(200)
@given(data=st.data())
def test_decoded_payloads_are_valid_events_or_an_error_naming_the_field(data):
    payload = hostile_payload(data)
    try:
        event = decode_event(payload)
    except EventSchemaError as error:  # JSON, but not a mer.event/1 event
        assert str(error).startswith(f"event field {error.field!r}: ") and "\n" not in str(error)
    except InputError as error:  # not JSON, or not a JSON object
        assert str(error).startswith(("not a JSON event", "an event must be a JSON object")), str(error)
        assert "\n" not in str(error)
    else:
        assert validate_event(event) is event
        assert json.loads(encode_event(event)) == event  # finite numbers only: it re-encodes as strict JSON


@budget(120)
@given(data=st.data())
def test_damaged_journals_read_in_seq_order_or_name_the_file_and_line(tmp_path, data):
    lines = [encode_event(event_with_seq(seq)) for seq in (1, 2, 3)]
    if data.draw(st.booleans(), label="replace a line"):
        lines[data.draw(st.integers(0, 2), label="line")] = hostile_payload(data).replace(b"\n", b" ")
        content = b"".join(line + b"\n" for line in lines)
    else:
        content = mutate_bytes(b"".join(line + b"\n" for line in lines), data)
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    events = result_or_clear_error(lambda: read_journal(path), path)
    if events is not None:
        seqs = [event["seq"] for event in events]
        assert all(is_integer(seq) for seq in seqs) and seqs == sorted(set(seqs)), seqs
    try:
        journal = EventJournal(path, fsync=False)  # a publisher reopening it reads it the same way
    except MerError as error:
        assert events is None
        assert_clear(error, path)
    else:
        with journal:
            assert events is not None and journal.last_seq() == (seqs[-1] if seqs else 0)


@pytest.fixture(scope="module")
def zmq_context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture(scope="module")
def live_link(zmq_context):
    """A PUB socket on loopback and an EventSubscriber (no replay) that already receives from it."""
    publisher = zmq_context.socket(zmq.PUB)
    publisher.linger = 0
    publisher.bind("tcp://127.0.0.1:*")
    subscriber = EventSubscriber(publisher.last_endpoint.decode(), None, context=zmq_context, catch_up_interval_s=None)
    for _ in range(200):  # the slow joiner: repeat event 1 until the subscription is in place
        publisher.send_multipart([topic_for("cam0"), encode_event(event_with_seq(1))])
        if subscriber.receive(timeout=0.05) is not None:
            break
    else:
        pytest.fail("the subscriber never received from the publisher")
    yield publisher, subscriber
    subscriber.close()
    publisher.close()


@budget(60)
@given(data=st.data())
def test_the_subscriber_counts_a_hostile_message_and_receives_the_next_event(live_link, data):
    publisher, subscriber = live_link
    payload = hostile_payload(data)
    assume(not decodes(payload))
    rejected = subscriber.rejected
    publisher.send_multipart([topic_for("cam0"), payload])
    following = event_with_seq(subscriber.next_seq)
    publisher.send_multipart([topic_for("cam0"), encode_event(following)])
    assert subscriber.receive(timeout=10) == following
    assert subscriber.rejected == rejected + 1


class ReplayServer:
    """A REP socket on loopback answering every request with ``reply`` (then an error, past ``limit``)."""

    limit = 20

    def __init__(self, context: zmq.Context) -> None:
        self.socket = context.socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.last_endpoint.decode()
        self.reply = b"{}"
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self.socket.poll(20):
                self.socket.recv()
                self.requests += 1
                self.socket.send(self.reply if self.requests <= self.limit else b'{"error": "request limit"}')

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture(scope="module")
def replay_server(zmq_context):
    server = ReplayServer(zmq_context)
    yield server
    server.close()


def hostile_reply(data: st.DataObject) -> bytes:
    """A replay answer: any payload, or the reply's shape holding events, junk and odd flags."""
    if data.draw(st.booleans(), label="any payload"):
        return hostile_payload(data)
    events = data.draw(st.lists(st.one_of(st.integers(1, 6).map(event_with_seq), JSON_VALUES), max_size=4))
    reply = {"events": events, "last_seq": data.draw(JSON_VALUES), "more": data.draw(st.booleans() | JSON_VALUES)}
    if data.draw(st.booleans(), label="edit the reply"):
        reply = mutate_tree(reply, JSON_VALUES, data)
    return json_bytes(reply)


@budget(60)
@given(data=st.data())
def test_replay_replies_give_valid_events_in_order_or_a_replay_error(zmq_context, replay_server, data):
    replay_server.reply = hostile_reply(data)
    replay_server.requests = 0
    subscriber = EventSubscriber("tcp://127.0.0.1:9", replay_server.endpoint, from_seq=1, context=zmq_context,
                                 replay_timeout_s=5.0, catch_up_interval_s=None)
    delivered = []
    try:
        while (event := subscriber.receive(timeout=0)) is not None:
            delivered.append(event)
    except ReplayError as error:
        assert_clear(error, replay_server.endpoint)
    finally:
        subscriber.close()
    for event in delivered:
        validate_event(event)
    seqs = [event["seq"] for event in delivered]
    assert seqs == sorted(set(seqs)) and all(seq >= 1 for seq in seqs), seqs
    assert replay_server.requests <= 1 + len(seqs), "asked again without getting anything new"


# ---- the inputs that crashed a reader before it was fixed (docs/reliability.md) -------------------


def _huge_csv_cell(folder: Path) -> tuple[Callable, Path, str]:
    sheet = folder / "coding.csv"
    sheet.write_text("Subject,Filename\n" + '"' + "x" * 200_000 + '",a\n')  # over the csv module's cell limit
    return lambda: load_dataset("casme2", sheet=sheet), sheet, "row 2"


def _workbook_without_its_worksheet(folder: Path) -> tuple[Callable, Path, str]:
    sheet = folder / "coding.xlsx"
    with zipfile.ZipFile(sheet, "w") as archive:
        for name, content in zip_members(valid_sheet_bytes("casme2", ".xlsx")).items():
            if name != "xl/worksheets/sheet1.xml":
                archive.writestr(name, content)
    return lambda: load_dataset("casme2", sheet=sheet), sheet, "workbook holds no worksheet"


def _worksheet_of_broken_xml(folder: Path) -> tuple[Callable, Path, str]:
    sheet = folder / "coding.xlsx"
    with zipfile.ZipFile(sheet, "w") as archive:
        for name, content in zip_members(valid_sheet_bytes("casme2", ".xlsx")).items():
            archive.writestr(name, content[:300] if name == "xl/worksheets/sheet1.xml" else content)
    return lambda: load_dataset("casme2", sheet=sheet), sheet, "cannot read worksheet"


def _pixels_beyond_64_bits(folder: Path) -> tuple[Callable, Path, str]:
    sheet = write_fer_csv(folder / "fer2013.csv", [(3, "99999999999999999999 " * 2304, "Training")])
    return lambda: load_dataset("fer2013", sheet=sheet), sheet, "row 2, column 'pixels'"


def _rafdb_label_of_a_superscript_digit(folder: Path) -> tuple[Callable, Path, str]:
    labels = folder / "basic" / "EmoLabel" / "list_patition_label.txt"
    labels.parent.mkdir(parents=True)
    labels.write_text("train_00001.jpg ²\n")  # str.isdigit() says yes, int() says no
    return lambda: load_dataset("rafdb", root=folder / "basic"), labels, "row 1, column 'label'"


def _rafdb_list_not_utf8(folder: Path) -> tuple[Callable, Path, str]:
    labels = folder / "basic" / "EmoLabel" / "list_patition_label.txt"
    labels.parent.mkdir(parents=True)
    labels.write_bytes(b"train_00001.jpg 4\n\x80\n")
    return lambda: load_dataset("rafdb", root=folder / "basic"), labels, "not UTF-8"


def _smic_subject_folder_of_a_superscript_digit(folder: Path) -> tuple[Callable, Path, str]:
    (folder / "HS" / "s²" / "micro" / "negative" / "s2_ne_01").mkdir(parents=True)
    return lambda: load_dataset("smic", root=folder), folder / "HS", "no subject folders"


def _ckplus_label_not_utf8(folder: Path) -> tuple[Callable, Path, str]:
    write_ckplus_sequence(folder, "S005", "001", 1, None, landmarks=False)
    label = folder / "Emotion" / "S005" / "001" / "S005_001_00000001_emotion.txt"
    label.parent.mkdir(parents=True)
    label.write_bytes(b"\x80 3.0\n")
    return lambda: load_dataset("ckplus", root=folder), label, "not UTF-8"


def _manifest_that_is_a_list(folder: Path) -> tuple[Callable, Path, str]:
    manifest = folder / "manifest.json"
    manifest.write_text("[]")
    return lambda: load_dataset("prepared", sheet=manifest), manifest, "not a mer prepare cache"


def _manifest_labels_that_are_a_list(folder: Path) -> tuple[Callable, Path, str]:
    manifest = folder / "manifest.json"
    content = valid_manifest()
    content["samples"][0]["labels"] = ["negative"]
    manifest.write_text(json.dumps(content))
    return lambda: load_dataset("prepared", sheet=manifest), manifest, "column 'samples[1].labels'"


def _journal_line_nested_too_deep(folder: Path) -> tuple[Callable, Path, str]:
    journal = folder / "events.jsonl"
    journal.write_bytes(b"[" * 100_000 + b"\n")
    return lambda: read_journal(journal), journal, "row 1"


FOUND_CRASHES = [_huge_csv_cell, _workbook_without_its_worksheet, _worksheet_of_broken_xml, _pixels_beyond_64_bits,
                 _rafdb_label_of_a_superscript_digit, _rafdb_list_not_utf8, _smic_subject_folder_of_a_superscript_digit,
                 _ckplus_label_not_utf8, _manifest_that_is_a_list, _manifest_labels_that_are_a_list,
                 _journal_line_nested_too_deep]


@pytest.mark.parametrize("case", FOUND_CRASHES, ids=lambda case: case.__name__.strip("_"))
def test_inputs_that_crashed_a_reader_are_clear_errors_now(tmp_path, case):
    read, path, where = case(tmp_path)
    with pytest.raises(InputError) as caught:
        read()
    assert caught.value.path == path and where in str(caught.value)
    assert_clear(caught.value, path)


def test_an_event_nested_too_deep_is_not_json_to_the_decoder():
    with pytest.raises(InputError, match="not a JSON event .RecursionError"):
        decode_event(b"[" * 100_000)


def test_a_replay_reply_that_repeats_itself_is_not_asked_for_forever(zmq_context, replay_server):
    """It once looped: 'more' with no new event asked for the same batch again and again."""
    replay_server.reply = json_bytes({"events": [event_with_seq(1), None, [3]], "last_seq": 9, "more": True})
    replay_server.requests = 0
    with EventSubscriber("tcp://127.0.0.1:9", replay_server.endpoint, from_seq=1, context=zmq_context,
                         catch_up_interval_s=None) as subscriber:
        assert subscriber.receive(timeout=0) == event_with_seq(1)
        assert subscriber.receive(timeout=0) is None
        assert (replay_server.requests, subscriber.rejected) == (2, 4)  # asked once more, from seq 2; None, [3] twice
