"""The outputs: CASME II-style clips, SAMM Long Videos-style long videos, plain video files, and
RAF-DB-style still faces of macro-expressions (what the transfer-learning model pretrains on).

Each writes frames where the real dataset puts them and an annotation sheet in the real
dataset's schema (so the real readers load it unchanged), plus ``ground_truth.json``
with everything the sheet cannot say: seconds, amplitudes, identities, distractor logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.errors import InputError
from training.datasets import casme2, rafdb, samm_lv
from training.datasets.frames import write_frames
from training.datasets.sheets import write_casme2_coding_sheet, write_samm_lv_sheet
from training.samples import Interval, Sample
from training.synthetic.action_units import EMOTION_AUS, EMOTION_CLASSES, STILL_EMOTION_AUS
from training.synthetic.clips import STILL_FPS, Clip, ClipStreams, long_clip, short_clip, still_expression
from training.synthetic.identities import Identity, make_identity, subject_params
from training.synthetic.settings import SynthSettings
from training.synthetic.writers import write_json, write_video

log = logging.getLogger(__name__)

GENERATOR = "mer-synth/1"
CASME2_SHEET = casme2.DEFAULT_SHEETS[0]
SAMM_LV_SHEET = samm_lv.DEFAULT_SHEETS[1]
GROUND_TRUTH = "ground_truth.json"
# Random-stream keys, so no two layouts share draws for the same subject.
CLIPS_KEY, LONG_KEY, FACES_KEY = 1, 2, 3
RAFDB_LABELS = {emotion: code for code, emotion in rafdb.EMOTIONS.items()}
RAFDB_ALIGNED_SIZE = 100  # RAF-DB's aligned faces are 100x100


@dataclass(frozen=True)
class Written:
    """What a layout wrote, for the one-line summary."""

    root: Path
    clips: int
    frames: int
    events: int
    files: tuple[Path, ...]


class Progress:
    """Counts frames through an optional tqdm bar (the CLI shows it; tests do not)."""

    def __init__(self, total: int, enabled: bool, description: str) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", desc=description)

    def through(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            yield frame
            self.step()

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def subject_identity(index: int, seed: int, size: tuple[int, int], settings: SynthSettings, name: str) -> Identity:
    params = subject_params(index, seed, vary=settings.vary_identities)
    return make_identity(name, params, size, settings.face_scale)


def clip_emotions(per_class: int) -> list[str]:
    """CASME II emotion words for ``per_class`` clips of each MEGC class; negative alternates disgust/repression."""
    return [
        emotions[k % len(emotions)]
        for emotions in EMOTION_CLASSES.values()
        for k in range(per_class)
    ]


def write_clips(
    root: Path, *, subjects: int, per_class: int, fps: float, size: tuple[int, int], seed: int,
    settings: SynthSettings, progress: bool = False,
) -> Written:
    """CASME II layout: ``root/sub01/EP01_01/img1.jpg``, the coding sheet and the ground truth.

    Clip names are numbered in a shuffled order so the name does not give the class away.
    """
    root.mkdir(parents=True, exist_ok=True)
    plans: list[tuple[Sample, Clip]] = []
    for s in range(subjects):
        subject = f"sub{s + 1:02d}"
        identity = subject_identity(s, seed, size, settings, subject)
        emotions = clip_emotions(per_class)
        order = np.random.default_rng([seed, CLIPS_KEY, s]).permutation(len(emotions))
        for number, k in enumerate(order, start=1):
            clip = short_clip(identity, emotions[k], fps, settings, ClipStreams.spawn(seed, CLIPS_KEY, s, number))
            event = clip.events[0]
            sample = Sample(
                dataset=casme2.NAME, subject=subject, sample_id=f"EP{number:02d}_01", emotion=event.emotion,
                onset=event.timing.onset + 1, apex=event.timing.apex + 1, offset=event.timing.offset + 1,
                action_units=tuple(au.removeprefix("AU") for au in event.action_units),
            )
            plans.append((sample, clip))
    bar = Progress(sum(clip.n_frames for _, clip in plans), progress, "clips")
    total = 0
    try:
        for sample, clip in plans:
            frames = bar.through(clip.renderer().frames(clip.n_frames))
            total += len(write_frames(
                lambda number, sample=sample: casme2.frame_path(root, sample, number),
                enumerate(frames, start=1),
            ))
    finally:
        bar.close()
    sheet = root / CASME2_SHEET
    write_casme2_coding_sheet(sheet, [sample for sample, _ in plans])
    truth = _ground_truth("casme2-clips", seed, fps, size, settings, [clip.identity for _, clip in plans])
    truth["clips"] = [
        {"sample_id": sample.sample_id, "folder": f"{sample.subject}/{sample.sample_id}", **clip.describe()}
        for sample, clip in plans
    ]
    write_json(root / GROUND_TRUTH, truth)
    return Written(root, len(plans), total, len(plans), (sheet, root / GROUND_TRUTH))


def still_emotions(per_class: int) -> list[str]:
    """RAF-DB emotion words for ``per_class`` faces of each MEGC class; negative alternates disgust/sadness."""
    groups = {label: [e for e in STILL_EMOTION_AUS if rafdb.MEGC3_GROUPS[e] == label] for label in EMOTION_CLASSES}
    return [emotions[k % len(emotions)] for emotions in groups.values() for k in range(per_class)]


def write_faces(
    root: Path, *, subjects: int, per_class: int, size: tuple[int, int], seed: int, settings: SynthSettings,
    progress: bool = False,
) -> Written:
    """RAF-DB basic layout: ``root/EmoLabel/list_patition_label.txt`` and
    ``root/Image/aligned/train_00001_aligned.jpg``, plus the ground truth.

    Each face is the apex of a macro-expression (``settings.timing.macro_amplitude_px``)
    rendered at ``size`` and aligned to 100x100 by the stream's face front end, as
    ``mer prepare`` aligns clips, so pretraining sees faces framed as fine-tuning will. Image
    names are numbered in a shuffled order, so the name does not give the class away. RAF-DB
    publishes no identities; ``ground_truth.json`` names each face's subject.
    """
    from streamer.front_end import build_tracker
    from training.prepare import aligned_crop, faces_config

    plans: list[tuple[str, Clip, int]] = []
    for s in range(subjects):
        identity = subject_identity(s, seed, size, settings, f"sub{s + 1:02d}")
        for k, emotion in enumerate(still_emotions(per_class)):
            clip, apex = still_expression(identity, emotion, settings, ClipStreams.spawn(seed, FACES_KEY, s, k))
            plans.append((emotion, clip, apex))
    order = np.random.default_rng([seed, FACES_KEY]).permutation(len(plans))
    aligned = root / "Image" / "aligned"
    aligned.mkdir(parents=True, exist_ok=True)
    faces = faces_config(RAFDB_ALIGNED_SIZE)
    bar = Progress(len(plans), progress, "faces")
    lines, records = [], []
    try:
        for number, k in enumerate(order, start=1):
            emotion, clip, apex = plans[k]
            name = f"train_{number:05d}.jpg"
            crop = aligned_crop(build_tracker(faces), clip.renderer().frame(apex), 0, STILL_FPS)  # a fresh tracker: a new face
            path = rafdb.aligned_image_path(root, name)
            if crop is None:
                raise InputError(f"the face front end found no face in synthetic face {name} (subject "
                                 f"{clip.identity.subject}); use a larger --size", path=path)
            if not cv2.imwrite(str(path), np.ascontiguousarray(crop[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise InputError("cannot write image", path=path)
            lines.append(f"{name} {RAFDB_LABELS[emotion]}")
            event = clip.events[0]
            records.append({"image": name, "subject": clip.identity.subject, "emotion": emotion,
                            "action_units": list(event.action_units), "amplitude_px": event.amplitude_px})
            bar.step()
    finally:
        bar.close()
    sheet = root / rafdb.LABEL_FILE
    sheet.parent.mkdir(parents=True, exist_ok=True)
    sheet.write_text("\n".join(lines) + "\n", encoding="utf-8")
    truth = _ground_truth("rafdb-faces", seed, STILL_FPS, size, settings, [clip.identity for _, clip, _ in plans])
    truth["faces"] = records
    write_json(root / GROUND_TRUTH, truth)
    return Written(root, len(plans), len(plans), len(plans), (sheet, root / GROUND_TRUTH))


def write_long_videos(
    root: Path, *, subjects: int, videos_per_subject: int, duration_s: float, fps: float, size: tuple[int, int],
    seed: int, n_micro: int, n_macro: int, settings: SynthSettings, frames: bool = True,
    video_suffix: str | None = None, progress: bool = False,
) -> Written:
    """SAMM Long Videos layout: ``root/001_1/001_00001.jpg`` (and/or ``root/001_1.mp4``), the sheet and the ground truth."""
    if not frames and video_suffix is None:
        raise InputError("nothing to write: ask for frames, a video file, or both")
    root.mkdir(parents=True, exist_ok=True)
    emotions = tuple(EMOTION_AUS)
    clips: list[tuple[str, Clip]] = []
    for s in range(subjects):
        subject = f"{s + 1:03d}"
        identity = subject_identity(s, seed, size, settings, subject)
        for v in range(videos_per_subject):
            streams = ClipStreams.spawn(seed, LONG_KEY, s, v)
            clip = long_clip(identity, duration_s, fps, n_micro, n_macro, settings, streams, emotions)
            clips.append((f"{subject}_{v + 1}", clip))
    bar = Progress(sum(clip.n_frames for _, clip in clips), progress, "long videos")
    written_files = []
    total = 0
    try:
        for video, clip in clips:
            total += _write_long_video(root, video, clip, bar, frames, video_suffix, written_files)
    finally:
        bar.close()
    intervals = [interval for video, clip in clips for interval in _intervals(video, clip)]
    sheet = root / SAMM_LV_SHEET
    write_samm_lv_sheet(sheet, intervals)
    truth = _ground_truth("samm-lv-long", seed, fps, size, settings, [clip.identity for _, clip in clips])
    truth["videos"] = [_video_truth(video, clip, frames, video_suffix) for video, clip in clips]
    write_json(root / GROUND_TRUTH, truth)
    return Written(root, len(clips), total, len(intervals), (sheet, root / GROUND_TRUTH, *written_files))


def write_video_file(
    path: Path, *, duration_s: float, fps: float, size: tuple[int, int], seed: int, subject: int,
    n_micro: int, n_macro: int, settings: SynthSettings, progress: bool = False,
) -> Written:
    """One plain video file (.mp4 or .avi) with ``<stem>.json`` ground truth and ``<stem>.samm-lv.csv`` beside it."""
    name = f"{subject + 1:03d}_1"
    identity = subject_identity(subject, seed, size, settings, f"{subject + 1:03d}")
    clip = long_clip(identity, duration_s, fps, n_micro, n_macro, settings,
                     ClipStreams.spawn(seed, LONG_KEY, subject, 0), tuple(EMOTION_AUS))
    bar = Progress(clip.n_frames, progress, path.name)
    try:
        count = write_video(path, bar.through(clip.renderer().frames(clip.n_frames)), fps, size)
    finally:
        bar.close()
    sidecar = path.with_suffix(".json")
    sheet = path.with_name(f"{path.stem}.samm-lv.csv")
    write_samm_lv_sheet(sheet, _intervals(name, clip))
    truth = _ground_truth("video", seed, fps, size, settings, [identity])
    truth["videos"] = [{**_video_truth(name, clip, False, None), "video_file": path.name}]
    write_json(sidecar, truth)
    return Written(path.parent, 1, count, len(clip.events), (path, sidecar, sheet))


def _write_long_video(
    root: Path, video: str, clip: Clip, bar: Progress, frames: bool, video_suffix: str | None, written: list[Path]
) -> int:
    subject = clip.identity.subject
    rendered = bar.through(clip.renderer().frames(clip.n_frames))
    if video_suffix is None:
        folder = root / video
        return len(write_frames(lambda n: folder / f"{subject}_{n:05d}.jpg", enumerate(rendered, start=1)))
    path = root / f"{video}{video_suffix}"
    if frames:  # write each frame to both the folder and the video without rendering twice
        folder = root / video
        rendered = _tee_to_folder(rendered, folder, subject)
    written.append(path)
    return write_video(path, rendered, clip.fps, clip.identity.size)


def _tee_to_folder(frames: Iterator[np.ndarray], folder: Path, subject: str) -> Iterator[np.ndarray]:
    for number, frame in enumerate(frames, start=1):
        write_frames(lambda n: folder / f"{subject}_{n:05d}.jpg", [(number, frame)])
        yield frame


def _intervals(video: str, clip: Clip) -> list[Interval]:
    return [
        Interval(
            dataset=samm_lv.NAME, subject=clip.identity.subject, video=video,
            onset=e.timing.onset + 1, apex=e.timing.apex + 1, offset=e.timing.offset + 1, kind=e.kind,
            action_units=tuple(au.removeprefix("AU") for au in e.action_units), emotion=e.emotion,
            expression_id=f"{video}_{n}",
        )
        for n, e in enumerate(clip.events, start=1)
    ]


def _video_truth(video: str, clip: Clip, frames: bool, video_suffix: str | None) -> dict:
    record = {"video": video, **clip.describe()}
    for n, event in enumerate(record["events"], start=1):
        event["expression_id"] = f"{video}_{n}"
    if frames:
        record["frames_folder"] = video
    if video_suffix is not None:
        record["video_file"] = f"{video}{video_suffix}"
    return record


def _ground_truth(layout: str, seed: int, fps: float, size: tuple[int, int], settings: SynthSettings,
                  identities: list[Identity]) -> dict:
    unique = {identity.subject: identity for identity in identities}
    return {
        "generator": GENERATOR,
        "layout": layout,
        "seed": seed,
        "fps": fps,
        "size": list(size),
        "frame_numbers": "'frame' is 1-based as in file names and sheets; 'index' is the 0-based decode index",
        "settings": settings.model_dump(mode="json"),
        "subjects": [identity.describe() for identity in unique.values()],
    }
