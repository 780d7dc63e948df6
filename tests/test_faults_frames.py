"""Hard frames through the real pipeline (dlib front end, spotter, shipped engine): no face, many
faces, a face that leaves and returns, extreme head pose, darkness and glare, a resolution change.

The material is a rendered synthetic face (``training.synthetic``: one micro-expression at frames
28-41, a blink, light drift, sensor noise) as the real decoder returns it from its mp4, edited
the way each fault looks: the face cut out, rotated, squeezed to a profile's width, darkened,
blown out, re-encoded at another size. Every frame must be processed and counted (a frame
without a usable face still gives its ``success=0`` row), tracks must end where the face goes
and start afresh where it comes back, and no event may come from the fault itself.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from streamer.capture import CaptureLoop
from streamer.frames import Frame
from streamer.sources import FileSource
from streamer.stream_config import StreamConfig
from tests.test_faults_sources import face_clip, recognizer  # noqa: F401 (fixtures: the face video, the engine)
from tests.test_faults_sources import FPS, pipeline_emitting_to
from training.synthetic.layouts import subject_identity
from training.synthetic.settings import SynthSettings

EVENT = (28, 41)  # the clip's micro-expression: onset and offset frame


@pytest.fixture(scope="module")
def face_frames(face_clip):
    """The clip's 120 frames as the decoder gives them."""
    with FileSource(face_clip) as source:
        return [frame.image for frame in source.frames()]


def run(images, recognizer, config=None):
    """Process ``images`` as a 30 fps stream; returns the pipeline, its rows per frame and its events."""
    events = []
    pipeline = pipeline_emitting_to(events, recognizer, config)
    rows = [pipeline.process(Frame(index, index / FPS, image, 0.0)) for index, image in enumerate(images)]
    pipeline.close()
    return pipeline, rows, events


def faces_per_frame(rows):
    return [sorted(row.face_id for row in frame_rows if row.success) for frame_rows in rows]


def assert_every_frame_counted(pipeline, rows, n_frames):
    faces = faces_per_frame(rows)
    assert pipeline.stats.frames == len(rows) == n_frames
    assert pipeline.stats.frames_with_faces == sum(1 for ids in faces if ids)
    # A frame without a face is still a row (face -1, success 0), so frames.csv has every frame.
    assert all(frame_rows for frame_rows in rows)
    assert all([(row.face_id, row.success) for row in frame_rows] == [(-1, False)]
               for frame_rows, ids in zip(rows, faces) if not ids)


def near(event, onset, offset, slack=3):
    return abs(event["onset"]["frame"] - onset) <= slack and abs(event["offset"]["frame"] - offset) <= slack


def test_frames_without_a_face_are_counted_and_give_no_event(face_frames, recognizer):
    rng = np.random.default_rng(0)
    shape = face_frames[0].shape
    images = [np.full(shape, 128, np.uint8)] * 15 + [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(15)]
    pipeline, rows, events = run(images, recognizer)
    assert_every_frame_counted(pipeline, rows, 30)
    assert pipeline.stats.frames_with_faces == 0 and events == []
    assert pipeline.tracker.detections_run >= 9  # searched every 0.1 s all along


def test_more_faces_than_max_faces_are_tracked_up_to_the_limit_and_the_rest_counted(recognizer, caplog):
    # Six people in one 960x480 picture (each a different subject), with a little sensor noise.
    people = [subject_identity(k, 0, (320, 240), SynthSettings(), f"{k + 1:03d}").image for k in range(6)]
    room = np.vstack([np.hstack(people[:3]), np.hstack(people[3:])]).astype(np.float32)
    rng = np.random.default_rng(1)
    images = [np.clip(room + rng.normal(0, 2.0, room.shape), 0, 255).astype(np.uint8) for _ in range(40)]
    with caplog.at_level(logging.WARNING, logger="streamer.faces.tracker"):
        pipeline, rows, _ = run(images, recognizer)
    assert_every_frame_counted(pipeline, rows, 40)
    assert faces_per_frame(rows) == [[0, 1, 2, 3]] * 40  # the same four, from first frame to last
    detections = pipeline.tracker.detections_run
    assert detections >= 2 and pipeline.tracker.faces_over_limit == 2 * detections  # two left out each time
    assert [r.getMessage() for r in caplog.records].count(
        "6 new faces found while 0 of at most 4 are tracked: the largest are tracked, the others ignored "
        "(raise faces.max_faces to track more)") == 1


def test_a_face_that_leaves_ends_its_track_and_is_processed_again_when_it_returns(face_frames, recognizer):
    empty_room = np.full_like(face_frames[0], 90)
    images = face_frames[:20] + [empty_room] * 30 + face_frames  # back at frame 50 for the whole clip
    pipeline, rows, events = run(images, recognizer)
    assert_every_frame_counted(pipeline, rows, 170)
    faces = faces_per_frame(rows)
    assert faces[:20] == [[0]] * 20 and faces[20:50] == [[]] * 30  # gone the frame it leaves
    returned = faces[50:]
    assert returned[0] == [] or returned[0] == [1]  # found again at once, or at the next search
    assert returned[3:] == [[1]] * 117  # a new track, processed to the end
    # None where the face left (a crop of the empty room pushed into the face's spotter would look
    # like an expression ending it), and the expression after the return, once, on the new track.
    # (The spotter may also fire on the noise of this short clip after it: the spotting tests
    # measure how often; this test is about the face leaving.)
    assert [e for e in events if e["onset"]["frame"] < 50 + 3] == []
    (event,) = [e for e in events if near(e, 50 + EVENT[0], 50 + EVENT[1])]
    assert event["face"] == 1


