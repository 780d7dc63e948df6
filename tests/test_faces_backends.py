"""Both landmark backends put the 68 points on the real photos' eyes, nose and mouth, and agree.

The reference positions were measured by hand, once, on the photos enlarged with a pixel grid
(pupil centres, nose tip, mouth corners; "left"/"right" = image side). The MediaPipe tests
need Google's face_landmarker.task (scripts/fetch_face_landmarker.sh) and skip without it.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.errors import InputError
from streamer.faces import ModelFileMissing, create_backend, face_landmarker_path
from streamer.faces import model_files
from streamer.faces.boxes import box_from_points
from streamer.faces.mp_to_68 import MP_TO_68, mesh_to_68
from training.synthetic.sources import SOURCE_LOADERS

# name -> (hand-measured pixel positions, tolerance in pixels). Order: image-left eye (pupil),
# image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
HAND_MEASURED = {
    "astronaut": ([(204, 101), (247, 103), (224, 127), (203, 140), (244, 141)], 4.0),  # eye distance ~43 px
    "grace_hopper": ([(221, 189), (304, 186), (264, 241), (229, 279), (306, 276)], 8.0),  # ~83 px, glasses
}
AGREEMENT_TOLERANCE = 0.05  # mean distance between the backends' 68 points / outer-eye-corner distance


def key_points(points68: np.ndarray) -> np.ndarray:
    """Eye centres (means of the eye contours), nose tip (30) and mouth corners (48, 54)."""
    return np.array([points68[36:42].mean(0), points68[42:48].mean(0), points68[30], points68[48], points68[54]])


def photo_bgr(name: str) -> np.ndarray:
    return cv2.cvtColor(SOURCE_LOADERS[name](), cv2.COLOR_RGB2BGR)


def mediapipe_available() -> bool:
    try:
        face_landmarker_path()
    except ModelFileMissing:
        return False
    return True


needs_task = pytest.mark.skipif(
    not mediapipe_available(), reason="face_landmarker.task not installed (run scripts/fetch_face_landmarker.sh)"
)


@pytest.fixture(scope="module")
def dlib_backend():
    return create_backend("dlib")


@pytest.fixture(scope="module")
def mediapipe_backend():
    if not mediapipe_available():
        pytest.skip("face_landmarker.task not installed (run scripts/fetch_face_landmarker.sh)")
    backend = create_backend("mediapipe")
    yield backend
    backend.close()


@pytest.fixture(scope="module", params=["dlib", pytest.param("mediapipe", marks=needs_task)])
def backend(request, dlib_backend):
    return dlib_backend if request.param == "dlib" else request.getfixturevalue("mediapipe_backend")


@pytest.mark.parametrize("name", sorted(HAND_MEASURED))
def test_landmarks_fall_on_hand_measured_features(backend, name):
    faces = backend.detect(photo_bgr(name))
    assert len(faces) == 1
    face = faces[0]
    assert face.points.shape == (68, 2) and face.points.dtype == np.float32
    expected, tolerance = HAND_MEASURED[name]
    errors = np.linalg.norm(key_points(face.points) - np.array(expected), axis=1)
    assert errors.max() <= tolerance, errors
    x0, y0, x1, y1 = face.box
    assert x0 < expected[0][0] < x1 and y0 < expected[0][1] < y1  # the box holds the face
    assert 0.5 < face.confidence <= 1.0


@pytest.mark.parametrize("name", sorted(HAND_MEASURED))
def test_refine_in_the_face_box_keeps_the_landmarks_in_place(backend, name):
    """Tracking feeds each frame's box back in; on a still image the points must not drift."""
    image = photo_bgr(name)
    detected = backend.detect(image)[0]
    points = detected.points
    for _ in range(5):
        refined = backend.refine(image, box_from_points(points))
        points = refined.points
    interocular = np.linalg.norm(detected.points[45] - detected.points[36])
    assert np.linalg.norm(points - detected.points, axis=1).mean() <= 0.03 * interocular


@pytest.mark.parametrize("name", sorted(HAND_MEASURED))
@needs_task
def test_backends_agree_on_the_68_points(dlib_backend, mediapipe_backend, name):
    image = photo_bgr(name)
    ours, theirs = dlib_backend.detect(image)[0].points, mediapipe_backend.detect(image)[0].points
    interocular = np.linalg.norm(ours[45] - ours[36])
    assert np.linalg.norm(ours - theirs, axis=1).mean() <= AGREEMENT_TOLERANCE * interocular


