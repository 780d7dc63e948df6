"""Parameter and FLOP counts of a model at its input size, for the model cards and `mer bench`.

FLOPs are counted by torch's own ``FlopCounterMode`` on one forward pass in eval mode
(multiply-adds count as 2 FLOPs; convolutions, matmuls and attention are counted, cheap
element-wise ops are not), so every model card reports numbers measured the same way.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_flops"]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, sample_shape: tuple[int, ...] | None = None) -> int:
    """FLOPs of one forward pass on a single sample (default shape: ``model.cfg.input_size``)."""
    shape = tuple(sample_shape if sample_shape is not None else model.cfg.input_size)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(1, *shape))
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)
