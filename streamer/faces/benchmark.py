"""Measure the face tracker on a video: per-frame cost, and jitter of the alignment.

    python -m streamer.faces.benchmark VIDEO [--backend dlib|mediapipe] [--method affine3|eyes] [--dlib-trees N]

Timing counts ``FaceTracker.update`` only (decoding excluded), as wall and CPU time. Frames on
which the detector ran are reported apart from the refine-only frames, plus the mean over all
frames (what a stream pays on average), and the backend's own refine and detect alone on the
first frame (what the tracker adds is the difference). Jitter is the frame-to-frame RMS
movement, in crop pixels, of (a) one fixed set of image points seen through each frame's crop
transform and (b) the aligned landmarks; on a still face both should be small. It is
measured with the smoothing off and on. The numbers in docs/faces.md come from this module.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from engines.errors import InputError
from streamer.faces import ALIGN_METHODS, BACKENDS, FaceAligner, FaceTracker, create_backend
from streamer.frames import Frame


def read_frames(path: str, limit: int) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise InputError("cannot open the video", path=path)
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while len(frames) < limit:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    if not frames:
        raise InputError("the video has no frames", path=path)
    return frames, fps


def measure(frames, fps, backend, aligner, detect_interval_s):
    """Per-frame wall/CPU milliseconds, detection flags, crop matrices and aligned points of the first face."""
    tracker = FaceTracker(backend, aligner, detect_interval_s=detect_interval_s)
    wall, cpu, detected, matrices, aligned, image_points = [], [], [], [], [], []
    for index, image in enumerate(frames):
        frame = Frame(index, index / fps, image, time.monotonic())
        runs, t0, c0 = tracker.detections_run, time.perf_counter(), time.process_time()
        faces = tracker.update(frame)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
        detected.append(tracker.detections_run > runs)
        if faces:
            matrices.append(faces[0].aligned.matrix)
            aligned.append(faces[0].aligned.points)
            image_points.append(faces[0].landmarks.points)
    return np.array(wall), np.array(cpu), np.array(detected), matrices, np.array(aligned), np.array(image_points)


def rms_step(track: np.ndarray) -> float:
    return float(np.sqrt((np.diff(track, axis=0) ** 2).sum(-1).mean()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamer.faces.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("video")
    parser.add_argument("--backend", choices=BACKENDS, default="dlib")
    parser.add_argument("--method", choices=ALIGN_METHODS, default="affine3")
    parser.add_argument("--detect-interval", type=float, default=1.0, help="seconds of stream time (default 1)")
    parser.add_argument("--frames", type=int, default=300, help="at most this many frames (default 300)")
    parser.add_argument("--dlib-trees", type=int, default=0,
                        help="dlib: trees a cascade stage of the 68-point model (default 0: all)")
    args = parser.parse_args(argv)
    frames, fps = read_frames(args.video, args.frames)
    backend = create_backend(args.backend, **({"trees": args.dlib_trees} if args.backend == "dlib" else {}))
    height, width = frames[0].shape[:2]
    print(f"{args.video}: {len(frames)} frames {width}x{height} at {fps:g} fps")
    print(f"backend {args.backend}, alignment {args.method}, detection every {args.detect_interval:g} s")
    for smoothing in (False, True):
        aligner = FaceAligner(128, args.method, smoothing=smoothing)
        wall, cpu, detected, matrices, aligned, points = measure(frames, fps, backend, aligner, args.detect_interval)
        if not matrices:
            print("no face found")
            return 1
        reference = points[0].astype(np.float64)
        through = np.array([reference @ m[:, :2].T + m[:, 2] for m in matrices])
        print(
            f"smoothing {'on ' if smoothing else 'off'}: crop-transform jitter {rms_step(through):.3f} px, "
            f"aligned-landmark jitter {rms_step(aligned):.3f} px, "
            f"image-landmark jitter {rms_step(points):.3f} px (RMS per frame)"
        )
        refine = ~detected
        print(
            f"  time per frame, ms: refine-only frames ({refine.sum()}) wall median {np.median(wall[refine]):.2f} "
            f"mean {wall[refine].mean():.2f}, CPU mean {cpu[refine].mean():.2f}; detection frames ({detected.sum()}) "
            f"wall mean {wall[detected].mean():.2f}; all frames wall mean {wall.mean():.2f}, CPU mean {cpu.mean():.2f}"
        )
    face = backend.detect(frames[0])[0]
    refine_ms, detect_ms = [], []
    for _ in range(100):
        c0 = time.process_time()
        backend.refine(frames[0], face.box)
        refine_ms.append((time.process_time() - c0) * 1e3)
    for _ in range(10):
        c0 = time.process_time()
        backend.detect(frames[0])
        detect_ms.append((time.process_time() - c0) * 1e3)
    print(f"backend alone, CPU ms: refine {np.mean(refine_ms):.2f} (min {min(refine_ms):.2f}), "
          f"detect {np.mean(detect_ms):.2f} (min {min(detect_ms):.2f})")
    if hasattr(backend, "close"):
        backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
