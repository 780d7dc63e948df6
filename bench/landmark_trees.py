"""dlib's 68-point model in mer's compiled loop, whole and cut to fewer trees a stage: cost of a
fit against dlib's own, and distance from the full model.

Run from the repository root::

    .venv/bin/python -m bench.landmark_trees [--trees 500,300,200,100,50] [--data ../shared/data]

1. **Cost**: dlib's own predictor and mer's loop at each tree count fit the face of every other
   frame of a 20 s, 640x480 synthetic clip (300 successive frames, grey, the same box each time,
   as the tracker refits between detections), three passes alternated between them; milliseconds
   a fit, and how many of mer's full-model fits equal dlib's point for point.
2. **Distance from the full model** on real faces: the MEGC2019 composite's 224x224 apex crops
   (``HTNet/datasets/combined_datasets_whole`` under ``--data`` or ``$MER_DATA``; skipped when
   absent), each model fitted in the box dlib's detector finds; mean distance of the 68 points
   to the full model's, as a fraction of the outer-eye-corner distance (mean and 95th percentile).
   The same on the synthetic clip's frames, in pixels.

Numbers and the reading of them: docs/faces.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import av
import cv2
import dlib
import numpy as np

from bench.pipeline import _synth
from streamer.faces.model_files import shape_predictor_path
from streamer.faces.shape_model import load_shape_model

APEX_FOLDER = Path("HTNet") / "datasets" / "combined_datasets_whole"


def dlib_fit(predictor, image: np.ndarray, rect) -> np.ndarray:
    return np.array([(p.x, p.y) for p in predictor(image, rect).parts()], np.float32)


def clip_frames(work: Path, duration_s: float) -> list[np.ndarray]:
    video = _synth(work, (640, 480), duration_s, 1, seed=0)[0]
    with av.open(str(video)) as container:
        return [frame.to_ndarray(format="gray") for frame in container.decode(video=0)][::2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", default="500,300,200,100,50", help="comma-separated trees a stage (500 = all)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MER_DATA", "../shared/data")))
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of synthetic clip (default 20)")
    args = parser.parse_args(argv)
    counts = [int(value) for value in args.trees.split(",")]
    source = shape_predictor_path()
    models = {n: load_shape_model(source, n) for n in counts}
    full = load_shape_model(source)
    dlib_predictor = dlib.shape_predictor(str(source))
    detector = dlib.get_frontal_face_detector()

    with tempfile.TemporaryDirectory() as scratch:
        frames = clip_frames(Path(scratch), args.duration)
    rect = detector(frames[0], 0)[0]
    box = (rect.left(), rect.top(), rect.right(), rect.bottom())
    reference = np.array([full.fit(image, box) for image in frames])
    eye_span = float(np.linalg.norm(reference[:, 36] - reference[:, 45], axis=1).mean())
    print(f"cost: {len(frames)} successive frames of a 640x480 clip, {args.passes} passes alternated "
          f"(eye span {eye_span:.0f} px)")
    fitters = {"dlib": lambda image: dlib_fit(dlib_predictor, image, rect)}
    fitters.update({n: (lambda image, model=model: model.fit(image, box)) for n, model in models.items()})
    timings: dict = {name: [] for name in fitters}
    shapes: dict = {}
    for _ in range(args.passes):
        for name, fitter in fitters.items():
            start = time.perf_counter()
            shapes[name] = np.array([fitter(image) for image in frames])
            timings[name].append(1e3 * (time.perf_counter() - start) / len(frames))
    same = int((shapes["dlib"] == reference).all(axis=(1, 2)).sum())
    print(f"  dlib's own predictor: {', '.join(f'{ms:.3f}' for ms in timings['dlib'])} ms a fit; "
          f"{same} of {len(frames)} fits identical to mer's full model")
    for n in counts:
        distance = np.linalg.norm(shapes[n] - reference, axis=2)
        speedup = np.median(timings["dlib"]) / np.median(timings[n])
        print(f"  {n:4d} trees: {', '.join(f'{ms:.3f}' for ms in timings[n])} ms a fit ({speedup:.2f}x dlib's); "
              f"from the full model mean {distance.mean():.2f} px, max {distance.max():.2f} px")

    folder = args.data / APEX_FOLDER
    files = sorted(folder.glob("*.jpg"))
    if not files:
        print(f"real faces: skipped (no apex crops under {folder})")
        return 0
    deviations: dict[int, list[float]] = {n: [] for n in counts}
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        found = detector(image, 1)
        if not found:
            continue
        face = found[0]
        face_box = (face.left(), face.top(), face.right(), face.bottom())
        truth = full.fit(image, face_box)
        span = float(np.linalg.norm(truth[36] - truth[45]))
        for n, model in models.items():
            deviations[n].append(float(np.linalg.norm(model.fit(image, face_box) - truth, axis=1).mean()) / span)
    print(f"real faces: {len(deviations[counts[0]])} of {len(files)} apex crops with a face found")
    for n in counts:
        values = np.array(deviations[n])
        print(f"  {n:4d} trees: from the full model, mean {100 * values.mean():.2f} %, p95 "
              f"{100 * np.percentile(values, 95):.2f} % of the eye span")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
