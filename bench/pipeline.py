"""Benchmark of the streaming recognizer on synthetic 30 fps footage (one run, ratios inside it).

Run from the repository root::

    .venv/bin/python -m bench.pipeline [--duration 30] [--pairs N] [--config PROFILE] [--json]

1. ``analyze``: a 640x480, 30 fps, one-face video through ``mer analyze``'s code path
   (``streamer.commands.analyze.analyze_file``), in one process and with decoding and face
   tracking in a worker process (``--front-end-process``, what ``mer analyze`` does for such
   a video on 2 cores), against the decode-only rate of the same file measured just before
   (the same decoder, nothing else, to BGR images; decoding to grey luma, what the analysis
   itself decodes, and decoding without any conversion are reported beside it): frames/s and
   their ratio, and the per-stage milliseconds per frame. Twice: as the synthetic generator
   writes it (MPEG-4 part 2, which decodes fast) and re-encoded to H.264 (libx264, CRF 23),
   the codec of recorded interview footage.
2. ``faces``: the cost of each extra face. 2x2 mosaics of 320x240 synthetic videos with 1, 2
   and 4 faces (the other tiles grey), same 640x480 frame, analysed the same way.
3. ``latency``: ``mer stream``'s path (capture loop with the file paced in real time, the
   pipeline, a real ZeroMQ publisher with its journal) on the one-face video; each event's
   ``latency_ms`` (offset frame captured -> published) minus the spotter's look-ahead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from streamer.capture import CaptureLoop
from streamer.commands.analyze import analyze_file
from streamer.front_end import build_tracker
from streamer.front_end_worker import FrontEndWorker
from streamer.publisher import EventPublisher
from streamer.session import build_pipeline, open_recognizer
from streamer.sources import FileSource
from streamer.stream_config import load_stream_config
from training.synthetic.layouts import write_long_videos
from training.synthetic.settings import SynthSettings

log = logging.getLogger("bench.pipeline")


def _synth(folder: Path, size: tuple[int, int], duration: float, subjects: int, seed: int) -> list[Path]:
    write_long_videos(folder, subjects=subjects, videos_per_subject=1, duration_s=duration,
                      n_micro=2 * int(duration / 10), n_macro=int(duration / 10), fps=30, size=size, seed=seed,
                      settings=SynthSettings(), frames=False, video_suffix=".mp4")
    return sorted(folder.glob("*.mp4"))


def _mosaic(tiles: list[Path], faces: int, out: Path) -> Path:
    """A 640x480 video of 2x2 tiles of 320x240: the first ``faces`` tiles from ``tiles``, the rest grey."""
    readers = [cv2.VideoCapture(str(path)) for path in tiles[:faces]]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    grey = np.full((240, 320, 3), 128, np.uint8)
    while True:
        images = []
        for reader in readers:
            ok, image = reader.read()
            if not ok:
                break
            images.append(image)
        if len(images) < len(readers):
            break
        images += [grey] * (4 - len(images))
        writer.write(np.vstack([np.hstack(images[:2]), np.hstack(images[2:])]))
    writer.release()
    return out


def decode_rate(path: Path, pixels: str = "bgr") -> float:
    """Frames/s of decoding alone with the analyze path's decoder (PyAV, threaded): to BGR images,
    the reference of the ratio (what OpenCV's VideoCapture returns); to grey luma (``"grey"``, what
    ``mer analyze`` decodes when no colour is needed); or with no conversion at all (``"none"``)."""
    if pixels == "none":
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            start = time.perf_counter()
            count = sum(1 for _ in container.decode(stream))
            return count / (time.perf_counter() - start)
    source = FileSource(path, color=pixels == "bgr")
    start = time.perf_counter()
    count = sum(1 for _ in source.frames())
    return count / (time.perf_counter() - start)


def h264_copy(source: Path, target: Path) -> Path:
    """``source`` re-encoded to H.264 (libx264, CRF 23, preset medium), as cameras and phones record."""
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream = writer.add_stream("libx264", rate=reader.streams.video[0].average_rate)
        stream.width, stream.height, stream.pix_fmt = reader.streams.video[0].width, reader.streams.video[0].height, \
            "yuv420p"
        stream.options = {"crf": "23", "preset": "medium"}
        for frame in reader.decode(video=0):
            writer.mux(stream.encode(frame.reformat(format="yuv420p")))
        writer.mux(stream.encode())
    return target


def analyze_rate(path: Path, out: Path, config, recognizer, front_end: FrontEndWorker | None = None) -> dict:
    summary = analyze_file(path, out, config, recognizer, progress=False, front_end=front_end)
    frames = summary["frames"]
    return {"frames_per_s": summary["frames_per_s"], "events": summary["events"],
            "stage_ms_per_frame": {k: round(1000 * v / frames, 3) for k, v in summary["stage_seconds"].items()}}


def compare_processes(path: Path, out: Path, config, recognizer) -> tuple[float, dict, dict]:
    """The decode-only rate of ``path``, then ``analyze_rate`` in one process and with a fresh
    front-end worker. analyze_file's clock starts once the file is open: like loading the models
    in one process, starting the worker (at its first file) is not in the frames/s."""
    decode = decode_rate(path)
    one = analyze_rate(path, out.with_name(out.name + "_1"), config, recognizer)
    with FrontEndWorker() as worker:
        two = analyze_rate(path, out.with_name(out.name + "_2"), config, recognizer, worker)
    return decode, one, two


def stream_latency(path: Path, work: Path, config, recognizer) -> dict:
    """Event latencies of a real-time paced run with a real publisher.

    ``latency_ms`` runs from the capture of the offset frame to publication. Part of it is
    the spotter's look-ahead: stream time it must see after the offset before the interval
    is final (``look_ahead_s``, plus whatever its boundary search needs). The rest is what
    the machine adds (queueing, face, spot, motion, inference, journal + send).
    """
    paced = config.model_copy(update={"capture": config.capture.model_copy(update={"file_playback": "realtime"})})
    publisher = EventPublisher("tcp://127.0.0.1:*", None, work / "journal.jsonl")
    tracker = build_tracker(paced.faces)  # models loaded before the paced source starts, as mer stream does
    loop = CaptureLoop(path, paced.capture).start()
    pipeline = build_pipeline(paced, stream_id="bench", fps=loop.source.fps or 30.0, recognizer=recognizer,
                              emit=publisher.publish, tracker=tracker)
    for frame in loop:
        pipeline.process(frame)
    live = list(pipeline.stats.event_delays)  # events decided while the stream ran
    pipeline.close()
    publisher.close()
    decision = np.array([d for d, _ in live]) * 1000
    latency = np.array([lat for _, lat in live])
    beyond = latency - decision

    def stats(values):
        if not len(values):
            return None
        return {"p50": round(float(np.percentile(values, 50)), 1), "p99": round(float(np.percentile(values, 99)), 1),
                "max": round(float(values.max()), 1)}

    return {"events": len(live), "look_ahead_s": pipeline.look_ahead_s, "latency_ms": stats(latency),
            "spotter_decision_delay_ms": stats(decision), "beyond_look_ahead_ms": stats(beyond)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of synthetic video per clip")
    parser.add_argument("--pairs", type=int, default=0,
                        help="then this many more (one process, two processes) pairs per file, alternated, to see "
                        "how much of the two-process gain the VM's drift leaves")
    parser.add_argument("--config", type=Path, help="a stream profile (default: configs/stream/default.toml), "
                        "e.g. one with [faces] dlib_trees = 200")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = load_stream_config(args.config)
    recognizer = open_recognizer(config, None)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "pyav": av.__version__}}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        video = _synth(work / "one", (640, 480), args.duration, 1, seed=0)[0]
        videos = {"mpeg4": video, "h264": h264_copy(video, work / "one_h264.mp4")}
        result["analyze"] = {}
        for codec, path in videos.items():
            decode, one, two = compare_processes(path, work / f"out_{codec}", config, recognizer)
            result["analyze"][codec] = {"decode_only_frames_per_s": round(decode, 1),
                                        "decode_grey_frames_per_s": round(decode_rate(path, "grey"), 1),
                                        "decode_no_conversion_frames_per_s": round(decode_rate(path, "none"), 1),
                                        "one_process": {**one, "ratio_to_decode": round(one["frames_per_s"] / decode, 3)},
                                        "two_processes": {**two, "ratio_to_decode": round(two["frames_per_s"] / decode, 3)}}
        for pair in range(args.pairs):
            for codec, path in videos.items():
                decode, one, two = compare_processes(path, work / f"pair_{codec}", config, recognizer)
                result["analyze"][codec].setdefault("pairs", []).append(
                    {"decode_only_frames_per_s": round(decode, 1),
                     "one_process_ratio": round(one["frames_per_s"] / decode, 3),
                     "two_processes_ratio": round(two["frames_per_s"] / decode, 3),
                     "gain": round(two["frames_per_s"] / one["frames_per_s"], 2)})
        tiles = _synth(work / "tiles", (320, 240), args.duration, 4, seed=1)
        faces = {}
        for count in (1, 2, 4):
            mosaic = _mosaic(tiles, count, work / f"mosaic{count}.mp4")
            faces[count] = analyze_rate(mosaic, work / f"out_m{count}", config, recognizer)
        per_frame_ms = {n: 1000 / faces[n]["frames_per_s"] for n in faces}
        result["faces"] = {"frames_per_s": {n: faces[n]["frames_per_s"] for n in faces},
                           "ms_per_extra_face": round((per_frame_ms[4] - per_frame_ms[1]) / 3, 2),
                           "stage_ms_per_frame": {n: faces[n]["stage_ms_per_frame"] for n in faces}}
        result["latency"] = stream_latency(video, work, config, recognizer)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for codec, a in result["analyze"].items():
            print(f"analyze 640x480 one face, {codec}: decode only {a['decode_only_frames_per_s']} frames/s (to grey "
                  f"luma {a['decode_grey_frames_per_s']}, no conversion {a['decode_no_conversion_frames_per_s']})")
            for mode in ("one_process", "two_processes"):
                m = a[mode]
                print(f"  {mode}: {m['frames_per_s']} frames/s, ratio {m['ratio_to_decode']}, events {m['events']}; "
                      f"stage ms/frame {m['stage_ms_per_frame']}")
            for pair in a.get("pairs", []):
                print(f"  pair: decode only {pair['decode_only_frames_per_s']} frames/s, ratio one process "
                      f"{pair['one_process_ratio']}, two processes {pair['two_processes_ratio']} ({pair['gain']}x)")
        print(f"faces in a 640x480 mosaic: frames/s {result['faces']['frames_per_s']}; "
              f"+{result['faces']['ms_per_extra_face']} ms per extra face")
        lat = result["latency"]
        print(f"stream over {lat['events']} events: latency {lat['latency_ms']} ms, of which the spotter's "
              f"look-ahead {lat['spotter_decision_delay_ms']} ms; beyond it {lat['beyond_look_ahead_ms']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