def rotated(image, degrees):
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def turned_aside(image, degrees):
    """A head turned towards profile, as far as a flat picture can: squeezed to cos(yaw) of its width."""
    height, width = image.shape[:2]
    squeeze = math.cos(math.radians(degrees))
    matrix = np.float32([[squeeze, 0, width / 2 * (1 - squeeze)], [0, 1, 0]])
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def test_extreme_head_pose_is_counted_and_the_face_is_tracked_again_after_it(face_frames, recognizer):
    # Upright, then rolled to 90 degrees (within a third of a second), upright, turned to a profile's
    # width (80 degrees of yaw), upright again.
    ramp = [min(1.0, (k + 1) / 10) for k in range(30)]
    images = (face_frames[:30] + [rotated(image, 90 * r) for image, r in zip(face_frames[30:60], ramp)]
              + face_frames[60:90] + [turned_aside(image, 80 * r) for image, r in zip(face_frames[90:120], ramp)]
              + face_frames[:30])
    pipeline, rows, _ = run(images, recognizer)
    assert_every_frame_counted(pipeline, rows, 150)
    faces = faces_per_frame(rows)
    for extreme in (range(40, 60), range(100, 120)):  # held at full rotation / profile
        assert all(faces[i] == [] for i in extreme)
    upright = [faces[start + 3:start + 30] for start in (0, 60, 120)]  # found again within 0.1 s
    assert all(len(ids) == 1 for segment in upright for ids in segment)
    tracks = [{ids[0] for ids in segment} for segment in upright]
    assert all(len(ids) == 1 for ids in tracks) and len(set.union(*tracks)) == 3  # a new track each time
    assert pipeline.tracker.track_ids == [] and not pipeline._faces  # every track ended and was flushed


def test_darkness_and_glare_end_the_track_without_a_false_event(face_frames, recognizer):
    def lit(image, gain):
        return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)

    # The light goes out at frame 50 (after the expression), comes back at 70, the picture is blown
    # out from 90 to 104 (a lamp pointed at the camera), then normal again.
    gains = [1.0] * 50 + [0.05] * 20 + [1.0] * 20 + [4.0] * 15 + [1.0] * 15
    images = [lit(image, gain) for image, gain in zip(face_frames, gains)]
    pipeline, rows, events = run(images, recognizer)
    assert_every_frame_counted(pipeline, rows, 120)
    faces = faces_per_frame(rows)
    assert faces[:50] == [[0]] * 50 and faces[50:70] == [[]] * 20  # ends on the first dark frame
    assert faces[90:105] == [[]] * 15  # nothing usable in the glare
    after_dark, after_glare = faces[73:90], faces[108:]  # found again within 0.1 s of the light's return
    assert all(len(ids) == 1 for ids in after_dark + after_glare)
    tracks = [{0}, {ids[0] for ids in after_dark}, {ids[0] for ids in after_glare}]
    assert all(len(ids) == 1 for ids in tracks) and len(set.union(*tracks)) == 3  # a new track each time
    (event,) = events  # the expression; no event where the light changed
    assert event["face"] == 0 and near(event, *EVENT)


def write_ts(path, images, first_frame=0):
    """Lossless H.264 in MPEG-TS, frame numbers (and so timestamps) starting at ``first_frame``:
    files written this way join end to end into one stream with continuous time."""
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"qp": "0", "preset": "ultrafast"})
        stream.height, stream.width = images[0].shape[:2]
        for number, image in enumerate(images, start=first_frame):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = number, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_a_resolution_change_mid_stream_starts_the_faces_afresh_with_aligned_crops(face_frames, recognizer, tmp_path):
    # A camera that renegotiates from 320x240 to 480x360 at frame 60: one file, decoded for real.
    before = write_ts(tmp_path / "before.ts", face_frames[:60])
    after = write_ts(tmp_path / "after.ts", [cv2.resize(image, (480, 360)) for image in face_frames[60:]], 60)
    stream = tmp_path / "renegotiated.ts"
    stream.write_bytes(before.read_bytes() + after.read_bytes())
    events = []
    pipeline = pipeline_emitting_to(events, recognizer, StreamConfig())
    rows, crop_shapes = [], set()
    with CaptureLoop(str(stream)) as loop:
        for frame in loop:
            rows.append(pipeline.process(frame))
            crop_shapes |= {face.ring.gray.shape[1:] for face in pipeline._faces.values()}
            assert frame.t == pytest.approx(frame.index / FPS)  # one continuous stream
    pipeline.close()
    assert_every_frame_counted(pipeline, rows, 120)
    assert pipeline.stats.restarts == {"resolution_change": 1}
    assert crop_shapes == {(128, 128)}  # every ring keeps crops of the aligned size
    faces = faces_per_frame(rows)
    assert faces[:60] == [[0]] * 60 and faces[60:] == [[1]] * 60  # the new size is searched at once
    (event,) = events  # the expression before the change; none from the change itself
    assert event["face"] == 0 and near(event, *EVENT)
