"""``mer subscribe``: print the events of a running ``mer stream`` as JSON lines.

It is the reference consumer of the event stream: ``--from-seq`` replays history from
the publisher's journal first, and gaps in ``seq`` are repaired, so the output is
every event exactly once and in order (docs/events.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engines.errors import InputError, MerError
from streamer.event_transport import DEFAULT_ENDPOINT, CurveClientKeys, replay_endpoint_for
from streamer.subscriber import EventSubscriber

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "subscribe",
        help="print published events as JSON lines",
        description="Subscribe to the events of `mer stream` and print one JSON object per line, in seq "
        "order, each exactly once. Missed events are replayed from the publisher's journal.",
    )
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT,
                        help=f"ZeroMQ PUB endpoint of the publisher (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--replay-endpoint",
                        help="its REQ/REP replay endpoint (default: the --endpoint's host, port + 1, "
                        "i.e. tcp://127.0.0.1:5557)")
    parser.add_argument("--no-replay", action="store_true",
                        help="live events only: no history, gaps are only logged")
    parser.add_argument("--from-seq", type=int, metavar="N", help="first replay events N, N+1, ... from the journal")
    parser.add_argument("--stream", help="only this stream id's events")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N events")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="stop when no event arrived for S seconds (with --count, falling short is an error)")
    parser.add_argument("--curve-secret-key", type=Path, metavar="FILE",
                        help="this client's CURVE certificate (.key_secret) for an encrypted publisher")
    parser.add_argument("--curve-server-key", type=Path, metavar="FILE",
                        help="the publisher's public CURVE certificate (.key)")
    parser.set_defaults(run=run_subscribe)


def run_subscribe(args: argparse.Namespace) -> int:
    if args.from_seq is not None and args.from_seq < 1:
        raise InputError(f"--from-seq must be 1 or more, got {args.from_seq}")
    if args.count is not None and args.count < 1:
        raise InputError(f"--count must be 1 or more, got {args.count}")
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout must be positive, got {args.timeout}")
    if (args.curve_secret_key is None) != (args.curve_server_key is None):
        raise InputError("CURVE needs both --curve-secret-key and --curve-server-key")
    if args.no_replay and args.from_seq is not None:
        raise InputError("--from-seq needs replay; drop --no-replay")
    replay_endpoint = None if args.no_replay else args.replay_endpoint or replay_endpoint_for(args.endpoint)
    curve = None if args.curve_secret_key is None else CurveClientKeys(args.curve_secret_key, args.curve_server_key)
    received = 0
    with EventSubscriber(args.endpoint, replay_endpoint, from_seq=args.from_seq, stream=args.stream,
                         curve=curve) as subscriber:
        while args.count is None or received < args.count:
            event = subscriber.receive(timeout=args.timeout)
            if event is None:
                if args.count is not None:
                    raise MerError(f"no event for {args.timeout:g} s after {received} of {args.count} events "
                                     f"from {args.endpoint}")
                break
            sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            received += 1
    log.info("received %d events", received)
    return 0
