"""The MEGC2019 composite's 28x28 flow image: (u, v, optical strain), min-max per channel.

What the 442 composite PNGs (HTNet ``STSNet_whole_norm_u_v_os``, the STSTNet input) show,
measured in docs/motion.md:

* every channel of every image spans exactly 0..255, so each channel is min-max
  normalised per image to 0..255 *after* resizing to 28x28 (normalising before a
  smoothing resize would rarely leave both extremes in place);
* file (RGB) channel order is (u, v, strain): the blue plane has a low median (14, a
  non-negative magnitude), the red plane is mirror-antisymmetric across the face
  (horizontal flow) and the green plane mirror-symmetric (vertical flow).
  ``cv2.imread`` therefore yields (strain, v, u), the order STSTNet's released weights
  were trained on;
* values are integers (uint8 PNG).

The resize method cannot be read off the PNGs; we use area averaging (anti-aliased,
equal to OpenCV's INTER_AREA for integer ratios such as 112 -> 28).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engines.motion.strain import optical_strain

COMPOSITE_SIZE = 28
# Channel orders: "rgb" is the file's order, "bgr" what cv2.imread returns.
CHANNEL_ORDERS = {"rgb": (0, 1, 2), "bgr": (2, 1, 0)}


def minmax_to_255(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel, map min..max linearly to 0..255 (a flat channel -> 0)."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    scale = torch.where(span > 0, 255.0 / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(span))
    return (x - lo) * scale


def flow_image(
    flow: torch.Tensor,
    size: int = COMPOSITE_SIZE,
    channel_order: str = "rgb",
    quantize: bool = True,
) -> torch.Tensor:
    """(u, v, strain) of a flow ``(B, 2, H, W)`` as the composite's ``(B, 3, size, size)``.

    Float32 values 0..255 (integers when ``quantize``, like the uint8 PNGs). Strain is
    computed at full resolution, then all three planes are resized and normalised.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {sorted(CHANNEL_ORDERS)}, got {channel_order!r}")
    planes = torch.cat((flow, optical_strain(flow)), dim=1)
    planes = F.interpolate(planes, size=(size, size), mode="area")
    image = minmax_to_255(planes)
    if quantize:
        image = torch.round(image)
    return image[:, list(CHANNEL_ORDERS[channel_order])]
