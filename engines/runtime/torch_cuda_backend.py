"""Torch CUDA backend: the torch model on an NVIDIA GPU, in half precision where that is safe,
with CUDA graphs for the small fixed batch sizes a live stream sends.

It runs wherever torch sees a CUDA device, with no TensorRT. Half precision is not assumed:
``half="auto"`` runs a fixed probe batch in float32 and float16 at load time and keeps float16
only if the class probabilities agree within :data:`HALF_TOLERANCE` (the runtime's GPU parity
bound); the choice is in ``.half`` and in the log. Each batch size of ``graph_batches`` is
captured once as a CUDA graph; a batch is padded up to the next captured size (samples never
interact in eval mode), and one larger than every captured size runs eagerly.

:meth:`probabilities` keeps everything on the GPU (a CUDA tensor in, a CUDA tensor out) for
callers that already hold their motion images there; ``predict`` returns numpy as every
backend does.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from engines.buckets import bucket_for
from engines.errors import MerError
from engines.manifest import EngineManifest
from engines.runtime.torch_backend import TorchBackend

__all__ = ["GRAPH_BATCHES", "HALF_TOLERANCE", "TorchCudaBackend", "torch_cuda_unavailable_reason"]

log = logging.getLogger(__name__)

GRAPH_BATCHES = (1, 2, 4, 8, 16, 32, 64)
HALF_TOLERANCE = 1e-3  # max |p_fp16 - p_fp32| over the probe batch for float16 to be kept
_PROBE_BATCH = 64


def torch_cuda_unavailable_reason() -> str | None:
    """None when torch can run on a CUDA device here, else why not (used by ``backend="auto"``)."""
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


class TorchCudaBackend(TorchBackend):
    name = "torch-cuda"

    def __init__(
        self,
        manifest: EngineManifest,
        *,
        device: str | torch.device = "cuda",
        half: bool | str = "auto",
        graph_batches: tuple[int, ...] = GRAPH_BATCHES,
        threads: int | None = None,
    ) -> None:
        reason = torch_cuda_unavailable_reason()
        if reason is not None:
            raise MerError(f"the torch-cuda backend needs a CUDA device: {reason}")
        super().__init__(manifest, device=device, threads=threads)
        if self.device.type != "cuda":
            raise MerError(f"the torch-cuda backend runs on a CUDA device, not {self.device}")
        self.half = self._half_is_safe() if half == "auto" else bool(half)
        self.dtype = torch.float16 if self.half else torch.float32
        self.model = self.model.to(self.dtype)
        self.graph_batches = tuple(sorted(graph_batches))
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        for size in self.graph_batches:
            self._graphs[size] = self._capture(size)
        log.info("torch-cuda engine %s on %s: %s, CUDA graphs for batches %s", self.engine_id,
                 torch.cuda.get_device_name(self.device), "float16" if self.half else "float32",
                 ",".join(map(str, self.graph_batches)) or "none")

    def _probe_batch(self) -> torch.Tensor:
        low, high = self.manifest.data["input"].get("value_range", [0.0, 1.0])
        generator = torch.Generator().manual_seed(0)
        probe = torch.rand((_PROBE_BATCH, *self.manifest.sample_shape), generator=generator)
        return (low + (high - low) * probe).to(self.device)

    def _half_is_safe(self) -> bool:
        """Whether float16 reproduces float32's probabilities on a probe batch within the bound."""
        probe = self._probe_batch()
        with torch.inference_mode():
            full = torch.softmax(self.model(probe), dim=1)
            half_model = self._half_copy()
            half = torch.softmax(half_model(probe.half()).float(), dim=1)
        gap = float((full - half).abs().max())
        safe = gap <= HALF_TOLERANCE
        log.info("float16 probe on %s: max probability gap %.2e -> %s", self.engine_id, gap,
                 "float16" if safe else "float32 (over the bound)")
        return safe

    def _half_copy(self) -> torch.nn.Module:
        return copy.deepcopy(self.model).half()

    def _capture(self, size: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_in = torch.zeros((size, *self.manifest.sample_shape), device=self.device, dtype=self.dtype)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        return graph, static_in, static_out

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(batch).float(), dim=1)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, C) float32 probabilities on the GPU for a (N, *input shape) tensor (any device)."""
        self._check_batch_shape(tuple(batch.shape))
        batch = batch.to(self.device, self.dtype, non_blocking=True)
        count = batch.shape[0]
        size = bucket_for(count, self.graph_batches) if self.graph_batches else None
        if size is None:
            with torch.inference_mode():
                return self._forward(batch)
        graph, static_in, static_out = self._graphs[size]
        static_in[:count].copy_(batch)
        if count < size:
            static_in[count:].zero_()
        graph.replay()
        return static_out[:count].clone()

    def _run(self, batch: torch.Tensor) -> np.ndarray:
        return self.probabilities(batch).cpu().numpy()
