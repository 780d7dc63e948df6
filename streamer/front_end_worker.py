"""``mer analyze`` on two cores: decoding and face tracking in a worker process, the rest in the caller.

In one process the analysis of a video runs on little more than one core: the tracker and
the spotter take turns in one thread, with only decoding beside them. Here a worker process
reads the file and runs the face front end (the same
``CaptureLoop`` and ``FaceTracker`` as the single-process pipeline, built from the same
``[faces]`` settings, starting afresh on the same cuts), and sends each frame's faces to the
caller: aligned crops and landmarks, never the frame itself. The caller's ``Pipeline`` spots,
classifies and writes as usual, through a :class:`RemoteTracker` standing in for the
tracker. The outputs are identical to a single-process run (tests/test_front_end_worker.py).

One worker serves a whole ``mer analyze`` run, file after file (starting it, imports and
dlib's models, takes about 2 s). A worker that dies or a job the caller abandons midway ends
the worker; the next file starts a new one.

The two processes talk over two plain pipes, not ``multiprocessing.Queue``: a queue between
spawned processes rests on named POSIX semaphores, which Python's resource tracker follows and,
now and then, reported as leaked when ``mer analyze`` exited (a warning printed after the
run's last line: 2 of 88 repetitions of tests/test_faults_analyze.py's run on a loaded machine).
A pipe needs no named resource. The worker runs ahead of the caller by at most
``QUEUE_BATCHES`` messages, as the bounded queue did: its tracker hands each message to a
sender thread through a bounded in-process queue, and the thread pickles and sends it.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import InputError, MerError
from streamer.capture import CaptureCounters
from streamer.faces import FaceAligner
from streamer.faces.types import TrackedFace
from streamer.frames import Frame, cut_before

log = logging.getLogger(__name__)

__all__ = ["FrontEndWorker", "RemoteFeed", "RemoteTracker", "WorkerUnavailable"]

BATCH_FRAMES = 8  # frames per message: fewer, larger messages cost less to pickle and pass
QUEUE_BATCHES = 64  # messages the worker may run ahead of the caller (~512 frames of crops, a few MB)
POLL_S = 1.0  # how often a waiting caller checks that the worker is still alive


class WorkerUnavailable(MerError):
    """The worker process could not be started; ``mer analyze`` then works in one process."""


@dataclass
class FaceStep:
    """What the worker found on one frame: everything the pipeline needs, except the image."""

    index: int
    t: float
    captured_at: float
    decode_s: float
    discontinuous: bool
    shape: tuple[int, ...]
    faces: list[TrackedFace]
    ended: list[int]  # tracks that ended while updating on this frame
    face_s: float  # seconds the tracker spent on this frame


class RemoteTracker:
    """Stands in for ``FaceTracker`` in the caller's ``Pipeline``: replays the worker's results.

    ``reset()`` (a cut in the stream, the end of the stream) ends the tracks of the last
    update, as ``FaceTracker.reset`` does; the worker reset its own tracker on the same frame.
    """

    def __init__(self, aligner: FaceAligner) -> None:
        self.aligner = aligner
        self.last_update_s: float | None = None  # the worker's time for the last update
        self._steps: deque[FaceStep] = deque()
        self._live: list[int] = []
        self._ended: list[int] = []

    def expect(self, step: FaceStep) -> None:
        """The worker's result for the next frame the pipeline will ask about."""
        self._steps.append(step)

    def update(self, frame: Frame) -> list[TrackedFace]:
        step = self._steps.popleft()
        if step.index != frame.index:
            raise RuntimeError(f"front-end worker out of step: faces of frame {step.index} for frame {frame.index}")
        self._live = [face.track_id for face in step.faces]
        self._ended += step.ended
        self.last_update_s = step.face_s
        return step.faces

    def ended(self) -> list[int]:
        ended, self._ended = self._ended, []
        return ended

    def reset(self) -> None:
        self._ended += self._live
        self._live = []

    @property
    def track_ids(self) -> list[int]:
        return list(self._live)


