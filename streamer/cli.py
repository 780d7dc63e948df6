"""The ``mer`` command line: one entry point, one subcommand per job.

This module is the composition root of the project. Each subcommand lives in the
package that owns its work (``training.commands.synth`` for ``mer synth``, ...) and
exposes ``add_parser(subparsers)``; the parser stores a ``run(args) -> int`` handler.
Handler modules are imported lazily by name so that ``mer --help`` stays fast and a
broken optional dependency only affects its own subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from engines.errors import MerError

# Modules that each contribute one or more subcommands, in --help order.
COMMAND_MODULES = (
    "training.commands.synth",
    "training.commands.data",
    "training.commands.prepare",
    "engines.commands.bench",
    "engines.commands.export",
    "training.commands.calibration",
    "training.commands.train",
    "training.commands.pretrain",
    "training.commands.spot",
    "training.commands.ensemble",
    "streamer.commands.stream",
    "streamer.commands.analyze",
    "streamer.commands.subscribe",
    "streamer.commands.keys",
)

log = logging.getLogger("mer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mer",
        description="Real-time facial micro-expression spotting and recognition.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.run(args) or 0)
    except MerError as exc:
        # Expected failures (bad input, bad config): one line, non-zero exit.
        print(f"mer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of our output went away (e.g. `mer ... | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"mer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
