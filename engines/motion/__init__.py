"""Motion kernels: onset/apex pairs in, motion fields out (torch, batched, any device).

``compute_flow(name, onset, apex, **params)`` picks a flow method by name; all share the
conventions of ``engines.motion.frames`` (flow ``(B, 2, H, W)``, u = x, v = y, pixels,
onset grid pointing into the apex). Also: ``frame_difference``, ``optical_strain`` and
``flow_image`` (the MEGC2019 composite's 28x28 u/v/strain image).
"""

from __future__ import annotations

from engines.errors import InputError
from engines.motion.difference import frame_difference
from engines.motion.frames import endpoint_error
from engines.motion.opencv_flow import opencv_dis_flow, opencv_farneback_flow, opencv_tvl1_flow
from engines.motion.representation import flow_image
from engines.motion.strain import optical_strain
from engines.motion.tvl1 import TVL1Params, tvl1_flow

FLOW_METHODS = {
    "tvl1": tvl1_flow,
    "opencv-tvl1": opencv_tvl1_flow,
    "opencv-farneback": opencv_farneback_flow,
    "opencv-dis": opencv_dis_flow,
}


def compute_flow(name: str, onset, apex, **params):
    """Flow ``(B, 2, H, W)`` from onset to apex by the method ``name`` (see FLOW_METHODS)."""
    if name not in FLOW_METHODS:
        raise InputError(f"unknown flow method {name!r}; known: {', '.join(FLOW_METHODS)}", column="method")
    return FLOW_METHODS[name](onset, apex, **params)


__all__ = [
    "FLOW_METHODS",
    "TVL1Params",
    "compute_flow",
    "endpoint_error",
    "flow_image",
    "frame_difference",
    "optical_strain",
    "tvl1_flow",
]
