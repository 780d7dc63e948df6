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
    motion.add_argument(
        "--compile",
        action="store_true",
        help="also time the compiled CPU solver (CompiledTVL1); its compilation (minutes the first time, "
        "cached on disk after) runs before the timed region and is reported",
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


def _bench_compiled(onset, apex, truth, params: TVL1Params, repeat: int, opencv_flow, opencv_s: float) -> dict:
    """Time ``CompiledTVL1`` one pair at a time and as one batch, after compiling both shapes; check
    its flows against the eager solver with the same numerics (``portable=True``) and OpenCV."""
    from engines.motion.tvl1_compiled import CompiledTVL1

    pairs, height, width = onset.shape
    solver = CompiledTVL1(params)
    start = time.perf_counter()
    solver.warm_up(height, width, batches=(1, pairs))
    compile_s = time.perf_counter() - start
    cpu = torch.device("cpu")
    single_s, single = _best_time(
        lambda: torch.cat([solver(onset[i : i + 1], apex[i : i + 1]) for i in range(pairs)]), repeat, cpu
    )
    batch_s, batched = _best_time(lambda: solver(onset, apex), repeat, cpu)
    eager_flow = tvl1_flow(onset, apex, params, portable=True)
    diff = max(float((single - eager_flow).abs().max()), float((batched - eager_flow).abs().max()))
    return {
        "compile_s": compile_s,
        "compiled_single_ms_per_pair": 1000 * single_s / pairs,
        "compiled_batched_ms_per_pair": 1000 * batch_s / pairs,
        "speedup_compiled_single": opencv_s / single_s,
        "speedup_compiled_batched": opencv_s / batch_s,
        "compiled_max_abs_diff_px": diff,
        "epe_compiled_vs_opencv_px": float(endpoint_error(batched, opencv_flow).mean()),
        "epe_compiled_vs_truth_px": float(endpoint_error(batched, truth).mean()),
    }


def run_motion(args) -> int:
    if args.size < 16:
        raise InputError(f"must be >= 16, got {args.size}", column="--size")
    if args.pairs < 1 or args.repeat < 1:
        raise InputError("--pairs and --repeat must be >= 1", column="--pairs")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA is not available on this machine", column="--device")
    if args.threads < 1:
        raise InputError(f"must be >= 1, got {args.threads}", column="--threads")
    if args.compile and args.device != "cpu":
        raise InputError("the compiled solver is the CPU path; on CUDA use `mer bench gpu`", column="--compile")
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
    compiled = _bench_compiled(onset, apex, truth, params, args.repeat, opencv_flow, opencv_s) if args.compile else {}
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
        **compiled,
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
    if compiled:
        print(
            f"| torch TV-L1 compiled (CPU), one pair at a time | {compiled['compiled_single_ms_per_pair']:.1f} | "
            f"{compiled['speedup_compiled_single']:.2f}x |"
        )
        print(
            f"| torch TV-L1 compiled (CPU), batch of {args.pairs} | {compiled['compiled_batched_ms_per_pair']:.1f} | "
            f"{compiled['speedup_compiled_batched']:.2f}x |"
        )
        print(
            f"compiled: warm-up (compile or disk cache) {compiled['compile_s']:.0f} s, outside the timed region; "
            f"max |compiled - eager (portable=True)| {compiled['compiled_max_abs_diff_px']:g} px; mean EPE vs OpenCV "
            f"{compiled['epe_compiled_vs_opencv_px']:.4f} px, vs truth {compiled['epe_compiled_vs_truth_px']:.4f} px"
        )
    print(
        f"mean EPE torch vs OpenCV {report['epe_torch_vs_opencv_px']:.4f} px; vs truth: torch "
        f"{report['epe_torch_vs_truth_px']:.4f} px, OpenCV {report['epe_opencv_vs_truth_px']:.4f} px"
    )
    return 0
