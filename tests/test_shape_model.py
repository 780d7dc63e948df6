"""dlib's 68-point model in mer's compiled loop: the same landmarks as dlib, bit for bit.

The reference is dlib itself (``dlib.shape_predictor``) on real photos that installed packages
ship, in grey and colour, in the detector's box and in boxes moved, scaled and pushed off the
picture. Small models written in dlib's format by :func:`dlib_bytes` check the parser and the
tree cut against dlib reading the same file, and give damaged files to refuse.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from bench.landmark_trees import dlib_fit
from engines.errors import InputError
from streamer.faces import create_backend
from streamer.faces import shape_model as shape_model_module
from streamer.faces.model_files import shape_predictor_path
from streamer.faces.shape_model import ShapeModel, load_shape_model, read_shape_model
from streamer.front_end import FacesConfig, build_tracker
from tests.test_faces_backends import HAND_MEASURED, key_points, photo_bgr

APEX_FOLDER = Path("HTNet") / "datasets" / "combined_datasets_whole"


# --- dlib's format, written (the test's own encoder, so the parser meets files it did not write) ---

def _integer(value: int) -> bytes:
    magnitude = abs(int(value))
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _float(value: float) -> bytes:
    fraction, exponent = math.frexp(float(value))
    return _integer(int(fraction * 2 ** 24)) + _integer(exponent - 24)  # exact for a float32


def _column(values) -> bytes:
    return _integer(-len(values)) + _integer(-1) + b"".join(_float(v) for v in values)


def dlib_bytes(model: ShapeModel) -> bytes:
    """``model`` serialised as dlib's ``serialize(shape_predictor)`` writes it."""
    stages, trees, nodes = model.splits.shape[:3]
    parts = [_integer(1), _column(model.initial_shape), _integer(stages)]
    for s in range(stages):
        parts.append(_integer(trees))
        for t in range(trees):
            parts.append(_integer(nodes))
            for k in range(nodes):
                parts += [_integer(model.splits[s, t, k, 0]), _integer(model.splits[s, t, k, 1]),
                          _float(model.thresholds[s, t, k])]
            parts.append(_integer(nodes + 1))
            parts += [_column(leaf) for leaf in model.leaves[s, t]]
    parts.append(_integer(stages))
    for s in range(stages):
        parts.append(_integer(model.anchors.shape[1]) + b"".join(_integer(a) for a in model.anchors[s]))
    parts.append(_integer(stages))
    for s in range(stages):
        parts.append(_integer(model.deltas.shape[1]) + b"".join(_float(x) + _float(y) for x, y in model.deltas[s]))
    return b"".join(parts)


@pytest.fixture(scope="module")
def full_model() -> ShapeModel:
    return load_shape_model(shape_predictor_path())


@pytest.fixture(scope="module")
def dlib_predictor():
    return dlib.shape_predictor(str(shape_predictor_path()))


@pytest.fixture(scope="module")
def small_file(full_model, tmp_path_factory) -> Path:
    """The real model's first 11 trees a stage, written in dlib's format: one pass of the fit's
    eight-tree sum and three trees after it, so both of its loops are checked against dlib."""
    path = tmp_path_factory.mktemp("small") / "small.dat"
    path.write_bytes(dlib_bytes(full_model.first_trees(11)))
    return path


def dlib_points(predictor, image: np.ndarray, box) -> np.ndarray:
    return dlib_fit(predictor, image, dlib.rectangle(*box))


def detector_box(image: np.ndarray) -> tuple[int, int, int, int]:
    found = dlib.get_frontal_face_detector()(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), 1)[0]
    return found.left(), found.top(), found.right(), found.bottom()


