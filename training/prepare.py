"""``mer prepare``: a dataset's clips -> a cache of aligned colour face crops, one file per sample.

Each sample's onset..offset frames are read, the face is tracked and aligned through them
with the streaming front end (``streamer.front_end.build_tracker``, dlib 68 points), and
the aligned crops, converted to RGB, are written to ``CACHE/clips/<subject>/<sample_id>.npz``
with the clip's onset/apex/offset *indices* and frame rate. ``CACHE/manifest.json`` says
what made the cache (options, face front end, mer version) and lists every sample written,
with the dataset's own fields, so ``--dataset prepared --root CACHE`` reads the same samples.

A run is resumable: clips are written atomically (a temporary file, then a rename), so a
clip file that exists is complete and a rerun skips it; the rerun's options must equal the
manifest's (else an error says which differ). A missing, unreadable or faceless frame stops
the run with an error naming the file; what was written so far stays, listed in the manifest.
See docs/prepare.md.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from engines.errors import InputError
from streamer.front_end import FacesConfig
from training.datasets import load_dataset, reader_module
from training.datasets.prepared import CACHE_FORMAT, DEFAULT_SHEETS
from training.samples import Sample

log = logging.getLogger(__name__)

MANIFEST = DEFAULT_SHEETS[0]
CLIPS_DIR = "clips"
PREPARE_DATASETS = ("casme2", "samm", "smic", "mmew", "casme3")
SYNTHETIC_TRUTH = "ground_truth.json"  # `mer synth clips` states its frame rate here
DEFAULT_SIZE = 224
MANIFEST_FLUSH_S = 30.0  # rewrite the manifest at most this often during a run (and always at the end)
_TRAILING_NUMBER = re.compile(r"(\d+)$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")


@dataclass(frozen=True)
class PrepareResult:
    """What a run did: clips written now, clips already there, samples in the cache in all."""

    cache: Path
    written: int
    skipped: int
    cached: int


def faces_config(size: int) -> FacesConfig:
    """The front end used: the stream's defaults (so training crops look like live ones), at
    ``size`` px, one face per clip (the largest, as the tracker keeps the biggest new face)."""
    return FacesConfig(backend="dlib", crop_size=size, max_faces=1, dlib_trees=0)  # every tree: the papers' fit


def dataset_fps(dataset: str, root: Path) -> float:
    """The clips' frame rate: a synthetic set's own (``ground_truth.json``), else the reader's."""
    truth = root / SYNTHETIC_TRUTH
    if truth.is_file():
        try:
            fps = json.loads(truth.read_text(encoding="utf-8")).get("fps")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the synthetic ground truth ({exc})", path=truth) from exc
        if fps is not None:
            return float(fps)
    return float(reader_module(dataset).FPS)


def cache_options(dataset: str, root: Path, sheet: Path | None, size: int) -> dict:
    """Everything the cached crops depend on; a rerun must match it to resume."""
    root = root.resolve()
    return {
        "dataset": dataset,
        "root": str(root),
        "sheet": None if sheet is None else str(sheet.resolve()),
        "crop_size": size,
        "fps": dataset_fps(dataset, root),
        "faces": faces_config(size).model_dump(),
        "color": "rgb",
    }


def clip_file(sample: Sample) -> str:
    """Where a sample's crops go, relative to the cache (names checked: they become paths)."""
    for name in (sample.subject, sample.sample_id):
        if not _SAFE_NAME.match(name) or name in (".", ".."):
            raise InputError(f"sample {sample.key}: {name!r} cannot be used as a file name", column="sample_id")
    return f"{CLIPS_DIR}/{sample.subject}/{sample.sample_id}.npz"


