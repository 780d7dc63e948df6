"""OpenCV's dense optical flows behind the same call as the torch kernels.

Same conventions as ``engines.motion.frames``: frames ``(B, H, W)`` / ``(B, 1, H, W)``,
uint8 0..255 or float 0..1, torch or numpy; result ``(B, 2, H, W)`` float32 torch tensor
on the frames' device, u = x and v = y displacement in pixels from onset to apex
(``onset[y, x] ~ apex[y + v, x + u]``, which is OpenCV's own convention for
``calc(prev=onset, next=apex)``). OpenCV runs on the CPU, one pair at a time.

DualTVL1 is given float32 frames in 0..1, which it scales by 255 internally, exactly as
the torch solver does; Farneback and DIS accept only 8-bit frames, so frames are rounded
to uint8 for them.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from engines.errors import InputError
from engines.motion.frames import as_pair_batch
from engines.motion.tvl1 import TVL1Params

# cv2.calcOpticalFlowFarneback's parameters; defaults are the ones He Yuhong's spotter uses.
FARNEBACK_DEFAULTS = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 5,
    "poly_n": 7,
    "poly_sigma": 1.5,
    "flags": 0,
}
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _pairs_as_numpy(onset, apex) -> tuple[np.ndarray, np.ndarray, torch.device]:
    first, second = as_pair_batch(onset, apex)
    device = first.device
    return first.cpu().numpy(), second.cpu().numpy(), device


def _stack_flows(flows: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """OpenCV's (H, W, 2) flows -> (B, 2, H, W) float32 tensor on ``device``."""
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous().to(device)


def _to_uint8(frames_255: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frames_255), 0, 255).astype(np.uint8)


def opencv_tvl1_flow(onset, apex, params: TVL1Params | None = None, **param_overrides) -> torch.Tensor:
    """``cv2.optflow.DualTVL1OpticalFlow`` with the same parameters as ``tvl1_flow``."""
    if params is None:
        params = TVL1Params.from_kwargs(**param_overrides)
    first, second, device = _pairs_as_numpy(onset, apex)
    solver = cv2.optflow.DualTVL1OpticalFlow_create(*params.opencv_args())
    # Float input in 0..1: OpenCV multiplies it by 255, giving back our 0..255 values.
    flows = [solver.calc(a / 255.0, b / 255.0, None) for a, b in zip(first, second)]
    return _stack_flows(flows, device)


def opencv_farneback_flow(onset, apex, **params) -> torch.Tensor:
    """``cv2.calcOpticalFlowFarneback`` (8-bit frames); keywords override FARNEBACK_DEFAULTS."""
    for name in params:
        if name not in FARNEBACK_DEFAULTS:
            raise InputError(f"unknown Farneback parameter; known: {', '.join(FARNEBACK_DEFAULTS)}", column=name)
    settings = {**FARNEBACK_DEFAULTS, **params}
    first, second, device = _pairs_as_numpy(onset, apex)
    flows = [
        cv2.calcOpticalFlowFarneback(_to_uint8(a), _to_uint8(b), None, **settings) for a, b in zip(first, second)
    ]
    return _stack_flows(flows, device)


def opencv_dis_flow(onset, apex, preset: str = "medium") -> torch.Tensor:
    """``cv2.DISOpticalFlow`` (8-bit frames) with one of OpenCV's presets."""
    if preset not in DIS_PRESETS:
        raise InputError(f"unknown DIS preset {preset!r}; known: {', '.join(DIS_PRESETS)}", column="preset")
    first, second, device = _pairs_as_numpy(onset, apex)
    solver = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    flows = [solver.calc(_to_uint8(a), _to_uint8(b), None) for a, b in zip(first, second)]
    return _stack_flows(flows, device)
