"""A ``mer prepare`` cache read back as a dataset, and the clip models' inputs made from it.

``read`` returns the cached samples with the original dataset's subjects, ids, emotions,
labels and source (from ``manifest.json``); each sample's one "frame" is its
``clips/<subject>/<sample_id>.npz``. :func:`load_clip_inputs` turns them into what a clip
model eats with ``engines.clip_input.build_clip_inputs`` (the stream's own function), and
keeps the result in ``CACHE/inputs/<key>.npy``: the key hashes the spec and the samples'
clip files (name, size, modification time), so a second training run with the same spec
reads the array instead of solving the flows again, and a re-prepared clip is noticed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.clip_spec import ClipSpec
from engines.errors import InputError
from training.samples import Sample

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

NAME = "prepared"
DEFAULT_SHEETS = ("manifest.json",)
CACHE_FORMAT = "mer.prepared/1"  # training.prepare writes it
INPUTS_DIR = "inputs"
# Bump when build_clip_input changes what it makes, so old memoised inputs are not reused.
INPUTS_FORMAT = "clip-input/2"  # 2: a grey spec's colour crops made grey by cv2, as the front end does
FLOW_IMAGES_FORMAT = "flow-image/1"  # the same for MotionInputBuilder's flow images
CLIPS_PER_BATCH = 16  # clips whose inputs (and flows) are built together


def read(root: Path | None, sheet: Path) -> list[Sample]:
    """The samples listed in a prepared cache's manifest (``sheet``), frames -> their clip file."""
    try:
        manifest = json.loads(sheet.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep to parse
        raise InputError(f"unreadable manifest ({exc})", path=sheet) from exc
    found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
    if found != CACHE_FORMAT:
        raise InputError(f"not a mer prepare cache (format {found!r}, expected {CACHE_FORMAT})", path=sheet)
    entries = manifest.get("samples", [])
    if not isinstance(entries, list):
        raise InputError("expected a list of samples", path=sheet, column="samples")
    return [_manifest_sample(entry, sheet, number) for number, entry in enumerate(entries, start=1)]


def _manifest_sample(entry: object, sheet: Path, number: int) -> Sample:
    """One manifest entry (written by ``training.prepare.sample_entry``) as a Sample, every field checked,
    so that a damaged manifest fails here, naming the field, rather than later in training."""

    def check(field: str, valid: bool, expected: str) -> None:
        if not valid:
            got = f"{entry[field]!r:.80}" if field in entry else "nothing (no such field)"
            raise InputError(f"expected {expected}, got {got}", path=sheet, column=f"samples[{number}].{field}")

    if not isinstance(entry, dict):
        raise InputError(f"expected an object, got {entry!r:.80}", path=sheet, column=f"samples[{number}]")
    for field in ("dataset", "subject", "sample_id", "emotion", "source", "file"):
        check(field, isinstance(entry.get(field), str) and entry[field] != "", "non-empty text")
    for field in ("onset", "apex", "offset"):
        value = entry.get(field, "missing")
        is_frame = value is None or (isinstance(value, int) and not isinstance(value, bool))
        check(field, is_frame, "a frame number or null")
    if entry["onset"] is not None and entry["offset"] is not None:
        check("offset", entry["onset"] <= entry["offset"], f"a frame number >= onset {entry['onset']}")
    units = entry.get("action_units")
    check("action_units", isinstance(units, list) and all(isinstance(u, str) and u for u in units),
          "a list of non-empty texts")
    for field in ("labels", "attributes"):
        value = entry.get(field)
        check(field, isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
              "an object of texts")
    return Sample(
        dataset=entry["dataset"], subject=entry["subject"], sample_id=entry["sample_id"], emotion=entry["emotion"],
        onset=entry["onset"], apex=entry["apex"], offset=entry["offset"], action_units=tuple(units),
        labels=dict(entry["labels"]), frames=(sheet.parent / entry["file"],), source=entry["source"],
        attributes=dict(entry["attributes"]),
    )


def load_clip_inputs(samples: Sequence[Sample], spec: ClipSpec, cache_root: Path | str | None = None) -> torch.Tensor:
    """``(N, *spec.sample_shape)`` float32: each sample's cached crops through ``build_clip_inputs``."""
    files = [clip_path(sample) for sample in samples]
    return _memoised(samples, files, {"format": INPUTS_FORMAT, "spec": spec.to_dict()}, spec.sample_shape,
                     lambda: _build(files, spec), cache_root)


def load_flow_images(samples: Sequence[Sample], signature: Mapping, cache_root: Path | str | None = None) -> torch.Tensor:
    """``(N, C, H, W)`` flow images of each clip's onset->apex pair of grey crops, made by
    :class:`~engines.preprocess.MotionInputBuilder` from a flow-image engine's ``signature``:
    exactly the input the live stream makes for such an engine."""
    from engines.preprocess import MotionInputBuilder

    builder = MotionInputBuilder(signature)
    files = [clip_path(sample) for sample in samples]
    shape = (len(signature["channels"]), *signature["size"])
    return _memoised(samples, files, {"format": FLOW_IMAGES_FORMAT, "signature": dict(signature)}, shape,
                     lambda: _build_flow_images(files, builder, shape), cache_root)


def _memoised(samples, files, recipe: dict, sample_shape, build, cache_root) -> torch.Tensor:
    """The array ``build()`` makes, kept in ``CACHE/inputs/<key>.npy`` (key: ``recipe`` and the clip files)."""
    import torch  # here, not at import: the reader itself (``mer data inspect``) needs no torch

    if not samples:
        return torch.empty(0, *sample_shape)
    cache = Path(cache_root) if cache_root is not None else files[0].parents[2]
    memo = cache / INPUTS_DIR / f"{inputs_key(samples, files, recipe)}.npy"
    if memo.is_file():
        inputs = np.load(memo)
        if inputs.shape == (len(samples), *sample_shape):
            log.info("inputs read from %s", memo)
            return torch.from_numpy(inputs)
        log.warning("%s holds inputs of shape %s; rebuilding", memo, inputs.shape)
    inputs = build()
    memo.parent.mkdir(parents=True, exist_ok=True)
    temporary = memo.with_name(f".{memo.stem}.{os.getpid()}.tmp.npy")
    np.save(temporary, inputs)
    os.replace(temporary, memo)
    log.info("inputs of %d samples written to %s", len(samples), memo)
    return torch.from_numpy(inputs)


def inputs_key(samples: Sequence[Sample], files: Sequence[Path], recipe: dict) -> str:
    """What the inputs depend on: how they are made (the builder's version and the spec or
    signature) and each sample's clip file."""
    described = []
    for sample, path in zip(samples, files, strict=True):
        stat = path.stat()
        described.append([sample.key, path.name, stat.st_size, stat.st_mtime_ns])
    text = json.dumps({**recipe, "samples": described}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _build_flow_images(files: Sequence[Path], builder, shape) -> np.ndarray:
    import cv2
    import torch

    images = np.empty((len(files), *shape), dtype=np.float32)
    for start in range(0, len(files), CLIPS_PER_BATCH):
        batch = files[start:start + CLIPS_PER_BATCH]
        pairs = []
        for path in batch:
            clip = load_clip(path)
            grey = [cv2.cvtColor(np.ascontiguousarray(clip.frames[i]), cv2.COLOR_RGB2GRAY) for i in (clip.onset, clip.apex)]
            pairs.append(grey)
        onsets = torch.from_numpy(np.stack([p[0] for p in pairs]))
        apexes = torch.from_numpy(np.stack([p[1] for p in pairs]))
        images[start:start + len(batch)] = np.asarray(builder(onsets, apexes))
    return images


def clip_path(sample: Sample) -> Path:
    """The sample's cached clip file (``clips/<subject>/<id>.npz``); InputError when it is not one or is gone."""
    if len(sample.frames) != 1 or sample.frames[0].suffix != ".npz":
        raise InputError(f"sample {sample.key} is not from a mer prepare cache (its frames should be one .npz)")
    path = sample.frames[0]
    if not path.is_file():
        raise InputError(f"prepared clip of {sample.key} is missing (rerun mer prepare)", path=path)
    return path


def _build(files: Sequence[Path], spec: ClipSpec) -> np.ndarray:
    from engines.clip_input import build_clip_inputs

    inputs = np.empty((len(files), *spec.sample_shape), dtype=np.float32)
    for start in range(0, len(files), CLIPS_PER_BATCH):
        batch = files[start:start + CLIPS_PER_BATCH]
        clips = [load_clip(path) for path in batch]
        try:
            inputs[start:start + len(batch)] = build_clip_inputs(clips, spec)
        except InputError:
            _name_failing_clip(batch, clips, spec)
            raise
    return inputs


def _name_failing_clip(files: Sequence[Path], clips: Sequence, spec: ClipSpec) -> None:
    """Build the clips of a failed batch one by one, to say which file the error comes from."""
    from engines.clip_input import build_clip_inputs

    for path, clip in zip(files, clips, strict=True):
        try:
            build_clip_inputs([clip], spec)
        except InputError as exc:
            raise InputError(exc.reason, path=path, column=exc.column) from exc


def load_clip(path: Path):
    """A cached clip as ``engines.clip_input.ClipFrames`` (its crops and anchors, indices into them)."""
    from engines.clip_input import ClipFrames

    try:
        with np.load(path) as stored:
            return ClipFrames(stored["frames"], int(stored["onset"]), int(stored["apex"]), int(stored["offset"]),
                              float(stored["fps"]))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"unreadable prepared clip ({exc}); delete it and rerun mer prepare", path=path) from exc
