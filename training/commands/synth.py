"""``mer synth clips|long|video|faces``: write synthetic expression footage and faces with ground truth."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from engines.config import load_config
from engines.errors import InputError
from training.synthetic.settings import DISTRACTOR_NAMES, SynthSettings

SIZE_PATTERN = re.compile(r"^(\d+)(?:x(\d+))?$")
FRAME_RATES = (30, 100, 200)
DISTRACTOR_ALIASES = {"head": "head_motion", "light": "illumination"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write synthetic micro-expression clips and long videos with ground truth",
        description="Render expressions onto bundled public-domain face photos (see docs/synthetic.md). "
        "Same seed and options give byte-identical output.",
    )
    kinds = parser.add_subparsers(dest="synth_kind", metavar="KIND", required=True)

    clips = kinds.add_parser("clips", help="short clips in the CASME II layout with its coding sheet",
                             description="ROOT/sub01/EP01_01/img1.jpg ..., CASME2-coding-20190701.xlsx, ground_truth.json")
    _common(clips, fps=200, size="224", distractors="noise")
    clips.add_argument("--subjects", type=_positive, default=4, help="number of subjects (default 4)")
    clips.add_argument("--per-class", type=_positive, default=3,
                       help="clips per subject for each of positive, surprise, negative (default 3)")
    clips.set_defaults(run=_run_clips)

    long = kinds.add_parser("long", help="long videos with micro and macro events in the SAMM Long Videos layout",
                            description="ROOT/001_1/001_00001.jpg ... and/or ROOT/001_1.mp4, "
                            "SAMM_LongVideos_V2_Release.xlsx, ground_truth.json")
    _common(long, fps=30, size="640x480", distractors="all")
    _events(long)
    long.add_argument("--subjects", type=_positive, default=2, help="number of subjects (default 2)")
    long.add_argument("--videos-per-subject", type=_positive, default=1, help="long videos per subject (default 1)")
    long.add_argument("--video", choices=("none", "mp4", "avi"), default="none",
                      help="also (or with --no-frames, only) write each video as a file (default none)")
    long.add_argument("--no-frames", action="store_true", help="do not write the frame folders")
    long.set_defaults(run=_run_long)

    video = kinds.add_parser("video", help="one plain video file (.mp4/.avi) with a json and SAMM-LV sidecar",
                             description="FILE plus FILE-stem.json (ground truth) and FILE-stem.samm-lv.csv")
    video.add_argument("--out", type=Path, required=True, help="video file to write (.mp4 or .avi)")
    _common(video, fps=30, size="640x480", distractors="all", with_out=False)
    _events(video)
    video.add_argument("--subject", type=int, default=0, help="which subject (0-based) appears (default 0)")
    video.set_defaults(run=_run_video)

    faces = kinds.add_parser("faces", help="still faces of macro-expressions in the RAF-DB basic layout (pretraining)",
                             description="ROOT/EmoLabel/list_patition_label.txt, ROOT/Image/aligned/train_00001_aligned.jpg "
                             "(100x100, aligned by the stream's face front end), ground_truth.json")
    _common(faces, fps=None, size="192", distractors="noise")
    faces.add_argument("--subjects", type=_positive, default=20, help="number of subjects (default 20)")
    faces.add_argument("--per-class", type=_positive, default=4,
                       help="faces per subject for each of positive, surprise, negative (default 4)")
    faces.set_defaults(run=_run_faces)


def _common(parser, *, fps: int | None, size: str, distractors: str, with_out: bool = True) -> None:
    if with_out:
        parser.add_argument("--out", type=Path, required=True, help="output folder")
    if fps is not None:  # still faces have no frame rate
        parser.add_argument("--fps", type=int, choices=FRAME_RATES, default=fps, help=f"frame rate (default {fps})")
    parser.add_argument("--size", default=size, help=f"frame size WIDTHxHEIGHT or one number for square (default {size})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--distractors", default=distractors,
                        help="comma list of blinks, head, light, noise; or 'all' / 'none' "
                        f"(default {distractors})")
    parser.add_argument("--config", type=Path, help="TOML with generator settings (see configs/synth/default.toml)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _events(parser) -> None:
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per video (default 20)")
    parser.add_argument("--micro", type=int, default=4, help="micro-expressions per video (default 4)")
    parser.add_argument("--macro", type=int, default=2, help="macro-expressions per video (default 2)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parse_size(text: str) -> tuple[int, int]:
    match = SIZE_PATTERN.match(text.strip())
    if not match:
        raise InputError(f"--size: expected WIDTHxHEIGHT or one number, got {text!r}")
    width = int(match.group(1))
    height = int(match.group(2) or width)
    if not (32 <= width <= 4096 and 32 <= height <= 4096):
        raise InputError(f"--size: width and height must lie within 32..4096, got {width}x{height}")
    return width, height


def parse_distractors(text: str) -> set[str]:
    names = {part.strip() for part in text.split(",") if part.strip()}
    if names == {"all"}:
        return set(DISTRACTOR_NAMES)
    if names == {"none"}:
        return set()
    chosen = {DISTRACTOR_ALIASES.get(name, name) for name in names}
    unknown = chosen - set(DISTRACTOR_NAMES)
    if unknown:
        raise InputError(f"--distractors: unknown {', '.join(sorted(unknown))} (use blinks, head, light, noise, all, none)")
    return chosen


def _settings(args) -> SynthSettings:
    settings = load_config(args.config, SynthSettings) if args.config else SynthSettings()
    return settings.model_copy(update={"distractors": settings.distractors.only(parse_distractors(args.distractors))})


def _check_events(args) -> None:
    if args.duration <= 0 or args.micro < 0 or args.macro < 0:
        raise InputError("--duration must be positive and --micro/--macro not negative")


def _run_clips(args) -> int:
    from training.synthetic.layouts import write_clips

    written = write_clips(args.out, subjects=args.subjects, per_class=args.per_class, fps=args.fps,
                          size=parse_size(args.size), seed=args.seed, settings=_settings(args),
                          progress=not args.no_progress)
    print(f"wrote {written.clips} clips ({written.frames} frames) to {written.root}; sheet {written.files[0].name}")
    return 0


def _run_long(args) -> int:
    from training.synthetic.layouts import write_long_videos

    _check_events(args)
    written = write_long_videos(
        args.out, subjects=args.subjects, videos_per_subject=args.videos_per_subject, duration_s=args.duration,
        fps=args.fps, size=parse_size(args.size), seed=args.seed, n_micro=args.micro, n_macro=args.macro,
        settings=_settings(args), frames=not args.no_frames,
        video_suffix=None if args.video == "none" else f".{args.video}", progress=not args.no_progress,
    )
    print(f"wrote {written.clips} long videos ({written.frames} frames, {written.events} events) to {written.root}")
    return 0


def _run_video(args) -> int:
    from training.synthetic.layouts import write_video_file

    _check_events(args)
    if args.subject < 0:
        raise InputError(f"--subject must be 0 or more, got {args.subject}")
    written = write_video_file(
        args.out, duration_s=args.duration, fps=args.fps, size=parse_size(args.size), seed=args.seed,
        subject=args.subject, n_micro=args.micro, n_macro=args.macro, settings=_settings(args),
        progress=not args.no_progress,
    )
    print(f"wrote {written.files[0]} ({written.frames} frames, {written.events} events) with {written.files[1].name}")
    return 0


def _run_faces(args) -> int:
    from training.synthetic.layouts import write_faces

    written = write_faces(args.out, subjects=args.subjects, per_class=args.per_class, size=parse_size(args.size),
                          seed=args.seed, settings=_settings(args), progress=not args.no_progress)
    print(f"wrote {written.clips} faces to {written.root}; labels {written.files[0].relative_to(written.root)}")
    return 0
