"""``mer bench motion``: torch TV-L1 against OpenCV's DualTVL1 on the same pairs.

Both solvers get the same synthetic pairs (engines.motion.synthetic) and the same
parameters in one run; we report per-pair time of each, the speed ratio, the batched
torch time and the mean endpoint error between the two flows (and against the truth).
"""

from __future__ import annotations

import json
import platform
import time

import cv2
import torch

from engines.errors import InputError
from engines.motion import endpoint_error, opencv_tvl1_flow, tvl1_flow
from engines.motion.synthetic import synthetic_batch
from engines.motion.tvl1 import TVL1Params


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks of the engines' kernels")
    targets = bench.add_subparsers(dest="target", metavar="TARGET", required=True)
    motion = targets.add_parser("motion", help="torch TV-L1 vs OpenCV DualTVL1 (time and agreement)")
    motion.add_argument("--size", type=int, default=112, help="frame side in pixels (default 112)")
    motion.add_argument("--pairs", type=int, default=16, help="onset/apex pairs (default 16)")
    motion.add_argument("--repeat", type=int, default=1, help="timed repetitions; the best is kept (default 1)")
    motion.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")
    motion.add_argument(
        "--threads", type=int, default=1, help="CPU threads for both torch and OpenCV (default 1, equal footing)"
    )
    motion.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    motion.set_defaults(run=run_motion)
    # The GPU benchmark spans the engines and the streamer's shared recognizer, so it lives
    # with the streamer; it is registered here so that every benchmark is under `mer bench`.
    from streamer.gpu_bench import add_parser as add_gpu_parser

    add_gpu_parser(targets)


def _best_time(fn, repeat: int, device: torch.device) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def run_motion(args) -> int:
    if args.size < 16:
        raise InputError(f"must be >= 16, got {args.size}", column="--size")
    if args.pairs < 1 or args.repeat < 1:
        raise InputError("--pairs and --repeat must be >= 1", column="--pairs")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA is not available on this machine", column="--device")
    if args.threads < 1:
        raise InputError(f"must be >= 1, got {args.threads}", column="--threads")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    params = TVL1Params()
    onset, apex, truth = synthetic_batch(args.size, args.pairs, seed=0)
    onset_dev, apex_dev = onset.to(device), apex.to(device)

    opencv_s, opencv_flow = _best_time(lambda: opencv_tvl1_flow(onset, apex, params), args.repeat, torch.device("cpu"))
    single_s, _ = _best_time(
        lambda: [tvl1_flow(onset_dev[i : i + 1], apex_dev[i : i + 1], params) for i in range(args.pairs)],
        args.repeat,
        device,
    )
    batch_s, torch_flow = _best_time(lambda: tvl1_flow(onset_dev, apex_dev, params), args.repeat, device)
    torch_flow = torch_flow.cpu()
    report = {
        "size": args.size,
        "pairs": args.pairs,
        "repeat": args.repeat,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "cpu": platform.processor() or platform.machine(),
        "params": "OpenCV DualTVL1 defaults",
        "opencv_ms_per_pair": 1000 * opencv_s / args.pairs,
        "torch_single_ms_per_pair": 1000 * single_s / args.pairs,
        "torch_batched_ms_per_pair": 1000 * batch_s / args.pairs,
        "speedup_single": opencv_s / single_s,
        "speedup_batched": opencv_s / batch_s,
        "epe_torch_vs_opencv_px": float(endpoint_error(torch_flow, opencv_flow).mean()),
        "epe_torch_vs_truth_px": float(endpoint_error(torch_flow, truth).mean()),
        "epe_opencv_vs_truth_px": float(endpoint_error(opencv_flow, truth).mean()),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"TV-L1, {args.pairs} pairs of {args.size}x{args.size}, {report['params']}, device {device}")
    print("| solver | ms per pair | speed vs OpenCV |")
    print("|---|---|---|")
    print(f"| OpenCV DualTVL1 (one pair at a time) | {report['opencv_ms_per_pair']:.1f} | 1.00x |")
    print(f"| torch TV-L1, one pair at a time | {report['torch_single_ms_per_pair']:.1f} | {report['speedup_single']:.2f}x |")
    print(
        f"| torch TV-L1, batch of {args.pairs} | {report['torch_batched_ms_per_pair']:.1f} | "
        f"{report['speedup_batched']:.2f}x |"
    )
    print(
        f"mean EPE torch vs OpenCV {report['epe_torch_vs_opencv_px']:.4f} px; vs truth: torch "
        f"{report['epe_torch_vs_truth_px']:.4f} px, OpenCV {report['epe_opencv_vs_truth_px']:.4f} px"
    )
    return 0
