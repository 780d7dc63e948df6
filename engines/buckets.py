"""Fixed batch sizes for work captured as CUDA graphs (TV-L1 runners, the torch CUDA engine).

A CUDA graph replays one exact shape, so batched GPU work is padded up to the next of a few
sizes; powers of two waste at most half a batch and keep the number of captured graphs small.
"""

from __future__ import annotations

__all__ = ["BATCH_BUCKETS", "bucket_for"]

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bucket_for(batch: int, buckets: tuple[int, ...] = BATCH_BUCKETS) -> int | None:
    """The smallest bucket that holds ``batch`` items, or None when none is large enough."""
    for size in sorted(buckets):
        if batch <= size:
            return size
    return None
