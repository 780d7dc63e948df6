"""``mer prepare`` on synthetic CASME II-layout clips: the cache, its manifest, resuming, errors, and the
clip inputs made from it (``training.datasets.prepared``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.clip_input import build_clip_input
from engines.clip_spec import ClipSpec
from engines.errors import InputError
from streamer.cli import main
from streamer.front_end import FacesConfig, build_tracker
from streamer.frames import Frame
from training.datasets import load_dataset
from training.prepare import apex_index, clip_frame_numbers
from training.samples import Sample

CROP = 64
FPS = 30  # the synthetic clips' own rate, written in their ground_truth.json (CASME II's reader says 200)


def clip_times(out: Path) -> dict[str, int]:
    """Each clip file (relative to the cache) and when it was written."""
    return {str(path.relative_to(out)): path.stat().st_mtime_ns for path in (out / "clips").rglob("*.npz")}


def prepare(root: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "--dataset", "casme2", "--root", str(root), "--out", str(out), "--size", str(CROP),
                 "--no-progress", *extra])


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "clips"
    assert main(["synth", "clips", "--out", str(root), "--subjects", "2", "--per-class", "1", "--size", "160",
                 "--fps", str(FPS), "--no-progress"]) == 0
    return root


@pytest.fixture(scope="module")
def cache(synth, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A cache made in two runs: the first two samples (``--limit 2``), then the rest (resumed)."""
    out = tmp_path_factory.mktemp("cache")
    assert prepare(synth, out, "--limit", "2") == 0
    first = clip_times(out)
    assert prepare(synth, out) == 0
    return out, first


def test_manifest_says_what_made_the_cache_and_lists_every_sample(synth, cache):
    out, _ = cache
    manifest = json.loads((out / "manifest.json").read_text())
    options = manifest["options"]
    assert (options["dataset"], options["root"], options["sheet"]) == ("casme2", str(synth.resolve()), None)
    assert (options["crop_size"], options["fps"], options["color"]) == (CROP, FPS, "rgb")
    assert options["faces"] == FacesConfig(backend="dlib", crop_size=CROP, max_faces=1).model_dump()
    assert manifest["produced_by"]["mer_version"]
    originals = load_dataset("casme2", root=synth)
    assert [entry["file"] for entry in manifest["samples"]] == [
        f"clips/{s.subject}/{s.sample_id}.npz" for s in originals]
    for entry, sample in zip(manifest["samples"], originals, strict=True):
        assert (entry["subject"], entry["sample_id"], entry["emotion"], entry["labels"], entry["source"]) == (
            sample.subject, sample.sample_id, sample.emotion, sample.labels, sample.source)
        assert (entry["onset"], entry["apex"], entry["offset"]) == (sample.onset, sample.apex, sample.offset)
        assert entry["indices"] == {"onset": 0, "apex": sample.apex - sample.onset,
                                    "offset": sample.offset - sample.onset}
        assert entry["frame_count"] == len(sample.frames) and entry["apex_from"] == "sheet"


def test_clips_hold_the_front_ends_aligned_crops_in_rgb(synth, cache):
    out, _ = cache
    sample = load_dataset("casme2", root=synth)[0]
    with np.load(out / "clips" / sample.subject / f"{sample.sample_id}.npz") as stored:
        frames = stored["frames"]
        assert frames.shape == (sample.offset - sample.onset + 1, CROP, CROP, 3) and frames.dtype == np.uint8
        assert (int(stored["onset"]), int(stored["apex"]), int(stored["offset"])) == (
            0, sample.apex - sample.onset, len(frames) - 1)
        assert float(stored["fps"]) == FPS
    # The grey crops the stream's tracker makes of the same frames are these crops in grey.
    tracker = build_tracker(FacesConfig(crop_size=CROP, max_faces=1))
    for index, path in enumerate(sample.frames[:4]):
        face = tracker.update(Frame(index=index, t=index / FPS, image=cv2.imread(str(path)), captured_at=0.0))[0]
        np.testing.assert_array_equal(cv2.cvtColor(frames[index], cv2.COLOR_RGB2GRAY), face.aligned.gray)


def test_a_rerun_resumes_and_skips_what_is_written(synth, cache, capsys):
    out, first = cache
    assert len(first) == 2  # --limit 2 wrote two clips ...
    now = clip_times(out)
    assert len(now) == 6 and all(now[name] == mtime for name, mtime in first.items())  # ... the full run kept them
    assert prepare(synth, out) == 0
    assert "prepared 0 clips (6 already there); 6 samples" in capsys.readouterr().out
    assert clip_times(out) == now


