"""Shared workers for many streams: requests from every stream are batched.

A GPU earns its keep on batches, while each stream only has an onset/apex pair now and then.
A :class:`PairBatcher` takes requests from any thread (``submit`` returns a future), and one
worker thread turns whatever has arrived into a batch: it waits for the first request, then
gathers more until ``max_batch`` are in hand or ``max_wait_s`` has passed since the first, so
a lone request waits at most ``max_wait_s`` before it runs. Two workers are built on it:

* :class:`BatchingRecognizer`, the shared inference worker: the batch goes through the
  engine's motion input builder (on the engine's device; a TV-L1 runner of CUDA graphs on a
  GPU) and the engine, and each future receives its row of class probabilities;
* :class:`BatchingFlow`, the shared motion worker: each future receives its pair's flow.

Nothing is dropped silently: a full queue refuses the request (the future fails with
:class:`QueueFull`) and ``stats.refused`` counts it; a batch that raises fails every future in
it with that error and ``stats.failed`` counts them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from engines.errors import MerError
from engines.preprocess import MotionInputBuilder

__all__ = ["BatchingFlow", "BatchingRecognizer", "BatchingStats", "PairBatcher", "QueueFull"]

log = logging.getLogger(__name__)


class QueueFull(MerError):
    """The shared recognizer's queue is full; the request was refused (and counted)."""


@dataclass
class BatchingStats:
    """What the worker has done; read it from any thread (values only grow)."""

    requests: int = 0
    completed: int = 0
    refused: int = 0
    failed: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def mean_batch(self) -> float:
        return float(np.mean(self.batch_sizes)) if self.batch_sizes else 0.0


@dataclass
class _Request:
    onset: np.ndarray | torch.Tensor
    apex: np.ndarray | torch.Tensor
    future: Future
    submitted: float


class PairBatcher:
    """Batches (onset, apex) crop pairs from many callers through one ``process`` function.

    Subclasses say what a batch becomes (:meth:`_process`: stacked pairs on ``device`` in,
    one result row per pair out): :class:`BatchingRecognizer` (class probabilities) and
    :class:`BatchingFlow` (optical flow, the shared motion worker).
    """

    def __init__(self, device: str | torch.device = "cpu", *, max_batch: int = 64, max_wait_s: float = 0.004,
                 max_pending: int = 4096, name: str = "mer-batching") -> None:
        if max_batch < 1 or max_wait_s < 0 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be >= 1 and max_wait_s >= 0")
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatchingStats()
        self._count_lock = threading.Lock()  # submit() runs on many threads
        self._queue: queue.Queue[_Request | None] = queue.Queue(maxsize=max_pending)
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def _process(self, onset: torch.Tensor, apex: torch.Tensor):
        """One result row per pair of the stacked ``(B, H, W)`` crops (on ``self.device``)."""
        raise NotImplementedError

    def submit(self, onset, apex) -> Future:
        """Queue one pair of grey crops ``(H, W)``; the future resolves to this pair's result row."""
        future: Future = Future()
        if self._closed:
            future.set_exception(MerError(f"the shared {self._worker.name} worker is closed"))
            return future
        with self._count_lock:
            self.stats.requests += 1
        try:
            self._queue.put_nowait(_Request(onset, apex, future, time.perf_counter()))
        except queue.Full:
            with self._count_lock:
                self.stats.refused += 1
            future.set_exception(QueueFull(f"shared {self._worker.name} queue full ({self._queue.maxsize} pending)"))
        return future

    def _gather(self) -> list[_Request] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # closing: finish this batch, then stop
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            try:
                rows = self._run_batch(batch)
            except Exception as exc:  # noqa: BLE001 - every caller gets the error, the worker lives on
                log.exception("%s: a batch of %d failed", self._worker.name, len(batch))
                self.stats.failed += len(batch)
                for request in batch:
                    request.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.batch_sizes.append(len(batch))
            for request, row in zip(batch, rows):
                request.future.set_result(row)
            self.stats.completed += len(batch)

    def _run_batch(self, batch: list[_Request]):
        """Stack the batch's crops on the device and process them: one result row per request."""
        onset = torch.stack([torch.as_tensor(r.onset) for r in batch]).to(self.device, non_blocking=True)
        apex = torch.stack([torch.as_tensor(r.apex) for r in batch]).to(self.device, non_blocking=True)
        return self._process(onset, apex)

    def warm_up(self, crop_shape: tuple[int, int], sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)) -> None:
        """Run one batch of each size now (graph capture, compilation), not on a live request."""
        crop = np.random.default_rng(0).integers(0, 256, crop_shape, dtype=np.uint8)
        for size in sizes:
            if size <= self.max_batch:
                self._run_batch([_Request(crop, crop, Future(), 0.0)] * size)

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the worker."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BatchingRecognizer(PairBatcher):
    """The shared inference worker: pairs in, ``(C,)`` class probabilities out.

    ``engine`` is a loaded runtime backend; ``builder`` its :class:`MotionInputBuilder` (by
    default built from the engine's manifest, with a batched TV-L1 runner when the engine
    runs on a CUDA device). Crops of one call must share a shape; different streams may send
    different shapes only if the builder resizes them (its ``flow_size``).
    """

    def __init__(self, engine, builder: MotionInputBuilder | None = None, **options) -> None:
        device = torch.device(str(getattr(engine, "device", "cpu")))
        if builder is None:
            builder = MotionInputBuilder.from_manifest(engine.manifest)
            if device.type == "cuda" and builder.flow_method == "tvl1":
                builder = builder.tvl1_runner(device)
        self.engine = engine
        self.builder = builder
        super().__init__(device, name="recognizer", **options)

    def _process(self, onset: torch.Tensor, apex: torch.Tensor) -> np.ndarray:
        inputs = self.builder(onset, apex)
        probabilities = getattr(self.engine, "probabilities", None)
        if probabilities is not None:
            return probabilities(inputs).cpu().numpy()
        return self.engine.predict(inputs)


class BatchingFlow(PairBatcher):
    """The shared motion worker: pairs in, ``(2, H, W)`` TV-L1 flow (on ``device``) out.

    On a CUDA device the batches run through a :class:`TVL1Runner` (CUDA graphs); on the CPU
    through ``tvl1_flow``. The flows equal ``tvl1_flow`` on each pair with ``params``.
    """

    def __init__(self, params=None, device: str | torch.device = "cpu", *, compile_kernels: bool = False,
                 **options) -> None:
        from engines.motion.tvl1 import TVL1Params, tvl1_flow
        from engines.motion.tvl1_graph import TVL1Runner

        self.params = params or TVL1Params()
        device = torch.device(device)
        if device.type == "cuda":
            self._flow = TVL1Runner(self.params, device, compile_kernels=compile_kernels)
        else:
            self._flow = lambda onset, apex: tvl1_flow(onset, apex, self.params)
        super().__init__(device, name="motion", **options)

    def _process(self, onset: torch.Tensor, apex: torch.Tensor) -> torch.Tensor:
        return self._flow(onset, apex)