def prepare_dataset(
    dataset: str,
    root: Path,
    out: Path,
    *,
    sheet: Path | None = None,
    size: int = DEFAULT_SIZE,
    workers: int = 1,
    limit: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Cache the aligned crops of ``dataset``'s samples (the first ``limit`` of them) under ``out``."""
    if dataset not in PREPARE_DATASETS:
        raise InputError(f"mer prepare reads raw clips of {', '.join(PREPARE_DATASETS)}; got {dataset!r}",
                         column="dataset")
    samples = load_dataset(dataset, root=root, sheet=sheet)
    options = cache_options(dataset, root, sheet, size)
    out.mkdir(parents=True, exist_ok=True)
    entries = _open_manifest(out, options)
    planned = samples if limit is None else samples[:limit]
    todo = []
    for sample in planned:
        name = clip_file(sample)
        if (out / name).is_file():
            if name not in entries:  # written after the last manifest update
                entries[name] = _stored_entry(out / name)
        else:
            todo.append(sample)
    skipped = len(planned) - len(todo)
    if skipped:
        log.info("%s: %d of %d samples already prepared in %s", dataset, skipped, len(planned), out)
    manifest = _ManifestWriter(out, options, samples, entries)
    try:
        _run(todo, out, options, workers, progress, manifest.add)
    finally:
        manifest.write()
    return PrepareResult(out, len(todo), skipped, len(manifest.entries))


def prepare_sample(sample: Sample, out: Path, options: dict) -> dict:
    """Track, align and write one sample's crops; returns its manifest entry."""
    name = clip_file(sample)
    numbers = clip_frame_numbers(sample, Path(options["root"]), options["dataset"])
    crops = track_clip(sample.frames, FacesConfig(**options["faces"]), options["fps"])
    apex_at, apex_from = apex_index(sample, numbers)
    entry = sample_entry(sample, name, len(crops), apex_at, apex_from)
    _write_atomically(out / name, crops, entry, options["fps"])
    return entry


def track_clip(paths: Sequence[Path], faces: FacesConfig, fps: float) -> np.ndarray:
    """``(n, S, S, 3)`` uint8 RGB aligned crops of the face tracked through the frame files."""
    from streamer.front_end import build_tracker

    tracker = build_tracker(faces)
    crops = np.empty((len(paths), faces.crop_size, faces.crop_size, 3), dtype=np.uint8)
    for index, path in enumerate(paths):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("cannot read frame (missing or not an image)", path=path)
        crop = aligned_crop(tracker, image, index, fps)
        if crop is None:
            raise InputError(f"no face found (frame {index + 1} of the clip)", path=path)
        crops[index] = crop
    return crops


def aligned_crop(tracker, image: np.ndarray, index: int, fps: float) -> np.ndarray | None:
    """The tracked face of BGR frame ``index`` as the stream's front end aligns it, in RGB; None
    when no face is found. ``tracker`` is ``streamer.front_end.build_tracker``'s."""
    from streamer.frames import Frame

    tracked = tracker.update(Frame(index=index, t=index / fps, image=image, captured_at=0.0))
    return tracked[0].aligned.color[..., ::-1] if tracked else None  # BGR -> RGB


def sample_entry(sample: Sample, name: str, count: int, apex_at: int, apex_from: str) -> dict:
    """The manifest's record of one cached sample: the dataset's fields plus where the anchors are."""
    fields = asdict(sample)
    fields.pop("frames")
    return {"file": name, **fields, "frame_count": count,
            "indices": {"onset": 0, "apex": apex_at, "offset": count - 1}, "apex_from": apex_from}


def clip_frame_numbers(sample: Sample, root: Path, dataset: str) -> list[int]:
    """The clip's frame numbers, which must run onset..offset without a gap (else: the missing file)."""
    if not sample.frames:
        expected = reader_module(dataset).frame_path(root, sample, sample.onset) if sample.onset is not None else root
        raise InputError(f"no frames of sample {sample.key} found (its onset frame would be this file)", path=expected)
    numbers = []
    for path in sample.frames:
        match = _TRAILING_NUMBER.search(path.stem)
        if match is None:
            raise InputError("frame file name does not end in its frame number", path=path)
        numbers.append(int(match.group(1)))
    first = numbers[0] if sample.onset is None else sample.onset
    last = numbers[-1] if sample.offset is None else sample.offset
    present = set(numbers)
    for number in range(first, last + 1):
        if number not in present:
            raise InputError(f"frame {number} of {sample.key} (onset {first}, offset {last}) is missing",
                             path=_missing_frame_path(sample.frames, numbers, number))
    return numbers


def _missing_frame_path(paths: Sequence[Path], numbers: Sequence[int], number: int) -> Path:
    """The file a missing frame would have: a neighbour's name with the number replaced (same padding)."""
    neighbour = paths[int(np.argmin([abs(n - number) for n in numbers]))]
    digits = _TRAILING_NUMBER.search(neighbour.stem).group(1)
    text = str(number).zfill(len(digits)) if digits.startswith("0") else str(number)
    return neighbour.with_name(neighbour.stem[: -len(digits)] + text + neighbour.suffix)


def apex_index(sample: Sample, numbers: Sequence[int]) -> tuple[int, str]:
    """Where the apex is in the clip; the middle frame (SMIC's convention) when the sheet has none usable."""
    middle = (len(numbers) - 1) // 2
    if sample.apex is None:
        log.warning("%s: no apex in the sheet; using the middle frame", sample.key)
        return middle, "middle frame (no apex in the sheet)"
    if sample.apex not in numbers:
        log.warning("%s: apex %d lies outside onset..offset; using the middle frame", sample.key, sample.apex)
        return middle, f"middle frame (sheet apex {sample.apex} outside onset..offset)"
    return numbers.index(sample.apex), "sheet"


def _write_atomically(path: Path, crops: np.ndarray, entry: dict, fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    indices = entry["indices"]
    np.savez_compressed(buffer, frames=crops, onset=indices["onset"], apex=indices["apex"], offset=indices["offset"],
                        fps=fps, entry=json.dumps(entry))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)


def _stored_entry(path: Path) -> dict:
    """A clip file's own copy of its manifest entry (for a clip written after the last manifest flush)."""
    try:
        with np.load(path) as stored:
            return json.loads(str(stored["entry"]))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"unreadable prepared clip ({exc}); delete it and rerun to redo it", path=path) from exc