class RemoteFeed:
    """One file being read and tracked by the worker: iterate for its frames (images left out).

    ``fps``, ``size`` and ``frame_count`` are the source's; ``counters`` its capture counts
    once the iteration is over. A failure to read the file midway is raised by the iteration
    after the frames read before it, as ``CaptureLoop`` does.
    """

    def __init__(self, worker: FrontEndWorker, tracker: RemoteTracker, opened: dict) -> None:
        self.fps: float = opened["fps"]
        self.size: tuple[int, int] = opened["size"]
        self.frame_count: int = opened["frame_count"]
        self.counters = CaptureCounters()
        self.tracker = tracker
        self._worker = worker
        self._done = False

    def __iter__(self) -> Iterator[Frame]:
        images: dict[tuple[int, ...], np.ndarray] = {}
        while True:
            kind, payload = self._worker._receive()
            if kind == "steps":
                for step in payload:
                    image = images.get(step.shape)
                    if image is None:  # the shape without the pixels: no memory, read-only
                        image = images[step.shape] = np.broadcast_to(np.zeros((), np.uint8), step.shape)
                    self.tracker.expect(step)
                    yield Frame(step.index, step.t, image, step.captured_at, step.decode_s, step.discontinuous)
            elif kind == "done":
                self._done = True
                counters, failure = payload
                self.counters = counters
                if failure is not None:
                    raise _rebuilt(failure)
                return
            else:
                raise RuntimeError(f"front-end worker sent {kind!r} during a file")

    def close(self) -> None:
        """Called when the caller is done with the file; a job left unfinished ends the worker."""
        if not self._done:
            self._worker.stop(force=True)


class FrontEndWorker:
    """The worker process; ``open(path, config, keep_color)`` starts a file (see the module docstring)."""

    def __init__(self) -> None:
        self._process = None
        self._jobs = None  # the caller's end of the job pipe (send)
        self._results = None  # the caller's end of the result pipe (receive)
        self._cv2_threads: int | None = None  # the caller's OpenCV thread count before the worker started

    def open(self, path: Path, config, *, keep_color: bool = False) -> RemoteFeed:
        """Start reading and tracking ``path``; raises what opening it raises (``InputError`` for an
        unreadable file) before anything is read. ``config`` is the stream profile."""
        if self._process is None or not self._process.is_alive():
            self._start()
        try:
            self._jobs.send((str(path), config.capture, config.faces, keep_color))
        except OSError:  # the worker ended between the check above and now: _receive says how
            pass
        kind, payload = self._receive()
        if kind == "error":
            raise _rebuilt(payload)
        if kind == "done":  # it failed before it could open the file (a bug; the traceback says where)
            raise _rebuilt(payload[1])
        if kind != "opened":
            raise RuntimeError(f"front-end worker answered {kind!r} to a new file")
        faces = config.faces
        aligner = FaceAligner(faces.crop_size, faces.align_method, smoothing=faces.smoothing)
        return RemoteFeed(self, RemoteTracker(aligner), payload)

    def stop(self, *, force: bool = False) -> None:
        """End the worker: at once with ``force`` (a job is unfinished), else after its current job."""
        process, self._process = self._process, None
        if self._cv2_threads is not None:
            import cv2

            cv2.setNumThreads(self._cv2_threads)
            self._cv2_threads = None
        if process is None:
            return
        if force:
            process.terminate()
        else:
            try:
                self._jobs.send(None)
            except OSError:  # the worker is gone already
                pass
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
        for channel in (self._jobs, self._results):
            channel.close()

    def __enter__(self) -> FrontEndWorker:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self.stop(force=exc_type is not None)  # after an error (Ctrl-C too) a job may be unfinished

    def _start(self) -> None:
        import cv2

        # Two processes fill two cores: OpenCV's thread pool in the caller (DIS flow in the spotter)
        # would only fight the worker for them. Restored by stop().
        if self._cv2_threads is None:
            self._cv2_threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
        context = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
        worker_jobs, self._jobs = context.Pipe(duplex=False)
        self._results, worker_results = context.Pipe(duplex=False)
        process = context.Process(target=_serve, args=(worker_jobs, worker_results), name="mer front end", daemon=True)
        try:
            process.start()
        except OSError as exc:  # no process to be had (a process limit, no memory): say so, the caller goes on
            self._jobs.close()
            self._results.close()
            raise WorkerUnavailable(f"could not start the front-end worker process ({exc})") from exc
        finally:
            # The worker has its own copies now; closing ours lets each side see the other's end (EOF).
            worker_jobs.close()
            worker_results.close()
        self._process = process
        log.debug("front-end worker started (pid %d)", process.pid)

    def _receive(self) -> tuple[str, object]:
        while True:
            try:
                if self._results.poll(POLL_S):
                    return self._results.recv()
                closed = False
            except (EOFError, OSError):  # the worker's end of the pipe closed: it ended
                closed = True
            if closed or self._process is None or not self._process.is_alive():
                code = None
                if self._process is not None:
                    self._process.join(timeout=POLL_S)
                    code = self._process.exitcode
                self._process = None
                raise MerError(f"the front-end worker process ended unexpectedly (exit code {code})") from None