def test_no_face_on_a_blank_frame_and_refine_outside_the_picture(backend):
    blank = np.full((480, 640, 3), 120, np.uint8)
    assert backend.detect(blank) == []
    assert backend.refine(blank, (-300.0, -300.0, -10.0, -10.0)) is None


@needs_task
def test_mediapipe_refine_reports_a_vanished_face(mediapipe_backend):
    assert mediapipe_backend.refine(np.full((480, 640, 3), 120, np.uint8), (100.0, 100.0, 300.0, 300.0)) is None


def test_dlib_detects_on_a_shrunk_copy_but_reports_full_size_pixels(dlib_backend):
    image = photo_bgr("astronaut")
    big = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    small_points = dlib_backend.detect(image)[0].points
    big_points = dlib_backend.detect(big)[0].points
    interocular = np.linalg.norm(small_points[45] - small_points[36])
    assert np.linalg.norm(big_points / 2 - small_points, axis=1).mean() <= 0.04 * interocular


def test_mesh_to_68_takes_the_listed_vertices_or_their_midpoint():
    assert len(MP_TO_68) == 68
    assert all(1 <= len(ix) <= 2 and all(0 <= i < 468 for i in ix) for ix in MP_TO_68)
    mesh = np.stack([np.arange(478, dtype=np.float32), -np.arange(478, dtype=np.float32)], axis=1)
    points = mesh_to_68(mesh)
    assert points.shape == (68, 2) and points.dtype == np.float32
    assert points[8].tolist() == [152.0, -152.0]  # chin: one vertex
    assert points[0].tolist() == [(127 + 162) / 2, -(127 + 162) / 2]  # jaw start: midpoint of two


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(InputError, match="unknown face landmark backend 'openface'"):
        create_backend("openface")