def moved_boxes(box):
    left, top, right, bottom = box
    side = right - left
    return [box,
            (left + 7, top - 5, right + 7, bottom - 5),  # shifted
            (left - side // 4, top - side // 4, right + side // 4, bottom + side // 4),  # larger
            (left + side // 6, top + side // 6, right - side // 6, bottom - side // 6),  # smaller
            (left - side // 2 - 40, top - side // 2, right - side // 2 - 40, bottom - side // 2)]  # off the picture


def test_dlibs_model_is_read_into_15_stages_of_500_trees(full_model):
    assert full_model.points == 68 and full_model.trees == 500
    assert full_model.splits.shape == (15, 500, 15, 2)
    assert full_model.leaves.shape == (15, 500, 16, 136)
    assert full_model.anchors.shape == (15, 500) and full_model.deltas.shape == (15, 500, 2)
    # the mean shape lies in the face box's unit square, eyes above the mouth
    points = full_model.initial_shape.reshape(68, 2)
    assert ((points > -0.1) & (points < 1.1)).all()
    assert points[36:48, 1].mean() < points[48:68, 1].mean()


@pytest.mark.parametrize("name", sorted(HAND_MEASURED))
@pytest.mark.parametrize("colour", [True, False], ids=["bgr", "grey"])
def test_every_fit_equals_dlibs_own_point_for_point(full_model, dlib_predictor, name, colour):
    image = photo_bgr(name)
    if not colour:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    for box in moved_boxes(detector_box(photo_bgr(name))):
        ours = full_model.fit(image, box)
        assert ours.shape == (68, 2) and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, dlib_points(dlib_predictor, image, box), err_msg=str(box))


def test_a_colour_pixel_counts_as_dlib_counts_it(full_model, dlib_predictor):
    """dlib's intensity of a colour pixel is the integer mean of its channels, not OpenCV's weighted grey."""
    rng = np.random.default_rng(3)
    image = photo_bgr("astronaut").copy()
    image[..., 0] = rng.integers(0, 256, image.shape[:2])  # channels far apart, so the rule matters
    box = detector_box(photo_bgr("astronaut"))
    np.testing.assert_array_equal(full_model.fit(image, box), dlib_points(dlib_predictor, image, box))
    weighted = full_model.fit(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), box)
    assert not np.array_equal(weighted, full_model.fit(image, box))


def test_the_real_apex_crops_fit_as_dlib_fits_them(full_model, dlib_predictor, shared_data):
    files = sorted((shared_data / APEX_FOLDER).glob("*.jpg"))
    different = []
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        box = (24, 30, 200, 206)  # the composite's crops are faces filling the 224x224 picture
        if not np.array_equal(full_model.fit(image, box), dlib_points(dlib_predictor, image, box)):
            different.append(path.name)
    assert len(files) == 442 and different == []


def test_fewer_trees_are_the_first_of_each_stage_as_dlib_reads_them(full_model, small_file):
    small_dlib = dlib.shape_predictor(str(small_file))
    small = read_shape_model(small_file)
    assert small.trees == 11
    for name in sorted(HAND_MEASURED):
        image = photo_bgr(name)
        for box in moved_boxes(detector_box(image))[:3]:
            expected = dlib_points(small_dlib, image, box)
            np.testing.assert_array_equal(small.fit(image, box), expected)
            np.testing.assert_array_equal(full_model.first_trees(11).fit(image, box), expected)
    assert full_model.first_trees(500) is full_model and full_model.first_trees(10_000) is full_model
    with pytest.raises(ValueError, match="at least one tree"):
        full_model.first_trees(0)


@pytest.mark.parametrize("name", sorted(HAND_MEASURED))
def test_the_cut_model_stays_close_to_the_full_one_on_real_photos(name):
    image = photo_bgr(name)
    full = create_backend("dlib").detect(image)[0]
    cut = create_backend("dlib", trees=200).refine(image, full.box)  # the same box: only the models differ
    eye_distance = np.linalg.norm(full.points[36] - full.points[45])
    deviation = np.linalg.norm(cut.points - full.points, axis=1).mean() / eye_distance
    assert 0 < deviation < 0.03, deviation  # not the same model, but within 3 % of the eyes' span
    expected, tolerance = HAND_MEASURED[name]
    assert np.linalg.norm(key_points(cut.points) - np.array(expected), axis=1).max() <= tolerance


def test_faces_config_builds_a_tracker_on_the_cut_model():
    tracker = build_tracker(FacesConfig(dlib_trees=300))
    assert tracker.backend.trees == 300
    assert build_tracker(FacesConfig(dlib_trees=0)).backend.trees == 0


def test_threads_fit_at_once_and_each_gets_its_own_answer(full_model):
    """The loop releases Python's GIL (a decoding thread runs beside it): it must share nothing."""
    images = {name: photo_bgr(name) for name in sorted(HAND_MEASURED)}
    boxes = {name: detector_box(image) for name, image in images.items()}
    expected = {name: full_model.fit(images[name], boxes[name]) for name in images}
    failures = []

    def worker(name):
        for _ in range(30):
            if not np.array_equal(full_model.fit(images[name], boxes[name]), expected[name]):
                failures.append(name)

    threads = [threading.Thread(target=worker, args=(name,)) for name in images for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert shape_model_module._fit.targetoptions["nogil"]


@pytest.mark.parametrize("image", [np.zeros((64, 64), np.float32), np.zeros((64, 64, 4), np.uint8),
                                   np.zeros(64, np.uint8)], ids=["float", "four channels", "one dimension"])
def test_an_image_dlib_would_read_differently_is_refused(full_model, image):
    with pytest.raises(ValueError, match="grey or 3-channel uint8"):
        full_model.fit(image, (0, 0, 63, 63))


# --- damaged files --------------------------------------------------------------------------

def damaged(data: bytes, damage: str, small: ShapeModel) -> bytes:
    if damage == "truncated":
        return data[: len(data) // 3]
    if damage == "version":
        return b"\x01\x02" + data[2:]
    if damage == "garbage":
        return b"\x01\x01" + b"\x7f" * 1000
    if damage == "trailing bytes":
        return data + b"\x01\x00"
    if damage == "split index out of range":
        # the first split's first pixel index comes after the version, the initial shape and three counts
        at = len(_integer(1) + _column(small.initial_shape) + _integer(small.splits.shape[0])
                 + _integer(small.trees) + _integer(small.splits.shape[2]))
        assert data[at] in (0x01, 0x02)  # a one- or two-byte non-negative integer
        return data[:at] + _integer(60_000) + data[at + 1 + (data[at] & 0x0F):]
    if damage == "uneven trees":  # the first stage claims one tree more than the others
        at = len(_integer(1) + _column(small.initial_shape) + _integer(small.splits.shape[0]))
        return data[:at] + _integer(small.trees + 1) + data[at + 2:]
    raise AssertionError(damage)


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "ends early"),
    ("version", "unsupported dlib shape predictor version 2"),
    ("garbage", "bad integer header"),
    ("trailing bytes", "2 bytes after its end"),
    ("split index out of range", "index out of range"),
    ("uneven trees", "not all alike"),
])
def test_a_damaged_model_is_refused_naming_the_file(damage, reason, small_file, tmp_path):
    source = tmp_path / f"{damage.replace(' ', '_')}.dat"
    source.write_bytes(damaged(small_file.read_bytes(), damage, read_shape_model(small_file)))
    with pytest.raises(InputError) as caught:
        read_shape_model(source)
    assert str(source) in str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 8, 13, 21])
