"""Following faces from frame to frame without running the expensive detector every frame.

Per frame, each known face is *refined*: the backend fits landmarks inside the box where the
face was on the previous frame (about 1 ms with dlib). The full detector (about 10 ms at the
shrunk size) runs only every ``detect_interval_s`` of stream time, when a face was lost, and,
while no face is tracked, every ``search_interval_s``. Its faces are matched to the tracks
by box overlap (IoU): a match re-anchors the track, a new face gets a new id.

A refined face can drift off: dlib's shape predictor fits a face to whatever is in the box.
So every frame's crop of every face is compared with how the track looked when last detected
(normalised cross-correlation of its aligned crop shrunk to a small patch), also on the frames
between two landmark fits; too little resemblance and the track is lost. A face that leaves
and comes back is therefore a new track with a new id.

The resemblance ignores brightness, so a face whose crop turns much darker or brighter from
one frame to the next (a light switched off or on, a camera's exposure jumping) would stay the
same track, and its spotter would take the change for motion all over the face. Such a track
ends instead; the detector then looks for the face on that same frame, as a new track.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from streamer.faces.alignment import FaceAligner
from streamer.faces.boxes import iou
from streamer.faces.smoothing import AnchorSmoother
from streamer.faces.types import AlignedFace, FaceLandmarks, LandmarkBackend, TrackedFace

if TYPE_CHECKING:
    from streamer.frames import Frame

log = logging.getLogger(__name__)

PATCH_SIZE = 24  # side of the grey patch (the aligned crop shrunk) that the appearance check compares


@dataclass(eq=False)  # tracks compare by identity
class _Track:
    track_id: int
    smoother: AnchorSmoother | None
    landmarks: FaceLandmarks
    aligned: AlignedFace
    template: np.ndarray  # zero-mean, unit-norm patch from the last detection
    brightness: float  # mean grey level of the last aligned crop
    misses: int = 0  # detector runs in a row that did not find this face
    refined_t: float = float("-inf")  # stream time of the last landmark fit


class FaceTracker:
    """Tracks up to ``max_faces`` faces with stable ids; see the module docstring.

    ``confidence`` of a refined face is its resemblance (0..1) to the track's last detection;
    a detected face keeps the backend's confidence.
    """

    def __init__(
        self,
        backend: LandmarkBackend,
        aligner: FaceAligner,
        *,
        detect_interval_s: float = 1.0,
        max_faces: int = 4,
        search_interval_s: float = 0.1,
        landmark_interval_s: float = 0.0,
        min_iou: float = 0.3,
        min_similarity: float = 0.5,
        max_misses: int = 3,
        max_light_step: float = 40.0,
    ) -> None:
        self.backend = backend
        self.aligner = aligner
        self.detect_interval_s = detect_interval_s
        self.max_faces = max_faces
        self.search_interval_s = search_interval_s
        # Landmarks are fitted at most this often (0: every frame); in between, the last fit is
        # re-applied to the new frame. The crop's transform is smoothed over ~1 s and the
        # spotter's regions over 0.3 s anyway, so a 50 ms landmark rate costs them nothing
        # while it halves the tracker's cost at 30 fps (and more at 200 fps).
        self.landmark_interval_s = landmark_interval_s
        self.min_iou = min_iou
        self.min_similarity = min_similarity
        self.max_misses = max_misses
        self.max_light_step = max_light_step  # grey levels the crop's mean may change by from one frame to the next
        self._tracks: list[_Track] = []
        self._ended: list[int] = []
        self._ids = itertools.count()
        self._last_detect_t: float | None = None
        self.detections_run = 0  # how often the full detector ran (for tests and metrics)
        self.faces_over_limit = 0  # detected faces left untracked because max_faces were tracked already

    def update(self, frame: Frame) -> list[TrackedFace]:
        """The faces on this frame, oldest track first."""
        lost, relit = self._refine(frame)
        self._end(relit)
        self._drop_duplicates()
        detected: set[int] = set()
        if self._detection_due(frame.t, bool(lost or relit)):
            detected = self._detect(frame, lost)
        else:
            self._end(lost)
        return [TrackedFace(t.track_id, t.landmarks, t.aligned, t.track_id in detected) for t in self._tracks]

    def ended(self) -> list[int]:
        """Ids of the tracks that ended since the last call."""
        ended, self._ended = self._ended, []
        return ended

    def end_all(self) -> None:
        """End every track (end of stream); :meth:`ended` then reports them."""
        self._end(self._tracks)

    def reset(self) -> None:
        """End every track and search the next frame at once, as if the stream began there
        (after a cut in the stream, where the old boxes and looks mean nothing)."""
        self.end_all()
        self._last_detect_t = None

    @property
    def track_ids(self) -> list[int]:
        return [track.track_id for track in self._tracks]

    def _refine(self, frame: Frame) -> tuple[list[_Track], list[_Track]]:
        """Moves every track to this frame; returns (and unlists) the tracks whose face was lost and
        those whose light changed at once."""
        lost, relit = [], []
        for track in self._tracks:
            if frame.t - track.refined_t < self.landmark_interval_s:
                aligned = self.aligner.align(frame.image, track.landmarks.points, track.smoother, frame.t)
                if _resemblance(aligned.gray, track.template) >= self.min_similarity:
                    if self._follow(track, track.landmarks, aligned):
                        continue
                    relit.append(track)
                    continue
                # Not the face it was (it left, or the picture changed): refit now, not at the next fit.
            track.refined_t = frame.t
            landmarks = self.backend.refine(frame.image, track.landmarks.box)
            similarity = -1.0
            if landmarks is not None:
                aligned = self.aligner.align(frame.image, landmarks.points, track.smoother, frame.t)
                similarity = _resemblance(aligned.gray, track.template)
            if similarity < self.min_similarity:
                log.debug("track %d lost (resemblance %.2f)", track.track_id, similarity)
                lost.append(track)
            elif not self._follow(track, replace(landmarks, confidence=min(similarity, 1.0)), aligned):
                relit.append(track)
        self._tracks = [track for track in self._tracks if track not in lost and track not in relit]
        return lost, relit

    def _follow(self, track: _Track, landmarks: FaceLandmarks, aligned: AlignedFace) -> bool:
        """Moves ``track`` to its face on this frame, unless the face's light changed at once (False)."""
        brightness = float(aligned.gray.mean())
        if abs(brightness - track.brightness) > self.max_light_step:
            log.debug("track %d ends: its crop's mean brightness jumped from %.0f to %.0f", track.track_id,
                      track.brightness, brightness)
            return False
        track.landmarks, track.aligned, track.brightness = landmarks, aligned, brightness
        return True

    def _drop_duplicates(self) -> None:
        """Two tracks that converged on one face: the younger one ends."""
        keep: list[_Track] = []
        for track in self._tracks:  # oldest first
            if all(iou(track.landmarks.box, kept.landmarks.box) <= 0.5 for kept in keep):
                keep.append(track)
            else:
                self._end([track])
        self._tracks = keep

    def _detection_due(self, t: float, any_lost: bool) -> bool:
        """At once when a face was lost; else when stream time enters the next whole interval.

        Whole intervals of stream time (not the time since the last detection) so that the frames
        the detector runs on depend on the video alone: a run that starts partway through a video
        (a chunk of ``mer analyze --ray``) detects on the same frames as one that started at its
        beginning."""
        if self._last_detect_t is None or any_lost:
            return True
        interval = self.detect_interval_s if self._tracks else self.search_interval_s
        return math.floor(t / interval) > math.floor(self._last_detect_t / interval)

    def _detect(self, frame: Frame, lost: list[_Track]) -> set[int]:
        """Runs the detector, re-anchors matched tracks, starts new ones; returns the ids it found."""
        self._last_detect_t = frame.t
        self.detections_run += 1
        faces = self.backend.detect(frame.image)
        candidates = self._tracks + lost  # a face lost by refinement may be re-found right here
        matches = self._match(candidates, faces)
        survivors, found = [], set()
        for ti, track in enumerate(candidates):
            if ti in matches:
                if track in lost:  # its smoother saw the bad refinement: start it afresh
                    track.smoother = self.aligner.new_smoother()
                self._anchor(track, frame, faces[matches[ti]])
                track.misses = 0
                survivors.append(track)
                found.add(track.track_id)
            elif track in lost or track.misses + 1 >= self.max_misses:
                self._end([track])
            else:
                track.misses += 1
                survivors.append(track)
        matched_faces = set(matches.values())
        new_faces = sorted(
            (face for fi, face in enumerate(faces) if fi not in matched_faces),
            key=lambda face: (face.box[2] - face.box[0]) * (face.box[3] - face.box[1]),
            reverse=True,
        )
        room = max(0, self.max_faces - len(survivors))
        if len(new_faces) > room:
            if not self.faces_over_limit:
                log.warning("%d new faces found while %d of at most %d are tracked: the largest are tracked, "
                            "the others ignored (raise faces.max_faces to track more)", len(new_faces),
                            len(survivors), self.max_faces)
            self.faces_over_limit += len(new_faces) - room
        for face in new_faces[:room]:
            smoother = self.aligner.new_smoother()
            aligned = self.aligner.align(frame.image, face.points, smoother, frame.t)
            track = _Track(next(self._ids), smoother, face, aligned, _patch(aligned.gray), float(aligned.gray.mean()),
                           refined_t=frame.t)
            log.debug("track %d started at %s", track.track_id, [round(v) for v in face.box])
            survivors.append(track)
            found.add(track.track_id)
        self._tracks = sorted(survivors, key=lambda track: track.track_id)
        return found

    def _match(self, tracks: list[_Track], faces: list[FaceLandmarks]) -> dict[int, int]:
        """Greedy IoU matching: track index -> face index, best overlaps first."""
        pairs = sorted(
            [
                (iou(track.landmarks.box, face.box), ti, fi)
                for ti, track in enumerate(tracks)
                for fi, face in enumerate(faces)
            ],
            reverse=True,
        )
        matches: dict[int, int] = {}
        for overlap, ti, fi in pairs:
            if overlap < self.min_iou:
                break
            if ti not in matches and fi not in matches.values():
                matches[ti] = fi
        return matches

    def _anchor(self, track: _Track, frame: Frame, face: FaceLandmarks) -> None:
        """Puts a detection on the track and makes it the reference look."""
        track.landmarks = face
        track.refined_t = frame.t  # a detection fits the landmarks too: the next fit is due an interval later
        track.aligned = self.aligner.align(frame.image, face.points, track.smoother, frame.t)
        track.template = _patch(track.aligned.gray)
        track.brightness = float(track.aligned.gray.mean())

    def _end(self, tracks: list[_Track]) -> None:
        ids = [track.track_id for track in tracks]
        for track_id in ids:
            log.debug("track %d ended", track_id)
        self._ended.extend(ids)
        self._tracks = [track for track in self._tracks if track.track_id not in ids]


def _resemblance(aligned_gray: np.ndarray, template: np.ndarray) -> float:
    """Normalised cross-correlation (-1..1) of an aligned crop with a track's template patch."""
    return float((_patch(aligned_gray) * template).sum())


def _patch(aligned_gray: np.ndarray) -> np.ndarray:
    """The aligned crop shrunk to a small zero-mean, unit-norm patch, for normalised cross-correlation."""
    patch = cv2.resize(aligned_gray, (PATCH_SIZE, PATCH_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    patch -= patch.mean()
    return patch / max(float(np.linalg.norm(patch)), 1e-6)