def _open_manifest(out: Path, options: dict) -> dict[str, dict]:
    """Entries already in the cache's manifest; an error when it was made with other options."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable manifest ({exc})", path=path) from exc
    if manifest.get("format") != CACHE_FORMAT:
        raise InputError(f"not a {CACHE_FORMAT} cache (format {manifest.get('format')!r})", path=path)
    old = dict(manifest.get("options", {}))
    if isinstance(old.get("faces"), dict):  # face settings added since the cache began take their defaults
        old["faces"] = {**FacesConfig().model_dump(), **old["faces"]}
    differing = sorted(key for key in set(old) | set(options) if old.get(key) != options.get(key))
    if differing:
        details = "; ".join(f"{key}: cache {old.get(key)!r}, now {options.get(key)!r}" for key in differing)
        raise InputError(f"this cache was prepared with other options ({details}); use another --out or the "
                         "same options", path=path)
    made_by = manifest.get("produced_by", {}).get("mer_version")
    if made_by != mer_version():
        log.warning("cache %s was started by mer %s, this is mer %s", out, made_by, mer_version())
    return {entry["file"]: entry for entry in manifest.get("samples", [])}


class _ManifestWriter:
    """Keeps the manifest current: rewritten (atomically) every MANIFEST_FLUSH_S and at the end."""

    def __init__(self, out: Path, options: dict, samples: Sequence[Sample], entries: dict[str, dict]) -> None:
        self.path = out / MANIFEST
        self.options = options
        self.order = {clip_file(sample): n for n, sample in enumerate(samples)}
        self.entries = entries
        self.flushed = time.monotonic()
        self.write()

    def add(self, entry: dict) -> None:
        self.entries[entry["file"]] = entry
        if time.monotonic() - self.flushed >= MANIFEST_FLUSH_S:
            self.write()

    def write(self) -> None:
        listed = sorted(self.entries.values(), key=lambda entry: self.order.get(entry["file"], len(self.order)))
        document = {
            "format": CACHE_FORMAT,
            "options": self.options,
            "produced_by": {"mer_version": mer_version(), "command": "mer prepare"},
            "layout": "clips/<subject>/<sample_id>.npz: frames (n, S, S, 3) uint8 RGB aligned crops of onset..offset; "
                      "onset, apex, offset: indices into frames; fps; entry: this sample's manifest entry",
            "samples": listed,
        }
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)
        self.flushed = time.monotonic()


def _run(todo: Sequence[Sample], out: Path, options: dict, workers: int, progress: bool,
         done: Callable[[dict], None]) -> None:
    """Prepare ``todo`` in this process or in ``workers`` processes, reporting each entry to ``done``."""
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="clip", desc=f"prepare {options['dataset']}", disable=not progress)
    try:
        if workers <= 1 or len(todo) <= 1:
            for sample in todo:
                done(prepare_sample(sample, out, options))
                bar.update(1)
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(prepare_sample, sample, out, options) for sample in todo]
            try:
                for future in as_completed(futures):
                    done(future.result())
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                pool.shutdown(wait=True)  # let running clips finish, so the manifest lists them
                for future in futures:
                    if future.done() and not future.cancelled() and future.exception() is None:
                        done(future.result())
                raise
    finally:
        bar.close()


def mer_version() -> str:
    try:
        return version("mer")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"
