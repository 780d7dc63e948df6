"""The tracker keeps ids stable, gives a returning face a new id, and detects only now and then.

Two kinds of footage: frames composed from the two real photos (two faces side by side, one
moving, one leaving and coming back), and a `mer synth video` clip with head motion, blinks
and sensor noise.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from streamer.cli import main as mer_main
from streamer.faces import FaceAligner, FaceTracker, create_backend
from streamer.frames import Frame
from training.synthetic.sources import SOURCE_LOADERS

FPS = 30.0
CANVAS = (400, 720)  # height, width
# (photo, source rows, source columns, canvas top-left corner)
ASTRONAUT = ("astronaut", (40, 220), (140, 310), (100, 40))  # face about 95 px
GRACE = ("grace_hopper", (110, 380), (140, 390), (60, 420))  # face about 195 px


def paste(canvas, spec, shift=0):
    name, (r0, r1), (c0, c1), (top, left) = spec
    photo = cv2.cvtColor(SOURCE_LOADERS[name](), cv2.COLOR_RGB2BGR)
    canvas[top : top + r1 - r0, left + shift : left + shift + c1 - c0] = photo[r0:r1, c0:c1]


def two_faces_footage(n_frames=60, gone=range(20, 35), seed=3):
    """Astronaut drifting right 1 px a frame and absent during ``gone``; Grace Hopper still."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(n_frames):
        canvas = np.full((*CANVAS, 3), 110, np.uint8)
        paste(canvas, GRACE)
        if index not in gone:
            paste(canvas, ASTRONAUT, shift=index)
        noisy = np.clip(canvas + rng.normal(0, 2.0, canvas.shape), 0, 255).astype(np.uint8)
        frames.append(Frame(index, index / FPS, noisy, 0.0))
    return frames


@pytest.fixture(scope="module")
def backend():
    return create_backend("dlib", min_face_px=80)


def run(tracker, frames):
    """Per frame: {track id: TrackedFace}, and the ids reported as ended after each frame."""
    seen, ended = [], []
    for frame in frames:
        seen.append({face.track_id: face for face in tracker.update(frame)})
        ended.append(tracker.ended())
    return seen, ended


def face_on_left(faces):
    return [tid for tid, face in faces.items() if face.landmarks.box[2] < CANVAS[1] / 2]


def test_two_faces_keep_their_ids_and_a_returning_face_gets_a_new_one(backend):
    tracker = FaceTracker(backend, FaceAligner(), detect_interval_s=0.5)
    seen, ended = run(tracker, two_faces_footage())
    grace_ids = {tid for faces in seen for tid, face in faces.items() if face.landmarks.box[0] > CANVAS[1] / 2}
    assert len(grace_ids) == 1  # one id for Grace Hopper from first frame to last
    (grace,) = grace_ids
    assert all(grace in faces for faces in seen)
    first = {tid for faces in seen[:20] for tid in face_on_left(faces)}
    assert len(first) == 1 and all(face_on_left(faces) for faces in seen[:20])
    (astronaut,) = first
    assert all(not face_on_left(faces) for faces in seen[20:35])  # gone means gone at once
    assert [ids for ids in ended if ids] == [[astronaut]] and ended[20] == [astronaut]
    returned = {tid for faces in seen[35:] for tid in face_on_left(faces)}
    assert len(returned) == 1 and returned.isdisjoint({astronaut, grace})
    back_at = next(i for i in range(35, 60) if face_on_left(seen[i]))
    assert back_at <= 35 + 15  # found again within one detection interval
    assert all(face_on_left(faces) for faces in seen[back_at:])
    tracker.end_all()
    assert sorted(tracker.ended()) == sorted([grace, *returned])


def test_landmarks_follow_a_moving_face_between_detections(backend):
    frames = two_faces_footage(n_frames=20, gone=())
    tracker = FaceTracker(backend, FaceAligner(), detect_interval_s=10.0)  # one detection, then refining
    seen, _ = run(tracker, frames)
    assert tracker.detections_run == 1
    (start,) = [seen[0][tid].landmarks.points for tid in face_on_left(seen[0])]
    (end,) = [seen[19][tid] for tid in face_on_left(seen[19])]
    assert not end.detected
    error = np.linalg.norm(end.landmarks.points - (start + (19.0, 0.0)), axis=1).mean()
    assert error < 1.5  # pixels, after 19 px of motion tracked by refinement alone
    assert end.landmarks.confidence > 0.8  # still resembles its detection


def test_detection_runs_on_schedule_not_every_frame(backend):
    tracker = FaceTracker(backend, FaceAligner(), detect_interval_s=0.5)
    seen, _ = run(tracker, two_faces_footage(n_frames=45, gone=()))
    assert tracker.detections_run == 3  # t = 0, 0.5, 1.0 s
    detected_frames = [i for i, faces in enumerate(seen) if any(face.detected for face in faces.values())]
    assert detected_frames == [0, 15, 30]


def test_max_faces_keeps_the_largest(backend):
    tracker = FaceTracker(backend, FaceAligner(), detect_interval_s=0.5, max_faces=1)
    seen, _ = run(tracker, two_faces_footage(n_frames=3, gone=()))
    assert all(len(faces) == 1 and not face_on_left(faces) for faces in seen)


@pytest.fixture(scope="module")
def synth_video(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "head.mp4"
    argv = ["synth", "video", "--out", str(out), "--duration", "3", "--micro", "1", "--macro", "0"]
    assert mer_main([*argv, "--distractors", "head,blinks,noise", "--no-progress", "--seed", "5"]) == 0
    truth = json.loads(out.with_suffix(".json").read_text())
    return out, np.array(truth["subjects"][0]["landmarks"], dtype=np.float32)


def test_one_stable_track_through_a_synthetic_video_with_head_motion(synth_video):
    path, neutral = synth_video
    capture = cv2.VideoCapture(str(path))
    tracker = FaceTracker(create_backend("dlib"), FaceAligner(), detect_interval_s=1.0)
    ids, errors, index = set(), [], 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        (face,) = tracker.update(Frame(index, index / FPS, image, 0.0))
        ids.add(face.track_id)
        errors.append(np.linalg.norm(face.landmarks.points - neutral, axis=1).mean())
        assert face.aligned.gray.shape == (128, 128)
        index += 1
    assert index == 90 and len(ids) == 1 and tracker.ended() == []
    assert tracker.detections_run == 3
    interocular = np.linalg.norm(neutral[45] - neutral[36])
    assert max(errors) < 0.12 * interocular  # head motion is up to 8 px and 3 degrees
