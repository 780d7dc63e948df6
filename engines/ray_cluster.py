"""Work spread over a Ray cluster: the connection, one progress bar for every node, retries reported.

Ray is an optional extra (``pip install 'mer[ray]'``): this module is imported only by the
commands' ``--ray`` paths (``streamer/distributed.py``, ``training/distributed.py``), which
take ``ray`` from here, so that a missing install is one clear line rather than a traceback.

Tasks report to a small actor (:class:`ProgressBoard`) when they start (host and process)
and as they advance; the driver polls it to move its progress bar, and learns from it which
tasks Ray ran again after a worker or node was lost (Ray retries those by itself,
``max_retries``; an exception raised by mer's own code is not retried: it would fail again).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

from engines.errors import MerError

try:
    import ray
    from ray.exceptions import RayError, RayTaskError
except ImportError:  # the base install: say which extra brings it
    raise MerError("--ray needs Ray, an optional extra: pip install 'mer[ray]'") from None

__all__ = ["ProgressBoard", "TaskReporter", "Tasks", "cluster", "describe_failure", "ray"]

log = logging.getLogger(__name__)


@contextmanager
def cluster(address: str | None) -> Iterator[None]:
    """Connected to the Ray cluster at ``address`` while inside; ``None`` starts one on this machine
    (all its cores) and stops it on the way out. A connection the caller already made (a test, a
    notebook) is used as it is and left open."""
    if ray.is_initialized():
        yield
        return
    options = {"include_dashboard": False} if address is None else {"address": address}
    try:
        ray.init(logging_level=logging.WARNING, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "start a local Ray instance" if address is None else f"connect to the Ray cluster at {address}"
        raise MerError(f"cannot {where}: {exc}") from None
    resources = ray.cluster_resources()
    log.info("Ray cluster: %d nodes, %g CPUs, %g GPUs", len(ray.nodes()), resources.get("CPU", 0),
             resources.get("GPU", 0))
    try:
        yield
    finally:
        ray.shutdown()


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Where every task says where it runs and how far it got (see the module doc)."""

    def __init__(self) -> None:
        self._tasks: dict[str, dict] = {}

    def started(self, key: str, host: str, pid: int) -> None:
        entry = self._tasks.setdefault(key, {"runs": 0})
        entry.update(runs=entry["runs"] + 1, host=host, pid=pid, done=0)

    def advanced(self, key: str, done: int) -> None:
        self._tasks[key]["done"] = done

    def snapshot(self) -> dict[str, dict]:
        return self._tasks


class TaskReporter:
    """Inside a task: announces it on ``board``; calling it reports how much is done (without
    waiting), :meth:`finish` the final amount (waiting, so that the board has it before the
    driver sees the task's result)."""

    def __init__(self, board, key: str) -> None:
        self.board, self.key, self.done = board, key, 0
        board.started.remote(key, socket.gethostname(), os.getpid())

    def __call__(self, done: int) -> None:
        self.done = done
        self.board.advanced.remote(self.key, done)

    def finish(self, done: int | None = None) -> None:
        ray.get(self.board.advanced.remote(self.key, self.done if done is None else done))


def describe_failure(error: BaseException) -> str:
    """One line for a task that failed: mer's own exception, or what happened to its worker."""
    if isinstance(error, RayTaskError) and error.cause is not None:
        cause = error.cause
        return str(cause) if isinstance(cause, MerError) else f"{type(cause).__name__}: {cause}"
    first = str(error).strip().splitlines()
    return f"{type(error).__name__}: {first[0] if first else ''}"


class Tasks:
    """Ray tasks in flight under string keys, with one progress bar over all of them.

    ``total`` is the amount of work (frames, folds) the bar counts to; it can grow with
    :meth:`submit`. ``on_poll(snapshot)`` sees the board each time the driver looks at it.
    """

    def __init__(self, *, desc: str, unit: str, progress: bool = True, poll_s: float = 0.5,
                 on_poll: Callable[[dict[str, dict]], None] | None = None) -> None:
        self.board = ProgressBoard.remote()
        self._pending: dict = {}  # ObjectRef -> key
        self._poll_s = poll_s
        self._on_poll = on_poll
        self._bar = tqdm(total=0, desc=desc, unit=unit, disable=not progress)
        self._runs: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def submit(self, key: str, ref, work: int) -> None:
        self._pending[ref] = key
        self._bar.total += work
        self._bar.refresh()

    def next_finished(self) -> tuple[str, object]:
        """Wait for a task to finish: (its key, its result or the exception that ended it)."""
        while True:
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=self._poll_s)
            self._poll()
            if ready:
                key = self._pending.pop(ready[0])
                try:
                    return key, ray.get(ready[0])
                except RayError as exc:
                    return key, exc

    def _poll(self) -> None:
        snapshot = ray.get(self.board.snapshot.remote())
        self._runs = {key: entry["runs"] for key, entry in snapshot.items()}
        done = sum(entry["done"] for entry in snapshot.values())
        self._bar.update(max(0, min(self._bar.total, done) - self._bar.n))
        if self._on_poll is not None:
            self._on_poll(snapshot)

    def close(self) -> dict[str, int]:
        """Stop the bar; returns the tasks Ray ran more than once (key -> runs), each also logged."""
        self._poll()
        self._bar.close()
        retried = {key: runs for key, runs in self._runs.items() if runs > 1}
        for key, runs in retried.items():
            log.warning("%s ran %d times: its worker was lost and Ray ran it again", key, runs)
        ray.kill(self.board)
        return retried