def test_face_landmarker_search_order(monkeypatch, tmp_path):
    mine = tmp_path / "mine.task"
    mine.write_bytes(b"model")
    monkeypatch.setenv(model_files.FACE_LANDMARKER_ENV, str(mine))
    assert face_landmarker_path() == mine
    monkeypatch.delenv(model_files.FACE_LANDMARKER_ENV)
    monkeypatch.setattr(model_files, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(ModelFileMissing, match="scripts/fetch_face_landmarker.sh"):
        face_landmarker_path()
    home_copy = tmp_path / "home" / ".cache" / "mer" / "face_landmarker.task"
    home_copy.parent.mkdir(parents=True)
    home_copy.write_bytes(b"model")
    assert face_landmarker_path() == home_copy
    repo_copy = tmp_path / "repo" / ".cache" / "models" / "face_landmarker.task"
    repo_copy.parent.mkdir(parents=True)
    repo_copy.write_bytes(b"model")
    assert face_landmarker_path() == repo_copy


@pytest.mark.realdata
def test_backends_agree_on_real_micro_expression_faces(shared_data, dlib_backend, mediapipe_backend):
    """The 478 -> 68 table was fitted on these 442 apex crops; every 10th is checked here."""
    files = sorted((shared_data / "HTNet" / "datasets" / "combined_datasets_whole").glob("*.jpg"))[::10]
    if not files:
        pytest.skip(f"no HTNet apex crops under {shared_data}")
    distances = []
    for path in files:
        # The crops are cut tight round the face; a border gives the detectors some context.
        image = cv2.copyMakeBorder(cv2.imread(str(path)), 80, 80, 80, 80, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        ours, theirs = dlib_backend.detect(image), mediapipe_backend.detect(image)
        if len(ours) == 1 and len(theirs) == 1:
            a, b = ours[0].points, theirs[0].points
            distances.append(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(a[45] - a[36]))
    assert len(distances) >= 0.8 * len(files)
    assert np.mean(distances) <= AGREEMENT_TOLERANCE and np.median(distances) <= 0.035


def test_a_frame_that_is_not_bgr_uint8_is_a_clear_error(backend):
    wanted = "BGR or H x W grey uint8 image" if backend.accepts_gray else "uint8 BGR image"
    with pytest.raises(InputError, match=rf"{wanted}, got float32 array of shape \(48, 64, 3\)"):
        backend.detect(np.zeros((48, 64, 3), np.float32))
    with pytest.raises(InputError, match=r"got uint8 array of shape \(48, 64, 4\)"):
        backend.detect(np.zeros((48, 64, 4), np.uint8))
    if not backend.accepts_gray:
        with pytest.raises(InputError, match=r"got uint8 array of shape \(48, 64\)"):
            backend.detect(np.zeros((48, 64), np.uint8))


@pytest.mark.parametrize("name", sorted(HAND_MEASURED))
def test_dlib_finds_the_same_landmarks_on_the_grey_photo(dlib_backend, name):
    """A run that needs no colour feeds dlib grey luma instead of BGR (``frames_in_color``): dlib's own
    grey is the channels' mean, not the luma, so the fits may differ by a pixel or two, no more."""
    bgr = photo_bgr(name)
    colour, = dlib_backend.detect(bgr)
    grey, = dlib_backend.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    eye_distance = np.linalg.norm(colour.points[45] - colour.points[36])
    distances = np.linalg.norm(colour.points - grey.points, axis=1)
    assert distances.mean() <= 0.03 * eye_distance and distances.max() <= 0.1 * eye_distance, distances
    errors = np.linalg.norm(key_points(grey.points) - np.array(HAND_MEASURED[name][0]), axis=1)
    assert errors.max() <= HAND_MEASURED[name][1], errors
    refined_grey = dlib_backend.refine(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), colour.box)
    refined_colour = dlib_backend.refine(bgr, colour.box)
    assert np.linalg.norm(refined_grey.points - refined_colour.points, axis=1).mean() <= 0.03 * eye_distance

def test_a_run_decodes_colour_only_when_something_needs_it():
    """``frames_in_color``: grey frames for dlib unless colour crops are kept; MediaPipe always colour."""
    from streamer.front_end import FacesConfig, frames_in_color

    assert frames_in_color(FacesConfig(backend="dlib")) is False
    assert frames_in_color(FacesConfig(backend="dlib"), color_crops=True) is True
    assert frames_in_color(FacesConfig(backend="mediapipe")) is True
    assert frames_in_color() is False  # the default profile's backend is dlib


def test_a_corrupt_face_landmarker_is_refused_by_name_before_mer_stream_binds_anything(monkeypatch, tmp_path, capsys):
    """MediaPipe's own failure ("Unable to open zip archive.") becomes an error naming the file; mer
    stream loads the landmark models before it opens its journal, sockets or source."""
    import socket

    from streamer.cli import main
    from tests.streaming_fixtures import free_port

    corrupt = tmp_path / "face_landmarker.task"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    monkeypatch.setenv(model_files.FACE_LANDMARKER_ENV, str(corrupt))  # searched first
    with pytest.raises(InputError, match="could not load its face landmarker model") as refused:
        create_backend("mediapipe")
    assert str(corrupt) in str(refused.value)

    profile = tmp_path / "mediapipe.toml"
    profile.write_text('[faces]\nbackend = "mediapipe"\n')
    journal = tmp_path / "events" / "events.jsonl"
    port = free_port()
    code = main(["stream", "--source", str(tmp_path / "never_opened.mp4"), "--config", str(profile),
                 "--endpoint", f"tcp://127.0.0.1:{port}", "--journal", str(journal), "--no-metrics"])
    assert code == 2
    assert f"{corrupt}: MediaPipe could not load its face landmarker model" in capsys.readouterr().err
    assert not journal.parent.exists()  # nothing was created
    with socket.socket() as probe:  # the endpoint was never bound
        probe.bind(("127.0.0.1", port))


def test_a_corrupt_dlib_model_is_refused_by_name(monkeypatch, tmp_path):
    """A corrupt file put where face_recognition_models' model would be found is refused with an
    error naming it (streamer.faces.shape_model parses dlib's format)."""
    from streamer.faces import dlib_backend

    corrupt = tmp_path / "shape_predictor_68_face_landmarks.dat"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    monkeypatch.setattr(dlib_backend, "shape_predictor_path", lambda: corrupt)
    dlib_backend.dlib_models.cache_clear()
    try:
        with pytest.raises(InputError, match="could not load dlib's 68-point landmark model") as refused:
            create_backend("dlib")
        assert str(corrupt) in str(refused.value)
    finally:
        dlib_backend.dlib_models.cache_clear()  # the next backend loads the real model again
