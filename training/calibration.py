"""Calibration sets for INT8 TensorRT engines, drawn from a dataset's motion images.

INT8 calibration only needs inputs that look like what the engine will see, but which
samples it sees still matters for honest evaluation: an engine evaluated on a held-out
subject should not have been calibrated on that subject, so subjects can be excluded.
Samples are taken class by class in turn (round robin, shuffled within each class by the
seed), so a rare class is not left out of the activation ranges.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from engines.errors import InputError
from engines.manifest import read_manifest
from engines.runtime.tensorrt_support import calibration_contract, write_calibration_set
from training.inputs import load_motion_images
from training.samples import Sample

__all__ = ["choose_calibration_samples", "write_dataset_calibration_set"]


def choose_calibration_samples(samples: Sequence[Sample], count: int, seed: int = 0,
                               exclude_subjects: Sequence[str] = ()) -> list[Sample]:
    """Up to ``count`` samples with motion images, classes in turn, none from ``exclude_subjects``."""
    if count < 1:
        raise InputError(f"must be >= 1, got {count}", column="--count")
    excluded = set(exclude_subjects)
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.frames and sample.subject not in excluded:
            by_class[sample.emotion].append(sample)
    if not by_class:
        raise InputError("no sample with a motion image is left to calibrate on", column="--exclude-subjects")
    rng = random.Random(seed)
    queues = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda s: s.key)
        rng.shuffle(members)
        queues.append(members)
    chosen: list[Sample] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    return chosen


def write_dataset_calibration_set(engine_dir: str | Path, samples: Sequence[Sample], out: str | Path, *,
                                  count: int = 256, seed: int = 0, exclude_subjects: Sequence[str] = ()) -> Path:
    """Write a calibration set for the engine in ``engine_dir`` from the samples' motion images."""
    manifest = read_manifest(engine_dir)
    contract = calibration_contract(manifest.data)
    chosen = choose_calibration_samples(samples, count, seed, exclude_subjects)
    channels, height, width = manifest.sample_shape
    inputs = load_motion_images(chosen, size=(height, width)).numpy()
    if inputs.shape[1] != channels:
        raise InputError(f"the samples' images have {inputs.shape[1]} planes, the engine takes {channels}")
    return write_calibration_set(out, inputs, contract, [s.key for s in chosen])
