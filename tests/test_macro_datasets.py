"""The macro-expression readers (FER-2013, RAF-DB, CK+) and the composite's apex crops (megc2019-apex).

Each layout is written small into tmp_path in the vendor's own format and read back with
``load_dataset``: counts, the paper 002 Table 2 labels, where the face image is, and errors
that name the file, row and column of a bad entry. The composite is also read for real when
the shared data is present.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.errors import InputError
from training.datasets import load_dataset
from training.datasets.fer2013 import CACHE_FOLDER
from training.datasets.sheets import write_composite_sheet
from training.datasets.tables import write_rows
from training.samples import Sample

# ---- FER-2013 --------------------------------------------------------------------------------


def fer_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


def write_fer_csv(path: Path, rows: list[tuple[object, object, object]]) -> Path:
    write_rows(path, [("emotion", "pixels", "Usage"), *rows])
    return path


def fer_row(emotion: int, seed: int, usage: str = "Training") -> tuple[int, str, str]:
    return emotion, " ".join(str(value) for value in fer_image(seed).ravel()), usage


def test_fer2013_labels_and_decoded_images(tmp_path):
    emotions = [0, 1, 2, 3, 4, 5, 6, 3]  # angry, disgust, fear, happy, sad, surprise, neutral, happy
    rows = [fer_row(emotion, seed, "PublicTest" if seed == 7 else "Training") for seed, emotion in enumerate(emotions)]
    sheet = write_fer_csv(tmp_path / "fer2013.csv", rows)
    samples = load_dataset("fer2013", root=tmp_path)
    assert [s.emotion for s in samples] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral",
                                            "happiness"]
    assert [s.labels.get("megc3") for s in samples] == ["negative"] * 3 + ["positive", "negative", "surprise", None,
                                                                          "positive"]
    assert [s.sample_id for s in samples[:2]] == ["row2", "row3"]  # csv lines; the header is line 1
    assert {s.subject for s in samples} == {"unknown"}
    assert samples[7].attributes == {"usage": "PublicTest"}
    for seed, sample in enumerate(samples):
        (path,) = sample.frames
        assert path.parent == tmp_path / CACHE_FOLDER
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), fer_image(seed))
    # Without a root only the sheet is read: same samples, no images written.
    sheet_only = load_dataset("fer2013", sheet=sheet)
    assert [s.key for s in sheet_only] == [s.key for s in samples] and all(not s.frames for s in sheet_only)


def test_fer2013_cache_is_reused_then_rewritten_when_the_csv_changes(tmp_path):
    sheet = write_fer_csv(tmp_path / "fer2013.csv", [fer_row(3, 0), fer_row(5, 1)])
    (first, _) = load_dataset("fer2013", root=tmp_path)
    written = first.frames[0].stat().st_mtime_ns
    load_dataset("fer2013", root=tmp_path)
    assert first.frames[0].stat().st_mtime_ns == written  # nothing decoded again
    write_fer_csv(sheet, [fer_row(3, 9), fer_row(5, 1), fer_row(0, 2)])
    samples = load_dataset("fer2013", root=tmp_path)
    assert len(samples) == 3
    np.testing.assert_array_equal(cv2.imread(str(samples[0].frames[0]), cv2.IMREAD_GRAYSCALE), fer_image(9))


@pytest.mark.parametrize(("row", "column", "message"), [
    ((3, "1 2 3", "Training"), "pixels", "expected 2304 pixel values"),
    ((3, " ".join(["300"] * 2304), "Training"), "pixels", "0..255"),
    ((3, " ".join(["x"] * 2304), "Training"), "pixels", "integers"),
    ((7, " ".join(["0"] * 2304), "Training"), "emotion", "not an id 0..6"),
    ((3, " ".join(["0"] * 2304), "Validation"), "Usage", "not one of"),
])
def test_fer2013_bad_rows_are_named(tmp_path, row, column, message):
    sheet = write_fer_csv(tmp_path / "fer2013.csv", [fer_row(3, 0), row])
    with pytest.raises(InputError, match=message) as caught:
        load_dataset("fer2013", sheet=sheet)
    assert caught.value.path == sheet and caught.value.row == 3 and caught.value.column == column


# ---- RAF-DB ----------------------------------------------------------------------------------


def write_rafdb(basic: Path, lines: list[str], aligned: list[str]) -> Path:
    labels = basic / "EmoLabel" / "list_patition_label.txt"
    labels.parent.mkdir(parents=True)
    labels.write_text("\n".join(lines) + "\n")
    for name in aligned:
        path = basic / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((100, 100, 3), 128, np.uint8))
    return labels


def test_rafdb_labels_splits_and_aligned_images(tmp_path):
    lines = [f"train_{i:05d}.jpg {label}" for i, label in enumerate(range(1, 8), start=1)] + ["test_0001.jpg 4"]
    write_rafdb(tmp_path / "basic", lines, aligned=["train_00001.jpg", "train_00004.jpg", "test_0001.jpg"])
    # The root may be the basic folder or the RAF-DB folder holding it.
    for root in (tmp_path / "basic", tmp_path):
        samples = load_dataset("rafdb", root=root)
        assert [s.emotion for s in samples] == ["surprise", "fear", "disgust", "happiness", "sadness", "anger",
                                                "neutral", "happiness"]
        assert [s.labels.get("megc3") for s in samples] == ["surprise", "negative", "negative", "positive", "negative",
                                                            "negative", None, "positive"]
        assert [s.attributes["split"] for s in samples] == ["train"] * 7 + ["test"]
        with_images = {s.sample_id: s.frames[0] for s in samples if s.frames}
        aligned = tmp_path / "basic" / "Image" / "aligned"
        assert with_images == {"train_00001": aligned / "train_00001_aligned.jpg",
                               "train_00004": aligned / "train_00004_aligned.jpg",
                               "test_0001": aligned / "test_0001_aligned.jpg"}


@pytest.mark.parametrize(("line", "column", "message"), [
    ("train_00002.jpg 8", "label", "not 1..7"),
    ("train_00002.jpg", None, "found 1 fields"),
    ("val_00002.jpg 3", "image", "train_"),
])
def test_rafdb_bad_lines_are_named(tmp_path, line, column, message):
    labels = write_rafdb(tmp_path / "basic", ["train_00001.jpg 4", line], aligned=[])
    with pytest.raises(InputError, match=message) as caught:
        load_dataset("rafdb", root=tmp_path / "basic")
    assert caught.value.path == labels and caught.value.row == 2 and caught.value.column == column


# ---- CK+ -------------------------------------------------------------------------------------


def _ck_landmarks(centre_x: float, centre_y: float) -> np.ndarray:
    """A plausible 68-point face: a unit template scaled to about 200 px around a centre."""
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    points = np.stack([centre_x + 90 * np.cos(angles), centre_y + 110 * np.sin(angles)], axis=1)
    points[36] = (centre_x - 60, centre_y - 30)  # outer eye corners: the box's eye axis
    points[45] = (centre_x + 60, centre_y - 30)
    return points


def write_ckplus_sequence(root: Path, subject: str, sequence: str, frames: int, emotion: str | None,
                          landmarks: bool = True) -> None:
    for number in range(1, frames + 1):
        path = root / "cohn-kanade-images" / subject / sequence / f"{subject}_{sequence}_{number:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((490, 640), 100 + number, np.uint8))
    peak = f"{subject}_{sequence}_{frames:08d}"
    if emotion is not None:
        label = root / "Emotion" / subject / sequence / f"{peak}_emotion.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(f"   {emotion}\n")
    if landmarks:
        path = root / "Landmarks" / subject / sequence / f"{peak}_landmarks.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, _ck_landmarks(320, 250), fmt="%15.7e")


def test_ckplus_labelled_peaks_with_face_boxes(tmp_path):
    write_ckplus_sequence(tmp_path, "S005", "001", 11, "3.0000000e+00")  # disgust
    write_ckplus_sequence(tmp_path, "S010", "002", 14, "5.0000000e+00", landmarks=False)  # happy
    write_ckplus_sequence(tmp_path, "S010", "004", 19, "2.0000000e+00")  # contempt
    write_ckplus_sequence(tmp_path, "S011", "001", 6, None)  # no emotion file: not a sample
    samples = load_dataset("ckplus", root=tmp_path)
    assert [s.key for s in samples] == ["S005/001", "S010/002", "S010/004"]
    assert [(s.emotion, s.labels["megc3"]) for s in samples] == [
        ("disgust", "negative"), ("happiness", "positive"), ("contempt", "negative")]
    assert [(s.onset, s.apex, s.offset) for s in samples] == [(1, 11, 11), (1, 14, 14), (1, 19, 19)]
    assert samples[0].frames == (tmp_path / "cohn-kanade-images" / "S005" / "001" / "S005_001_00000011.png",)
    x0, y0, x1, y1 = (float(v) for v in samples[0].attributes["face_box"].split(","))
    assert x1 - x0 == pytest.approx(y1 - y0, abs=0.2)  # square, around the landmarks' face
    assert x0 < 320 < x1 and y0 < 250 < y1
    assert "face_box" not in samples[1].attributes  # no landmarks: the loader uses the whole frame


def test_ckplus_bad_files_are_named(tmp_path):
    write_ckplus_sequence(tmp_path, "S005", "001", 3, "9.0000000e+00")
    label = tmp_path / "Emotion" / "S005" / "001" / "S005_001_00000003_emotion.txt"
    with pytest.raises(InputError, match="not a whole number 0..7") as caught:
        load_dataset("ckplus", root=tmp_path)
    assert caught.value.path == label
    label.write_text("happy")
    with pytest.raises(InputError, match="one emotion number"):
        load_dataset("ckplus", root=tmp_path)
    label.write_text("5")
    landmarks = tmp_path / "Landmarks" / "S005" / "001" / "S005_001_00000003_landmarks.txt"
    landmarks.write_text("1 2\n3 4\n")
    with pytest.raises(InputError, match="68 lines") as caught:
        load_dataset("ckplus", root=tmp_path)
    assert caught.value.path == landmarks
    with pytest.raises(InputError, match="give --root"):
        load_dataset("ckplus")


# ---- megc2019-apex ---------------------------------------------------------------------------

COMPOSITE = [
    Sample("megc2019-flow", "sub01", "EP02_01f", "positive", labels={"megc3": "positive"}, source="casme2",
           attributes={"imagename": "sub01_EP02_01f.jpg"}),
    Sample("megc2019-flow", "s01", "s01_ne_01", "negative", labels={"megc3": "negative"}, source="smic",
           attributes={"imagename": "s01_s1_ne_01.jpg"}),
    Sample("megc2019-flow", "006", "006_1_2", "surprise", labels={"megc3": "surprise"}, source="samm",
           attributes={"imagename": "006_006_1_2.jpg"}),
]


def test_apex_reader_is_the_flow_reader_with_the_apex_crop_as_frame(tmp_path):
    write_composite_sheet(tmp_path / "combined_3_class2_for_optical_flow.csv", COMPOSITE)
    folder = tmp_path / "datasets" / "combined_datasets_whole"
    folder.mkdir(parents=True)
    for name in ("sub01_EP02_01f.jpg", "s01_s1_ne_01.jpg"):  # SAMM's crop is missing
        cv2.imwrite(str(folder / name), np.zeros((224, 224, 3), np.uint8))
    apex = load_dataset("megc2019-apex", root=tmp_path)
    flow = load_dataset("megc2019-flow", root=tmp_path)
    def identity(samples):
        return [(s.key, s.subject, s.labels, s.source) for s in samples]
    assert identity(apex) == identity(flow)
    assert {s.dataset for s in apex} == {"megc2019-apex"}
    assert apex[0].frames == (folder / "sub01_EP02_01f.jpg",)
    assert apex[1].frames == (folder / "s01_s1_ne_01.jpg",)  # SMIC: the crop's own name (s1, not s01)
    assert apex[2].frames == ()


def test_real_composite_apex_crops(shared_data):
    root = shared_data / "HTNet"
    apex = load_dataset("megc2019-apex", root=root)
    flow = load_dataset("megc2019-flow", root=root)
    assert len(apex) == 442 and len({s.subject for s in apex}) == 68
    assert [s.key for s in apex] == [s.key for s in flow]
    assert Counter(s.labels["megc3"] for s in apex) == {"negative": 250, "positive": 109, "surprise": 83}
    assert all(len(s.frames) == 1 and s.frames[0].is_file() for s in apex)
    image = cv2.imread(str(apex[0].frames[0]), cv2.IMREAD_COLOR)
    assert image.shape == (224, 224, 3)