class _ResultSender:
    """The worker's side of the result pipe: ``put`` blocks while ``QUEUE_BATCHES`` messages wait;
    a thread pickles and sends them, in order, so the tracker never waits on the pipe itself."""

    def __init__(self, connection) -> None:
        self._connection = connection
        self._pending: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self._thread = threading.Thread(target=self._send_all, name="mer front end sender", daemon=True)
        self._thread.start()

    def put(self, message) -> None:
        self._pending.put(message)

    def close(self) -> None:
        """Send what is pending, then stop."""
        self._pending.put(None)
        self._thread.join()
        self._connection.close()

    def _send_all(self) -> None:
        caller_gone = False
        while (message := self._pending.get()) is not None:
            if caller_gone:
                continue  # keep taking messages, so that put() and close() never wait on a full queue
            try:
                self._connection.send(message)
            except OSError:  # the caller is gone: nobody is left to tell
                caller_gone = True


def _serve(jobs, connection) -> None:
    """The worker's main loop: one file per job until a ``None`` job (or the caller's end closes)."""
    import cv2

    cv2.setNumThreads(1)  # the caller's process has the other core
    results = _ResultSender(connection)
    try:
        while (job := jobs.recv()) is not None:
            try:
                _run_job(job, results)
            except BaseException:  # a bug: say what it was rather than die silently
                results.put(("done", (CaptureCounters(), ("bug", traceback.format_exc()))))
    except EOFError:  # the caller closed its end without a goodbye
        pass
    finally:
        results.close()


def _run_job(job, results) -> None:
    from streamer.capture import CaptureLoop
    from streamer.front_end import build_tracker, frames_in_color
    from streamer.sources import FileSource

    path, capture, faces_config, keep_color = job
    try:
        source = FileSource(Path(path), capture, color=frames_in_color(faces_config, color_crops=keep_color))
        tracker = build_tracker(faces_config)
    except (MerError, OSError) as exc:
        results.put(("error", _portable(exc)))
        return
    results.put(("opened", {"fps": source.fps, "size": source.size, "frame_count": source.frame_count}))
    counters = CaptureCounters()
    batch: list[FaceStep] = []
    failure = None
    shape = None
    try:
        with CaptureLoop(source, capture, counters=counters) as loop:
            for frame in loop:
                start = time.perf_counter()
                if cut_before(frame, shape, first=shape is None):
                    tracker.reset()
                    tracker.ended()  # the caller's RemoteTracker ends the same tracks itself
                shape = frame.image.shape
                faces = tracker.update(frame)
                ended = tracker.ended()
                if not keep_color:
                    for face in faces:
                        face.aligned.color = None
                batch.append(FaceStep(frame.index, frame.t, frame.captured_at, frame.decode_s, frame.discontinuous,
                                      shape, faces, ended, time.perf_counter() - start))
                if len(batch) >= BATCH_FRAMES:
                    results.put(("steps", batch))
                    batch = []
    except (MerError, OSError) as exc:
        failure = _portable(exc)
    if batch:
        results.put(("steps", batch))
    counters.on_read = counters.on_drop = counters.on_reconnect = counters.on_gap = None
    results.put(("done", (counters, failure)))


def _portable(exc: BaseException) -> tuple[str, str]:
    """An exception as (kind, message), which crosses the process boundary whatever its class."""
    kind = "input" if isinstance(exc, InputError) else "mer" if isinstance(exc, MerError) else "os"
    return kind, str(exc)


def _rebuilt(failure: tuple[str, str]) -> Exception:
    kind, message = failure
    if kind == "input":
        return InputError(message)
    if kind == "mer":
        return MerError(message)
    if kind == "os":
        return OSError(message)
    return RuntimeError(f"the front-end worker failed:\n{message}")
