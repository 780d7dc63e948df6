"""Build the engine that ships with mer: STSTNet trained on synthetic clips only.

The licensed datasets may not be shipped, and neither may weights whose only purpose is
to reproduce them, so the default engine is trained here from ``mer synth clips`` output,
through the same face front end (``streamer.front_end``) and the same input builder
(``engines.preprocess``) that ``mer stream`` uses at run time. Its quality is measured
honestly with leave-one-subject-out over the synthetic subjects; the shipped weights are
then trained on every synthetic subject with the same fixed recipe, and the manifest says
all of this. Reproduce it with::

    python -m training.default_engine --out engines/default_engine
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from engines.errors import InputError
from engines.export import export_model
from engines.manifest import preprocessing_signature
from engines.models import create_model
from engines.preprocess import LIVE_FLOW, MotionInputBuilder
from streamer.frames import Frame
from streamer.front_end import FacesConfig, build_tracker, frames_in_color
from training.classmaps import MEGC3
from training.datasets import load_dataset
from training.metrics import pooled_metrics
from training.protocol import Fold, leave_one_subject_out
from training.recipes import TrainRecipe
from training.samples import Sample
from training.trainer import run_folds, train_fold

log = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "engines" / "default_engine"

# Motion for the live path (engines.preprocess.LIVE_FLOW: TV-L1 on a 64x64 crop, short schedule).
FLOW_METHOD = LIVE_FLOW["flow_method"]
FLOW_PARAMS = LIVE_FLOW["flow_params"]
FLOW_SIZE = LIVE_FLOW["flow_size"]
# The live path's typical frame: a 640x480 camera, the face filling 60 % of the height.
CLIP_SIZE = (640, 480)

RECIPE = TrainRecipe(model="ststnet", epochs=120, batch_size=32, optimizer="adam", lr=1e-3,
                     lr_schedule="cosine", class_weighting="balanced", seed=0)


def onset_apex_crops(samples: Sequence[Sample], faces: FacesConfig, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Aligned grey onset and apex crops of each clip, made by tracking the face from onset to apex in
    frames read as a run decodes them (grey luma unless the backend needs colour: ``frames_in_color``)."""
    read_mode = cv2.IMREAD_COLOR if frames_in_color(faces) else cv2.IMREAD_GRAYSCALE
    onsets, apexes = [], []
    for sample in samples:
        if sample.onset is None or sample.apex is None or not sample.frames:
            raise InputError(f"sample {sample.key} needs onset, apex and frames")
        tracker = build_tracker(faces)
        crops = []
        for index, path in enumerate(sample.frames[: sample.apex - sample.onset + 1]):
            image = cv2.imread(str(path), read_mode)
            if image is None:
                raise InputError("cannot read frame", path=path)
            tracked = tracker.update(Frame(index=index, t=index / fps, image=image, captured_at=0.0))
            if not tracked:
                raise InputError(f"no face found in frame {index} of {sample.key}", path=path)
            crops.append(tracked[0].aligned.gray.copy())
        onsets.append(crops[0])
        apexes.append(crops[-1])
    return np.stack(onsets), np.stack(apexes)


def build(out_dir: Path, subjects: int = 8, per_class: int = 6, fps: float = 100.0, seed: int = 0,
          workers: int | None = None, work_dir: Path | None = None) -> dict:
    """Generate clips, measure LOSO on them, train on all, export; returns the LOSO metrics."""
    from training.synthetic.layouts import write_clips  # the generator behind `mer synth clips`
    from training.synthetic.settings import SynthSettings

    settings = SynthSettings()  # default distractors of `mer synth clips`: sensor noise
    settings = settings.model_copy(update={"distractors": settings.distractors.only({"noise"})})
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        root = Path(scratch) / "clips"
        write_clips(root, subjects=subjects, per_class=per_class, fps=fps, size=CLIP_SIZE, seed=seed,
                    settings=settings)
        samples = [s for s in load_dataset("casme2", root=root) if MEGC3.name in s.labels]
        faces = FacesConfig()
        onsets, apexes = onset_apex_crops(samples, faces, fps)
    class_names = MEGC3.classes
    model_cfg = create_model(RECIPE.model, label_names=class_names).cfg
    signature = preprocessing_signature(model_cfg, FLOW_METHOD, FLOW_PARAMS, FLOW_SIZE)
    inputs = MotionInputBuilder(signature)(torch.from_numpy(onsets), torch.from_numpy(apexes))
    labels = torch.tensor([class_names.index(s.labels[MEGC3.name]) for s in samples])
    subject_names = [s.subject for s in samples]

    folds = leave_one_subject_out(samples)
    results = run_folds(RECIPE, folds, inputs, labels, subject_names, class_names, workers=workers)
    predicted = np.zeros(len(samples), dtype=int)
    for result in results:
        predicted[list(result.test_indices)] = result.scores.argmax(axis=1)
    report = pooled_metrics(labels.numpy(), predicted, class_names)
    metrics = {"uf1": report.uf1, "uar": report.uar, "acc": report.acc}
    log.info("synthetic LOSO over %d subjects: UF1 %.4f UAR %.4f acc %.4f", subjects, report.uf1, report.uar,
             report.acc)

    everything = Fold(test_subject="(none)", train=tuple(range(len(samples))), test=())
    final = train_fold(RECIPE, everything, inputs, labels, subject_names, class_names)
    model = create_model(RECIPE.model, label_names=class_names)
    model.load_state_dict(final.state_dict)
    # The manifest must describe this engine's input, not the composite images STSTNet was built for.
    model.cfg = dataclasses.replace(model.cfg, motion=(
        f"aligned {faces.crop_size}x{faces.crop_size} grey face crops (streamer.front_end, {faces.align_method}) of the "
        f"spotted onset and apex frames, area-resized to {FLOW_SIZE[0]}x{FLOW_SIZE[1]}; TV-L1 flow (flow_params); u, v "
        "and optical strain area-resized to 28x28, each min-max normalised to 0..255 and rounded, BGR plane order "
        "(strain, v, u) as STSTNet's composite input (engines.preprocess.MotionInputBuilder)"),
        train_datasets=("synthetic",), protocol="synthetic clips (mer synth clips), all subjects")
    training = {
        "datasets": ["synthetic (mer synth clips)"],
        "real_data": False,
        "generator": {"subjects": subjects, "per_class": per_class, "fps": fps, "seed": seed},
        "face_front_end": {**faces.model_dump(), "frames": "colour" if frames_in_color(faces) else "grey luma"},
        "class_map": MEGC3.name,
        "recipe": RECIPE.model_dump(),
        "protocol": "weights: all synthetic subjects; metrics: leave-one-subject-out over them",
        "built_by": "python -m training.default_engine",
    }
    export_model(model, out_dir, version=f"synthetic-{seed}", flow_method=FLOW_METHOD, flow_params=FLOW_PARAMS,
                 flow_size=FLOW_SIZE, training=training,
                 metrics={"synthetic_loso": metrics},
                 source={"note": "trained on synthetic data only; not a model of real micro-expressions"},
                 overwrite=True)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=6)
    parser.add_argument("--fps", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # small per-pair kernels: threads only add contention (fold workers use one too)
    metrics = build(args.out, args.subjects, args.per_class, args.fps, args.seed, args.workers)
    print(f"synthetic LOSO: UF1 {metrics['uf1']:.4f} UAR {metrics['uar']:.4f} acc {metrics['acc']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