def test_other_options_on_an_existing_cache_are_refused(synth, cache, capsys):
    out, _ = cache
    assert main(["prepare", "--dataset", "casme2", "--root", str(synth), "--out", str(out), "--size", "48",
                 "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "other options" in error and "crop_size: cache 64, now 48" in error and "manifest.json" in error


def test_a_cache_begun_before_a_face_setting_existed_resumes_with_its_default(synth, cache, tmp_path, capsys):
    out = tmp_path / "older"
    shutil.copytree(cache[0], out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["faces"].pop("dlib_trees") == 0  # what a cache made before the key holds
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert prepare(synth, out) == 0
    assert "prepared 0 clips (6 already there)" in capsys.readouterr().out
    manifest["options"]["faces"]["dlib_trees"] = 200  # a setting other than the default still differs
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert prepare(synth, out) == 2
    assert "faces: cache" in capsys.readouterr().err


def test_a_missing_frame_is_an_error_naming_the_file_and_earlier_clips_stay(synth, tmp_path, capsys):
    root = tmp_path / "clips"
    shutil.copytree(synth, root)
    first, second = load_dataset("casme2", root=root)[:2]
    missing = second.frames[len(second.frames) // 2]
    missing.unlink()
    out = tmp_path / "cache"
    assert prepare(root, out) == 2
    assert str(missing) in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [entry["sample_id"] for entry in manifest["samples"]] == [first.sample_id]
    assert (out / "clips" / first.subject / f"{first.sample_id}.npz").is_file()


def test_a_frame_without_a_face_is_an_error_naming_the_file(synth, tmp_path, capsys):
    root = tmp_path / "clips"
    shutil.copytree(synth, root)
    blank = load_dataset("casme2", root=root)[0].frames[0]
    cv2.imwrite(str(blank), np.full((160, 160, 3), 128, np.uint8))
    assert prepare(root, tmp_path / "cache", "--limit", "1") == 2
    error = capsys.readouterr().err
    assert "no face found" in error and str(blank) in error


def test_prepared_reader_gives_the_original_samples(synth, cache):
    out, _ = cache
    prepared = load_dataset("prepared", root=out)
    originals = load_dataset("casme2", root=synth)
    assert [(s.key, s.emotion, s.labels, s.source, s.dataset, s.action_units) for s in prepared] == [
        (s.key, s.emotion, s.labels, s.source, s.dataset, s.action_units) for s in originals]
    assert all(s.frames == (out / "clips" / s.subject / f"{s.sample_id}.npz",) for s in prepared)


def test_load_clip_inputs_builds_from_the_cache_and_memoises(cache, monkeypatch):
    from training.datasets import prepared as reader

    out, _ = cache
    samples = load_dataset("prepared", root=out)
    spec = ClipSpec(frames=3, anchors="onset_apex_offset", size=32, flow="opencv-farneback")
    inputs = reader.load_clip_inputs(samples, spec)
    assert isinstance(inputs, torch.Tensor) and inputs.dtype == torch.float32
    assert tuple(inputs.shape) == (6, 3, 5, 32, 32)
    with np.load(samples[1].frames[0]) as stored:
        direct = build_clip_input(stored["frames"], int(stored["onset"]), int(stored["apex"]), int(stored["offset"]),
                                  spec, fps=float(stored["fps"]))
    np.testing.assert_allclose(inputs[1].numpy(), direct, atol=1e-5)
    memos = list((out / "inputs").glob("*.npy"))
    assert len(memos) == 1

    def no_rebuilding(*args, **kwargs):
        raise AssertionError("inputs were rebuilt instead of read from the memo")

    monkeypatch.setattr("engines.clip_input.build_clip_inputs", no_rebuilding)
    again = reader.load_clip_inputs(samples, spec)
    assert torch.equal(again, inputs)
    with pytest.raises(AssertionError, match="rebuilt"):  # another spec is another memo
        reader.load_clip_inputs(samples, spec.with_size(16))


def test_a_gap_names_the_missing_file_with_the_datasets_own_padding(tmp_path):
    folder = tmp_path / "006" / "006_1_2"
    frames = tuple(folder / f"006_{number:05d}.jpg" for number in (5562, 5563, 5565))
    sample = Sample(dataset="samm", subject="006", sample_id="006_1_2", emotion="anger", onset=5562, apex=5563,
                    offset=5565, frames=frames)
    with pytest.raises(InputError) as error:
        clip_frame_numbers(sample, tmp_path, "samm")
    assert error.value.path == folder / "006_05564.jpg"
    whole = Sample(dataset="samm", subject="006", sample_id="006_1_2", emotion="anger", onset=5562, apex=5563,
                   offset=5563, frames=frames[:2])
    assert clip_frame_numbers(whole, tmp_path, "samm") == [5562, 5563]


@pytest.mark.parametrize("apex,expected", [(14, (4, "sheet")), (None, (2, "middle")), (8, (2, "middle"))])
def test_apex_index_falls_back_to_the_middle_frame(apex, expected):
    sample = Sample(dataset="casme3", subject="spNO.1", sample_id="b_10", emotion="happy", onset=10, apex=apex,
                    offset=15)
    index, source = apex_index(sample, list(range(10, 16)))
    assert (index, source.split()[0]) == expected