def test_a_file_cut_anywhere_ends_early(small_file, tmp_path, cut):
    """A cut inside an integer, between a float's two halves or between items: always 'ends early'."""
    data = small_file.read_bytes()
    source = tmp_path / "cut.dat"
    source.write_bytes(data[: len(data) - cut])
    with pytest.raises(InputError, match="ends early"):
        read_shape_model(source)


# --- the parsed arrays' cache -----------------------------------------------------------------

@pytest.fixture()
def fresh_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MER_CACHE", str(tmp_path / "cache"))
    load_shape_model.cache_clear()
    shape_model_module._full_model.cache_clear()
    yield tmp_path / "cache" / "landmarks"
    load_shape_model.cache_clear()
    shape_model_module._full_model.cache_clear()


def test_the_parsed_model_is_cached_and_memory_mapped_after(fresh_cache, small_file):
    first = load_shape_model(small_file)
    folders = list(fresh_cache.iterdir())
    assert [folder.name for folder in folders] == [f"small.{small_file.stat().st_size}-{small_file.stat().st_mtime_ns}"]
    assert (folders[0] / "complete").is_file()
    load_shape_model.cache_clear()
    shape_model_module._full_model.cache_clear()
    again = load_shape_model(small_file)
    assert isinstance(again.leaves, np.memmap)
    for name in ("initial_shape", "splits", "thresholds", "leaves", "anchors", "deltas"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    image = photo_bgr("astronaut")
    box = detector_box(image)
    np.testing.assert_array_equal(again.fit(image, box), first.fit(image, box))


def test_a_damaged_cache_is_parsed_again(fresh_cache, small_file, caplog):
    load_shape_model(small_file)
    folder = next(fresh_cache.iterdir())
    np.save(folder / "splits.npy", np.full((1, 2, 3, 2), 7, np.int32))  # shapes that do not agree
    load_shape_model.cache_clear()
    shape_model_module._full_model.cache_clear()
    with caplog.at_level(logging.WARNING, logger="streamer.faces.shape_model"):
        model = load_shape_model(small_file)
    assert "damaged shape model cache" in caplog.text
    assert model.splits.shape == (15, 11, 15, 2)
    assert np.load(folder / "splits.npy").shape == (15, 11, 15, 2)  # written afresh


def test_an_unwritable_cache_still_gives_the_model(monkeypatch, tmp_path, small_file, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("MER_CACHE", str(blocker))
    load_shape_model.cache_clear()
    shape_model_module._full_model.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="streamer.faces.shape_model"):
            model = load_shape_model(small_file)
        assert model.trees == 11
        assert "could not cache" in caplog.text
        assert os.listdir(tmp_path) == ["not-a-folder"]
    finally:
        load_shape_model.cache_clear()
        shape_model_module._full_model.cache_clear()


def test_the_trees_benchmark_times_each_cut_and_measures_its_distance(tmp_path, capsys):
    from bench.landmark_trees import main as bench_main

    assert bench_main(["--trees", "500,60", "--passes", "1", "--duration", "4", "--data", str(tmp_path / "no-data")]) == 0
    out = capsys.readouterr().out
    lines = {line.split("trees:")[0].strip(): line for line in out.splitlines() if "trees:" in line}
    assert "mean 0.00 px, max 0.00 px" in lines["500"]  # the full model against itself
    distance = float(lines["60"].split("mean ")[1].split(" px")[0])
    assert 0.5 < distance < 10  # a cut model lands elsewhere, but on the same face
    dlib_line = next(line for line in out.splitlines() if "dlib's own predictor" in line)
    frames = int(dlib_line.split(" of ")[1].split()[0])
    assert f"{frames} of {frames} fits identical" in dlib_line
    assert "real faces: skipped" in out
